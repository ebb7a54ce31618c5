"""Ensembles: probability averaging, validation, and the lecture's claim on digits."""
import numpy as np
import pytest

from fastopt import FullyConnectedNet, Solver
from fastopt.data import load_digits
from fastopt.ensemble import Ensemble, from_seeds, softmax


def _digits_member(data):
    def train(seed):
        model = FullyConnectedNet([64], input_dim=64, num_classes=10, weight_scale=5e-2, rng=seed,
                                  dtype=np.float64)
        Solver(model, data, update_rule="adam", optim_config={"learning_rate": 2e-3}, batch_size=50,
               num_epochs=2, verbose=False, seed=seed).train()
        return model
    return train


def test_ensemble_of_seeded_digits_models_beats_the_mean_member():
    data = load_digits(dtype=np.float64, standardize=True)
    ens = from_seeds(_digits_member(data), seeds=range(5))
    X, y = data["X_test"], data["y_test"]
    members = ens.member_accuracies(X, y)
    acc = ens.accuracy(X, y)
    print(f"digits test accuracy: members {np.round(members, 4).tolist()} (mean {np.mean(members):.4f}), "
          f"ensemble of {len(ens)} {acc:.4f}")
    assert acc >= np.mean(members)
    assert acc > 0.8


def test_probabilities_are_the_mean_of_member_softmaxes():
    rng = np.random.default_rng(0)
    models = [FullyConnectedNet([5], input_dim=4, num_classes=3, rng=s, dtype=np.float64) for s in range(3)]
    X = rng.standard_normal((7, 4))
    p = Ensemble(models).predict_proba(X)
    want = np.mean([softmax(m.loss(X)) for m in models], axis=0)
    np.testing.assert_allclose(p, want, rtol=1e-15)
    np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-14)
    np.testing.assert_array_equal(Ensemble(models).predict(X), np.argmax(want, axis=1))
    single = Ensemble(models[:1])
    np.testing.assert_array_equal(single.predict(X), np.argmax(models[0].loss(X), axis=1))


def test_members_must_agree():
    a = FullyConnectedNet([5], input_dim=4, num_classes=3, rng=0)
    with pytest.raises(ValueError, match="num_classes"):
        Ensemble([a, FullyConnectedNet([5], input_dim=4, num_classes=4, rng=0)])
    with pytest.raises(ValueError, match="input_dim"):
        Ensemble([a, FullyConnectedNet([5], input_dim=5, num_classes=3, rng=0)])
    with pytest.raises(ValueError, match="at least one"):
        Ensemble([])
    with pytest.raises(TypeError, match="models\\[1\\]"):
        Ensemble([a, object()])
    with pytest.raises(ValueError, match="distinct"):
        from_seeds(lambda s: a, [1, 1])
    with pytest.raises(ValueError, match="y must be"):
        Ensemble([a]).accuracy(np.zeros((3, 4), np.float32), np.zeros(2, np.int64))


def test_snapshots_keep_the_last_epochs_models_independent_of_the_run():
    from fastopt import Solver
    from fastopt.ensemble import Snapshots
    from fastopt.nn import FullyConnectedNet

    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 5)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    model = FullyConnectedNet([8], input_dim=5, num_classes=2, rng=0)
    seen = []
    snaps = Snapshots(last=3, then=lambda s, e, i: seen.append(e))
    Solver(model, {"X_train": X, "y_train": y, "X_val": X, "y_val": y}, update_rule="adam", batch_size=10,
           num_epochs=5, verbose=False, seed=0, callback=snaps).train()
    assert snaps.epochs == [3, 4, 5] and len(snaps.models) == 3 and "iteration" in seen
    assert all(m is not model for m in snaps.models)
    assert snaps.models[0].params["W1"].tobytes() != snaps.models[2].params["W1"].tobytes()
    ens = Ensemble(snaps.models)
    assert 0 <= ens.accuracy(X, y) <= 1
    with pytest.raises(ValueError):
        Snapshots(last=0)
    with pytest.raises(TypeError):
        Snapshots(last=2, then=3)
