"""Probe: batchnorm fwd+bwd, 1 thread, kernel on fixed outputs (kern), on np.empty_like outputs (fresh),
the public path (pub; `nocache`: with NumPy's allocator), and a 16 MiB np.empty + fill (touch), interleaved."""
import time, numpy as np, fastopt
from fastopt.layers import normalization as L
from fastopt import _norm_kernels_avx512 as K
from fastopt.layers import _operands as O
import sys
if sys.argv[1:] == ['nocache']:
    O.CACHED_OUTPUT_BYTES = 1 << 62   # the public path with NumPy's allocator, as before the cache
fastopt.set_num_threads(1)
rng = np.random.default_rng(0)
for shape in [(1024, 4096), (8192, 512)]:
    x = rng.standard_normal(shape, dtype=np.float32); dout = rng.standard_normal(shape, dtype=np.float32)
    c = shape[1]; g = np.ones(c, np.float32); b = np.zeros(c, np.float32)
    out, dx = np.empty_like(x), np.empty_like(x); mean, inv = np.empty(c, np.float32), np.empty(c, np.float32)
    dg, db, rm, rv = (np.zeros(c, np.float32) for _ in range(4))
    def kern():
        K.batchnorm_train_forward(x, g, b, 1e-5, 0.9, out, mean, inv, rm, rv, 1)
        K.batchnorm_backward(dout, x, mean, inv, g, dx, dg, db, 1)
    def kern_fresh():
        o, d = np.empty_like(x), np.empty_like(x)
        K.batchnorm_train_forward(x, g, b, 1e-5, 0.9, o, mean, inv, rm, rv, 1)
        K.batchnorm_backward(dout, x, mean, inv, g, d, dg, db, 1)
    p = {"mode": "train"}
    pub = lambda: L.batchnorm_backward(dout, L.batchnorm_forward(x, g, b, p)[1])
    def touch():
        o = np.empty_like(x); o[...] = 0
    res = {k: [] for k in ("kern", "fresh", "pub", "touch")}
    for r in range(15):
        for k, f in (("kern", kern), ("fresh", kern_fresh), ("pub", pub), ("touch", touch)):
            t = time.perf_counter(); f(); res[k].append(time.perf_counter() - t)
    print(shape, {k: round(np.median(v) * 1e3, 2) for k, v in res.items()})
import resource
def flt(f, n=10):
    a = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(n): f()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - a) / n
print("faults/call kern", flt(kern), "fresh", flt(kern_fresh), "pub", flt(pub), "touch", flt(touch))
