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
    benchmark(lambda: k.adam_step(param=p, grad=g, exp_avg=m, exp_avg_sq=v, max_exp_avg_sq=empty,
                                  param_avg=empty, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8,
                                  weight_decay=0.0, step_size=1e-2, bias_correction2_sqrt=math.sqrt(1e-3),
                                  decoupled=False, amsgrad=False, maximize=False, grad_scale=1.0,
                                  avg_weight=0.0, n_threads=1))


def test_adam_class_step(benchmark, arrays):
    p, g = arrays
    opt = optim.Adam([p])
    grads = [g]
    benchmark(opt.step, grads)


def test_adam_functional(benchmark, arrays):
    p, g = arrays
    config = {}
    benchmark(optim.adam, p, g, config)
