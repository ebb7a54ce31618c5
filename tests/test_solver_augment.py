"""Solver(augment=...): each training batch augmented, reproducibly, resuming bitwise (mixup's soft
labels: test_solver2_mixup.py)."""
import numpy as np
import pytest
from _nn_data import blob_data

from fastopt import checkpoint
from fastopt.augment import Augment
from fastopt.nn import FullyConnectedNet
from fastopt.solver import Solver

DIM, CLASSES = 6, 3
SHAPE = (1, 2, 3)   # the blobs' 6 features read as a 2 x 3 image


def make_model(**kw):
    return FullyConnectedNet(**{**dict(hidden_dims=[16], input_dim=DIM, num_classes=CLASSES, rng=11,
                                       normalization="batchnorm", dropout_keep_ratio=0.8), **kw})


def kwargs(**kw):
    return {**dict(update_rule="adam", optim_config={"learning_rate": 5e-3}, batch_size=20, num_epochs=3,
                   num_train_samples=50, num_val_samples=30, verbose=False, seed=5), **kw}


def aug(spec="shift:1,flip,noise:0.1", seed=3):
    return Augment(spec, image_shape=SHAPE, seed=seed)


def test_each_batch_is_the_augmented_batch():
    data = blob_data()
    seen = []

    class Spy(FullyConnectedNet):
        def loss(self, X, y=None, **kw):
            if y is not None:
                seen.append(np.array(X, copy=True))
            return super().loss(X, y, **kw)

    a = aug()
    solver = Solver(Spy(**{**dict(hidden_dims=[16], input_dim=DIM, num_classes=CLASSES, rng=11)}), data,
                    **kwargs(augment=a, num_epochs=1))
    solver.train()
    draws = Solver(make_model(), data, **kwargs(num_epochs=1))._draws
    for step, X in enumerate(seen):
        idx = draws.batch(data["X_train"].shape[0], 20)
        expected = a(data["X_train"][idx], data["y_train"][idx], step, indices=idx).X
        assert np.array_equal(X, expected.astype(X.dtype))
    assert len(seen) == solver.iteration


def test_augmented_runs_are_reproducible_and_differ_from_plain_ones():
    data = blob_data()
    runs = []
    for a in (aug(), aug(), None, aug(seed=4)):
        s = Solver(make_model(), data, **kwargs(augment=a))
        s.train()
        runs.append(s)
    assert runs[0].loss_history == runs[1].loss_history
    assert runs[0].loss_history != runs[2].loss_history and runs[0].loss_history != runs[3].loss_history


def test_resume_with_augmentation_is_bitwise(tmp_path):
    data = blob_data()
    full = Solver(make_model(), data, checkpoint_name=str(tmp_path / "run"), **kwargs(augment=aug()))
    full.train()
    saved = checkpoint.load(tmp_path / "run_epoch_1.pkl")
    assert saved["augment"] == {"spec": aug().spec, "image_shape": [1, 2, 3], "seed": 3}
    resumed = Solver.from_checkpoint(tmp_path / "run_epoch_1.pkl", make_model(rng=2), data)
    assert isinstance(resumed.augment, Augment) and resumed.augment.spec == aug().spec
    resumed.train()
    assert resumed.loss_history == full.loss_history
    for k in full.model.params:
        assert np.array_equal(resumed.model.params[k], full.model.params[k])


@pytest.mark.parametrize("augment, error, match", [
    ("shift:1", TypeError, "fastopt.augment.Augment"),
    (Augment("shift:1"), ValueError, "image_shape"),                         # flattened rows, no shape
    (Augment("shift:1", image_shape=(1, 3, 3)), ValueError, "features"),
])
def test_bad_augment(augment, error, match):
    with pytest.raises(error, match=match):
        Solver(make_model(), blob_data(), **kwargs(augment=augment))


def test_integer_data_cannot_be_augmented():
    data = blob_data()
    data = {**data, "X_train": (data["X_train"] * 10).astype(np.int64), "X_val": (data["X_val"] * 10).astype(np.int64)}
    with pytest.raises(TypeError, match="float32 or float64"):
        Solver(make_model(), data, **kwargs(augment=aug()))
