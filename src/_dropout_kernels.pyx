# Inverted-dropout kernels: draw a keep-mask from a NumPy bit generator, and scale by the mask.
#
# The mask is drawn with one `next_double` per element, compared with p (u < p keeps the unit):
# exactly the stream `numpy.random.Generator(bit_generator).random(n) < p` consumes, and for a
# legacy-seeded MT19937 exactly `np.random.RandomState(seed).rand(n) < p` (CS231n's mask). So the
# mask is the same for float32 and float64 inputs, and the NumPy twin reproduces it bit for bit.
# Drawing is sequential by nature and dominates the cost (a call through the bit generator's
# function pointer per element); scaling is a cheap elementwise pass that may run in parallel.
from cython cimport floating
from cython.parallel cimport prange
from libc.stdint cimport uint8_t
from cpython.pycapsule cimport PyCapsule_GetPointer, PyCapsule_IsValid
from numpy.random cimport bitgen_t


cdef bitgen_t *_bitgen_of(bit_generator) except NULL:
    """The C state behind a numpy.random.BitGenerator (its capsule, see numpy's Cython docs)."""
    cdef const char *name = "BitGenerator"
    capsule = bit_generator.capsule
    if not PyCapsule_IsValid(capsule, name):
        raise TypeError("bit_generator must be a numpy.random.BitGenerator (invalid capsule)")
    return <bitgen_t *> PyCapsule_GetPointer(capsule, name)


cdef void _draw_mask(bitgen_t *rng, double p, uint8_t[::1] mask) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(mask.shape[0]):
        mask[i] = rng.next_double(rng.state) < p


def dropout_mask(bit_generator, double p, uint8_t[::1] mask):
    """Fill `mask` (OUT) with 1 where a uniform draw u in [0, 1) satisfies u < p, else 0.

    Consumes mask.size doubles from `bit_generator`, holding its lock like NumPy's own samplers.
    """
    cdef bitgen_t *rng = _bitgen_of(bit_generator)
    with bit_generator.lock, nogil:
        _draw_mask(rng, p, mask)


def dropout_apply(const floating[::1] x, const uint8_t[::1] mask, double scale,
                  floating[::1] out, int n_threads):
    """out = x * (mask * scale) elementwise, in x's precision (scale rounded to it first).

    x (IN), mask (IN, 0/1), out (OUT, may not alias x). Serves forward (x) and backward (dout).
    A dropped unit gives x * 0: +-0, or NaN when x is NaN/inf (as x * mask does in CS231n).
    """
    cdef floating s = <floating> scale
    cdef Py_ssize_t i, n = x.shape[0]
    with nogil:
        for i in prange(n, schedule='static', num_threads=n_threads):
            out[i] = x[i] * (mask[i] * s)
