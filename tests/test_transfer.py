"""Transfer learning: freezing, heads, per-layer learning rates, the Solver over trainable params."""
import numpy as np
import pytest

from fastopt import SGD, Adam, FullyConnectedNet
from fastopt.regularizers import Regularizers, column_norms
from fastopt.transfer import Solver


def _model(**kw):
    args = dict(hidden_dims=[12, 10], input_dim=6, num_classes=3, normalization="batchnorm", rng=0)
    args.update(kw)
    return FullyConnectedNet(**args)


def _data(n=60, d=6, classes=3, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(dtype)
    y = (X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 0.5)
    y = np.minimum(y, classes - 1)
    return {"X_train": X, "y_train": y, "X_val": X[:20], "y_val": y[:20]}


def _snapshot(model):
    s = model.state_dict(rng=False)
    return {k: v.tobytes() for k, v in s["params"].items()}, [
        {k: v.tobytes() for k, v in p.items() if isinstance(v, np.ndarray)} for p in s["bn_params"]]


# ---------------------------------------------------------------- freeze / unfreeze

def test_freeze_unfreeze_and_trainable_params():
    m = _model()
    assert m.frozen == frozenset() and list(m.trainable_params) == list(m.params)
    assert m.freeze(0) is m and m.frozen == {0}
    m.freeze([1])
    assert m.frozen == {0, 1}
    assert list(m.trainable_params) == ["W3", "b3"]
    assert all(m.trainable_params[k] is m.params[k] for k in m.trainable_params)   # views, not copies
    m.unfreeze([0])
    assert list(m.trainable_params) == ["W1", "b1", "gamma1", "beta1", "W3", "b3"]
    m.unfreeze()
    assert m.frozen == frozenset()
    assert m.layer_param_names(1) == ["W2", "b2", "gamma2", "beta2"]
    assert m.layer_param_names(2) == ["W3", "b3"]


@pytest.mark.parametrize("layers, error, match", [
    (3, ValueError, r"layer index in \[0, 2\]"),
    ([0, 5], ValueError, r"layers\[1\]"),
    (-1, ValueError, "layers"),
    ("0", TypeError, "layers"),
    (1.5, TypeError, "layers"),
    ([0, 1, 2], ValueError, "at least one must stay trainable"),
])
def test_freeze_beyond_the_depth_is_refused_and_changes_nothing(layers, error, match):
    m = _model().freeze(0)
    with pytest.raises(error, match=match):
        m.freeze(layers)
    assert m.frozen == {0}


def test_frozen_layers_are_bitwise_unchanged_after_training_the_rest():
    m = _model(dropout_keep_ratio=0.9)
    d = _data()
    m.loss(d["X_train"], d["y_train"])              # running statistics exist (a pretrained body)
    m.freeze([0, 1])
    before = _snapshot(m)
    assert before[1][0]
    solver = Solver(m, _data(), update_rule=Adam, optim_config={"learning_rate": 1e-2},
                    batch_size=10, num_epochs=3, verbose=False, seed=0)
    solver.train()
    after = _snapshot(m)
    for k in ("W1", "b1", "gamma1", "beta1", "W2", "b2", "gamma2", "beta2"):
        assert after[0][k] == before[0][k], k
    assert after[1] == before[1]                   # the frozen batchnorm layers' running statistics
    assert after[0]["W3"] != before[0]["W3"]       # the head trained
    assert list(solver.trained_names) == ["W3", "b3"]


@pytest.mark.parametrize("fast", [True, False])
def test_no_training_call_moves_a_frozen_layers_statistics(fast):
    """Checked after every loss call the Solver makes, before its update (nothing puts them back):
    the frozen layer's statistics bitwise fixed, the trainable layer's moving."""
    m = _model()
    m.fast_path = fast
    d = _data()
    m.loss(d["X_train"], d["y_train"])              # running statistics exist (a pretrained body)
    m.freeze(0)
    frozen = {k: m.bn_params[0][k].tobytes() for k in ("running_mean", "running_var")}
    trainable = [m.bn_params[1]["running_mean"].copy()]
    calls = []
    loss = m.loss

    def checked(X, y=None, **kw):
        out = loss(X, y, **kw)
        calls.append(y is not None)
        assert {k: m.bn_params[0][k].tobytes() for k in frozen} == frozen
        if y is not None:
            assert m.bn_params[1]["running_mean"].tobytes() != trainable[-1].tobytes()
            trainable.append(m.bn_params[1]["running_mean"].copy())
        return out
    m.loss = checked
    Solver(m, d, update_rule=Adam, optim_config={"learning_rate": 1e-2}, batch_size=10, num_epochs=2,
           verbose=False, seed=0).train()
    assert sum(calls) == 12 and not all(calls)      # 6 steps per epoch, and the accuracy checks


def test_the_transfer_solver_checkpoints_and_resumes(tmp_path):
    data = _data()
    m = _model()
    m.loss(data["X_train"], data["y_train"])        # running statistics exist (a pretrained body)
    m.freeze(0)
    s = Solver(m, data, update_rule=Adam, batch_size=10, num_epochs=1, verbose=False, seed=0)
    s.train()
    s.save_checkpoint(tmp_path / "c")
    m2 = _model().freeze(0)
    s2 = Solver(m2, data, update_rule=Adam, batch_size=10, num_epochs=2, verbose=False, seed=0)
    s2.load_checkpoint(tmp_path / "c")
    assert s2.iteration == s.iteration and list(s2.trained_names) == list(m.trainable_params)


# ---------------------------------------------------------------- replace_head

def test_replace_head_with_the_same_classes_keeps_it():
    m = _model()
    W3 = m.params["W3"]
    assert m.replace_head(3, rng=5) is m and m.params["W3"] is W3


def test_replace_head_gives_a_fresh_head_and_keeps_the_body_bitwise():
    m = _model(weight_init="he").freeze([0, 2])
    X = _data()["X_train"]
    m.loss(X, np.zeros(len(X), np.int64))
    body = {k: v.copy() for k, v in m.params.items() if not k.endswith("3")}
    m.replace_head(5, rng=1)
    assert m.num_classes == 5 and m.params["W3"].shape == (10, 5) and m.params["b3"].shape == (5,)
    assert not np.any(m.params["b3"])
    assert all(m.params[k].tobytes() == v.tobytes() for k, v in body.items())
    assert m.frozen == {0}                          # the new head is trainable
    assert m.loss(X).shape == (len(X), 5)
    loss, grads = m.loss(X, np.arange(len(X)) % 5)
    assert grads["W3"].shape == (10, 5) and np.isfinite(loss)
    other = _model(weight_init="he").replace_head(5, rng=1)
    assert other.params["W3"].tobytes() == m.params["W3"].tobytes()   # reproducible from rng
    std = float(np.std(m.params["W3"]))
    assert 0.5 * np.sqrt(2 / 10) < std < 1.5 * np.sqrt(2 / 10)        # He init of fan_in 10


@pytest.mark.parametrize("num_classes, rng, error", [(1, 0, ValueError), (2.5, 0, TypeError),
                                                    (4, -1, ValueError), (4, "x", TypeError)])
def test_replace_head_bad_arguments_change_nothing(num_classes, rng, error):
    m = _model()
    before = _snapshot(m)
    with pytest.raises(error):
        m.replace_head(num_classes, rng=rng)
    assert _snapshot(m) == before and m.num_classes == 3


# ---------------------------------------------------------------- per-layer learning rates

def test_param_groups_and_their_learning_rates_step_exactly():
    m = _model(normalization=None, dtype=np.float64).freeze(1)
    groups = m.param_groups(lr={0: 0.5, 2: 0.25}, default_lr=0.125)
    assert [sorted(g["params"]) for g in groups] == [["W1", "b1"], ["W3", "b3"]]
    assert [g["lr"] for g in groups] == [0.5, 0.25]
    m.unfreeze()
    groups = m.param_groups(lr={2: 0.25}, default_lr=0.125)
    assert [(sorted(g["params"]), g["lr"]) for g in groups] == [(["W3", "b3"], 0.25), (["W1", "W2", "b1", "b2"], 0.125)]
    assert "lr" not in m.param_groups(lr={2: 0.25})[1]
    before = {k: v.copy() for k, v in m.params.items()}
    opt = SGD(groups, lr=1.0)
    g = {k: np.ones_like(v) for k, v in m.params.items()}
    opt.step(g)
    for k, v in m.params.items():
        lr = 0.25 if k.endswith("3") else 0.125
        np.testing.assert_array_equal(v, before[k] - lr)


@pytest.mark.parametrize("lr, default_lr, error, match", [
    ({1: 0.1}, None, ValueError, "frozen"),
    ({3: 0.1}, None, ValueError, "layer index"),
    ({0: 0.0}, None, ValueError, "lr"),
    ({0: 0.1}, -1.0, ValueError, "default_lr"),
    ([0.1], None, TypeError, "mapping"),
])
def test_param_groups_bad_arguments(lr, default_lr, error, match):
    m = _model().freeze(1)
    with pytest.raises(error, match=match):
        m.param_groups(lr=lr, default_lr=default_lr)


def test_layer_lr_in_the_solver():
    m = _model(normalization=None)
    s = Solver(m, _data(), update_rule=SGD, optim_config={"learning_rate": 1e-2}, layer_lr={0: 1e-4},
               batch_size=10, num_epochs=1, verbose=False)
    assert sorted(g["lr"] for g in s.optimizer.param_groups) == [1e-4, 1e-2]
    with pytest.raises(ValueError, match="optimizer class"):
        Solver(_model(), _data(), update_rule="adam", layer_lr={0: 1e-4})


# ---------------------------------------------------------------- regularizers in the Solver

def test_max_norm_holds_after_every_update():
    m = _model(normalization=None, weight_init="he", rng=3)
    c = 0.8
    seen = []

    def callback(solver, event, info):
        if event == "iteration":
            seen.append(max(float(column_norms(m.params[k]).max()) for k in ("W1", "W2", "W3")))
    Solver(m, _data(), update_rule=Adam, optim_config={"learning_rate": 5e-2},
           regularizers=Regularizers(max_norm=c), batch_size=10, num_epochs=2, verbose=False, seed=0,
           callback=callback).train()
    assert seen and max(seen) <= c * (1 + 1e-6)
    assert float(column_norms(_model(normalization=None, weight_init="he", rng=3).params["W1"]).max()) > c


def test_elastic_net_adds_its_penalty_and_gradient_to_the_loss():
    data = _data(dtype=np.float64)
    reg = Regularizers(elastic_net=(1e-2, 1e-1))
    m = _model(normalization=None, dtype=np.float64)
    s = Solver(m, data, update_rule=SGD, optim_config={"learning_rate": 1e-9}, regularizers=reg)
    X, y = data["X_train"][:8], data["y_train"][:8]
    plain, g_plain = m.loss(X, y)
    loss, grads = s._loss(X, y)
    W = [m.params[k] for k in ("W1", "W2", "W3")]
    want = plain + sum(1e-2 * np.abs(w).sum() + 0.05 * (w * w).sum() for w in W)
    assert loss == pytest.approx(want, rel=1e-14)
    np.testing.assert_allclose(grads["W2"], g_plain["W2"] + 1e-2 * np.sign(W[1]) + 1e-1 * W[1], rtol=1e-13)
    np.testing.assert_array_equal(grads["b2"], g_plain["b2"])


def test_elastic_net_gradient_check_float64():
    """The model's loss plus the elastic net: centered differences against the analytic gradient."""
    rng = np.random.default_rng(4)
    m = FullyConnectedNet([7], input_dim=5, num_classes=3, dtype=np.float64, rng=1, weight_init="he")
    X, y = rng.standard_normal((6, 5)), rng.integers(0, 3, 6)
    for k in ("W1", "W2"):      # weights away from the |w| kink
        w = m.params[k]
        w[np.abs(w) < 1e-3] = 1e-2
    reg = Regularizers(elastic_net=(0.3, 0.7))

    def f():
        loss, grads = m.loss(X, y)
        return reg.add(m.params, loss, grads), grads
    _, grads = f()
    h = 1e-6
    for k in ("W1", "W2"):
        p = m.params[k]
        num = np.zeros_like(p)
        for i in np.ndindex(p.shape):
            old = p[i]
            p[i] = old + h
            fp = f()[0]
            p[i] = old - h
            fm = f()[0]
            p[i] = old
            num[i] = (fp - fm) / (2 * h)
        rel = np.abs(num - grads[k]) / np.maximum(np.abs(num) + np.abs(grads[k]), 1e-8)
        assert rel.max() < 1e-7, (k, rel.max())


@pytest.mark.parametrize("kw, error", [(dict(elastic_net=(1.0,)), TypeError), (dict(elastic_net=(-1, 0)), ValueError),
                                       (dict(max_norm=0), ValueError), (dict(elastic_net="1,2"), TypeError)])
def test_regularizers_bad_arguments(kw, error):
    with pytest.raises(error):
        Regularizers(**kw)
    with pytest.raises(TypeError, match="Regularizers"):
        Solver(_model(), _data(), regularizers={"max_norm": 1})
