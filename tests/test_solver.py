"""Solver: CS231n semantics, determinism, bit-for-bit resume, callback contract, bad inputs."""
import os

import numpy as np
import pytest
from _nn_data import blob_data, blobs

from fastopt import optim
from fastopt.nn import FullyConnectedNet
from fastopt.solver import Solver

DIM, CLASSES = 6, 3


def make_model(**kw):
    args = dict(hidden_dims=[16, 12], input_dim=DIM, num_classes=CLASSES, rng=11,
                normalization="batchnorm", dropout_keep_ratio=0.8, reg=1e-3)
    args.update(kw)
    return FullyConnectedNet(**args)


def solver_kwargs(**kw):
    args = dict(update_rule="adam", optim_config={"learning_rate": 5e-3}, batch_size=20, num_epochs=3,
                num_train_samples=50, num_val_samples=30, verbose=False, seed=5)
    args.update(kw)
    return args


def assert_same_run(a, b):
    """Bitwise: params, normalization statistics, histories, best snapshot."""
    assert a.loss_history == b.loss_history
    assert a.train_acc_history == b.train_acc_history
    assert a.val_acc_history == b.val_acc_history
    assert a.best_val_acc == b.best_val_acc and a.epoch == b.epoch and a.iteration == b.iteration
    for k in a.model.params:
        assert np.array_equal(a.model.params[k], b.model.params[k]), k
        assert np.array_equal(a.best_params[k], b.best_params[k]), k
    for pa, pb in zip(a.model.bn_params, b.model.bn_params):
        assert np.array_equal(pa["running_mean"], pb["running_mean"])
        assert np.array_equal(pa["running_var"], pb["running_var"])
    assert a.rng.bit_generator.state == b.rng.bit_generator.state
    assert a.model.rng.bit_generator.state == b.model.rng.bit_generator.state


def test_overfits_fifty_samples():
    X, y = blobs(50, dim=10, num_classes=5, seed=2, spread=0.5)
    data = {"X_train": X, "y_train": y, "X_val": X, "y_val": y}
    model = FullyConnectedNet([100], input_dim=10, num_classes=5, weight_scale=1e-1, rng=0)
    solver = Solver(model, data, update_rule="sgd_momentum", optim_config={"learning_rate": 0.1},
                    batch_size=25, num_epochs=40, verbose=False, seed=0)
    solver.train()
    assert solver.train_acc_history[-1] == 1.0
    assert solver.check_accuracy(X, y) == 1.0
    assert solver.loss_history[-1] < 0.1 * solver.loss_history[0]


@pytest.mark.parametrize("config", [
    dict(update_rule="adam"),
    dict(update_rule="sgd_momentum", optim_config={"learning_rate": 0.05}, lr_decay=0.9),
    dict(update_rule=optim.Adam, optim_config={"learning_rate": 5e-3}, lr_decay=0.8),
    dict(update_rule="rmsprop", optim_config={"learning_rate": 1e-3},
         lr_schedule="step:step_size=1,gamma=0.5,unit=iteration"),
    dict(update_rule="sgd", optim_config={"learning_rate": 0.05}, lr_decay=0.9),
    dict(update_rule="nesterov_momentum", optim_config={"learning_rate": 0.02, "momentum": 0.8}),
    dict(update_rule="adagrad", optim_config={"learning_rate": 0.05}),
    dict(update_rule=optim.SGD, optim_config={"learning_rate": 0.05, "momentum": 0.9, "nesterov": True}),
    dict(update_rule=optim.Adagrad, optim_config={"learning_rate": 0.05, "lr_decay": 0.01}),
    dict(update_rule=optim.RMSprop, optim_config={"learning_rate": 1e-3, "momentum": 0.5, "centered": True}),
    dict(update_rule=optim.AdamW, optim_config={"learning_rate": 5e-3, "weight_decay": 0.05}),
], ids=["adam", "momentum-decay", "Adam-class", "rmsprop-schedule", "sgd", "nesterov", "adagrad",
        "SGD-class", "Adagrad-class", "RMSprop-class", "AdamW-class"])
def test_resume_from_epoch_checkpoint_is_bit_for_bit(tmp_path, config):
    data = blob_data()
    full = Solver(make_model(), data, checkpoint_name=str(tmp_path / "run"), **solver_kwargs(**config))
    full.train()
    # As CS231n: a file at every accuracy check, so epoch 0 (after the first iteration) too.
    assert sorted(os.listdir(tmp_path)) == ["run_epoch_0.pkl", "run_epoch_1.pkl", "run_epoch_2.pkl",
                                            "run_epoch_3.pkl"]

    resumed = Solver.from_checkpoint(tmp_path / "run_epoch_1.pkl", make_model(rng=999), data)
    assert resumed.epoch == 1 and resumed.iteration == resumed.iterations_per_epoch
    resumed.train()
    assert_same_run(full, resumed)

    # Same through load_checkpoint into a Solver built by hand (with a different seed: state wins).
    by_hand = Solver(make_model(rng=42), data, **solver_kwargs(**config, seed=77))
    by_hand.load_checkpoint(tmp_path / "run_epoch_2.pkl")
    by_hand.train()
    assert_same_run(full, by_hand)


