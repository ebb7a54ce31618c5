"""Dropout: compiled kernel vs NumPy twin, CS231n-compatible masks, statistics, gradient, bad input."""
import re

import numpy as np
import pytest
from hypothesis import given, strategies as st

import fastopt
from fastopt import _dropout_kernels as K
from fastopt.gradcheck import eval_numerical_gradient_array, rel_error
from fastopt.layers import dropout_backward, dropout_forward
from fastopt.reference import dropout as R

BIT_GENERATORS = {
    "PCG64": np.random.PCG64,
    "MT19937": np.random.MT19937,
    "SFC64": np.random.SFC64,
    "Philox": np.random.Philox,
}
SIZES = [1, 7, 1023, 100_003]
DTYPES = [np.float32, np.float64]


@pytest.fixture
def global_rng_state():
    """Tests that use NumPy's global RandomState put it back afterwards."""
    state = np.random.get_state()
    yield
    np.random.set_state(state)


# ---------------------------------------------------------------- kernel vs twin


@given(size=st.sampled_from(SIZES), dtype=st.sampled_from(DTYPES),
       kind=st.sampled_from(sorted(BIT_GENERATORS)), seed=st.integers(0, 2**32 - 1),
       p=st.floats(1e-3, 1.0))
def test_kernel_matches_twin(size, dtype, kind, seed, p):
    x = np.random.default_rng(seed).standard_normal(size).astype(dtype)
    bg_k, bg_r = BIT_GENERATORS[kind](seed), BIT_GENERATORS[kind](seed)
    mask_k, mask_r = np.full(size, 7, np.uint8), np.full(size, 7, np.uint8)
    out_k, out_r = np.full_like(x, np.nan), np.full_like(x, np.nan)
    K.dropout_train(x, p, 1.0 / p, bg_k, mask_k, out_k)
    R.dropout_train(x, p, 1.0 / p, bg_r, mask_r, out_r)
    np.testing.assert_array_equal(mask_k, mask_r)
    assert set(np.unique(mask_k)) <= {0, 1}
    assert out_k.tobytes() == out_r.tobytes()
    # Both consumed the stream identically: the generators are in the same state afterwards.
    assert bg_k.random_raw() == bg_r.random_raw()

    # The backward product, on 1 and 2 threads, bitwise equal to the twin.
    dout = np.random.default_rng(seed + 1).standard_normal(size).astype(dtype)
    dx_r = np.empty_like(dout)
    R.dropout_apply(dout, mask_r, 1.0 / p, dx_r, 1)
    for threads in (1, 2):
        dx_k = np.full_like(dout, np.nan)
        K.dropout_apply(dout, mask_k, 1.0 / p, dx_k, threads)
        assert dx_k.tobytes() == dx_r.tobytes()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", SIZES)
def test_api_backends_and_threads_bitwise_identical(dtype, size):
    x = np.random.default_rng(size).standard_normal((size, 1)).astype(dtype)
    dout = np.random.default_rng(size + 1).standard_normal((size, 1)).astype(dtype)
    results = []
    for backend, threads in [("numpy", 1), ("cython", 1), ("cython", 2)]:
        fastopt.set_backend(backend)
        fastopt.set_num_threads(threads)
        out, cache = dropout_forward(x, {"p": 0.35, "mode": "train", "seed": 42})
        dx = dropout_backward(dout, cache)
        assert out.dtype == dx.dtype == dtype and out.shape == dx.shape == x.shape
        assert cache[1].dtype == np.uint8 and cache[1].shape == x.shape
        results.append((out.tobytes(), dx.tobytes(), cache[1].tobytes()))
    assert results[0] == results[1] == results[2]


def test_threads_split_large_input():
    # Large enough that the backward product really runs on 2 threads (GRAIN elements per thread).
    from fastopt._dropout_kernels import GRAIN
    x = np.random.default_rng(0).standard_normal(4 * GRAIN + 3)
    results = []
    for threads in (1, 2):
        fastopt.set_num_threads(threads)
        out, cache = dropout_forward(x, {"p": 0.5, "mode": "train", "seed": 1})
        results.append((out.tobytes(), dropout_backward(x, cache).tobytes()))
    assert results[0] == results[1]


