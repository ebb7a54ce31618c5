"""Affine and ReLU layers, CS231n-compatible: each forward returns (out, cache), each backward
takes (dout, cache). Plain NumPy on purpose: the affine work is a matrix product (BLAS) and ReLU is
one ufunc, so a kernel would win nothing. Inputs are checked first; outputs are new arrays.
"""
import numpy as np

from .._validation import check_array

__all__ = ["affine_forward", "affine_backward", "relu_forward", "relu_backward",
           "affine_relu_forward", "affine_relu_backward"]


def affine_forward(x, w, b):
    """out = x.reshape(N, D) @ w + b for x of shape (N, d1, ..., dk), D = d1 * ... * dk.

    w: (D, M), b: (M,), all of x's dtype (float32 or float64). Returns (out (N, M), cache).
    """
    check_array("x", x, contiguous=False)
    if x.ndim < 2:
        raise ValueError(f"x must have shape (N, d1, ..., dk) with at least 2 dimensions, got {x.shape}")
    check_array("w", w, contiguous=False, dtype=x.dtype)
    check_array("b", b, contiguous=False, dtype=x.dtype)
    d = int(np.prod(x.shape[1:]))
    if w.ndim != 2 or w.shape[0] != d:
        raise ValueError(f"w must have shape (D, M) with D = {d} (the features of x {x.shape}), got {w.shape}")
    if b.shape != (w.shape[1],):
        raise ValueError(f"b must have shape ({w.shape[1]},) (the columns of w), got {b.shape}")
    out = x.reshape(x.shape[0], d) @ w
    out += b
    return out, (x, w, b)


def affine_backward(dout, cache):
    """Returns (dx (x's shape), dw (D, M), db (M,)) for dout of shape (N, M)."""
    x, w, b = cache
    check_array("dout", dout, contiguous=False, dtype=x.dtype, shape=(x.shape[0], w.shape[1]))
    x2 = x.reshape(x.shape[0], w.shape[0])
    dx = (dout @ w.T).reshape(x.shape)
    dw = x2.T @ dout
    db = dout.sum(axis=0)
    return dx, dw, db


def relu_forward(x):
    """out = max(x, 0) elementwise (NaN stays NaN). Returns (out, cache) with cache = x."""
    check_array("x", x, contiguous=False)
    return np.maximum(x, 0), x


def relu_backward(dout, cache):
    """dx = dout where x > 0, else 0 (the subgradient at x == 0 is taken as 0, as in CS231n)."""
    x = cache
    check_array("dout", dout, contiguous=False, dtype=x.dtype, shape=x.shape)
    # where, not dout * (x > 0): an inf/NaN in dout does not leak into units that were off.
    return np.where(x > 0, dout, x.dtype.type(0))


def affine_relu_forward(x, w, b):
    """relu(affine(x, w, b)). Returns (out, cache)."""
    a, fc_cache = affine_forward(x, w, b)
    out, relu_cache = relu_forward(a)
    return out, (fc_cache, relu_cache)


def affine_relu_backward(dout, cache):
    """Returns (dx, dw, db) of the affine-relu sandwich."""
    fc_cache, relu_cache = cache
    return affine_backward(relu_backward(dout, relu_cache), fc_cache)
