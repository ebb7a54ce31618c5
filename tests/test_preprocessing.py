"""Preprocessing fitted on the training split: what each transform does to the data, state, errors."""
import numpy as np
import pytest

from fastopt.preprocessing import PCA, ZCA, Center, PCAWhiten, Standardize, from_spec, from_state_dict


def _correlated(n=500, d=6, seed=0):
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((d, d))
    return rng.standard_normal((n, d)) @ mix + rng.uniform(-5, 5, d)


def _cov(Z):
    Zc = Z - Z.mean(axis=0)
    return Zc.T @ Zc / Z.shape[0]


def test_center_and_standardize_on_train_only():
    X = _correlated(seed=0)
    V = X[:100] * 0.5 + 3.0
    c = Center().fit(X)
    np.testing.assert_allclose(c.transform(X).mean(axis=0), 0, atol=1e-12)
    np.testing.assert_array_equal(c.transform(V), V - X.mean(axis=0))   # val uses train's mean
    assert np.all(np.abs(c.transform(V).mean(axis=0)) > 0.1)
    s = Standardize().fit(X)
    Z = s.transform(X)
    np.testing.assert_allclose(Z.std(axis=0), 1, rtol=1e-12)
    assert np.all(np.abs(s.transform(V).mean(axis=0)) > 0.1)
    const = np.c_[X, np.full(len(X), 4.0)]
    np.testing.assert_array_equal(Standardize().fit(const).transform(const)[:, -1], 0)


def test_per_channel_center():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((50, 2, 3, 3)) + np.array([1.0, -4.0])[None, :, None, None]
    Z = Center(per_channel=True, image_shape=(2, 3, 3)).fit(X).transform(X)
    assert Z.shape == X.shape
    np.testing.assert_allclose(Z.mean(axis=(0, 2, 3)), 0, atol=1e-12)
    assert np.abs(Z.mean(axis=0)).max() > 1e-3        # per channel, not per pixel


def test_whitened_training_data_has_identity_covariance():
    X = _correlated()
    Z = PCAWhiten(eps=0).fit(X).transform(X)
    np.testing.assert_allclose(_cov(Z), np.eye(6), rtol=0, atol=1e-12)
    Z = ZCA(eps=0).fit(X).transform(X)
    np.testing.assert_allclose(_cov(Z), np.eye(6), rtol=0, atol=1e-12)
    Zk = PCAWhiten(3, eps=0).fit(X).transform(X)
    assert Zk.shape == (500, 3)
    np.testing.assert_allclose(_cov(Zk), np.eye(3), rtol=0, atol=1e-12)
    # with eps the variances are S / (S + eps)
    w = PCAWhiten(eps=0.5).fit(X)
    s = w.state_dict()["variances"]
    np.testing.assert_allclose(np.diag(_cov(w.transform(X))), s / (s + 0.5), rtol=1e-12)


def test_pca_keeps_the_leading_variance_and_is_uncorrelated():
    X = _correlated()
    p = PCA(2).fit(X)
    Z = p.transform(X)
    c = _cov(Z)
    np.testing.assert_allclose(c - np.diag(np.diag(c)), 0, atol=1e-10)
    eig = np.sort(np.linalg.eigvalsh(_cov(X)))[::-1]
    np.testing.assert_allclose(np.diag(c), eig[:2], rtol=1e-12)


def test_zca_is_symmetric_and_closest_to_the_input():
    X = _correlated()
    z = ZCA(eps=0).fit(X)
    W = z.matrix
    np.testing.assert_allclose(W, W.T, rtol=0, atol=1e-12)
    Xc = X - X.mean(axis=0)
    Y = z.transform(X)
    np.testing.assert_allclose(Xc @ W, Y, rtol=0, atol=1e-10)
    dist = np.linalg.norm(Xc - Y)
    white = PCAWhiten(eps=0).fit(X).transform(X)
    rng = np.random.default_rng(1)
    for _ in range(20):   # every other whitening is a rotation of the PCA-whitened data
        q, _ = np.linalg.qr(rng.standard_normal((6, 6)))
        assert dist < np.linalg.norm(Xc - white @ q)


@pytest.mark.parametrize("spec", ["center", "standardize", "pca:6", "pca:3", "whiten", "whiten:4", "zca"])
def test_round_trips_and_state(spec):
    X = _correlated().astype(np.float32)
    pre = from_spec(spec).fit(X)
    Z = pre.transform(X)
    assert Z.dtype == np.float32
    back = pre.inverse_transform(Z)
    if spec in ("pca:3", "whiten:4"):
        # a projection keeps only the leading components: projecting again changes nothing
        np.testing.assert_allclose(pre.transform(back), Z, rtol=1e-4, atol=1e-4)
    else:
        np.testing.assert_allclose(back, X, rtol=1e-4, atol=1e-4)
    state = pre.state_dict()
    again = from_state_dict(state)
    assert np.array_equal(again.transform(X), Z)
    state["mean"][:] = 99      # a copy: the fitted object is untouched
    assert np.array_equal(pre.transform(X), Z)


def test_errors():
    X = _correlated()
    keep = X.copy()
    with pytest.raises(ValueError, match="k = 7 is larger than the number of features"):
        PCA(7).fit(X)
    for bad in ("pca", "pca:x", "center:pixel", "zca:3", "minmax"):
        with pytest.raises(ValueError, match="preprocess spec"):
            from_spec(bad)
    with pytest.raises(ValueError, match="not fitted"):
        ZCA().transform(X)
    p = PCA(2).fit(X)
    before = p.state_dict()
    with pytest.raises(ValueError, match="k = 9"):
        p.k = 9
        p.fit(X)
    p.k = 2
    assert all(np.array_equal(before[k], v) for k, v in p.state_dict().items() if isinstance(v, np.ndarray))
    with pytest.raises(ValueError, match="6 features"):
        p.transform(X[:, :5])
    with pytest.raises(TypeError):
        p.transform(X.astype(np.int64))
    with pytest.raises(ValueError, match="zero variance"):
        PCAWhiten(eps=0).fit(np.c_[X, X[:, :1]])
    np.testing.assert_array_equal(X, keep)


def test_state_validation():
    X = _correlated()
    good = PCA(3).fit(X).state_dict()
    bad = [dict(good, kind="pickle"), dict(good, k=7), dict(good, components=good["components"][:, :2]),
           dict(good, mean=good["mean"].astype(np.float32)), dict(good, variances=-good["variances"]),
           dict(good, extra=1), dict(good, mean=np.full(6, np.nan))]
    for state in bad:
        with pytest.raises(ValueError):
            from_state_dict(state)
    s = Standardize().fit(X).state_dict()
    with pytest.raises(ValueError, match="scale"):
        from_state_dict(dict(s, scale=np.zeros(6)))


def test_component_images():
    X = _correlated(d=12)
    p = PCA(4).fit(X)
    imgs = p.component_images((3, 2, 2))
    assert imgs.shape == (4, 3, 2, 2)
    np.testing.assert_array_equal(imgs[1].reshape(-1), p.state_dict()["components"][:, 1])
    with pytest.raises(ValueError, match="C\\*H\\*W = 12"):
        p.component_images((1, 3, 3))
