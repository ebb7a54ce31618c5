"""SGD with momentum, dampening, Nesterov and weight decay: torch.optim.SGD's update."""
from .. import _backend
from ._base import Optimizer, boolean, nonneg, unit_closed, unit_open


class SGD(Optimizer):
    """torch.optim.SGD over NumPy arrays, updated in place.

    g = -grad if maximize; g += weight_decay * p; with momentum: buf = g on the first momentum
    step, else buf = momentum * buf + (1 - dampening) * g; g = g + momentum * buf (nesterov) or buf;
    p -= lr * g. State: {"momentum_buffer": array}, a size-0 array until momentum is first used.
    """

    _HYPER = (("lr", nonneg), ("momentum", unit_open), ("dampening", unit_closed),
              ("weight_decay", nonneg), ("nesterov", boolean), ("maximize", boolean))
    _STATE = (("momentum_buffer", False),)
    _HAS_STEP = False

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False, *,
                 maximize=False):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov, maximize=maximize))

    def _check_hyper(self, label, values):
        _, momentum, dampening, _, nesterov, _ = values
        if nesterov and (momentum <= 0 or dampening != 0):
            where = f"{label}: " if label else ""
            raise ValueError(f"{where}nesterov momentum requires momentum > 0 and dampening == 0, "
                             f"got momentum={momentum}, dampening={dampening}")

    def _uses(self, hyper):
        return (hyper[1] != 0,)

    def _kernel(self, k, p, grad, views, step, fresh, hyper):
        lr, momentum, dampening, weight_decay, nesterov, maximize = hyper
        # fresh: torch's "buffer is None", the first momentum step sets buf = g
        k.sgd_step(p, grad, views[0], lr, weight_decay, momentum, dampening, nesterov, maximize, fresh,
                   _backend.threads_for(p.size, k.GRAIN))
