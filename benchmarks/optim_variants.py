"""Each optimizer rule's multi-tensor kernel in every compiled SIMD variant, side by side (the
measurement behind fastopt._backend._AVX2_ON_INTEL: which variant "auto" picks per CPU vendor).

    python benchmarks/optim_variants.py [--sizes 1e4,1e5,1e6,1.6e7] [--threads 1] [--repeats 7]

One tensor per rule (bench_ratio_kernel's plans and default options, untracked), the variants'
calls interleaved; per cell the minimum over `repeats` of the mean of enough calls to last ~20 ms,
wall clock, and the ratio of each variant's time to the AVX-512 one's (< 1: faster than AVX-512).
"""
import argparse
import sys
import time

import numpy as np

from bench_ratio_kernel import RULES, make_plan
from fastopt import _backend


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1e4,1e5,1e6,1.6e7")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dtypes", default="float32,float64")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--rules", default=",".join(RULES))
    args = ap.parse_args(argv)
    mods = _backend.compiled_variants("optim")
    if "avx512" not in mods:
        print("this CPU or build has no AVX-512 variant: nothing to compare")
        return 0
    names = [v for v in ("avx512", "avx2", "sse2") if v in mods]
    rng = np.random.default_rng(0)
    print(f"optim multi kernels, {args.threads} thread(s), min of {args.repeats}, us per call; "
          f"auto picks {_backend.simd_variant('optim')} here")
    print("| dtype | size | rule | " + " | ".join(names) + " | " +
          " | ".join(f"{v}/avx512" for v in names[1:]) + " |")
    print("|---" * (3 + 2 * len(names) - 1) + "|")
    for dtype in map(np.dtype, args.dtypes.split(",")):
        for n in (int(float(s)) for s in args.sizes.split(",")):
            reps = max(3, min(2000, int(2e8 / n / 10)))
            for rule in args.rules.split(","):
                slots, used, call = RULES[rule]
                plans = {v: make_plan(mods[v], rng, n, dtype, slots, used) for v in names}
                best = {v: float("inf") for v in names}
                for _ in range(args.repeats):
                    for v in names:
                        k, plan = mods[v], plans[v]
                        call(k, plan, False, args.threads)
                        t0 = time.perf_counter()
                        for _ in range(reps):
                            call(k, plan, False, args.threads)
                        best[v] = min(best[v], (time.perf_counter() - t0) / reps)
                cells = " | ".join(f"{best[v] * 1e6:.1f}" for v in names)
                ratios = " | ".join(f"{best[v] / best['avx512']:.3f}" for v in names[1:])
                print(f"| {dtype} | {n:.0e} | {rule} | {cells} | {ratios} |", flush=True)
                del plans
    return 0


if __name__ == "__main__":
    sys.exit(main())
