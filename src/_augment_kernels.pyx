# Data augmentation: one pass over a batch of images (N, C*H*W in C order) applying, per example,
# a horizontal flip, a translation with zero padding (random crop after padding is the same map),
# mixup with a partner example of the batch, and additive noise.
#
#   A(m)[c, i, j] = xf_m[c, i - dy[m], j - dx[m]]  (0 outside the image), xf_m = x[m] flipped
#                   left-right when flip[m] (xf_m[c, r, s] = x[m, c, r, W-1-s])
#   v             = A(n)                                   when lam[n] == 1
#                   lam[n] * A(n) + (1 - lam[n]) * A(partner[n])   otherwise (in x's precision)
#   out[n, k]     = v + noise_scale * z(noise_keys[n], k)    (the add skipped when noise_scale == 0)
#
# z(key, k) is a standard normal drawn from a counter-based stream: the 64-bit hash (SplitMix64's
# finalizer) of key + (2**32 + k // 2 + 1) * golden gives, by Box-Muller, r cos(t) for even k and
# r sin(t) for odd k. log, sin and cos are computed here by short polynomials from +, -, *, / and
# frexp only, in double, in a fixed order: each of those is correctly rounded in C and in NumPy, so
# the twin reproduces the noise bit for bit (libm's and NumPy's log/cos differ in the last bits).
# Every output element is computed by one thread from inputs only, so the result does not depend on
# the thread count. The per-example parameters and keys come from fastopt/augment.py.
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport floor, frexp, sqrt
from libc.stdint cimport int64_t, uint8_t, uint64_t

from _contract cimport check_1d, check_2d, threads

# Elements (N * C * H * W) per thread below which the pass stays serial. Measured on the shared,
# loaded 2-core machine (float32, shift+flip+mixup+noise, min of 20): 1 thread 0.019 ms (64x64, a
# digits batch), 0.38 ms (32x3072), 3.2 ms (256x3072, a CIFAR batch); 2 threads 8-18 ms at every one
# of these sizes (the second core was busy). With noise (~30 ns a pixel: the draw dominates) 1 thread
# took 0.83 / 3.6-8.6 / 26-31 ms for 16 / 64 / 256 CIFAR images, 2 threads 16 / 14 / 37-40 ms. So a
# batch stays on one thread up to 1M elements per thread; re-measure on a quiet machine.
GRAIN = 1 << 20


# The noise stream and the polynomial log/sin/cos: the twin (fastopt/reference/augment.py) holds the
# same constants and the same operation order.
cdef uint64_t GOLDEN = 0x9E3779B97F4A7C15ULL
cdef uint64_t NOISE_SLOT0 = 1ULL << 32
cdef double SQRT_HALF = 0.7071067811865476
cdef double LN2 = 0.6931471805599453
cdef double HALF_PI = 1.5707963267948966


cdef inline uint64_t _mix64(uint64_t z) noexcept nogil:
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL
    return z ^ (z >> 31)


cdef inline double _log(double u) noexcept nogil:
    """log(u) for u > 0: u = m 2^e, m in [sqrt(1/2), sqrt(2)); log m = 2 atanh(t), t = (m-1)/(m+1)."""
    cdef int e
    cdef double m = frexp(u, &e), f, t, t2, p
    if m < SQRT_HALF:
        m = m * 2.0
        e = e - 1
    f = m - 1.0
    t = f / (2.0 + f)
    t2 = t * t
    p = t2 * (1.0 / 3.0 + t2 * (1.0 / 5.0 + t2 * (1.0 / 7.0 + t2 * (1.0 / 9.0 + t2 * (1.0 / 11.0 + t2 * (1.0 / 13.0))))))
    return <double> e * LN2 + 2.0 * (t + t * p)


cdef inline double _sin0(double x) noexcept nogil:
    """sin(x) on [0, pi/2]: Taylor to x^17 (error < 1e-13)."""
    cdef double x2 = x * x
    return x * (1.0 + x2 * (-1.0 / 6.0 + x2 * (1.0 / 120.0 + x2 * (-1.0 / 5040.0 + x2 * (1.0 / 362880.0
        + x2 * (-1.0 / 39916800.0 + x2 * (1.0 / 6227020800.0 + x2 * (-1.0 / 1307674368000.0
        + x2 * (1.0 / 355687428096000.0)))))))))


cdef inline double _cos0(double x) noexcept nogil:
    """cos(x) on [0, pi/2]: Taylor to x^18 (error < 1e-14)."""
    cdef double x2 = x * x
    return 1.0 + x2 * (-1.0 / 2.0 + x2 * (1.0 / 24.0 + x2 * (-1.0 / 720.0 + x2 * (1.0 / 40320.0
        + x2 * (-1.0 / 3628800.0 + x2 * (1.0 / 479001600.0 + x2 * (-1.0 / 87178291200.0
        + x2 * (1.0 / 20922789888000.0 + x2 * (-1.0 / 6402373705728000.0)))))))))


