"""Solver(monitor=...): update/weight ratios (optimizer kernels or snapshots), gradient norms, activation
statistics, diagnoses, early stopping, and their place in checkpoints (bitwise resume)."""
import json
import math
import re

import numpy as np
import pytest
from _nn_data import LinearSoftmax, blob_data

from fastopt import babysit, checkpoint, optim
from fastopt.nn import FullyConnectedNet
from fastopt.solver import CHECKPOINT_VERSION, Solver
from fastopt.solver import _monitor, _registry
from fastopt.solver._sampling import make_draws

from test_solver import make_model
from test_solver import solver_kwargs as kwargs

DIM, CLASSES = 6, 3


def same_state(a, b):
    assert a.loss_history == b.loss_history and a.val_acc_history == b.val_acc_history
    for k in a.model.params:
        assert np.array_equal(a.model.params[k], b.model.params[k]), k
    for pa, pb in zip(a.model.bn_params, b.model.bn_params):
        assert np.array_equal(pa["running_mean"], pb["running_mean"])


class TrackingSGD(optim.SGD):
    """An optimizer with the agreed interface (track_update_ratio=, update_ratios()), computing the
    ratios itself: the Solver's fast path can be tested before the kernels provide it."""

    def __init__(self, params, track_update_ratio=False, by_index=False, **kw):
        super().__init__(params, track_update_ratio=track_update_ratio, **kw)
        self.by_index = by_index
        self._tracked = dict(params)        # the arrays the optimizer updates in place
        self._names = list(params)
        self._ratios = {}
        self.calls = 0

    def step(self, grads=None):
        before = {k: v.copy() for k, v in self._tracked.items()} if self.track_update_ratio else None
        super().step(grads)
        if before is not None:
            r = babysit.update_ratios(before, self._tracked)
            self._ratios = {(i if self.by_index else k): r[k] for i, k in enumerate(self._names)}

    def update_ratios(self):
        self.calls += 1
        return dict(self._ratios)


class SnapshotSGD(optim.SGD):
    """SGD whose constructor takes no track_update_ratio (explicit signature): always the snapshot path."""

    def __init__(self, params, lr=1e-2):
        super().__init__(params, lr=lr)


def expected_source(solver, rule):
    tracks = _registry.tracks_update_ratio(rule) and callable(getattr(solver.optimizer, "update_ratios", None))
    return "optimizer" if tracks else "snapshot"


# ---------------------------------------------------------------- measurements
def test_monitoring_does_not_change_the_run():
    data = blob_data()
    plain = Solver(make_model(), data, **kwargs())
    plain.train()
    watched = Solver(make_model(), data, **kwargs(monitor=1))
    watched.train()
    same_state(plain, watched)
    assert plain.monitor_history == [] and plain.diagnoses == [] and plain.stopped is None
    assert len(watched.monitor_history) == watched.iteration


def test_records_at_the_interval_with_every_field():
    data = blob_data()
    solver = Solver(make_model(), data, **kwargs(monitor=4))
    solver.train()
    ipe = solver.iterations_per_epoch
    assert [r["iteration"] for r in solver.monitor_history] == list(range(1, 3 * ipe + 1, 4))
    rec = solver.monitor_history[0]
    assert set(rec) == set(_monitor.RECORD_KEYS)
    assert rec["ratio_source"] == expected_source(solver, optim.adam)   # the kernels' once they report it
    assert set(rec["update_ratio"]) == set(solver.model.params) == set(rec["grad_norm"])
    assert rec["update_ratio"]["b1"] == 0.0        # zero biases before the first step: 0 by convention
    assert 1e-4 < rec["update_ratio"]["W1"] < 1
    assert all(g > 0 for g in rec["grad_norm"].values())
    assert [a["layer"] for a in rec["activations"]] == [1, 2] and [a["width"] for a in rec["activations"]] == [16, 12]
    for a in rec["activations"]:
        assert 0.2 < a["flat_fraction"] < 0.8 and 0 <= a["dead_units"] <= 1     # batchnorm -> ReLU
    ratios = [rec["update_ratio"][k] for k in ("W1", "W2", "W3")]
    assert rec["ratio_median"] == float(np.median(ratios)) and rec["ratio_max"] == max(ratios)
    assert rec["epoch"] == 0 and solver.monitor_history[-1]["epoch"] == 2
    json.dumps(solver.monitor_history, allow_nan=False)      # JSON-ready


