"""Adam kernel call (opt.step, cached) at 1 and 2 threads, wall clock: min / p25 / median of many short repeats
(a loaded machine: the minimum is the run where both threads had a core)."""
import os
import sys, time, statistics
import numpy as np, fastopt, numba
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
import optim_vs_numba as ovn
from fastopt import optim
nb = ovn._numba_adam()
dtype = np.dtype(sys.argv[1]); sizes = [int(float(x)) for x in sys.argv[2].split(",")]; reps = int(sys.argv[3])
def mk(n):
    rng = np.random.default_rng(0)
    p = rng.standard_normal(n).astype(dtype); g = (1e-3 * rng.standard_normal(n)).astype(dtype)
    opt = optim.Adam([p], lr=1e-3); grads = [g]; opt.step(grads)
    q, m, v = p.copy(), np.zeros_like(p), np.zeros_like(p)
    return (lambda: opt.step(grads)), (lambda: nb(q, g, m, v, 0.9, 0.999, 1e-8, 1e-3, 1.0))
for n in sizes:
    fo, nbf = mk(n)
    calls = max(1, 200000 // n)
    out = {}
    for th in (1, 2):
        fastopt.set_num_threads(th); numba.set_num_threads(th)
        fo(); nbf()
        a, b = [], []
        for r in range(reps):
            t0 = time.perf_counter()
            for _ in range(calls): fo()
            a.append((time.perf_counter() - t0) / calls)
            t0 = time.perf_counter()
            for _ in range(calls): nbf()
            b.append((time.perf_counter() - t0) / calls)
        out[th] = (a, b)
    def f(x): x = sorted(x); return f"{x[0]*1e6:8.1f} {x[len(x)//4]*1e6:8.1f} {statistics.median(x)*1e6:8.1f}"
    for th, (a, b) in out.items():
        print(f"{dtype} n={n:.0e} threads={th}: fastopt min/p25/med {f(a)} us | numba {f(b)} us | numba/fo at min {min(b)/min(a):.2f}x")
