"""Adagrad with learning-rate decay and weight decay: torch.optim.Adagrad's update."""

from .. import _backend
from ._base import Optimizer, boolean, nonneg


class Adagrad(Optimizer):
    """torch.optim.Adagrad over NumPy arrays, updated in place.

    step += 1; clr = lr / (1 + (step - 1) * lr_decay); g = -grad if maximize; g += weight_decay * p;
    sum += g * g; p -= clr * g / (sqrt(sum) + eps). State: {"step": int, "sum": array}, where sum
    starts at initial_accumulator_value.
    """

    _HYPER = (("lr", nonneg), ("lr_decay", nonneg), ("weight_decay", nonneg),
              ("initial_accumulator_value", nonneg), ("eps", nonneg), ("maximize", boolean))
    _STATE = (("sum", True),)

    def __init__(self, params, lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0,
                 eps=1e-10, *, maximize=False):
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value, eps=eps,
                                      maximize=maximize))

    def _initial_buffer(self, key, param, hyper):
        return self._zeros(key, param, fill=hyper["initial_accumulator_value"])

    def _uses(self, hyper):
        return (True,)

    def _kernel(self, k, p, grad, views, step, fresh, hyper):
        lr, lr_decay, weight_decay, _, eps, maximize = hyper
        k.adagrad_step(p, grad, views[0], lr / (1 + (step - 1) * lr_decay), weight_decay, eps,
                       maximize, _backend.threads_for(p.size, k.GRAIN))
