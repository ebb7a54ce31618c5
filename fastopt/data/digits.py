"""The bundled UCI handwritten digits (1797 8x8 images, values 0..16); see DIGITS.md."""
import os

import numpy as np

from .preprocess import prepare_splits

PATH = os.path.join(os.path.dirname(__file__), "digits.npz")


def load_digits_raw():
    """(images uint8 (1797, 8, 8), labels uint8 (1797,)) exactly as bundled."""
    with np.load(PATH) as f:
        return f["images"], f["labels"]


def load_digits(val_fraction=0.1, test_fraction=0.2, seed=0, standardize=False, dtype=np.float32):
    """The digits split into train/val/test and preprocessed, as a dict of arrays.

    Keys X_train, y_train, X_val, y_val, X_test, y_test. X is (N, 64) of `dtype` (pixels row by
    row), y is int64 in 0..9. The split is seeded and stratified (every split keeps the class
    proportions; val and test hold round(fraction * 1797) images); the same arguments always give
    the same arrays. The mean image of the training split is subtracted from every split; with
    `standardize`, every feature is also divided by its training-split std (constant features,
    e.g. blank corners, are left at 0).
    """
    images, labels = load_digits_raw()
    return prepare_splits(images.reshape(len(images), -1), labels, val_fraction=val_fraction,
                          test_fraction=test_fraction, seed=seed, subtract_mean=True,
                          standardize=standardize, dtype=dtype)
