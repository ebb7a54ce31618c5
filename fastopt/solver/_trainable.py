"""What a Solver step trains and what it keeps fixed, in one place.

* the trained params: ``model.trainable_params`` when the model has it (frozen layers left out),
  else ``model.params`` (_options.trained_params); only their gradients reach the optimizer;
* the frozen batchnorm layers' running statistics, put back after each update (a train-mode forward
  pass moves them), so a frozen layer is bitwise unchanged;
* ``regularizers=`` (fastopt.regularizers.Regularizers): the elastic-net penalty added to each
  minibatch's loss and gradient (of the trained weights), the max-norm constraint applied to the
  trained weights after each update.
"""
import numpy as np

from . import _options

__all__ = ["Trainable", "frozen_statistics"]


def frozen_statistics(model):
    """{(hidden layer, key): array copy} of the frozen layers' batchnorm running statistics; None where
    a frozen layer has none yet (a model that never ran in train mode: see Trainable.missing)."""
    out = {}
    for i in sorted(getattr(model, "frozen", ())):
        if i < len(getattr(model, "bn_params", ())) and model.normalization == "batchnorm":
            for key in ("running_mean", "running_var"):
                v = model.bn_params[i].get(key)
                out[(i, key)] = v.copy() if isinstance(v, np.ndarray) else None
    return out


class Trainable:
    """The trained params of `model` and what keeps the rest fixed (module docstring)."""

    def __init__(self, model, regularizers=None):
        self.model = model
        self.params = _options.trained_params(model)
        # Gradients of params the optimizer does not update (frozen ones) are left out of its step.
        self.grad_keys = None if set(self.params) == set(model.params) else tuple(self.params)
        self.regularizers = regularizers
        self._constrains = regularizers is not None and regularizers.max_norm is not None
        self.snapshot()
        # None when an update needs nothing after it (the common case: nothing to call per step).
        self.after_update = self._after_update if self._frozen or self._constrains else None

    def snapshot(self):
        """Take the frozen layers' statistics as they are now (construction, a checkpoint's restore)."""
        self._frozen = frozen_statistics(self.model)
        # A frozen layer without statistics (a model that never ran; a checkpoint may still bring
        # them): kept fixed, CS231n's zero start would be its test-time statistics for good.
        self.missing = sorted({i for (i, _), v in self._frozen.items() if v is None})

    def require_statistics(self):
        """ValueError, before a step changes anything, while a frozen layer has no statistics."""
        if self.missing:
            i = self.missing[0]
            raise ValueError(f"layer {i} is frozen, but its batchnorm has no running statistics (the model "
                             f"never ran in train mode): train or load the model before freezing it, load a "
                             f"checkpoint that has them, or leave layer {i} trainable")

    def loss(self, base):
        """`base` (X, y) -> (loss, grads), with the elastic-net penalty of the trained weights when
        the regularizers have one."""
        regs = self.regularizers
        if regs is None or regs.elastic_net is None:
            return base
        params = self.params

        def loss(X, y):
            value, grads = base(X, y)
            return regs.add(params, value, grads), grads
        return loss

    def gradients(self, grads):
        """The gradients the optimizer steps from: the trained params' only."""
        keys = self.grad_keys
        return grads if keys is None else {k: grads[k] for k in keys}

    def _after_update(self):
        """Put the frozen statistics back, then apply the max-norm constraint."""
        bn = self.model.bn_params if self._frozen else None
        for (i, key), saved in self._frozen.items():
            np.copyto(bn[i][key], saved)
        if self._constrains:
            self.regularizers.constrain(self.params)
