"""Adam and AdamW (with amsgrad): torch.optim.Adam / AdamW's update."""
import math

from .. import _backend
from ._base import Optimizer, betas, boolean, nonneg


class Adam(Optimizer):
    """torch.optim.Adam over NumPy arrays, updated in place.

    step += 1; g = -grad if maximize; weight decay: g += wd * p (Adam) or p *= 1 - lr * wd (AdamW);
    m = lerp(m, g, 1 - beta1); v = beta2 * v + (1 - beta2) * g*g; amsgrad: vmax = max(vmax, v), use
    vmax for v; p -= (lr / (1 - beta1**step)) * m / (sqrt(v) / sqrt(1 - beta2**step) + eps).
    The bias corrections are computed per step in double precision here and handed to the kernel.
    State: {"step": int, "exp_avg", "exp_avg_sq", "max_exp_avg_sq"}; the last is a size-0 array
    until amsgrad first needs it (then zeros).
    """

    _HYPER = (("lr", nonneg), ("betas", betas), ("eps", nonneg), ("weight_decay", nonneg),
              ("amsgrad", boolean), ("maximize", boolean))
    _STATE = (("exp_avg", True), ("exp_avg_sq", True), ("max_exp_avg_sq", False))
    _DECOUPLED = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False, *,
                 maximize=False):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad, maximize=maximize))

    def _wants(self, key, hyper):
        return hyper["amsgrad"]

    def _uses(self, hyper):
        return (True, True, hyper[4])

    def _kernel(self, k, p, grad, views, step, fresh, hyper):
        lr, (beta1, beta2), eps, weight_decay, amsgrad, maximize = hyper
        exp_avg, exp_avg_sq, max_exp_avg_sq = views
        k.adam_step(p, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, lr, beta1, beta2, eps, weight_decay,
                    lr / (1 - beta1 ** step), math.sqrt(1 - beta2 ** step), self._DECOUPLED, amsgrad,
                    maximize, _backend.threads_for(p.size, k.GRAIN))


class AdamW(Adam):
    """torch.optim.AdamW: Adam with decoupled weight decay (p *= 1 - lr * weight_decay first)."""

    _DECOUPLED = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, *,
                 maximize=False):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                         maximize=maximize)