def test_interrupted_run_resumes_exactly_mid_epoch(tmp_path):
    data = blob_data()
    full = Solver(make_model(), data, **solver_kwargs())
    full.train()

    path = tmp_path / "mid.ckpt"

    class Stop(Exception):
        pass

    def stop_at_7(solver, event, info):
        if event == "iteration" and info["iteration"] == 7:
            solver.save_checkpoint(path)
            raise Stop

    crashed = Solver(make_model(), data, callback=stop_at_7, **solver_kwargs())
    with pytest.raises(Stop):
        crashed.train()
    resumed = Solver(make_model(), data, **solver_kwargs())
    resumed.load_checkpoint(path)
    assert resumed.iteration == 7 and resumed.epoch == 1  # 6 iterations per epoch
    resumed.train()
    assert_same_run(full, resumed)


def test_same_seed_same_run_different_seed_different_run():
    data = blob_data()
    a = Solver(make_model(), data, **solver_kwargs(num_epochs=1))
    b = Solver(make_model(), data, **solver_kwargs(num_epochs=1))
    c = Solver(make_model(), data, **solver_kwargs(num_epochs=1, seed=6))
    for s in (a, b, c):
        s.train()
    assert_same_run(a, b)
    assert a.loss_history != c.loss_history


def test_params_are_updated_in_place_and_best_params_are_copies():
    data = blob_data()
    for rule in ("sgd", optim.SGD):
        model = make_model()
        ids = {k: id(v) for k, v in model.params.items()}
        start = {k: v.copy() for k, v in model.params.items()}
        solver = Solver(model, data, **solver_kwargs(update_rule=rule, optim_config={"learning_rate": 0.1}))
        solver.train()
        assert {k: id(v) for k, v in model.params.items()} == ids
        assert not np.array_equal(start["W1"], model.params["W1"])
        for k, v in solver.best_params.items():
            assert not np.shares_memory(v, model.params[k])
            assert np.array_equal(v, model.params[k])  # train() restores the best params in place


def test_callback_contract(tmp_path):
    data = blob_data()
    events = []
    solver = Solver(make_model(), data, checkpoint_name=str(tmp_path / "cb"),
                    callback=lambda s, e, info: events.append((e, dict(info))), **solver_kwargs())
    solver.train()
    names = [e for e, _ in events]
    ipe, total = solver.iterations_per_epoch, 3 * solver.iterations_per_epoch
    assert names[0] == "begin" and names[-1] == "end"
    assert names.count("iteration") == total and names.count("eval") == 3 + 1
    assert events[0][1] == {"iteration": 0, "num_iterations": total, "iterations_per_epoch": ipe,
                            "epoch": 0, "num_epochs": 3}
    its = [i for e, i in events if e == "iteration"]
    assert [i["iteration"] for i in its] == list(range(1, total + 1))
    assert [i["loss"] for i in its] == solver.loss_history
    assert set(its[0]) == {"iteration", "num_iterations", "epoch", "loss", "lr"}
    evals = [i for e, i in events if e == "eval"]
    assert [i["epoch"] for i in evals] == [0, 1, 2, 3]
    assert [i["epoch_end"] for i in evals] == [False, True, True, True]
    assert [i["val_acc"] for i in evals] == solver.val_acc_history
    assert evals[0]["checkpoint"] == str(tmp_path / "cb") + "_epoch_0.pkl"
    assert evals[2]["checkpoint"] == str(tmp_path / "cb") + "_epoch_2.pkl"
    assert os.path.exists(evals[2]["checkpoint"])
    assert events[-1][1]["best_val_acc"] == solver.best_val_acc == max(solver.val_acc_history)


def test_lr_decay_and_schedule():
    data = blob_data()
    s = Solver(make_model(), data, **solver_kwargs(update_rule="sgd", optim_config={"learning_rate": 0.1},
                                                   lr_decay=0.5, num_epochs=2))
    s.train()
    assert all(c["learning_rate"] == 0.1 * 0.25 for c in s.optim_configs.values())
    c = Solver(make_model(), data, **solver_kwargs(update_rule=optim.SGD, optim_config={"learning_rate": 0.1},
                                                   lr_decay=0.5, num_epochs=2))
    c.train()
    assert c.optimizer.param_groups[0]["lr"] == 0.1 * 0.25

    lrs = []
    sched = Solver(make_model(), data, callback=lambda s, e, i: lrs.append(i["lr"]) if e == "iteration" else None,
                   **solver_kwargs(update_rule="sgd", optim_config={"learning_rate": 0.1},
                                   lr_schedule="step:step_size=1,gamma=0.1", num_epochs=3))
    sched.train()
    ipe = sched.iterations_per_epoch
    assert lrs == pytest.approx([0.1] * ipe + [0.01] * ipe + [0.001] * ipe, rel=1e-12)


