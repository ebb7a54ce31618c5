"""Classification losses on class scores, CS231n-compatible: (loss, dx), both averaged over N.

x: scores of shape (N, C), any real dtype (converted as NumPy would: fastopt.layers.core.compute_dtype;
integer scores give float64); y: integer labels of shape (N,), 0 <= y[i] < C.
softmax_loss also takes soft targets (mixup's): y a float32/float64 array (N, C) of target
probabilities, rows >= 0 summing to 1 (within SOFT_TARGET_TOL); loss = mean over rows of
-sum_c y[n, c] log softmax(x)[n, c], dx = (softmax(x) - y) / N. The targets are a read-only
operand: they take part in the compute dtype's promotion like x.
The loss is summed in float64 and returned as a Python float; dx has the compute dtype.
"""
import numpy as np

from .._validation import FLOAT_DTYPES
from .core import compute_dtype

__all__ = ["softmax_loss", "svm_loss"]

SOFT_TARGET_TOL = 1e-6     # |row sum - 1| allowed for soft targets (relative to the sum, 1)


def is_soft(y):
    """Whether y takes the soft-target form (a 2-D float array); anything else is checked as labels."""
    return isinstance(y, np.ndarray) and y.ndim == 2 and y.dtype.kind == "f"


def check_soft_targets(y, n, c, name="y"):
    """Soft targets: a float32/float64 (n, c) array, finite, >= 0, rows summing to 1 within
    SOFT_TARGET_TOL (sums in float64). TypeError / ValueError naming `name` and what was wrong;
    nothing is written. Three reductions on the valid path (min, max, row sums); the failure paths
    find the first offending row."""
    if y.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} as target probabilities must have dtype float32 or float64, got {y.dtype}")
    if y.shape != (n, c):
        raise ValueError(f"{name} as target probabilities must have shape ({n}, {c}) (one row of {c} class "
                         f"probabilities per row of the scores), got {y.shape}")
    flat = y.reshape(-1)
    low, high = np.minimum.reduce(flat), np.maximum.reduce(flat)
    if not (np.isfinite(low) and np.isfinite(high)):       # NaN propagates into both, inf into one
        row = int(np.flatnonzero(~np.isfinite(y).all(axis=1))[0])
        raise ValueError(f"{name} as target probabilities must be finite, got {y[row].tolist()!r:.200} in row {row}")
    if low < 0:
        row = int(np.flatnonzero((y < 0).any(axis=1))[0])
        raise ValueError(f"{name} as target probabilities must be >= 0, got {y[row].tolist()!r:.200} in row {row}")
    sums = y.sum(axis=1, dtype=np.float64)
    off = np.abs(sums - 1.0) > SOFT_TARGET_TOL
    if off.any():
        row = int(np.flatnonzero(off)[0])
        raise ValueError(f"{name} as target probabilities must have rows summing to 1 (within "
                         f"{SOFT_TARGET_TOL:g}), got row {row} summing to {float(sums[row])!r}")
    return y


def _check_scores(x, *more):
    """x's compute dtype (with the read-only operands `more`) after checking its shape."""
    dt = compute_dtype(("x", x), *more)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"x must be scores of shape (N, C) with N, C >= 1, got {x.shape}")
    return dt


def _check_scores_labels(x, y):
    """(rows, y, x in its compute dtype) after checking everything."""
    dt = _check_scores(x)
    if not isinstance(y, np.ndarray):
        raise TypeError(f"y must be a NumPy array of integer labels, got {type(y).__name__}")
    if y.dtype == np.bool_ or not np.issubdtype(y.dtype, np.integer):
        raise TypeError(f"y must have an integer dtype, got {y.dtype}")
    n, c = x.shape
    if y.shape != (n,):
        raise ValueError(f"y must have shape ({n},) (one label per row of x), got {y.shape}")
    low, high = int(y.min()), int(y.max())
    if low < 0 or high >= c:
        raise ValueError(f"y must hold labels in [0, {c}) (C = {c} classes), got values in [{low}, {high}]")
    return np.arange(n), y, np.asarray(x, dtype=dt)


def softmax_loss(x, y):
    """Cross-entropy of softmax(x) against y: (loss, dx). Stable: scores are shifted by the row max.
    y: N integer labels, or (N, C) float target probabilities (module docstring)."""
    if is_soft(y):
        return _softmax_soft_loss(x, y)
    rows, y, x = _check_scores_labels(x, y)
    n = x.shape[0]
    shifted = x - x.max(axis=1, keepdims=True)
    probs = np.exp(shifted)
    sum_exp = probs.sum(axis=1, keepdims=True)
    log_prob_y = shifted[rows, y] - np.log(sum_exp[:, 0])
    loss = -float(np.sum(log_prob_y, dtype=np.float64)) / n
    probs /= sum_exp
    probs[rows, y] -= 1
    probs /= n
    return loss, probs


def _softmax_soft_loss(x, y):
    """softmax_loss against soft targets y (N, C): -sum_c y log softmax(x), averaged over rows."""
    dt = _check_scores(x, ("y", y))
    check_soft_targets(y, *x.shape)
    x, y = np.asarray(x, dtype=dt), np.asarray(y, dtype=dt)
    n = x.shape[0]
    shifted = x - x.max(axis=1, keepdims=True)
    probs = np.exp(shifted)
    sum_exp = probs.sum(axis=1, keepdims=True)
    log_probs = shifted - np.log(sum_exp)
    loss = -float(np.sum(y * log_probs, dtype=np.float64)) / n
    probs /= sum_exp
    probs -= y
    probs /= n
    return loss, probs


def svm_loss(x, y):
    """Multiclass hinge loss sum_{j != y} max(0, x_j - x_y + 1): (loss, dx).

    At a kink (margin exactly 0) the subgradient 0 is used, as in CS231n.
    """
    rows, y, x = _check_scores_labels(x, y)
    n = x.shape[0]
    margins = x - x[rows, y][:, None]
    margins += 1
    np.maximum(margins, 0, out=margins)
    margins[rows, y] = 0
    loss = float(np.sum(margins, dtype=np.float64)) / n
    positive = margins > 0
    dx = positive.astype(x.dtype)
    dx[rows, y] -= positive.sum(axis=1)
    dx /= n
    return loss, dx