# ---------------------------------------------------------------- where the mask comes from


@pytest.mark.parametrize("dtype", DTYPES)
def test_seed_gives_cs231n_mask(dtype):
    x = np.random.default_rng(3).standard_normal((13, 17)).astype(dtype) + 10
    p = 0.3
    out1, (_, mask1) = dropout_forward(x, {"p": p, "mode": "train", "seed": 123})
    out2, (_, mask2) = dropout_forward(x, {"p": p, "mode": "train", "seed": 123})
    _, (_, mask3) = dropout_forward(x, {"p": p, "mode": "train", "seed": 124})
    assert out1.tobytes() == out2.tobytes()
    np.testing.assert_array_equal(mask1, mask2)
    assert not np.array_equal(mask1, mask3)
    # CS231n: np.random.seed(seed); mask = (np.random.rand(*x.shape) < p) / p; out = x * mask
    expected_mask = np.random.RandomState(123).rand(*x.shape) < p
    np.testing.assert_array_equal(mask1, expected_mask)
    expected = x * (expected_mask * dtype(1 / p))
    assert out1.tobytes() == expected.tobytes()


def test_seed_does_not_touch_global_state(global_rng_state):
    np.random.seed(5)
    before = np.random.get_state()[1].copy(), np.random.get_state()[2]
    dropout_forward(np.ones(100), {"p": 0.5, "mode": "train", "seed": 9})
    after = np.random.get_state()[1], np.random.get_state()[2]
    np.testing.assert_array_equal(before[0], after[0])
    assert before[1] == after[1]


def test_no_seed_uses_global_state_like_cs231n(global_rng_state):
    x = np.arange(1.0, 301.0).reshape(20, 15)
    np.random.seed(231)
    _, (_, mask) = dropout_forward(x, {"p": 0.25, "mode": "train"})
    next_draw = np.random.rand()
    np.random.seed(231)
    expected = np.random.rand(*x.shape) < 0.25
    np.testing.assert_array_equal(mask, expected)
    assert np.random.rand() == next_draw  # the global stream advanced by exactly x.size draws


@pytest.mark.parametrize("make", [np.random.default_rng, np.random.RandomState],
                         ids=["Generator", "RandomState"])
def test_rng_param_advances_the_callers_generator(make):
    x = np.ones((50, 3))
    rng, twin = make(77), make(77)
    _, (_, mask_a) = dropout_forward(x, {"p": 0.6, "mode": "train", "rng": rng})
    _, (_, mask_b) = dropout_forward(x, {"p": 0.6, "mode": "train", "rng": rng})
    np.testing.assert_array_equal(mask_a, twin.random_sample(x.shape) < 0.6 if make is np.random.RandomState
                                  else twin.random(x.shape) < 0.6)
    assert not np.array_equal(mask_a, mask_b)  # the generator advanced


def test_float32_and_float64_see_the_same_mask():
    x = np.random.default_rng(1).standard_normal(1000)
    m64 = dropout_forward(x, {"p": 0.5, "mode": "train", "seed": 3})[1][1]
    m32 = dropout_forward(x.astype(np.float32), {"p": 0.5, "mode": "train", "seed": 3})[1][1]
    np.testing.assert_array_equal(m32, m64)


# ---------------------------------------------------------------- statistics and semantics


@pytest.mark.parametrize("p", [0.1, 0.25, 0.5, 0.9])
def test_zero_fraction_and_mean(p):
    n = 200_000
    x = np.random.default_rng(11).standard_normal(n) + 10  # no zeros in x
    out, _ = dropout_forward(x, {"p": p, "mode": "train", "rng": np.random.default_rng(12)})
    zero_fraction = np.mean(out == 0)
    assert abs(zero_fraction - (1 - p)) < 5 * np.sqrt(p * (1 - p) / n)
    # out_i = x_i b_i / p with b_i ~ Bernoulli(p): E[out] = E[x], Var[out_i] = E[x^2] / p - E[x]^2.
    sd_mean = np.sqrt((np.mean(x**2) / p - np.mean(x) ** 2) / n)
    assert abs(out.mean() - x.mean()) < 5 * sd_mean
    kept = out != 0
    np.testing.assert_allclose(out[kept], x[kept] / p, rtol=1e-15)


