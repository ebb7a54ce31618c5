"""Per-call time of the cached steps: python micro.py -> one line per case (median, min of repeats, us)."""
import sys, time, statistics
import numpy as np
import fastopt
from fastopt import optim
CLK = time.process_time
fastopt.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 1)

def tensors(seed, n, size, dtype):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(size).astype(dtype) for _ in range(n)]

def case(n, size, dtype=np.float32, cls=optim.Adam, **kw):
    opt, g = cls(tensors(0, n, size, dtype), **kw), tensors(1, n, size, dtype)
    opt.step(g)
    return lambda: opt.step(g)

CASES = {"adam 20x1k f32": case(20, 1000), "adam 1x1k f32": case(1, 1000), "adam 1x1e4 f64": case(1, 10000, np.float64),
         "adam 1x1e5 f32": case(1, 100000),
         "sgdm 20x1k f32": case(20, 1000, cls=optim.SGD, lr=1e-2, momentum=0.9)}
def t(fn, calls):
    t0 = CLK()
    for _ in range(calls):
        fn()
    return (CLK() - t0) / calls * 1e6
res = {k: [] for k in CASES}
for r in range(9):
    for k, fn in CASES.items():
        res[k].append(t(fn, 1000 if "1e5" not in k else 200))
for k, v in res.items():
    print(f"{k:16s} {statistics.median(v):7.2f} [{min(v):.2f}-{max(v):.2f}]")
