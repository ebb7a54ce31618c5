"""The `fastopt` command: a thin dispatcher. Each subcommand lives in its own module, imported only
when it runs, and provides `configure(parser)` and `run(args) -> exit code`."""
import argparse
import importlib
import sys

# name -> (module, one-line help)
COMMANDS = {
    "train": ("fastopt.train_cli", "train an MLP (default: batchnorm MLP on the bundled digits)"),
    "bench": ("fastopt.bench", "benchmark the kernels against NumPy (and PyTorch when installed)"),
    "info": ("fastopt.info", "version, backend, OpenMP, threads, instruction sets, BLAS"),
    "diagnose": ("fastopt.diagnose", "diagnostics of the lecture's workflow: `diagnose init` (activation "
                                     "statistics per layer for several weight initializations)"),
    "check": ("fastopt.babysit", "sanity checks before training: initial loss, regularization, "
                                 "gradient check, overfitting 20 examples"),
    "lr-find": ("fastopt.lr_find", "learning-rate range test: exponential ramp, smoothed loss, a suggested rate"),
    "search": ("fastopt.search", "random hyperparameter search in log space, coarse to fine, on a process "
                                 "pool or a Dask cluster"),
    "evaluate": ("fastopt.evaluate_cli", "accuracy and confusion matrix of saved models (fastopt train --save-model)"),
}


class UsageError(Exception):
    """A bad option or missing input: printed as one line, exit code 2, no traceback."""


def build_parser():
    parser = argparse.ArgumentParser(prog="fastopt", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        importlib.import_module(module).configure(p)
        p.set_defaults(_module=module)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return importlib.import_module(args._module).run(args) or 0
    except UsageError as exc:
        print(f"fastopt {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
