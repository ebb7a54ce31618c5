"""A small model's whole optimizer step (issue 11): Adam over 20 separate float32 arrays of 1000
elements, through the public API, against the validated per-parameter path it replaced (the cached
step switched off) and a CS231n Solver-style RuleOptimizer step over a FullyConnectedNet's flat
buffer. Target: the 20 x 1k step <= 15 us.

    python -m pytest -q benchmarks/bench_optim_small.py --benchmark-only
    python benchmarks/bench_optim_small.py            # side by side, median [IQR] of 15 runs
"""
import statistics
import sys
import time

import numpy as np
import pytest

from fastopt import optim
from fastopt.flat import FlatParams
from fastopt.optim.rule_adapter import RuleOptimizer

N_TENSORS, SIZE = 20, 1000
MLP = {"W1": (64, 100), "b1": (100,), "W2": (100, 100), "b2": (100,), "W3": (100, 10), "b3": (10,)}


def tensors(seed, n=N_TENSORS, size=SIZE, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(size).astype(dtype) for _ in range(n)]


def cached_step(cls=optim.Adam, **kw):
    opt, grads = cls(tensors(0), **kw), tensors(1)
    opt.step(grads)
    return lambda: opt.step(grads)


def validated_step(cls=optim.Adam, **kw):
    opt, grads = cls(tensors(0), **kw), tensors(1)
    opt._prepare_fast = lambda *a: None          # the per-parameter path every step (before issue 11)
    return lambda: opt.step(grads)


def rule_step(name="adam", flat=True):
    rng = np.random.default_rng(0)
    values = {k: rng.standard_normal(s) for k, s in MLP.items()}
    fp = FlatParams(values)
    params = fp.params if flat else values
    grads = fp.grads if flat else {k: rng.standard_normal(s) for k, s in MLP.items()}
    opt = RuleOptimizer(optim.RULES[name], params, {"learning_rate": 1e-3})
    opt.step(grads)
    return lambda: opt.step(grads)


def functional_loop(name="adam"):
    rng = np.random.default_rng(0)
    values = {k: rng.standard_normal(s) for k, s in MLP.items()}
    grads = {k: rng.standard_normal(s) for k, s in MLP.items()}
    configs = {k: {"learning_rate": 1e-3} for k in MLP}
    rule = optim.RULES[name]

    def step():
        for k in MLP:
            rule(values[k], grads[k], configs[k])
    return step


CASES = {
    "Adam 20x1k cached": cached_step,
    "Adam 20x1k validated (before)": validated_step,
    "SGD-momentum 20x1k cached": lambda: cached_step(optim.SGD, lr=1e-2, momentum=0.9),
    "Adam 20x1k ratio tracked": lambda: cached_step(track_update_ratio=True),
    "RuleOptimizer adam, flat MLP": rule_step,
    "RuleOptimizer adam, separate arrays": lambda: rule_step(flat=False),
    "functional adam per param (CS231n loop)": functional_loop,
}


@pytest.mark.parametrize("case", list(CASES))
def test_small_step(benchmark, case):
    benchmark(CASES[case]())


def _time(fn, calls=2000):
    fn()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / calls


def main():
    fns = {name: make() for name, make in CASES.items()}
    runs = {name: [] for name in fns}
    for _ in range(15):                            # interleaved: load hits every case alike
        for name, fn in fns.items():
            runs[name].append(_time(fn, 300))
    for name, ts in runs.items():
        q = statistics.quantiles(ts, n=4)
        print(f"{name:42s} {statistics.median(ts) * 1e6:7.1f} us  [{q[0] * 1e6:.1f}-{q[2] * 1e6:.1f}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
