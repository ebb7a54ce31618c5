"""Dropout forward against a compiled stream loop of the same access pattern (and torch).

    PYTHONPATH=. python benchmarks/dropout_roofline.py [--n 16M] [--threads 1,2] [--repeats 9] [--clock cpu]

Issue 11's target: the counter-based generator (dropout_train_philox) at >= 0.6 of its roofline.
The roofline is a C loop (cc -O3 -march=native -fopenmp, ctypes) with the kernel's memory traffic
and thread count, in the same run: read x, write out (x's dtype) and the uint8 mask, one pass.
"/roof" = roof time / kernel time.

Rows: "roof"; "philox <variant>" the Philox kernel of each SIMD variant this CPU runs, on
preallocated outputs; "numpy stream" the default kernel (dropout_train, one PCG64 double per element,
serial by design); "layer philox" the public dropout_forward with generator 'philox' (validation,
allocation, the dispatched variant); "torch" torch.nn.functional.dropout(training=True) (its own
Bernoulli mask; for scale). Median [min, max] of interleaved repeats; the machine is shared.
"""
import argparse
import ctypes

import numpy as np

import fastopt
from fastopt import _backend
from fastopt.bench.cases import parse_size
from fastopt.layers import dropout_forward
import norm_kernels_roofline as shared   # same folder: the shared stream-loop helpers

STREAM_C = r"""
#include <stddef.h>
#include <stdint.h>
void stream_f32(const float *x, float s, uint8_t *mask, float *out, size_t n, int t) {
    #pragma omp parallel for simd num_threads(t) schedule(static)
    for (size_t i = 0; i < n; i++) { out[i] = x[i] * s; mask[i] = (uint8_t)(i & 1); }
}
void stream_f64(const double *x, double s, uint8_t *mask, double *out, size_t n, int t) {
    #pragma omp parallel for simd num_threads(t) schedule(static)
    for (size_t i = 0; i < n; i++) { out[i] = x[i] * s; mask[i] = (uint8_t)(i & 1); }
}
"""


def load_stream():
    sig = [ctypes.c_void_p, None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return shared.compile_c(STREAM_C, ("stream_f32", "stream_f64"),
                     {"stream_f32": [t or ctypes.c_float for t in sig], "stream_f64": [t or ctypes.c_double for t in sig]})


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", default="16M")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--dtypes", default="float32,float64")
    ap.add_argument("--clock", choices=tuple(shared.CLOCK), default="wall", help="cpu: thread CPU time (1 thread only)")
    args = ap.parse_args()
    shared._clock[0] = args.clock
    n = parse_size(args.n)
    try:
        import torch
    except ImportError:
        torch = None
    so = load_stream()
    mods = _backend.compiled_variants("dropout")
    print(f"dropout forward, n={n}, p=0.5, ms ({shared._clock[0]} clock): median [min, max] of {args.repeats} interleaved repeats; "
          f"dispatched dropout variant: {_backend.simd_variant('dropout')}")
    for dtype in args.dtypes.split(","):
        dt = np.dtype(dtype)
        x = np.random.default_rng(0).standard_normal(n).astype(dt)
        mask, out = np.empty(n, np.uint8), np.empty_like(x)
        smask, sout = np.empty(n, np.uint8), np.empty_like(x)
        stream = so.stream_f32 if dt == np.float32 else so.stream_f64
        for t in (int(v) for v in args.threads.split(",")):
            fastopt.set_num_threads(t)
            fns = {"roof": lambda: stream(x.ctypes.data, 2.0, smask.ctypes.data, sout.ctypes.data, n, t)}
            for v, K in mods.items():
                fns[f"philox {v}"] = (lambda K=K: K.dropout_train_philox(x, 0.5, 2.0, 42, 0, mask, out, t))
            K = _backend.kernels("dropout")
            fns["numpy stream"] = lambda: K.dropout_train(x, 0.5, 2.0, np.random.PCG64(0), mask, out, t)
            param = {"mode": "train", "p": 0.5, "seed": 42, "generator": "philox"}
            fns["layer philox"] = lambda: dropout_forward(x, param)
            if torch is not None:
                torch.set_num_threads(t)
                xt = torch.from_numpy(x)
                fns["torch"] = lambda: torch.nn.functional.dropout(xt, 0.5, training=True)
            res = shared.interleaved(fns, args.repeats)
            roof = np.median(res["roof"])
            gbs = n * (2 * dt.itemsize + 1) / roof / 1e6
            print(f"{dtype} {t} thread{'s' if t > 1 else ' '} (roof {gbs:.1f} GB/s)")
            for k, ts in res.items():
                extra = "" if k == "roof" else f"  /roof {roof / np.median(ts):5.2f}"
                print(f"    {k:14} {np.median(ts):8.2f} [{min(ts):7.2f},{max(ts):7.2f}]{extra}")


if __name__ == "__main__":
    main()
