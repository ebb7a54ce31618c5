"""ns per element of the Adam core (kernel call, 1 thread) per SIMD variant vs numba, in-cache sizes.
Slope between n=1e3 and n=N (fixed cost removed); process CPU time; interleaved; min and median of repeats."""
import os
import sys, time, statistics, math
import numpy as np
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
import numba, fastopt
from fastopt import _backend
import importlib
import optim_vs_numba as ovn
numba.set_num_threads(1)
dtype = np.dtype(sys.argv[1]) if len(sys.argv) > 1 else np.dtype(np.float32)
N = int(float(sys.argv[2])) if len(sys.argv) > 2 else 100000
reps = int(sys.argv[3]) if len(sys.argv) > 3 else 9
nb = ovn._numba_adam()
mods = {v: importlib.import_module(f"fastopt._optim_kernels{'' if v == 'sse2' else '_' + v}") for v in ("sse2", "avx2", "avx512")}
clock = time.process_time
def arrays(n):
    rng = np.random.default_rng(0)
    p = rng.standard_normal(n).astype(dtype); g = (1e-3 * rng.standard_normal(n)).astype(dtype)
    return p, g, np.zeros_like(p), np.abs(rng.standard_normal(n)).astype(dtype) * 1e-6, np.empty(0, dtype)
def fo_fn(mod, n):
    p, g, m, v, e = arrays(n)
    plan = mod.StepPlan([p], [g], [[m, v, e]], [e])
    f = mod.adam_multi
    return lambda: f(plan, 1e-3, 0.9, 0.999, 1e-8, 0.0, 1e-3 / 0.1, 0.0316, False, False, False, 1.0, 0.0, False, 1)
def nb_fn(n):
    p, g, m, v, e = arrays(n)
    return lambda: nb(p, g, m, v, 0.9, 0.999, 1e-8, 1e-3 / 0.1, 1 / 0.0316)
def t(fn, budget=0.02):
    fn(); k = 1
    while True:
        t0 = clock()
        for _ in range(k): fn()
        dt = clock() - t0
        if dt >= budget: return dt / k
        k *= 2
cases = {}
for n in (1000, N):
    for v, mod in mods.items():
        cases[(v, n)] = fo_fn(mod, n)
    cases[("numba", n)] = nb_fn(n)
res = {c: [] for c in cases}
for r in range(reps):
    for c, fn in cases.items():
        res[c].append(t(fn))
print(f"{dtype}, N={N}, {reps} repeats, process CPU time")
for name in ("sse2", "avx2", "avx512", "numba"):
    a, b = res[(name, 1000)], res[(name, N)]
    slope = [(y - x) / (N - 1000) * 1e9 for x, y in zip(a, b)]
    print(f"{name:7s} call at 1e3 {statistics.median(a)*1e6:6.2f} us; at N {statistics.median(b)*1e6:8.2f} us "
          f"[{min(b)*1e6:.2f}-{max(b)*1e6:.2f}]; slope {statistics.median(slope):.3f} ns/el [{min(slope):.3f}-{max(slope):.3f}]")
