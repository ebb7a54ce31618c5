"""Layer functions with their outputs from the block cache (fastopt._buffers) or from NumPy's allocator.

    PYTHONPATH=. python benchmarks/output_cache.py [--repeats 15] [--threads 1]

Each case is a CS231n-style call pair whose large results are dropped at once, as a training loop
drops them: batchnorm and layernorm fwd+bwd, dropout fwd+bwd (Philox), relu fwd, float32 but
where named. glibc serves blocks above 32 MiB (its largest mmap threshold) with fresh pages every
time; below that, whether a freed block is reused depends on what else the process allocated. "cache" is the
default; "numpy" the same call with layers._operands.output sending every size to np.empty. The
cache takes outputs of 32 MiB and more (CACHED_OUTPUT_BYTES): the 16 MiB rows are controls, the same
path on both sides.
Minor page faults per call (getrusage) say whether fresh pages were faulted in. Times: median
[min, max] of interleaved repeats, ms, wall clock.
"""
import argparse
import resource
import time

import numpy as np

import fastopt
from fastopt.layers import activations, dropout, normalization as L
from norm_kernels_roofline import uncached    # same folder: the layers with NumPy's allocator


def cases(rng):
    x = rng.standard_normal((1024, 4096)).astype(np.float32)
    x2 = rng.standard_normal((8192, 512)).astype(np.float32)
    g, b = np.ones(4096, np.float32), np.zeros(4096, np.float32)
    g2, b2 = np.ones(512, np.float32), np.zeros(512, np.float32)
    dp = {"mode": "train", "p": 0.5, "seed": 3, "generator": "philox"}
    xd, gd, bd = x.astype(np.float64), g.astype(np.float64), b.astype(np.float64)   # 32 MiB arrays
    big = rng.standard_normal((4096, 4096)).astype(np.float32)                       # 64 MiB
    return {
        "batchnorm 1024x4096 float64": lambda: L.batchnorm_backward(
            xd, L.batchnorm_forward(xd, gd, bd, {"mode": "train"})[1]),
        "relu 4096x4096": lambda: activations.activation_forward("relu", big),
        "batchnorm 1024x4096": lambda: L.batchnorm_backward(x, L.batchnorm_forward(x, g, b, {"mode": "train"})[1]),
        "layernorm 8192x512": lambda: L.layernorm_backward(x2, L.layernorm_forward(x2, g2, b2, {})[1]),
        "dropout 1024x4096": lambda: dropout.dropout_backward(x, dropout.dropout_forward(x, dp)[1]),
        "relu 1024x4096": lambda: activations.activation_forward("relu", x),
    }


def faults(fn, n=5):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(n):
        fn()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / n


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    fastopt.set_num_threads(a.threads)
    print(f"{a.threads} thread(s), {a.repeats} interleaved repeats; ms median [min, max]; faults per call")
    for name, fn in cases(np.random.default_rng(0)).items():
        fns = {"cache": fn, "numpy": uncached(fn)}
        for f in fns.values():
            f()
        ts = {k: [] for k in fns}
        for _ in range(a.repeats):
            for k, f in fns.items():
                t = time.perf_counter()
                f()
                ts[k].append((time.perf_counter() - t) * 1e3)
        row = "  ".join(f"{k} {np.median(v):6.2f} [{min(v):5.2f}, {max(v):6.2f}] faults {faults(fns[k]):6.1f}"
                        for k, v in ts.items())
        print(f"{name:28} {row}  numpy/cache {np.median(ts['numpy']) / np.median(ts['cache']):4.2f}")


if __name__ == "__main__":
    main()
