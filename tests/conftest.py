import os

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, settings

import fastopt
from _kernel_calls import record_cached
from fastopt import _backend

# Exact error messages of every raises-block against tests/error_messages.json (tests/_messages.py).
pytest_plugins = ["_messages"]

settings.register_profile("default", deadline=None, max_examples=40,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", deadline=None, max_examples=60, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
# Mutation runs (tools/mutation.sh) need tests that give the same verdict every time, and fast.
# No shrinking: a mutant is killed by the first failing example, and shrinking it costs minutes.
settings.register_profile("mutation", deadline=None, max_examples=12, derandomize=True, database=None,
                          phases=[Phase.explicit, Phase.reuse, Phase.generate],
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("FASTOPT_HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "default"))


def pytest_report_header(config):
    return f"fastopt {fastopt.__version__} from {os.path.dirname(fastopt.__file__)}; backend={fastopt.backend()}"


def pytest_sessionstart(session):
    # A test run that silently fell back to the NumPy twins would compare the reference with itself.
    if not os.environ.get("FASTOPT_BACKEND") and fastopt.backend() != "cython":
        raise pytest.UsageError("the compiled core is not importable: install fastopt with pip "
                                "(or set FASTOPT_BACKEND=numpy to test the reference on purpose)")


@pytest.fixture(autouse=True)
def _restore_backend_and_threads():
    """Cases may switch backend, SIMD variant or thread count; put them back afterwards."""
    with _backend.preserved():
        yield


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


class KernelCalls:
    """Every kernel call made through fastopt._backend.kernels(family), in order.

    `calls` holds (family, function name, n_threads) tuples; n_threads is the `n_threads` keyword,
    else the last positional argument when it is an int (the kernel convention), else None. An
    optimizer's cached step (one run_cached call) is recorded as the multi-tensor pass it ran per
    group, with that pass's thread count.
    """

    def __init__(self):
        self.calls = []

    def names(self, family=None):
        return [name for fam, name, _ in self.calls if family is None or fam == family]

    def threads(self, family=None):
        return [n for fam, _, n in self.calls if family is None or fam == family]

    def clear(self):
        self.calls.clear()


class _CountingModule:
    def __init__(self, family, module, record):
        self._family, self._module, self._record = family, module, record

    def __getattr__(self, name):
        value = getattr(self._module, name)
        if not callable(value) or name.startswith("_") or isinstance(value, type):
            return value

        def counted(*args, **kwargs):
            if name == "run_cached":
                return record_cached(self._record.calls, value, args, lambda kernel, n: (self._family, kernel, n))
            last = kwargs["n_threads"] if "n_threads" in kwargs else (args[-1] if args else None)
            n = last if isinstance(last, int) and not isinstance(last, bool) else None
            self._record.calls.append((self._family, name, n))
            return value(*args, **kwargs)
        return counted


@pytest.fixture
def kernel_calls(monkeypatch):
    """Record the kernel calls of the code under test (wraps what _backend.kernels returns)."""
    record = KernelCalls()
    real = _backend.kernels
    monkeypatch.setattr(_backend, "kernels", lambda family: _CountingModule(family, real(family), record))
    return record
