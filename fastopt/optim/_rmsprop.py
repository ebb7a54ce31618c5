"""RMSprop, plain or centered, with momentum and weight decay: torch.optim.RMSprop's update."""
from .. import _backend
from ._base import Optimizer, boolean, nonneg, unit_closed, unit_open


class RMSprop(Optimizer):
    """torch.optim.RMSprop over NumPy arrays, updated in place.

    g = -grad if maximize; g += weight_decay * p; square_avg = alpha * square_avg + (1 - alpha) * g*g;
    centered: grad_avg = lerp(grad_avg, g, 1 - alpha), avg = sqrt(square_avg - grad_avg**2) + eps,
    else avg = sqrt(square_avg) + eps; momentum > 0: buf = momentum * buf + g / avg, p -= lr * buf;
    else p -= lr * g / avg. State: {"step", "square_avg", "momentum_buffer", "grad_avg"}; the last
    two are size-0 arrays until momentum > 0 / centered first need them (then zeros, as in torch).
    """

    _HYPER = (("lr", nonneg), ("alpha", unit_closed), ("eps", nonneg), ("weight_decay", nonneg),
              ("momentum", unit_open), ("centered", boolean), ("maximize", boolean))
    _STATE = (("square_avg", True), ("grad_avg", False), ("momentum_buffer", False))

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False,
                 *, maximize=False):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                                      momentum=momentum, centered=centered, maximize=maximize))

    def _wants(self, key, hyper):
        return hyper["centered"] if key == "grad_avg" else hyper["momentum"] > 0

    def _uses(self, hyper):
        return (True, hyper[5], hyper[4] > 0)

    def _kernel(self, k, p, grad, views, step, fresh, hyper):
        lr, alpha, eps, weight_decay, momentum, centered, maximize = hyper
        square_avg, grad_avg, buf = views
        k.rmsprop_step(p, grad, square_avg, grad_avg, buf, lr, alpha, eps, weight_decay, momentum, centered,
                       maximize, _backend.threads_for(p.size, k.GRAIN))
