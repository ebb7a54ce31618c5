import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

import fastopt
from fastopt import _backend

settings.register_profile("default", deadline=None, max_examples=40,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", deadline=None, max_examples=60, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") else "default")


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