def test_p_one_keeps_everything():
    x = np.random.default_rng(0).standard_normal((9, 4)).astype(np.float32)
    out, (_, mask) = dropout_forward(x, {"p": 1, "mode": "train", "seed": 0})
    assert mask.all() and out.tobytes() == x.tobytes() and out is not x


def test_test_mode_returns_input_itself():
    x = np.random.default_rng(0).standard_normal((5, 6))
    copy = x.copy()
    out, cache = dropout_forward(x, {"p": 0.5, "mode": "test", "seed": 1})
    assert out is x
    np.testing.assert_array_equal(x, copy)
    dout = np.ones_like(x)
    assert dropout_backward(dout, cache) is dout


def test_cache_is_a_snapshot_of_mode_and_p():
    param = {"p": 0.5, "mode": "train", "seed": 4}
    x = np.ones((10, 10))
    _, cache = dropout_forward(x, param)
    param["mode"], param["p"] = "test", 0.9  # e.g. a Solver switching to evaluation in between
    dx = dropout_backward(np.ones_like(x), cache)
    np.testing.assert_array_equal(dx, cache[1] * 2.0)


def test_non_contiguous_input():
    x = np.random.default_rng(2).standard_normal((8, 10))[:, ::2]
    out, cache = dropout_forward(x, {"p": 0.5, "mode": "train", "seed": 8})
    out_c, _ = dropout_forward(np.ascontiguousarray(x), {"p": 0.5, "mode": "train", "seed": 8})
    np.testing.assert_array_equal(out, out_c)
    dx = dropout_backward(np.ones((8, 10))[:, ::2], cache)
    np.testing.assert_array_equal(dx, cache[1] * 2.0)


def test_empty_input():
    out, cache = dropout_forward(np.empty((0, 3)), {"p": 0.5, "mode": "train", "seed": 8})
    assert out.shape == (0, 3) and dropout_backward(np.empty((0, 3)), cache).shape == (0, 3)


def test_dropped_nan_stays_nan():
    # Documented: out = x * mask / p, so a dropped NaN gives NaN (as CS231n's x * mask does).
    x = np.full(64, np.nan)
    out, (_, mask) = dropout_forward(x, {"p": 0.5, "mode": "train", "seed": 0})
    assert not mask.all() and np.isnan(out).all()


@pytest.mark.parametrize("p", [0.2, 0.5, 0.8])
def test_numerical_gradient(p):
    rng = np.random.default_rng(231)
    x = rng.standard_normal((10, 10)) + 10
    dout = rng.standard_normal(x.shape)
    param = {"mode": "train", "p": p, "seed": 123}
    out, cache = dropout_forward(x, param)
    dx = dropout_backward(dout, cache)
    dx_num = eval_numerical_gradient_array(lambda xx: dropout_forward(xx, param)[0], x, dout)
    assert rel_error(dx, dx_num) < 1e-8


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("param, error, fragment", [
    ([0.5, "train"], TypeError, "dropout_param must be a dict"),
    ({"mode": "train"}, ValueError, "must have key 'p'"),
    ({"p": 0.5}, ValueError, "must have key 'mode'"),
    ({"p": 0.0, "mode": "train"}, ValueError, "must be > 0"),
    ({"p": 1.5, "mode": "train"}, ValueError, "must be <= 1"),
    ({"p": float("nan"), "mode": "train"}, ValueError, "finite"),
    ({"p": "0.5", "mode": "train"}, TypeError, "dropout_param['p']"),
    ({"p": 0.5, "mode": "eval"}, ValueError, "dropout_param['mode'] must be one of"),
    ({"p": 0.5, "mode": "train", "seed": -1}, ValueError, "[0, 2**32)"),
    ({"p": 0.5, "mode": "train", "seed": 1.5}, TypeError, "seed'] must be an int"),
    ({"p": 0.5, "mode": "train", "rng": 3}, TypeError, "Generator or RandomState"),
    ({"p": 0.5, "mode": "train", "seed": 1, "rng": np.random.default_rng()}, ValueError, "not both"),
])
def test_bad_param(param, error, fragment, global_rng_state):
    x = np.ones((4, 4))
    state = np.random.get_state()[1].copy(), np.random.get_state()[2]
    with pytest.raises(error, match=re.escape(fragment)):
        dropout_forward(x, param)
    np.testing.assert_array_equal(x, 1.0)
    # Nothing was drawn: the global stream is where it was.
    np.testing.assert_array_equal(np.random.get_state()[1], state[0])
    assert np.random.get_state()[2] == state[1]


