"""Datasets for training and examples.

- `load_digits`: the UCI handwritten digits, bundled in the package (see DIGITS.md).
- `load_cifar10`: CIFAR-10 from a local folder of the python batches (never downloaded).
- `make_spiral`: the CS231n toy spiral.
- `prepare_splits`: the seeded stratified split + training-split preprocessing the loaders use.
- `select_classes`, `subsample_train`: subsets of a loaded dataset (transfer experiments).

The loaders return a dict X_train, y_train, X_val, y_val, X_test, y_test: X flattened to (N, D)
rows of float32/float64, y int64; normalization statistics come from the training split only.
"""
from .cifar10 import load_cifar10
from .digits import load_digits
from .preprocess import prepare_splits
from .spiral import make_spiral
from .subset import select_classes, subsample_train

__all__ = ["load_digits", "load_cifar10", "make_spiral", "prepare_splits", "select_classes", "subsample_train"]
