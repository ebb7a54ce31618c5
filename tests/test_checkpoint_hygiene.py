"""Checkpoint hygiene: kills during a save, orphaned temporaries, file modes, corrupt optimizer files.

- A save killed with SIGKILL at a random moment leaves the previous file loadable; the next save
  removes the temporaries killed saves left, and touches no other file.
- Replacing a file keeps its permission bits; a new file gets the umask's default.
- fastopt.optim.load_state of a corrupt or foreign .npz raises CheckpointError (a ValueError) naming
  the file, and leaves the optimizer as it was.
"""
import io
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
import zipfile

import numpy as np
import pytest

import fastopt
from fastopt import checkpoint
from fastopt.checkpoint import CheckpointError
from fastopt.optim import load_state, save_state

# The writer saves in a loop. Its fsync is slowed down (a slow disk), so that a kill lands inside a
# write often enough that orphaned temporaries really occur; the code under test is unchanged.
WRITER = textwrap.dedent("""
    import sys, time
    import numpy as np
    from fastopt import checkpoint
    real_fsync = checkpoint.os.fsync
    checkpoint.os.fsync = lambda fd: (time.sleep(0.15), real_fsync(fd))[1]
    path, size, generation = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    print("ready", flush=True)
    while True:
        generation += 1
        checkpoint.save(path, {"generation": generation, "w": np.full(size, generation, np.float64)})
""")


def _dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _temp_of(target, pid, token="0123456789abcdef"):
    return f".{target}.{pid}.{token}.fastopt-tmp"


def _check_generation(path):
    state = checkpoint.load(path)
    assert state["w"].shape == (SIZE,)
    assert np.all(state["w"] == state["generation"])
    return state["generation"]


SIZE = 1 << 20   # 8 MB per save


def _wait_for_temporary(directory, known, timeout=30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if any(n.endswith(".fastopt-tmp") for n in set(os.listdir(directory)) - known):
            return
        time.sleep(0.002)
    raise AssertionError("the writer never started a save")


def test_kill_during_save_loop(tmp_path):
    path = tmp_path / "run.ckpt"
    checkpoint.save(path, {"generation": 1, "w": np.full(SIZE, 1, np.float64)})
    # Files a save of run.ckpt must never remove: other names, and another target's orphan.
    bystanders = ["run.ckpt.bak", "notes.tmp", ".run.ckpt.swp", _temp_of("other.ckpt", _dead_pid()),
                  ".run.ckpt.12.short.fastopt-tmp", ".run.ckpt.abc.0123456789abcdef.fastopt-tmp"]
    for name in bystanders:
        (tmp_path / name).write_bytes(b"keep me")
    rng = random.Random(8)
    orphans_seen = 0
    last = 1
    for k in range(6):
        present = set(os.listdir(tmp_path))             # earlier orphans are not this writer's
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(SIZE), str(last)],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        if k % 2:
            time.sleep(rng.uniform(0.0, 0.5))          # any moment
        else:
            _wait_for_temporary(tmp_path, present)      # surely inside one of this writer's saves
            time.sleep(rng.uniform(0.0, 0.05))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        assert proc.returncode == -signal.SIGKILL
        generation = _check_generation(path)           # the previous file (or a complete new one)
        assert generation >= last                      # this writer's saves are all > last
        last = generation
        orphans_seen += len(set(os.listdir(tmp_path)) - present)
    checkpoint.save(path, {"generation": -1, "w": np.full(SIZE, -1, np.float64)})
    assert _check_generation(path) == -1
    assert sorted(os.listdir(tmp_path)) == sorted(["run.ckpt"] + bystanders)
    for name in bystanders:
        assert (tmp_path / name).read_bytes() == b"keep me"
    assert orphans_seen >= 3, "kills inside a write left no temporary: the cleanup was not exercised"


def test_orphans_of_dead_writers_only_are_removed(tmp_path):
    path = tmp_path / "c.ckpt"
    dead, alive = _dead_pid(), os.getppid()
    names = {
        "dead": _temp_of("c.ckpt", dead),
        "alive": _temp_of("c.ckpt", alive),                 # a save in progress elsewhere
        "self": _temp_of("c.ckpt", os.getpid()),            # this process (another thread's save)
        "other target": _temp_of("d.ckpt", dead),
        "prefix target": _temp_of("c.ckpt.old", dead),
    }
    for name in names.values():
        (tmp_path / name).write_bytes(b"x")
    assert checkpoint.remove_orphan_temporaries(path) == [names["dead"]]
    checkpoint.save(path, {"a": 1})
    left = set(os.listdir(tmp_path))
    assert left == {"c.ckpt"} | {v for k, v in names.items() if k != "dead"}


