"""pytest-benchmark suites: fastopt vs its NumPy backend (vs PyTorch when installed).

    python -m pytest benchmarks --benchmark-only                      # default sizes, float32
    python -m pytest benchmarks --benchmark-only --fastopt-quick      # small sizes: seconds
    python -m pytest benchmarks --benchmark-only --fastopt-dtype both

The files are named bench_*.py so that a plain test run never collects them (pyproject's testpaths is
["tests"], and pytest's default pattern is test_*.py); pytest_collect_file below collects them when
this folder is run. The cases are the same as `fastopt bench` builds (fastopt.bench.suites), so both
tools time exactly the same calls.
"""
import pytest

import fastopt
from fastopt import _backend
from fastopt.bench.cases import import_torch

from fastopt.bench import DTYPES

BACKEND_OF = {"fastopt": "cython", "numpy": "numpy"}


def pytest_addoption(parser):
    group = parser.getgroup("fastopt benchmarks")
    group.addoption("--fastopt-quick", action="store_true", help="small sizes only (seconds)")
    group.addoption("--fastopt-dtype", choices=tuple(DTYPES), default="float32",
                    help="dtype of the benchmarked arrays (default float32)")


def pytest_collect_file(file_path, parent):
    # Files given on the command line are collected by pytest itself; do not collect them twice.
    if (file_path.suffix == ".py" and file_path.name.startswith("bench_")
            and not parent.session.isinitpath(file_path)):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


def pytest_report_header(config):
    torch = import_torch()
    return (f"fastopt {fastopt.__version__} backend={fastopt.backend()} threads={fastopt.get_num_threads()}; "
            f"torch {torch.__version__ if torch else 'not installed'}")


@pytest.fixture(autouse=True)
def _restore_backend_and_threads():
    """Cases may switch backend, SIMD variant or thread count; put them back afterwards."""
    with _backend.preserved():
        yield


@pytest.fixture
def time_case(benchmark):
    """time_case(build, impl): build(torch) -> Case, then benchmark the Case's `impl` callable in a
    group of its own kernel, size and dtype, so pytest-benchmark's table compares the implementations."""
    def run(build, impl):
        torch = None
        if impl == "torch":
            torch = import_torch()
            if torch is None:
                pytest.skip("torch is not installed")
        try:
            fastopt.set_backend("cython")  # the builders make fastopt's state with the compiled core
        except ImportError:
            pytest.skip("the compiled core is not built")
        case = build(torch)
        fn = getattr(case, impl)
        if fn is None:
            pytest.skip(f"no {impl} implementation of {case.kernel}")
        benchmark.group = f"{case.kernel} {case.size} {case.dtype}"
        benchmark.extra_info.update(bytes_moved=case.bytes_moved, torch_impl=case.torch_impl or None)
        if impl in BACKEND_OF:
            fastopt.set_backend(BACKEND_OF[impl])
        torch_threads = torch.get_num_threads() if torch is not None else None
        if torch is not None:
            torch.set_num_threads(fastopt.get_num_threads())  # the same thread budget as fastopt
        try:
            benchmark(fn)
        finally:
            if torch is not None:
                torch.set_num_threads(torch_threads)
    return run
