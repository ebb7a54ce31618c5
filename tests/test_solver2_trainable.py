"""The base Solver trains model.trainable_params with layer_lr= and regularizers= (what
fastopt.transfer.Solver added before; that name is now the same class): frozen layers and their
batchnorm statistics bitwise fixed, the max-norm constraint after each update, the elastic net in the
loss, and checkpoints that resume bitwise with all of them."""
import numpy as np
import pytest

import fastopt.solver
import fastopt.transfer
from fastopt import SGD, Adam, FullyConnectedNet
from fastopt.regularizers import Regularizers, column_norms
from fastopt.solver import Solver


def _model(**kw):
    args = dict(hidden_dims=[12, 10], input_dim=6, num_classes=3, normalization="batchnorm", rng=0,
                weight_init="he")
    args.update(kw)
    return FullyConnectedNet(**args)


def _data(n=60, d=6, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(dtype)
    y = np.minimum((X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 0.5), 2)
    return {"X_train": X, "y_train": y, "X_val": X[:20], "y_val": y[:20]}


def _pretrained(**kw):
    m = _model(**kw)
    d = _data()
    m.loss(d["X_train"], d["y_train"])            # running statistics exist (a pretrained body)
    return m.freeze(0)


KW = dict(update_rule=Adam, optim_config={"learning_rate": 2e-2}, batch_size=10, verbose=False, seed=0,
          layer_lr={1: 5e-3}, regularizers=Regularizers(elastic_net=(1e-3, 1e-2), max_norm=1.5))


def test_transfer_solver_is_the_base_solver():
    assert fastopt.transfer.Solver is fastopt.solver.Solver
    m = _pretrained()
    with pytest.deprecated_call():                 # kept working for existing imports
        stats = fastopt.transfer.frozen_statistics(m)
    assert sorted(stats) == [(0, "running_mean"), (0, "running_var")]
    assert all(stats[(0, k)].tobytes() == m.bn_params[0][k].tobytes() for k in ("running_mean", "running_var"))


def test_all_options_together_resume_bitwise(tmp_path):
    data = _data()
    full = Solver(_pretrained(), data, num_epochs=4, checkpoint_name=str(tmp_path / "run"), **KW)
    full.train()
    resumed = Solver(_pretrained(rng=5), data, num_epochs=4, **KW)
    resumed.load_checkpoint(tmp_path / "run_epoch_2.pkl")
    resumed.train()
    assert resumed.loss_history == full.loss_history
    a, b = full.model.state_dict(rng=False), resumed.model.state_dict(rng=False)
    for k in a["params"]:
        assert a["params"][k].tobytes() == b["params"][k].tobytes(), k
    for pa, pb in zip(a["bn_params"], b["bn_params"]):
        for k, v in pa.items():
            if isinstance(v, np.ndarray):
                assert v.tobytes() == pb[k].tobytes(), k
    again = Solver.from_checkpoint(tmp_path / "run_epoch_2.pkl", _pretrained(rng=7), data,
                                   layer_lr=KW["layer_lr"], regularizers=KW["regularizers"])
    again.train()
    assert again.loss_history == full.loss_history


def test_frozen_layer_and_statistics_fixed_and_max_norm_holds_after_every_update():
    m = _pretrained()
    before = {k: m.params[k].tobytes() for k in m.layer_param_names(0)}
    stats = {k: m.bn_params[0][k].tobytes() for k in ("running_mean", "running_var")}
    norms = []

    def callback(solver, event, info):
        if event == "iteration":
            assert all(m.bn_params[0][k].tobytes() == v for k, v in stats.items())
            norms.append(max(float(column_norms(m.params[k]).max()) for k in ("W2", "W3")))
    s = Solver(m, _data(), num_epochs=2, callback=callback, **KW)
    assert s.trained_names == tuple(m.trainable_params) and "W1" not in s.trained_names
    s.train()
    assert norms and max(norms) <= 1.5 * (1 + 1e-6)
    assert {k: m.params[k].tobytes() for k in before} == before
    assert float(column_norms(m.params["W1"]).max()) > 1.5       # frozen: not constrained either
    assert sorted(g["lr"] for g in s.optimizer.param_groups) == [5e-3, 2e-2]


def test_loading_a_checkpoint_keeps_the_loaded_frozen_statistics(tmp_path):
    data = _data()
    first = Solver(_pretrained(), data, num_epochs=1, **KW)
    first.train()
    first.save_checkpoint(tmp_path / "c")
    saved = {k: first.model.bn_params[0][k].copy() for k in ("running_mean", "running_var")}
    fresh = _model().freeze(0)                 # never ran: no statistics of its own
    s = Solver(fresh, data, num_epochs=2, **KW)
    s.load_checkpoint(tmp_path / "c")
    s.train()
    for k, v in saved.items():
        assert fresh.bn_params[0][k].tobytes() == v.tobytes(), k


def test_elastic_net_enters_the_solvers_loss_of_the_trained_weights_only():
    data = _data(dtype=np.float64)
    m = _model(normalization=None, dtype=np.float64).freeze(0)
    s = Solver(m, data, update_rule=SGD, regularizers=Regularizers(elastic_net=(1e-2, 1e-1)), verbose=False)
    X, y = data["X_train"][:8], data["y_train"][:8]
    plain, g_plain = (lambda r: (r[0], {k: v.copy() for k, v in r[1].items()}))(m.loss(X, y))
    loss, grads = s._loss(X, y)
    W2, W3 = m.params["W2"], m.params["W3"]
    want = plain + sum(1e-2 * np.abs(w).sum() + 0.05 * (w * w).sum() for w in (W2, W3))
    assert loss == pytest.approx(want, rel=1e-14)
    np.testing.assert_allclose(grads["W3"], g_plain["W3"] + 1e-2 * np.sign(W3) + 1e-1 * W3, rtol=1e-13)


@pytest.mark.parametrize("kw, error, match", [
    (dict(update_rule="adam", layer_lr={0: 1e-3}), ValueError, "optimizer class"),
    (dict(update_rule=Adam, layer_lr=[1e-3]), TypeError, "layer_lr"),
    (dict(update_rule=Adam, layer_lr={-1: 1e-3}), ValueError, "layer_lr key"),
    (dict(update_rule=Adam, layer_lr={0: -1.0}), ValueError, r"layer_lr\[0\]"),
    (dict(update_rule=Adam, layer_lr={0: 1e-3}), ValueError, "frozen"),     # layer 0 is frozen
    (dict(update_rule=Adam, regularizers=(0.1, 0.1)), TypeError, "Regularizers"),
])
def test_bad_layer_lr_and_regularizers_are_refused(kw, error, match):
    with pytest.raises(error, match=match):
        Solver(_pretrained(), _data(), verbose=False, **kw)


def test_layer_lr_needs_a_model_with_param_groups():
    class Plain:
        def __init__(self):
            self.inner = _model(normalization=None)
            self.params = self.inner.params

        def loss(self, X, y=None):
            return self.inner.loss(X, y)
    with pytest.raises(TypeError, match="param_groups"):
        Solver(Plain(), _data(), update_rule=Adam, layer_lr={0: 1e-3}, verbose=False)


def test_a_frozen_batchnorm_layer_without_statistics_trains_with_mean_0_variance_1():
    """A never-run frozen layer is no longer refused: its statistics are created as mean 0, variance 1
    (fastopt.nn.frozen_norm) and stay so; the rest trains."""
    model = _model().freeze(0)                 # never ran: bn_params[0] has no running statistics
    before = {k: model.params[k].copy() for k in model.layer_param_names(0)}
    s = Solver(model, _data(), num_epochs=1, **KW)
    s.train()
    assert s._t > 0
    assert all(model.params[k].tobytes() == v.tobytes() for k, v in before.items())
    assert not model.bn_params[0]["running_mean"].any() and np.all(model.bn_params[0]["running_var"] == 1)
