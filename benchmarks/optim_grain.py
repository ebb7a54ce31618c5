"""Where a second thread starts to pay for each optimizer rule's step, per dtype (STEP_GRAIN).

    PYTHONPATH=. python benchmarks/optim_grain.py [--sizes 4000,6000,...] [--repeats 9]

Per rule (its `fastopt bench` hyperparameters), dtype and size: the rule's multi-tensor kernel on
the optimizer's own cached plan of one tensor, called with n_threads=1 and n_threads=2 (the same
call otherwise, so the Python call costs cancel), timings interleaved; printed is the ratio of the
minima, 1 thread over 2: above 1 the second thread pays. A rule's step splits from twice its
STEP_GRAIN entry for the dtype (src/_optim_kernels.pxi), the last column.
"""
import argparse
import timeit

import numpy as np

import fastopt
from fastopt import _backend, optim
from fastopt.optim._declarations import class_rules


def ratio(rule, dtype, size, repeats):
    rng = np.random.default_rng(0)
    p = rng.standard_normal(size).astype(dtype)
    g = (1e-3 * rng.standard_normal(size)).astype(dtype)
    opt = getattr(optim, rule.class_name)([p], **rule.bench)
    opt.step([g])
    opt.step([g])
    (rec, plan, _), = opt._fast.entries
    scalars, _ = rule.per_step({**rec.hyper, **rule.fixed}, rec.members[0].state, False)
    fn = getattr(_backend.kernels("optim"), rule.multi_kernel)

    def run(n):
        fn(plan=plan, **scalars, grad_scale=1.0, avg_weight=0.0, track_ratio=False, n_threads=n)
    number = max(100, 20_000_000 // size // 4)
    t1, t2 = [], []
    for _ in range(repeats):
        t1.append(timeit.timeit(lambda: run(1), number=number))
        t2.append(timeit.timeit(lambda: run(2), number=number))
    return min(t1) / min(t2)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="4000,6000,8000,10000,14000,20000,30000")
    ap.add_argument("--repeats", type=int, default=9)
    args = ap.parse_args(argv)
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    fastopt.set_num_threads(2)
    k = _backend.kernels("optim")
    print(f"fastopt {fastopt.__version__} ({_backend.simd_variant('optim')}); 1 thread / 2 threads, "
          f"ratio of the minima of {args.repeats}")
    print("| dtype | rule | " + " | ".join(f"{n}" for n in sizes) + " | splits from |")
    print("|---|---|" + "---|" * (len(sizes) + 1))
    for dtype in (np.float32, np.float64):
        for rule in class_rules():
            cells = [f"{ratio(rule, dtype, n, args.repeats):.2f}" for n in sizes]
            split = 2 * k.STEP_GRAIN[rule.kernel][dtype == np.float64]
            print(f"| {dtype.__name__} | {rule.bench_case} | " + " | ".join(cells) + f" | {split} |", flush=True)


if __name__ == "__main__":
    main()
