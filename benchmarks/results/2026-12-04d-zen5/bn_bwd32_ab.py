"""float32 batchnorm_backward, this build against another (BASE_DIR: its _norm_kernels_avx512*.so), one
thread, thread CPU time, 61 interleaved repeats, three rounds per shape.

    PYTHONPATH=. python benchmarks/results/2026-12-04d-zen5/bn_bwd32_ab.py BASE_DIR
"""
import importlib.util, glob, os, sys, numpy as np
sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', '..'))
import norm_kernels_roofline as R
from fastopt import _norm_kernels_avx512 as NEW
spec = importlib.util.spec_from_file_location("fastopt._norm_kernels_avx512", glob.glob(os.path.join(sys.argv[1], "_norm_kernels_avx512*.so"))[0])
OLD = importlib.util.module_from_spec(spec); spec.loader.exec_module(OLD)
R._clock[0] = "cpu"
rng = np.random.default_rng(0)
for shape in [(1024, 4096), (256, 1024), (8192, 512)]:
    dt = np.float32
    x = rng.standard_normal(shape).astype(dt); dout = rng.standard_normal(shape).astype(dt)
    fns = {}
    for name, K in (("old", OLD), ("new", NEW)):
        c = shape[1]; g = np.ones(c, dt); dx = np.empty_like(x); dg, db = np.zeros(c, dt), np.zeros(c, dt)
        mean, inv = x.mean(0).astype(dt), np.ones(c, dt)
        fns[name] = lambda K=K, g=g, dx=dx, dg=dg, db=db, mean=mean, inv=inv: K.batchnorm_backward(dout, x, mean, inv, g, dx, dg, db, 1)
    for rep in range(3):
        res = R.interleaved(fns, 61)
        print(shape, rep, {k: round(float(np.median(v)), 3) for k, v in res.items()}, round(np.median(res['old'])/np.median(res['new']), 3))
