# The flat-buffer kernels of L-BFGS (fastopt/optim/lbfgs.py): dot products, axpys and the two
# reductions the tolerances need, on 1-D C-contiguous float32/float64 memoryviews.
#
# Reductions are deterministic: the vector is cut into fixed BLOCK-element blocks (the partition
# depends on the length only), each block is summed in double into LANES independent partial sums
# (element k to lane k % LANES: vector accumulators without reassociation, no -ffast-math), the
# lanes are added in lane order, and the block sums are added in block order after the parallel
# loop. Threads only decide who computes a block, so results are bitwise the same for any n_threads.
# Elementwise updates stay in the array's precision; the scalar is converted to it once.
# n_threads is the last argument (the caller passes fastopt._backend.threads_for(n, GRAIN)). Every
# buffer's size (against x's) and n_threads are checked (src/_contract.pxd) before any memory is touched.
#
# No AVX2 variant: these loops are memory bound (one or two reads, at most one write per element),
# and a double reduction does not vectorize wider without reassociation, which would change bits.
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport fabs
from libc.stdlib cimport malloc, free

from _contract cimport check_size, threads

SIMD_VARIANT = "sse2"

# Elements per thread below which a second thread does not pay: taken from the optimizer kernels'
# measurement (src/_optim_kernels.pxi, SGD: one read-modify-write pass like axpy, gains from 64k
# per thread on), not re-measured for these loops.
GRAIN = 65536

cdef enum:
    BLOCK = 4096      # elements per partial sum; fixed, so the partition depends on n alone
    LANES = 8         # independent double accumulators within a block

# Python-visible copies of the partition constants (the NumPy twin mirrors them).
BLOCK_SIZE = BLOCK
N_LANES = LANES


cdef double* _partials(Py_ssize_t n) except NULL:
    cdef Py_ssize_t nb = (n + BLOCK - 1) // BLOCK
    cdef double* work = <double*>malloc((nb if nb > 0 else 1) * sizeof(double))
    if work == NULL:
        raise MemoryError(f"cannot allocate {nb} partial sums")
    return work


