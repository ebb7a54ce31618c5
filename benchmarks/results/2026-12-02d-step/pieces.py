import os
"""The cached step's pieces, each timed alone (1e3 float32 Adam, 1 thread, process CPU time, 7 x 5000 calls)."""
import time, statistics, operator
import numpy as np, fastopt
from fastopt import optim, _backend
fastopt.set_num_threads(1)
p=np.zeros(1000,np.float32); opt=optim.Adam([p]); grads=[np.ones_like(p)]; opt.step(grads); opt.step(grads)
fast = opt._fast
g, plan, guard, call = fast.entries[0]
k = _backend.kernels("optim")
per_step = opt._RULE.per_step
first = g.members[0].state
scalars, new = per_step(g.hyper, first, False)
extra = fast.extra
fn = call.fn
def full(): opt.step(grads)
def fs(): opt._fast_step(grads)
def kern(): fn(*call.arrays, *call.scalars(scalars), *extra.values(), False, 1)
def ps(): per_step(g.hyper, first, False)
def chk(): guard.check(grads)
def com(): guard.commit(new)
def lock():
    with opt._lock: pass
def groups():
    groups = opt.param_groups
    return (len(grads) != fast.n_params or len(groups) != len(fast.groups) or not all(map(operator.is_, groups, fast.groups)))
def tf(): _backend.threads_for(call.size, k.GRAIN)
def kk(): _backend.kernels("optim")
def nothing(): pass
def minimal():
    # the floor of the present structure: lock, check, per_step, kernel, commit, nothing else
    with opt._lock:
        if not guard.check(grads): return False
        k = _backend.kernels("optim")
        fn = getattr(k, call.name)
        scalars, new = per_step(g.hyper, g.members[0].state, False)
        fn(*call.arrays, *call.scalars(scalars), *extra.values(), False, _backend.threads_for(call.size, k.GRAIN))
        guard.commit(new)
    return True
cases = dict(full=full, minimal=minimal, fast_step=fs, kernel=kern, per_step=ps, check=chk, commit=com, lock=lock,
             groups=groups, threads_for=tf, kernels=kk, nothing=nothing)
res = {c: [] for c in cases}
for r in range(7):
    for c, f in cases.items():
        t0 = time.process_time()
        for _ in range(5000): f()
        res[c].append((time.process_time() - t0) / 5000 * 1e6)
for c, ts in res.items():
    print(f"{c:12s} {statistics.median(ts):.3f} us [{min(ts):.3f}-{max(ts):.3f}]")
