"""What a Solver step trains and what it keeps fixed, in one place.

* the trained params: ``model.trainable_params`` when the model has it (frozen layers left out),
  else ``model.params`` (_options.trained_params); only their gradients reach the optimizer. A frozen
  layer's batchnorm statistics need nothing here: the model runs it in inference mode and never
  updates them (fastopt.nn.frozen_norm);
* ``regularizers=`` (fastopt.regularizers.Regularizers): the elastic-net penalty added to each
  minibatch's loss and gradient (of the trained weights), the max-norm constraint applied to the
  trained weights after each update.
"""
from . import _options

__all__ = ["Trainable"]


class Trainable:
    """The trained params of `model` and the regularizers around their step (module docstring)."""

    def __init__(self, model, regularizers=None):
        self.model = model
        self.params = _options.trained_params(model)
        # Gradients of params the optimizer does not update (frozen ones) are left out of its step.
        self.grad_keys = None if set(self.params) == set(model.params) else tuple(self.params)
        self.regularizers = regularizers
        # None when an update needs nothing after it (the common case: nothing to call per step).
        self.after_update = (self._constrain if regularizers is not None and regularizers.max_norm is not None
                             else None)

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

    def _constrain(self):
        """The max-norm constraint on the trained weights, after an update."""
        self.regularizers.constrain(self.params)
