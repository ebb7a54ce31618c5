"""Dropout forward (Philox) at 16M float32 elements: page faults and time per call, the outputs from the
block cache (threshold as shipped) or all from NumPy's allocator."""
import resource, time
import numpy as np
import fastopt
from fastopt.layers import dropout
from fastopt.layers import _operands as O
x = np.random.rand(1 << 24).astype(np.float32)
dp = {"mode": "train", "p": 0.5, "seed": 3, "generator": "philox"}
shipped = O.CACHED_OUTPUT_BYTES
for thr, label in ((shipped, "cache (32 MiB threshold)"), (1 << 62, "NumPy's allocator")):
    O.CACHED_OUTPUT_BYTES = thr
    for t in (1, 2):
        fastopt.set_num_threads(t)
        f = lambda: dropout.dropout_forward(x, dp)
        f(); f()
        a = resource.getrusage(resource.RUSAGE_SELF).ru_minflt; ts = []
        for _ in range(9):
            s = time.perf_counter(); f(); ts.append(time.perf_counter() - s)
        print(f"{label:26} threads {t} faults/call {(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - a) / 9:7.1f}  median {np.median(ts)*1e3:.2f} ms")
