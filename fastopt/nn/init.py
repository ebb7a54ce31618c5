"""Weight initialisation for the NumPy MLP, from a caller-supplied source of normals: a
np.random.Generator, or the np.random module itself (NumPy's global state, as CS231n's np.random.randn).

Every scheme draws standard normals in float64 and scales them, then casts to the model's dtype: the
same seed gives the same weights (up to rounding) in float32 and float64.

- ``None`` (small random):  W ~ weight_scale * N(0, 1)                  (CS231n default)
- ``"xavier"``:             W ~ N(0, 1 / fan_in)      (the "calibrate by 1/sqrt(n)" form of the CS231n
                                                       notes, also called LeCun normal)
- ``"glorot"``:             W ~ N(0, 2 / (fan_in + fan_out))   (Glorot & Bengio 2010, normal form)
- ``"he"``:                 W ~ N(0, 2 / fan_in)      (He et al. 2015, for ReLU layers)

FullyConnectedNet also takes ``"auto"``: its activation's recommended scheme (the activation table's
``init``: He for the ReLU family, Xavier for tanh/sigmoid).
"""
import math

import numpy as np

WEIGHT_INITS = (None, "xavier", "glorot", "he")


def weight_std(weight_init, fan_in, fan_out, weight_scale):
    """The standard deviation of the normal that `weight_init` draws a (fan_in, fan_out) matrix from."""
    if weight_init is None:
        return float(weight_scale)
    if weight_init == "xavier":
        return math.sqrt(1.0 / fan_in)
    if weight_init == "glorot":
        return math.sqrt(2.0 / (fan_in + fan_out))
    if weight_init == "he":
        return math.sqrt(2.0 / fan_in)
    raise ValueError(f"weight_init must be one of {WEIGHT_INITS}, got {weight_init!r}")


def init_weight(rng, fan_in, fan_out, *, weight_init=None, weight_scale=1e-2, dtype=np.float32):
    """A C-contiguous (fan_in, fan_out) weight matrix of `dtype` drawn from `rng` (np.random.Generator)."""
    std = weight_std(weight_init, fan_in, fan_out, weight_scale)
    w = rng.standard_normal((fan_in, fan_out)) * std
    return np.ascontiguousarray(w, dtype=dtype)
