"""Gradient clipping by global norm: torch.nn.utils.clip_grad_norm_ for NumPy arrays.

The total norm is one compiled read pass per array (fastopt's kernel ``norm_partial``: double
accumulation over fixed blocks combined in order, so the result is bitwise the same for any thread
count), then, only when clipping is needed, one scaling pass. Inside an optimizer step use the
option ``max_grad_norm=`` instead: the kernels then read the scaled gradient, and the gradients are
neither written nor read twice.
"""
import math

from .. import _backend
from .._validation import check_array
from ._declarations import real


def _as_list(grads):
    if hasattr(grads, "shape"):
        return [grads]
    if isinstance(grads, dict) or hasattr(grads, "values") and hasattr(grads, "keys"):
        return list(grads.values())
    try:
        return list(grads)
    except TypeError:
        raise TypeError(f"grads must be an array, a list of arrays or a dict of arrays, "
                        f"got {type(grads).__name__}") from None


def grad_norm(grads, norm_type=2.0):
    """The total norm of `grads` (validated arrays) as one vector; NaN when an element is NaN, as
    torch's (the inf-norm's maximum is taken so that a NaN wins: Python's max would drop it)."""
    k = _backend.kernels("optim")
    total = 0.0
    for g in grads:
        flat = g.reshape(-1)
        s, _ = k.norm_partial(x=flat, norm_type=norm_type, n_threads=_backend.threads_for(flat.size, k.GRAIN))
        if norm_type != math.inf:
            total += s
        elif s > total or s != s:
            total = s
    return total if norm_type == math.inf else total ** (1.0 / norm_type)


def clip_grad_norm_(grads, max_norm, norm_type=2.0, error_if_nonfinite=False):
    """Scale `grads` in place so that their global `norm_type`-norm is at most `max_norm`.

    grads: an array, a list/tuple of arrays or a dict of arrays (float32/float64, C-contiguous,
    writeable). As torch: clip_coef = max_norm / (total_norm + 1e-6), applied when < 1. Returns the
    total norm (a Python float) seen before clipping. error_if_nonfinite: raise ValueError (and
    change nothing) when the norm is inf or NaN.
    """
    arrays = _as_list(grads)
    for i, g in enumerate(arrays):
        check_array(f"grads[{i}]", g, writeable=True)
    max_norm = real("max_norm", max_norm, low=0.0)
    if not (isinstance(norm_type, float) and norm_type == math.inf):
        norm_type = real("norm_type", norm_type, low=0.0, low_open=True)   # a finite p > 0
    total = grad_norm(arrays, norm_type)
    if error_if_nonfinite and not math.isfinite(total):
        raise ValueError(f"the total norm of order {norm_type} of the gradients is {total}: "
                         f"not finite, so they cannot be clipped")
    coef = max_norm / (total + 1e-6)
    if coef < 1.0:
        k = _backend.kernels("optim")
        for g in arrays:
            flat = g.reshape(-1)
            k.scale_(x=flat, factor=coef, n_threads=_backend.threads_for(flat.size, k.GRAIN))
    return total
