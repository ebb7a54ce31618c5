"""thread_budget() and a cached 1e4-element float32 Adam step at 1 and 2 threads allowed (one run).
Columns: threads allowed, step time (us, min of 50 x 200 calls), threads the pass used, thread_budget() (us)."""
import timeit

import numpy as np

import fastopt
from fastopt import _backend, optim

size, dtype = 10000, np.float32
p = np.random.default_rng(0).standard_normal(size).astype(dtype)
g = (1e-3 * p).astype(dtype)
opt = optim.Adam([p], lr=1e-3)
grads = [g]
opt.step(grads)
opt.step(grads)
for th in (1, 2, 1, 2):
    fastopt.set_num_threads(th)
    step = min(timeit.repeat(lambda: opt.step(grads), number=200, repeat=50)) / 200 * 1e6
    budget = min(timeit.repeat(_backend.thread_budget, number=10000, repeat=5)) / 10000 * 1e6
    print(th, "%.2f" % step, opt._fast.program.last_threads, "budget %.3f" % budget)
