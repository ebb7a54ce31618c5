import hashlib
import os
import pickle
import re

import numpy as np
import pytest

from fastopt import data
from fastopt.data import digits as digits_module

KEYS = ("X_train", "y_train", "X_val", "y_val", "X_test", "y_test")


# ---------------------------------------------------------------- bundled digits

def test_bundled_file_matches_documented_sha256():
    doc = open(os.path.join(os.path.dirname(digits_module.PATH), "DIGITS.md")).read()
    documented = re.search(r"sha256: ([0-9a-f]{64})", doc).group(1)
    with open(digits_module.PATH, "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == documented


def test_raw_digits_content():
    images, labels = digits_module.load_digits_raw()
    assert images.shape == (1797, 8, 8) and images.dtype == np.uint8
    assert labels.shape == (1797,) and labels.dtype == np.uint8
    assert images.min() == 0 and images.max() == 16
    assert np.bincount(labels).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    # The first image of the UCI test set is a 0 (known answer from digits.csv.gz).
    assert labels[0] == 0
    assert images[0, 0].tolist() == [0, 0, 5, 13, 9, 1, 0, 0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_load_digits_layout(dtype):
    d = data.load_digits(dtype=dtype)
    assert tuple(d) == KEYS
    sizes = {part: len(d[f"X_{part}"]) for part in ("train", "val", "test")}
    assert sizes == {"train": 1797 - 180 - 359, "val": 180, "test": 359}
    for part in ("train", "val", "test"):
        X, y = d[f"X_{part}"], d[f"y_{part}"]
        assert X.shape == (len(y), 64) and X.dtype == dtype and X.flags.c_contiguous
        assert y.dtype == np.int64 and y.min() == 0 and y.max() == 9


def test_split_is_deterministic_and_seeded():
    a, b = data.load_digits(seed=3), data.load_digits(seed=3)
    for k in KEYS:
        np.testing.assert_array_equal(a[k], b[k])
    c = data.load_digits(seed=4)
    assert not np.array_equal(a["y_test"], c["y_test"])


def test_split_is_a_stratified_partition():
    labels = digits_module.load_digits_raw()[1]
    tr, va, te = data.preprocess.stratified_split(labels, 0.1, 0.2, seed=0)
    everything = np.concatenate([tr, va, te])
    assert np.array_equal(np.sort(everything), np.arange(len(labels)))
    full = np.bincount(labels) / len(labels)
    for idx in (va, te):
        counts = np.bincount(labels[idx], minlength=10)
        assert np.all(np.abs(counts - full * len(idx)) <= 1.0)


def test_mean_image_and_std_come_from_the_training_split():
    images, labels = digits_module.load_digits_raw()
    raw = data.prepare_splits(images.reshape(1797, -1), labels, subtract_mean=False, dtype=np.float64)
    mean = raw["X_train"].mean(axis=0)
    std = raw["X_train"].std(axis=0)
    assert np.any(std == 0)                      # the digits have blank corner pixels
    std1 = np.where(std == 0, 1.0, std)

    centered = data.load_digits(dtype=np.float64)
    np.testing.assert_allclose(centered["X_train"].mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(centered["X_val"], raw["X_val"] - mean, atol=1e-12)
    np.testing.assert_allclose(centered["X_test"], raw["X_test"] - mean, atol=1e-12)
    # Validation data is not centered by its own mean: the train mean is what was subtracted.
    assert np.abs(centered["X_val"].mean(axis=0)).max() > 1e-3

    scaled = data.load_digits(standardize=True, dtype=np.float64)
    assert np.all(np.isfinite(scaled["X_train"]))
    np.testing.assert_allclose(scaled["X_train"].std(axis=0), (std > 0).astype(float), atol=1e-12)
    np.testing.assert_allclose(scaled["X_test"], (raw["X_test"] - mean) / std1, atol=1e-12)


def test_val_and_test_rows_do_not_leak_into_the_statistics():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 5))
    y = np.arange(200) % 4
    a = data.prepare_splits(X, y, standardize=True, dtype=np.float64)
    _, va, te = data.preprocess.stratified_split(y, 0.1, 0.2, seed=0)
    X2 = X.copy()
    X2[va] *= 1000.0
    X2[te] += 50.0
    b = data.prepare_splits(X2, y, standardize=True, dtype=np.float64)
    np.testing.assert_array_equal(a["X_train"], b["X_train"])


@pytest.mark.parametrize("kwargs, error, fragment", [
    ({"val_fraction": 0.0}, ValueError, "val_fraction must be >"),
    ({"val_fraction": 1.0}, ValueError, "val_fraction must be <"),
    ({"test_fraction": -0.1}, ValueError, "test_fraction"),
    ({"val_fraction": 0.5, "test_fraction": 0.5}, ValueError, "must be < 1"),
    ({"val_fraction": 0.0001}, ValueError, "empty split"),
    ({"val_fraction": "0.1"}, TypeError, "val_fraction"),
    ({"dtype": np.int32}, TypeError, "dtype must be float32 or float64"),
    ({"dtype": np.float16}, TypeError, "dtype must be float32 or float64"),
    ({"dtype": "nonsense"}, TypeError, "dtype must be float32 or float64"),
    ({"dtype": None}, TypeError, "dtype must be float32 or float64"),
    ({"seed": -1}, ValueError, "seed"),
    ({"seed": 1.5}, TypeError, "seed"),
    ({"standardize": "yes"}, TypeError, "standardize"),
])
def test_load_digits_rejects_bad_arguments(kwargs, error, fragment):
    with pytest.raises(error, match=re.escape(fragment)):
        data.load_digits(**kwargs)


# ---------------------------------------------------------------- CIFAR-10

ROWS = 20


def write_cifar(folder, rows=ROWS, seed=0, protocol=2, str_keys=False):
    """Tiny files in the layout of cifar-10-batches-py; returns {name: (X, y)}."""
    rng = np.random.default_rng(seed)
    written = {}
    os.makedirs(folder, exist_ok=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        X = rng.integers(0, 256, size=(rows, 3072), dtype=np.uint8)
        y = rng.integers(0, 10, size=rows).tolist()
        keys = ("data", "labels") if str_keys else (b"data", b"labels")
        with open(os.path.join(folder, name), "wb") as f:
            pickle.dump({keys[0]: X, keys[1]: y, b"batch_label": b"x"}, f, protocol=protocol)
        written[name] = (X, np.array(y))
    return written


@pytest.mark.parametrize("protocol, str_keys", [(2, False), (pickle.HIGHEST_PROTOCOL, False), (4, True)])
def test_cifar_layout_and_rows(tmp_path, protocol, str_keys):
    src = write_cifar(tmp_path, protocol=protocol, str_keys=str_keys)
    d = data.load_cifar10(tmp_path, num_training=70, num_validation=20, num_test=15, subtract_mean=False,
                          dtype=np.float64)
    assert tuple(d) == KEYS
    train_X = np.concatenate([src[f"data_batch_{i}"][0] for i in range(1, 6)])
    train_y = np.concatenate([src[f"data_batch_{i}"][1] for i in range(1, 6)])
    np.testing.assert_array_equal(d["X_train"], train_X[:70])
    np.testing.assert_array_equal(d["y_train"], train_y[:70])
    np.testing.assert_array_equal(d["X_val"], train_X[70:90])
    np.testing.assert_array_equal(d["y_val"], train_y[70:90])
    np.testing.assert_array_equal(d["X_test"], src["test_batch"][0][:15])
    np.testing.assert_array_equal(d["y_test"], src["test_batch"][1][:15])
    assert d["X_train"].shape == (70, 3072) and d["y_train"].dtype == np.int64


def test_cifar_subtracts_the_training_mean(tmp_path):
    write_cifar(tmp_path)
    raw = data.load_cifar10(tmp_path, 50, 30, 10, subtract_mean=False, dtype=np.float64)
    d = data.load_cifar10(tmp_path, 50, 30, 10)
    assert d["X_train"].dtype == np.float32
    mean = raw["X_train"].mean(axis=0)
    np.testing.assert_allclose(d["X_train"].mean(axis=0), 0, atol=1e-3)
    np.testing.assert_allclose(d["X_val"], raw["X_val"] - mean, atol=1e-4)
    np.testing.assert_allclose(d["X_test"], raw["X_test"] - mean, atol=1e-4)


def test_cifar_missing_folder_and_batch(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.load_cifar10(tmp_path / "nowhere")
    write_cifar(tmp_path)
    os.remove(tmp_path / "data_batch_3")
    with pytest.raises(FileNotFoundError, match="data_batch_3"):
        data.load_cifar10(tmp_path, 10, 10, 10)


def test_cifar_too_many_rows_requested(tmp_path):
    write_cifar(tmp_path)
    with pytest.raises(ValueError, match="hold 100 rows"):
        data.load_cifar10(tmp_path)          # the defaults ask for 49000 + 1000
    with pytest.raises(ValueError, match="num_test"):
        data.load_cifar10(tmp_path, 10, 10, 21)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo hacked",))


def _batch(X, labels):
    return pickle.dumps({b"data": X, b"labels": labels})


MALFORMED = {  # id: (payload, message fragment)
    "garbage": (b"not a pickle at all", "unpickling failed"),
    "not-a-dict": (pickle.dumps([1, 2, 3]), "holds a list"),
    "no-labels": (pickle.dumps({b"data": np.zeros((20, 3072), np.uint8)}), "labels"),
    "wrong-width": (_batch(np.zeros((20, 100), np.uint8), [0] * 20), "shape (n, 3072)"),
    "wrong-dtype": (_batch(np.zeros((20, 3072), np.float32), [0] * 20), "uint8"),
    "short-labels": (_batch(np.zeros((20, 3072), np.uint8), [0] * 19), "labels of shape"),
    "label-10": (_batch(np.zeros((20, 3072), np.uint8), [10] * 20), "0..9"),
    "code-execution": (pickle.dumps({b"data": _Evil(), b"labels": [0] * 20}), "refusing to load"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_cifar_malformed_batch(tmp_path, case):
    payload, fragment = MALFORMED[case]
    write_cifar(tmp_path)
    (tmp_path / "data_batch_1").write_bytes(payload)
    with pytest.raises(ValueError, match=re.escape(fragment)) as info:
        data.load_cifar10(tmp_path, 10, 5, 5)
    assert "data_batch_1" in str(info.value)


def test_cifar_rejects_bad_arguments(tmp_path):
    write_cifar(tmp_path)
    with pytest.raises(ValueError, match="num_training"):
        data.load_cifar10(tmp_path, 0, 10, 10)
    with pytest.raises(TypeError, match="dtype"):
        data.load_cifar10(tmp_path, 10, 10, 10, dtype=np.uint8)
    with pytest.raises(TypeError, match="subtract_mean"):
        data.load_cifar10(tmp_path, 10, 10, 10, subtract_mean=1)


# ---------------------------------------------------------------- spiral

def test_spiral_shapes_and_classes():
    X, y = data.make_spiral(n_per_class=50, num_classes=4, noise=0.1, seed=1)
    assert X.shape == (200, 2) and X.dtype == np.float32
    assert y.dtype == np.int64 and np.bincount(y).tolist() == [50] * 4
    radius = np.hypot(X[:, 0], X[:, 1])
    # Radii are linspace(0, 1) per class, whatever the angle noise.
    np.testing.assert_allclose(np.sort(radius[y == 2]), np.linspace(0, 1, 50), atol=1e-6)
    X2, y2 = data.make_spiral(n_per_class=50, num_classes=4, noise=0.1, seed=1, dtype=np.float64)
    np.testing.assert_allclose(X2, X, atol=1e-6)
    assert not np.allclose(data.make_spiral(seed=2)[0], data.make_spiral(seed=1)[0])


def test_spiral_without_noise_is_the_known_curve():
    X, y = data.make_spiral(n_per_class=5, num_classes=3, noise=0.0, dtype=np.float64)
    t = np.linspace(4.0, 8.0, 5)          # class 1
    r = np.linspace(0, 1, 5)
    np.testing.assert_allclose(X[5:10], np.c_[r * np.sin(t), r * np.cos(t)])


@pytest.mark.parametrize("kwargs, error", [
    ({"n_per_class": 0}, ValueError), ({"num_classes": 1}, ValueError), ({"noise": -1.0}, ValueError),
    ({"noise": float("nan")}, ValueError), ({"dtype": np.int64}, TypeError), ({"n_per_class": 2.5}, TypeError),
])
def test_spiral_rejects_bad_arguments(kwargs, error):
    with pytest.raises(error):
        data.make_spiral(**kwargs)
