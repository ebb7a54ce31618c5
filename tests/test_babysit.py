"""fastopt.babysit.sanity_check and `fastopt check`: each check passes on a sound model and fails,
with its reading, on a model broken in the way that check detects."""
import json

import numpy as np
import pytest

from fastopt import babysit, cli
from fastopt.data import load_digits
from fastopt.nn import FullyConnectedNet


@pytest.fixture(scope="module")
def digits():
    return load_digits(seed=0, standardize=True)


def _options(data, **kw):
    return {"hidden_dims": [32, 16], "input_dim": data["X_train"].shape[1], "num_classes": 10,
            "normalization": "batchnorm", "weight_init": "he", "reg": 1e-4, "rng": 0, **kw}


class Broken:
    """A model wrapper with a defect: the public protocol (params, loss) of a model, nothing else."""

    def __init__(self, model, defect):
        self.model, self.defect, self.params = model, defect, model.params

    def loss(self, X, y=None):
        if y is None:
            return self.model.loss(X)
        loss, grads = self.model.loss(X, y)
        if self.defect == "loss_scale":                    # a wrong loss: not ln(C) at the start
            loss *= 2.0
        elif self.defect == "no_reg":                      # the regularization term forgotten (L2)
            loss -= 0.5 * self.model.reg * sum(float(np.sum(w.astype(np.float64) ** 2))
                                               for k, w in self.params.items() if k.startswith("W"))
        elif self.defect == "grad":                        # a backward pass off by 1%
            grads = {k: g * 1.01 for k, g in grads.items()}
        elif self.defect == "frozen":                      # gradients that never arrive
            grads = {k: np.zeros_like(g) for k, g in grads.items()}
        return loss, grads


def _factory(data, defect, **kw):
    def build(**overrides):
        return Broken(FullyConnectedNet(**{**_options(data, **kw), **overrides}), defect)
    build.options = _options(data, **kw)
    return build


def _by_name(result):
    return {c["check"]: c for c in result["checks"]}


@pytest.mark.parametrize("normalization", [None, "batchnorm", "layernorm"])
def test_sound_model_passes_every_check(digits, normalization):
    result = babysit.sanity_check(_options(digits, normalization=normalization), digits,
                                  optim_config={"learning_rate": 1e-2}, overfit_iterations=100)
    checks = _by_name(result)
    assert result["passed"], result
    assert checks["initial loss"]["value"] == pytest.approx(np.log(10), rel=0.02)
    assert checks["loss rises with regularization"]["value"] > checks["loss rises with regularization"]["loss_without_reg"]
    assert checks["gradient check"]["value"] < 1e-6
    assert all(c["reading"] is None for c in result["checks"])


@pytest.mark.parametrize("defect, failing", [
    ("loss_scale", {"initial loss"}),
    ("no_reg", {"loss rises with regularization"}),
    ("grad", {"gradient check"}),
    ("frozen", {"overfit 20 examples"}),
])
def test_each_defect_fails_its_check(digits, defect, failing):
    result = babysit.sanity_check(_factory(digits, defect), digits, optim_config={"learning_rate": 1e-2},
                                  overfit_iterations=60)
    failed = {c["check"] for c in result["checks"] if not c["passed"]}
    assert failing <= failed and not result["passed"]
    for c in result["checks"]:
        if not c["passed"]:
            assert c["reading"] and len(c["reading"]) > 40


def test_gradient_error_scale_of_a_zero_gradient():
    # A bias before batchnorm has a zero gradient: numerical noise must be read at the gradient's scale.
    assert babysit._gradient_error(np.zeros(3), np.full(3, 1e-11), floor=1e-3) < 1e-7
    assert babysit._gradient_error(np.ones(3), np.full(3, 1.01), floor=1e-3) > 1e-3


def test_bad_factory():
    with pytest.raises(TypeError, match="model_factory_or_options must be"):
        babysit.sanity_check(42, {"X_train": np.zeros((2, 2)), "y_train": np.zeros(2, int)})


def test_check_command_passes_and_writes_json(tmp_path, capsys):
    out = tmp_path / "check.json"
    code = cli.main(["check", "--hidden", "32", "--iterations", "80", "--lr", "1e-2", "--json", str(out)])
    text = capsys.readouterr().out
    assert code == 0, text
    assert text.count("PASS") == 4 and "all checks passed" in text
    saved = json.loads(out.read_text())
    assert saved["passed"] is True and len(saved["checks"]) == 4 and saved["config"]["hidden"] == [32]


def test_check_command_exit_code_1_on_a_failure(capsys):
    # A rate far too low cannot overfit 20 examples in 20 steps: the lecture's "loss not going down".
    code = cli.main(["check", "--hidden", "32", "--iterations", "20", "--lr", "1e-7"])
    text = capsys.readouterr().out
    assert code == 1
    assert "FAIL  overfit 20 examples" in text and "learning rate far off" in text


