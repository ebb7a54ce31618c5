"""Cost of the pieces of a cached single-tensor Adam step (process CPU time, min/median of repeats)."""
import os, math, sys, time, statistics
import numpy as np
import fastopt
from fastopt import optim, _backend
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
import optim_vs_numba as ovn

size = int(float(sys.argv[1])) if len(sys.argv) > 1 else 1000
dtype = np.dtype(sys.argv[2]) if len(sys.argv) > 2 else np.dtype(np.float32)
NT = int(sys.argv[3]) if len(sys.argv) > 3 else 1
fastopt.set_num_threads(NT)
import numba; numba.set_num_threads(NT)
clock = time.process_time
rng = np.random.default_rng(0)
p = rng.standard_normal(size).astype(dtype); g = (1e-3 * rng.standard_normal(size)).astype(dtype)
opt = optim.Adam([p], lr=1e-3); grads = [g]
opt.step(grads); opt.step(grads)
fast = opt._fast
k = _backend.kernels("optim")
entry = fast.entries[0]
grp, plan, guard = entry[0], entry[1], entry[2]
scal, new = opt._RULE.per_step(grp.hyper, grp.members[0].state, False)
kern = getattr(k, fast.kernel)
args = dict(plan=plan); args.update(scal); args.update(fast.extra); args["track_ratio"] = False
kern = getattr(k, fast.multi)
pos = [args[n] for n in ("plan","lr","beta1","beta2","eps","weight_decay","step_size","bias_correction2_sqrt","decoupled","amsgrad","maximize","grad_scale","avg_weight","track_ratio")]
adam_nb = ovn._numba_adam()
q, m, v = p.copy(), np.zeros_like(p), np.zeros_like(p)
adam_nb(q, g, m, v, 0.9, 0.999, 1e-8, 1e-3, 1.0)
cases = {
  "opt.step": lambda: opt.step(grads),
  "kernel kw": lambda: kern(plan=plan, **scal, **fast.extra, track_ratio=False, n_threads=1),
  "kernel pos": lambda: kern(*pos, 1),
  "per_step": lambda: opt._RULE.per_step(grp.hyper, grp.members[0].state, False),
  "guard.check": lambda: guard.check(grads),
  "threads_for": lambda: _backend.threads_for(size, k.GRAIN),
  "kernels()": lambda: _backend.kernels("optim"),
  "numba": lambda: adam_nb(q, g, m, v, 0.9, 0.999, 1e-8, 1e-3, 1.0),
  "empty lambda": lambda: None,
}
def t(fn, n=2000):
    t0 = clock()
    for _ in range(n): fn()
    return (clock() - t0) / n
res = {c: [] for c in cases}
for r in range(9):
    for c, fn in cases.items():
        res[c].append(t(fn))
print(f"size {size} {dtype} threads {fastopt.get_num_threads()} ({_backend.simd_variant('optim')})")
for c, ts in res.items():
    print(f"{c:14s} median {statistics.median(ts)*1e6:7.2f} us  [{min(ts)*1e6:.2f}-{max(ts)*1e6:.2f}]")
