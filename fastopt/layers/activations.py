"""Activation layers, CS231n-compatible, declared once in the table ACTIVATIONS.

    out, cache = <name>_forward(x[, param])        relu, leaky_relu, elu, tanh, sigmoid
    dx = <name>_backward(dout, cache)

Each entry of ACTIVATIONS holds everything about one activation: its hyperparameter (name, default,
bounds), the formulas of its NumPy twin and of its derivative (fastopt.reference.activations), which
array the backward pass needs (`saves`: x or out), the weight initialization recommended for it
('he' for the ReLU family, 'xavier' for tanh/sigmoid; see fastopt.nn.init) and the names of its
compiled kernels in fastopt._activation_kernels. The layer functions below, fastopt diagnose init and
the model are all derived from it, so an activation is added by adding one entry (and its two
kernels and twins).

The kernels take flat arrays: ``kernels("activation").<forward_kernel>(x, param, out, n_threads)``
and ``.<backward_kernel>(dout, saved, param, dx, n_threads)``; out may be x and dx may be dout, so a
model with its own buffers runs both in place. x of any shape is accepted here; out is a new array of
x's dtype and shape. Inputs are read only (a non-contiguous x is made contiguous, never written).
"""
import inspect
from dataclasses import dataclass

import numpy as np

from .. import _backend
from .._validation import _describe, check_array, check_scalar
from ._operands import as_operand, compute_dtype, output

FAMILY = "activation"            # fastopt._activation_kernels / fastopt.reference.activations


@dataclass(frozen=True)
class Activation:
    name: str
    formula: str                 # forward, as the NumPy twin computes it
    derivative: str              # f', in terms of `saves`
    saves: str                   # "x" or "out": the array backward needs
    init: str                    # recommended weight_init of fastopt.nn.init ("he" or "xavier")
    param: str = None            # hyperparameter name (None: the activation has none)
    default: float = 0.0
    low: float = None            # bounds of the hyperparameter (check_scalar)
    flat: tuple = None           # (lo, hi): f' is ~0 where out <= lo or out >= hi (a dead ReLU, a
                                 # saturated tanh/sigmoid); None: the gradient never vanishes

    def check_param(self, param):
        """The hyperparameter value to hand the kernels: `default` for None, else checked (a model
        validates it once, at construction). Activations without one take None only (value 0.0)."""
        if self.param is None:
            if param is not None:
                raise TypeError(f"{self.name} takes no hyperparameter, got {param!r}")
            return 0.0
        return self.default if param is None else check_scalar(self.param, param, low=self.low)

    def flat_mask(self, out):
        """Where the unit passes (almost) no gradient back: out <= lo or out >= hi (see `flat`)."""
        if self.flat is None:
            return np.zeros(out.shape, dtype=bool)
        lo, hi = self.flat
        return (out <= lo) | (out >= hi)

    @property
    def forward_kernel(self):
        return f"{self.name}_forward"

    @property
    def backward_kernel(self):
        return f"{self.name}_backward"

    @property
    def forward(self):
        """The layer function <name>_forward(x[, param]) -> (out, cache)."""
        return globals()[self.forward_kernel]

    @property
    def backward(self):
        """The layer function <name>_backward(dout, cache) -> dx."""
        return globals()[self.backward_kernel]


ACTIVATIONS = {a.name: a for a in (
    Activation("relu", "max(x, 0)", "1 if x > 0 else 0", "x", "he", flat=(0.0, np.inf)),
    Activation("leaky_relu", "x if x > 0 else negative_slope * x", "1 if x > 0 else negative_slope",
               "x", "he", param="negative_slope", default=0.01, low=0.0),
    Activation("elu", "x if x > 0 else alpha * expm1(x)", "1 if out > 0 else out + alpha", "out", "he",
               param="alpha", default=1.0, low=0.0),
    Activation("tanh", "tanh(x)", "1 - out**2", "out", "xavier", flat=(-0.99, 0.99)),
    Activation("sigmoid", "1 / (1 + exp(-x))", "out * (1 - out)", "out", "xavier", flat=(0.01, 0.99)),
)}


def get(name):
    """The ACTIVATIONS entry for `name`; ValueError naming the choices otherwise."""
    spec = ACTIVATIONS.get(name) if isinstance(name, str) else None
    if spec is None:
        raise ValueError(f"activation must be one of {tuple(ACTIVATIONS)}, got {name!r}")
    return spec


def activation_forward(name, x, param=None):
    """out = f(x) for the activation `name`; param None means its default. Returns (out, cache)."""
    spec = get(name)
    value = spec.check_param(param)
    check_array("x", x, contiguous=False)
    x = np.asarray(x, order="C")      # read only: a copy of a non-contiguous x is harmless
    out = _run(spec.forward_kernel, x, value)
    return out, (name, value, x if spec.saves == "x" else out)