def test_snapshot_ratio_and_grad_norm_are_those_of_the_step():
    data = blob_data()
    model = make_model(dropout_keep_ratio=1)
    twin = make_model(dropout_keep_ratio=1)
    before = {k: v.copy() for k, v in model.params.items()}
    solver = Solver(model, data, **kwargs(monitor=1, num_epochs=1, update_rule=SnapshotSGD, optim_config={}))
    solver._t, solver.epoch = 0, 0
    solver._step()
    idx = make_draws(5).batch(data["X_train"].shape[0], 20)
    _, grads = twin.loss(data["X_train"][idx], data["y_train"][idx])
    rec = solver.monitor_history[0]
    for k, w0 in before.items():
        dw = np.linalg.norm(model.params[k].astype(np.float64) - w0)
        w = np.linalg.norm(w0.astype(np.float64))
        assert rec["update_ratio"][k] == pytest.approx(dw / w if w else 0.0, rel=1e-12)
        assert rec["grad_norm"][k] == pytest.approx(np.linalg.norm(grads[k].astype(np.float64)), rel=1e-6)


@pytest.mark.parametrize("by_index", [False, True])
def test_the_optimizers_update_ratios_are_used_when_it_has_them(by_index):
    data = blob_data()
    cfg = {"learning_rate": 1e-2, "by_index": by_index}
    fast = Solver(make_model(), data, **kwargs(update_rule=TrackingSGD, optim_config=cfg, monitor=3))
    assert fast.optimizer.track_update_ratio is True
    fast.train()
    slow = Solver(make_model(), data, **kwargs(update_rule=SnapshotSGD, optim_config={"learning_rate": 1e-2}, monitor=3))
    slow.train()
    assert fast.optimizer.calls == len(fast.monitor_history) > 1
    same_state(fast, slow)
    for a, b in zip(fast.monitor_history, slow.monitor_history):
        assert a["ratio_source"] == "optimizer" and b["ratio_source"] == "snapshot"
        assert set(a["update_ratio"]) == set(b["update_ratio"])       # index keys mapped to names
        for k in a["update_ratio"]:
            assert a["update_ratio"][k] == pytest.approx(b["update_ratio"][k], rel=1e-12)


def test_tracking_is_found_through_a_constructor_passing_kwargs_on():
    class Sub(TrackingSGD):
        def __init__(self, params, **kw):
            super().__init__(params, **kw)

    sources = []
    for rule in (Sub, SnapshotSGD):
        solver = Solver(make_model(), blob_data(), **kwargs(update_rule=rule, optim_config={"learning_rate": 1e-2},
                                                            monitor=2, num_epochs=1))
        solver.train()
        sources.append({r["ratio_source"] for r in solver.monitor_history})
    assert sources == [{"optimizer"}, {"snapshot"}]


