"""Classification losses on class scores, CS231n-compatible: (loss, dx), both averaged over N.

x: scores of shape (N, C), any real dtype (converted as NumPy would: fastopt.layers.core.compute_dtype;
integer scores give float64); y: integer labels of shape (N,), 0 <= y[i] < C.
The loss is summed in float64 and returned as a Python float; dx has x's dtype.
"""
import numpy as np

from .core import compute_dtype

__all__ = ["softmax_loss", "svm_loss"]


def _check_scores_labels(x, y):
    """(rows, y, x in its compute dtype) after checking everything."""
    dt = compute_dtype(("x", x))
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"x must be scores of shape (N, C) with N, C >= 1, got {x.shape}")
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
    """Cross-entropy of softmax(x) against y: (loss, dx). Stable: scores are shifted by the row max."""
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