def test_bad_rng_not_advanced():
    rng, twin = np.random.default_rng(5), np.random.default_rng(5)
    with pytest.raises(TypeError, match="x must have a real numeric dtype"):
        dropout_forward(np.ones(5, dtype=np.complex128), {"p": 0.5, "mode": "train", "rng": rng})
    assert rng.random() == twin.random()


@pytest.mark.parametrize("x, error, fragment", [
    (np.ones(3, dtype=np.complex64), TypeError, "x must have a real numeric dtype"),
    ([1.0, 2.0], TypeError, "x must be a NumPy array"),
])
def test_bad_x(x, error, fragment):
    with pytest.raises(error, match=fragment):
        dropout_forward(x, {"p": 0.5, "mode": "train"})


def test_bad_backward():
    x = np.ones((3, 4))
    _, cache = dropout_forward(x, {"p": 0.5, "mode": "train", "seed": 0})
    mask = cache[1].copy()
    with pytest.raises(ValueError, match=r"dout must have shape \(3, 4\)"):
        dropout_backward(np.ones((4, 3)), cache)
    with pytest.raises(TypeError, match="dout must have a real numeric dtype"):
        dropout_backward(np.ones((3, 4), dtype=bool), cache)
    with pytest.raises(TypeError, match="cache must be"):
        dropout_backward(np.ones((3, 4)), (0.5, cache[1]))
    np.testing.assert_array_equal(cache[1], mask)


@pytest.mark.parametrize("dtype, want", [(np.int64, np.float64), (np.int8, np.float64), (np.uint16, np.float64),
                                         (np.float16, np.float32)])
@pytest.mark.parametrize("mode", ["train", "test"])
def test_other_real_dtypes_convert_as_the_other_layers(dtype, want, mode):
    """x and dout of another real dtype, read-only, are converted as fastopt.layers.core.compute_dtype
    says (issue 9, difference 4); the result equals the converted array's, and they stay unchanged."""
    values = np.arange(12).reshape(3, 4) - (0 if np.dtype(dtype).kind == "u" else 6)
    x = values.astype(dtype)
    x.flags.writeable = False
    dout = np.arange(12, dtype=dtype).reshape(3, 4)[:, ::-1]          # read-only view, not contiguous
    dout.flags.writeable = False
    param = {"p": 0.5, "mode": mode, "seed": 3}
    out, cache = dropout_forward(x, param)
    dx = dropout_backward(dout, cache)
    ref_out, ref_cache = dropout_forward(x.astype(want), param)
    np.testing.assert_array_equal(out, ref_out)
    np.testing.assert_array_equal(dx, dropout_backward(np.ascontiguousarray(dout, want), ref_cache))
    assert out.dtype == dx.dtype == want
    if mode == "train":
        np.testing.assert_array_equal(out, x.astype(want) * cache[1] * want(2))
        np.testing.assert_array_equal(dx, dout.astype(want) * cache[1] * want(2))
    np.testing.assert_array_equal(x, values)
