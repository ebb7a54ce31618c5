import time, sys, numpy as np, fastopt
from fastopt import _buffers as B, _backend
fastopt.set_num_threads(int(sys.argv[2]))
kind = sys.argv[3]
n, c = [int(v) for v in sys.argv[1].split("x")]
rng = np.random.default_rng(0)
x = (3 + rng.standard_normal((n, c))).astype(np.float32); dout = rng.standard_normal((n, c)).astype(np.float32)
xa, da = B.empty(x.shape, x.dtype), B.empty(x.shape, x.dtype); xa[...] = x; da[...] = dout
k = _backend.kernels("norm"); T = _backend.threads_for(x.size, k.GRAIN)
g, b = np.ones(c, np.float32), np.zeros(c, np.float32)
out, dx = B.empty(x.shape, x.dtype), B.empty(x.shape, x.dtype)
st = n if kind == "ln" else c
mean, inv = np.empty(st, np.float32), np.empty(st, np.float32); dg, db, rm, rv = (np.zeros(c, np.float32) for _ in range(4))
def mk(x, dout):
    if kind == "ln":
        def f():
            k.layernorm_forward(x, g, b, 1e-5, out, mean, inv, T); k.layernorm_backward(dout, x, mean, inv, g, dx, dg, db, T)
    else:
        def f():
            k.batchnorm_train_forward(x, g, b, 1e-5, 0.9, out, mean, inv, rm, rv, T); k.batchnorm_backward(dout, x, mean, inv, g, dx, dg, db, T)
    return f
fns = {"in+16": mk(x, dout), "in aligned": mk(xa, da)}
ts = {q: [] for q in fns}
for r in range(21):
    for q, f in fns.items():
        s = time.perf_counter(); f(); ts[q].append(time.perf_counter() - s)
m = {q: np.median(v) * 1e3 for q, v in ts.items()}
print(kind, sys.argv[1], "threads", sys.argv[2], {q: round(v, 3) for q, v in m.items()}, "ratio", round(m["in+16"] / m["in aligned"], 3))
