"""Solver(augment=mixup) passes the model's loss mixup's soft labels, (N, C) target probabilities
(AugmentedBatch.soft_labels), and `fastopt train --augment mixup:A` trains with them.

SoftmaxRegression below is this test's own model: a NumPy softmax classifier whose loss takes integer
or soft labels, so the Solver's side is tested whatever FullyConnectedNet takes. The tests marked
`fcn` run the same with FullyConnectedNet (the agreed soft-label interface); they skip, saying so,
only while FullyConnectedNet.loss refuses a float y."""
import json

import numpy as np
import pytest
from _nn_data import blob_data

from fastopt.augment import Augment, mixup_softmax_loss
from fastopt.nn import FullyConnectedNet
from fastopt.optim import RULES
from fastopt.solver import Solver

DIM, CLASSES = 6, 3
SHAPE = (1, 2, 3)   # the blobs' 6 features read as a 2 x 3 image


class SoftmaxRegression:
    """scores = X @ W + b; loss(X, y) with y N integer labels or (N, C) float target probabilities."""

    def __init__(self, seed=0):
        rng = np.random.default_rng(seed)
        self.params = {"W": 0.1 * rng.standard_normal((DIM, CLASSES)), "b": np.zeros(CLASSES)}
        self.seen = []

    def loss(self, X, y=None):
        scores = X.reshape(X.shape[0], -1) @ self.params["W"] + self.params["b"]
        if y is None:
            return scores
        self.seen.append(y)
        n = X.shape[0]
        if y.ndim == 1:
            target = np.zeros_like(scores)
            target[np.arange(n), y] = 1.0
        else:
            target = y
        shifted = scores - scores.max(axis=1, keepdims=True)
        log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        dscores = (np.exp(log_p) - target) / n
        return -float((target * log_p).sum()) / n, {"W": X.reshape(n, -1).T @ dscores, "b": dscores.sum(axis=0)}


def mixup(seed=3, alpha=0.4):
    return Augment(f"mixup:{alpha},shift:1", image_shape=SHAPE, seed=seed)


KW = dict(update_rule="sgd", optim_config={"learning_rate": 0.5}, batch_size=20, num_epochs=2,
          num_train_samples=50, num_val_samples=30, verbose=False, seed=5)


def test_the_loss_gets_the_mixed_batch_and_its_soft_labels_and_the_run_is_the_hand_written_loop():
    data = {k: v.astype(np.float64) if k.startswith("X") else v for k, v in blob_data().items()}
    a = mixup()
    model = SoftmaxRegression()
    solver = Solver(model, data, augment=a, **KW)
    solver.train()
    # The same run written out: draws, augment, soft labels, loss, CS231n's sgd.
    ref = SoftmaxRegression()
    draws = Solver(SoftmaxRegression(), data, **KW)._draws
    losses = []
    for step in range(solver.iteration):
        idx = draws.batch(data["X_train"].shape[0], KW["batch_size"])
        batch = a(data["X_train"][idx], data["y_train"][idx], step, indices=idx)
        soft = batch.soft_labels(CLASSES)
        assert soft.shape == (20, CLASSES) and np.allclose(soft.sum(axis=1), 1.0)
        assert np.any((soft > 0) & (soft < 1))                  # labels really mixed
        np.testing.assert_array_equal(model.seen[step], soft)
        loss, grads = ref.loss(batch.X, soft)
        losses.append(loss)
        for k, w in ref.params.items():
            RULES["sgd"](w, grads[k], {"learning_rate": 0.5})
    assert solver.loss_history == losses
    for k in ref.params:
        assert model.params[k].tobytes() == ref.params[k].tobytes(), k


def test_the_soft_labels_give_mixups_loss():
    """The target the Solver hands over is mixup's: lam at y, 1 - lam at the partner's label."""
    data = {k: v.astype(np.float64) if k.startswith("X") else v for k, v in blob_data().items()}
    a = mixup(alpha=1.0)
    X, y = data["X_train"][:20], data["y_train"][:20]
    batch = a(X, y, 0)
    scores = np.random.default_rng(2).standard_normal((20, CLASSES))
    want, dwant = mixup_softmax_loss(scores, batch.y, batch.y_partner, batch.lam)
    target = batch.soft_labels(CLASSES)
    log_p = scores - scores.max(axis=1, keepdims=True)
    log_p = log_p - np.log(np.exp(log_p).sum(axis=1, keepdims=True))
    assert -float((target * log_p).sum()) / 20 == pytest.approx(want, rel=1e-14)
    np.testing.assert_allclose((np.exp(log_p) - target) / 20, dwant, rtol=1e-12, atol=1e-15)


