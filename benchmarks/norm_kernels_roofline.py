"""Normalization fwd+bwd against a compiled stream loop of the same access pattern, and PyTorch.

    PYTHONPATH=. python benchmarks/norm_kernels_roofline.py [--threads 1,2] [--repeats 9] [--only batchnorm:1024x4096]
    PYTHONPATH=. python benchmarks/norm_kernels_roofline.py --threads 1 --clock cpu   # thread CPU time
    PYTHONPATH=. python benchmarks/norm_kernels_roofline.py --grain      # 1 vs 2 threads by size: how GRAIN was chosen

Issue 11's target: batchnorm, layernorm and spatial batchnorm forward+backward (float32) at
1024x4096, 8192x512 and (64, 64, 32, 32) at >= 0.8 of their roofline, and faster than torch, on
1 and 2 threads. The roofline is a C loop (cc -O3 -march=native -fopenmp, loaded with ctypes) that
makes the SAME passes over the SAME arrays as the kernels, with the same thread count, in the same
run: batchnorm forward reads x (a sum) then reads x and writes out; backward reads dout and x (a
sum) then reads both and writes dx; spatial batchnorm the same per channel (N runs of H*W);
layernorm row by row: a row is summed, then its output written while it is in cache (forward: read
x, write out; backward: read dout and x, write dx). Its arithmetic is one add per element, so it
measures what the memory system delivers for that pattern now. "/roof" = roof time / kernel time.

Rows: "roof" the stream loop; "kernel <variant>" each compiled SIMD variant this CPU runs
(fastopt._norm_kernels[_avx2|_avx512]) on preallocated outputs; "fastopt" the public layer
functions (validation, output allocation, the dispatched variant), "fastopt nocache" the same
with its outputs from NumPy's allocator instead of the block cache (fastopt._buffers); "torch" F.batch_norm /
F.layer_norm forward + autograd backward (torch allocates too). Every figure: median of the
interleaved repeats, with [min, max]; the machine is shared (2 cores, several engineers), so
compare within a run.
"""
import argparse
import ctypes
import os
import subprocess
import tempfile
import time

import numpy as np

import fastopt
from fastopt import _backend
from fastopt.layers import _operands as O
from fastopt.layers import normalization as L

