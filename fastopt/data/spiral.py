"""The toy spiral from the CS231n neural-networks case study: classes wound around the origin."""
import numpy as np

from .._validation import check_scalar
from .preprocess import check_count, check_dtype, check_seed


def make_spiral(n_per_class=100, num_classes=3, noise=0.2, seed=0, dtype=np.float32):
    """(X, y): X (n_per_class * num_classes, 2) of `dtype`, y int64 in 0..num_classes-1.

    As in the case study: class j has radii linspace(0, 1) and angles linspace(4j, 4(j+1)) plus
    Gaussian noise of std `noise`; the points are (r sin t, r cos t), grouped by class.
    """
    n = check_count("n_per_class", n_per_class)
    k = check_count("num_classes", num_classes, low=2)
    noise = check_scalar("noise", noise, low=0)
    seed = check_seed(seed)
    dtype = check_dtype(dtype)
    rng = np.random.default_rng(seed)
    X = np.empty((n * k, 2), dtype=np.float64)
    y = np.repeat(np.arange(k, dtype=np.int64), n)
    r = np.linspace(0.0, 1.0, n)
    for j in range(k):
        t = np.linspace(j * 4.0, (j + 1) * 4.0, n) + rng.standard_normal(n) * noise
        X[j * n:(j + 1) * n, 0] = r * np.sin(t)
        X[j * n:(j + 1) * n, 1] = r * np.cos(t)
    return X.astype(dtype), y