def _run(kernel, a, value, saved=None):
    """The activation kernel `kernel` on the C-contiguous array a (and saved): a new array like a."""
    flat = a.reshape(-1)
    res = output(flat.shape, flat.dtype)
    K = _backend.kernels(FAMILY)
    n_threads = _backend.threads_for(flat.shape[0], K.GRAIN)
    if saved is None:
        getattr(K, kernel)(flat, value, res, n_threads)
    else:
        getattr(K, kernel)(flat, np.ascontiguousarray(saved).reshape(-1), value, res, n_threads)
    return res.reshape(a.shape)


def activation_backward(name, dout, cache):
    """dx of activation `name` for upstream gradient dout, from the cache of its forward."""
    spec = get(name)
    expected = f"the cache returned by {spec.forward_kernel}"
    if not (isinstance(cache, tuple) and len(cache) == 3 and isinstance(cache[0], str) and cache[0] == name
            and isinstance(cache[2], np.ndarray)):
        raise TypeError(f"cache must be {expected}, got {_describe(cache)}")
    _, value, saved = cache
    check_array(f"cache ({expected}): its saved {spec.saves}", saved, contiguous=False)
    # the value forward stored: its checked hyperparameter (0.0 for an activation without one)
    if spec.param is None:
        if not (isinstance(value, float) and value == 0.0):
            raise ValueError(f"cache must be {expected}: {name} has no hyperparameter, got {value!r}")
    else:
        check_scalar(f"cache ({expected}): its {spec.param}", value, low=spec.low)
    check_array("dout", dout, contiguous=False, dtype=saved.dtype, shape=saved.shape)
    return _run(spec.backward_kernel, np.asarray(dout, order="C"), float(value), saved)


def relu_forward(x):
    """out = max(x, 0) elementwise (NaN stays NaN). Returns (out, cache) with cache = x, as CS231n's.

    x: any real dtype (converted as fastopt.layers.core.compute_dtype says; out has that dtype).
    The relu entry of ACTIVATIONS with CS231n's cache; its kernels are the table's.
    """
    x = as_operand(x, compute_dtype(("x", x)))
    return _run(ACTIVATIONS["relu"].forward_kernel, x, 0.0), x


def relu_backward(dout, cache):
    """dx = dout where x > 0, else 0 (the subgradient at x == 0 is taken as 0, as in CS231n; a select,
    so an inf/NaN in dout does not leak into units that were off). cache: the x of relu_forward."""
    if not isinstance(cache, np.ndarray):
        raise TypeError(f"cache must be the x returned by relu_forward (an array), got {_describe(cache)}")
    dt = compute_dtype(("dout", dout), ("cache (the x of relu_forward)", cache))
    if dout.shape != cache.shape:
        raise ValueError(f"dout must have shape {cache.shape}, got {dout.shape}")
    return _run(ACTIVATIONS["relu"].backward_kernel, as_operand(dout, dt), 0.0, as_operand(cache, dt))


def _make_layer_functions(spec):
    """<name>_forward(x[, <param>=default]) and <name>_backward(dout, cache) for one table entry."""
    params = [inspect.Parameter("x", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    if spec.param is not None:
        params.append(inspect.Parameter(spec.param, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                        default=spec.default))
    signature = inspect.Signature(params)

    def forward(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return activation_forward(spec.name, *bound.arguments.values())

    def backward(dout, cache):
        return activation_backward(spec.name, dout, cache)

    hyper = f" ({spec.param} >= {spec.low:g}, default {spec.default:g})" if spec.param else ""
    forward.__signature__ = signature
    forward.__name__ = forward.__qualname__ = spec.forward_kernel
    forward.__doc__ = (f"out = {spec.formula} elementwise{hyper}. Returns (out, cache); "
                       f"recommended weight init: {spec.init!r}.")
    backward.__name__ = backward.__qualname__ = spec.backward_kernel
    backward.__doc__ = f"dx = dout * f'  with f' = {spec.derivative}."
    forward.__module__ = backward.__module__ = __name__
    return forward, backward


__all__ = ["ACTIVATIONS", "Activation", "get", "activation_forward", "activation_backward", "LAYER_FUNCTIONS"]
# The layer functions: relu's are written out above (CS231n's cache, any real dtype: the relu
# fastopt.layers.core re-exports); every other entry's are made from the table.
for _spec in ACTIVATIONS.values():
    if _spec.name != "relu":
        for _fn in _make_layer_functions(_spec):
            globals()[_fn.__name__] = _fn
LAYER_FUNCTIONS = [n for a in ACTIVATIONS.values() for n in (a.forward_kernel, a.backward_kernel)]
__all__ += LAYER_FUNCTIONS
del _spec, _fn