STREAM_C = r"""
#include <stddef.h>
/* One add per element; the reductions are omp simd reductions so the loop is memory-bound. */
static float sum1(const float *a, size_t m) {
    float s = 0.f;
    #pragma omp simd reduction(+:s)
    for (size_t i = 0; i < m; i++) s += a[i];
    return s;
}
static float sum2(const float *a, const float *b, size_t m) {
    float s = 0.f;
    #pragma omp simd reduction(+:s)
    for (size_t i = 0; i < m; i++) s += a[i] + b[i];
    return s;
}
/* batchnorm on (n, d) viewed flat: pass 1 reads x, pass 2 reads x and writes out. */
float bn_fwd(const float *x, float *out, size_t m, int t) {
    float s = 0.f;
    #pragma omp parallel for reduction(+:s) num_threads(t) schedule(static)
    for (size_t b = 0; b < m; b += 4096) s += sum1(x + b, m - b < 4096 ? m - b : 4096);
    float a = s * 1e-30f;
    #pragma omp parallel for simd num_threads(t) schedule(static)
    for (size_t i = 0; i < m; i++) out[i] = x[i] + a;
    return s;
}
float bn_bwd(const float *dout, const float *x, float *dx, size_t m, int t) {
    float s = 0.f;
    #pragma omp parallel for reduction(+:s) num_threads(t) schedule(static)
    for (size_t b = 0; b < m; b += 4096) s += sum2(dout + b, x + b, m - b < 4096 ? m - b : 4096);
    float a = s * 1e-30f;
    #pragma omp parallel for simd num_threads(t) schedule(static)
    for (size_t i = 0; i < m; i++) dx[i] = dout[i] + x[i] + a;
    return s;
}
/* spatial batchnorm on (n, c, s): per channel, pass 1 reads its n runs, pass 2 reads and writes them. */
float sp_fwd(const float *x, float *out, size_t n, size_t c, size_t s, int t) {
    float tot = 0.f;
    #pragma omp parallel for reduction(+:tot) num_threads(t) schedule(static)
    for (size_t k = 0; k < c; k++) {
        float a = 0.f;
        for (size_t i = 0; i < n; i++) a += sum1(x + (i * c + k) * s, s);
        a *= 1e-30f;
        for (size_t i = 0; i < n; i++) {
            const float *p = x + (i * c + k) * s; float *q = out + (i * c + k) * s;
            #pragma omp simd
            for (size_t j = 0; j < s; j++) q[j] = p[j] + a;
        }
        tot += a;
    }
    return tot;
}
float sp_bwd(const float *dout, const float *x, float *dx, size_t n, size_t c, size_t s, int t) {
    float tot = 0.f;
    #pragma omp parallel for reduction(+:tot) num_threads(t) schedule(static)
    for (size_t k = 0; k < c; k++) {
        float a = 0.f;
        for (size_t i = 0; i < n; i++) a += sum2(dout + (i * c + k) * s, x + (i * c + k) * s, s);
        a *= 1e-30f;
        for (size_t i = 0; i < n; i++) {
            const float *p = x + (i * c + k) * s, *dp = dout + (i * c + k) * s; float *q = dx + (i * c + k) * s;
            #pragma omp simd
            for (size_t j = 0; j < s; j++) q[j] = dp[j] + p[j] + a;
        }
        tot += a;
    }
    return tot;
}
/* layernorm on (n, d): each row summed, then written while in cache. */
float ln_fwd(const float *x, float *out, size_t n, size_t d, int t) {
    float tot = 0.f;
    #pragma omp parallel for reduction(+:tot) num_threads(t) schedule(static)
    for (size_t i = 0; i < n; i++) {
        const float *p = x + i * d; float *q = out + i * d;
        float a = sum1(p, d) * 1e-30f;
        #pragma omp simd
        for (size_t j = 0; j < d; j++) q[j] = p[j] + a;
        tot += a;
    }
    return tot;
}
float ln_bwd(const float *dout, const float *x, float *dx, size_t n, size_t d, int t) {
    float tot = 0.f;
    #pragma omp parallel for reduction(+:tot) num_threads(t) schedule(static)
    for (size_t i = 0; i < n; i++) {
        const float *p = x + i * d, *dp = dout + i * d; float *q = dx + i * d;
        float a = sum2(dp, p, d) * 1e-30f;
        #pragma omp simd
        for (size_t j = 0; j < d; j++) q[j] = dp[j] + p[j] + a;
        tot += a;
    }
    return tot;
}
"""

SHAPES = [("batchnorm", (1024, 4096)), ("batchnorm", (8192, 512)), ("spatial", (64, 64, 32, 32)),
          ("layernorm", (1024, 4096)), ("layernorm", (8192, 512))]
VARIANTS = ("sse2", "avx2", "avx512")


def compile_c(source, names, argtypes=None):
    """Compile `source` (cc -O3 -march=native -fopenmp) and return its functions `names` (ctypes),
    with a float return type, or the given argtypes."""
    tmp = tempfile.mkdtemp()
    src, lib = os.path.join(tmp, "stream.c"), os.path.join(tmp, "stream.so")
    with open(src, "w") as f:
        f.write(source)
    subprocess.run(["cc", "-O3", "-march=native", "-fopenmp", "-fPIC", "-shared", "-o", lib, src], check=True)
    so = ctypes.CDLL(lib)
    for name in names:
        fn = getattr(so, name)
        if argtypes is None:
            fn.restype = ctypes.c_float
        else:
            fn.argtypes = argtypes[name]
    return so


def load_stream():
    return compile_c(STREAM_C, ("bn_fwd", "bn_bwd", "sp_fwd", "sp_bwd", "ln_fwd", "ln_bwd"))


