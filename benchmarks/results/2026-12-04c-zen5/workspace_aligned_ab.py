import time, sys, numpy as np, fastopt
from fastopt.bench.mlp import build_fastopt_step, DIMS, BATCH
from fastopt.bench.mlp_torch import make_problem
from fastopt.nn import workspace as W
from fastopt import _buffers
import inspect
t = int(sys.argv[1]); fastopt.set_num_threads(t)
print(inspect.signature(make_problem))
problem = make_problem(BATCH, DIMS)
orig = np.empty
class NP:  # the workspace module's np with empty -> aligned
    def __getattr__(self, k): return getattr(np, k)
    empty = staticmethod(lambda shape, dtype: _buffers.empty(shape, dtype))
a = build_fastopt_step(problem, DIMS); b = build_fastopt_step(problem, DIMS)
W.np = NP(); a(); W.np = np; b()
wsa = a.model._workspaces.get(BATCH); wsb = b.model._workspaces.get(BATCH)
print("aligned", wsa.z[0].ctypes.data % 64, "plain", wsb.z[0].ctypes.data % 64)
ts = {"aligned": [], "plain": []}
for r in range(15):
    for k, f in (("aligned", a), ("plain", b)):
        s = time.perf_counter(); f(); ts[k].append(time.perf_counter() - s)
print({k: round(np.median(v) * 1e3, 2) for k, v in ts.items()}, "ratio plain/aligned", round(np.median(np.array(ts["plain"]) / np.array(ts["aligned"])), 3))
