"""Every declared optimizer rule's step against a C stream loop of the same memory pattern and torch.

    PYTHONPATH=. python benchmarks/optim_rules_roofline.py [--n 16M] [--repeats 5] [--threads 1]

Issue 10's speed target: each rule at 16M float32 within 1.15x of its memory traffic at the
bandwidth that a C stream loop of the SAME pattern reaches in the same run, and faster than torch's
best CPU path for it (fused, else foreach, else the for-loop). The pattern of a rule comes from its
declaration: k arrays updated in place (param and each state array the configuration uses: read
and written) and the gradient (read only). The stream loop (C, compiled here with cc -O3, loaded by
ctypes) does one add per element per array over the same k + 1 arrays: the bandwidth bound of that
access pattern on this machine, now. Every figure is the minimum of interleaved repeats.
"""
import argparse
import ctypes
import os
import subprocess
import tempfile
import time

import numpy as np

import fastopt
from fastopt import optim
from fastopt.bench.cases import parse_size
from fastopt.optim._base import placed_array
from fastopt.optim._declarations import class_rules

STREAM_C = r"""
#include <stddef.h>
/* k in-place float arrays (read + write) and one read-only array g, one pass. */
#define BODY(K) for (size_t i = 0; i < n; i++) { float x = g[i]; \
    for (int j = 0; j < K; j++) a[j][i] = a[j][i] + x; }
void stream(float **a, int k, const float *g, size_t n) {
    float *a0 = a[0], *a1 = k > 1 ? a[1] : 0, *a2 = k > 2 ? a[2] : 0, *a3 = k > 3 ? a[3] : 0;
    switch (k) {
    case 1: for (size_t i = 0; i < n; i++) { a0[i] += g[i]; } break;
    case 2: for (size_t i = 0; i < n; i++) { float x = g[i]; a0[i] += x; a1[i] += x; } break;
    case 3: for (size_t i = 0; i < n; i++) { float x = g[i]; a0[i] += x; a1[i] += x; a2[i] += x; } break;
    default: for (size_t i = 0; i < n; i++) { float x = g[i]; a0[i] += x; a1[i] += x; a2[i] += x; a3[i] += x; } break;
    }
}
"""


def load_stream():
    tmp = tempfile.mkdtemp()
    src, lib = os.path.join(tmp, "stream.c"), os.path.join(tmp, "stream.so")
    with open(src, "w") as f:
        f.write(STREAM_C)
    subprocess.run(["cc", "-O3", "-fPIC", "-shared", "-o", lib, src], check=True)
    fn = ctypes.CDLL(lib).stream
    fn.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t]
    return fn


def best(fn, repeats):
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return min(out)


def torch_step(torch, name, kwargs, p, g):
    tp = torch.nn.Parameter(torch.from_numpy(p.copy()))
    tp.grad = torch.from_numpy(g.copy())
    cls = getattr(torch.optim, name)
    for mode in ("fused", "foreach", "for-loop"):
        try:
            opt = cls([tp], **kwargs, **({"foreach": False} if mode == "for-loop" else {mode: True}))
            opt.step()
        except (RuntimeError, ValueError, TypeError):
            continue
        return opt.step, mode
    return None, ""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", default="16M")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    n = parse_size(args.n)
    fastopt.set_num_threads(args.threads)
    try:
        import torch
        torch.set_num_threads(args.threads)
    except ImportError:
        torch = None
    stream = load_stream()
    rng = np.random.default_rng(0)
    p0, g = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)
    print(f"n={n} float32, {args.threads} thread(s), min of {args.repeats} interleaved repeats")
    print(f"{'rule':10} {'k':>2} {'stream ms':>9} {'GB/s':>6} {'fastopt ms':>10} {'/stream':>7} "
          f"{'torch ms':>9} {'torch/fo':>8}  torch impl")
    for rule in class_rules():
        h = {**rule.defaults, **rule.bench}
        k = sum(rule.used_state(h)) + 1
        arrays = [placed_array((n,), np.float32, j, fill=0) for j in range(k)]
        ptrs = (ctypes.c_void_p * k)(*[a.ctypes.data for a in arrays])
        p = p0.copy()
        opt = getattr(optim, rule.class_name)([p], **rule.bench)
        opt.step([g])
        t_step, mode = (torch_step(torch, rule.torch_name, rule.bench, p0, g)
                        if torch is not None and rule.torch_name else (None, ""))
        ts, tf, tt = [], [], []
        for _ in range(args.repeats):
            ts.append(best(lambda: stream(ptrs, k, g.ctypes.data, n), 1))
            tf.append(best(lambda: opt.step([g]), 1))
            if t_step is not None:
                tt.append(best(t_step, 1))
        s, f = min(ts), min(tf)
        t = min(tt) if tt else float("nan")
        gbps = (2 * k + 1) * 4 * n / s / 1e9
        print(f"{rule.key:10} {k:2d} {s * 1e3:9.2f} {gbps:6.1f} {f * 1e3:10.2f} {f / s:7.2f} "
              f"{t * 1e3:9.2f} {t / f:8.2f}  {mode}")


if __name__ == "__main__":
    main()
