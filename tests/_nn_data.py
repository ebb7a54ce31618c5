"""Seeded synthetic classification data for the MLP / Solver tests (no dataset download)."""
import numpy as np


def blobs(n, dim=6, num_classes=3, seed=0, spread=2.0):
    """n points in `dim` dimensions, class c centred on spread * e_c (c < dim), unit Gaussian noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, num_classes, size=n)
    centres = spread * np.eye(num_classes, dim)
    X = rng.standard_normal((n, dim)) + centres[y]
    return X, y


def blob_data(n_train=120, n_val=60, dim=6, num_classes=3, seed=0):
    X_train, y_train = blobs(n_train, dim, num_classes, seed)
    X_val, y_val = blobs(n_val, dim, num_classes, seed + 1)
    return {"X_train": X_train, "y_train": y_train, "X_val": X_val, "y_val": y_val}


class LinearSoftmax:
    """A user's model that is not a FullyConnectedNet: one weight matrix `key` (dim, num_classes)
    under a softmax loss, the CS231n model interface (loss(X) -> scores, loss(X, y) -> (loss, grads))."""

    def __init__(self, key="W", dim=6, num_classes=3):
        self.key = key
        self.params = {key: np.random.default_rng(0).standard_normal((dim, num_classes)) * 0.1}

    def loss(self, X, y=None):
        scores = X @ self.params[self.key]
        if y is None:
            return scores
        p = np.exp(scores - scores.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        loss = -np.log(p[np.arange(len(y)), y]).mean()
        p[np.arange(len(y)), y] -= 1
        return loss, {self.key: X.T @ p / len(y)}
