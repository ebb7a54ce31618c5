"""Adam step time against the memory roofline and PyTorch's fused Adam; GRAIN measurement.

    PYTHONPATH=. python benchmarks/optim_kernels_roofline.py [--grain | --variants | --flat | --api] [--repeats N] [--stagger K]

--api: the issue-2 target. The whole public step, fastopt.Adam([p]).step([g]) on 16M float32 NumPy
arrays, one thread, per SIMD variant, against torch.optim.Adam([t], fused=True).step() on tensors
torch allocated ("torch own") and on torch.from_numpy views of NumPy buffers (param and grad are
the very arrays fastopt steps; the state is NumPy zeros), and the copy roofline; interleaved.

--variants: float32/float64 Adam at 16M and 10k on one thread, every compiled SIMD variant this
machine runs (SSE2 baseline, AVX2) side by side with torch's fused Adam and the copy roofline.

The roofline is bandwidth-bound: an Adam step moves 7 arrays (reads param, grad, m, v; writes param,
m, v); the bandwidth is that of np.copyto on a 64 MB array (2 arrays moved), measured in the same
process, interleaved with the kernel timings. Every figure is the minimum over the repeats: the
machine is shared, so quote ratios. torch is optional; "torch" runs on the very same buffers as the
kernel, "torch own" on tensors torch allocated (a different placement within pages, see the layout
note in src/_optim_kernels.pyx).
"""
import argparse
import time

import numpy as np

from fastopt import _optim_kernels as K
from fastopt.reference import optim as R


def best(fn, repeats, inner=1):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - t0) / inner)
    return min(times)


def adam_arrays(n, dtype, stagger=0, seed=0):
    """param, grad, exp_avg, exp_avg_sq (+ empty max_exp_avg_sq).

    stagger=0: plain NumPy allocations, which all start at the same offset within a 4 KiB page
    (the layout users get). stagger=k: array j starts j*k elements into its buffer instead.
    """
    rng = np.random.default_rng(seed)
    out = []
    for j in range(4):
        buf = np.zeros(n + 4 * stagger, dtype)
        a = buf[j * stagger: j * stagger + n]
        if j < 2:
            a[...] = rng.standard_normal(n)
        out.append(a)
    return out + [np.empty(0, dtype)]


SCALARS = dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0,
               step_size=1e-3 / (1 - 0.9 ** 5), bias_correction2_sqrt=(1 - 0.999 ** 5) ** 0.5,
               decoupled=False, amsgrad=False, maximize=False, grad_scale=1.0, avg_weight=0.0)
ADAM_ARRAYS = ("param", "grad", "exp_avg", "exp_avg_sq", "max_exp_avg_sq")


def adam(mod, arrays, n_threads):
    """mod.adam_step on [param, grad, m, v, vmax] by keyword (no average)."""
    return mod.adam_step(**dict(zip(ADAM_ARRAYS, arrays)), param_avg=arrays[-1], **SCALARS,
                         n_threads=n_threads)


def kernel_call(arrays, n_threads):
    return lambda: adam(K, arrays, n_threads)


