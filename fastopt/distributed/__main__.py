"""`python -m fastopt.distributed train [options of fastopt train] [--distributed MODE] [--shards] [--steps]`,
run under mpiexec: data-parallel training (fastopt/distributed/cli.py)."""
import argparse
import sys

from ..cli import UsageError
from . import cli


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fastopt.distributed",
                                     description="data-parallel training on MPI ranks (run under mpiexec)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    cli.configure(sub.add_parser("train", help="fastopt train, data-parallel", description=cli.__doc__))
    args = parser.parse_args(argv)
    try:
        return cli.run(args)
    except UsageError as exc:     # the same on every rank: each prints it and exits 2
        print(f"fastopt.distributed train: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
