"""CIFAR-10 from the "python version" batches (cifar-10-batches-py), read from a local folder.

Nothing is downloaded. Each batch file is a pickled dict with b"data" (uint8 (10000, 3072): 1024
red, then 1024 green, then 1024 blue values, each a row-major 32x32 image) and b"labels" (10000
ints in 0..9). The pickles are read with an unpickler that only admits what such a batch holds
(NumPy arrays and plain containers), so a hostile file cannot run code.
"""
import os
import pickle

import numpy as np

from .._validation import check_bool
from .preprocess import check_count, check_dtype, preprocess

TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
ROW = 3 * 32 * 32

# (module, name) pairs a CIFAR batch pickle may reference: NumPy array reconstruction (numpy 1
# and 2 module names, pickle protocols 2..5) and the codec Python 2 pickles use for bytes.
_ALLOWED = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
}


class _BatchUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _get(d, key):
    for k in (key.encode(), key):
        if k in d:
            return d[k]
    raise KeyError(key)


def load_batch(filename):
    """(X uint8 (n, 3072), y int64 (n,)) from one batch file; ValueError if it is not a batch."""
    try:
        with open(filename, "rb") as f:
            d = _BatchUnpickler(f, encoding="bytes").load()
    except FileNotFoundError:
        raise
    except Exception as exc:  # any unpickling failure means "not a batch file"
        raise ValueError(f"{filename} is not a CIFAR-10 python batch (unpickling failed: {exc})") from None
    if not isinstance(d, dict):
        raise ValueError(f"{filename} is not a CIFAR-10 python batch: it holds a {type(d).__name__}, "
                         f"expected a dict with b'data' and b'labels'")
    try:
        X, y = _get(d, "data"), _get(d, "labels")
    except KeyError as exc:
        raise ValueError(f"{filename} is not a CIFAR-10 python batch: no {exc.args[0]!r} entry") from None
    X = np.asarray(X)
    if X.dtype != np.uint8 or X.ndim != 2 or X.shape[1] != ROW:
        raise ValueError(f"{filename}: data must be uint8 of shape (n, {ROW}), got {X.dtype} {X.shape}")
    try:
        y = np.asarray(y, dtype=np.int64)
    except (TypeError, ValueError):
        raise ValueError(f"{filename}: labels must be integers 0..9") from None
    if y.shape != (len(X),):
        raise ValueError(f"{filename}: {len(X)} data rows but labels of shape {y.shape}")
    if len(y) and (y.min() < 0 or y.max() > 9):
        raise ValueError(f"{filename}: labels must be in 0..9, got {y.min()}..{y.max()}")
    return X, y


def load_cifar10(path, num_training=49000, num_validation=1000, num_test=1000, subtract_mean=True,
                 dtype=np.float32):
    """CIFAR-10 as a dict X_train, y_train, X_val, y_val, X_test, y_test (as CS231n splits it).

    `path` is the folder holding data_batch_1..5 and test_batch. Train is the first `num_training`
    rows of the training batches in order, val the next `num_validation` rows, test the first
    `num_test` rows of test_batch. X is (N, 3072) of `dtype`, flattened rows as stored (reshape to
    (N, 3, 32, 32) for images); y is int64. With `subtract_mean`, the training split's mean image
    is subtracted from every split. Only the batches needed for the requested rows are read.

    FileNotFoundError names the missing folder or batch file; ValueError reports a malformed
    batch or more rows requested than the files hold.
    """
    num_training = check_count("num_training", num_training)
    num_validation = check_count("num_validation", num_validation)
    num_test = check_count("num_test", num_test)
    subtract_mean = check_bool("subtract_mean", subtract_mean)
    dtype = check_dtype(dtype)
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"CIFAR-10 folder {path!r} does not exist (expected the extracted "
                                f"cifar-10-batches-py folder)")
    for name in TRAIN_FILES + (TEST_FILE,):
        if not os.path.isfile(os.path.join(path, name)):
            raise FileNotFoundError(f"CIFAR-10 batch file {name!r} is missing from {path!r}")

    wanted = num_training + num_validation
    xs, ys, have = [], [], 0
    for name in TRAIN_FILES:
        if have >= wanted:
            break
        X, y = load_batch(os.path.join(path, name))
        xs.append(X)
        ys.append(y)
        have += len(X)
    if have < wanted:
        raise ValueError(f"num_training + num_validation = {wanted} but the training batches in "
                         f"{path!r} hold {have} rows")
    X_test, y_test = load_batch(os.path.join(path, TEST_FILE))
    if len(X_test) < num_test:
        raise ValueError(f"num_test = {num_test} but {TEST_FILE} holds {len(X_test)} rows")
    X, y = np.concatenate(xs), np.concatenate(ys)
    raw = {"X_train": X[:num_training], "y_train": y[:num_training],
           "X_val": X[num_training:wanted], "y_val": y[num_training:wanted],
           "X_test": X_test[:num_test], "y_test": y_test[:num_test]}
    return preprocess(raw, subtract_mean=subtract_mean, standardize=False, dtype=dtype)
