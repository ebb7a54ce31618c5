"""Atomic, checksummed checkpoint files: round trip, interrupted writes, corrupt or hostile files."""
import hashlib
import os
import pickle

import numpy as np
import pytest
from _nn_data import blob_data
from _refusal import refused_unchanged

from fastopt import checkpoint
from fastopt.checkpoint import CheckpointError
from fastopt.nn import FullyConnectedNet
from fastopt.solver import Solver


def sample_state():
    return {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "v": np.linspace(0, 1, 4),
            "t": np.int64(3), "lr": 1e-3, "hist": [0.5, 0.25], "name": "adam", "none": None,
            "rng": np.random.default_rng(4).bit_generator.state}


def assert_equal_state(a, b):
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], np.ndarray):
            assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k])
        else:
            assert a[k] == b[k]


def test_round_trip(tmp_path):
    path = tmp_path / "c.pkl"
    checkpoint.save(path, sample_state())
    assert_equal_state(checkpoint.load(path), sample_state())
    assert os.listdir(tmp_path) == ["c.pkl"]  # no temporary file left behind


@pytest.mark.parametrize("fail_in", ["replace", "fsync", "write"])
def test_interrupted_write_keeps_previous_file(tmp_path, monkeypatch, fail_in):
    path = tmp_path / "c.pkl"
    checkpoint.save(path, {"generation": 1, "w": np.ones(3)})
    original = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("simulated crash")

    if fail_in == "write":
        # Die halfway through the payload: dumps() returns an object whose write is cut short.
        real_fdopen = os.fdopen

        class HalfFile:
            def __init__(self, f):
                self.f = f

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.f.close()

            def write(self, data):
                self.f.write(data[: len(data) // 2])
                raise OSError("simulated crash mid-write")

        monkeypatch.setattr(checkpoint.os, "fdopen", lambda fd, mode: HalfFile(real_fdopen(fd, mode)))
    else:
        monkeypatch.setattr(checkpoint.os, fail_in, boom)
    with pytest.raises(OSError, match="simulated crash"):
        checkpoint.save(path, {"generation": 2, "w": np.zeros(3)})
    monkeypatch.undo()
    assert path.read_bytes() == original
    assert checkpoint.load(path)["generation"] == 1
    assert os.listdir(tmp_path) == ["c.pkl"]


def test_solver_checkpoint_survives_failed_overwrite(tmp_path, monkeypatch):
    data = blob_data()
    model = FullyConnectedNet([8], input_dim=6, num_classes=3, rng=0, normalization="batchnorm")
    solver = Solver(model, data, update_rule="adam", num_epochs=1, batch_size=30, verbose=False, seed=0)
    path = tmp_path / "s.ckpt"
    solver.save_checkpoint(path)
    solver.train()
    monkeypatch.setattr(checkpoint.os, "replace", lambda *a: (_ for _ in ()).throw(OSError("disk gone")))
    with pytest.raises(OSError, match="disk gone"):
        solver.save_checkpoint(path)
    monkeypatch.undo()
    fresh = Solver(FullyConnectedNet([8], input_dim=6, num_classes=3, rng=0, normalization="batchnorm"),
                   data, update_rule="adam", num_epochs=1, batch_size=30, verbose=False, seed=0)
    fresh.load_checkpoint(path)  # the untrained state written first
    assert fresh.iteration == 0 and fresh.loss_history == []


def write_raw(path, payload_bytes, digest=None):
    digest = hashlib.sha256(payload_bytes).digest() if digest is None else digest
    path.write_bytes(checkpoint.MAGIC + digest + payload_bytes)


@pytest.mark.parametrize("damage,fragment", [
    (lambda b: b[: len(b) - 10], "checksum"),
    (lambda b: b[:20], "truncated"),
    (lambda b: b[:-5] + bytes([b[-5] ^ 1]) + b[-4:], "checksum"),
    (lambda b: b"", "not a fastopt checkpoint"),
    (lambda b: b"\x80\x04garbage" * 10, "not a fastopt checkpoint"),
])
def test_damaged_file_raises_clear_error(tmp_path, damage, fragment):
    path = tmp_path / "c.pkl"
    checkpoint.save(path, sample_state())
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(CheckpointError, match=fragment):
        checkpoint.load(path)
    assert issubclass(CheckpointError, ValueError)


def test_forbidden_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pkl"
    write_raw(path, pickle.dumps({"x": os.getcwd}, protocol=5))
    with pytest.raises(CheckpointError, match="posix.getcwd.*not allowed"):
        checkpoint.load(path)
    write_raw(path, b"not a pickle at all")
    with pytest.raises(CheckpointError, match="could not be decoded"):
        checkpoint.load(path)


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        checkpoint.load(tmp_path / "nope.pkl")


def test_solver_rejects_foreign_or_tampered_checkpoints(tmp_path):
    data = blob_data()

    def fresh():
        model = FullyConnectedNet([8], input_dim=6, num_classes=3, rng=0)
        return Solver(model, data, update_rule="sgd", num_epochs=1, batch_size=30, verbose=False, seed=0)

    path = tmp_path / "x.ckpt"
    checkpoint.save(path, {"params": {}})
    with pytest.raises(ValueError, match="not a fastopt Solver checkpoint"):
        fresh().load_checkpoint(path)

    src = fresh()
    src.train()
    src.save_checkpoint(path)
    state = checkpoint.load(path)
    tampered = [
        ("iteration", 999, "loss_history has"),
        ("version", 7, "version"),
        ("rng", {"batch": {"bit_generator": "MT19937"}, "eval": {}}, "rng"),
        # a state NumPy's setter would take (it ignores keys it does not read), with one key more
        ("rng", dict(state["rng"], batch=dict(state["rng"]["batch"], extra=1)), "unexpected keys"),
        ("best_params", {"W1": np.zeros((2, 2))}, "best_params"),
    ]
    for key, value, fragment in tampered:
        bad = dict(state, **{key: value})
        checkpoint.save(path, bad)
        target = fresh()
        refused_unchanged(target.model.params, lambda: target.load_checkpoint(path), ValueError, fragment)
        assert target.iteration == 0
    bad_cfg = dict(state, optimizer={"kind": "rule", "rule": "sgd",
                                     "configs": {k: {"velocity": np.zeros(1)} for k in src.model.params}})
    checkpoint.save(path, bad_cfg)
    with pytest.raises(ValueError, match="optimizer state"):
        fresh().load_checkpoint(path)
