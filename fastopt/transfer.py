"""Transfer learning (CS231n lecture 7): train a model with frozen layers, per-layer learning rates and
extra regularizers through fastopt's Solver.

    model = FullyConnectedNet.load("digits04.model").replace_head(5, rng=0).freeze([0, 1])
    solver = Solver(model, data, update_rule=Adam, optim_config={"learning_rate": 1e-3},
                    layer_lr={2: 1e-2}, regularizers=Regularizers(max_norm=3.0))
    solver.train()                       # layers 0 and 1 bitwise unchanged

``Solver`` here IS fastopt.solver.Solver (kept importable from this module for existing code); what
it does for transfer learning lives in fastopt/solver/_trainable.py:

* the optimizer is built over ``model.trainable_params`` (models without it: ``model.params``); each
  step passes it only those gradients, and puts back the running statistics of frozen batchnorm
  layers (a train-mode forward pass updates them), so a frozen layer is bitwise unchanged;
* ``layer_lr={layer: lr}``: per-layer learning rates (``model.param_groups``; an optimizer class only,
  the other layers at optim_config's learning_rate);
* ``regularizers=fastopt.regularizers.Regularizers(...)``: the elastic-net penalty added to each
  minibatch's loss and gradient, the max-norm constraint applied after each update.

Freeze the layers before building the Solver (the optimizer is built over the layers trainable then).
"""
from .solver import Solver
from .solver._trainable import frozen_statistics

__all__ = ["Solver", "frozen_statistics"]
