"""The Solver with the optimizer family of fastopt.optim._declarations: class-only rules by name,
CS231n keys and betas mapped from the declarations, and evaluation with averaged weights (ema=)."""
import numpy as np
import pytest

import fastopt
from fastopt import checkpoint
from fastopt.optim._declarations import RULES, class_rules, cs231n_forms
from fastopt.solver import Solver

CLASS_ONLY = [r.key for r in class_rules() if r.key not in cs231n_forms()]


def data(seed=0, n=300, d=8, c=3):
    r = np.random.default_rng(seed)
    centers = 2.0 * r.standard_normal((c, d))
    y = r.integers(0, c, n + 100)
    X = centers[y] + r.standard_normal((n + 100, d))
    return {"X_train": X[:n], "y_train": y[:n], "X_val": X[n:], "y_val": y[n:]}


def model():
    return fastopt.FullyConnectedNet([16], input_dim=8, num_classes=3, dtype=np.float64, rng=1,
                                     weight_init="he", reg=1e-3)


def solver(m=None, **kw):
    kw = {"update_rule": "Adam", "optim_config": {"learning_rate": 2e-2, "ema": 0.9}, "batch_size": 25,
          "num_epochs": 3, "num_train_samples": None, "verbose": False, "seed": 0, **kw}
    return Solver(model() if m is None else m, data(), **kw)


# ---------------------------------------------------------------- rules by name, keys, betas

def test_the_class_only_rules_are_the_new_ones():
    assert set(CLASS_ONLY) >= {"nadam", "radam", "adamax", "adadelta", "lion"}


@pytest.mark.parametrize("key", CLASS_ONLY)
def test_a_class_only_rule_is_selected_by_its_lower_case_name(key):
    rule = RULES[key]
    s = solver(update_rule=key, optim_config={"learning_rate": 1e-3}, num_epochs=1)
    assert type(s.optimizer) is getattr(fastopt.optim, rule.class_name)
    assert s.lr == 1e-3
    s.train()
    assert np.isfinite(s.loss_history).all()


def test_the_fastopt_train_optimizers_all_build_in_the_solver():
    from fastopt.train_cli import OPTIMIZERS, update_rule
    for name in OPTIMIZERS:      # the name itself, and what `fastopt train` hands the Solver
        for rule in (name, update_rule(name)):
            Solver(model(), data(), update_rule=rule, optim_config={"learning_rate": 1e-3}, verbose=False)


@pytest.mark.parametrize("key", [r.key for r in class_rules() if "betas" in r.defaults])
def test_a_missing_beta_is_the_class_default(key):
    rule = RULES[key]
    b1, b2 = rule.defaults["betas"]
    s = solver(update_rule=rule.class_name, optim_config={"learning_rate": 1e-3, "beta1": 0.5})
    assert s.optimizer.param_groups[0]["betas"] == (0.5, b2)
    s = solver(update_rule=rule.class_name, optim_config={"learning_rate": 1e-3, "beta2": 0.75})
    assert s.optimizer.param_groups[0]["betas"] == (b1, 0.75)


def test_lion_keeps_its_own_beta2():
    s = solver(update_rule="lion", optim_config={"learning_rate": 1e-4, "beta1": 0.95})
    assert s.optimizer.param_groups[0]["betas"] == (0.95, 0.99)


def test_cs231n_keys_map_to_the_class_keywords():
    s = solver(update_rule="RMSprop", optim_config={"learning_rate": 1e-3, "decay_rate": 0.5, "epsilon": 1e-6,
                                                    "momentum": 0.25})
    g = s.optimizer.param_groups[0]
    assert (g["lr"], g["alpha"], g["eps"], g["momentum"]) == (1e-3, 0.5, 1e-6, 0.25)


# ---------------------------------------------------------------- evaluation with the averages

class Watch:
    """At each "eval" event: check_accuracy with the averages and with the trained weights, and
    copies of the weights the best snapshot should hold."""

    def __init__(self, d):
        self.d, self.rows, self.best = d, [], None

    def __call__(self, s, event, info):
        if event != "eval":
            return
        acc = lambda: (s.check_accuracy(self.d["X_train"], self.d["y_train"]),
                       s.check_accuracy(self.d["X_val"], self.d["y_val"]))
        trained = {k: v.copy() for k, v in s.model.params.items()}
        plain = acc()
        with s.optimizer.averaged():
            averaged = acc()
            averages = {k: v.copy() for k, v in s.model.params.items()}
        self.rows.append(((info["train_acc"], info["val_acc"]), averaged, plain))
        if info["val_acc"] == info["best_val_acc"] and (self.best is None or info["val_acc"] > self.best[0]):
            self.best = (info["val_acc"], averages if s.evaluate_averaged else trained)


def test_with_ema_the_solver_evaluates_the_averaged_weights_bitwise():
    w = Watch(data())
    s = solver(callback=w)
    assert s.evaluate_averaged is True
    s.train()
    assert len(w.rows) == 4
    for got, averaged, _ in w.rows:
        assert got == averaged
    assert any(averaged != plain for _, averaged, plain in w.rows)   # the two weights differ here
    for k, v in s.model.params.items():               # train() restored the best AVERAGED weights
        np.testing.assert_array_equal(v, w.best[1][k], err_msg=k)
    for k, v in s.best_params.items():
        np.testing.assert_array_equal(v, w.best[1][k], err_msg=k)


def test_evaluate_averaged_false_evaluates_the_trained_weights():
    w = Watch(data())
    s = solver(callback=w, evaluate_averaged=False)
    s.train()
    for got, _, plain in w.rows:
        assert got == plain
    for k, v in s.model.params.items():
        np.testing.assert_array_equal(v, w.best[1][k], err_msg=k)


def test_without_ema_nothing_is_averaged():
    s = solver(optim_config={"learning_rate": 1e-2})
    assert s.evaluate_averaged is False
    with pytest.raises(ValueError, match="evaluate_averaged=True needs an optimizer that keeps"):
        solver(optim_config={"learning_rate": 1e-2}, evaluate_averaged=True)
    with pytest.raises(ValueError, match="evaluate_averaged=True needs"):
        solver(update_rule="adam", optim_config={"learning_rate": 1e-2}, evaluate_averaged=True)
    with pytest.raises(TypeError, match="evaluate_averaged"):
        solver(evaluate_averaged="yes")


@pytest.mark.parametrize("ema", [0.9, "polyak"])
def test_a_checkpoint_resumes_an_averaging_run_bitwise(tmp_path, ema):
    cfg = {"learning_rate": 2e-2, "ema": ema, "max_grad_norm": 1.0}
    whole = solver(optim_config=cfg, num_epochs=4)
    whole.train()
    # The checkpoint of the epoch-2 check (train() then restores the best weights into the model).
    first = solver(optim_config=cfg, num_epochs=2, checkpoint_name=str(tmp_path / "run"))
    first.train()
    path = tmp_path / "run_epoch_2.pkl"
    assert checkpoint.load(path)["evaluate_averaged"] is True
    resumed = Solver.from_checkpoint(path, model(), data(), num_epochs=4)
    assert resumed.evaluate_averaged is True
    resumed.train()
    assert resumed.loss_history == whole.loss_history
    assert resumed.val_acc_history == whole.val_acc_history
    assert resumed.train_acc_history == whole.train_acc_history
    for k, v in whole.model.params.items():
        np.testing.assert_array_equal(resumed.model.params[k], v, err_msg=k)
    for a, b in zip(resumed.optimizer.averages(), whole.optimizer.averages()):
        np.testing.assert_array_equal(a, b)