def test_mixup_resumes_bitwise(tmp_path):
    data = {k: v.astype(np.float64) if k.startswith("X") else v for k, v in blob_data().items()}
    full = Solver(SoftmaxRegression(), data, augment=mixup(), checkpoint_name=str(tmp_path / "run"),
                  **{**KW, "num_epochs": 3})
    full.train()
    resumed = Solver.from_checkpoint(tmp_path / "run_epoch_1.pkl", SoftmaxRegression(seed=9), data)
    assert resumed.augment.spec == mixup().spec
    resumed.train()
    assert resumed.loss_history == full.loss_history
    for k in full.model.params:
        assert resumed.model.params[k].tobytes() == full.model.params[k].tobytes()


def test_a_model_taking_only_integer_labels_refuses_the_first_mixup_step_and_nothing_changes():
    class IntegerLabels(SoftmaxRegression):
        def loss(self, X, y=None):
            if y is not None and y.ndim != 1:
                raise TypeError(f"y must be N integer labels, got {y.dtype} {y.shape}")
            return super().loss(X, y)
    data = {k: v.astype(np.float64) if k.startswith("X") else v for k, v in blob_data().items()}
    model = IntegerLabels()
    before = {k: v.copy() for k, v in model.params.items()}
    solver = Solver(model, data, augment=mixup(), **KW)
    with pytest.raises(TypeError, match="integer labels"):
        solver.train()
    assert solver.iteration == 0 and solver.loss_history == []
    assert all(np.array_equal(model.params[k], v) for k, v in before.items())


# ---------------------------------------------------------------- FullyConnectedNet (re-run after the merge)

def _fcn_takes_soft_labels():
    m = FullyConnectedNet([4], input_dim=DIM, num_classes=CLASSES, rng=0)
    try:
        m.loss(np.zeros((2, DIM)), np.full((2, CLASSES), 1.0 / CLASSES))
    except (TypeError, ValueError):
        return False
    return True


fcn = pytest.mark.skipif(not _fcn_takes_soft_labels(),
                         reason="FullyConnectedNet.loss refuses soft labels (N, C) until engineer model's "
                                "branch (the agreed soft-label interface) is merged")


@fcn
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fcn_first_step_loss_is_mixups_loss_and_the_run_resumes_bitwise(tmp_path, dtype):
    data = {k: v.astype(dtype) if k.startswith("X") else v for k, v in blob_data().items()}

    def make(rng=11):
        return FullyConnectedNet([16], input_dim=DIM, num_classes=CLASSES, rng=rng, dtype=dtype)
    a = mixup()
    model = make()
    probe = make()
    solver = Solver(model, data, augment=a, checkpoint_name=str(tmp_path / "run"),
                    **{**KW, "update_rule": "adam", "optim_config": {"learning_rate": 5e-3}, "num_epochs": 3})
    draws = Solver(make(), data, **KW)._draws
    idx = draws.batch(data["X_train"].shape[0], KW["batch_size"])
    batch = a(data["X_train"][idx], data["y_train"][idx], 0, indices=idx)
    want, _ = mixup_softmax_loss(probe.loss(batch.X), batch.y, batch.y_partner, batch.lam)
    solver.train()
    assert solver.loss_history[0] == pytest.approx(want, rel=1e-5 if dtype == np.float32 else 1e-12)
    assert np.all(np.isfinite(solver.loss_history))
    resumed = Solver.from_checkpoint(tmp_path / "run_epoch_1.pkl", make(rng=2), data)
    resumed.train()
    assert resumed.loss_history == solver.loss_history
    for k in model.params:
        assert resumed.model.params[k].tobytes() == model.params[k].tobytes()


@fcn
def test_fastopt_train_with_mixup(tmp_path):
    from fastopt.cli import main

    path = tmp_path / "out.json"
    assert main(["train", "--epochs", "2", "--threads", "1", "--quiet", "--hidden", "32", "--seed", "1",
                 "--augment", "mixup:0.2,shift:1", "--json", str(path)]) == 0
    summary = json.loads(path.read_text())
    assert summary["epochs"] == 2 and 0.5 < summary["test_acc"] <= 1
