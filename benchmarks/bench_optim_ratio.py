"""Cost of the update/weight ratio (issue 12; goal < 3%): one 16M-element float32 parameter,
opt.step([g]) with track_update_ratio off and on, Adam and SGD(momentum), 1 and 2 threads,
interleaved (load on a shared machine hits both alike); median and IQR of `repeats` steps.

    python benchmarks/bench_optim_ratio.py [--n 16777216] [--repeats 21]
"""
import argparse
import statistics
import sys
import time

import numpy as np

import fastopt
from fastopt import optim


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1 << 24)
    ap.add_argument("--repeats", type=int, default=21)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    g = (1e-3 * rng.standard_normal(args.n)).astype(np.float32)
    print(f"n={args.n}, float32, {fastopt._backend.simd_variant('optim')}; median [IQR] ms per step")
    print("| rule | threads | ratio off | ratio on | overhead |")
    print("|---|---|---|---|---|")
    for name, cls, kw in (("Adam", optim.Adam, dict(lr=1e-3)), ("SGD", optim.SGD, dict(lr=1e-2, momentum=0.9))):
        opts = {}
        for track in (False, True):
            p = rng.standard_normal(args.n).astype(np.float32)
            opts[track] = (cls([p], **kw, track_update_ratio=track), [g])
        for threads in (1, 2):
            fastopt.set_num_threads(threads)
            times = {False: [], True: []}
            for opt, grads in opts.values():
                opt.step(grads)                       # warm: the cached step from here on
            for _ in range(args.repeats):
                for track, (opt, grads) in opts.items():
                    t0 = time.perf_counter()
                    opt.step(grads)
                    times[track].append(time.perf_counter() - t0)
            off, on = (statistics.median(times[t]) for t in (False, True))
            q = {t: statistics.quantiles(times[t], n=4) for t in times}
            print(f"| {name} | {threads} | {off * 1e3:.2f} [{q[False][0] * 1e3:.2f}-{q[False][2] * 1e3:.2f}] | "
                  f"{on * 1e3:.2f} [{q[True][0] * 1e3:.2f}-{q[True][2] * 1e3:.2f}] | {100 * (on / off - 1):+.1f}% |",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
