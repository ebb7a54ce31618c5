"""benchmarks/transfer_demo.py's study machinery (the numbers are in benchmarks/results/transfer.txt; no
margin of transfer over training from scratch held on digits, so none is asserted; the margin that did
hold, fine-tuning over the frozen body, is): the preprocessing is
fitted on the split it is told to, every method learns the new classes, the pretrained body is what the
frozen model keeps, --set parses into typed settings, and the knobs of the 2026-12-02 afternoon (L2-SP's
penalty and gradient, AdaBN's statistics, reusing only the lower layers) do what they say."""
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks"))
T = pytest.importorskip("transfer_demo")

from fastopt.data import select_classes, subsample_train  # noqa: E402
from fastopt.model_io import clone  # noqa: E402


def test_pixel_digits_are_the_bundled_images_over_16():
    data = T.pixel_digits()
    assert data["X_train"].dtype == np.float32 and data["X_train"].shape[1] == 64
    for s in T.SPLITS:
        assert data[f"X_{s}"].min() >= 0 and data[f"X_{s}"].max() <= 1
    assert sum(len(data[f"y_{s}"]) for s in T.SPLITS) == 1797


def test_preprocessing_uses_the_statistics_of_the_split_it_is_fitted_on():
    data = T.pixel_digits()
    source = select_classes(data, T.SOURCE)
    small = subsample_train(select_classes(data, T.TARGET), 50, seed=0)
    out = T.preprocessed(small, "standardize", source)
    X = source["X_train"].astype(np.float64)
    std = X.std(axis=0)
    std[std == 0] = 1
    for s in T.SPLITS:
        np.testing.assert_allclose(out[f"X_{s}"], (small[f"X_{s}"] - X.mean(axis=0)) / std, rtol=1e-5, atol=1e-5)
    assert np.array_equal(out["y_train"], small["y_train"])
    assert T.preprocessed(small, "none", source) is small


def test_parse_setting_types_every_field():
    s = T.parse_setting(T.Setting, ["hidden=256,128", "keep=0.5", "warmup=20", "preprocess=none"])
    assert s == T.Setting(hidden=(256, 128), keep=0.5, warmup=20, preprocess="none")
    with pytest.raises(SystemExit, match="unknown setting 'nope'"):
        T.parse_setting(T.Setting, ["nope=1"])


def test_one_seed_of_the_study_learns_every_method_and_keeps_the_body():
    setting = T.Setting(pre_epochs=5, epochs=10, warmup=4)
    data = T.pixel_digits()
    run = T.transfer_seed(setting, data, seed=3)
    assert set(run) == set(T.METHODS) | {"source"}
    assert run["source"] > 0.8                                 # pretrained on 0-4 (chance 0.2)
    for m in T.METHODS:
        val, test = run[m]
        assert 0.5 < val <= 1 and 0.5 < test <= 1, (m, run[m])


def test_fine_tuning_beats_the_frozen_body_on_every_seed_in_the_issues_setting():
    # The lecture: with more target data, train more of the network. Digits 0-4 -> 5-9, 20 examples per
    # class, seeds 0-9 (the README's row; ~2 s): measured +2.8..+11.7 points per seed, +6.3 on average.
    # The transfer-versus-scratch margin is not asserted: scratch won on average (0.937 vs 0.928).
    data = T.pixel_digits()
    runs = [T.transfer_seed(T.Setting(), data, seed) for seed in range(10)]
    gain = np.array([r["fine-tuned"][1] - r["frozen"][1] for r in runs])
    assert gain.min() > 0, gain
    assert gain.mean() > 0.03, gain


def test_the_frozen_model_keeps_the_pretrained_body_bitwise():
    setting = T.Setting(pre_epochs=3, epochs=3)
    data = T.pixel_digits()
    source = T.preprocessed(select_classes(data, T.SOURCE), "standardize", select_classes(data, T.SOURCE))
    pretrained = T.pretrain_source(setting, source, seed=0)
    target = T.preprocessed(subsample_train(select_classes(data, T.TARGET), 50, seed=0), "standardize", source)
    frozen = clone(pretrained).replace_head(5, rng=0, fresh=True).freeze(range(2))
    T.train(frozen, target, lr=1e-2, epochs=3, seed=0)
    for k in ("W1", "b1", "W2", "b2"):
        assert frozen.params[k].tobytes() == pretrained.params[k].tobytes(), k
    assert frozen.params["W3"].shape == (64, 5)


