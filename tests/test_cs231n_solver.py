"""The Solver as CS231n's assignment-2 notebooks use it (imports changed to fastopt only).

The notebooks train on CIFAR-10, which is not bundled; these cells run on the bundled digits (64
standardized features instead of 3072 raw pixels, so the learning rates and weight scales a student
would tune differ), and assert what the notebooks ask for: 100% training accuracy on 50 examples
within 20 epochs, SGD+momentum converging faster than SGD, a user's own TwoLayerNet under the
Solver reaching a good validation accuracy. Without a fastopt seed the Solver draws exactly as
CS231n's does, so it reproduces a reference implementation of CS231n's loop bit for bit.
"""
import os

import numpy as np
import pytest

from fastopt import checkpoint
from fastopt._blas import limit_blas_threads
from fastopt.data import load_digits
from fastopt.nn import FullyConnectedNet
from fastopt.solver import Solver


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    # These cells are many small matmuls: OpenBLAS's spinning threads made them ~15x slower on a
    # busy 2-core machine. What they assert does not depend on the BLAS thread count.
    with limit_blas_threads(1):
        yield


@pytest.fixture(scope="module")
def data():
    d = load_digits(standardize=True, dtype=np.float64)
    return {k: d[k] for k in ("X_train", "y_train", "X_val", "y_val")}


def small(data, num_train=50):
    return {"X_train": data["X_train"][:num_train], "y_train": data["y_train"][:num_train],
            "X_val": data["X_val"], "y_val": data["y_val"]}


