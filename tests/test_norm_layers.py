"""fastopt.layers.normalization: CS231n-compatible batchnorm, spatial batchnorm and layernorm."""
import numpy as np
import pytest

import fastopt
from fastopt.layers.normalization import (
    NormCache, batchnorm_backward, batchnorm_backward_alt, batchnorm_forward, layernorm_backward,
    layernorm_forward, spatial_batchnorm_backward, spatial_batchnorm_forward)

DTYPES = [np.float32, np.float64]


def num_grad(f, x, df, h=1e-5):
    """Centered-difference gradient of sum(f(x) * df) with respect to x (modified in place, restored)."""
    grad = np.zeros_like(x)
    flat, g = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        pos = f(x).copy()
        flat[i] = old - h
        neg = f(x).copy()
        flat[i] = old
        g[i] = np.sum((pos - neg) * df) / (2 * h)
    return grad


def rel_error(a, b):
    """Largest absolute difference relative to the largest magnitude. (CS231n's elementwise version
    also divides by each element's own size, so an element of a gradient near 1e-5 turns the
    centered difference's ~1e-12 absolute rounding error into a 'relative error' above 1e-8.)"""
    return float(np.max(np.abs(a - b)) / max(1e-8, float(np.max(np.abs(a) + np.abs(b)))))


# ---------------------------------------------------------------------------------------------------
# gradients (float64, centered differences)


def check_grads(forward, backward, x, gamma, beta, make_param):
    rng = np.random.default_rng(1)
    out, cache = forward(x, gamma, beta, make_param())
    dout = rng.standard_normal(out.shape)
    dx, dgamma, dbeta = backward(dout, cache)
    fx = lambda v: forward(v, gamma, beta, make_param())[0]   # noqa: E731
    fg = lambda v: forward(x, v, beta, make_param())[0]       # noqa: E731
    fb = lambda v: forward(x, gamma, v, make_param())[0]      # noqa: E731
    assert rel_error(dx, num_grad(fx, x, dout)) < 1e-8
    assert rel_error(dgamma, num_grad(fg, gamma, dout)) < 1e-8
    assert rel_error(dbeta, num_grad(fb, beta, dout)) < 1e-8


@pytest.mark.parametrize("backward", [batchnorm_backward, batchnorm_backward_alt])
def test_batchnorm_gradients(rng, backward):
    x = 2 * rng.standard_normal((8, 5)) + 1
    check_grads(batchnorm_forward, backward, x, rng.standard_normal(5), rng.standard_normal(5),
                lambda: {"mode": "train"})


def test_spatial_batchnorm_gradients(rng):
    x = 2 * rng.standard_normal((2, 3, 4, 5)) + 1
    check_grads(spatial_batchnorm_forward, spatial_batchnorm_backward, x, rng.standard_normal(3),
                rng.standard_normal(3), lambda: {"mode": "train"})


def test_layernorm_gradients(rng):
    x = 2 * rng.standard_normal((4, 9)) + 1
    check_grads(layernorm_forward, layernorm_backward, x, rng.standard_normal(9), rng.standard_normal(9),
                lambda: {})


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-12), (np.float32, 2e-5)])
def test_backward_alt_is_its_own_formula_and_agrees_with_backward(rng, dtype, rtol, kernel_calls):
    # batchnorm_alt is CS231n's simplified closed form computed in NumPy; batchnorm_backward is the
    # fused kernel. Two derivations of one gradient: they agree to rounding, and alt runs no kernel.
    x = (3 + 2 * rng.standard_normal((67, 33))).astype(dtype)
    gamma, beta = rng.standard_normal(33).astype(dtype), rng.standard_normal(33).astype(dtype)
    out, cache = batchnorm_forward(x, gamma, beta, {"mode": "train"})
    dout = rng.standard_normal(x.shape).astype(dtype)
    kernel_calls.clear()
    alt = batchnorm_backward_alt(dout, cache)
    assert kernel_calls.calls == []
    ref = batchnorm_backward(dout, cache)
    for name, a, b in zip(("dx", "dgamma", "dbeta"), alt, ref):
        assert a.dtype == dtype and a.shape == b.shape
        scale = float(np.max(np.abs(b.astype(np.float64))))
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * scale, err_msg=name)