def test_check_accuracy_subsamples_and_batches():
    data = blob_data()
    s = Solver(make_model(), data, **solver_kwargs())
    full = s.check_accuracy(data["X_val"], data["y_val"], batch_size=7)
    assert full == s.check_accuracy(data["X_val"], data["y_val"], batch_size=1000)
    preds = np.argmax(s.model.loss(data["X_val"]), axis=1)
    assert full == np.mean(preds == data["y_val"])
    sub = s.check_accuracy(data["X_val"], data["y_val"], num_samples=10)
    assert sub * 10 == round(sub * 10)


def test_load_checkpoint_mismatch_changes_nothing(tmp_path):
    data = blob_data()
    src = Solver(make_model(), data, **solver_kwargs(num_epochs=1))
    src.train()
    path = src.save_checkpoint(tmp_path / "a.ckpt")

    other_rule = Solver(make_model(), data, **solver_kwargs(update_rule="sgd"))
    with pytest.raises(ValueError, match="update_rule"):
        other_rule.load_checkpoint(path)

    bigger = make_model(hidden_dims=[16, 13])
    before = {k: v.copy() for k, v in bigger.params.items()}
    target = Solver(bigger, data, **solver_kwargs())
    with pytest.raises(ValueError, match="W2"):
        target.load_checkpoint(path)
    assert all(np.array_equal(before[k], bigger.params[k]) for k in before)
    assert target.iteration == 0 and target.loss_history == []


@pytest.mark.parametrize("kwargs,exc,fragment", [
    ({"learning_rate": 0.1}, ValueError, "Unrecognized arguments learning_rate"),
    ({"update_rule": "sgd_nesterov"}, ValueError, "Invalid update_rule"),
    ({"update_rule": 3}, TypeError, "update_rule"),
    ({"optim_config": [1]}, TypeError, "optim_config"),
    ({"batch_size": 0}, ValueError, "batch_size"),
    ({"num_epochs": 2.0}, TypeError, "num_epochs"),
    ({"lr_decay": 0}, ValueError, "lr_decay"),
    ({"lr_decay": 0.5, "lr_schedule": "step:step_size=1"}, ValueError, "not both"),
    ({"lr_schedule": "step:step_size=1", "optim_config": {}}, ValueError, "learning_rate"),
    ({"lr_schedule": 0.1}, TypeError, "lr_schedule"),
    ({"lr_schedule_unit": "batch"}, ValueError, "lr_schedule_unit"),
    ({"num_train_samples": 0}, ValueError, "num_train_samples"),
    ({"verbose": 1}, TypeError, "verbose"),
    ({"seed": -3}, ValueError, "seed"),
    ({"callback": "tqdm"}, TypeError, "callback"),
    ({"checkpoint_name": 5}, TypeError, "checkpoint_name"),
])
def test_solver_rejects_bad_kwargs(kwargs, exc, fragment):
    with pytest.raises(exc, match=fragment):
        Solver(make_model(), blob_data(), **{**solver_kwargs(), **kwargs})


def test_solver_rejects_bad_data_and_model():
    data = blob_data()
    with pytest.raises(ValueError, match=r"missing \['y_val'\]"):
        Solver(make_model(), {k: v for k, v in data.items() if k != "y_val"})
    with pytest.raises(ValueError, match="rows"):
        Solver(make_model(), {**data, "y_train": data["y_train"][:-1]})
    with pytest.raises(TypeError, match="integer labels"):
        Solver(make_model(), {**data, "y_val": data["y_val"].astype(float)})
    with pytest.raises(TypeError, match="data must be a dict"):
        Solver(make_model(), [data])
    with pytest.raises(TypeError, match="model must have"):
        Solver(object(), data)


@pytest.mark.parametrize("rule", ["adam", optim.Adam])
def test_read_only_params_mapping_is_never_rebound(tmp_path, rule):
    """params may be a read-only Mapping (flat storage hands out views): training, best-params
    restore and checkpoint loading must all update the arrays in place."""
    from types import MappingProxyType

    def model():
        m = make_model()
        m.params = MappingProxyType(m.params)
        return m

    data = blob_data()
    full = Solver(model(), data, checkpoint_name=str(tmp_path / "ro"), **solver_kwargs(update_rule=rule, num_epochs=2))
    full.train()
    resumed = Solver(model(), data, **solver_kwargs(update_rule=rule, num_epochs=2))
    resumed.load_checkpoint(tmp_path / "ro_epoch_1.pkl")
    resumed.train()
    assert_same_run(full, resumed)


def test_class_flags_and_pairs_in_optim_config_round_trip_through_checkpoints(tmp_path):
    data = blob_data()
    kw = solver_kwargs(update_rule=optim.Adam, num_epochs=2,
                       optim_config={"learning_rate": 5e-3, "amsgrad": True, "betas": (0.8, 0.99)})
    full = Solver(make_model(), data, checkpoint_name=str(tmp_path / "flags"), **kw)
    full.train()
    resumed = Solver.from_checkpoint(tmp_path / "flags_epoch_1.pkl", make_model(), data)
    assert resumed.optimizer.param_groups[0]["amsgrad"] is True
    resumed.train()
    by_hand = Solver(make_model(), data, **kw)
    by_hand.load_checkpoint(tmp_path / "flags_epoch_1.pkl")
    by_hand.train()
    assert_same_run(full, resumed)
    assert_same_run(full, by_hand)
