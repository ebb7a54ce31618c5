"""CS231n-style update rules: ``update(w, dw, config=None) -> (next_w, config)``.

Same keys and defaults as CS231n's ``optim.py``; they run on the same kernels as the classes.
Unlike CS231n, ``w`` is updated in place and returned (``next_w is w``), and the state arrays in
``config`` (velocity, cache, m, v) are updated in place too. Absent state arrays are created with
w's dtype and shape; present ones must match w (dtype, shape, C-contiguous, writeable). A call
that raises has changed neither ``w`` nor ``config``.
"""
import math

import numpy as np

from .. import _backend
from .._validation import check_array, check_distinct, check_like, check_scalar
from ._base import empty_like_dtype


def _prepare(w, dw, config, scalars, arrays):
    """Validate w, dw and config; return (config, {key: checked scalar}, {state key to create: None}).

    `scalars` is ((key, default, checker), ...); `arrays` the names of state arrays shaped like w.
    Nothing is written to config here; the caller commits with _commit after validation.
    """
    if config is None:
        config = {}
    elif not isinstance(config, dict):
        raise TypeError(f"config must be a dict or None, got {type(config).__name__}")
    check_array("w", w, writeable=True)
    check_like("dw", dw, "w", w)
    values = {key: check(f"config[{key!r}]", config.get(key, default)) for key, default, check in scalars}
    new = {}
    for key in arrays:
        if key in config:
            check_like(f"config[{key!r}]", config[key], "w", w, writeable=True)
        else:
            new[key] = None
    named = [("w", w), ("dw", dw)] + [(f"config[{k!r}]", config[k]) for k in arrays if k not in new]
    check_distinct(named)
    return config, values, new


def _commit(w, config, values, new, arrays):
    for key, value in values.items():
        config[key] = value
    for key in new:
        config[key] = np.zeros_like(w)
    return [config[key].reshape(-1) for key in arrays]


def _lr(name, value):
    return check_scalar(name, value, low=0.0)


def _rate(name, value):
    return check_scalar(name, value, low=0.0, high=1.0, high_open=True)


def _steps(name, value):
    return check_scalar(name, value, low=0, integer=True)


def _threads(k, w):
    return _backend.threads_for(w.size, k.GRAIN)


def sgd(w, dw, config=None):
    """Vanilla SGD: w -= learning_rate * dw. config: learning_rate (1e-2)."""
    config, v, new = _prepare(w, dw, config, (("learning_rate", 1e-2, _lr),), ())
    _commit(w, config, v, new, ())
    k = _backend.kernels("optim")
    k.sgd_step(w.reshape(-1), dw.reshape(-1), empty_like_dtype(w.dtype), v["learning_rate"], 0.0, 0.0, 0.0,
               False, False, False, _threads(k, w))
    return w, config


def _velocity(w, dw, config, nesterov):
    scalars = (("learning_rate", 1e-2, _lr), ("momentum", 0.9, _rate))
    config, v, new = _prepare(w, dw, config, scalars, ("velocity",))
    (velocity,) = _commit(w, config, v, new, ("velocity",))
    k = _backend.kernels("optim")
    k.velocity_step(w.reshape(-1), dw.reshape(-1), velocity, v["learning_rate"], v["momentum"], nesterov,
                    _threads(k, w))
    return w, config


def sgd_momentum(w, dw, config=None):
    """SGD with momentum: v = momentum * v - learning_rate * dw; w += v.

    config: learning_rate (1e-2), momentum (0.9), velocity (zeros like w).
    """
    return _velocity(w, dw, config, False)


def nesterov_momentum(w, dw, config=None):
    """Nesterov momentum (CS231n lecture form): v_prev = v; v = momentum * v - learning_rate * dw;
    w += -momentum * v_prev + (1 + momentum) * v.

    config: learning_rate (1e-2), momentum (0.9), velocity (zeros like w).
    """
    return _velocity(w, dw, config, True)


def adagrad(w, dw, config=None):
    """Adagrad: cache += dw**2; w -= learning_rate * dw / (sqrt(cache) + epsilon).

    config: learning_rate (1e-2), epsilon (1e-8), cache (zeros like w).
    """
    scalars = (("learning_rate", 1e-2, _lr), ("epsilon", 1e-8, _lr))
    config, v, new = _prepare(w, dw, config, scalars, ("cache",))
    (cache,) = _commit(w, config, v, new, ("cache",))
    k = _backend.kernels("optim")
    k.adagrad_step(w.reshape(-1), dw.reshape(-1), cache, v["learning_rate"], 0.0, v["epsilon"], False,
                   _threads(k, w))
    return w, config


def rmsprop(w, dw, config=None):
    """RMSprop: cache = decay_rate * cache + (1 - decay_rate) * dw**2;
    w -= learning_rate * dw / (sqrt(cache) + epsilon).

    config: learning_rate (1e-2), decay_rate (0.99), epsilon (1e-8), cache (zeros like w).
    """
    scalars = (("learning_rate", 1e-2, _lr), ("decay_rate", 0.99, _rate), ("epsilon", 1e-8, _lr))
    config, v, new = _prepare(w, dw, config, scalars, ("cache",))
    (cache,) = _commit(w, config, v, new, ("cache",))
    k = _backend.kernels("optim")
    empty = empty_like_dtype(w.dtype)
    k.rmsprop_step(w.reshape(-1), dw.reshape(-1), cache, empty, empty, v["learning_rate"], v["decay_rate"],
                   v["epsilon"], 0.0, 0.0, False, False, _threads(k, w))
    return w, config


def adam(w, dw, config=None):
    """Adam with bias correction; t is incremented before use:
    t += 1; m = beta1 * m + (1 - beta1) * dw; v = beta2 * v + (1 - beta2) * dw**2;
    w -= learning_rate * (m / (1 - beta1**t)) / (sqrt(v / (1 - beta2**t)) + epsilon).

    config: learning_rate (1e-3), beta1 (0.9), beta2 (0.999), epsilon (1e-8), m, v (zeros like w), t (0).
    """
    scalars = (("learning_rate", 1e-3, _lr), ("beta1", 0.9, _rate), ("beta2", 0.999, _rate),
               ("epsilon", 1e-8, _lr), ("t", 0, _steps))
    config, v, new = _prepare(w, dw, config, scalars, ("m", "v"))
    t = v["t"] + 1
    v["t"] = t
    m, s = _commit(w, config, v, new, ("m", "v"))
    lr, beta1, beta2 = v["learning_rate"], v["beta1"], v["beta2"]
    k = _backend.kernels("optim")
    k.adam_step(w.reshape(-1), dw.reshape(-1), m, s, empty_like_dtype(w.dtype), lr, beta1, beta2, v["epsilon"],
                0.0, lr / (1 - beta1 ** t), math.sqrt(1 - beta2 ** t), False, False, False, _threads(k, w))
    return w, config


RULES = {
    "sgd": sgd,
    "sgd_momentum": sgd_momentum,
    "nesterov_momentum": nesterov_momentum,
    "adagrad": adagrad,
    "rmsprop": rmsprop,
    "adam": adam,
}


def get_rule(rule):
    """The update function for `rule`: a name in RULES (e.g. "adam"), or a callable returned as is."""
    if callable(rule):
        return rule
    if not isinstance(rule, str):
        raise TypeError(f"update rule must be a name (str) or a callable, got {type(rule).__name__}")
    try:
        return RULES[rule]
    except KeyError:
        raise ValueError(f"unknown update rule {rule!r}; expected one of {sorted(RULES)}") from None
