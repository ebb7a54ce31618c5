"""NumPy's BLAS thread count, read and set through threadpoolctl.

threadpoolctl finds the BLAS libraries loaded in the process and drives each through its own API
(OpenBLAS and scipy-openblas builds, MKL, BLIS, FlexiBLAS; Linux, macOS and Windows), where the
hand-written ctypes lookup it replaces only found OpenBLAS on Linux. Of the BLAS libraries loaded,
fastopt controls NumPy's: the one inside NumPy's installation (numpy.libs/, numpy/.dylibs/, ...);
another one (torch's, scipy's) is only taken when NumPy's is not among them. When no BLAS can be
controlled (Accelerate, a reference BLAS), the count is unknown (None) and setting it does nothing.

The library is looked up once (NumPy loads its BLAS at import, before this module runs); after that
reading the count is one call into the library (~0.5 us), cheap enough for fastopt._backend's thread
policy beside BLAS (`beside_blas`), which asks on every kernel call.
"""
import contextlib
import os
import threading

import numpy as np
from threadpoolctl import ThreadpoolController

from ._validation import check_scalar

__all__ = ["blas_library", "blas_num_threads", "limit_blas_threads"]

_NUMPY_DIR = os.path.dirname(os.path.dirname(os.path.abspath(np.__file__)))  # site-packages (or the tree)
_found = {}
_lock = threading.Lock()


def _is_numpys(lib):
    """Whether a threadpoolctl controller is the BLAS shipped with (or beside) NumPy's package."""
    path = os.path.abspath(lib.filepath or "")
    return os.path.basename(os.path.dirname(path)).startswith("numpy") and path.startswith(_NUMPY_DIR)


def _controller():
    """The threadpoolctl controller of NumPy's BLAS, or None (looked up once, thread-safely)."""
    if "lib" not in _found:
        with _lock:
            if "lib" not in _found:
                libs = ThreadpoolController().select(user_api="blas").lib_controllers
                numpys = [lib for lib in libs if _is_numpys(lib)]
                _found["lib"] = (numpys or libs or [None])[0]
    return _found["lib"]


def blas_library():
    """threadpoolctl's description of NumPy's BLAS (a dict: internal_api, version, filepath,
    num_threads, ...), or None when no controllable BLAS is loaded."""
    lib = _controller()
    return None if lib is None else lib.info()


def blas_num_threads():
    """Threads NumPy's BLAS uses for a matmul, or None when its BLAS cannot be controlled."""
    lib = _controller()
    return None if lib is None else int(lib.get_num_threads())


@contextlib.contextmanager
def limit_blas_threads(n):
    """Run a block with NumPy's BLAS on `n` threads (int >= 1); restored on exit, also after an error.

    A no-op when NumPy's BLAS cannot be controlled. Process-wide, like the BLAS setting itself.
    """
    n = check_scalar("n", n, low=1, integer=True)
    lib = _controller()
    if lib is None:
        yield
        return
    previous = int(lib.get_num_threads())
    lib.set_num_threads(int(n))
    try:
        yield
    finally:
        lib.set_num_threads(previous)