def test_l2sp_adds_its_penalty_and_gradient_float64():
    rng = np.random.default_rng(0)
    W0 = {"W1": rng.standard_normal((5, 4)), "W2": rng.standard_normal((4, 3))}
    params = {"W1": rng.standard_normal((5, 4)), "W2": rng.standard_normal((4, 3)), "W3": rng.standard_normal((3, 2))}
    reg = T.L2SP({"W1": W0["W1"], "W2": W0["W2"]}, 0.3)
    W0["W1"][0, 0] += 1.0                           # the anchors are copies: later edits change nothing
    grads = {k: np.zeros_like(v) for k, v in params.items()}
    loss = reg.add(params, 2.0, grads)
    anchors = reg.anchors

    def penalty(p):
        return sum(0.5 * 0.3 * np.sum((p[k] - anchors[k]) ** 2) for k in anchors)
    assert loss == pytest.approx(2.0 + penalty(params), rel=1e-14)
    np.testing.assert_array_equal(grads["W3"], 0)   # not anchored: no penalty
    h = 1e-6
    for k in anchors:
        num = np.zeros_like(params[k])
        for idx in np.ndindex(params[k].shape):
            plus, minus = {**params, k: params[k].copy()}, {**params, k: params[k].copy()}
            plus[k][idx] += h
            minus[k][idx] -= h
            num[idx] = (penalty(plus) - penalty(minus)) / (2 * h)
        assert np.abs(num - grads[k]).max() / np.abs(grads[k]).max() < 1e-8, k
    # at the anchors the penalty and its gradient vanish
    at = {k: anchors[k].copy() for k in anchors}
    g = {k: np.zeros_like(v) for k, v in at.items()}
    assert reg.add(at, 1.0, g) == 1.0 and all(not v.any() for v in g.values())


def test_adapt_batchnorm_sets_the_batch_statistics_of_the_data():
    setting = T.Setting(normalization="batchnorm")
    model = T.make_net(setting, 5, seed=0)
    X = np.random.default_rng(1).standard_normal((40, 64)).astype(np.float32)
    y = np.arange(40) % 5
    before, momentum = model.params["W1"].copy(), model.bn_params[0].get("momentum")
    T.adapt_batchnorm(model, X, y)
    a = X.astype(np.float64) @ model.params["W1"].astype(np.float64) + model.params["b1"]
    np.testing.assert_allclose(model.bn_params[0]["running_mean"], a.mean(axis=0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(model.bn_params[0]["running_var"], a.var(axis=0), rtol=1e-4, atol=1e-5)
    assert model.bn_params[0].get("momentum") == momentum                 # put back as it was
    assert model.params["W1"].tobytes() == before.tobytes()          # statistics only
    plain = T.make_net(T.Setting(), 5, seed=0)
    assert T.adapt_batchnorm(plain, X, y) is plain                   # nothing to adapt without batchnorm


def test_reused_keeps_the_lower_layers_and_redraws_the_upper():
    setting = T.Setting(pre_epochs=2, reuse=1)
    data = T.pixel_digits()
    source = T.preprocessed(select_classes(data, T.SOURCE), "standardize", select_classes(data, T.SOURCE))
    pretrained = T.pretrain_source(setting, source, seed=0)
    model = T.reused(setting, pretrained, seed=0)
    for k in ("W1", "b1"):
        assert model.params[k].tobytes() == pretrained.params[k].tobytes(), k
    assert not np.array_equal(model.params["W2"], pretrained.params["W2"])
    assert model.params["W3"].shape == (64, 5)
    full = T.reused(setting.replace(reuse=-1), pretrained, seed=0)
    assert full.params["W2"].tobytes() == pretrained.params["W2"].tobytes()


def test_one_seed_with_the_new_knobs_learns_every_method():
    setting = T.Setting(pre_epochs=3, epochs=8, warmup=2, reuse=1, l2sp=0.01, body_lr=0.02, cosine=1,
                        normalization="batchnorm", bn_stats="target")
    run = T.transfer_seed(setting, T.pixel_digits(), seed=1)
    for m in T.METHODS:
        val, test = run[m]
        assert 0.5 < val <= 1 and 0.5 < test <= 1, (m, run[m])