@pytest.mark.parametrize("rule", ["sgd", "sgd_momentum", "adam", "Adam", "AdamW", "nadam", "Lion"])
def test_both_paths_agree_for_every_kind_of_rule(monkeypatch, rule):
    """Whatever the optimizer reports (its kernels' ratios once it takes track_update_ratio) agrees
    with the snapshot computation of the same run (float32 parameters: rel 1e-5)."""
    data = blob_data()
    cfg = dict(update_rule=rule, optim_config={"learning_rate": 1e-3}, monitor=2, num_epochs=1)
    own = Solver(make_model(), data, **kwargs(**cfg))
    own.train()
    monkeypatch.setattr(_registry, "tracks_update_ratio", lambda rule: False)
    snap = Solver(make_model(), data, **kwargs(**cfg))
    snap.train()
    same_state(own, snap)
    assert {r["ratio_source"] for r in snap.monitor_history} == {"snapshot"}
    for a, b in zip(own.monitor_history, snap.monitor_history):
        assert set(a["update_ratio"]) == set(b["update_ratio"]) == set(own.model.params)
        for k, v in b["update_ratio"].items():
            assert a["update_ratio"][k] == pytest.approx(v, rel=1e-5, abs=1e-12), k


def test_tracking_is_not_asked_for_without_monitoring():
    solver = Solver(make_model(), blob_data(), **kwargs(update_rule=TrackingSGD, optim_config={"learning_rate": 1e-2}))
    assert solver.optimizer.track_update_ratio is False


def test_a_model_that_is_not_a_fully_connected_net_has_no_activation_statistics():
    solver = Solver(LinearSoftmax("W", DIM, CLASSES), blob_data(), **kwargs(monitor=2, num_epochs=1))
    solver.train()
    assert solver.monitor_history and all(r["activations"] == [] and r["dead_fraction"] is None
                                          for r in solver.monitor_history)


def test_a_probe_and_the_activation_statistics_of_tanh():
    data = blob_data()
    probe = data["X_val"][:17]
    model = make_model(activation="tanh", normalization=None, dropout_keep_ratio=1)
    solver = Solver(model, data, **kwargs(monitor=babysit.Monitor(interval=5, X=probe), num_epochs=1))
    solver.train()
    expected = babysit.activation_stats(model, probe, "tanh")   # after training: the last record's params
    assert solver.monitor_history[-1]["iteration"] == solver.iteration     # 6 steps, interval 5: 1 and 6
    assert solver.monitor_history[-1]["activations"] == expected


def test_the_activation_statistics_of_a_frozen_batchnorm_layer_use_its_running_statistics():
    # A frozen batchnorm layer trains in inference mode (fastopt.nn.frozen_norm): its statistics
    # are those of the activations the layers above it train on.
    from fastopt.diagnose import layer_stats
    from fastopt.layers import activations as A
    data = blob_data()
    model = make_model(normalization="batchnorm", dropout_keep_ratio=1)
    Solver(model, data, **kwargs(num_epochs=1)).train()
    probe = data["X_val"][:17]
    trained = babysit.activation_stats(model, probe)
    model.freeze([0])
    bn = model.bn_params[0]
    running = {k: bn[k].copy() for k in ("running_mean", "running_var")}
    p = model.params
    a = probe @ p["W1"] + p["b1"]
    a = p["gamma1"] * (a - running["running_mean"]) / np.sqrt(running["running_var"] + bn.get("eps", 1e-5)) + p["beta1"]
    h = np.maximum(a, 0)
    got = babysit.activation_stats(model, probe)
    want = layer_stats(A.get("relu"), h)
    assert got[0]["mean"] == pytest.approx(want["mean"], rel=1e-5)   # float32 model
    assert got[0]["std"] == pytest.approx(want["std"], rel=1e-5)
    assert got[0]["mean"] != pytest.approx(trained[0]["mean"], rel=1e-3)   # not the batch's statistics
    for k in running:                                                      # nothing of the model changed
        np.testing.assert_array_equal(bn[k], running[k])


