"""Transfer learning (CS231n lecture 7): train a model with frozen layers, per-layer learning rates and
extra regularizers through fastopt's Solver.

    model = FullyConnectedNet.load("digits04.model").replace_head(5, rng=0).freeze([0, 1])
    solver = Solver(model, data, update_rule=Adam, optim_config={"learning_rate": 1e-3},
                    layer_lr={2: 1e-2}, regularizers=Regularizers(max_norm=3.0))
    solver.train()                       # layers 0 and 1 bitwise unchanged

``Solver`` here is fastopt.solver.Solver with three keywords more (everything else is the same):

* the optimizer is built over ``model.trainable_params`` (models without it: ``model.params``); each
  step passes it only those gradients, and puts back the running statistics of frozen batchnorm
  layers (a train-mode forward pass updates them), so a frozen layer is bitwise unchanged;
* ``layer_lr={layer: lr}``: per-layer learning rates (``model.param_groups``; an optimizer class only,
  the other layers at optim_config's learning_rate);
* ``regularizers=fastopt.regularizers.Regularizers(...)``: the elastic-net penalty added to each
  minibatch's loss and gradient, the max-norm constraint applied after each update.

Freeze the layers before building the Solver (the optimizer is built over the layers trainable then).
Until the executions skip frozen layers (their gradients are computed and dropped here), freezing
saves no time; it only keeps the layers fixed.
"""
import numpy as np

from ._validation import _describe, check_scalar
from .regularizers import Regularizers
from .solver import Solver as _BaseSolver
from .solver import _registry

__all__ = ["Solver", "TrainableStep", "frozen_statistics"]


def frozen_statistics(model):
    """{(hidden layer, key): array copy} of the frozen layers' batchnorm running statistics; absent ones
    (a model that never ran) are the zeros its first call creates (CS231n's start)."""
    out = {}
    for i in sorted(getattr(model, "frozen", ())):
        if i < len(getattr(model, "bn_params", ())) and model.normalization == "batchnorm":
            for key in ("running_mean", "running_var"):
                v = model.bn_params[i].get(key)
                out[(i, key)] = v.copy() if isinstance(v, np.ndarray) else np.zeros(model.hidden_dims[i], model.dtype)
    return out


class TrainableStep:
    """An optimizer over a model's trainable params behind the optimizer interface the Solver uses:
    ``step(grads)`` steps the trainable params from their gradients (others in grads are dropped),
    restores frozen batchnorm statistics, then applies the regularizers' constraint. Every other
    attribute (param_groups, state_dict, averaged, ema, ...) is the wrapped optimizer's."""

    def __init__(self, optimizer, model, names, regularizers=None):
        self.inner = optimizer
        self.model = model
        self.names = list(names)
        self.regularizers = regularizers
        self._frozen_stats = frozen_statistics(model)

    def __getattr__(self, name):
        if name == "inner":             # not yet set (copy/pickle): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)

    def step(self, grads):
        missing = [k for k in self.names if k not in grads]
        if missing:
            raise ValueError(f"grads lack the trainable params {missing}")
        self.inner.step({k: grads[k] for k in self.names})
        for (i, key), saved in self._frozen_stats.items():
            np.copyto(self.model.bn_params[i][key], saved)
        if self.regularizers is not None:
            self.regularizers.constrain({k: self.model.params[k] for k in self.names})


class Solver(_BaseSolver):
    """fastopt.solver.Solver that trains model.trainable_params, with layer_lr= and regularizers=
    (module docstring)."""

    def __init__(self, model, data, *, layer_lr=None, regularizers=None, **kwargs):
        if regularizers is not None and not isinstance(regularizers, Regularizers):
            raise TypeError(f"regularizers must be a fastopt.regularizers.Regularizers, got {_describe(regularizers)}")
        if layer_lr is not None:
            if not isinstance(layer_lr, dict) or not hasattr(model, "param_groups"):
                raise TypeError(f"layer_lr must be a dict layer -> lr for a model with param_groups, "
                                f"got {_describe(layer_lr)}")
            layer_lr = {check_scalar("layer_lr key", k, low=0, integer=True): v for k, v in layer_lr.items()}
        self.layer_lr = layer_lr
        self.regularizers = regularizers
        super().__init__(model, data, **kwargs)
        if regularizers is not None and regularizers.elastic_net is not None:
            base, names = self._loss, list(self.optimizer.names)

            def loss(X, y):
                value, grads = base(X, y)
                return regularizers.add({k: model.params[k] for k in names}, value, grads), grads
            self._loss = loss

    def _make_optimizer(self):
        """Called by the base Solver (construction, checkpoint restore): the optimizer over the
        trainable params, wrapped in TrainableStep."""
        model = self.model
        params = getattr(model, "trainable_params", model.params)
        track = self.monitor is not None and _registry.tracks_update_ratio(self._rule)
        if self.layer_lr:
            if not isinstance(self._rule, type):
                raise ValueError(f"layer_lr needs an optimizer class (update_rule=fastopt.optim.Adam, ...), "
                                 f"got the CS231n rule {_registry.rule_name(self._rule)!r}")
            kwargs = _registry.class_kwargs(self.optim_config, self._rule)
            inner = self._rule(model.param_groups(lr=self.layer_lr), **kwargs, track_update_ratio=track)
        else:
            inner = _registry.make_optimizer(self._rule, params, self.optim_config, track_update_ratio=track)
        return TrainableStep(inner, model, params, self.regularizers)
