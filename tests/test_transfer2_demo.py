"""benchmarks/transfer_demo.py's study machinery (the numbers are in benchmarks/results/transfer.txt; no
margin of transfer over training from scratch held on digits, so none is asserted): the preprocessing is
fitted on the split it is told to, every method learns the new classes, the pretrained body is what the
frozen model keeps, and --set parses into typed settings."""
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
