"""Bit-for-bit comparison of batchnorm train forward + backward between this build and another (BASE_DIR: its
_norm_kernels*.so), every SIMD variant, 1 and 2 threads, odd and realistic shapes, both dtypes.

    PYTHONPATH=. python benchmarks/results/2026-12-04d-zen5/bn_bits_ab.py BASE_DIR
"""
import glob, os, sys, importlib.util, numpy as np, fastopt._norm_kernels as a, fastopt._norm_kernels_avx2 as b, fastopt._norm_kernels_avx512 as c
news = {"sse2": a, "avx2": b, "avx512": c}
rng = np.random.default_rng(1)
bad = 0
for v, suf in (("sse2", ""), ("avx2", "_avx2"), ("avx512", "_avx512")):
    name = "fastopt._norm_kernels" + suf
    spec = importlib.util.spec_from_file_location(name, glob.glob(os.path.join(sys.argv[1], f"_norm_kernels{suf}.cpython-*.so"))[0])
    OLD = importlib.util.module_from_spec(spec); spec.loader.exec_module(OLD)
    NEW = news[v]
    for shape in [(1, 1), (7, 3), (64, 33), (130, 257), (1000, 1023), (1024, 4096), (8192, 512), (333, 4100), (2048, 512), (96, 2000)]:
        for dt in (np.float32, np.float64):
            x = (rng.standard_normal(shape) * 3 + 5).astype(dt); dout = rng.standard_normal(shape).astype(dt)
            for t in (1, 2):
                outs = []
                for K in (OLD, NEW):
                    cN = shape[1]; g = rng.standard_normal(cN).astype(dt) if False else np.linspace(0.5, 2, cN).astype(dt); bb = np.linspace(-1, 1, cN).astype(dt)
                    out, dx = np.empty_like(x), np.empty_like(x)
                    mean, inv, rm, rv, dg, db = (np.zeros(cN, dt) for _ in range(6))
                    K.batchnorm_train_forward(x, g, bb, 1e-5, 0.9, out, mean, inv, rm, rv, t)
                    K.batchnorm_backward(dout, x, mean, inv, g, dx, dg, db, t)
                    outs.append((out, mean, inv, rm, rv, dx, dg, db))
                for p, q in zip(*outs):
                    if not np.array_equal(p, q):
                        bad += 1; print("MISMATCH", v, shape, np.dtype(dt).name, t)
print("mismatching outputs:", bad)
