"""Splitting and preprocessing shared by the loaders.

Every statistic (mean image, per-feature std) comes from the training split only, as the CS231n
notes insist: the validation and test splits must not leak into what the model sees.
"""
import numpy as np

from .._validation import FLOAT_DTYPES, check_bool, check_scalar


def check_dtype(dtype):
    """`dtype` as a NumPy dtype; float32 or float64, else TypeError."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    # `dt is None` first: a dtype compares equal to None (np.dtype(None) is float64).
    if dtype is None or dt is None or dt not in FLOAT_DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}")
    return dt


def check_seed(seed):
    return check_scalar("seed", seed, low=0, integer=True)


def check_count(name, value, low=1):
    return check_scalar(name, value, low=low, integer=True)


def stratified_split(y, val_fraction, test_fraction, seed):
    """Indices (train, val, test) of a seeded split that keeps the class proportions in every part.

    Sizes are exact: round(fraction * N) for val and test, the rest for train. Each sample gets
    the key (rank within its class in a seeded shuffle + 0.5) / class count; sorting by that key
    interleaves the classes evenly, so every prefix (test, then val) is stratified.
    """
    val_fraction = check_scalar("val_fraction", val_fraction, low=0, high=1, low_open=True, high_open=True)
    test_fraction = check_scalar("test_fraction", test_fraction, low=0, high=1, low_open=True, high_open=True)
    if val_fraction + test_fraction >= 1:
        raise ValueError(f"val_fraction + test_fraction must be < 1, got "
                         f"{val_fraction} + {test_fraction} = {val_fraction + test_fraction}")
    seed = check_seed(seed)
    y = np.asarray(y)
    n = len(y)
    n_test, n_val = int(round(test_fraction * n)), int(round(val_fraction * n))
    if min(n_test, n_val, n - n_test - n_val) < 1:
        raise ValueError(f"the fractions leave an empty split for {n} samples: "
                         f"train {n - n_test - n_val}, val {n_val}, test {n_test}")
    perm = np.random.default_rng(seed).permutation(n)
    _, cls, counts = np.unique(y[perm], return_inverse=True, return_counts=True)
    rank = np.empty(n, dtype=np.int64)
    for c in range(len(counts)):           # rank of each shuffled sample within its class
        members = np.flatnonzero(cls == c)
        rank[members] = np.arange(len(members))
    key = (rank + 0.5) / counts[cls]
    order = perm[np.argsort(key, kind="stable")]
    return order[n_test + n_val:], order[n_test:n_test + n_val], order[:n_test]


def preprocess(splits, *, subtract_mean=True, standardize=False, dtype=np.float32):
    """Flatten, cast and normalize a dict of raw splits; returns a new dict.

    `splits` maps X_train/y_train/X_val/y_val/X_test/y_test to raw arrays. The mean image (and, with
    `standardize`, the per-feature std; a zero std counts as 1) are computed in float64 on X_train.
    Labels become int64.
    """
    subtract_mean = check_bool("subtract_mean", subtract_mean)
    standardize = check_bool("standardize", standardize)
    dtype = check_dtype(dtype)
    train = splits["X_train"].reshape(len(splits["X_train"]), -1).astype(np.float64)
    mean = train.mean(axis=0) if subtract_mean else None
    std = None
    if standardize:
        std = train.std(axis=0)
        std[std == 0] = 1.0            # constant features (digits' blank corners) stay 0, not NaN
    out = {}
    for part in ("train", "val", "test"):
        X = splits[f"X_{part}"]
        X = X.reshape(len(X), -1).astype(np.float64)
        if mean is not None:
            X -= mean
        if std is not None:
            X /= std
        out[f"X_{part}"] = np.ascontiguousarray(X, dtype=dtype)
        out[f"y_{part}"] = np.asarray(splits[f"y_{part}"], dtype=np.int64)
    return out


def prepare_splits(X, y, *, val_fraction=0.1, test_fraction=0.2, seed=0, subtract_mean=True,
                   standardize=False, dtype=np.float32):
    """Split (X, y) with `stratified_split` and `preprocess` it: the loaders' common last step."""
    # Validate everything before any work, so a bad argument fails fast and alone.
    check_bool("subtract_mean", subtract_mean)
    check_bool("standardize", standardize)
    check_dtype(dtype)
    if len(X) != len(y):
        raise ValueError(f"X and y must have the same length, got {len(X)} and {len(y)}")
    tr, va, te = stratified_split(y, val_fraction, test_fraction, seed)
    raw = {"X_train": X[tr], "y_train": y[tr], "X_val": X[va], "y_val": y[va],
           "X_test": X[te], "y_test": y[te]}
    return preprocess(raw, subtract_mean=subtract_mean, standardize=standardize, dtype=dtype)