# ---------------------------------------------------------------- diagnoses
def test_an_exploding_loss_stops_training_with_the_diagnosis():
    data = blob_data()
    solver = Solver(make_model(normalization=None, dropout_keep_ratio=1), data,
                    **kwargs(update_rule="sgd", optim_config={"learning_rate": 1e3}, monitor=10, num_epochs=20))
    with np.errstate(all="ignore"):
        solver.train()
    assert solver.stopped is not None and solver.stopped["kind"] == "exploded"
    n = solver.stopped["iteration"]
    assert solver.stopped["message"] == f"loss exploded at iteration {n}: learning rate too high?"
    assert n == solver.iteration < 20 * solver.iterations_per_epoch
    loss = solver.loss_history[n - 1]
    assert not math.isfinite(loss) or loss > 3 * solver.loss_history[0]
    assert solver.diagnoses[-1] == solver.stopped
    before = solver.iteration
    solver.train()                                  # a stopped Solver trains no more
    assert solver.iteration == before


def test_a_flat_loss_is_a_warning_and_training_goes_on():
    data = blob_data()
    solver = Solver(make_model(), data, **kwargs(update_rule="sgd", optim_config={"learning_rate": 1e-9},
                                                  monitor={"interval": 50, "flat_window": 6}))
    solver.train()
    assert solver.stopped is None and solver.iteration == 3 * solver.iterations_per_epoch   # 18 steps
    messages = [d["message"] for d in solver.diagnoses]
    assert len(messages) == 3 and all(d["kind"] == "not_moving" for d in solver.diagnoses)
    assert re.match(r"loss not moving over iterations 1\.\.6: learning rate too low\?", messages[0])
    assert messages[2].startswith("loss not moving over iterations 13..18: learning rate too low?")


def test_a_learning_run_has_no_diagnosis():
    solver = Solver(make_model(), blob_data(), **kwargs(monitor={"interval": 5, "flat_window": 6}))
    solver.train()
    assert solver.diagnoses == [] and solver.stopped is None


# ---------------------------------------------------------------- early stopping
def _early_kwargs(**kw):
    return kwargs(update_rule="sgd", optim_config={"learning_rate": 1e-9}, num_epochs=30, early_stopping=2, **kw)


def test_early_stopping_restores_the_best_params_and_statistics():
    data = blob_data()
    solver = Solver(make_model(), data, **_early_kwargs())
    solver.train()
    assert solver.stopped["kind"] == "early_stopping" and solver.epoch < 30
    assert solver.epoch - solver._best_epoch == 2
    best = solver._best_model_state
    for k in solver.model.params:
        assert np.array_equal(solver.model.params[k], solver.best_params[k])
    for p, b in zip(solver.model.bn_params, best["bn_params"]):
        assert np.array_equal(p["running_mean"], b["running_mean"]) and np.array_equal(p["running_var"], b["running_var"])
    # The run's last running statistics differ from the restored ones: the restore did something.
    assert solver._best_epoch < solver.epoch


def test_a_monitor_patience_is_early_stopping():
    solver = Solver(make_model(), blob_data(), **kwargs(monitor=babysit.Monitor(patience=3)))
    assert solver.early_stopping == 3
    with pytest.raises(ValueError, match="disagree"):
        Solver(make_model(), blob_data(), **kwargs(monitor=babysit.Monitor(patience=3), early_stopping=2))


def test_resume_with_early_stopping_and_monitoring_is_bitwise(tmp_path):
    data = blob_data()
    extra = dict(monitor={"interval": 2, "flat_window": 6})
    full = Solver(make_model(), data, checkpoint_name=str(tmp_path / "run"), **_early_kwargs(**extra))
    full.train()
    stop = full.epoch
    assert full.stopped is not None and stop >= 3
    for epoch in (1, stop - 1, stop):
        resumed = Solver.from_checkpoint(tmp_path / f"run_epoch_{epoch}.pkl", make_model(rng=3), data)
        assert resumed.monitor == full.monitor and resumed.early_stopping == 2
        resumed.train()
        same_state(full, resumed)
        assert resumed.monitor_history == full.monitor_history
        assert resumed.diagnoses == full.diagnoses and resumed.stopped == full.stopped
    saved = checkpoint.load(tmp_path / f"run_epoch_{stop}.pkl")
    assert saved["version"] == CHECKPOINT_VERSION == 5 and saved["stopped"] == full.stopped


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("monitor, error, match", [
    (0, ValueError, "interval"), (-3, ValueError, "interval"), (2.5, TypeError, "monitor must be"),
    ("10", TypeError, "monitor must be"), ({"interval": 5, "foo": 1}, ValueError, "unknown keys"),
    ({"interval": 5, "explode": 1.0}, ValueError, "explode"), ({"interval": 5, "flat_window": 1}, ValueError, "flat_window"),
    ({"interval": 5, "activation": "swish"}, ValueError, "activation"),
    ({"interval": 5, "probe": [[1.0]]}, TypeError, "probe"),
])
def test_bad_monitor(monitor, error, match):
    with pytest.raises(error, match=match):
        Solver(make_model(), blob_data(), **kwargs(monitor=monitor))