@pytest.mark.parametrize("argv, message", [
    (["--hidden", "0"], "--hidden must be a comma-separated list"),
    (["--lr", "-1"], "--lr must be a number > 0"),
    (["--json", "/nonexistent/x.json"], "does not exist"),
])
def test_check_command_bad_input(argv, message, capsys):
    assert cli.main(["check", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


# ---------------------------------------------------------------- Monitor

from fastopt.solver import Solver  # noqa: E402


def _solver(data, monitor, rule="adam", lr=3e-3, epochs=2, **model_kw):
    model = FullyConnectedNet(**_options(data, **model_kw))
    return Solver(model, data, update_rule=rule, optim_config={"learning_rate": lr}, num_epochs=epochs,
                  batch_size=64, verbose=False, seed=0, callback=monitor), model


def test_update_ratios_known_answer():
    before = {"W": np.array([3.0, 4.0]), "z": np.zeros(2), "s": np.ones(2)}
    after = {"W": np.array([3.0, 4.005]), "z": np.array([0.0, 1.0]), "s": np.ones(2)}
    r = babysit.update_ratios(before, after)
    assert r["W"] == pytest.approx(1e-3) and r["z"] == 0.0 and r["s"] == 0.0   # 0 for zero weights


def test_monitor_records_update_ratios_and_activation_statistics(digits):
    monitor = babysit.Monitor(interval=10, X=digits["X_val"][:100])
    solver, model = _solver(digits, monitor, epochs=1)
    solver.train()
    assert [h["iteration"] for h in monitor.history] == [1, 11]       # 19 steps in the epoch
    first = monitor.history[0]
    assert set(first["ratios"]) == set(model.params)
    assert 1e-4 < first["ratios"]["W2"] < 1e-1          # Adam at 3e-3 on He weights: around 1e-3..1e-2
    stats = first["activations"]
    assert [s["layer"] for s in stats] == [1, 2]
    assert all(0.3 < s["flat_fraction"] < 0.7 for s in stats)   # batchnorm -> ReLU: about half the units off
    assert not monitor.diagnoses


def test_monitor_update_ratio_is_the_ratio_of_the_step(digits):
    # one step in all (64 rows, batch 64, 1 epoch): the ratio recorded at iteration 1 must be that of
    # the initial parameters and the parameters after the step
    small = {k: (v[:64] if k in ("X_train", "y_train") else v) for k, v in digits.items()}
    monitor = babysit.Monitor(interval=1)
    solver, model = _solver(small, monitor, rule="sgd", lr=1e-2, epochs=1)
    before = {k: v.copy() for k, v in model.params.items()}
    solver.train()
    assert len(monitor.history) == 1
    expected = babysit.update_ratios(before, model.params)
    assert monitor.history[0]["ratios"] == expected and expected["W1"] > 0


def test_monitor_stops_a_diverging_run(digits):
    monitor = babysit.Monitor()
    solver, model = _solver(digits, monitor, rule="sgd", lr=1e4, normalization=None)
    with pytest.raises(babysit.TrainingStopped, match="learning rate too high"):
        with np.errstate(all="ignore"):
            solver.train()
    assert monitor.diagnoses and "learning rate too high" in monitor.diagnoses[-1]["diagnosis"]


def test_monitor_flags_a_flat_loss(digits):
    monitor = babysit.Monitor(flat_window=20)
    solver, _ = _solver(digits, monitor, rule="sgd", lr=1e-9, epochs=3)
    solver.train()
    assert any("learning rate too low" in d["diagnosis"] for d in monitor.diagnoses)


def test_monitor_early_stopping_restores_the_best_params(digits):
    monitor = babysit.Monitor(patience=1)
    solver, model = _solver(digits, monitor, lr=3e-2, epochs=30, normalization=None)
    with pytest.raises(babysit.TrainingStopped, match="early stopping") as info:
        solver.train()
    assert info.value.iteration < 30 * solver.iterations_per_epoch
    for k, v in model.params.items():
        np.testing.assert_array_equal(v, solver.best_params[k])


def test_monitor_does_not_flag_a_learning_run(digits):
    monitor = babysit.Monitor(flat_window=20)
    solver, _ = _solver(digits, monitor, lr=3e-3, epochs=1)
    solver.train()
    assert not monitor.diagnoses


def test_activation_option_appears_when_the_model_takes_it(monkeypatch, digits):
    import argparse
    for takes in (False, True):
        monkeypatch.setattr(babysit, "model_takes_activation", lambda: takes)
        parser = argparse.ArgumentParser()
        babysit.add_model_options(parser)
        if not takes:
            with pytest.raises(SystemExit):
                parser.parse_args(["--activation", "tanh"])
            continue
        cfg = babysit.parse_model_options(parser.parse_args(["--activation", "tanh"]))
        assert cfg["activation"] == "tanh" and babysit.model_kwargs(cfg, digits)["activation"] == "tanh"
        with pytest.raises(cli.UsageError, match="--activation must be one of"):
            babysit.parse_model_options(parser.parse_args(["--activation", "swish"]))