def roof_case(so, kind, x, dout, t):
    out, dx = np.empty_like(x), np.empty_like(x)
    P = ctypes.c_void_p
    px, pd, po, pdx = (P(a.ctypes.data) for a in (x, dout, out, dx))
    S = ctypes.c_size_t
    if kind == "batchnorm":
        m = S(x.size)
        run = lambda: (so.bn_fwd(px, po, m, t), so.bn_bwd(pd, px, pdx, m, t))            # noqa: E731
    elif kind == "spatial":
        n, c, s = S(x.shape[0]), S(x.shape[1]), S(x.size // (x.shape[0] * x.shape[1]))
        run = lambda: (so.sp_fwd(px, po, n, c, s, t), so.sp_bwd(pd, px, pdx, n, c, s, t))  # noqa: E731
    else:
        n, d = S(x.shape[0]), S(x.shape[1])
        run = lambda: (so.ln_fwd(px, po, n, d, t), so.ln_bwd(pd, px, pdx, n, d, t))      # noqa: E731

    def both():
        run()
        return out, dx          # keeps the output buffers alive as long as the loop is
    return both


def kernel_case(K, kind, x, dout, t):
    """fwd+bwd of module K on preallocated outputs, t threads."""
    dtype, c = x.dtype, x.shape[1]
    g, b = np.ones(c, dtype), np.zeros(c, dtype)
    out, dx = np.empty_like(x), np.empty_like(x)
    dg, db, rm, rv = (np.zeros(c, dtype) for _ in range(4))
    if kind == "layernorm":
        mean, inv = np.empty(x.shape[0], dtype), np.empty(x.shape[0], dtype)

        def both():
            K.layernorm_forward(x, g, b, 1e-5, out, mean, inv, t)
            K.layernorm_backward(dout, x, mean, inv, g, dx, dg, db, t)
        return both
    mean, inv = np.empty(c, dtype), np.empty(c, dtype)
    if kind == "spatial":
        x, dout = x.reshape(x.shape[0], c, -1), dout.reshape(x.shape[0], c, -1)
        out, dx = out.reshape(x.shape), dx.reshape(x.shape)
    pre = "spatial_" if kind == "spatial" else ""
    ftr, fbw = getattr(K, pre + "batchnorm_train_forward"), getattr(K, pre + "batchnorm_backward")

    def both():
        ftr(x, g, b, 1e-5, 0.9, out, mean, inv, rm, rv, t)
        fbw(dout, x, mean, inv, g, dx, dg, db, t)
    return both


def public_case(kind, x, dout):
    c = x.shape[1]
    g, b = np.ones(c, x.dtype), np.zeros(c, x.dtype)
    if kind == "layernorm":
        return lambda: L.layernorm_backward(dout, L.layernorm_forward(x, g, b, {})[1])
    f, bw = ((L.batchnorm_forward, L.batchnorm_backward) if kind == "batchnorm"
             else (L.spatial_batchnorm_forward, L.spatial_batchnorm_backward))
    p = {"mode": "train"}
    return lambda: bw(dout, f(x, g, b, p)[1])


def uncached(fn):
    """fn with the layers' outputs from NumPy's allocator, not the block cache (an A/B of the cache)."""
    def run():
        saved, O.CACHED_OUTPUT_BYTES = O.CACHED_OUTPUT_BYTES, 1 << 62
        try:
            return fn()
        finally:
            O.CACHED_OUTPUT_BYTES = saved
    return run


def torch_case(torch, kind, x, dout):
    F = torch.nn.functional
    xt = torch.from_numpy(x).requires_grad_(True)
    c = x.shape[1]
    g, b = torch.ones(c, requires_grad=True), torch.zeros(c, requires_grad=True)
    dt = torch.from_numpy(dout)
    if kind == "layernorm":
        f = lambda: F.layer_norm(xt, (c,), g, b, 1e-5)                                     # noqa: E731
    else:
        rm, rv = torch.zeros(c), torch.ones(c)
        f = lambda: F.batch_norm(xt, rm, rv, g, b, training=True, momentum=0.1, eps=1e-5)  # noqa: E731
    return lambda: torch.autograd.grad(f(), (xt, g, b), dt)


CLOCK = {"wall": time.perf_counter, "cpu": time.thread_time}
_clock = ["wall"]


def interleaved(fns, repeats):
    """{name: [times in ms]}, the repeats interleaved so that load changes hit all alike.

    --clock cpu times with the calling thread's CPU time (time.thread_time): on a machine other
    processes load, it leaves out the time this thread waited for a core (not the memory contention).
    Only meaningful on 1 thread (OpenMP workers' time is not counted)."""
    clock = CLOCK[_clock[0]]
    res = {k: [] for k in fns}
    for f in fns.values():
        f()                                                     # warm up (page faults, threads)
    for _ in range(repeats):
        for k, f in fns.items():
            t0 = clock()
            f()
            res[k].append((clock() - t0) * 1e3)
    return res


def fmt(ts):
    return f"{np.median(ts):7.2f} [{min(ts):6.2f},{max(ts):6.2f}]"


def table(threads, repeats, only):
    try:
        import torch
    except ImportError:
        torch = None
    so = load_stream()
    mods = _backend.compiled_variants("norm")
    rng = np.random.default_rng(0)
    print(f"float32 fwd+bwd, ms ({_clock[0]} clock): median [min, max] of {repeats} interleaved repeats; "
          f"torch {torch.__version__ if torch else 'absent'}; dispatched norm variant: {_backend.simd_variant('norm')}")
    for kind, shape in SHAPES:
        name = f"{kind}:{'x'.join(map(str, shape))}"
        if only and name != only:
            continue
        x = (3 + rng.standard_normal(shape)).astype(np.float32)
        dout = rng.standard_normal(shape).astype(np.float32)
        for t in threads:
            fastopt.set_num_threads(t)
            if torch is not None:
                torch.set_num_threads(t)
            fns = {"roof": roof_case(so, kind, x, dout, t)}
            for v, K in mods.items():
                fns[f"kernel {v}"] = kernel_case(K, kind, x, dout, t)
            fns["fastopt"] = public_case(kind, x, dout)
            fns["fastopt nocache"] = uncached(public_case(kind, x, dout))
            if torch is not None:
                fns["torch"] = torch_case(torch, kind, x, dout)
            res = interleaved(fns, repeats)
            roof = np.median(res["roof"])
            print(f"{name:22} {t} thread{'s' if t > 1 else ' '}")
            for k, ts in res.items():
                extra = ""
                if k.startswith(("kernel", "fastopt")):
                    extra = f"  /roof {roof / np.median(ts):5.2f}"
                if k == "fastopt" and "torch" in res:
                    extra += f"  torch/fastopt {np.median(res['torch']) / np.median(ts):5.2f}"
                print(f"    {k:14} {fmt(ts)}{extra}")


def grain(repeats):
    """fwd+bwd batchnorm and layernorm, float32, on 1 and 2 threads, by size (kernels called directly)."""
    K = _backend.kernels("norm")
    rng = np.random.default_rng(0)
    print(f"{'shape':>12} {'elements':>9} {'bn 1t':>8} {'bn 2t':>8} {'ratio':>6} {'ln 1t':>8} {'ln 2t':>8} {'ratio':>6}")
    for n, d in [(64, 128), (128, 128), (256, 128), (256, 256), (256, 512), (512, 512), (1024, 1024)]:
        x = rng.standard_normal((n, d)).astype(np.float32)
        dout = rng.standard_normal((n, d)).astype(np.float32)
        fns = {f"{k}{t}": kernel_case(K, k, x, dout, t) for k in ("batchnorm", "layernorm") for t in (1, 2)}
        r = {k: min(v) for k, v in interleaved(fns, repeats).items()}
        print(f"{n:>5}x{d:<6} {n * d:>9} {r['batchnorm1']:8.3f} {r['batchnorm2']:8.3f} "
              f"{r['batchnorm1'] / r['batchnorm2']:6.2f} {r['layernorm1']:8.3f} {r['layernorm2']:8.3f} "
              f"{r['layernorm1'] / r['layernorm2']:6.2f}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grain", action="store_true", help="1 vs 2 threads by size")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--only", help="one case, e.g. batchnorm:1024x4096 or spatial:64x64x32x32")
    ap.add_argument("--clock", choices=tuple(CLOCK), default="wall", help="cpu: thread CPU time (1 thread only)")
    args = ap.parse_args()
    _clock[0] = args.clock
    if args.grain:
        grain(args.repeats)
    else:
        table([int(t) for t in args.threads.split(",")], args.repeats, args.only)