def test_temporary_is_named_for_its_target_and_removed_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "c.ckpt"
    seen = []
    real_replace = os.replace

    def spy(src, dst):
        seen.append(os.path.basename(src))
        raise OSError("simulated failure")

    monkeypatch.setattr(checkpoint.os, "replace", spy)
    with pytest.raises(OSError, match="simulated failure"):
        checkpoint.save(path, {"a": 1})
    monkeypatch.setattr(checkpoint.os, "replace", real_replace)
    assert len(seen) == 1 and seen[0].startswith(f".c.ckpt.{os.getpid()}.") and seen[0].endswith(".fastopt-tmp")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o644, 0o664])
def test_replace_keeps_the_file_mode(tmp_path, mode):
    path = tmp_path / "c.ckpt"
    checkpoint.save(path, {"a": 1})
    os.chmod(path, mode)
    checkpoint.save(path, {"a": 2})
    assert os.stat(path).st_mode & 0o7777 == mode
    assert checkpoint.load(path) == {"a": 2}


def test_new_file_gets_the_umask_default(tmp_path):
    old = os.umask(0o027)
    try:
        checkpoint.save(tmp_path / "a.ckpt", {"a": 1})
        os.umask(0o022)
        checkpoint.save(tmp_path / "b.ckpt", {"a": 1})
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "a.ckpt").st_mode & 0o777 == 0o640
    assert os.stat(tmp_path / "b.ckpt").st_mode & 0o777 == 0o644


# ---------------------------------------------------------------- load_state of bad files

def _optimizer():
    params = {"W": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(3, np.float32)}
    opt = fastopt.Adam(params, lr=1e-2)
    opt.step({"W": np.full((2, 3), 0.5, np.float32), "b": np.full(3, -0.5, np.float32)})
    return opt, params


def _snapshot(opt, params):
    state = opt.state_dict()
    arrays = {f"p/{k}": v.copy() for k, v in params.items()}
    for index, entry in state["state"].items():
        for key, value in entry.items():
            arrays[f"s/{index}/{key}"] = np.array(value, copy=True)
    return arrays, repr(state["param_groups"])


def _npz(**arrays):
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _good_file(tmp_path):
    opt, _ = _optimizer()
    path = tmp_path / "good.npz"
    save_state(path, opt)
    return path.read_bytes()


def _bad_files(good):
    meta_only = _npz(__meta__=np.array('{"format": "fastopt.optim.state/1"}'))
    return {
        "empty file": b"",
        "random bytes": bytes(random.Random(1).getrandbits(8) for _ in range(300)),
        "truncated npz": good[: len(good) // 2],
        "npz of another program": _npz(weights=np.ones(3), bias=np.zeros(2)),
        "meta not JSON": _npz(__meta__=np.array("{not json")),
        "meta JSON list": _npz(__meta__=np.array("[1, 2]")),
        "meta wrong format": _npz(__meta__=np.array('{"format": "someone.else/9"}')),
        "meta without groups": meta_only,
        "meta as numbers": _npz(__meta__=np.arange(3)),
        "state not a dict": _npz(__meta__=np.array(
            '{"format": "fastopt.optim.state/1", "param_groups": [], "state": [1]}')),
        "state index not a number": _npz(__meta__=np.array(
            '{"format": "fastopt.optim.state/1", "param_groups": [], "state": {"x": {}}}')),
        "foreign entry": _npz(__meta__=np.array(
            '{"format": "fastopt.optim.state/1", "param_groups": [], "state": {}}'), junk=np.ones(2)),
        "pickled object array": _npz(__meta__=np.array([{"evil": 1}], dtype=object)),
        "a .npy, not an .npz": (lambda b: (np.save(b, np.ones(3)), b.getvalue())[1])(io.BytesIO()),
        "zip without arrays": (lambda b: (zipfile.ZipFile(b, "w").close(), b.getvalue())[1])(io.BytesIO()),
    }


@pytest.mark.parametrize("case", sorted(_bad_files(b"")))
def test_load_state_of_a_bad_file_is_a_clear_error(tmp_path, case):
    bad = _bad_files(_good_file(tmp_path))[case]
    path = tmp_path / "bad.npz"
    path.write_bytes(bad)
    opt, params = _optimizer()
    before, groups = _snapshot(opt, params)
    with pytest.raises(CheckpointError) as info:
        load_state(path, opt)
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert str(path) in message and "cannot be loaded" in message
    after, groups_after = _snapshot(opt, params)
    assert groups_after == groups and after.keys() == before.keys()
    for key in before:
        assert before[key].tobytes() == after[key].tobytes(), key
    assert path.read_bytes() == bad


def test_load_state_of_a_good_file_still_works(tmp_path):
    src, _ = _optimizer()
    path = tmp_path / "s.npz"
    save_state(path, src)
    dst, _ = _optimizer()
    load_state(path, dst)
    assert repr(dst.state_dict()["param_groups"]) == repr(src.state_dict()["param_groups"])


def test_load_state_missing_file_is_file_not_found(tmp_path):
    opt, _ = _optimizer()
    with pytest.raises(FileNotFoundError):
        load_state(tmp_path / "absent.npz", opt)
