"""Subsets of a loaded dataset (a dict X_train, y_train, X_val, y_val, X_test, y_test):

    select_classes(data, [5, 6, 7, 8, 9])   # only those classes, relabelled 0..4 in the order given
    subsample_train(data, 100, seed=0)      # 100 training examples, the same number of each class

Transfer-learning experiments (pretrain on digits 0-4, learn 5-9 from a few examples) are built from
these. Both return a new dict (arrays are new; the input is untouched) and validate before anything.
"""
import numpy as np

from .._validation import _describe, check_scalar

__all__ = ["select_classes", "subsample_train", "parse_classes", "SPLITS"]

SPLITS = ("train", "val", "test")


def _check_data(data):
    keys = [f"{v}_{s}" for s in SPLITS for v in ("X", "y")]
    if not isinstance(data, dict) or any(k not in data for k in keys):
        raise ValueError(f"data must be a dict with keys {keys}, got {_describe(data)}")
    for s in SPLITS:
        X, y = data[f"X_{s}"], data[f"y_{s}"]
        if not isinstance(X, np.ndarray) or not isinstance(y, np.ndarray) or y.ndim != 1 \
                or y.dtype.kind not in "iu" or X.shape[:1] != y.shape:
            raise ValueError(f"data['X_{s}'] / data['y_{s}'] must be arrays with one integer label per row, "
                             f"got {_describe(X)} / {_describe(y)}")
    return data


def parse_classes(text):
    """"0-4" -> [0, 1, 2, 3, 4]; "1,3,5" -> [1, 3, 5]; "0-2,7" -> [0, 1, 2, 7] (no repeats)."""
    if not isinstance(text, str):
        raise TypeError(f"classes must be a str such as '0-4' or '1,3,5', got {_describe(text)}")
    out = []
    for part in text.split(","):
        lo, sep, hi = part.strip().partition("-")
        try:
            a = int(lo)
            b = int(hi) if sep else a
        except ValueError:
            raise ValueError(f"classes {text!r}: {part.strip()!r} is not N or N-M (e.g. '0-4' or '1,3,5')") from None
        if a < 0 or b < a:
            raise ValueError(f"classes {text!r}: {part.strip()!r} must be N or N-M with 0 <= N <= M")
        out += range(a, b + 1)
    if len(set(out)) != len(out):
        raise ValueError(f"classes {text!r} names a class twice")
    return out


def select_classes(data, classes):
    """Only the examples of `classes` (a sequence of labels, at least 2), relabelled 0..K-1 in the order
    given; every split must hold each class at least once."""
    _check_data(data)
    if isinstance(classes, (str, bytes)) or not hasattr(classes, "__iter__"):
        raise TypeError(f"classes must be a sequence of labels, got {_describe(classes)}")
    classes = [check_scalar(f"classes[{i}]", c, low=0, integer=True) for i, c in enumerate(classes)]
    if len(classes) < 2 or len(set(classes)) != len(classes):
        raise ValueError(f"classes must be at least 2 distinct labels, got {classes}")
    present = set(np.unique(data["y_train"]).tolist())
    absent = [c for c in classes if c not in present]
    if absent:
        raise ValueError(f"classes {absent} do not occur in the training split (labels {sorted(present)})")
    table = np.full(max(max(classes), int(max(data[f"y_{s}"].max() for s in SPLITS))) + 1, -1, np.int64)
    table[classes] = np.arange(len(classes))
    out = dict(data)
    for s in SPLITS:
        keep = table[data[f"y_{s}"]] >= 0
        out[f"X_{s}"] = data[f"X_{s}"][keep]
        out[f"y_{s}"] = table[data[f"y_{s}"][keep]]
    return out


def subsample_train(data, n, seed=0):
    """The training split cut to `n` examples, stratified: each class gets n // K examples and the
    first n % K classes (in label order) one more; seeded, so the same call gives the same subset.
    Val and test are unchanged."""
    _check_data(data)
    n = check_scalar("n (the training set size)", n, low=1, integer=True)
    seed = check_scalar("seed", seed, low=0, integer=True)
    y = data["y_train"]
    labels, counts = np.unique(y, return_counts=True)
    if n > y.shape[0]:
        raise ValueError(f"n = {n} is more than the {y.shape[0]} training examples")
    want = np.full(len(labels), n // len(labels))
    want[: n % len(labels)] += 1
    short = [(int(c), int(k), int(w)) for c, k, w in zip(labels, counts, want) if k < w]
    if short:
        raise ValueError(f"n = {n} needs {short[0][2]} examples of class {short[0][0]}, the training split has "
                         f"{short[0][1]}")
    rng = np.random.default_rng(seed)
    idx = np.sort(np.concatenate([rng.permutation(np.flatnonzero(y == c))[:w] for c, w in zip(labels, want)]))
    out = dict(data)
    out["X_train"], out["y_train"] = data["X_train"][idx], y[idx]
    return out
