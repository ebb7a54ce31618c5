"""Atomic, checksummed checkpoint files holding plain data (dicts, lists, numbers, strings, arrays).

File format (version 1):

    b"FASTOPT-CKPT\\x01\\n"   14-byte magic (the \\x01 is the format version)
    32 bytes               SHA-256 of the payload
    payload                a pickle (protocol 5) of the object

Writing is atomic: the bytes go to a temporary file in the destination's directory, which is flushed
and fsync'ed, then ``os.replace``d over the destination (and the directory fsync'ed where the OS
allows). A crash or an exception at any point before the rename leaves the previous file untouched,
and the temporary file is removed when Python is still running to do so; when it is not (SIGKILL,
power cut), the next save of the same file removes it (temporaries are named after their target and
their writer's pid). The replaced file's permission bits are kept. ``save`` reads back what it is
about to write with the loader's allow-list, so it never writes a file that ``load`` refuses.

Reading checks the magic and the checksum before unpickling (a truncated or damaged file is reported
as such, never half-loaded), and unpickles with an allow-list: only NumPy arrays/scalars/dtypes,
builtin containers and fastopt's schedule classes can be reconstructed, so loading a file cannot run
arbitrary code the way ``pickle.load`` can.
"""
import hashlib
import io
import os
import pickle
import secrets
import stat

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
}


class CheckpointError(ValueError):
    """A checkpoint file is corrupt, truncated, not a fastopt checkpoint, or holds forbidden objects."""


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise CheckpointError(f"checkpoint refers to {module}.{name}, which is not allowed in a "
                              f"fastopt checkpoint (only arrays and plain data)")


# Temporary files are named ".<target>.<pid>.<random>.fastopt-tmp" beside the target: recognisable,
# tied to their target, and to the process writing them, so that a later save can tell an orphan
# (its writer was killed, e.g. by SIGKILL or a power cut) from a save in progress in a live process.
_TMP_SUFFIX = ".fastopt-tmp"


def _temp_name(target):
    return f".{target}.{os.getpid()}.{secrets.token_hex(8)}{_TMP_SUFFIX}"


def _orphan_writer(target, name):
    """The pid of the writer of temporary file `name` of `target` when that process is gone, else None."""
    prefix = f".{target}."
    if not (name.startswith(prefix) and name.endswith(_TMP_SUFFIX)):
        return None
    parts = name[len(prefix):-len(_TMP_SUFFIX)].split(".")
    if len(parts) != 2 or not parts[0].isdigit() or len(parts[1]) != 16:
        return None
    try:
        int(parts[1], 16)
    except ValueError:
        return None
    pid = int(parts[0])
    if pid == os.getpid():
        return None                     # this process's own save (another thread) may be writing it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return pid
    except (PermissionError, OSError, OverflowError):
        return None                     # alive under another user, or cannot tell: leave it
    return None


def remove_orphan_temporaries(path):
    """Delete the temporary files that killed saves of `path` left behind; returns their names.

    Only files named like this module's temporaries of this very target, whose writing process no
    longer exists, are removed: other files, other targets' temporaries and saves in progress in
    live processes are never touched.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    target = os.path.basename(path)
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        if _orphan_writer(target, name) is None:
            continue
        try:
            os.unlink(os.path.join(directory, name))
        except FileNotFoundError:
            continue                    # another save removed it first
        removed.append(name)
    return removed


def _mode_for(path):
    """The permission bits the new file keeps: the replaced file's, or None for a new file."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return None


def atomic_write_bytes(path, data):
    """Write `data` to `path` so that readers see either the old file or the complete new one.

    The file keeps the permission bits of the file it replaces; a new file gets the default of a
    newly created file (0666 less the umask). Orphaned temporaries of earlier killed writes of the
    same path are removed first.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    remove_orphan_temporaries(path)
    tmp = os.path.join(directory, _temp_name(os.path.basename(path)))
    mode = _mode_for(path)
    # O_EXCL: never follow or reuse an existing file; 0o666 is reduced by the umask as for any new file.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            if mode is not None:
                os.fchmod(fd, mode)
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
    """The bytes of a checkpoint file holding `obj`; CheckpointError if loads() would refuse them.

    What is pickled is read back with the loader's own allow-list unpickler first, so an object
    that loads() refuses (a Fraction, a function, a user class) is refused here, before any file is
    written. (The check rebuilds the object once: transiently twice its memory.)
    """
    try:
        payload = pickle.dumps(obj, protocol=5)
    except Exception as exc:   # PicklingError, or whatever a __reduce__ raises
        raise CheckpointError(f"the object cannot be pickled: {type(exc).__name__}: {exc}") from exc
    try:
        _unpickle(payload)
    except CheckpointError as exc:
        raise CheckpointError(f"load() would refuse the file: {exc}") from exc
    return MAGIC + hashlib.sha256(payload).digest() + payload


def loads(data, source="checkpoint"):
    """Inverse of dumps(); raises CheckpointError (a ValueError) naming `source` on any damage."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be the bytes of a checkpoint, got {type(data).__name__}")
    data = bytes(data)
    if not data.startswith(MAGIC):
        raise CheckpointError(f"{source} is not a fastopt checkpoint (bad header)")
    header = len(MAGIC) + _DIGEST
    if len(data) < header:
        raise CheckpointError(f"{source} is truncated ({len(data)} bytes)")
    digest, payload = data[len(MAGIC):header], data[header:]
    if hashlib.sha256(payload).digest() != digest:
        raise CheckpointError(f"{source} is corrupt: checksum mismatch (truncated or damaged file)")
    try:
        return _unpickle(payload)
    except CheckpointError as exc:
        raise CheckpointError(f"{source}: {exc}") from exc.__cause__


def _unpickle(payload):
    """The object in a payload, through the allow-list; CheckpointError for anything else."""
    try:
        return _RestrictedUnpickler(io.BytesIO(payload)).load()
    except CheckpointError:
        raise
    except Exception as exc:  # a well-checksummed but unreadable payload: wrong writer, bad pickle
        raise CheckpointError(f"could not be decoded: {type(exc).__name__}: {exc}") from exc


def save(path, obj):
    """Atomically write `obj` (plain data and arrays) to `path` as a checkpoint file.

    dumps() checks the object first: what load() would refuse raises CheckpointError before the
    previous file is replaced.
    """
    path = os.fspath(path)
    try:
        data = dumps(obj)
    except CheckpointError as exc:
        raise CheckpointError(f"cannot save to {path!r}: {exc}") from exc
    atomic_write_bytes(path, data)


def load(path):
    """Read a checkpoint file written by save(). FileNotFoundError if absent, CheckpointError if bad."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()
    return loads(data, source=f"checkpoint file {path!r}")
