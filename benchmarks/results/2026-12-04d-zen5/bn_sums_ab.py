"""A/B of batchnorm's kernels against another build's AVX-512 module, fwd and bwd apart, interleaved.

    PYTHONPATH=. python benchmarks/results/2026-12-04d-zen5/bn_sums_ab.py BASE_DIR

BASE_DIR holds the other build's _norm_kernels_avx512*.so (here: copied from the build of 62c3208
before its sums over rows moved into C helpers).
"""
import glob, importlib.util, os, sys, numpy as np
sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', '..'))
import norm_kernels_roofline as R
from fastopt import _norm_kernels_avx512 as NEW
spec = importlib.util.spec_from_file_location("fastopt._norm_kernels_avx512", glob.glob(os.path.join(sys.argv[1], "_norm_kernels_avx512*.so"))[0])
OLD = importlib.util.module_from_spec(spec); spec.loader.exec_module(OLD)
assert OLD is not NEW
rng = np.random.default_rng(0)
for shape, dt in [((1024, 4096), np.float32), ((8192, 512), np.float32), ((4096, 1024), np.float32), ((1024, 4096), np.float64), ((8192, 512), np.float64), ((256, 1024), np.float32)]:
    x = rng.standard_normal(shape).astype(dt); dout = rng.standard_normal(shape).astype(dt)
    for t in (1, 2):
        fns = {}
        for name, K in (("old", OLD), ("new", NEW)):
            c = shape[1]; g, b = np.ones(c, dt), np.zeros(c, dt)
            out, dx = np.empty_like(x), np.empty_like(x)
            mean, inv, rm, rv, dg, db = (np.zeros(c, dt) for _ in range(6))
            def fwd(K=K, out=out, mean=mean, inv=inv, rm=rm, rv=rv, g=g, b=b): K.batchnorm_train_forward(x, g, b, 1e-5, 0.9, out, mean, inv, rm, rv, t)
            def bwd(K=K, dx=dx, mean=mean, inv=inv, dg=dg, db=db, g=g): K.batchnorm_backward(dout, x, mean, inv, g, dx, dg, db, t)
            fwd(); fns[name + " fwd"] = fwd; fns[name + " bwd"] = bwd
        res = R.interleaved(fns, 31)
        med = {k: np.median(v) for k, v in res.items()}
        print(f"{np.dtype(dt).name} {shape} {t}t  fwd old {med['old fwd']:.3f} new {med['new fwd']:.3f} ({med['old fwd']/med['new fwd']:.2f}x)  bwd old {med['old bwd']:.3f} new {med['new bwd']:.3f} ({med['old bwd']/med['new bwd']:.2f}x)", flush=True)
