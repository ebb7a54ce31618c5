"""fastopt._mlp_kernels against its NumPy twin fastopt.reference.mlp, formulas and numerical gradients."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fastopt.reference.mlp as R

K = pytest.importorskip("fastopt._mlp_kernels")

DTYPES = [np.float32, np.float64]
# Rows and columns: 1 and 7 (tiny), 65 / 130 (more than one 64-column block, so column blocks are
# split across threads), 1023, and rows enough for the row kernels to split.
ROWS = st.sampled_from([1, 2, 7, 64, 257])
COLS = st.sampled_from([1, 7, 65, 130, 1023])
TOL = {np.float32: dict(rtol=2e-5, atol=2e-6), np.float64: dict(rtol=1e-12, atol=1e-13)}


def _close(a, b, dtype):
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), **TOL[dtype])


def _run_three(fn_name, make_args, out_idx, dtype):
    """Run the kernel at 1 and 2 threads and the twin on fresh copies; compare outputs.

    make_args() returns a fresh argument list; out_idx lists the positions written by the kernel.
    Returns (kernel outputs at 1 thread, twin outputs, kernel return, twin return).
    """
    results = []
    for module, threads in ((K, 1), (K, 2), (R, 1)):
        args = make_args()
        ret = getattr(module, fn_name)(*args, threads)
        results.append(([args[i] for i in out_idx], ret))
    (k1, r1), (k2, r2), (tw, rt) = results
    for a, b in zip(k1, k2):                      # thread count never changes a bit
        np.testing.assert_array_equal(a, b)
    assert r1 == r2
    for a, b in zip(k1, tw):
        _close(a, b, dtype)
    return k1, tw, r1, rt


def _bn_args(rng, n, d, dtype, eps, momentum, shift):
    z = (rng.standard_normal((n, d)) * 3 + shift).astype(dtype)
    b = rng.standard_normal(d).astype(dtype)
    gamma = rng.standard_normal(d).astype(dtype)
    beta = rng.standard_normal(d).astype(dtype)
    rm = rng.standard_normal(d).astype(dtype)
    rv = rng.random(d).astype(dtype) + 0.5

    def make():
        return [z.copy(), b.copy(), gamma.copy(), beta.copy(), eps, momentum, rm.copy(), rv.copy(),
                np.empty((n, d), dtype), np.empty(d, dtype), np.empty(d, dtype)]
    return make


@pytest.mark.parametrize("dtype", DTYPES)
@given(n=ROWS, d=COLS, seed=st.integers(0, 2**32 - 1))
def test_bias_relu_forward_matches_twin(dtype, n, d, seed):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, d)).astype(dtype)
    b = rng.standard_normal(d).astype(dtype)
    k, tw, _, _ = _run_three("bias_relu_forward", lambda: [z, b, np.empty((n, d), dtype)], [2], dtype)
    np.testing.assert_array_equal(k[0], np.maximum(z + b, 0))
    zz = z.copy()                                  # in place: out is z
    K.bias_relu_forward(zz, b, zz, 2)
    np.testing.assert_array_equal(zz, k[0])


@pytest.mark.parametrize("dtype", DTYPES)
@given(n=ROWS, d=COLS, seed=st.integers(0, 2**32 - 1))
def test_relu_backward_and_bias_grad_match_twin(dtype, n, d, seed):
    rng = np.random.default_rng(seed)
    g = rng.standard_normal((n, d)).astype(dtype)
    out = np.maximum(rng.standard_normal((n, d)), 0).astype(dtype)
    k, _, _, _ = _run_three("relu_backward_inplace", lambda: [g.copy(), out], [0], dtype)
    np.testing.assert_array_equal(k[0], np.where(out > 0, g, 0))
    kb, _, _, _ = _run_three("bias_grad", lambda: [g, np.empty(d, dtype)], [1], dtype)
    _close(kb[0], g.astype(np.float64).sum(0), dtype)
    kf, _, _, _ = _run_three("relu_bias_backward", lambda: [g.copy(), out, np.empty(d, dtype)], [0, 2], dtype)
    np.testing.assert_array_equal(kf[0], k[0])
    _close(kf[1], k[0].astype(np.float64).sum(0), dtype)


def test_relu_grad_is_a_select():
    """Where the ReLU output is 0, even a NaN or inf upstream gradient becomes 0 (as in torch)."""
    g = np.array([[np.nan, np.inf, 1.0, -2.0]], np.float32)
    out = np.array([[0.0, 0.0, 3.0, 0.0]], np.float32)
    for module in (K, R):
        gg = g.copy()
        module.relu_backward_inplace(gg, out, 1)
        np.testing.assert_array_equal(gg, [[0, 0, 1, 0]])


@pytest.mark.parametrize("dtype", DTYPES)
@given(n=st.sampled_from([1, 2, 7, 256]), d=COLS, seed=st.integers(0, 2**32 - 1),
       eps=st.floats(1e-8, 1e-1), momentum=st.floats(0.0, 1.0), shift=st.sampled_from([0.0, 100.0]))
def test_batchnorm_relu_forward_matches_twin(dtype, n, d, seed, eps, momentum, shift):
    make = _bn_args(np.random.default_rng(seed), n, d, dtype, eps, momentum, shift)
    k, _, _, _ = _run_three("batchnorm_relu_forward", make, [6, 7, 8, 9, 10], dtype)
    # Known answer from the CS231n formulas, in float64.
    args = make()
    z, b, gamma, beta, _, _, rm, rv = (np.asarray(a, np.float64) if isinstance(a, np.ndarray) else a
                                       for a in args[:8])
    # a = z + b is formed in the array's dtype (as the kernel does); with float32, a shift of 100
    # and two rows, the float64 sum would differ from it by more than the tolerance.
    a = (args[0] + args[1]).astype(np.float64)
    mu, var = a.mean(0), a.var(0)
    expect_out = np.maximum(gamma * (a - mu) / np.sqrt(var + eps) + beta, 0)
    loose = dict(rtol=2e-3, atol=2e-3) if dtype == np.float32 else dict(rtol=1e-9, atol=1e-9)
    # In float32, a - mean loses up to a few ulps of |a| (mean rounded to float32): with a shift of
    # 100 and nearly equal rows that is a large share of a small spread, amplified by 1/std.
    ulp = np.spacing(np.abs(a).max(0).astype(dtype)).astype(np.float64)
    cancel = 4 * np.abs(gamma) * ulp / np.sqrt(var + eps) if dtype == np.float32 else 0.0
    bound = loose["atol"] + cancel + loose["rtol"] * np.abs(expect_out)
    assert np.all(np.abs(np.asarray(k[2], np.float64) - expect_out) <= bound)
    np.testing.assert_allclose(k[3], mu, **loose)
    np.testing.assert_allclose(k[0], momentum * rm + (1 - momentum) * mu, **loose)
    np.testing.assert_allclose(k[1], momentum * rv + (1 - momentum) * var, **loose)


@pytest.mark.parametrize("dtype", DTYPES)
@given(n=ROWS, d=COLS, seed=st.integers(0, 2**32 - 1), eps=st.floats(1e-8, 1e-1))
def test_batchnorm_relu_eval_matches_twin(dtype, n, d, seed, eps):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, d)).astype(dtype)
    b, gamma, beta, rm = (rng.standard_normal(d).astype(dtype) for _ in range(4))
    rv = (rng.random(d) + 0.1).astype(dtype)
    k, _, _, _ = _run_three("batchnorm_relu_eval",
                            lambda: [z, b, gamma, beta, rm, rv, eps, np.empty((n, d), dtype)], [7], dtype)
    f = [a.astype(np.float64) for a in (z, b, gamma, beta, rm, rv)]
    expect = np.maximum(f[2] * (f[0] + f[1] - f[4]) / np.sqrt(f[5] + eps) + f[3], 0)
    loose = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(k[0], expect, **loose)
    zz = z.copy()                                   # in place: out is z
    K.batchnorm_relu_eval(zz, b, gamma, beta, rm, rv, eps, zz, 2)
    np.testing.assert_array_equal(zz, k[0])


@pytest.mark.parametrize("dtype", DTYPES)
@given(n=st.sampled_from([1, 2, 7, 256]), d=COLS, seed=st.integers(0, 2**32 - 1))
def test_relu_batchnorm_backward_matches_twin(dtype, n, d, seed):
    rng = np.random.default_rng(seed)
    fwd = _bn_args(rng, n, d, dtype, 1e-5, 0.9, 0.0)()
    K.batchnorm_relu_forward(*fwd, 1)
    z, b, gamma, out, mean, inv_std = fwd[0], fwd[1], fwd[2], fwd[8], fwd[9], fwd[10]
    dout = rng.standard_normal((n, d)).astype(dtype)

    def make():
        return [dout.copy(), out, z, b, gamma, mean, inv_std, np.empty((n, d), dtype),
                np.empty(d, dtype), np.empty(d, dtype), np.empty(d, dtype)]
    k, _, _, _ = _run_three("relu_batchnorm_backward", make, [7, 8, 9, 10], dtype)
    args = make()                                  # in place: dz is dout
    args[7] = args[0]
    K.relu_batchnorm_backward(*args, 2)
    np.testing.assert_array_equal(args[0], k[0])


@pytest.mark.parametrize("dtype", DTYPES)
@given(n=ROWS, c=st.sampled_from([1, 2, 10, 1023]), seed=st.integers(0, 2**32 - 1),
       scale=st.sampled_from([1.0, 30.0]), label_dtype=st.sampled_from([np.int32, np.int64]))
def test_softmax_loss_grad_matches_twin(dtype, n, c, seed, scale, label_dtype):
    rng = np.random.default_rng(seed)
    s = (rng.standard_normal((n, c)) * scale).astype(dtype)
    y = rng.integers(0, c, n).astype(label_dtype)
    k, tw, loss_k, loss_t = _run_three("softmax_loss_grad", lambda: [s, y, np.empty((n, c), dtype)], [2], dtype)
    assert loss_k == pytest.approx(loss_t, rel=TOL[dtype]["rtol"], abs=TOL[dtype]["atol"])
    # Known answer in float64: loss = mean(logsumexp(s) - s_y), grad = (softmax - onehot) / n.
    s64 = s.astype(np.float64)
    lse = np.log(np.exp(s64 - s64.max(1, keepdims=True)).sum(1)) + s64.max(1)
    assert loss_k == pytest.approx(np.mean(lse - s64[np.arange(n), y]), rel=1e-4, abs=1e-5)
    p = np.exp(s64 - lse[:, None])
    p[np.arange(n), y] -= 1
    np.testing.assert_allclose(k[0], p / n, rtol=1e-4, atol=1e-6)
    ss = s.copy()                                  # in place: dscores is scores
    assert K.softmax_loss_grad(ss, y, ss, 2) == loss_k
    np.testing.assert_array_equal(ss, k[0])


def test_softmax_loss_known_answer():
    s = np.zeros((4, 10))
    ds = np.empty_like(s)
    y = np.array([0, 3, 9, 9])
    assert K.softmax_loss_grad(s, y, ds, 1) == pytest.approx(np.log(10), rel=1e-15)
    np.testing.assert_allclose(ds.sum(1), 0, atol=1e-16)
    assert ds[1, 3] == pytest.approx((0.1 - 1) / 4)


# ------------------------------------------------------------------------------------------------
# numerical gradients (float64, centered differences)
# ------------------------------------------------------------------------------------------------

def _num_grad(f, x, h=1e-6):
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        old = x[idx]
        x[idx] = old + h
        fp = f()
        x[idx] = old - h
        fm = f()
        x[idx] = old
        g[idx] = (fp - fm) / (2 * h)
    return g


@pytest.mark.parametrize("n,d", [(5, 3), (8, 70)])
def test_batchnorm_relu_gradients_numerically(n, d):
    rng = np.random.default_rng(7)
    z = rng.standard_normal((n, d))
    b = rng.standard_normal(d)
    gamma = rng.standard_normal(d) + 1.5
    beta = rng.standard_normal(d) + 0.3
    w = rng.standard_normal((n, d))                # loss = sum(out * w)
    eps = 1e-5

    def forward():
        out, mean, inv_std = np.empty((n, d)), np.empty(d), np.empty(d)
        K.batchnorm_relu_forward(z, b, gamma, beta, eps, 0.9, np.zeros(d), np.ones(d), out, mean, inv_std, 2)
        return out, mean, inv_std

    def loss():
        return float((forward()[0] * w).sum())

    out, mean, inv_std = forward()
    dz, dgamma, dbeta, db = np.empty((n, d)), np.empty(d), np.empty(d), np.empty(d)
    K.relu_batchnorm_backward(w, out, z, b, gamma, mean, inv_std, dz, dgamma, dbeta, db, 2)
    for analytic, x in ((dz, z), (dgamma, gamma), (dbeta, beta), (db, b)):
        np.testing.assert_allclose(analytic, _num_grad(loss, x), rtol=1e-5, atol=1e-7)


def test_softmax_loss_gradient_numerically():
    rng = np.random.default_rng(3)
    s = rng.standard_normal((6, 5)) * 2
    y = rng.integers(0, 5, 6)
    ds = np.empty_like(s)
    K.softmax_loss_grad(s, y, ds, 1)
    num = _num_grad(lambda: K.softmax_loss_grad(s, y, np.empty_like(s), 1), s)
    np.testing.assert_allclose(ds, num, rtol=1e-6, atol=1e-9)


def test_relu_bias_backward_gradient_numerically():
    rng = np.random.default_rng(4)
    z, b, w = rng.standard_normal((6, 4)), rng.standard_normal(4), rng.standard_normal((6, 4))

    def loss():
        out = np.empty_like(z)
        K.bias_relu_forward(z, b, out, 1)
        return float((out * w).sum())

    out = np.empty_like(z)
    K.bias_relu_forward(z, b, out, 1)
    g, db = w.copy(), np.empty(4)
    K.relu_bias_backward(g, out, db, 1)
    np.testing.assert_allclose(g, _num_grad(loss, z), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(db, _num_grad(loss, b), rtol=1e-6, atol=1e-9)


# ------------------------------------------------------------------------------------------------
# bad input: error type, message, nothing changed
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("module", [K, R], ids=["cython", "numpy"])
def test_softmax_bad_label_changes_nothing(module):
    s = np.zeros((3, 4), np.float32)
    ds = np.full((3, 4), 7.0, np.float32)
    for bad in (4, -1):
        with pytest.raises(ValueError, match=r"y must hold class indices in \[0, 4\)"):
            module.softmax_loss_grad(s, np.array([0, bad, 1]), ds, 1)
        np.testing.assert_array_equal(ds, 7.0)


def test_kernel_shape_errors_change_nothing():
    z = np.ones((4, 3), np.float32)
    out = np.full((4, 3), 5.0, np.float32)
    with pytest.raises(ValueError, match=r"b must have shape \(3,\), got \(2,\)"):
        K.bias_relu_forward(z, np.zeros(2, np.float32), out, 1)
    with pytest.raises(ValueError, match=r"out must have shape \(4, 3\)"):
        K.relu_backward_inplace(out, np.ones((3, 3), np.float32), 1)
    np.testing.assert_array_equal(out, 5.0)
    d = 3
    rm, rv = np.zeros(d, np.float32), np.ones(d, np.float32)
    args = [z, np.zeros(d, np.float32), np.ones(d, np.float32), np.zeros(d, np.float32), 1e-5, 0.9,
            rm, rv, out, np.zeros(d, np.float32), np.zeros(d + 1, np.float32)]
    with pytest.raises(ValueError, match=r"inv_std must have shape \(3,\), got \(4,\)"):
        K.batchnorm_relu_forward(*args, 1)
    np.testing.assert_array_equal(rm, 0)
    np.testing.assert_array_equal(rv, 1)
    np.testing.assert_array_equal(out, 5.0)


@pytest.mark.parametrize("mod", [K, R], ids=["compiled", "twin"])
def test_empty_batch_is_refused(mod):
    e = np.empty((0, 3))
    with pytest.raises(ValueError, match="^z must have at least one row: batch statistics of an empty "
                                         "batch are undefined$"):
        mod.batchnorm_relu_forward(e, np.zeros(3), np.ones(3), np.zeros(3), 1e-5, 0.9, np.zeros(3),
                                   np.ones(3), e, np.empty(3), np.empty(3), 1)
    with pytest.raises(ValueError, match="^dout must have at least one row"):
        mod.relu_batchnorm_backward(e, e, e, np.zeros(3), np.ones(3), np.zeros(3), np.ones(3), e,
                                    np.empty(3), np.empty(3), np.empty(3), 1)
    with pytest.raises(ValueError, match="at least one row"):
        mod.softmax_loss_grad(e, np.empty(0, np.int64), e, 1)


def test_mixed_dtypes_are_refused():
    with pytest.raises((TypeError, ValueError)):
        K.bias_relu_forward(np.ones((2, 2), np.float32), np.ones(2), np.empty((2, 2), np.float32), 1)


def test_grain_constants_agree():
    assert K.GRAIN == R.GRAIN


# ------------------------------------------------------------------------------------------------
# the output layer in one call; the bench's stream loop

KERNEL_MODULES = [K] + [m for m in (pytest.importorskip("fastopt._backend").kernels("mlp"),) if m is not K]


@pytest.mark.parametrize("module", KERNEL_MODULES, ids=lambda m: m.__name__)
@pytest.mark.parametrize("dtype", DTYPES)
@given(n=ROWS, c=st.sampled_from([1, 2, 10, 65, 1023]), seed=st.integers(0, 2**32 - 1),
       label_dtype=st.sampled_from([np.int32, np.int64]))
def test_bias_softmax_loss_grad_is_the_three_calls(module, dtype, n, c, seed, label_dtype):
    """Bitwise: scores += b; softmax_loss_grad; bias_grad (the calls it replaces), at 1 and 2 threads;
    and the twin within tolerance."""
    rng = np.random.default_rng(seed)
    s = (rng.standard_normal((n, c)) * 4).astype(dtype)
    b = rng.standard_normal(c).astype(dtype)
    y = rng.integers(0, c, n).astype(label_dtype)
    ref_s, ref_ds, ref_db = s.copy(), np.empty((n, c), dtype), np.empty(c, dtype)
    np.add(ref_s, b, out=ref_s)
    ref_loss = module.softmax_loss_grad(ref_s, y, ref_ds, 1)
    module.bias_grad(ref_ds, ref_db, 1)
    for threads in (1, 2):
        ss, ds, db = s.copy(), np.empty((n, c), dtype), np.empty(c, dtype)
        assert module.bias_softmax_loss_grad(ss, b, y, ds, db, threads) == ref_loss
        for got, want in ((ss, ref_s), (ds, ref_ds), (db, ref_db)):
            np.testing.assert_array_equal(got, want)
    ss, ds, db = s.copy(), np.empty((n, c), dtype), np.empty(c, dtype)
    loss_t = R.bias_softmax_loss_grad(ss, b, y, ds, db, 1)
    assert loss_t == pytest.approx(ref_loss, rel=TOL[dtype]["rtol"], abs=TOL[dtype]["atol"])
    _close(ds, ref_ds, dtype)
    _close(db, ref_db, dtype)
    ss = s.copy()                                  # in place: dscores is scores
    assert module.bias_softmax_loss_grad(ss, b, y, ss, db, 2) == ref_loss
    np.testing.assert_array_equal(ss, ref_ds)


@pytest.mark.parametrize("module", [K, R], ids=["cython", "numpy"])
def test_bias_softmax_bad_label_changes_nothing(module):
    s = np.ones((3, 4), np.float32)
    ds, db = np.full((3, 4), 7.0, np.float32), np.full(4, 7.0, np.float32)
    for bad in (4, -1):
        with pytest.raises(ValueError, match=r"y must hold class indices in \[0, 4\)"):
            module.bias_softmax_loss_grad(s, np.ones(4, np.float32), np.array([0, bad, 1]), ds, db, 1)
        np.testing.assert_array_equal(s, 1.0)
        np.testing.assert_array_equal(ds, 7.0)
        np.testing.assert_array_equal(db, 7.0)


@pytest.mark.parametrize("module", KERNEL_MODULES, ids=lambda m: m.__name__)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reads,writes", [(0, 1), (1, 0), (1, 1), (2, 1), (4, 3), (3, 2), (0, 0)])
@pytest.mark.parametrize("length", [1, 7, 513, 16385, 1_000_003])
def test_stream_loop_matches_twin_bitwise(module, dtype, reads, writes, length):
    rng = np.random.default_rng(length + 10 * reads + writes)
    src = rng.standard_normal((reads, length)).astype(dtype)
    want = np.full((writes, length), 7, dtype)
    total_t = R.stream_loop(src, want, reads, writes, 1)
    if writes and reads:
        np.testing.assert_array_equal(want[0], src.sum(axis=0, dtype=dtype))   # rows added in order
    elif writes:
        np.testing.assert_array_equal(want, 0)
    for threads in (1, 2):
        got = np.full((writes, length), 7, dtype)
        assert module.stream_loop(src, got, reads, writes, threads) == total_t
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("module", [K, R], ids=["cython", "numpy"])
def test_stream_loop_checks_counts(module):
    src, dst = np.zeros((2, 5)), np.zeros((1, 5))
    with pytest.raises(ValueError, match="n_reads and n_writes must be >= 0"):
        module.stream_loop(src, dst, -1, 1, 1)
    with pytest.raises(ValueError, match="src must have shape"):
        module.stream_loop(src, dst, 3, 1, 1)
    with pytest.raises(ValueError, match="dst must have shape"):
        module.stream_loop(src, np.zeros((1, 4)), 2, 1, 1)


@pytest.mark.parametrize("module", list(pytest.importorskip("fastopt._backend").compiled_variants("mlp").values()),
                         ids=lambda m: m.__name__)
def test_softmax_float32_exp_within_one_ulp(module):
    # One row [0, x_1, ..., x_1023] with every x <= -30: the row sum is 1 in float32, so the
    # gradient of x_j is exp(x_j) itself, straight from the kernel's float32 exp (fo_expf_nonpos).
    # The tail down to -110 holds the subnormal results and the underflow to 0.
    rng = np.random.default_rng(3)
    x = np.concatenate([[-30.0, -87.33, -103.97, -104.0, -150.0], -30 - 80 * rng.random(60 * 1023 - 5)])
    x = x.astype(np.float32).reshape(-1, 1023)
    got = []
    for row in x:
        s = np.concatenate([[0.0], row]).astype(np.float32)[None, :]
        ds = np.empty_like(s)
        module.softmax_loss_grad(s, np.zeros(1, np.int64), ds, 1)
        got.append(ds[0, 1:])
    got = np.concatenate(got)
    want = np.exp(x.reshape(-1).astype(np.float64)).astype(np.float32)   # correctly rounded but rarely
    ulps = np.abs(got.view(np.int32).astype(np.int64) - want.view(np.int32).astype(np.int64))
    assert ulps.max() <= 1, (ulps.max(), x.reshape(-1)[ulps.argmax()])
    assert np.count_nonzero(want == 0) > 0 and np.count_nonzero((want > 0) & (want < np.finfo(np.float32).tiny)) > 0


@pytest.mark.parametrize("dtype", DTYPES)
def test_bias_relu_twin_keeps_the_sign_of_zero(dtype):
    # (-0.0) + (-0.0) is -0.0, and relu(-0.0) is -0.0 in the kernel (and torch): the twin agrees bitwise.
    z = np.array([[-0.0, 0.0, -0.0, 1.0]], dtype)
    b = np.array([-0.0, -0.0, 0.0, -2.0], dtype)
    out_k, out_r = np.empty_like(z), np.empty_like(z)
    K.bias_relu_forward(z, b, out_k, 1)
    R.bias_relu_forward(z, b, out_r, 1)
    assert out_k.tobytes() == out_r.tobytes() and np.signbit(out_k[0, 0])
