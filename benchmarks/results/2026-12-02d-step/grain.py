"""adam_multi (or sgd_multi with momentum: argv[3] == "sgd") at 1 vs 2 threads, kernel called directly,
wall clock min and p25 of 41 interleaved repeats."""
import sys, time
import numpy as np
import importlib
mod = importlib.import_module("fastopt._optim_kernels_avx512")
dtype = np.dtype(sys.argv[1])
for n in [int(float(x)) for x in sys.argv[2].split(",")]:
    rng = np.random.default_rng(0)
    p = rng.standard_normal(n).astype(dtype); g = (1e-3 * rng.standard_normal(n)).astype(dtype)
    m = np.zeros_like(p); v = np.zeros_like(p); e = np.empty(0, dtype)
    sgd = len(sys.argv) > 3 and sys.argv[3] == "sgd"
    plan = mod.StepPlan([p], [g], [[m]] if sgd else [[m, v, e]], [e])
    if sgd:
        f = lambda plan, *a: mod.sgd_multi(plan, 0.1, 0.0, 0.9, 0.0, False, False, False, 1.0, 0.0, False, a[-1])
    else:
        f = mod.adam_multi
    res = {1: [], 2: []}
    calls = max(1, 100000 // n)
    for r in range(41):
        for th in (1, 2):
            t0 = time.perf_counter()
            for _ in range(calls):
                f(plan, 1e-3, 0.9, 0.999, 1e-8, 0.0, 1e-2, 0.03, False, False, False, 1.0, 0.0, False, th)
            res[th].append((time.perf_counter() - t0) / calls * 1e6)
    a, b = sorted(res[1]), sorted(res[2])
    print(f"{'sgd' if sgd else 'adam'} {dtype} n={n}: 1 thread min {a[0]:.1f} p25 {a[10]:.1f} us; 2 threads min {b[0]:.1f} p25 {b[10]:.1f} us; 1T/2T at min {a[0]/b[0]:.2f}x")
