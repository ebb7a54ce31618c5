"""The normalization kernels' shape-dependent paths (src/_norm_kernels.pxi), each against its twin and
bitwise across thread counts and SIMD variants:

* wide rows (D * itemsize >= WIDE_ROW_BYTES = 4096): batchnorm's normalize and dx passes and
  layernorm's forward take four rows at a time (C helpers), the remaining N % 4 rows one at a time;
* narrow rows: batchnorm's sums over rows (C helpers, restrict in float64 only) group FO_BN_ROWS = 8
  rows a stride apart (_group_stride: the smallest power of two st <= 8 with st * D * itemsize >=
  4096), the rows after the last block of 8 * st one by one.

The shapes straddle both thresholds for both dtypes, leave remainders (N % 4, N % (8 * st), chunk
bounds), and include realistic sizes (>= 1M elements).
"""
import numpy as np
import pytest

from fastopt import _backend
from fastopt.reference import norm as R

from test_norm_kernels import RTOL, close, data, run_backward, run_train

VARIANTS = list(_backend.compiled_variants("norm").values())
DTYPES = [np.float32, np.float64]

# (N, D) per dtype: just below / at / above the wide-row threshold, narrow rows with stride 2, 4, 8
# (capped), and realistic sizes.
SHAPES = {
    np.float32: [(37, 1023), (37, 1024), (39, 2050), (1031, 1024), (203, 512), (150, 256), (130, 100),
                 (8200, 130)],
    np.float64: [(37, 511), (37, 512), (39, 1030), (1031, 1024), (203, 256), (150, 128), (130, 50),
                 (4100, 260)],
}
CASES = [(dt, s) for dt in DTYPES for s in SHAPES[dt]]
IDS = [f"{np.dtype(dt).name}-{s[0]}x{s[1]}" for dt, s in CASES]


def _all_outputs(K, x, dout, gamma, beta, rm, rv, n_threads):
    """Every output of batchnorm train/test/backward and layernorm forward/backward, in order."""
    n, d = x.shape
    bn = run_train(K, "batchnorm_train_forward", x, gamma, beta, 1e-5, 0.9, rm, rv, n_threads)
    test_out = np.empty_like(x)
    K.batchnorm_test_forward(x, gamma, beta, rm, rv, 1e-5, test_out, n_threads)
    bn_back = run_backward(K, "batchnorm_backward", dout, x, bn[1], bn[2], gamma, n_threads)
    ln_out, ln_mean, ln_inv = np.empty_like(x), np.empty(n, x.dtype), np.empty(n, x.dtype)
    K.layernorm_forward(x, gamma, beta, 1e-5, ln_out, ln_mean, ln_inv, n_threads)
    ln_back = run_backward(K, "layernorm_backward", dout, x, ln_mean, ln_inv, gamma, n_threads)
    return [*bn, test_out, *bn_back, ln_out, ln_mean, ln_inv, *ln_back]


@pytest.mark.parametrize("dtype, shape", CASES, ids=IDS)
def test_paths_bitwise_across_threads_and_variants(dtype, shape):
    x, dout, gamma, beta, rm, rv = data(11, shape, dtype, shape[1])
    ref = _all_outputs(VARIANTS[0], x, dout, gamma, beta, rm, rv, 1)
    for K in VARIANTS:
        for n_threads in (1, 2):
            got = _all_outputs(K, x, dout, gamma, beta, rm, rv, n_threads)
            for i, (a, b) in enumerate(zip(ref, got)):
                np.testing.assert_array_equal(a, b, err_msg=f"{K.SIMD_VARIANT} {n_threads} threads, output {i}")


@pytest.mark.parametrize("K", VARIANTS, ids=[m.SIMD_VARIANT for m in VARIANTS])
@pytest.mark.parametrize("dtype, shape", CASES, ids=IDS)
def test_paths_match_twin(dtype, shape, K):
    x, dout, gamma, beta, rm, rv = data(5, shape, dtype, shape[1])
    got = run_train(K, "batchnorm_train_forward", x, gamma, beta, 1e-5, 0.9, rm, rv, 2)
    want = run_train(R, "batchnorm_train_forward", x, gamma, beta, 1e-5, 0.9, rm, rv, 2)
    for name, g, w in zip(["out", "mean", "inv_std", "running_mean", "running_var"], got, want):
        close(name, g, w, dtype)
    mean, inv = want[1], want[2]
    for name, g, w in zip(["dx", "dgamma", "dbeta"],
                          run_backward(K, "batchnorm_backward", dout, x, mean, inv, gamma, 2),
                          run_backward(R, "batchnorm_backward", dout, x, mean, inv, gamma, 2)):
        close(name, g, w, dtype)
    outs = []
    for mod in (K, R):
        out = np.empty_like(x)
        mod.batchnorm_test_forward(x, gamma, beta, rm, rv, 1e-5, out, 2)
        outs.append(out)
    close("test out", outs[0], outs[1], dtype)
    res = []
    for mod in (K, R):
        out, m, a = np.empty_like(x), np.empty(shape[0], dtype), np.empty(shape[0], dtype)
        mod.layernorm_forward(x, gamma, beta, 1e-5, out, m, a, 2)
        res.append((out, m, a))
    for name, g, w in zip(["ln out", "ln mean", "ln inv_std"], *res):
        close(name, g, w, dtype)
    m, a = res[1][1], res[1][2]
    for name, g, w in zip(["ln dx", "ln dgamma", "ln dbeta"],
                          run_backward(K, "layernorm_backward", dout, x, m, a, gamma, 2),
                          run_backward(R, "layernorm_backward", dout, x, m, a, gamma, 2)):
        close(name, g, w, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_stride_groups_sum_every_row_once(dtype):
    # A narrow-row batch where exactly one row differs: every grouping that dropped or repeated a
    # row (or read the wrong stride) would move the mean away from the exact answer.
    n, d = 203, 256 if dtype == np.float64 else 512
    for hot in (0, 1, 15, 16, 127, 128, 202):
        x = np.zeros((n, d), dtype)
        x[hot] = n                                  # mean = 1 exactly, var = n - 1
        for K in VARIANTS:
            out, mean, inv, _, rv = run_train(K, "batchnorm_train_forward", x, np.ones(d, dtype),
                                              np.zeros(d, dtype), 0.0, 0.0, np.zeros(d, dtype),
                                              np.zeros(d, dtype), 2)
            np.testing.assert_array_equal(mean, 1.0, err_msg=f"row {hot}")
            np.testing.assert_allclose(rv, n - 1, rtol=RTOL[dtype], err_msg=f"row {hot}")