cdef double _combine(double* part, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t b, nb = (n + BLOCK - 1) // BLOCK
    cdef double total = 0.0
    for b in range(nb):
        total += part[b]
    return total


cdef double _block_sum(bint absolute, const floating* x, const floating* y, Py_ssize_t m) noexcept nogil:
    # sum(x*y) or sum(|x|) over one block in LANES lanes; `absolute` is loop invariant (GCC unswitches).
    cdef double acc[LANES]
    cdef Py_ssize_t i, j
    cdef double s = 0.0
    for j in range(LANES):
        acc[j] = 0.0
    i = 0
    while i + LANES <= m:
        for j in range(LANES):
            acc[j] += fabs(<double>x[i + j]) if absolute else <double>x[i + j] * <double>y[i + j]
        i += LANES
    for j in range(m - i):
        acc[j] += fabs(<double>x[i + j]) if absolute else <double>x[i + j] * <double>y[i + j]
    for j in range(LANES):
        s += acc[j]
    return s


cdef double _block_abs_max(const floating* x, Py_ssize_t m) noexcept nogil:
    # NaN propagates (any NaN makes the result NaN), as torch's abs().max() and np.max do.
    cdef Py_ssize_t i
    cdef double v, s = 0.0
    for i in range(m):
        v = fabs(<double>x[i])
        if v > s or v != v:
            s = v
            if v != v:
                break
    return s


cdef enum:
    K_DOT = 0
    K_ABS_SUM = 1
    K_ABS_MAX = 2


cdef double _block(int kind, const floating* x, const floating* y, Py_ssize_t m) noexcept nogil:
    if kind == K_ABS_MAX:
        return _block_abs_max(x, m)
    return _block_sum(kind == K_ABS_SUM, x, y, m)


cdef double _reduce(int kind, const floating[::1] x, const floating[::1] y, int n_threads) except? -1.0:
    # The one blocked reduction: block partials in parallel, combined in block order afterwards.
    cdef Py_ssize_t n = x.shape[0], b, lo, nb = (x.shape[0] + BLOCK - 1) // BLOCK
    cdef double total = 0.0, v
    if n == 0:
        return 0.0
    cdef double* part = _partials(n)
    try:
        for b in prange(nb, schedule='static', num_threads=n_threads, nogil=True):
            lo = b * BLOCK
            part[b] = _block(kind, &x[lo], &y[lo], min(<Py_ssize_t>BLOCK, n - lo))
        if kind != K_ABS_MAX:
            total = _combine(part, n)
        else:
            for b in range(nb):
                v = part[b]
                if v > total or v != v:
                    total = v
                    if v != v:
                        break
    finally:
        free(part)
    return total


def dot(const floating[::1] x not None, const floating[::1] y not None, int n_threads):
    """sum(x * y) accumulated in double over fixed blocks (bitwise independent of n_threads)."""
    check_size("y", y.shape[0], x.shape[0])
    return _reduce(K_DOT, x, y, threads(n_threads))


def abs_sum(const floating[::1] x not None, int n_threads):
    """sum(|x|) accumulated in double over fixed blocks."""
    return _reduce(K_ABS_SUM, x, x, threads(n_threads))


def abs_max(const floating[::1] x not None, int n_threads):
    """max(|x|) (0 for an empty x); NaN when x holds a NaN, inf when it holds an infinity."""
    return _reduce(K_ABS_MAX, x, x, threads(n_threads))


def axpy(floating[::1] y not None, double a, const floating[::1] x not None, int n_threads):
    """y += a * x, in place, in y's precision."""
    cdef Py_ssize_t i, n = x.shape[0]
    check_size("y", y.shape[0], n)
    n_threads = threads(n_threads)
    cdef floating a_ = <floating>a
    for i in prange(n, schedule='static', num_threads=n_threads, nogil=True):
        y[i] = y[i] + a_ * x[i]


def axpy_dot(floating[::1] y not None, double a, const floating[::1] x not None,
             const floating[::1] z not None, int n_threads):
    """y += a * x in place, then return dot(y, z): the two-loop recursion's update fused with the
    next dot product (one pass over y instead of two). Same blocks as dot, so the value is bitwise
    dot(y_new, z)."""
    cdef Py_ssize_t n = x.shape[0], b, lo, i, m, nb = (x.shape[0] + BLOCK - 1) // BLOCK
    check_size("y", y.shape[0], n)
    check_size("z", z.shape[0], n)
    n_threads = threads(n_threads)
    cdef floating a_ = <floating>a
    if n == 0:
        return 0.0
    cdef double* part = _partials(n)
    cdef double total
    try:
        for b in prange(nb, schedule='static', num_threads=n_threads, nogil=True):
            lo = b * BLOCK
            m = min(<Py_ssize_t>BLOCK, n - lo)
            for i in range(lo, lo + m):
                y[i] = y[i] + a_ * x[i]
            part[b] = _block_sum(False, &y[lo], &z[lo], m)
        total = _combine(part, n)
    finally:
        free(part)
    return total


def add_scaled(floating[::1] out not None, const floating[::1] x not None, double a,
               const floating[::1] d not None, int n_threads):
    """out = x + a * d (a trial point of the line search); out may not overlap x or d."""
    cdef Py_ssize_t i, n = x.shape[0]
    check_size("out", out.shape[0], n)
    check_size("d", d.shape[0], n)
    n_threads = threads(n_threads)
    cdef floating a_ = <floating>a
    for i in prange(n, schedule='static', num_threads=n_threads, nogil=True):
        out[i] = x[i] + a_ * d[i]


def scale(floating[::1] out not None, double a, const floating[::1] x not None, int n_threads):
    """out = a * x (out may be x itself)."""
    cdef Py_ssize_t i, n = x.shape[0]
    check_size("out", out.shape[0], n)
    n_threads = threads(n_threads)
    cdef floating a_ = <floating>a
    for i in prange(n, schedule='static', num_threads=n_threads, nogil=True):
        out[i] = a_ * x[i]
