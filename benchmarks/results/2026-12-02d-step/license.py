"""Does a 512-bit Adam kernel slow the Python code that follows it (AVX-512 frequency license)?
Per repeat: one adam_multi call of the given variant over n float32 elements, then a fixed piece of pure
Python (the Adam rule's per_step, 20 calls) timed alone with perf_counter_ns. Medians over interleaved repeats."""
import importlib, statistics, sys, time
import numpy as np
from fastopt.optim._declarations import RULES
n = int(float(sys.argv[1])) if len(sys.argv) > 1 else 1000
per_step = RULES["adam"].per_step
h = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, maximize=False,
         decoupled_weight_decay=False)
state = {"step": 10}
calls = {}
for v in ("avx2", "avx512"):
    mod = importlib.import_module(f"fastopt._optim_kernels_{v}")
    rng = np.random.default_rng(0)
    p = rng.standard_normal(n).astype(np.float32); g = (1e-3 * p).astype(np.float32)
    m, w, e = np.zeros_like(p), np.zeros_like(p), np.empty(0, np.float32)
    plan = mod.StepPlan([p], [g], [[m, w, e]], [e])
    calls[v] = (mod.adam_multi, plan)
res = {v: [] for v in calls}
for r in range(4000):
    for v, (f, plan) in calls.items():
        f(plan, 1e-3, 0.9, 0.999, 1e-8, 0.0, 1e-2, 0.03, False, False, False, 1.0, 0.0, False, 1)
        t0 = time.perf_counter_ns()
        for _ in range(20):
            per_step(h, state, False)
        res[v].append((time.perf_counter_ns() - t0) / 20)
for v, ts in res.items():
    ts.sort()
    print(f"n={n} after {v:6s} kernel: per_step {statistics.median(ts):.0f} ns median, p10 {ts[len(ts)//10]:.0f}, p90 {ts[9*len(ts)//10]:.0f}")
