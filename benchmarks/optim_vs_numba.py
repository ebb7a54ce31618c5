"""fastopt's single-array Adam step against a numba ``parallel=True`` loop of the same math.

    python benchmarks/optim_vs_numba.py [--sizes 1e3,1e4,1e5,1e6,1.6e7] [--repeats 15]

Both sides update param, exp_avg, exp_avg_sq in place from one gradient, the bias corrections
computed once per step in Python (torch's Adam, no weight decay). fastopt is timed through its
public API, ``opt.step([g])`` (validation, cached step, kernel); numba through a call of its
jitted function (compiled before timing). Each cell: median and interquartile range of `repeats`
timings, each the mean of enough calls to last ~2 ms, the two sides interleaved so that load on a
shared machine hits both alike, and the ratio of the two minima (on a loaded machine the run in
which both sides had their cores; at 2 threads the medians there mostly measure time slicing).
numba is a benchmark-only dependency: absent, the script says so and exits 0.

OpenBLAS is limited to one thread unless OPENBLAS_NUM_THREADS is set: neither side calls BLAS, but
an idle OpenBLAS pool spins for a while after NumPy starts it, and with --clock cpu that time was
counted against whichever side ran then (perf: ~2% of the samples of a 1-thread step loop).
"""
import argparse
import math
import os
import statistics
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")      # before NumPy loads OpenBLAS (see above)

import numpy as np  # noqa: E402

import fastopt  # noqa: E402
from fastopt import optim  # noqa: E402

try:
    import numba
    from numba import njit, prange
except ImportError:                     # pragma: no cover - depends on the environment
    numba = None


def _numba_adam():
    @njit(parallel=True, fastmath=False, cache=False)
    def adam(p, g, m, v, beta1, beta2, eps, step_size, inv_bc2):
        b1c = p.dtype.type(1.0 - beta1)
        b2 = p.dtype.type(beta2)
        b2c = p.dtype.type(1.0 - beta2)
        e = p.dtype.type(eps)
        s = p.dtype.type(step_size)
        ib = p.dtype.type(inv_bc2)
        for i in prange(p.shape[0]):
            gi = g[i]
            mi = m[i] + b1c * (gi - m[i])
            vi = b2 * v[i] + b2c * gi * gi
            m[i] = mi
            v[i] = vi
            p[i] = p[i] - s * mi / (np.sqrt(vi) * ib + e)
    return adam


CLOCK = {"wall": time.perf_counter, "cpu": time.process_time}
_clock = time.perf_counter


def _time(fn, budget=2e-3):
    fn()
    n, t = 1, 0.0
    while True:
        t0 = _clock()
        for _ in range(n):
            fn()
        t = _clock() - t0
        if t >= budget or n >= 1 << 16:
            return t / n
        n *= 2


def measure(size, dtype, threads, repeats, adam_nb):
    rng = np.random.default_rng(0)
    p = rng.standard_normal(size).astype(dtype)
    g = (1e-3 * rng.standard_normal(size)).astype(dtype)
    q, m, v = p.copy(), np.zeros_like(p), np.zeros_like(p)
    opt = optim.Adam([p], lr=1e-3)
    grads = [g]
    state = {"t": 0}
    b1, b2 = 0.9, 0.999

    def nb_step():
        state["t"] += 1
        t = state["t"]
        adam_nb(q, g, m, v, b1, b2, 1e-8, 1e-3 / (1 - b1 ** t), 1.0 / math.sqrt(1 - b2 ** t))

    fastopt.set_num_threads(threads)
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    fo, nb = [], []
    for _ in range(repeats):
        fo.append(_time(lambda: opt.step(grads)))
        nb.append(_time(nb_step))
    return _summary(fo), _summary(nb)


def _summary(ts):
    ts = sorted(ts)
    q = statistics.quantiles(ts, n=4) if len(ts) >= 2 else [ts[0]] * 3
    return statistics.median(ts), q[0], q[2], ts[0]


def _fmt(s):
    med, lo, hi, _ = s
    unit, f = ("us", 1e6) if med < 1e-3 else ("ms", 1e3)
    return f"{med * f:.1f} {unit} [{lo * f:.1f}-{hi * f:.1f}]"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1e3,1e4,1e5,1e6,1.6e7")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--dtypes", default="float32,float64")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--clock", choices=sorted(CLOCK), default="wall",
                    help="wall (default), or cpu: this process's CPU time, which a loaded machine's time "
                         "slicing does not inflate (for 1 thread; with 2 it adds both threads' time)")
    args = ap.parse_args(argv)
    global _clock
    _clock = CLOCK[args.clock]
    if numba is None:
        print("numba is not installed: nothing to compare (pip install numba; benchmark-only)")
        return 0
    adam_nb = _numba_adam()
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    print(f"fastopt {fastopt.__version__} ({fastopt._backend.simd_variant('optim')}), numba {numba.__version__}; "
          f"median [IQR] per step, {args.repeats} repeats, {args.clock} clock")
    print("| dtype | threads | size | fastopt opt.step([g]) | numba parallel loop | numba / fastopt "
          "| at the minima |")
    print("|---|---|---|---|---|---|---|")
    for dtype in args.dtypes.split(","):
        for threads in (int(t) for t in args.threads.split(",")):
            for size in sizes:
                reps = args.repeats if size < 4_000_000 else max(5, args.repeats // 3)
                fo, nb = measure(size, np.dtype(dtype), threads, reps, adam_nb)
                print(f"| {dtype} | {threads} | {size:.0e} | {_fmt(fo)} | {_fmt(nb)} | {nb[0] / fo[0]:.2f}x "
                      f"| {nb[3] / fo[3]:.2f}x |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
