"""Hooks of the Solver other parts of fastopt plug into: model.trainable_params (freezing) and comm=
(fastopt.distributed.for_solver), tested with stand-ins that have exactly the agreed interfaces."""
import os

import numpy as np
import pytest
from _nn_data import blob_data

from fastopt.nn import FullyConnectedNet
from fastopt.solver import Solver

DIM, CLASSES = 6, 3


def make_model(**kw):
    return FullyConnectedNet(**{**dict(hidden_dims=[16, 12], input_dim=DIM, num_classes=CLASSES, rng=11,
                                       normalization="batchnorm"), **kw})


def kwargs(**kw):
    return {**dict(update_rule="adam", optim_config={"learning_rate": 5e-3}, batch_size=20, num_epochs=2,
                   num_train_samples=50, num_val_samples=30, verbose=False, seed=5), **kw}


class Frozen(FullyConnectedNet):
    """The agreed freezing interface: model.trainable_params (an ordered dict of the params of the
    layers not frozen); `drop` leaves the frozen params' gradients out, as the executions will."""

    def __init__(self, trainable, drop, **kw):
        super().__init__(**{**dict(hidden_dims=[16, 12], input_dim=DIM, num_classes=CLASSES, rng=11,
                                   normalization="batchnorm"), **kw})
        self._names, self._drop = trainable, drop

    @property
    def trainable_params(self):
        return {k: self.params[k] for k in self._names}

    def loss(self, X, y=None, **kw):
        out = super().loss(X, y, **kw)
        if y is None or not self._drop:
            return out
        return out[0], {k: v for k, v in out[1].items() if k in self._names}


@pytest.mark.parametrize("drop", [False, True])
@pytest.mark.parametrize("rule", ["adam", "Adam"])
def test_the_optimizer_covers_the_trainable_params_only(drop, rule):
    names = ["W3", "b3"]
    model = Frozen(names, drop)
    before = {k: v.copy() for k, v in model.params.items()}
    solver = Solver(model, blob_data(), **kwargs(update_rule=rule, monitor=3))
    solver.train()
    for k, v in model.params.items():
        assert np.array_equal(v, before[k]) != (k in names), k
    if solver.optim_configs is not None:        # a CS231n rule: one config per updated param
        assert set(solver.optim_configs) == set(names)
    else:
        assert len(solver.optimizer.state) == 2
    assert set(solver.monitor_history[0]["update_ratio"]) == set(names) == set(solver.monitor_history[0]["grad_norm"])


def test_frozen_training_resumes_bitwise(tmp_path):
    data = blob_data()
    full = Solver(Frozen(["W2", "b2", "gamma2", "beta2", "W3", "b3"], True), data,
                  checkpoint_name=str(tmp_path / "run"), **kwargs())
    full.train()
    resumed = Solver.from_checkpoint(tmp_path / "run_epoch_1.pkl", Frozen(["W2", "b2", "gamma2", "beta2", "W3", "b3"], True,
                                                                          rng=3), data)
    resumed.train()
    assert resumed.loss_history == full.loss_history
    for k in full.model.params:
        assert np.array_equal(resumed.model.params[k], full.model.params[k])


def test_nothing_trainable_is_refused():
    with pytest.raises(ValueError, match="nothing to train"):
        Solver(Frozen([], True), blob_data(), **kwargs())


class FakeDistributed:
    """fastopt.distributed.for_solver's agreed interface: .loss, .broadcast(optimizer), .is_root."""

    def __init__(self, model, comm, is_root):
        self.model, self.comm, self.is_root = model, comm, is_root
        self.losses, self.broadcasts = 0, []

    def loss(self, X, y):
        self.losses += 1
        return self.model.loss(X, y)

    def broadcast(self, optimizer):
        self.broadcasts.append(optimizer)


@pytest.mark.parametrize("is_root", [True, False])
def test_comm_uses_the_distributed_loss_broadcast_and_root_checkpoints(monkeypatch, tmp_path, is_root):
    import fastopt.distributed as dist
    made = []

    def for_solver(model, comm, **kw):
        made.append(FakeDistributed(model, comm, is_root))
        return made[-1]

    monkeypatch.setattr(dist, "for_solver", for_solver, raising=False)
    comm = object()
    data = blob_data()
    solver = Solver(make_model(), data, comm=comm, checkpoint_name=str(tmp_path / "run"), **kwargs())
    solver.train()
    helper, = made
    assert helper.comm is comm and helper.losses == solver.iteration
    assert helper.broadcasts == [solver.optimizer]
    assert os.path.exists(tmp_path / "run_epoch_1.pkl") == is_root
    assert (solver.save_checkpoint(tmp_path / "x.pkl") is not None) == is_root
    # The same run without comm: the stand-in's loss is the model's, so the runs agree.
    plain = Solver(make_model(), data, **kwargs())
    plain.train()
    assert plain.loss_history == solver.loss_history
