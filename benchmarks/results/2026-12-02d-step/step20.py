"""Cached opt.step(grads) cost, 1 thread, process CPU time: median [min-max] of repeats of 3000 calls.
Cases: Adam over 1 array of 1e3 / 1e4 (float32, float64), Adam and SGD(momentum) over 20 float32 arrays x 1000,
Adam over a flat 20 x 1000 float32 group (FlatParams)."""
import sys, time, statistics
import numpy as np, fastopt
from fastopt import optim
from fastopt.flat import FlatParams
fastopt.set_num_threads(1)
def case(cls, kw, n, dtype, count=1, flat=False):
    rng = np.random.default_rng(0)
    ps = [rng.standard_normal(n).astype(dtype) for _ in range(count)]
    gs = [(1e-3 * rng.standard_normal(n)).astype(dtype) for _ in range(count)]
    if flat:
        ps = list(FlatParams({f"p{i}": a for i, a in enumerate(ps)}).params.values())
        gs = list(FlatParams({f"p{i}": a for i, a in enumerate(gs)}).params.values())
    opt = cls(ps, **kw)
    opt.step(gs)
    return lambda: opt.step(gs)
cases = {f"Adam {d} 1x{n:.0e}": case(optim.Adam, {}, n, d) for d in ("float32", "float64") for n in (1000, 10000)}
cases["Adam float32 20x1000"] = case(optim.Adam, {}, 1000, "float32", 20)
cases["SGD momentum float32 20x1000"] = case(optim.SGD, dict(lr=0.1, momentum=0.9), 1000, "float32", 20)
cases["Adam float32 flat 20x1000"] = case(optim.Adam, {}, 1000, "float32", 20, flat=True)
res = {c: [] for c in cases}
for r in range(int(sys.argv[1]) if len(sys.argv) > 1 else 7):
    for c, fn in cases.items():
        t0 = time.process_time()
        for _ in range(3000): fn()
        res[c].append((time.process_time() - t0) / 3000 * 1e6)
for c, ts in res.items():
    print(f"{c}: {statistics.median(ts):.2f} us [{min(ts):.2f}-{max(ts):.2f}]")
