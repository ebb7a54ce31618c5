"""Cost of the update/weight ratio (issue 12; goal < 3%): one 16M-element parameter (--dtype),
opt.step([g]) with track_update_ratio off and on, for every rule (each optimizer class with its
benchmark hyperparameters, and CS231n's sgd_momentum through the rule adapter, flat and
standalone), 1 and 2 threads, interleaved (load on a shared machine hits both alike); median
[min-max] of `repeats` steps.

    python benchmarks/bench_optim_ratio.py [--n 16777216] [--repeats 21] [--rules Adam,SGD] [--dtype float64]
"""
import argparse
import statistics
import sys
import time

import numpy as np

import fastopt
from fastopt import optim
from fastopt.flat import FlatParams
from fastopt.optim._declarations import class_rules
from fastopt.optim.rule_adapter import RuleOptimizer


def makers():
    """{rule name: make(param, grad, track) -> one step (a function of no arguments)}."""
    out = {}
    for r in class_rules():
        def make(p, g, track, cls=getattr(optim, r.class_name), kw=dict(r.bench)):
            opt = cls([p], **kw, track_update_ratio=track)
            return lambda: opt.step([g])
        out[r.class_name] = make

    def velocity(p, g, track):
        # the Solver's case: the parameters in a FlatParams buffer (the adapter's flat path)
        fp = FlatParams({"w": p})
        fp.grads["w"][...] = g
        opt = RuleOptimizer(optim.RULES["sgd_momentum"], fp.params, {"learning_rate": 1e-2},
                            track_update_ratio=track)
        return lambda: opt.step(fp.grads)
    out["sgd_momentum (RuleOptimizer, flat)"] = velocity

    def standalone(p, g, track):
        # a parameter that tiles no shared buffer: the adapter's per-parameter path
        opt = RuleOptimizer(optim.RULES["sgd_momentum"], {"w": p}, {"learning_rate": 1e-2},
                            track_update_ratio=track)
        return lambda: opt.step({"w": g})
    out["sgd_momentum (RuleOptimizer, standalone)"] = standalone
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1 << 24)
    ap.add_argument("--repeats", type=int, default=21)
    ap.add_argument("--rules", default="", help="comma-separated subset of the rule names")
    ap.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    dtype = np.dtype(args.dtype)
    g = (1e-3 * rng.standard_normal(args.n)).astype(dtype)
    print(f"n={args.n}, {dtype}, {fastopt._backend.simd_variant('optim')}; median [min-max] ms per step")
    print("| rule | threads | ratio off | ratio on | overhead |")
    print("|---|---|---|---|---|")
    wanted = [s for s in args.rules.split(",") if s]
    for name, make in makers().items():
        if wanted and name not in wanted:
            continue
        steps = {track: make(rng.standard_normal(args.n).astype(dtype), g, track) for track in (False, True)}
        for threads in (1, 2):
            fastopt.set_num_threads(threads)
            times = {False: [], True: []}
            for step in steps.values():
                step()                                # warm: the cached step from here on
            for _ in range(args.repeats):
                for track, step in steps.items():
                    t0 = time.perf_counter()
                    step()
                    times[track].append(time.perf_counter() - t0)
            off, on = (statistics.median(times[t]) for t in (False, True))
            span = {t: f"[{min(times[t]) * 1e3:.2f}-{max(times[t]) * 1e3:.2f}]" for t in times}
            print(f"| {name} | {threads} | {off * 1e3:.2f} {span[False]} | {on * 1e3:.2f} {span[True]} | "
                  f"{100 * (on / off - 1):+.1f}% |", flush=True)
        del steps
    return 0


if __name__ == "__main__":
    sys.exit(main())
