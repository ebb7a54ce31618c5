"""Hostile checkpoint files: fastopt.checkpoint.load/loads never import or call what a file names.

Every payload below is wrapped in a correct header and a correct SHA-256, so only the allow-list
unpickler stands between the file and the code it names. Each payload, if it ran, would create a
sentinel file or import a planted module (which itself creates a sentinel): each case asserts the
refusal (CheckpointError, a ValueError, naming what was refused), that no sentinel exists and that
the planted module was never imported.
"""
import hashlib
import os
import pickle
import sys

import numpy as np
import pytest

from fastopt import checkpoint
from fastopt.checkpoint import CheckpointError

PLANTED = "fastopt_planted_evil"     # a module on sys.path whose import creates a sentinel file


@pytest.fixture
def trap(tmp_path, monkeypatch):
    """(sentinel path, check()) with a planted module importable; check() asserts nothing ran."""
    sentinel = tmp_path / "PWNED"
    (tmp_path / f"{PLANTED}.py").write_text(
        f"open({str(sentinel)!r}, 'w').close()\n"
        f"def run(*args, **kwargs):\n    open({str(sentinel)!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop(PLANTED, None)

    def check():
        assert not sentinel.exists(), "a checkpoint payload ran code"
        assert PLANTED not in sys.modules, "a checkpoint payload imported a module"
    yield sentinel, check
    sys.modules.pop(PLANTED, None)


def framed(payload):
    """A file with a correct magic and a correct checksum around `payload`."""
    return checkpoint.MAGIC + hashlib.sha256(payload).digest() + payload


def _reducer(func, args):
    class Evil:
        def __reduce__(self):
            return func, args
    return Evil()


def reduce_payloads(sentinel):
    """Objects whose pickles call a dangerous callable with arguments that touch the sentinel."""
    cmd = f"touch {sentinel}"
    code = f"open({str(sentinel)!r}, 'w').close()"
    import subprocess
    import builtins
    return {
        "os.system": _reducer(os.system, (cmd,)),
        "os.popen": _reducer(os.popen, (cmd,)),
        "subprocess.Popen": _reducer(subprocess.Popen, (["touch", str(sentinel)],)),
        "subprocess.call": _reducer(subprocess.call, (["touch", str(sentinel)],)),
        "builtins.eval": _reducer(builtins.eval, (code,)),
        "builtins.exec": _reducer(builtins.exec, (code,)),
        "builtins.open": _reducer(builtins.open, (str(sentinel), "w")),
        "builtins.__import__": _reducer(builtins.__import__, (PLANTED,)),
        "builtins.getattr": _reducer(builtins.getattr, ("", "join")),
        "pickle.loads": _reducer(pickle.loads, (pickle.dumps(_reducer(os.system, (cmd,))),)),
        "numpy.load": _reducer(np.load, (str(sentinel) + ".npy", "r", True)),
        "nested in a list inside a dict": {"ok": [1, 2, {"deep": _reducer(os.system, (cmd,))}]},
        "inside an object array": np.array([_reducer(os.system, (cmd,))], dtype=object),
    }


def opcode_payloads(sentinel):
    """Hand-written pickles: every opcode that makes the unpickler look up a global."""
    cmd = f"touch {sentinel}".encode()
    mod, name = PLANTED.encode(), b"run"
    short = lambda b: bytes([0x8c, len(b)]) + b   # noqa: E731  SHORT_BINUNICODE
    return {
        "GLOBAL os.system, protocol 0": b"cos\nsystem\n(S'" + cmd + b"'\ntR.",
        "GLOBAL posix.system": b"cposix\nsystem\n(S'" + cmd + b"'\ntR.",
        "GLOBAL builtins.eval": b"cbuiltins\neval\n(S'__import__(\"os\").system(\"" + cmd + b"\")'\ntR.",
        "GLOBAL subprocess.getoutput": b"csubprocess\ngetoutput\n(S'" + cmd + b"'\ntR.",
        "GLOBAL planted module": b"c" + mod + b"\n" + name + b"\n(tR.",
        "INST opcode": b"(S'" + cmd + b"'\nios\nsystem\n.",
        "OBJ opcode": b"(cos\nsystem\nS'" + cmd + b"'\no.",
        "STACK_GLOBAL os.system": b"\x80\x04" + short(b"os") + short(b"system") + b"\x93"
                                  + short(cmd) + b"\x85R.",
        "STACK_GLOBAL planted": b"\x80\x04" + short(mod) + short(name) + b"\x93)R.",
        "dotted name behind an allowed class": b"\x80\x04" + short(b"fastopt.schedules")
                                               + short(b"StepLR.__init__.__globals__") + b"\x93.",
        "allowed module, other name": b"cfastopt.schedules\nos\n.",
        "numpy but not allowed": b"cnumpy\nload\n(S'x'\ntR.",
        "numpy submodule path": b"cnumpy.lib.npyio\nload\n(S'x'\ntR.",
        "copyreg extension code": b"\x80\x02\x82\x01.",     # EXT1 1: unregistered, never resolved
        "persistent id": b"\x80\x02X\x02\x00\x00\x00idQ.",   # BINPERSID: no persistent_load
    }


def _assert_refused(data, check, *, needle=None):
    with pytest.raises(CheckpointError) as info:
        checkpoint.loads(data, source="evil.ckpt")
    assert "evil.ckpt" in str(info.value)
    if needle is not None:
        assert needle in str(info.value)
    check()


@pytest.mark.parametrize("case", sorted(reduce_payloads("S")))
def test_reduce_payloads_are_refused_by_load_and_loads(tmp_path, trap, case):
    sentinel, check = trap
    obj = reduce_payloads(sentinel)[case]
    data = framed(pickle.dumps(obj, protocol=5))
    _assert_refused(data, check, needle="not allowed")
    path = tmp_path / "evil.ckpt"
    path.write_bytes(data)
    with pytest.raises(CheckpointError, match="not allowed") as info:
        checkpoint.load(path)
    assert str(path) in str(info.value)
    check()


@pytest.mark.parametrize("case", sorted(opcode_payloads(b"S")))
def test_global_opcodes_are_refused(tmp_path, trap, case):
    sentinel, check = trap
    data = framed(opcode_payloads(sentinel)[case])
    _assert_refused(data, check)
    path = tmp_path / "evil.ckpt"
    path.write_bytes(data)
    with pytest.raises(CheckpointError):
        checkpoint.load(path)
    check()


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_refusal_does_not_depend_on_the_pickle_protocol(trap, protocol):
    sentinel, check = trap
    data = framed(pickle.dumps(_reducer(os.system, (f"touch {sentinel}",)), protocol=protocol))
    _assert_refused(data, check, needle="system")


CODE_NAMES = ["os:system", "os.system", "subprocess:Popen", "subprocess.Popen.__init__",
              "builtins.eval", "builtins:exec", "__import__('os').system('touch x')",
              f"{PLANTED}:run", f"{PLANTED}.run", "fastopt.checkpoint:_RestrictedUnpickler",
              "numpy:load", "pickle.loads", "importlib.import_module"]


def test_code_naming_strings_stay_strings(trap):
    """Strings naming code, in every position (keys, values, nested, arrays of str), load as strings."""
    sentinel, check = trap
    obj = {name: {"rule": name, "update_rule": name, "optim_config": {"args": [name, name]},
                  "cls": (name,), "kind": name}
           for name in CODE_NAMES}
    obj["names"] = np.array(CODE_NAMES)
    obj["nested"] = [[{"path": n}] for n in CODE_NAMES]
    data = checkpoint.dumps(obj)
    back = checkpoint.loads(data)
    assert back.keys() == obj.keys()
    for name in CODE_NAMES:
        assert back[name] == obj[name]
    assert back["names"].dtype == obj["names"].dtype and np.array_equal(back["names"], obj["names"])
    assert back["nested"] == obj["nested"]
    check()


def test_allowed_classes_only_as_listed(trap):
    """The allow-list is exact pairs: an allowed module does not open its other names."""
    _, check = trap
    for module, name in [("numpy", "ndarray.__reduce__"), ("collections", "namedtuple"),
                         ("builtins", "type"), ("builtins", "object"), ("fastopt.schedules", "np")]:
        data = framed(f"c{module}\n{name}\n.".encode())
        _assert_refused(data, check, needle=f"{module}.{name}")


def test_save_refuses_what_load_would_refuse(tmp_path, trap):
    """save() never writes a file that load() refuses, and the previous file stays as it was."""
    from fractions import Fraction
    _, check = trap
    path = tmp_path / "c.ckpt"
    checkpoint.save(path, {"lr": 0.1, "w": np.ones(3)})
    before, mode = path.read_bytes(), os.stat(path).st_mode
    for bad in [{"lr": Fraction(1, 3)}, {"f": os.getcwd}, {"cls": CheckpointError},
                {"obj": np.array([Fraction(1, 2)], dtype=object)}, {"lam": lambda: 0}]:
        with pytest.raises(CheckpointError, match="cannot save") as info:
            checkpoint.save(path, bad)
        assert str(path) in str(info.value)
        assert path.read_bytes() == before and os.stat(path).st_mode == mode
        assert sorted(os.listdir(tmp_path)) == sorted(["c.ckpt", f"{PLANTED}.py"])
    assert checkpoint.load(path)["lr"] == 0.1
    check()


def test_loads_refuses_non_bytes():
    for bad in [None, "FASTOPT-CKPT", 3, ["x"]]:
        with pytest.raises(TypeError, match="data must be the bytes"):
            checkpoint.loads(bad)
