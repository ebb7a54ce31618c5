# Inverted-dropout kernels: draw a keep-mask from a NumPy bit generator, and scale by the mask.
#
# The mask is drawn with one `next_double` per element, compared with p (u < p keeps the unit):
# exactly the stream `numpy.random.Generator(bit_generator).random(n) < p` consumes, and for a
# legacy-seeded MT19937 exactly `np.random.RandomState(seed).rand(n) < p` (CS231n's mask). So the
# mask is the same for float32 and float64 inputs, and the NumPy twin reproduces it bit for bit.
# Drawing is sequential by nature and dominates the cost (a call through the bit generator's
# function pointer per element), so the forward pass is one serial loop; the backward pass is a
# cheap elementwise product that may run in parallel. Both check every buffer's size first
# (src/_contract.pxd) and take n_threads last.
from cython cimport floating
from cython.parallel cimport prange
from libc.stdint cimport uint8_t
from cpython.pycapsule cimport PyCapsule_GetPointer, PyCapsule_IsValid
from numpy.random cimport bitgen_t
from numpy.random import BitGenerator as _BitGenerator

from _contract cimport check_1d, threads

# Elements per thread below which the backward scaling pass (dropout_apply) stays serial. Measured
# (min of 15, 2 cores, float32): 65536 elements took 0.023 ms on 1 thread and 0.016 ms on 2; 1M
# 0.28 vs 0.18 ms. The forward pass is serial (see dropout_train).
GRAIN = 32768


cdef bitgen_t *_bitgen_of(bit_generator) except NULL:
    """The C state behind a numpy.random.BitGenerator (its capsule, see numpy's Cython docs)."""
    cdef const char *name = "BitGenerator"
    if not isinstance(bit_generator, _BitGenerator):
        raise TypeError(f"bit_generator must be a numpy.random.BitGenerator, got {type(bit_generator).__name__}")
    capsule = bit_generator.capsule
    if not PyCapsule_IsValid(capsule, name):
        raise TypeError("bit_generator must be a numpy.random.BitGenerator (invalid capsule)")
    return <bitgen_t *> PyCapsule_GetPointer(capsule, name)


cdef void _train(bitgen_t *rng, const floating[::1] x, double p, floating s,
                 uint8_t[::1] mask, floating[::1] out) noexcept nogil:
    cdef Py_ssize_t i
    cdef uint8_t keep
    for i in range(x.shape[0]):
        keep = rng.next_double(rng.state) < p
        mask[i] = keep
        out[i] = x[i] * (keep * s)


def dropout_train(const floating[::1] x, double p, double scale, bit_generator,
                  uint8_t[::1] mask, floating[::1] out, int n_threads=1):
    """Draw the keep-mask and apply it in one serial pass: mask = (u < p), out = x * (mask * scale).

    x (IN), mask (OUT, uint8 0/1), out (OUT, may not alias x); scale is rounded to x's precision.
    Consumes x.size doubles from `bit_generator`, holding its lock like NumPy's own samplers.
    Serial on purpose: the draws must be sequential and cost ~10x the multiply. Measured on the
    shared, loaded 2-core machine (1M float32, PCG64, min of 41, interleaved): this fused loop
    3.6 ms; the same draws followed by a 2-thread scaling pass 19 ms (OpenMP's spinning workers
    compete with the serial draws). n_threads (>= 1) is checked like every kernel's and otherwise
    unused: the one contract for all kernels, and room for a parallel pass should one pay.
    """
    check_1d("mask", mask.shape[0], x.shape[0])
    check_1d("out", out.shape[0], x.shape[0])
    threads(n_threads)
    cdef bitgen_t *rng = _bitgen_of(bit_generator)
    with bit_generator.lock, nogil:
        _train(rng, x, p, <floating> scale, mask, out)


def dropout_apply(const floating[::1] x, const uint8_t[::1] mask, double scale,
                  floating[::1] out, int n_threads=1):
    """out = x * (mask * scale) elementwise, in x's precision (scale rounded to it first).

    x (IN), mask (IN, 0/1), out (OUT, may not alias x). The backward pass: dx = dout * mask / p.
    A dropped unit gives x * 0: +-0, or NaN when x is NaN/inf (as x * mask does in CS231n).
    """
    cdef floating s = <floating> scale
    cdef Py_ssize_t i, n = x.shape[0]
    check_1d("mask", mask.shape[0], n)
    check_1d("out", out.shape[0], n)
    n_threads = threads(n_threads)
    with nogil:
        for i in prange(n, schedule='static', num_threads=n_threads):
            out[i] = x[i] * (mask[i] * s)
