"""The learning-rate range test: ramp, smoothing, stop rule, suggestion, exact restore, command."""
import json
import math

import numpy as np
import pytest

from fastopt import babysit, cli
from fastopt.data import load_digits
from fastopt.nn import FullyConnectedNet


@pytest.fixture(scope="module")
def digits():
    return load_digits(seed=0, standardize=True)


def _model(data, **kw):
    return FullyConnectedNet([32], input_dim=data["X_train"].shape[1], num_classes=10,
                             normalization="batchnorm", weight_init="he", rng=0, **kw)


def test_smooth_is_a_bias_corrected_moving_average():
    np.testing.assert_allclose(babysit.smooth([2.0] * 5), [2.0] * 5)    # no pull toward 0 at the start
    beta, xs = 0.9, [1.0, 3.0, 2.0]
    avg, expected = 0.0, []
    for i, x in enumerate(xs):
        avg = beta * avg + (1 - beta) * x
        expected.append(avg / (1 - beta ** (i + 1)))
    np.testing.assert_allclose(babysit.smooth(xs, beta), expected)


def test_suggestion_is_the_steepest_descent_before_the_minimum():
    lrs = np.logspace(-6, 0, 61)
    u = np.log10(lrs)
    curve = 2.0 - np.tanh(2.0 * (u + 3.0)) + np.where(u > -1, 10 * (u + 1) ** 2, 0)   # falls fastest at 1e-3
    assert babysit.suggest_lr(lrs, curve) == pytest.approx(1e-3, rel=0.13)
    assert babysit.suggest_lr(lrs, np.linspace(1, 2, 61)) is None                  # never falls


@pytest.mark.parametrize("rule", ["adam", "sgd_momentum"])
def test_lr_find_restores_the_model_bit_for_bit(digits, rule):
    model = _model(digits, dropout_keep_ratio=0.8)
    before = {k: v.copy() for k, v in model.params.items()}
    X = digits["X_val"][:50]
    scores_before = model.loss(X)
    ids = {k: id(v) for k, v in model.params.items()}
    result = babysit.lr_find(model, digits, update_rule=rule, num_iter=60, batch_size=32)
    assert result["iterations"] > 10
    for k, v in model.params.items():
        np.testing.assert_array_equal(v, before[k])
        assert id(v) == ids[k]
    np.testing.assert_array_equal(model.loss(X), scores_before)   # running statistics restored too
    # the same call again gives the same curve: nothing of the first run leaked into the model
    again = babysit.lr_find(model, digits, update_rule=rule, num_iter=60, batch_size=32)
    assert again["losses"] == result["losses"]


def test_lr_find_ramp_stop_and_suggestion(digits):
    result = babysit.lr_find(_model(digits), digits, num_iter=100, batch_size=64)
    lrs, smoothed = np.array(result["lrs"]), np.array(result["smoothed"])
    expected = 1e-7 * (10 / 1e-7) ** (np.arange(len(lrs)) / 99)
    np.testing.assert_allclose(lrs, expected, rtol=1e-12)                   # exponential ramp
    assert result["stopped"] in ("diverged", "non-finite")                  # lr 10 blows Adam up
    if result["stopped"] == "diverged":
        assert smoothed[-1] > 4 * smoothed[:-1].min()
        assert np.all(smoothed[1:-1] <= 4 * np.minimum.accumulate(smoothed[:-2]) + 1e-12)
    assert 1e-5 < result["suggestion"] < 1.0
    assert result["suggestion"] < result["min_lr"]


def test_lr_find_bad_arguments(digits):
    with pytest.raises(ValueError, match="end_lr must be >"):
        babysit.lr_find(_model(digits), digits, start_lr=1e-2, end_lr=1e-3)
    with pytest.raises(ValueError, match="num_iter must be >= 2"):
        babysit.lr_find(_model(digits), digits, num_iter=1)


def test_lr_find_command(tmp_path, capsys):
    out, png = tmp_path / "lr.json", tmp_path / "lr.png"
    code = cli.main(["lr-find", "--hidden", "32", "--iterations", "60", "--json", str(out), "--plot", str(png)])
    text = capsys.readouterr().out
    assert code == 0 and "suggested learning rate" in text
    saved = json.loads(out.read_text())
    assert len(saved["lrs"]) == len(saved["losses"]) == saved["iterations"] <= 60
    assert math.isclose(saved["lrs"][0], 1e-7) and saved["suggestion"] > 0
    assert png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("argv, message", [
    (["--start-lr", "0"], "--start-lr must be a number > 0"),
    (["--end-lr", "1e-9"], "--end-lr must be a number > 1e-07"),
    (["--plot", "/nonexistent/x.png"], "does not exist"),
])
def test_lr_find_command_bad_input(argv, message, capsys):
    assert cli.main(["lr-find", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
