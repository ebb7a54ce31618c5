"""Which implementation runs the kernels, and on how many threads.

Every kernel family exists twice with the same function names and signatures: a compiled module
``fastopt._<family>_kernels`` and its pure-NumPy twin ``fastopt.reference.<family>``. The Python API
asks :func:`kernels` for the family's module at call time, so ``set_backend`` takes effect at once.
"""
import importlib
import os
import warnings

_BACKENDS = ("cython", "numpy")
_state = {"backend": None, "threads": None}
_modules = {}


def _compiled_available():
    try:
        importlib.import_module("fastopt._openmp")
    except ImportError:
        return False
    return True


def _default_backend():
    requested = os.environ.get("FASTOPT_BACKEND", "").strip().lower()
    if requested:
        if requested not in _BACKENDS:
            raise ValueError(f"FASTOPT_BACKEND must be one of {_BACKENDS}, got {requested!r}")
        if requested == "cython" and not _compiled_available():
            raise ImportError("FASTOPT_BACKEND=cython but the compiled core is not built; "
                              "install fastopt with pip so its extensions are compiled")
        return requested
    if _compiled_available():
        return "cython"
    warnings.warn("fastopt's compiled core is not built; using the pure-NumPy backend",
                  RuntimeWarning, stacklevel=3)
    return "numpy"


def backend():
    """The active backend: "cython" (the compiled core) or "numpy" (the reference twins)."""
    if _state["backend"] is None:
        _state["backend"] = _default_backend()
    return _state["backend"]


def set_backend(name):
    """Route every kernel to "cython" (compiled) or "numpy" (fastopt.reference)."""
    if not isinstance(name, str):
        raise TypeError(f"backend name must be a str, got {type(name).__name__}")
    name = name.strip().lower()
    if name not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, got {name!r}")
    if name == "cython" and not _compiled_available():
        raise ImportError("the compiled core is not built; reinstall fastopt with pip")
    _state["backend"] = name


def kernels(family):
    """The module implementing kernel `family` ("optim", "norm", ...) on the active backend."""
    key = (backend(), family)
    module = _modules.get(key)
    if module is None:
        name = f"fastopt._{family}_kernels" if key[0] == "cython" else f"fastopt.reference.{family}"
        module = _modules[key] = importlib.import_module(name)
    return module


def _default_threads():
    env = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if env:
        try:
            n = int(env)
        except ValueError:
            n = 0
        if n > 0:
            return n
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def get_num_threads():
    """Threads a large kernel may use: set_num_threads, else OMP_NUM_THREADS, else usable cores."""
    if _state["threads"] is None:
        _state["threads"] = _default_threads()
    return _state["threads"]


def set_num_threads(n):
    """Set how many threads large kernels use (n >= 1). Results do not depend on it."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n must be an int >= 1, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    _state["threads"] = n


def threads_for(work, grain):
    """Threads for a kernel over `work` items: one below `grain` items per thread.

    `grain` is each kernel family's benchmarked size under which splitting costs more than it saves.
    """
    threads = get_num_threads()
    if threads == 1 or work < 2 * grain:
        return 1
    return min(threads, work // grain)


def openmp_enabled():
    """True when the compiled core was built with OpenMP."""
    if not _compiled_available():
        return False
    return importlib.import_module("fastopt._openmp").openmp_enabled()
