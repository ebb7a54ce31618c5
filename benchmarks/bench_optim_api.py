"""Per-call overhead of the optimizer APIs on the active backend: a whole Adam.step() on one
10k-element float32 parameter against the bare kernel call it makes (target: step < 25 us with
the compiled kernel). Run: python -m pytest -q benchmarks/bench_optim_api.py --benchmark-only
"""
import math

import numpy as np
import pytest

from fastopt import optim
from fastopt._backend import kernels

N = 10_000


@pytest.fixture
def arrays():
    rng = np.random.default_rng(0)
    return rng.standard_normal(N).astype(np.float32), rng.standard_normal(N).astype(np.float32)


def test_adam_bare_kernel(benchmark, arrays):
    p, g = arrays
    m, v, empty = np.zeros_like(p), np.zeros_like(p), np.empty(0, np.float32)
    k = kernels("optim")
    benchmark(k.adam_step, p, g, m, v, empty, 1e-3, 0.9, 0.999, 1e-8, 0.0, 1e-2, math.sqrt(1e-3),
              False, False, False, 1)


def test_adam_class_step(benchmark, arrays):
    p, g = arrays
    opt = optim.Adam([p])
    grads = [g]
    benchmark(opt.step, grads)


def test_adam_functional(benchmark, arrays):
    p, g = arrays
    config = {}
    benchmark(optim.adam, p, g, config)
