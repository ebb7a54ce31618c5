"""Thread policy of the MLP fast path: NumPy's BLAS pool and fastopt's OpenMP pool share the cores.

A training step alternates big matmuls (NumPy's OpenBLAS, its own pthread pool) with short fused
kernels (fastopt's OpenMP pool, 10-300 us each). When BOTH pools run more than one thread, the
workers of the pool that just finished keep spinning for a while and steal the cores from the
other: measured on the 2-core box (tools/profile_mlp_step.py, batch 256, 3072-1024-1024-10) the
step took 83 ms with the kernels on 2 threads against 44 ms with them on 1 thread (torch: 43 ms).
With OpenBLAS on ONE thread there is nothing to collide with and the kernels gain from 2 threads.
So: the kernels between matmuls run on one thread whenever NumPy's BLAS runs on more than one.

NumPy's BLAS thread count is read from the OpenBLAS library NumPy loaded (numpy >= 2 wheels bundle
scipy-openblas; older ones plain libopenblas) through ctypes, which is what threadpoolctl does; when
no OpenBLAS is found (MKL, Accelerate, a reference BLAS) the count is unknown and the policy
falls back to fastopt's own thread count.
"""
import contextlib
import ctypes
import re

import numpy as np  # noqa: F401  (loads NumPy's BLAS, which we look up below)

from .. import _backend

__all__ = ["blas_num_threads", "limit_blas_threads", "kernel_threads"]

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


def kernel_threads(work, grain):
    """Threads for a fused kernel over `work` elements run between BLAS calls (module docstring)."""
    n = _backend.threads_for(work, grain)
    if n > 1:
        blas = blas_num_threads()
        if blas is not None and blas > 1:
            return 1
    return n