def test_a_probe_of_the_wrong_width_is_refused():
    with pytest.raises(ValueError, match="probe"):
        Solver(make_model(), blob_data(), **kwargs(monitor={"interval": 1, "probe": np.zeros((3, DIM + 1))}))


@pytest.mark.parametrize("value", [0, -1, 1.5, True])
def test_bad_early_stopping(value):
    with pytest.raises((TypeError, ValueError), match="early_stopping"):
        Solver(make_model(), blob_data(), **kwargs(early_stopping=value))


@pytest.mark.parametrize("field, value, match", [
    ("monitor_history", [{"iteration": 1}], "monitor_history"),
    ("monitor_history", "x", "monitor_history"),
    ("diagnoses", [{"iteration": 1, "epoch": 0, "kind": "os.system", "message": "x"}], "kind"),
    ("stopped", {"iteration": 1, "epoch": 0, "kind": "exploded", "message": "x"}, "stopped"),
    ("best_epoch", 99, "best_epoch"),
    ("augment", {"spec": "shift:1", "image_shape": None, "seed": -1}, "seed"),
    ("monitor", {"interval": 0}, "interval"),
])
def test_a_checkpoint_with_bad_monitor_fields_is_refused(tmp_path, field, value, match):
    data = blob_data()
    solver = Solver(make_model(), data, checkpoint_name=str(tmp_path / "run"), **kwargs(monitor=2, num_epochs=1))
    solver.train()
    state = checkpoint.load(tmp_path / "run_epoch_1.pkl")
    state[field] = value
    checkpoint.save(tmp_path / "bad.pkl", state)
    fresh = Solver(make_model(rng=4), data, **kwargs(monitor=2, num_epochs=1))
    before = {k: v.copy() for k, v in fresh.model.params.items()}
    with pytest.raises(ValueError, match=match):
        fresh.load_checkpoint(tmp_path / "bad.pkl")
    with pytest.raises(ValueError, match=match):
        Solver.from_checkpoint(tmp_path / "bad.pkl", make_model(), data)
    assert fresh.monitor_history == [] and all(np.array_equal(before[k], v) for k, v in fresh.model.params.items())


def test_resume_mid_epoch_with_the_optimizers_ratios_is_bitwise(tmp_path):
    data = blob_data()
    cfg = dict(update_rule=TrackingSGD, optim_config={"learning_rate": 1e-2}, monitor=2)
    path = tmp_path / "mid.pkl"

    def save_at_8(solver, event, info):
        if event == "iteration" and info["iteration"] == 8:
            solver.save_checkpoint(path)

    full = Solver(make_model(), data, **kwargs(callback=save_at_8, **cfg))
    full.train()
    resumed = Solver.from_checkpoint(path, make_model(rng=1), data, update_rule=TrackingSGD)
    assert resumed.iteration == 8 and [r["iteration"] for r in resumed.monitor_history] == [1, 3, 5, 7]
    resumed.train()
    same_state(full, resumed)
    assert resumed.monitor_history == full.monitor_history
    assert {r["ratio_source"] for r in resumed.monitor_history} == {"optimizer"}
