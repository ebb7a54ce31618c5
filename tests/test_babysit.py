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
            "normalization": "batchnorm", "weight_init": "he", "reg": 1e-4, "seed": 0, **kw}


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
        elif self.defect == "no_reg":                      # the regularization term forgotten
            loss -= self.model._reg_loss() if hasattr(self.model, "_reg_loss") else 0.0
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