class TwoLayerNet:
    """A user's own model in the shape of CS231n's (2019): a params dict, loss(X, y=None),
    weights from np.random.randn, plain NumPy; nothing from fastopt."""

    def __init__(self, input_dim=3 * 32 * 32, hidden_dim=100, num_classes=10, weight_scale=1e-3, reg=0.0):
        self.reg = reg
        self.params = {"W1": weight_scale * np.random.randn(input_dim, hidden_dim), "b1": np.zeros(hidden_dim),
                       "W2": weight_scale * np.random.randn(hidden_dim, num_classes), "b2": np.zeros(num_classes)}

    def loss(self, X, y=None):
        W1, b1, W2, b2 = (self.params[k] for k in ("W1", "b1", "W2", "b2"))
        X = X.reshape(X.shape[0], -1)
        h = np.maximum(0, X @ W1 + b1)
        scores = h @ W2 + b2
        if y is None:
            return scores
        N = X.shape[0]
        shifted = scores - scores.max(axis=1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        loss = -log_probs[np.arange(N), y].mean() + 0.5 * self.reg * (np.sum(W1 * W1) + np.sum(W2 * W2))
        dscores = np.exp(log_probs)
        dscores[np.arange(N), y] -= 1
        dscores /= N
        dh = dscores @ W2.T
        dh[h <= 0] = 0
        grads = {"W1": X.T @ dh + self.reg * W1, "b1": dh.sum(axis=0),
                 "W2": h.T @ dscores + self.reg * W2, "b2": dscores.sum(axis=0)}
        return loss, grads


# ---------------------------------------------------------------- CS231n's loop, as a reference
def cs231n_sgd(w, dw, config):
    w -= config["learning_rate"] * dw
    return w, config


def cs231n_sgd_momentum(w, dw, config):
    config.setdefault("momentum", 0.9)
    v = config.get("velocity", np.zeros_like(w))
    v = config["momentum"] * v - config["learning_rate"] * dw
    config["velocity"] = v
    return w + v, config


def cs231n_accuracy(model, X, y, num_samples, batch_size=100):
    N = X.shape[0]
    if num_samples is not None and N > num_samples:
        mask = np.random.choice(N, num_samples)
        N, X, y = num_samples, X[mask], y[mask]
    preds = [np.argmax(model.loss(X[i:i + batch_size]), axis=1) for i in range(0, N, batch_size)]
    return np.mean(np.hstack(preds) == y)


def cs231n_train(model, data, update, optim_config, lr_decay, batch_size, num_epochs, num_train_samples):
    """CS231n's Solver.train, written out: the order of its np.random draws and updates."""
    configs = {p: dict(optim_config) for p in model.params}
    history = {"loss": [], "train": [], "val": []}
    best_val, best_params = 0, {}
    num_train = data["X_train"].shape[0]
    ipe = max(num_train // batch_size, 1)
    n = num_epochs * ipe
    for t in range(n):
        mask = np.random.choice(num_train, batch_size)
        loss, grads = model.loss(data["X_train"][mask], data["y_train"][mask])
        history["loss"].append(loss)
        for p, w in model.params.items():
            model.params[p], configs[p] = update(w, grads[p], configs[p])
        epoch_end = (t + 1) % ipe == 0
        if epoch_end:
            for c in configs.values():
                c["learning_rate"] *= lr_decay
        if t == 0 or t == n - 1 or epoch_end:
            history["train"].append(cs231n_accuracy(model, data["X_train"], data["y_train"], num_train_samples))
            history["val"].append(val := cs231n_accuracy(model, data["X_val"], data["y_val"], None))
            if val > best_val:
                best_val, best_params = val, {k: v.copy() for k, v in model.params.items()}
    model.params = best_params
    return history


@pytest.mark.parametrize("rule,reference", [("sgd", cs231n_sgd), ("sgd_momentum", cs231n_sgd_momentum)])
def test_without_a_seed_the_solver_is_cs231ns_run_bit_for_bit(data, rule, reference):
    kw = dict(optim_config={"learning_rate": 0.05}, lr_decay=0.9, batch_size=100, num_epochs=3,
              num_train_samples=1000)
    np.random.seed(231)
    ref_model = TwoLayerNet(input_dim=64, hidden_dim=50, weight_scale=1e-1)
    ref = cs231n_train(ref_model, data, reference, **kw)

    np.random.seed(231)
    model = TwoLayerNet(input_dim=64, hidden_dim=50, weight_scale=1e-1)
    solver = Solver(model, data, update_rule=rule, verbose=False, **kw)
    solver.train()
    assert solver.loss_history == [float(v) for v in ref["loss"]]
    assert solver.train_acc_history == ref["train"] and solver.val_acc_history == ref["val"]
    assert set(model.params) == set(ref_model.params)
    for k in model.params:
        assert np.array_equal(model.params[k], ref_model.params[k]), k


def test_a_users_two_layer_net_trains_under_the_solver(data):
    # The notebook's cell: "Use a Solver instance to train a TwoLayerNet" (CIFAR: >= 50% val acc).
    np.random.seed(231)
    model = TwoLayerNet(input_dim=64, hidden_dim=100, weight_scale=1e-1, reg=1e-3)
    solver = Solver(model, data, update_rule="sgd", optim_config={"learning_rate": 1e-1}, lr_decay=0.95,
                    num_epochs=10, batch_size=100, print_every=100, verbose=False)
    solver.train()
    assert solver.best_val_acc >= 0.9
    # After training the model holds the best params, under the same keys (CS231n swaps them in).
    assert set(model.params) == {"W1", "b1", "W2", "b2"}
    for k, v in model.params.items():
        assert np.array_equal(v, solver.best_params[k])
    assert solver.check_accuracy(data["X_val"], data["y_val"]) == solver.best_val_acc


@pytest.mark.parametrize("hidden_dims,weight_scale,learning_rate", [
    ([100, 100], 2e-1, 1e-1),            # "a three-layer network with 100 units in each hidden layer"
    ([100, 100, 100, 100], 2e-1, 5e-2),  # "a five-layer network with 100 units on each layer"
], ids=["three-layer", "five-layer"])
def test_overfit_fifty_examples_within_twenty_epochs(data, hidden_dims, weight_scale, learning_rate):
    np.random.seed(231)
    model = FullyConnectedNet(hidden_dims, input_dim=64, num_classes=10, weight_scale=weight_scale,
                              dtype=np.float64, seed=231)
    solver = Solver(model, small(data), print_every=10, num_epochs=20, batch_size=25, update_rule="sgd",
                    optim_config={"learning_rate": learning_rate}, verbose=False)
    solver.train()
    assert 1.0 in solver.train_acc_history, solver.train_acc_history
    assert solver.loss_history[-1] < 0.1 * solver.loss_history[0]


def test_sgd_momentum_converges_faster_than_sgd(data):
    # The update-rules cell: a six-layer net, 5 epochs, batch 100, learning rate 1e-2 for both rules.
    runs = {}
    for update_rule in ["sgd", "sgd_momentum"]:
        np.random.seed(231)
        model = FullyConnectedNet([100, 100, 100, 100, 100], input_dim=64, num_classes=10, weight_scale=1e-1,
                                  dtype=np.float64, seed=231)
        solver = Solver(model, data, num_epochs=5, batch_size=100, update_rule=update_rule,
                        optim_config={"learning_rate": 1e-2}, verbose=False)
        solver.train()
        runs[update_rule] = solver
    sgd, momentum = runs["sgd"], runs["sgd_momentum"]
    last = slice(-sgd.iterations_per_epoch, None)
    assert np.mean(momentum.loss_history[last]) < np.mean(sgd.loss_history[last]) - 0.3
    assert momentum.train_acc_history[-1] > sgd.train_acc_history[-1] + 0.2


def test_checkpoint_name_writes_every_check_and_prints_like_cs231n(data, tmp_path, capsys):
    name = str(tmp_path / "overfit")
    np.random.seed(231)
    model = TwoLayerNet(input_dim=64, hidden_dim=20, weight_scale=1e-1)
    solver = Solver(model, small(data), num_epochs=3, batch_size=25, update_rule="sgd",
                    optim_config={"learning_rate": 1e-1}, checkpoint_name=name, print_every=10)
    solver.train()
    lines = capsys.readouterr().out.splitlines()
    assert lines[:3] == [f"(Iteration 1 / 6) loss: {solver.loss_history[0]:f}",
                         f'Saving checkpoint to "{name}_epoch_0.pkl"',
                         f"(Epoch 0 / 3) train acc: {solver.train_acc_history[0]:f}; "
                         f"val_acc: {solver.val_acc_history[0]:f}"]
    assert lines.count(f'Saving checkpoint to "{name}_epoch_3.pkl"') == 1
    assert sorted(os.listdir(tmp_path)) == [f"overfit_epoch_{e}.pkl" for e in range(4)]
    for epoch in range(4):
        ckpt = checkpoint.load(f"{name}_epoch_{epoch}.pkl")
        assert ckpt["epoch"] == epoch and ckpt["update_rule"] == "sgd" and ckpt["batch_size"] == 25
        assert ckpt["lr_decay"] == 1.0 and ckpt["optim_config"] == {"learning_rate": 1e-1}
        assert ckpt["num_train_samples"] == 1000 and ckpt["num_val_samples"] is None
        assert len(ckpt["train_acc_history"]) == len(ckpt["val_acc_history"]) == epoch + 1
        assert len(ckpt["loss_history"]) == max(1, 2 * epoch)
        assert set(ckpt["model"]["params"]) == {"W1", "b1", "W2", "b2"}
    # The epoch-0 file (after the first iteration) resumes that run exactly.
    np.random.seed(5)
    resumed = Solver.from_checkpoint(f"{name}_epoch_0.pkl", TwoLayerNet(input_dim=64, hidden_dim=20),
                                     small(data), verbose=False, checkpoint_name=None)
    resumed.train()
    assert resumed.loss_history == solver.loss_history
    for k in model.params:
        assert np.array_equal(resumed.model.params[k], model.params[k])


def test_adam_and_rmsprop_cell_trains(data):
    # "learning_rates = {'rmsprop': 1e-4, 'adam': 1e-3}" on the six-layer net: both learn, adam most.
    final = {}
    for update_rule, lr in [("adam", 1e-3), ("rmsprop", 1e-4)]:
        np.random.seed(231)
        model = FullyConnectedNet([100, 100, 100, 100, 100], input_dim=64, num_classes=10, weight_scale=1e-1,
                                  dtype=np.float64, seed=231)
        solver = Solver(model, data, num_epochs=5, batch_size=100, update_rule=update_rule,
                        optim_config={"learning_rate": lr}, verbose=False)
        solver.train()
        final[update_rule] = solver.train_acc_history[-1]
        assert solver.loss_history[-1] < solver.loss_history[0]
    assert final["adam"] > 0.9 and final["adam"] > final["rmsprop"]


def test_batchnorm_cell_converges_much_faster(data):
    # BatchNormalization.ipynb: five hidden layers of 100, 1000 examples, weight_scale 2e-2, adam 1e-3,
    # 10 epochs of batch 50; "batch normalization helps the network to converge much faster".
    runs = {}
    for normalization in ["batchnorm", None]:
        np.random.seed(231)
        model = FullyConnectedNet([100, 100, 100, 100, 100], input_dim=64, num_classes=10, weight_scale=2e-2,
                                  normalization=normalization, seed=231)
        solver = Solver(model, small(data, 1000), num_epochs=10, batch_size=50, update_rule="adam",
                        optim_config={"learning_rate": 1e-3}, verbose=False, print_every=20)
        solver.train()
        runs[normalization] = solver
    bn, base = runs["batchnorm"], runs[None]
    first_epochs = slice(0, 2 * bn.iterations_per_epoch)
    assert np.mean(bn.loss_history[first_epochs]) < 0.6 * np.mean(base.loss_history[first_epochs])
    assert bn.train_acc_history[1] > base.train_acc_history[1] + 0.3  # after epoch 1


def test_dropout_cell_regularizes(data):
    # Dropout.ipynb: one hidden layer of 500, 500 examples, keep 1 vs 0.25, adam 5e-4, 25 epochs.
    runs = {}
    for keep in [1, 0.25]:
        np.random.seed(231)
        model = FullyConnectedNet([500], input_dim=64, num_classes=10, dropout_keep_ratio=keep)
        solver = Solver(model, small(data, 500), num_epochs=25, batch_size=100, update_rule="adam",
                        optim_config={"learning_rate": 5e-4}, verbose=False, print_every=100)
        solver.train()
        runs[keep] = solver
    assert runs[0.25].train_acc_history[-1] <= runs[1].train_acc_history[-1]
    assert min(s.best_val_acc for s in runs.values()) >= 0.85
