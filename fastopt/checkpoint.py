"""Atomic, checksummed checkpoint files holding plain data (dicts, lists, numbers, strings, arrays).

File format (version 1):

    b"FASTOPT-CKPT\\x01\\n"   14-byte magic (the \\x01 is the format version)
    32 bytes               SHA-256 of the payload
    payload                a pickle (protocol 5) of the object

Writing is atomic: the bytes go to a temporary file in the destination's directory, which is flushed
and fsync'ed, then ``os.replace``d over the destination (and the directory fsync'ed where the OS
allows). A crash or an exception at any point before the rename leaves the previous file untouched,
and the temporary file is removed when Python is still running to do so.

Reading checks the magic and the checksum before unpickling (a truncated or damaged file is reported
as such, never half-loaded), and unpickles with an allow-list: only NumPy arrays/scalars/dtypes,
builtin containers and fastopt's schedule classes can be reconstructed, so loading a file cannot run
arbitrary code the way ``pickle.load`` can.
"""
import hashlib
import io
import os
import pickle
import tempfile

MAGIC = b"FASTOPT-CKPT\x01\n"
_DIGEST = 32

# (module, name) pairs the loader may reconstruct. NumPy moved its pickling helpers from numpy.core
# to numpy._core in 2.0; files written by either are accepted.
_ALLOWED = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("collections", "OrderedDict"),
    ("builtins", "complex"), ("builtins", "slice"), ("builtins", "frozenset"), ("builtins", "set"),
    ("fastopt.schedules", "StepLR"), ("fastopt.schedules", "ExponentialLR"),
    ("fastopt.schedules", "CosineLR"), ("fastopt.schedules", "LinearWarmup"),
}


class CheckpointError(ValueError):
    """A checkpoint file is corrupt, truncated, not a fastopt checkpoint, or holds forbidden objects."""


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise CheckpointError(f"checkpoint refers to {module}.{name}, which is not allowed in a "
                              f"fastopt checkpoint (only arrays, plain data and fastopt schedules)")


def atomic_write_bytes(path, data):
    """Write `data` to `path` so that readers see either the old file or the complete new one."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_directory(directory)


def _fsync_directory(directory):
    """Make the rename itself durable (POSIX); silently skipped where directories cannot be opened."""
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def dumps(obj):
    """The bytes of a checkpoint file holding `obj`."""
    payload = pickle.dumps(obj, protocol=5)
    return MAGIC + hashlib.sha256(payload).digest() + payload


def loads(data, source="checkpoint"):
    """Inverse of dumps(); raises CheckpointError (a ValueError) naming `source` on any damage."""
    if not data.startswith(MAGIC):
        raise CheckpointError(f"{source} is not a fastopt checkpoint (bad header)")
    header = len(MAGIC) + _DIGEST
    if len(data) < header:
        raise CheckpointError(f"{source} is truncated ({len(data)} bytes)")
    digest, payload = data[len(MAGIC):header], data[header:]
    if hashlib.sha256(payload).digest() != digest:
        raise CheckpointError(f"{source} is corrupt: checksum mismatch (truncated or damaged file)")
    try:
        return _RestrictedUnpickler(io.BytesIO(payload)).load()
    except CheckpointError:
        raise
    except Exception as exc:  # a well-checksummed but unreadable payload: wrong writer, bad pickle
        raise CheckpointError(f"{source} could not be decoded: {type(exc).__name__}: {exc}") from exc


def save(path, obj):
    """Atomically write `obj` (plain data and arrays) to `path` as a checkpoint file."""
    atomic_write_bytes(path, dumps(obj))


def load(path):
    """Read a checkpoint file written by save(). FileNotFoundError if absent, CheckpointError if bad."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()
    return loads(data, source=f"checkpoint file {path!r}")
