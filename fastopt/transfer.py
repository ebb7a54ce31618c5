"""Transfer learning (CS231n lecture 7): train a model with frozen layers, per-layer learning rates and
extra regularizers through fastopt's Solver.

    model = FullyConnectedNet.load("digits04.model").replace_head(5, rng=0).freeze([0, 1])
    solver = Solver(model, data, update_rule=Adam, optim_config={"learning_rate": 1e-3},
                    layer_lr={2: 1e-2}, regularizers=Regularizers(max_norm=3.0))
    solver.train()                       # layers 0 and 1 bitwise unchanged

``Solver`` here IS fastopt.solver.Solver (kept importable from this module for existing code); what
it does for transfer learning lives in fastopt/solver/_trainable.py:

* the optimizer is built over ``model.trainable_params`` (models without it: ``model.params``); each
  step passes it only those gradients;
* ``layer_lr={layer: lr}``: per-layer learning rates (``model.param_groups``; an optimizer class only,
  the other layers at optim_config's learning_rate);
* ``regularizers=fastopt.regularizers.Regularizers(...)``: the elastic-net penalty added to each
  minibatch's loss and gradient, the max-norm constraint applied after each update.

Frozen batchnorm layers run in inference mode (fastopt.nn.frozen_norm; a behaviour change from
earlier versions): in training calls too they normalize with their running statistics, never update them, and
pass gradients to the layers below through y = gamma * (x - mean) / sqrt(var + eps) + beta, so the
layers above train on the statistics they are tested with (Keras's ``trainable=False``,
torchvision's FrozenBatchNorm2d). Before, they normalized each minibatch with its own statistics and
the Solver put the running statistics back after each update. A frozen layer that has no running
statistics yet gets mean 0 and variance 1. Layernorm has no running statistics: unaffected.

Freeze the layers before building the Solver (the optimizer is built over the layers trainable then).
"""
import warnings

import numpy as np

from .solver import Solver

__all__ = ["Solver", "frozen_statistics"]


def frozen_statistics(model):
    """Deprecated (the Solver no longer puts frozen statistics back: nothing moves them); read
    ``model.bn_params[i]`` instead. {(hidden layer, key): array copy} of the frozen layers' batchnorm
    running statistics, None where a frozen layer has none yet."""
    warnings.warn("fastopt.transfer.frozen_statistics is deprecated: frozen batchnorm layers run in inference "
                  "mode and their statistics never move; read model.bn_params[i] instead",
                  DeprecationWarning, stacklevel=2)
    out = {}
    for i in sorted(getattr(model, "frozen", ())):
        if i < len(getattr(model, "bn_params", ())) and model.normalization == "batchnorm":
            for key in ("running_mean", "running_var"):
                v = model.bn_params[i].get(key)
                out[(i, key)] = v.copy() if isinstance(v, np.ndarray) else None
    return out
