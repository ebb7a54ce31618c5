"""NumPy's BLAS thread count, read and set through the OpenBLAS library NumPy loaded.

NumPy >= 2 wheels bundle scipy-openblas (older ones plain libopenblas); its get/set functions are
found through ctypes, which is what threadpoolctl does, so threadpoolctl is not needed. When NumPy's
BLAS is not OpenBLAS (MKL, Accelerate, a reference BLAS), the count is unknown (None) and setting it
does nothing. fastopt._backend uses the count for its thread policy beside BLAS (`beside_blas`).
"""
import contextlib
import ctypes
import re

import numpy as np  # noqa: F401  (loads NumPy's BLAS, which we look up below)

__all__ = ["blas_num_threads", "limit_blas_threads"]

_SYMBOLS = (("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
            ("scipy_openblas_get_num_threads", "scipy_openblas_set_num_threads"),
            ("openblas_get_num_threads64_", "openblas_set_num_threads64_"),
            ("openblas_get_num_threads", "openblas_set_num_threads"))
_lib = {}


def _openblas():
    """(get, set) ctypes functions of the OpenBLAS NumPy loaded, or None (looked up once)."""
    if "fns" not in _lib:
        _lib["fns"] = None
        try:
            with open("/proc/self/maps") as f:
                paths = sorted(set(re.findall(r"(/\S*openblas\S*\.so[\w.]*)", f.read())))
        except OSError:
            paths = []
        for path in paths:
            try:
                lib = ctypes.CDLL(path)
            except OSError:
                continue
            for get, set_ in _SYMBOLS:
                if hasattr(lib, get) and hasattr(lib, set_):
                    getf, setf = getattr(lib, get), getattr(lib, set_)
                    getf.restype, getf.argtypes = ctypes.c_int, []
                    setf.restype, setf.argtypes = None, [ctypes.c_int]
                    _lib["fns"] = (getf, setf)
                    break
            if _lib["fns"] is not None:
                break
    return _lib["fns"]


def blas_num_threads():
    """Threads NumPy's OpenBLAS uses for a matmul, or None when NumPy's BLAS is not OpenBLAS."""
    fns = _openblas()
    return None if fns is None else int(fns[0]())


@contextlib.contextmanager
def limit_blas_threads(n):
    """Run a block with NumPy's OpenBLAS on `n` threads (no-op when it is not OpenBLAS)."""
    fns = _openblas()
    if fns is None:
        yield
        return
    previous = int(fns[0]())
    fns[1](int(n))
    try:
        yield
    finally:
        fns[1](previous)
