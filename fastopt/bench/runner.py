"""The bench run: select backend and threads, measure the copy roofline, time every case, report."""
import datetime
import sys
from dataclasses import asdict, dataclass
from typing import Optional

import fastopt
from fastopt import info
from fastopt.cli import UsageError

from . import report, timing
from fastopt._blas import limit_blas_threads

from .cases import SuiteConfig, SuiteUnavailable, import_torch, load_suite, using_backend

COPY_MB = 64
COPY_REPEAT = 10
BACKEND_OF = {"fastopt": "cython", "numpy": "numpy"}  # torch runs whatever backend is selected


@dataclass
class Settings:
    suites: tuple
    explicit_suite: bool   # the user named one suite: its absence is an error, not a note
    quick: bool
    dtypes: tuple
    sizes: Optional[tuple]
    threads: Optional[int]
    repeat: int
    min_time: float        # seconds one measurement lasts at least
    use_torch: bool
    json_path: Optional[str]
    plot_path: Optional[str]


def run(settings, out=None):
    out = out or sys.stdout
    try:
        fastopt.set_backend("cython")
    except ImportError:
        raise UsageError("the compiled core is not built, so there is nothing to compare with NumPy; "
                         "install fastopt with pip") from None
    suite_funcs, skipped = _load_suites(settings)
    previous = (fastopt.backend(), fastopt.get_num_threads())
    torch = import_torch() if settings.use_torch else None
    threads = settings.threads or fastopt.get_num_threads()
    torch_threads = torch.get_num_threads() if torch is not None else None
    try:
        fastopt.set_num_threads(threads)
        if torch is not None:
            torch.set_num_threads(threads)  # same thread budget for both
        return _run(settings, suite_funcs, skipped, torch, threads, out)
    finally:
        fastopt.set_backend(previous[0])
        fastopt.set_num_threads(previous[1])
        if torch is not None:
            torch.set_num_threads(torch_threads)


def _load_suites(settings):
    funcs, skipped = {}, []
    for name in settings.suites:
        try:
            funcs[name] = load_suite(name)
        except SuiteUnavailable as exc:
            if settings.explicit_suite:
                raise UsageError(str(exc)) from None
            skipped.append({"suite": name, "reason": str(exc)})
    return funcs, skipped


def _run(settings, suite_funcs, skipped, torch, threads, out):
    machine = info.collect()
    copy_bw = timing.copy_bandwidth(COPY_MB * 2**20, COPY_REPEAT)
    header_settings = {"threads": threads, "repeat": settings.repeat, "copy_mb": COPY_MB,
                       "copy_repeat": COPY_REPEAT, "torch_version": torch.__version__ if torch else None}
    print(report.machine_header(machine, copy_bw, header_settings), file=out)
    for skip in skipped:
        print(f"note: {skip['reason']}; skipped", file=out)
    config = SuiteConfig(quick=settings.quick, dtypes=settings.dtypes, sizes=settings.sizes, torch=torch)

    rows = []
    for suite, cases in suite_funcs.items():
        print(f"\n[{suite}]", file=out)
        print(report.table_header(), file=out)
        for case in cases(config):
            impls = {name: fn for name, fn in (("fastopt", case.fastopt), ("numpy", case.numpy),
                                               ("torch", case.torch), *case.extra.items()) if fn is not None}
            if case.access is not None:
                impls["roofline"] = roofline(case, threads)
            with limit_blas_threads(threads):   # NumPy's BLAS on the run's thread count, for every side
                timings = timing.measure(impls, settings.repeat, settings.min_time, before=_select_backend)
            row = report.make_row(suite, case, timings, copy_bw)
            rows.append(row)
            print(report.table_row(row), file=out, flush=True)
            del case, impls  # free this case's arrays before the next is built

    document = {
        "fastopt_version": fastopt.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "settings": {**{k: v for k, v in asdict(settings).items() if k not in ("json_path", "plot_path")},
                     "threads": threads, "copy_mb": COPY_MB, "copy_repeat": COPY_REPEAT},
        "machine": machine,
        "torch_version": torch.__version__ if torch else None,
        "copy_bandwidth_gbps": copy_bw / 1e9,
        "rows": rows,
        "skipped": skipped,
    }
    if settings.json_path:
        _write(settings.json_path, report.write_json, document)
        print(f"\nwrote {settings.json_path}", file=out)
    if settings.plot_path:
        _write(settings.plot_path, report.plot, rows)
        print(f"wrote {settings.plot_path}", file=out)
    return 0


def roofline(case, threads):
    """The case's roofline: fastopt._mlp_kernels.stream_loop reading case.access[0] and writing
    case.access[1] arrays of case.elements elements of case.dtype, on the run's thread count."""
    import numpy as np

    from fastopt import _backend

    reads, writes = case.access
    src = np.ones((reads, case.elements), case.dtype)
    dst = np.zeros((writes, case.elements), case.dtype)
    with using_backend("cython"):
        stream = _backend.kernels("mlp").stream_loop
    return lambda: stream(src, dst, reads, writes, threads)


def _select_backend(name):
    backend = BACKEND_OF.get(name)
    if backend is not None:
        fastopt.set_backend(backend)


def _write(path, writer, payload):
    try:
        writer(path, payload)
    except OSError as exc:
        raise UsageError(f"cannot write {path!r}: {exc.strerror or exc}") from None
