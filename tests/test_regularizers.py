"""Max-norm constraint and elastic net: known answers, gradients, bad input changes nothing."""
import numpy as np
import pytest

from fastopt.regularizers import column_norms, elastic_net_grad, elastic_net_loss, max_norm_


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_max_norm_renormalizes_only_the_columns_over_c(dtype):
    rng = np.random.default_rng(0)
    W = rng.standard_normal((50, 7)).astype(dtype)
    W[:, 2] *= 0.01                 # well under c
    before = W.copy()
    norms = column_norms(before)
    c = float(np.median(norms))
    out = max_norm_(W, c)
    assert out is W
    over = norms > c
    after = column_norms(W)
    np.testing.assert_allclose(after[over], c, rtol=1e-6 if dtype == np.float32 else 1e-14)
    assert W[:, ~over].tobytes() == before[:, ~over].tobytes()
    # the direction of each unit's incoming weights is kept
    np.testing.assert_allclose(W[:, over] * (norms[over] / c), before[:, over], rtol=1e-5)


def test_max_norm_known_answer_and_in_place_on_views():
    W = np.array([[3.0, 0.1], [4.0, 0.1]])          # column norms 5 and ~0.14
    max_norm_(W, 1.0)
    np.testing.assert_allclose(W, [[0.6, 0.1], [0.8, 0.1]], rtol=1e-15)
    big = np.full((4, 6), 2.0)
    view = big[:, ::2]                              # a strided parameter view: updated where it lives
    max_norm_(view, 1.0)
    np.testing.assert_allclose(big[:, ::2], 0.5)
    np.testing.assert_array_equal(big[:, 1::2], 2.0)


def test_max_norm_bad_input_changes_nothing():
    W = np.ones((3, 2))
    for c in (0.0, -1.0, np.inf, np.nan):
        with pytest.raises(ValueError, match="c must"):
            max_norm_(W, c)
    with pytest.raises(TypeError, match="c must"):
        max_norm_(W, "1")
    with pytest.raises(ValueError, match="fan_in, fan_out"):
        max_norm_(np.ones(3), 1.0)
    with pytest.raises(TypeError, match="float32 or float64"):
        max_norm_(np.ones((3, 2), np.int64), 1.0)
    ro = np.full((3, 2), 5.0)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        max_norm_(ro, 1.0)
    np.testing.assert_array_equal(W, 1.0)


def test_elastic_net_known_answer_and_gradient():
    W = np.array([[1.0, -2.0], [0.5, 3.0]])
    assert elastic_net_loss(W, 0.1, 0.2) == pytest.approx(0.1 * 6.5 + 0.5 * 0.2 * 14.25, rel=1e-15)
    assert elastic_net_loss([W, W], 0.1, 0.2) == pytest.approx(2 * elastic_net_loss(W, 0.1, 0.2), rel=1e-15)
    rng = np.random.default_rng(0)
    W = rng.standard_normal((6, 4))
    W[np.abs(W) < 1e-3] = 0.1        # away from the kink at 0
    g = elastic_net_grad(W, 0.3, 0.7)
    num = np.zeros_like(W)
    h = 1e-6
    for idx in np.ndindex(W.shape):
        Wp, Wm = W.copy(), W.copy()
        Wp[idx] += h
        Wm[idx] -= h
        num[idx] = (elastic_net_loss(Wp, 0.3, 0.7) - elastic_net_loss(Wm, 0.3, 0.7)) / (2 * h)
    assert np.abs(num - g).max() / np.abs(g).max() < 1e-8
    acc = np.ones_like(W)
    assert elastic_net_grad(W, 0.3, 0.7, out=acc) is acc
    np.testing.assert_allclose(acc, 1 + g, rtol=1e-15)
    np.testing.assert_array_equal(elastic_net_grad(np.zeros(3), 1.0, 0.0), 0)   # subgradient 0 at 0


def test_elastic_net_bad_input():
    W = np.ones((2, 2))
    with pytest.raises(ValueError, match="l1"):
        elastic_net_loss(W, -1, 0)
    with pytest.raises(ValueError, match="l2"):
        elastic_net_grad(W, 0, np.nan)
    acc = np.zeros((2, 2))
    with pytest.raises(ValueError, match="out must"):
        elastic_net_grad(W, 1, 1, out=np.zeros((2, 3)))
    with pytest.raises(TypeError, match="weights\\[0\\]"):
        elastic_net_loss(["x"], 1, 1)
    np.testing.assert_array_equal(acc, 0)
