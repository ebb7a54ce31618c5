"""Affine layers and the affine-ReLU sandwich, CS231n-compatible: each forward returns (out, cache),
each backward takes (dout, cache). Plain NumPy on purpose: the affine work is a matrix product
(BLAS). relu_forward/relu_backward are fastopt.layers.activations' (the activation kernels), re-exported
here where CS231n keeps them. Inputs (caches included) are checked first; outputs are new arrays.

Operand dtypes (every layer function of fastopt.layers follows this rule, see ``compute_dtype`` in
fastopt.layers._operands, re-exported here):
the arrays a layer only READS (x, w, b, gamma, beta, dout, scores) may be of any real dtype,
integers included; they are converted as NumPy's promotion would convert them, and the result has
that dtype (float32 stays float32; float32 with float64 gives float64; integers alone give
float64; float16 is computed in float32). Arrays a layer updates IN PLACE (batchnorm's running
statistics) keep their own dtype: the update is computed in the call's dtype and stored cast.
"""
import numpy as np

from .._validation import _describe
from ._operands import as_operand, compute_dtype
from .activations import relu_backward, relu_forward

__all__ = ["affine_forward", "affine_backward", "relu_forward", "relu_backward",
           "affine_relu_forward", "affine_relu_backward"]


def affine_forward(x, w, b):
    """out = x.reshape(N, D) @ w + b for x of shape (N, d1, ..., dk), D = d1 * ... * dk.

    w: (D, M), b: (M,). Any real dtypes (module docstring). Returns (out (N, M), cache).
    """
    dt = compute_dtype(("x", x), ("w", w), ("b", b))
    if x.ndim < 2:
        raise ValueError(f"x must have shape (N, d1, ..., dk) with at least 2 dimensions, got {x.shape}")
    d = int(np.prod(x.shape[1:]))
    if w.ndim != 2 or w.shape[0] != d:
        raise ValueError(f"w must have shape (D, M) with D = {d} (the features of x {x.shape}), got {w.shape}")
    if b.shape != (w.shape[1],):
        raise ValueError(f"b must have shape ({w.shape[1]},) (the columns of w), got {b.shape}")
    x, w, b = (np.asarray(a, dtype=dt) for a in (x, w, b))
    out = x.reshape(x.shape[0], d) @ w
    out += b
    return out, (x, w, b)


_AFFINE_CACHE = "the (x, w, b) tuple returned by affine_forward"


def _affine_cache(cache):
    """(x, w, b) of an affine_forward cache, each checked: a forged cache is refused, not trusted."""
    if not (isinstance(cache, tuple) and len(cache) == 3):
        raise TypeError(f"cache must be {_AFFINE_CACHE}, got {_describe(cache)}")
    x, w, b = cache
    compute_dtype(*((f"cache {n} (of affine_forward)", a) for n, a in zip("xwb", cache)))
    if x.ndim < 2 or w.ndim != 2 or w.shape[0] != int(np.prod(x.shape[1:])) or b.shape != (w.shape[1],):
        raise ValueError(f"cache must be {_AFFINE_CACHE}: got shapes x {x.shape}, w {w.shape}, b {b.shape}")
    return x, w, b


def affine_backward(dout, cache):
    """Returns (dx (x's shape), dw (D, M), db (M,)) for dout of shape (N, M)."""
    x, w, b = _affine_cache(cache)
    dt = compute_dtype(("dout", dout), ("x", x), ("w", w))
    if dout.shape != (x.shape[0], w.shape[1]):
        raise ValueError(f"dout must have shape {(x.shape[0], w.shape[1])}, got {dout.shape}")
    dout, x, w = (np.asarray(a, dtype=dt) for a in (dout, x, w))
    x2 = x.reshape(x.shape[0], w.shape[0])
    dx = (dout @ w.T).reshape(x.shape)
    dw = x2.T @ dout
    db = dout.sum(axis=0)
    return dx, dw, db


def affine_relu_forward(x, w, b):
    """relu(affine(x, w, b)). Returns (out, cache). (Also in fastopt.layer_utils, as in CS231n.)"""
    a, fc_cache = affine_forward(x, w, b)
    out, relu_cache = relu_forward(a)
    return out, (fc_cache, relu_cache)


def affine_relu_backward(dout, cache):
    """Returns (dx, dw, db) of the affine-relu sandwich."""
    if not (isinstance(cache, tuple) and len(cache) == 2):
        raise TypeError(f"cache must be the (affine cache, relu cache) tuple returned by "
                        f"affine_relu_forward, got {_describe(cache)}")
    fc_cache, relu_cache = cache
    _affine_cache(fc_cache)     # both checked before either backward runs
    return affine_backward(relu_backward(dout, relu_cache), fc_cache)
