"""Normalization layers: fastopt vs its NumPy twin vs PyTorch (when installed), and the memory roofline.

    python benchmarks/norm_kernels_roofline.py                 # the timing table (float32, 1 thread)
    python benchmarks/norm_kernels_roofline.py --grain         # 1 vs 2 threads by size: how GRAIN was chosen

Times are the minimum over interleaved repeats (the machine is shared and noisy), in milliseconds.
Rows "fastopt", "twin" (fastopt.reference via the numpy backend) and "torch" go through the public
functions, so they include validation and allocating the outputs (fresh 16 MB arrays cost page faults
in every implementation). Row "kernel" calls the active variant of fastopt._norm_kernels (FASTOPT_SIMD) on preallocated outputs: that is
what the roofline bounds. The roofline counts the minimal passes over the (N, D) arrays, each priced
at half of a same-size np.copyto measured in the same run (a copy reads one array and writes one):
forward 3 (statistics: read x; normalize: read x, write out), backward 5 (sums: read x, dout;
dx: read x, dout, write dx).
"""
import argparse
import time

import numpy as np

import fastopt
from fastopt import _backend
from fastopt.layers import normalization as L


def best(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times) * 1e3


def interleaved(fns, repeats):
    """Min time of each callable, repeats interleaved so that load changes hit all alike."""
    res = {k: float("inf") for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            res[k] = min(res[k], best(f, 1))
    return res


def cases(kind, shape, dtype, rng):
    x = rng.standard_normal(shape).astype(dtype)
    dout = rng.standard_normal(shape).astype(dtype)
    c = shape[1]
    g, b = np.ones(c, dtype), np.zeros(c, dtype)
    if kind == "layernorm":
        fwd = lambda: L.layernorm_forward(x, g, b, {})                                  # noqa: E731
        bwd_of = L.layernorm_backward
    else:
        f = L.batchnorm_forward if kind == "batchnorm" else L.spatial_batchnorm_forward
        p = {"mode": "train"}
        fwd = lambda: f(x, g, b, p)                                                     # noqa: E731
        bwd_of = L.batchnorm_backward if kind == "batchnorm" else L.spatial_batchnorm_backward
    cache = fwd()[1]
    return x, dout, fwd, (lambda: bwd_of(dout, cache)), (lambda: bwd_of(dout, fwd()[1]))


def kernel_cases(kind, x, dout):
    """The norm kernels of the active SIMD variant (fastopt._backend.kernels) on preallocated outputs, 1 thread."""
    K = _backend.kernels("norm")
    dtype, c = x.dtype, x.shape[1]
    g, b = np.ones(c, dtype), np.zeros(c, dtype)
    out, dx = np.empty_like(x), np.empty_like(x)
    dg, db, rm, rv = (np.zeros(c, dtype) for _ in range(4))
    if kind == "layernorm":
        mean, inv = np.empty(x.shape[0], dtype), np.empty(x.shape[0], dtype)
        f = lambda: K.layernorm_forward(x, g, b, 1e-5, out, mean, inv, 1)                 # noqa: E731
        bw = lambda: K.layernorm_backward(dout, x, mean, inv, g, dx, dg, db, 1)          # noqa: E731
    else:
        mean, inv = np.empty(c, dtype), np.empty(c, dtype)
        if kind == "spatial":
            x, dout = x.reshape(x.shape[0], c, -1), dout.reshape(x.shape[0], c, -1)
            out, dx = out.reshape(x.shape), dx.reshape(x.shape)
        pre = "spatial_" if kind == "spatial" else ""
        ftr, fbw = getattr(K, pre + "batchnorm_train_forward"), getattr(K, pre + "batchnorm_backward")
        f = lambda: ftr(x, g, b, 1e-5, 0.9, out, mean, inv, rm, rv, 1)                   # noqa: E731
        bw = lambda: fbw(dout, x, mean, inv, g, dx, dg, db, 1)                            # noqa: E731
    f()

    def both():
        f()
        bw()
    return f, bw, both


def torch_cases(torch, kind, x, dout):
    F = torch.nn.functional
    xt = torch.tensor(x, requires_grad=True)
    c = x.shape[1]
    g = torch.ones(c, requires_grad=True)
    b = torch.zeros(c, requires_grad=True)
    dt = torch.tensor(dout)
    if kind == "layernorm":
        f = lambda: F.layer_norm(xt, (c,), g, b, 1e-5)                                  # noqa: E731
    else:
        rm, rv = torch.zeros(c), torch.ones(c)
        f = lambda: F.batch_norm(xt, rm, rv, g, b, training=True, momentum=0.1, eps=1e-5)  # noqa: E731
    out = f()
    bwd = lambda: torch.autograd.grad(out, (xt, g, b), dt, retain_graph=True)            # noqa: E731
    both = lambda: torch.autograd.grad(f(), (xt, g, b), dt)                              # noqa: E731
    return f, bwd, both


SHAPES = [("batchnorm", (256, 1024)), ("batchnorm", (1024, 4096)), ("batchnorm", (8192, 512)),
          ("spatial", (32, 64, 32, 32)), ("layernorm", (256, 1024)), ("layernorm", (1024, 4096)),
          ("layernorm", (8192, 512))]


def table(repeats, only=None):
    try:
        import torch
        torch.set_num_threads(1)
    except ImportError:
        torch = None
    fastopt.set_num_threads(1)
    rng = np.random.default_rng(0)
    shapes = [s for s in SHAPES if only is None or f"{s[0]}:{'x'.join(map(str, s[1]))}" == only]
    head = (f"{'layer':9} {'shape':16} {'impl':8} {'fwd':>7} {'bwd':>7} {'fwd+bwd':>8}   "
            f"{'x twin':>6} {'/torch':>6} {'/roof':>6}")
    print(f"float32, 1 thread, ms (min of {repeats}); torch {torch.__version__ if torch else 'absent'}")
    print(head)
    for kind, shape in shapes:
        x, dout, fwd, bwd, both = cases(kind, shape, np.float32, rng)
        src, dst = np.ones(x.size, np.float32), np.empty(x.size, np.float32)
        impls = {"fastopt": (fwd, bwd, both), "kernel": kernel_cases(kind, x, dout)}
        if torch is not None:
            impls["torch"] = torch_cases(torch, kind, x, dout)
        res = {}
        for name, (f, b, fb) in impls.items():
            res[name] = interleaved({"fwd": f, "bwd": b, "both": fb}, repeats)
        fastopt.set_backend("numpy")
        x2, dout2, f, b, fb = cases(kind, shape, np.float32, rng)
        res["twin"] = interleaved({"fwd": f, "bwd": b, "both": fb}, max(3, repeats // 3))
        fastopt.set_backend("cython")
        copy = best(lambda: np.copyto(dst, src), repeats)
        roof = {"fwd": 1.5 * copy, "bwd": 2.5 * copy, "both": 4.0 * copy}
        res["roofline"] = roof
        for name in ("fastopt", "kernel", "twin", "torch", "roofline"):
            if name not in res:
                continue
            r = res[name]
            extra = ""
            if name == "fastopt":
                tw = res["twin"]["both"] / r["both"]
                to = f"{r['both'] / res['torch']['both']:6.2f}" if "torch" in res else "     -"
                extra = f"   {tw:6.1f} {to}"
            if name == "kernel":
                extra = f"   {'':6} {'':6} {r['both'] / roof['both']:6.2f}"
            print(f"{kind:9} {'x'.join(map(str, shape)):16} {name:8} {r['fwd']:7.2f} {r['bwd']:7.2f} "
                  f"{r['both']:8.2f}{extra}")


def grain(repeats):
    """fwd+bwd batchnorm and layernorm, float32, on 1 and 2 threads, by size (kernels called directly)."""
    K = _backend.kernels("norm")
    rng = np.random.default_rng(0)
    print(f"{'shape':>12} {'elements':>9} {'bn 1t':>8} {'bn 2t':>8} {'ratio':>6} {'ln 1t':>8} {'ln 2t':>8} {'ratio':>6}")
    for n, d in [(64, 128), (128, 128), (256, 128), (256, 256), (256, 512), (512, 512), (1024, 1024)]:
        x = rng.standard_normal((n, d)).astype(np.float32)
        dout = rng.standard_normal((n, d)).astype(np.float32)
        g, b = np.ones(d, np.float32), np.zeros(d, np.float32)
        out, dx = np.empty_like(x), np.empty_like(x)
        mean, inv, rm, rv, dg, db = (np.zeros(d, np.float32) for _ in range(6))
        lm, li = np.empty(n, np.float32), np.empty(n, np.float32)

        def bn(t):
            K.batchnorm_train_forward(x, g, b, 1e-5, 0.9, out, mean, inv, rm, rv, t)
            K.batchnorm_backward(dout, x, mean, inv, g, dx, dg, db, t)

        def ln(t):
            K.layernorm_forward(x, g, b, 1e-5, out, lm, li, t)
            K.layernorm_backward(dout, x, lm, li, g, dx, dg, db, t)

        r = interleaved({"bn1": lambda: bn(1), "bn2": lambda: bn(2), "ln1": lambda: ln(1),
                         "ln2": lambda: ln(2)}, repeats)
        print(f"{n:>5}x{d:<6} {n * d:>9} {r['bn1']:8.3f} {r['bn2']:8.3f} {r['bn1'] / r['bn2']:6.2f} "
              f"{r['ln1']:8.3f} {r['ln2']:8.3f} {r['ln1'] / r['ln2']:6.2f}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grain", action="store_true", help="1 vs 2 threads by size")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--only", help="one case of the table, e.g. batchnorm:1024x4096")
    args = ap.parse_args()
    if args.grain:
        grain(args.repeats)
    else:
        table(args.repeats, args.only)
