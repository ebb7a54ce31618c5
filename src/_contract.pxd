# The kernel contract shared by every kernel module (norm, groupnorm, dropout, MLP, activation, L-BFGS): every buffer's extent is
# checked against the shape the kernel derives from its main input, and n_threads (always the last
# argument) is checked, before any memory is read or written. A wrong size raises ValueError naming
# the argument; nothing reachable from Python may read or write out of bounds.
#
# The checks take extents, not memoryviews: turning a memoryview slice back into a Python object
# costs about a microsecond per argument, the checks themselves a few nanoseconds.

# More threads than this are never useful for these kernels and could exhaust the process's thread
# limit (libgomp exits the process when it cannot create a thread); larger counts are capped.
cdef enum:
    MAX_THREADS = 256


cdef inline int check_1d(str name, Py_ssize_t got, Py_ssize_t want) except -1:
    if got != want:
        raise ValueError(f"{name} must have shape ({want},), got ({got},)")
    return 0


cdef inline int check_size(str name, Py_ssize_t got, Py_ssize_t want) except -1:
    # The flat-buffer kernels' form of check_1d: their arrays are views of any shape, so a count.
    if got != want:
        raise ValueError(f"{name} must have {want} elements, got {got}")
    return 0


cdef inline int check_2d(str name, Py_ssize_t n0, Py_ssize_t d0, Py_ssize_t n, Py_ssize_t d) except -1:
    if n0 != n or d0 != d:
        raise ValueError(f"{name} must have shape ({n}, {d}), got ({n0}, {d0})")
    return 0


cdef inline int check_3d(str name, Py_ssize_t a0, Py_ssize_t b0, Py_ssize_t c0,
                         Py_ssize_t a, Py_ssize_t b, Py_ssize_t c) except -1:
    if a0 != a or b0 != b or c0 != c:
        raise ValueError(f"{name} must have shape ({a}, {b}, {c}), got ({a0}, {b0}, {c0})")
    return 0


cdef inline int check_nonempty(str name, Py_ssize_t extent, str axis) except -1:
    # Kernels that read a first element (a shift, a first row) need one.
    if extent < 1:
        raise ValueError(f"{name} must have at least one {axis}, got 0")
    return 0


cdef inline int threads(int n_threads) except -1:
    """The thread count to hand to prange: n_threads >= 1 (else ValueError), capped at MAX_THREADS."""
    if n_threads < 1:
        raise ValueError(f"n_threads must be >= 1, got {n_threads}")
    return n_threads if n_threads < MAX_THREADS else MAX_THREADS