def test_backward_alt_refuses_what_backward_refuses(rng):
    x = rng.standard_normal((4, 3))
    _, cache = batchnorm_forward(x, np.ones(3), np.zeros(3), {"mode": "train"})
    with pytest.raises(ValueError, match="dout"):
        batchnorm_backward_alt(np.ones((4, 2)), cache)
    with pytest.raises(TypeError, match="cache"):
        batchnorm_backward_alt(np.ones((4, 3)), (x, 1))
    _, test_cache = batchnorm_forward(x, np.ones(3), np.zeros(3), {"mode": "test"})
    with pytest.raises(ValueError, match="training-mode"):
        batchnorm_backward_alt(np.ones((4, 3)), test_cache)


# ---------------------------------------------------------------------------------------------------
# accuracy, running statistics, modes


def normalize64(x32, axes, eps=1e-5):
    x = x32.astype(np.float64)
    mu = x.mean(axis=axes, keepdims=True)
    return (x - mu) / np.sqrt(x.var(axis=axes, keepdims=True) + eps)


def test_float32_large_offset_is_accurate(rng):
    # 1e4 + N(0, 1) in float32: E[x^2] - E[x]^2 in float32 would lose every digit of the variance.
    # out carries the float32 rounding of the mean (half an ulp of 1e4 = 5e-4), so it is checked at
    # 1e-3 with eps given; the statistics themselves (inv_std, default eps 1e-5) to float32 rounding.
    x = (1e4 + rng.standard_normal((256, 64))).astype(np.float32)
    one, zero = np.ones(64, np.float32), np.zeros(64, np.float32)
    x4 = x.reshape(16, 4, 16, 16)
    for forward, xs, axes, param in [(batchnorm_forward, x, 0, {"mode": "train"}),
                                     (layernorm_forward, x, 1, {}),
                                     (spatial_batchnorm_forward, x4, (0, 2, 3), {"mode": "train"})]:
        g, b = (one, zero) if xs.ndim == 2 else (one[:4], zero[:4])
        out, _ = forward(xs, g, b, dict(param, eps=1e-5))
        assert out.dtype == np.float32
        assert np.max(np.abs(out - normalize64(xs, axes))) < 1e-3
        _, cache = forward(xs, g, b, dict(param))
        var = xs.astype(np.float64).var(axis=axes)
        np.testing.assert_allclose(cache.inv_std, 1 / np.sqrt(var + 1e-5), rtol=2e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_running_statistics_known_answer(rng, dtype):
    x = rng.standard_normal((50, 4)).astype(dtype) * 3 + 1
    rm0, rv0 = rng.standard_normal(4).astype(dtype), rng.uniform(1, 2, 4).astype(dtype)
    rm, rv = rm0.copy(), rv0.copy()
    p = {"mode": "train", "momentum": 0.8, "running_mean": rm, "running_var": rv}
    batchnorm_forward(x, np.ones(4, dtype), np.zeros(4, dtype), p)
    assert p["running_mean"] is rm and p["running_var"] is rv            # updated in place
    x64 = x.astype(np.float64)
    tol = 1e-6 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(rm, 0.8 * rm0 + 0.2 * x64.mean(0), rtol=tol)
    np.testing.assert_allclose(rv, 0.8 * rv0 + 0.2 * x64.var(0), rtol=tol)   # biased variance


@pytest.mark.parametrize("dtype", DTYPES)
def test_running_statistics_created_when_absent(rng, dtype):
    x = rng.standard_normal((10, 3)).astype(dtype)
    p = {"mode": "train"}
    batchnorm_forward(x, np.ones(3, dtype), np.zeros(3, dtype), p)
    for key, batch in (("running_mean", x.astype(np.float64).mean(0)), ("running_var", x.astype(np.float64).var(0))):
        assert p[key].dtype == dtype and p[key].shape == (3,)
        np.testing.assert_allclose(p[key], 0.1 * batch, rtol=1e-5)
    p = {"mode": "train"}
    spatial_batchnorm_forward(x.reshape(10, 3, 1, 1), np.ones(3, dtype), np.zeros(3, dtype), p)
    np.testing.assert_allclose(p["running_mean"], 0.1 * x.astype(np.float64).mean(0), rtol=1e-5)


@pytest.mark.parametrize("spatial", [False, True])
def test_test_mode_uses_running_statistics(rng, spatial):
    shape = (6, 3, 2, 2) if spatial else (6, 3)
    x = rng.standard_normal(shape)
    gamma, beta = rng.standard_normal(3), rng.standard_normal(3)
    rm, rv = rng.standard_normal(3), rng.uniform(0.5, 2, 3)
    rm0, rv0 = rm.copy(), rv.copy()
    p = {"mode": "test", "running_mean": rm, "running_var": rv, "eps": 1e-3}
    fwd = spatial_batchnorm_forward if spatial else batchnorm_forward
    out, cache = fwd(x, gamma, beta, p)
    b = (1, 3, 1, 1) if spatial else (1, 3)
    want = gamma.reshape(b) * (x - rm.reshape(b)) / np.sqrt(rv.reshape(b) + 1e-3) + beta.reshape(b)
    np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(rm, rm0)
    np.testing.assert_array_equal(rv, rv0)
    back = spatial_batchnorm_backward if spatial else batchnorm_backward
    with pytest.raises(ValueError, match="training-mode"):
        back(np.ones_like(x), cache)


def test_layernorm_ignores_mode_and_has_no_running_stats(rng):
    x = rng.standard_normal((5, 6))
    g, b = rng.standard_normal(6), rng.standard_normal(6)
    p = {"mode": "test", "eps": 1e-4}
    a, _ = layernorm_forward(x, g, b, p)
    c, _ = layernorm_forward(x, g, b, {"eps": 1e-4})
    np.testing.assert_array_equal(a, c)
    assert set(p) == {"mode", "eps"}
    np.testing.assert_allclose(a, g * normalize64(x, 1, 1e-4) + b, rtol=1e-12, atol=1e-12)


def test_non_contiguous_inputs_are_accepted(rng):
    xt = rng.standard_normal((7, 12)).T            # (12, 7), F-ordered view
    g, b = rng.standard_normal(14)[::2], rng.standard_normal(7)
    out, cache = batchnorm_forward(xt, g, b, {"mode": "train"})
    ref, rcache = batchnorm_forward(np.ascontiguousarray(xt), g.copy(), b, {"mode": "train"})
    np.testing.assert_array_equal(out, ref)
    dout = rng.standard_normal((7, 12)).T
    for a, c in zip(batchnorm_backward(dout, cache), batchnorm_backward(dout.copy(), rcache)):
        np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize("dtype", DTYPES)
def test_thread_count_does_not_change_results(rng, dtype):
    from fastopt import _backend
    from fastopt._norm_kernels import GRAIN
    x = rng.standard_normal((512, 300)).astype(dtype) + 3     # 8 row chunks, split on 2 threads
    x4 = rng.standard_normal((16, 8, 16, 16)).astype(dtype)
    g, b = rng.standard_normal(300).astype(dtype), rng.standard_normal(300).astype(dtype)
    dout, dout4 = rng.standard_normal(x.shape).astype(dtype), rng.standard_normal(x4.shape).astype(dtype)
    results = []
    for n in (1, 2):
        fastopt.set_num_threads(n)
        assert _backend.threads_for(x4.size, GRAIN) == n      # the larger x as well
        p, p4 = {"mode": "train"}, {"mode": "train"}
        out, cache = batchnorm_forward(x, g, b, p)
        out4, cache4 = spatial_batchnorm_forward(x4, g[:8], b[:8], p4)
        lout, lcache = layernorm_forward(x, g, b, {})
        results.append((out, p["running_mean"], p["running_var"]) + batchnorm_backward(dout, cache)
                       + (out4, p4["running_var"]) + spatial_batchnorm_backward(dout4, cache4)
                       + (lout,) + layernorm_backward(dout, lcache))
    for a, c in zip(*results):
        np.testing.assert_array_equal(a, c)


def test_numpy_backend_agrees(rng):
    x = rng.standard_normal((9, 5, 3, 3))
    g, b = rng.standard_normal(5), rng.standard_normal(5)
    dout = rng.standard_normal(x.shape)
    res = []
    for name in ("cython", "numpy"):
        fastopt.set_backend(name)
        p = {"mode": "train"}
        out, cache = spatial_batchnorm_forward(x, g, b, p)
        res.append((out, p["running_var"]) + spatial_batchnorm_backward(dout, cache))
    for a, c in zip(*res):
        np.testing.assert_allclose(a, c, rtol=1e-11, atol=1e-12)


# ---------------------------------------------------------------------------------------------------
# bad input: error type, message, and bn_param untouched


def _good(dtype=np.float64, d=4):
    rng = np.random.default_rng(3)
    return dict(x=rng.standard_normal((6, d)).astype(dtype), gamma=np.ones(d, dtype), beta=np.zeros(d, dtype),
                bn_param={"mode": "train", "running_mean": np.arange(d, dtype=dtype),
                          "running_var": np.ones(d, dtype)})


def _set(key, value):
    def edit(a):
        a[key] = value(a) if callable(value) else value
    return edit


def _param(key, value):
    def edit(a):
        a["bn_param"][key] = value(a) if callable(value) else value
    return edit


def _drop_mode(a):
    del a["bn_param"]["mode"]


BAD = [
    ("x not an array", _set("x", [[1.0, 2.0]]), TypeError, "x must be a NumPy array"),
    ("x complex", _set("x", lambda a: a["x"].astype(complex)), TypeError, "x must have a real numeric dtype"),
    ("x bool", _set("x", lambda a: a["x"] > 0), TypeError, "x must have a real numeric dtype"),
    ("x 1-D", _set("x", lambda a: a["x"][0]), ValueError, "x must be 2-D"),
    ("x 3-D", _set("x", lambda a: a["x"][None]), ValueError, "x must be 2-D"),
    ("x empty", _set("x", lambda a: a["x"][:0]), ValueError, "x must not be empty"),
    ("gamma shape", _set("gamma", np.ones(5)), ValueError, "gamma must have shape (4,)"),
    ("beta shape", _set("beta", np.zeros((4, 1))), ValueError, "beta must have shape (4,)"),
    ("gamma complex", _set("gamma", np.ones(4, complex)), TypeError, "gamma must have a real numeric dtype"),
    ("beta list", _set("beta", [0.0] * 4), TypeError, "beta must be a NumPy array"),
    ("bn_param not dict", _set("bn_param", ["train"]), TypeError, "bn_param must be a dict"),
    ("mode missing", _drop_mode, ValueError, "bn_param['mode'] is required"),
    ("mode unknown", _param("mode", "eval"), ValueError, "bn_param['mode'] must be one of"),
    ("eps zero", _param("eps", 0.0), ValueError, "bn_param['eps'] must be > 0"),
    ("eps negative", _param("eps", -1e-5), ValueError, "bn_param['eps'] must be > 0"),
    ("eps nan", _param("eps", float("nan")), ValueError, "bn_param['eps'] must be finite"),
    ("eps str", _param("eps", "1e-5"), TypeError, "bn_param['eps'] must be a real number"),
    ("momentum > 1", _param("momentum", 1.5), ValueError, "bn_param['momentum'] must be <= 1"),
    ("momentum < 0", _param("momentum", -0.1), ValueError, "bn_param['momentum'] must be >= 0"),
    ("running_mean shape", _param("running_mean", np.zeros(3)), ValueError,
     "bn_param['running_mean'] must have shape (4,)"),
    ("running_var int", _param("running_var", np.ones(4, np.int64)), TypeError,
     "bn_param['running_var'] must have dtype float32 or float64"),
    ("running_var list", _param("running_var", [1.0] * 4), TypeError, "bn_param['running_var'] must be a NumPy"),
    ("running_mean strided", _param("running_mean", np.zeros(8)[::2]), ValueError,
     "bn_param['running_mean'] must be C-contiguous"),
    ("running_var read-only", _param("running_var", lambda a: _readonly(np.ones(4))), ValueError,
     "bn_param['running_var'] must be writeable"),
    ("running stats same array", _param("running_var", lambda a: a["bn_param"]["running_mean"]), ValueError,
     "same array"),
    ("running_mean is gamma", _param("running_mean", lambda a: a["gamma"]), ValueError, "same array"),
]


def _readonly(a):
    a.flags.writeable = False
    return a


@pytest.mark.parametrize("mode", ["train", "test"])
@pytest.mark.parametrize("desc,edit,exc,msg", BAD, ids=[b[0] for b in BAD])
def test_bad_batchnorm_input_changes_nothing(desc, edit, exc, msg, mode):
    args = _good()
    if isinstance(args["bn_param"], dict) and "mode" in args["bn_param"]:
        args["bn_param"]["mode"] = mode
    edit(args)
    p = args["bn_param"]
    before = dict(p) if isinstance(p, dict) else None
    saved = {k: v.copy() for k, v in before.items() if isinstance(v, np.ndarray)} if before else {}
    with pytest.raises(exc, match=msg.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        batchnorm_forward(args["x"], args["gamma"], args["beta"], p)
    if before is not None:
        assert set(p) == set(before) and all(p[k] is before[k] for k in before)
        for k, v in saved.items():
            np.testing.assert_array_equal(p[k], v)


def test_bad_input_does_not_create_running_stats():
    p = {"mode": "train", "eps": -1.0}
    with pytest.raises(ValueError):
        batchnorm_forward(np.ones((3, 2)), np.ones(2), np.zeros(2), p)
    assert set(p) == {"mode", "eps"}


def test_bad_spatial_and_layernorm_input():
    x = np.ones((2, 3, 4, 5))
    with pytest.raises(ValueError, match="x must be 4-D"):
        spatial_batchnorm_forward(x[0], np.ones(3), np.zeros(3), {"mode": "train"})
    p = {"mode": "train", "running_mean": np.zeros(3), "running_var": np.ones(3)}
    with pytest.raises(ValueError, match=r"gamma must have shape \(3,\)"):
        spatial_batchnorm_forward(x, np.ones(4), np.zeros(3), p)
    np.testing.assert_array_equal(p["running_mean"], 0)
    with pytest.raises(ValueError, match="x must be 2-D"):
        layernorm_forward(x, np.ones(5), np.zeros(5), {})
    with pytest.raises(ValueError, match=r"ln_param\['eps'\] must be > 0"):
        layernorm_forward(x[0, 0], np.ones(5), np.zeros(5), {"eps": 0})
    with pytest.raises(TypeError, match="ln_param must be a dict"):
        layernorm_forward(x[0, 0], np.ones(5), np.zeros(5), None)
    with pytest.raises(TypeError, match="beta must have a real numeric dtype"):
        layernorm_forward(x[0, 0], np.ones(5), np.zeros(5, complex), {})


def test_bad_backward_input(rng):
    x = rng.standard_normal((6, 4))
    _, bn_cache = batchnorm_forward(x, np.ones(4), np.zeros(4), {"mode": "train"})
    _, ln_cache = layernorm_forward(x, np.ones(4), np.zeros(4), {})
    with pytest.raises(TypeError, match="cache must be the cache returned by batchnorm_forward"):
        batchnorm_backward(np.ones((6, 4)), (x, 1, 2))
    with pytest.raises(ValueError, match="cache comes from layernorm_forward"):
        batchnorm_backward(np.ones((6, 4)), ln_cache)
    with pytest.raises(ValueError, match="cache comes from batchnorm_forward"):
        layernorm_backward(np.ones((6, 4)), bn_cache)
    with pytest.raises(ValueError, match="cache comes from batchnorm_forward"):
        spatial_batchnorm_backward(np.ones((6, 4)), bn_cache)
    with pytest.raises(ValueError, match=r"dout must have shape \(6, 4\)"):
        batchnorm_backward(np.ones((4, 6)), bn_cache)
    with pytest.raises(TypeError, match="dout must have a real numeric dtype"):
        layernorm_backward(np.ones((6, 4), complex), ln_cache)
    assert isinstance(bn_cache, NormCache)


@pytest.mark.parametrize("forward", [batchnorm_forward, layernorm_forward])
def test_read_only_operands_convert_as_numpy_would(rng, forward):
    # integers (CS231n's gamma = np.asarray([3, 4, 5])), float16, and float32 beside float64
    x = rng.standard_normal((6, 3)) * 2 + 1
    ref, ref_cache = forward(x, np.array([3.0, 4.0, 5.0]), np.array([6.0, 7.0, 8.0]), {"mode": "train"})
    out, cache = forward(x, np.array([3, 4, 5]), np.array([6, 7, 8], np.int32), {"mode": "train"})
    assert out.dtype == np.float64 and np.array_equal(out, ref)
    out, _ = forward(x.astype(np.float32), np.ones(3, np.float32), np.zeros(3), {"mode": "train"})
    assert out.dtype == np.float64                     # float32 with float64: float64, as NumPy
    out, _ = forward(x.astype(np.float16), np.ones(3, np.float16), np.zeros(3, np.float16), {"mode": "train"})
    assert out.dtype == np.float32                     # float16 is computed in float32
    out, _ = forward(np.arange(6).reshape(2, 3), np.ones(3, int), np.zeros(3, int), {"mode": "train"})
    assert out.dtype == np.float64                     # integers alone: float64
    backward = batchnorm_backward if forward is batchnorm_forward else layernorm_backward
    dout = rng.standard_normal(x.shape)
    d64 = backward(dout, ref_cache)
    d32 = backward(dout.astype(np.float32), ref_cache)  # converted to the cache's float64
    assert all(a.dtype == np.float64 for a in d32)
    np.testing.assert_allclose(d32[0], backward(dout.astype(np.float32).astype(np.float64), ref_cache)[0])
    assert all(a.dtype == np.float64 for a in d64)


def test_running_statistics_keep_their_dtype(rng):
    # in-place targets: a float32 running mean beside a float64 call stays the same float32 array
    x = rng.standard_normal((8, 3))
    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    p = {"mode": "train", "running_mean": rm, "running_var": rv}
    batchnorm_forward(x, np.ones(3), np.zeros(3), p)
    assert p["running_mean"] is rm and rm.dtype == np.float32
    np.testing.assert_allclose(rm, 0.1 * x.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(rv, 0.9 + 0.1 * x.var(axis=0), rtol=1e-6)


# ---------------------------------------------------------------------------------------------------
# PyTorch parity (float64). torch's running_var uses the unbiased variance and its momentum weights
# the batch (ours weights the old value), so only outputs and gradients are compared.


def _torch_grads(torch, fn, x, gamma, beta, dout):
    xt = torch.tensor(x, requires_grad=True)
    gt = torch.tensor(gamma, requires_grad=True)
    bt = torch.tensor(beta, requires_grad=True)
    out = fn(xt, gt, bt)
    out.backward(torch.tensor(dout))
    return out.detach().numpy(), xt.grad.numpy(), gt.grad.numpy(), bt.grad.numpy()


@pytest.mark.parametrize("kind", ["batchnorm", "spatial", "layernorm"])
def test_torch_parity(rng, kind):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    eps = 1e-4
    if kind == "layernorm":
        x = rng.standard_normal((16, 10)) * 2 + 1
        gamma, beta = rng.standard_normal(10), rng.standard_normal(10)
        out, cache = layernorm_forward(x, gamma, beta, {"eps": eps})
        ours = (out,) + layernorm_backward(dout := rng.standard_normal(x.shape), cache)
        theirs = _torch_grads(torch, lambda a, g, b: F.layer_norm(a, (10,), g, b, eps), x, gamma, beta, dout)
    else:
        x = rng.standard_normal((16, 10) if kind == "batchnorm" else (4, 10, 3, 5)) * 2 + 1
        gamma, beta = rng.standard_normal(10), rng.standard_normal(10)
        fwd, back = ((batchnorm_forward, batchnorm_backward) if kind == "batchnorm"
                     else (spatial_batchnorm_forward, spatial_batchnorm_backward))
        out, cache = fwd(x, gamma, beta, {"mode": "train", "eps": eps})
        ours = (out,) + back(dout := rng.standard_normal(x.shape), cache)
        theirs = _torch_grads(torch, lambda a, g, b: F.batch_norm(a, None, None, g, b, training=True, eps=eps),
                              x, gamma, beta, dout)
    for name, a, b in zip(["out", "dx", "dgamma", "dbeta"], ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10, err_msg=name)
