"""The fixed cost of a second thread in the optimizer's multi-tensor pass, one run.

A one-tensor SGD plan of 64 and 1000 float32 elements and an Adam plan of 1e4 float64 elements, the
kernel called with n_threads=1 and n_threads=2 (min of 5 repeats of 20000 / 5000 calls each)."""
import timeit

import numpy as np

import fastopt
from fastopt import _backend, optim

fastopt.set_num_threads(2)
for cls, kw, size, dtype, number in ((optim.SGD, dict(lr=1e-2), 64, np.float32, 20000),
                                     (optim.SGD, dict(lr=1e-2), 1000, np.float32, 20000),
                                     (optim.Adam, dict(lr=1e-3), 10000, np.float64, 5000)):
    p = np.random.default_rng(0).standard_normal(size).astype(dtype)
    g = (1e-3 * p).astype(dtype)
    opt = cls([p], **kw)
    opt.step([g])
    opt.step([g])
    (rec, plan, _), = opt._fast.entries
    scalars, _ = opt._RULE.per_step(rec.hyper, rec.members[0].state, False)
    fn = getattr(_backend.kernels("optim"), opt._RULE.multi_kernel)

    def run(n):
        fn(plan=plan, **scalars, grad_scale=1.0, avg_weight=0.0, track_ratio=False, n_threads=n)
    t = {n: min(timeit.repeat(lambda: run(n), number=number, repeat=5)) / number * 1e6 for n in (1, 2, 1, 2)}
    print(f"{cls.__name__} {size} {np.dtype(dtype).name}: 1 thread {t[1]:.2f} us, 2 threads {t[2]:.2f} us, "
          f"difference {t[2] - t[1]:+.2f} us")

try:                                    # numba's parallel loop over the same 64 elements, for comparison
    import numba
    from numba import njit, prange
except ImportError:
    numba = None
if numba is not None:
    @njit(parallel=True)
    def add_one(a):
        for i in prange(a.shape[0]):
            a[i] += 1

    a = np.zeros(64, np.float32)
    t = {}
    for n in (1, 2):
        numba.set_num_threads(n)
        add_one(a)
        t[n] = min(timeit.repeat(lambda: add_one(a), number=20000, repeat=5)) / 20000 * 1e6
    print(f"numba prange over 64 float32 ({numba.threading_layer()}): 1 thread {t[1]:.2f} us, 2 threads {t[2]:.2f} us, "
          f"difference {t[2] - t[1]:+.2f} us")
