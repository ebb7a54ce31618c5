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