def torch_call(arrays, own=False):
    """torch.optim.Adam(fused=True).step, one thread, on the SAME memory as `arrays` or, with
    own=True, on tensors torch allocated itself (same values)."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(1)
    wrap = (lambda a: torch.from_numpy(a).clone()) if own else torch.from_numpy
    p = torch.nn.Parameter(wrap(arrays[0]))
    p.grad = wrap(arrays[1])
    opt = torch.optim.Adam([p], lr=1e-3, fused=True)
    opt.step()  # creates the state
    if not own:
        opt.state[p]["exp_avg"] = torch.from_numpy(arrays[2])
        opt.state[p]["exp_avg_sq"] = torch.from_numpy(arrays[3])
    return opt.step


def roofline_table(repeats, stagger):
    n_big, n_small = 16 * 1024 * 1024, 10_000
    src = np.ones(n_big, np.float32)
    dst = np.empty_like(src)
    rows = []
    for dtype in (np.float32, np.float64):
        big = adam_arrays(n_big, dtype, stagger)
        small = adam_arrays(n_small, dtype, stagger)
        tb_big, tb_small, tb_own = torch_call(big), torch_call(small), torch_call(big, own=True)
        t = {k: [] for k in ("copy", "k1", "k2", "torch", "torch_own", "k1s", "torchs")}
        for _ in range(repeats):  # interleaved, so that load from other processes hits all alike
            t["copy"].append(best(lambda: np.copyto(dst, src), 1))
            t["k1"].append(best(kernel_call(big, 1), 1))
            t["k2"].append(best(kernel_call(big, 2), 1))
            if tb_big:
                t["torch"].append(best(tb_big, 1))
                t["torch_own"].append(best(tb_own, 1))
            t["k1s"].append(best(kernel_call(small, 1), 5, inner=200))
            if tb_small:
                t["torchs"].append(best(tb_small, 5, inner=50))
        numpy_twin = best(lambda: adam(R, big, 1), 2)
        m = {k: min(v) if v else float("nan") for k, v in t.items()}
        bandwidth = 2 * src.nbytes / m["copy"]
        roof = 7 * big[0].nbytes / bandwidth
        rows.append((dtype.__name__, bandwidth, roof, m, numpy_twin))
    print(f"layout: {'NumPy default (same page offset)' if not stagger else f'staggered by {stagger} elements'}")
    print(f"{'dtype':8} {'copy GB/s':>9} {'roof ms':>8} {'1 thr ms':>9} {'/roof':>6} {'2 thr ms':>9} "
          f"{'torch ms':>9} {'torch/1thr':>10} {'torch own':>9} {'numpy ms':>9} {'10k us':>7} "
          f"{'torch 10k us':>12}")
    for name, bw, roof, m, numpy_twin in rows:
        print(f"{name:8} {bw / 1e9:9.1f} {roof * 1e3:8.1f} {m['k1'] * 1e3:9.2f} {m['k1'] / roof:6.2f} "
              f"{m['k2'] * 1e3:9.2f} {m['torch'] * 1e3:9.2f} {m['torch'] / m['k1']:10.2f} "
              f"{m['torch_own'] * 1e3:9.2f} "
              f"{numpy_twin * 1e3:9.1f} {m['k1s'] * 1e6:7.1f} {m['torchs'] * 1e6:12.1f}")


def variant_modules():
    """{"sse2": baseline module, "avx2": AVX2+FMA module (when built and the CPU runs it)}."""
    import importlib

    from fastopt import _openmp
    mods = {"sse2": K}
    if _openmp.cpu_has_avx2_fma():
        try:
            mods["avx2"] = importlib.import_module("fastopt._optim_kernels_avx2")
        except ImportError:
            pass
    return mods


def variants_table(repeats):
    mods = variant_modules()
    src = np.ones(16 * 1024 * 1024, np.float32)
    dst = np.empty_like(src)
    print(f"Adam step, 1 thread, min of {repeats} interleaved repeats; roof = 7 arrays at copy bandwidth")
    print(f"{'dtype':8} {'n':>9} {'roof ms':>8} " + " ".join(f"{v + ' ms':>9} {'/roof':>6}" for v in mods)
          + f" {'torch ms':>9} " + " ".join(f"{'torch/' + v:>11}" for v in mods))
    for dtype in (np.float32, np.float64):
        for n in (16 * 1024 * 1024, 10_000):
            arrays = adam_arrays(n, dtype)
            tstep = torch_call(arrays)
            inner = 1 if n > 1_000_000 else 200
            t = {k: [] for k in list(mods) + ["torch", "copy"]}
            for _ in range(repeats):
                t["copy"].append(best(lambda: np.copyto(dst, src), 1))
                for v, mod in mods.items():
                    t[v].append(best(lambda: adam(mod, arrays, 1), 1, inner))
                if tstep:
                    t["torch"].append(best(tstep, 1, max(1, inner // 4)))
            m = {k: min(v) if v else float("nan") for k, v in t.items()}
            roof = 7 * arrays[0].nbytes / (2 * src.nbytes / m["copy"])
            unit, scale = ("ms", 1e3) if n > 1_000_000 else ("us", 1e6)
            cells = " ".join(f"{m[v] * scale:9.3f} {m[v] / roof:6.2f}" for v in mods)
            ratios = " ".join(f"{m['torch'] / m[v]:11.2f}" for v in mods)
            print(f"{dtype.__name__:8} {n:9d} {roof * scale:8.3f} {cells} {m['torch'] * scale:9.3f} {ratios}"
                  + ("" if unit == "ms" else "   (times in us)"))


def flat_table(repeats):
    """Adam.step over FlatParams (one kernel call per step) vs the same params as separate arrays."""
    from fastopt import _backend
    from fastopt.flat import FlatParams
    from fastopt.optim import Adam
    _backend.set_num_threads(1)

    def case(shapes, inner):
        rng = np.random.default_rng(0)
        arrays = {f"p{i}": rng.standard_normal(s).astype(np.float32) for i, s in enumerate(shapes)}
        flat = FlatParams(arrays)
        loose = {k: v.copy() for k, v in arrays.items()}
        grads = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in loose.items()}
        fgrads = dict(flat.grads)
        for k in grads:
            fgrads[k][...] = grads[k]
        opt_flat, opt_loose = Adam(dict(flat.params), lr=1e-3), Adam(loose, lr=1e-3)
        tf, tl = [], []
        for _ in range(repeats):
            tf.append(best(lambda: opt_flat.step(fgrads), 1, inner))
            tl.append(best(lambda: opt_loose.step(grads), 1, inner))
        return min(tf), min(tl)

    mlp = [(3072, 1024), (1024,), (1024, 1024), (1024,), (1024, 10), (10,)]
    for name, shapes, inner in (("MLP 3072-1024-1024-10 (6 params)", mlp, 3), ("100 params x 1000", [(1000,)] * 100, 200)):
        for variant in ("sse2", "auto"):
            _backend.set_simd(variant)
            f, l = case(shapes, inner)
            print(f"{name:34} {_backend.simd_variant('optim'):5} flat {f * 1e6:9.1f} us  per-param "
                  f"{l * 1e6:9.1f} us  per-param/flat {l / f:5.2f}")


def api_table(repeats, n=16 * 1024 * 1024):
    """Public fastopt.Adam.step vs torch fused Adam (own tensors / NumPy buffers) vs the roofline."""
    from fastopt import _backend
    from fastopt.optim import Adam
    _backend.set_num_threads(1)
    rng = np.random.default_rng(0)
    p = rng.standard_normal(n, dtype=np.float32)
    g = rng.standard_normal(n, dtype=np.float32)
    src = np.ones(n, np.float32)
    dst = np.empty_like(src)
    variants = ["sse2"] + (["avx2"] if "avx2" in variant_modules() else [])
    opts = {v: Adam([p], lr=1e-3) for v in variants}
    calls = {}
    for v in variants:
        def step(v=v):
            _backend.set_simd(v)
            opts[v].step([g])
        calls["fastopt " + v] = step
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        torch.set_num_threads(1)
        own = torch.nn.Parameter(torch.from_numpy(p).clone())
        own.grad = torch.from_numpy(g).clone()
        opt_own = torch.optim.Adam([own], lr=1e-3, fused=True)
        tp = torch.nn.Parameter(torch.from_numpy(p))
        tp.grad = torch.from_numpy(g)
        opt_np = torch.optim.Adam([tp], lr=1e-3, fused=True)
        opt_np.step()  # creates the state; then swap in NumPy-allocated zeros
        opt_np.state[tp]["exp_avg"] = torch.from_numpy(np.zeros(n, np.float32))
        opt_np.state[tp]["exp_avg_sq"] = torch.from_numpy(np.zeros(n, np.float32))
        calls["torch own"] = opt_own.step
        calls["torch numpy"] = opt_np.step
    for fn in calls.values():
        fn()  # warm up: allocates state, faults pages in
    t = {k: [] for k in ["copy", *calls]}
    for _ in range(repeats):  # interleaved, so that load from other processes hits all alike
        t["copy"].append(best(lambda: np.copyto(dst, src), 1))
        for k, fn in calls.items():
            t[k].append(best(fn, 1))
    _backend.set_simd("auto")
    m = {k: min(v) for k, v in t.items()}
    roof = 7 * p.nbytes / (2 * src.nbytes / m["copy"])
    print(f"Adam.step, {n} float32, 1 thread, min of {repeats} interleaved repeats; "
          f"roof = 7 arrays at copy bandwidth ({2 * src.nbytes / m['copy'] / 1e9:.1f} GB/s) = {roof * 1e3:.2f} ms")
    torch_keys = [k for k in calls if k.startswith("torch")]
    print(f"{'':14} {'ms':>7} {'/roof':>6} " + " ".join(f"{k + '/this':>16}" for k in torch_keys))
    for k in calls:
        print(f"{k:14} {m[k] * 1e3:7.2f} {m[k] / roof:6.2f} "
              + " ".join(f"{m[tk] / m[k]:16.2f}" for tk in torch_keys))


def grain_table(repeats):
    print("float32 Adam and SGD, 1 vs 2 threads (us, min of repeats)")
    for n in (8192, 16384, 32768, 65536, 131072, 262144, 1048576):
        inner = max(1, 2_000_000 // n)
        arrays = adam_arrays(n, np.float32)
        sgd = [arrays[0], arrays[1], np.empty(0, np.float32)]
        t1 = best(kernel_call(arrays, 1), repeats, inner)
        t2 = best(kernel_call(arrays, 2), repeats, inner)
        def sgd_step(n_threads):
            return K.sgd_step(param=sgd[0], grad=sgd[1], momentum_buffer=sgd[2], param_avg=sgd[2], lr=0.1,
                              weight_decay=0.0, momentum=0.0, dampening=0.0, nesterov=False, maximize=False,
                              first_step=False, grad_scale=1.0, avg_weight=0.0, n_threads=n_threads)
        s1 = best(lambda: sgd_step(1), repeats, inner)
        s2 = best(lambda: sgd_step(2), repeats, inner)
        print(f"n={n:8d} adam 1thr {t1 * 1e6:9.1f} 2thr {t2 * 1e6:9.1f} ({t1 / t2:4.2f}x)   "
              f"sgd 1thr {s1 * 1e6:9.1f} 2thr {s2 * 1e6:9.1f} ({s1 / s2:4.2f}x)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grain", action="store_true", help="only the 1 vs 2 threads table")
    parser.add_argument("--variants", action="store_true", help="SSE2 vs AVX2 vs torch, 16M and 10k")
    parser.add_argument("--flat", action="store_true", help="Adam.step on FlatParams vs separate arrays")
    parser.add_argument("--api", action="store_true", help="public Adam.step vs torch fused, 16M float32")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--stagger", type=int, default=0,
                        help="offset array j by j*STAGGER elements (0: plain NumPy allocations)")
    args = parser.parse_args()
    if args.grain:
        grain_table(args.repeats)
    elif args.variants:
        variants_table(args.repeats)
    elif args.flat:
        flat_table(args.repeats)
    elif args.api:
        api_table(args.repeats)
    else:
        roofline_table(args.repeats, args.stagger)