cdef inline double _normal_pair(uint64_t key, Py_ssize_t m, double *odd) noexcept nogil:
    """Normals 2m (returned: r cos t) and 2m+1 (into *odd: r sin t) of the stream `key`."""
    cdef uint64_t bits = _mix64(key + (NOISE_SLOT0 + <uint64_t> m + 1) * GOLDEN)
    cdef double r = sqrt(-2.0 * _log((<double> (bits >> 32) + 0.5) * (1.0 / 4294967296.0)))
    cdef double a = <double> (bits & 0xFFFFFFFFULL) * (4.0 / 4294967296.0)    # quarter turns in [0, 4)
    cdef double q = floor(a)
    cdef double x = (a - q) * HALF_PI
    cdef int quadrant = <int> q
    cdef double c0 = _cos0(x), s0 = _sin0(x)
    if quadrant == 0:
        odd[0] = r * s0
        return r * c0
    if quadrant == 1:
        odd[0] = r * c0
        return r * -s0
    if quadrant == 2:
        odd[0] = r * -s0
        return r * -c0
    odd[0] = r * -c0
    return r * s0


cdef inline floating _pixel(const floating[:, ::1] x, Py_ssize_t m, Py_ssize_t base, Py_ssize_t i,
                            Py_ssize_t j, Py_ssize_t H, Py_ssize_t W, int64_t dy, int64_t dx,
                            uint8_t flip) noexcept nogil:
    """A(m) at (channel offset base, row i, column j): the flipped, translated source pixel or 0."""
    cdef int64_t r, s
    if dy >= H or dy <= -H or dx >= W or dx <= -W:   # also keeps i - dy from overflowing
        return 0
    r = i - dy
    s = j - dx
    if r < 0 or r >= H or s < 0 or s >= W:
        return 0
    if flip:
        s = W - 1 - s
    return x[m, base + r * W + s]


cdef void _one(const floating[:, ::1] x, Py_ssize_t e, Py_ssize_t p, Py_ssize_t channels,
               Py_ssize_t height, Py_ssize_t width, const int64_t[::1] dy, const int64_t[::1] dx,
               const uint8_t[::1] flip, floating l, int64_t key, floating s,
               floating[:, ::1] out) noexcept nogil:
    """Example e of the pass (a function, so that z_odd is private to the thread running it)."""
    cdef Py_ssize_t k, base, i, j, c
    cdef floating v, ml = 1 - l
    cdef double z, z_odd = 0
    for c in range(channels):
        base = c * height * width
        for i in range(height):
            for j in range(width):
                v = _pixel(x, e, base, i, j, height, width, dy[e], dx[e], flip[e])
                if l != 1:
                    v = l * v + ml * _pixel(x, p, base, i, j, height, width, dy[p], dx[p], flip[p])
                k = base + i * width + j
                if s != 0:
                    # k runs 0, 1, 2, ... within an example: an even k draws the pair (k, k + 1)
                    if k % 2 == 0:
                        z = _normal_pair(<uint64_t> key, k // 2, &z_odd)
                    else:
                        z = z_odd
                    v = v + s * <floating> z
                out[e, k] = v


def augment_batch(const floating[:, ::1] x, Py_ssize_t channels, Py_ssize_t height, Py_ssize_t width,
                  const int64_t[::1] dy, const int64_t[::1] dx, const uint8_t[::1] flip,
                  const int64_t[::1] partner, const floating[::1] lam, const int64_t[::1] noise_keys,
                  double noise_scale, floating[:, ::1] out, int n_threads=1):
    """out = noise_scale * z + mix of the flipped, translated examples (module comment).

    x (IN, N x C*H*W), dy/dx (IN, int64 shifts down/right; any value, |shift| >= extent gives 0),
    flip (IN, uint8 0/1), partner (IN, int64 in [0, N)), lam (IN), noise_keys (IN, int64 holding
    each example's 64-bit noise key),
    out (OUT, N x C*H*W, may not alias x). ValueError for a wrong size or a partner out of range.
    """
    cdef Py_ssize_t n = x.shape[0], d = x.shape[1], e
    cdef floating s = <floating> noise_scale
    if channels < 1 or height < 1 or width < 1 or channels * height * width != d:
        raise ValueError(f"x must have channels*height*width = {channels}*{height}*{width} features "
                         f"per example, got {d}")
    check_1d("dy", dy.shape[0], n)
    check_1d("dx", dx.shape[0], n)
    check_1d("flip", flip.shape[0], n)
    check_1d("partner", partner.shape[0], n)
    check_1d("lam", lam.shape[0], n)
    check_1d("noise_keys", noise_keys.shape[0], n)
    check_2d("out", out.shape[0], out.shape[1], n, d)
    n_threads = threads(n_threads)
    for e in range(n):
        if partner[e] < 0 or partner[e] >= n:
            raise ValueError(f"partner must hold indices in [0, {n}), got {partner[e]} at {e}")
    with nogil:
        for e in prange(n, schedule='static', num_threads=n_threads):
            _one(x, e, partner[e], channels, height, width, dy, dx, flip, lam[e], noise_keys[e], s, out)
