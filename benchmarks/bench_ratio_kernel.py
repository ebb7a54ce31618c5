"""The update/weight ratio's cost in the kernel alone (issue 12): a StepPlan of one tensor of --n
elements (default 16M), each rule's *_multi kernel with track_ratio off and on, interleaved, the
thread CPU time of the calling thread (time.thread_time: leaves out the time a loaded machine kept
it descheduled; it counts the calling thread only, so it is printed for one thread) and the wall
time, median [min-max] of --repeats calls.

--base DIR also loads another build's optim modules from DIR (e.g. a copy of main's .so files)
under the same module names, and times it in the same loop, so two builds compare side by side.

    python benchmarks/bench_ratio_kernel.py [--variant avx512|avx2|sse2] [--threads 1] [--dtype float32]
        [--rules adam,sgd_momentum] [--repeats 15] [--base DIR]
"""
import argparse
import importlib.machinery
import importlib.util
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from fastopt import _backend

OFF = dict(weight_decay=0.0, maximize=False, grad_scale=1.0, avg_weight=0.0)
ADAM = dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, step_size=1e-3, bias_correction2_sqrt=1.0, amsgrad=False)
# rule: (state slots of its plan, slots used, call(module, plan, track, threads)); the options are
# each rule's defaults (the benchmark configurations of bench_optim_ratio.py), AdamW Adam decoupled.
RULES = {
    "sgd_momentum": (1, 1, lambda k, p, t, n: k.sgd_multi(
        p, lr=1e-2, weight_decay=0.0, momentum=0.9, dampening=0.0, nesterov=False, maximize=False,
        first_step=False, grad_scale=1.0, avg_weight=0.0, track_ratio=t, n_threads=n)),
    "adam": (3, 2, lambda k, p, t, n: k.adam_multi(p, **ADAM, **OFF, decoupled=False, track_ratio=t, n_threads=n)),
    "adamw": (3, 2, lambda k, p, t, n: k.adam_multi(
        p, **ADAM, weight_decay=1e-2, decoupled=True, maximize=False, grad_scale=1.0, avg_weight=0.0,
        track_ratio=t, n_threads=n)),
    "nadam": (2, 2, lambda k, p, t, n: k.nadam_multi(
        p, lr=2e-3, beta1=0.9, beta2=0.999, eps=1e-8, bias_correction2=0.5, grad_coef=0.1, exp_avg_coef=0.5,
        decoupled=False, **OFF, track_ratio=t, n_threads=n)),
    "radam": (2, 2, lambda k, p, t, n: k.radam_multi(
        p, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, bias_correction1=0.5, bias_correction2_sqrt=0.7, rect=0.9,
        rectified=True, decoupled=False, **OFF, track_ratio=t, n_threads=n)),
    "adagrad": (1, 1, lambda k, p, t, n: k.adagrad_multi(p, clr=1e-2, eps=1e-10, **OFF, track_ratio=t,
                                                         n_threads=n)),
    "rmsprop": (3, 1, lambda k, p, t, n: k.rmsprop_multi(
        p, lr=1e-2, alpha=0.99, eps=1e-8, momentum=0.0, centered=False, **OFF, track_ratio=t, n_threads=n)),
}


def load(path, name):
    """The extension module at `path` under the name `name` (beside an already loaded one)."""
    loader = importlib.machinery.ExtensionFileLoader(name, str(path))
    spec = importlib.util.spec_from_file_location(name, str(path), loader=loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


def make_plan(mod, rng, n, dtype, slots, used):
    """One tensor's plan; state arrays staggered by a few hundred bytes, as the optimizer API places them."""
    p = rng.standard_normal(n).astype(dtype)
    g = (1e-3 * rng.standard_normal(n)).astype(dtype)
    states = [np.zeros(n + 64 * (j + 1), dtype)[64 * (j + 1):64 * (j + 1) + n] for j in range(used)]
    empty = np.empty(0, dtype)
    return mod.StepPlan([p], [g], [states + [empty] * (slots - used)], [empty])


def report(head, runs, ts):
    """One line per (build, off/on): median [min-max] ms, and on its "on" line the overhead over its "off"."""
    for i, (build, _, track) in enumerate(runs):
        med = statistics.median(ts[i])
        extra = f" {100 * (med / statistics.median(ts[i - 1]) - 1):+6.1f}%" if track else ""
        print(f"{head} {build:6s} {'on ' if track else 'off'} {med * 1e3:7.2f} "
              f"[{min(ts[i]) * 1e3:.2f}-{max(ts[i]) * 1e3:.2f}]{extra}", flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1 << 24)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    ap.add_argument("--variant", default="", help="sse2 | avx2 | avx512 (default: the widest built)")
    ap.add_argument("--rules", default=",".join(RULES))
    ap.add_argument("--base", default="", help="a directory with another build's _optim_kernels*.so")
    args = ap.parse_args(argv)
    built = _backend.compiled_variants("optim")
    variant = args.variant or next(v for v in ("avx512", "avx2", "sse2") if v in built)
    builds = [("branch", built[variant])]
    if args.base:
        suffix = "" if variant == "sse2" else "_" + variant
        so = next(Path(args.base).glob(f"_optim_kernels{suffix}.cpython-*.so"))
        base = load(so, f"fastopt._optim_kernels{suffix}")
        assert base is not builds[0][1]
        builds.insert(0, ("base", base))
    dtype = np.dtype(args.dtype)
    rng = np.random.default_rng(0)
    print(f"n={args.n} {dtype} threads={args.threads} variant={variant} builds={[b for b, _ in builds]}; "
          f"median [min-max] ms of {args.repeats}; overhead = on / off - 1 of the same build, same clock")
    for rule in args.rules.split(","):
        slots, used, call = RULES[rule]
        runs = [(b, mod, track) for b, mod in builds for track in (False, True)]
        plans = [make_plan(mod, rng, args.n, dtype, slots, used) for _, mod, _ in runs]
        cpu = [[] for _ in runs]
        wall = [[] for _ in runs]
        for r in range(args.repeats + 1):
            order = range(len(runs)) if r % 2 else reversed(range(len(runs)))   # no fixed position
            for i in order:
                _, mod, track = runs[i]
                w0, c0 = time.perf_counter(), time.thread_time()
                call(mod, plans[i], track, args.threads)
                c1, w1 = time.thread_time(), time.perf_counter()
                if r:                                    # the first round only warms
                    cpu[i].append(c1 - c0)
                    wall[i].append(w1 - w0)
        clocks = (("cpu", cpu), ("wall", wall)) if args.threads == 1 else (("wall", wall),)
        for clock, ts in clocks:
            report(f"{rule:13s} {args.threads}t {dtype} {clock:4s}", runs, ts)
        del plans
    return 0


if __name__ == "__main__":
    sys.exit(main())
