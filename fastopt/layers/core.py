"""Affine and ReLU layers, CS231n-compatible: each forward returns (out, cache), each backward
takes (dout, cache). Plain NumPy on purpose: the affine work is a matrix product (BLAS) and ReLU is
one ufunc, so a kernel would win nothing. Inputs are checked first; outputs are new arrays.

Operand dtypes (every layer function of fastopt.layers follows this rule, see ``compute_dtype``):
the arrays a layer only READS (x, w, b, gamma, beta, dout, scores) may be of any real dtype,
integers included; they are converted as NumPy's promotion would convert them, and the result has
that dtype (float32 stays float32; float32 with float64 gives float64; integers alone give
float64; float16 is computed in float32). Arrays a layer updates IN PLACE (batchnorm's running
statistics) keep their own dtype: the update is computed in the call's dtype and stored cast.
"""
import numpy as np

from .._validation import FLOAT_DTYPES, _describe, check_array

__all__ = ["affine_forward", "affine_backward", "relu_forward", "relu_backward",
           "affine_relu_forward", "affine_relu_backward"]


def compute_dtype(*named):
    """The float dtype a layer computes in for read-only operands `named` = (name, array) pairs.

    NumPy's promotion (np.result_type) of the operands' dtypes, with two adjustments: operands that
    are all integers give float64 (as NumPy's true division does), and float16 gives float32 (the
    kernels run float32/float64 only). Raises TypeError naming the operand that is not a real array.
    """
    dtypes = []
    for name, a in named:
        if not isinstance(a, np.ndarray):
            raise TypeError(f"{name} must be a NumPy array of real numbers, got {_describe(a)}")
        if a.dtype.kind not in "iuf":
            raise TypeError(f"{name} must have a real numeric dtype (integer or float), got {a.dtype}")
        dtypes.append(a.dtype)
    if not any(dt.kind == "f" for dt in dtypes):
        return np.dtype(np.float64)
    dt = np.result_type(*dtypes)
    if dt == np.float16:
        return np.dtype(np.float32)
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"{', '.join(n for n, _ in named)} promote to {dt}; "
                        f"fastopt computes in float32 or float64")
    return dt


def as_operand(a, dtype):
    """A read-only operand in `dtype`, C-contiguous (a copy only when needed; never written)."""
    return np.ascontiguousarray(a, dtype=dtype)


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


def affine_backward(dout, cache):
    """Returns (dx (x's shape), dw (D, M), db (M,)) for dout of shape (N, M)."""
    x, w, b = cache
    dt = compute_dtype(("dout", dout), ("x", x))
    if dout.shape != (x.shape[0], w.shape[1]):
        raise ValueError(f"dout must have shape {(x.shape[0], w.shape[1])}, got {dout.shape}")
    dout, x, w = (np.asarray(a, dtype=dt) for a in (dout, x, w))
    x2 = x.reshape(x.shape[0], w.shape[0])
    dx = (dout @ w.T).reshape(x.shape)
    dw = x2.T @ dout
    db = dout.sum(axis=0)
    return dx, dw, db


def relu_forward(x):
    """out = max(x, 0) elementwise (NaN stays NaN). Returns (out, cache) with cache = x."""
    x = np.asarray(x, dtype=compute_dtype(("x", x)))
    return np.maximum(x, 0), x


def relu_backward(dout, cache):
    """dx = dout where x > 0, else 0 (the subgradient at x == 0 is taken as 0, as in CS231n)."""
    x = cache
    check_array("cache", x, contiguous=False)
    dt = compute_dtype(("dout", dout), ("x", x))
    if dout.shape != x.shape:
        raise ValueError(f"dout must have shape {x.shape}, got {dout.shape}")
    # where, not dout * (x > 0): an inf/NaN in dout does not leak into units that were off.
    return np.where(x > 0, np.asarray(dout, dtype=dt), dt.type(0))


def affine_relu_forward(x, w, b):
    """relu(affine(x, w, b)). Returns (out, cache). (Also in fastopt.layer_utils, as in CS231n.)"""
    a, fc_cache = affine_forward(x, w, b)
    out, relu_cache = relu_forward(a)
    return out, (fc_cache, relu_cache)


def affine_relu_backward(dout, cache):
    """Returns (dx, dw, db) of the affine-relu sandwich."""
    fc_cache, relu_cache = cache
    return affine_backward(relu_backward(dout, relu_cache), fc_cache)
