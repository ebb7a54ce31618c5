"""Solver checkpoints written by an attacker or tampered with: no code runs, every bad field is
refused with its name, and a refused load changes nothing (Solver, model, optimizer, RNG states)."""
import copy
import hashlib
import os
import pickle

import numpy as np
import pytest
from _nn_data import blob_data
from test_solver_trust import assert_same, make_model

from fastopt import checkpoint
from fastopt.optim.lr_scheduler import StepLR
from fastopt.solver import Solver


def base_kwargs(**kw):
    args = dict(update_rule="adam", optim_config={"learning_rate": 5e-3}, batch_size=20, num_epochs=2,
                num_train_samples=50, num_val_samples=30, verbose=False, seed=5,
                lr_schedule="step:step_size=3,gamma=0.5,unit=iteration")
    args.update(kw)
    return args


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A genuine checkpoint after one epoch (the object that fastopt.checkpoint.load returns)."""
    path = tmp_path_factory.mktemp("ckpt") / "good.pkl"
    s = Solver(make_model(), blob_data(), **base_kwargs(num_epochs=1))
    s.train()
    s.save_checkpoint(path)
    return checkpoint.load(path)


def trained_target():
    """A Solver in a state of its own (another seed, one epoch), to check nothing of it changes."""
    s = Solver(make_model(rng=3), blob_data(), **base_kwargs(num_epochs=1, seed=9))
    s.train()
    return s


def solver_snapshot(s):
    return copy.deepcopy({
        "model": s.model.state_dict(), "optimizer": s.optimizer.state_dict(), "lr": s.lr,
        "schedule": s._schedule.state_dict(), "scheduler": id(s.scheduler),
        "histories": (s.loss_history, s.train_acc_history, s.val_acc_history), "epoch": s.epoch,
        "iteration": s.iteration, "best": s.best_params, "best_acc": s.best_val_acc,
        "draws": s._draws.state(), "global": np.random.get_state(legacy=False),
    })


def write(path, obj):
    checkpoint.save(path, obj)
    return path


def test_the_checkpoint_has_cs231n_keys(saved):
    for key in ("model", "update_rule", "lr_decay", "optim_config", "batch_size", "num_train_samples",
                "num_val_samples", "epoch", "loss_history", "train_acc_history", "val_acc_history"):
        assert key in saved, key
    assert saved["update_rule"] == "adam" and saved["epoch"] == 1 and saved["batch_size"] == 20
    assert set(saved["model"]["params"]) == set(make_model().params)
    assert saved["lr_schedule"] == {"name": "step", "step_size": 3, "gamma": 0.5, "unit": "iteration"}
    assert saved["schedule"]["scheduler"]["type"] == "StepLR" and saved["schedule"]["unit"] == "iteration"


# ---------------------------------------------------------------- code-naming content
def code_values(sentinel):
    cmd = f"touch {sentinel}"
    strings = ["subprocess:Popen", "subprocess.Popen", "os:system", "os.system", "builtins:eval",
               "builtins.eval", "posix:system", "fastopt.solver:os.system", "fastopt.train_cli:subprocess.Popen",
               "fastopt:optim.__builtins__.eval", f"__import__('os').system({cmd!r})"]
    dicts = [{"name": "subprocess.Popen", "args": {"args": ["touch", str(sentinel)], "shell": False}},
             {"module": "os", "attr": "system", "args": cmd},
             {"__reduce__": ["builtins.eval", f"open({str(sentinel)!r}, 'w')"]},
             {"name": "LinearWarmup", "args": {"warmup_steps": 1, "after": {"name": "os.system", "args": {"command": cmd}}}}]
    return strings + dicts


class Targets:
    """What a refused load must leave alone: a trained Solver (load_checkpoint) and a fresh model
    (from_checkpoint), made once per test and checked bitwise after every attempt."""

    def __init__(self):
        self.solver = trained_target()
        self.solver_before = solver_snapshot(self.solver)
        self.model = make_model()
        self.model_before = copy.deepcopy(self.model.state_dict())

    def refuse(self, path, sentinel, fragment=None):
        """Both loading entry points refuse (ValueError), nothing changed, the sentinel never appears."""
        with pytest.raises(ValueError, match=fragment):
            Solver.from_checkpoint(path, self.model, blob_data())
        assert_same(self.model.state_dict(), self.model_before)
        with pytest.raises(ValueError, match=fragment):
            self.solver.load_checkpoint(path)
        assert_same(solver_snapshot(self.solver), self.solver_before)
        assert not os.path.exists(sentinel)


def test_a_checkpoint_naming_code_in_every_field_is_refused_and_runs_nothing(saved, tmp_path):
    sentinel, targets = tmp_path / "sentinel", Targets()
    for value in code_values(sentinel):
        evil = {key: copy.deepcopy(value) for key in saved}
        evil["format"], evil["version"] = saved["format"], saved["version"]  # pass the header check
        targets.refuse(write(tmp_path / "evil.pkl", evil), sentinel)


# checkpoint_name is a path prefix: any string is a valid one (the file only names where to write).
_STRING_OK = {"checkpoint_name"}


def test_each_field_naming_code_is_refused_and_runs_nothing(saved, tmp_path):
    sentinel, targets = tmp_path / "sentinel", Targets()
    values = code_values(sentinel)
    for key in saved:
        for value in values[:3] + values[-4:]:  # three strings and every dict form, in every field
            if key in _STRING_OK and isinstance(value, str):
                continue
            evil = dict(saved, **{key: copy.deepcopy(value)})
            targets.refuse(write(tmp_path / f"evil_{key}.pkl", evil), sentinel)


def test_nested_fields_naming_code_are_refused(saved, tmp_path):
    sentinel, targets = tmp_path / "sentinel", Targets()
    nested = [
        lambda s: s["optimizer"]["param_groups"][0].__setitem__("lr", "os:system"),
        lambda s: s["optimizer"]["configs"]["W1"].__setitem__("evil", "subprocess:Popen"),
        lambda s: s["optimizer"]["configs"]["W1"].__setitem__("learning_rate", {"name": "os.system"}),
        lambda s: s["optimizer"].__setitem__("class", "subprocess:Popen"),
        lambda s: s["rng"].__setitem__("kind", "subprocess:Popen"),
        lambda s: s["rng"]["batch"].__setitem__("bit_generator", "os:system"),
        lambda s: s["model"]["params"].__setitem__("W1", "builtins:eval"),
        lambda s: s["model"]["bn_params"][0].__setitem__("running_mean", "os:system"),
        lambda s: s["lr_schedule"].__setitem__("name", "subprocess.Popen"),
        lambda s: s["lr_schedule"].__setitem__("gamma", {"name": "builtins.eval", "args": {}}),
        lambda s: s["lr_schedule"].__setitem__("step_size", "os.system"),
        lambda s: s["schedule"]["scheduler"].__setitem__("type", "subprocess.Popen"),
        lambda s: s["schedule"]["scheduler"].__setitem__("gamma", {"name": "builtins.eval", "args": {}}),
        lambda s: s["schedule"].__setitem__("unit", "os:system"),
        lambda s: s["optim_config"].__setitem__("learning_rate", "subprocess:Popen"),
        lambda s: s["optim_config"].__setitem__("shell", "touch x"),
        lambda s: s["best_params"].__setitem__("W1", "os:system"),
    ]
    for i, edit in enumerate(nested):
        evil = copy.deepcopy(saved)
        edit(evil)
        targets.refuse(write(tmp_path / f"nested_{i}.pkl", evil), sentinel)


def test_a_users_rule_is_never_taken_from_the_file(saved, tmp_path):
    def my_rule(w, dw, config=None):
        return w, {} if config is None else config

    evil = dict(saved, update_rule="custom:subprocess.Popen")
    path = write(tmp_path / "custom.pkl", evil)
    with pytest.raises(ValueError, match="pass update_rule=<it> to from_checkpoint"):
        Solver.from_checkpoint(path, make_model(), blob_data())
    # The caller's own rule is used; the stored name must then match it (it does not: refused).
    with pytest.raises(ValueError, match="update_rule"):
        Solver.from_checkpoint(path, make_model(), blob_data(), update_rule=my_rule)


def raw_file(path, payload):
    path.write_bytes(checkpoint.MAGIC + hashlib.sha256(payload).digest() + payload)
    return path


class _Reduce:
    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def test_pickles_that_would_run_code_are_refused_with_a_valid_header_and_hash(saved, tmp_path):
    sentinel, targets = tmp_path / "sentinel", Targets()
    payloads = [
        pickle.dumps(_Reduce(os.system, (f"touch {sentinel}",)), protocol=5),
        pickle.dumps(dict(saved, update_rule=_Reduce(eval, (f"open({str(sentinel)!r}, 'w')",))), protocol=5),
        pickle.dumps({"format": "fastopt.Solver", "version": 2, "x": _Reduce(os.getcwd, ())}, protocol=5),
    ]
    for i, payload in enumerate(payloads):
        targets.refuse(raw_file(tmp_path / f"raw_{i}.pkl", payload), sentinel)


def test_a_schedule_object_bypassing_its_constructor_is_refused(saved, tmp_path):
    forged = StepLR.__new__(StepLR)
    forged.step_size, forged.gamma = 0, 0.1  # would divide by zero at the first step
    payload = pickle.dumps(dict(saved, lr_schedule=forged), protocol=5)
    Targets().refuse(raw_file(tmp_path / "forged.pkl", payload), tmp_path / "sentinel")
    payload = pickle.dumps(dict(saved, schedule=forged), protocol=5)
    Targets().refuse(raw_file(tmp_path / "forged.pkl", payload), tmp_path / "sentinel")


def test_the_version_1_exploit_is_refused(saved, tmp_path):
    sentinel = tmp_path / "sentinel"
    v1 = {"format": "fastopt.Solver", "version": 1,
          "kwargs": {"update_rule": "fastopt.train_cli:subprocess.Popen",
                     "optim_config": {"args": ["touch", str(sentinel)]}}}
    Targets().refuse(write(tmp_path / "v1.pkl", v1), sentinel, fragment="version")


# ---------------------------------------------------------------- tampered values
def _set(path, value):
    def edit(state):
        target = state
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return edit


def _with_len(key, make):
    return lambda state: state.__setitem__(key, make(len(state[key])))


TAMPERED = [
    (_set(("epoch",), -1), "epoch"), (_set(("epoch",), 1.5), "epoch"), (_set(("epoch",), 10 ** 6), "epoch"),
    (_set(("iteration",), True), "iteration"), (_set(("iteration",), 999), "loss_history has"),
    (_set(("loss_history",), "1.0"), "loss_history"), (_with_len("loss_history", lambda n: [1] * n), "loss_history"),
    (_with_len("train_acc_history", lambda n: [2.0] * n), "train_acc_history"),
    (_with_len("val_acc_history", lambda n: [-0.5] * n), "val_acc_history"),
    (_with_len("val_acc_history", lambda n: [0.25] * (n + 1)), "histories differ"),
    (_set(("best_val_acc",), 0.123), "best_val_acc"),
    (_set(("best_params",), {"W1": np.zeros((2, 2))}), "best_params"),
    (_set(("best_model_state",), {"params": {}}), "best_model_state"),
    (_set(("best_model_state", "bn_params", 0, "eps"), 1.0), "best_model_state"),
    (_set(("model", "params", "W2"), np.zeros((16, 13))), r"model params\['W2'\]"),
    (_set(("model", "params", "W2"), np.zeros((16, 12), np.float64)), r"model params\['W2'\]"),  # float32 model
    (_set(("model", "bn_params", 0, "running_mean"), np.zeros(3)), "running_mean"),
    (_set(("rng", "batch"), {"bit_generator": "MT19937"}), r"rng\['batch'\]"),
    (_set(("rng", "kind"), "numpy-global"), "rng"),
    (_set(("rng",), {"kind": "numpy-global", "state": {"bit_generator": "PCG64"}}), "rng"),
    (_set(("optimizer", "param_groups", 0, "lr"), -1.0), "optimizer state.*lr"),
    (_set(("optimizer", "param_groups", 0, "lr"), float("inf")), "optimizer state.*lr"),
    (_set(("optimizer", "configs", "W1", "m"), np.zeros(3)), r"optimizer state.*\['W1'\]\['m'\]"),
    (_set(("optimizer", "configs", "W1", "t"), -1), r"optimizer state.*'t'"),
    (_set(("optimizer", "configs", "W1", "beta2"), 1.0), r"optimizer state.*beta2"),
    (_set(("optimizer", "configs", "b1"), "x"), r"optimizer state.*\['b1'\]"),
    (_set(("lr_decay",), 5.0), "lr_decay"),
    (_set(("optim_config",), {"learning_rate": float("nan")}), "optim_config"),
    (_set(("optim_config",), ["learning_rate"]), "optim_config"),
    (_set(("batch_size",), 0), "batch_size"), (_set(("num_epochs",), -1), "num_epochs"),
    (_set(("num_train_samples",), 0), "num_train_samples"), (_set(("num_val_samples",), -3), "num_val_samples"),
    (_set(("lr_schedule",), {"name": "step", "step_size": 0}), "step_size"),
    (_set(("lr_schedule", "gamma"), -7.0), "gamma"),
    (_set(("lr_schedule", "step_size"), 2.5), "step_size"),
    (_set(("lr_schedule", "unit"), "fortnight"), "unit"),
    (_set(("schedule",), None), "without a learning-rate schedule"),
    (_set(("schedule",), [1, 2]), "schedule must be a scheduler state"),
    (_set(("schedule", "unit"), "epoch"), "schedule state"),
    (_set(("schedule", "scheduler", "step_size"), 0), "schedule state.*step_size"),
    (_set(("schedule", "scheduler", "gamma"), float("nan")), "schedule state.*gamma"),
    (_set(("schedule", "scheduler", "last_epoch"), -5), "schedule state.*last_epoch"),
    (_set(("schedule", "scheduler", "_step_count"), 1.5), "schedule state.*_step_count"),
    (_set(("schedule", "scheduler", "base_lrs"), [-1.0]), "schedule state.*base_lrs"),
    (_set(("schedule", "scheduler", "type"), "CosineAnnealingLR"), "schedule state"),
    (lambda s: s["schedule"]["scheduler"].pop("gamma"), "schedule state.*missing"),
    (_set(("lr_schedule_unit",), "fortnight"), "lr_schedule_unit"),
    (_set(("lr_schedule_custom",), "no"), "lr_schedule_custom"),
    (_set(("seed",), -1), "seed"), (_set(("verbose",), "yes"), "verbose"), (_set(("print_every",), 0), "print_every"),
    (_set(("checkpoint_name",), 5), "checkpoint_name"),
    (_set(("update_rule",), "adam2"), "update_rule"),
    (_set(("format",), "torch"), "not a fastopt Solver checkpoint"), (_set(("version",), 1), "version"),
    (_set(("evil",), "os.system"), "unexpected"),
    (lambda s: s.pop("best_params"), "missing"),
]


@pytest.mark.parametrize("edit,fragment", TAMPERED, ids=[f"{i}-{frag[:20]}" for i, (_, frag) in enumerate(TAMPERED)])
def test_tampered_field_is_refused_by_name_and_changes_nothing(saved, tmp_path, edit, fragment):
    bad = copy.deepcopy(saved)
    edit(bad)
    Targets().refuse(write(tmp_path / "tampered.pkl", bad), tmp_path / "sentinel", fragment)


def test_the_genuine_checkpoint_loads_and_resumes_bitwise(saved, tmp_path):
    path = write(tmp_path / "good.pkl", saved)
    full = Solver(make_model(), blob_data(), **base_kwargs())
    full.train()
    resumed = Solver.from_checkpoint(path, make_model(rng=4), blob_data(), num_epochs=2)
    resumed.train()
    assert resumed.loss_history == full.loss_history
    for k in full.model.params:
        assert np.array_equal(resumed.model.params[k], full.model.params[k])
