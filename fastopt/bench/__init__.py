"""`fastopt bench`: time fastopt's kernels against its NumPy backend (and PyTorch when installed).

This module only defines the options and checks them; the work is in :mod:`fastopt.bench.runner`
(imported when the command runs, so `fastopt --help` stays fast). Suites are registered in
:data:`fastopt.bench.cases.SUITES`.
"""
import importlib.util
import os

from .cases import SUITES, parse_size

SUITE_NAMES = tuple(SUITES)
DTYPES = {"float32": ("float32",), "float64": ("float64",), "both": ("float32", "float64")}

# (repeat, seconds per measurement): quick finishes in seconds for tests and CI.
FULL = (7, 0.02)
QUICK = (3, 0.002)


def configure(parser):
    parser.add_argument("--suite", choices=SUITE_NAMES + ("all",), default="all",
                        help="which suite to run (default: all)")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes and few repeats: finishes in seconds (tests, CI)")
    parser.add_argument("--json", metavar="PATH", help="write every number and the machine record here")
    parser.add_argument("--plot", metavar="PATH",
                        help="write a PNG: speedup against size per kernel, time per step for mlp "
                             "(needs matplotlib)")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="threads for fastopt and PyTorch (default: fastopt.get_num_threads())")
    parser.add_argument("--repeat", type=int, metavar="N",
                        help=f"interleaved repeats per case (default {FULL[0]}, quick {QUICK[0]})")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="float32",
                        help="floating type of the arrays (default float32)")
    parser.add_argument("--sizes", metavar="LIST",
                        help="optimizer element counts, comma separated, e.g. 10k,1M,16M")
    parser.add_argument("--no-torch", action="store_true", help="do not time PyTorch even if installed")


def run(args):
    from fastopt.cli import UsageError

    from . import runner

    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be >= 1, got {args.threads}")
    if args.repeat is not None and args.repeat < 1:
        raise UsageError(f"--repeat must be >= 1, got {args.repeat}")
    sizes = None
    if args.sizes:
        try:
            sizes = tuple(parse_size(s) for s in args.sizes.split(","))
        except ValueError:
            raise UsageError(f"--sizes must be positive counts like 10k,1M,16M, got {args.sizes!r}") from None
    for option, path in (("--json", args.json), ("--plot", args.plot)):
        if path:
            _check_writable(option, path, UsageError)
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        raise UsageError("--plot needs matplotlib, which is not installed "
                         "(pip install matplotlib, or fastopt[plot])")

    repeat, min_time = QUICK if args.quick else FULL
    settings = runner.Settings(
        suites=SUITE_NAMES if args.suite == "all" else (args.suite,),
        explicit_suite=args.suite != "all",
        quick=args.quick, dtypes=DTYPES[args.dtype], sizes=sizes,
        threads=args.threads, repeat=args.repeat or repeat, min_time=min_time,
        use_torch=not args.no_torch, json_path=args.json, plot_path=args.plot,
    )
    return runner.run(settings)


def _check_writable(option, path, error):
    """Fail before a long run rather than after it: the file's folder must exist and be writable."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise error(f"{option} {path!r} is a directory; give a file path")
    if not os.path.isdir(folder):
        raise error(f"{option} {path!r}: folder {folder!r} does not exist")
    if not os.access(folder, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise error(f"{option} {path!r} is not writable")
