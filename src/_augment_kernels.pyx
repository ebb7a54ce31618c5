# Data augmentation: one pass over a batch of images (N, C*H*W in C order) applying, per example,
# a horizontal flip, a translation with zero padding (random crop after padding is the same map),
# mixup with a partner example of the batch, and additive noise.
#
#   A(m)[c, i, j] = xf_m[c, i - dy[m], j - dx[m]]  (0 outside the image), xf_m = x[m] flipped
#                   left-right when flip[m] (xf_m[c, r, s] = x[m, c, r, W-1-s])
#   v             = A(n)                                   when lam[n] == 1
#                   lam[n] * A(n) + (1 - lam[n]) * A(partner[n])   otherwise (in x's precision)
#   out[n]        = v + noise_scale * noise[n]             (the add skipped when noise_scale == 0)
#
# Every output element is computed by one thread from inputs only, so the result does not depend on
# the thread count. The per-example parameters and the noise are drawn by the caller
# (fastopt/augment.py) from a counter-based stream; this pass only moves and mixes pixels.
from cython cimport floating
from cython.parallel cimport prange
from libc.stdint cimport int64_t, uint8_t

from _contract cimport check_1d, check_2d, threads

# Elements (N * C * H * W) per thread below which the pass stays serial. Measured on the shared,
# loaded 2-core machine (float32, shift+flip+mixup+noise, min of 20): 1 thread 0.019 ms (64x64, a
# digits batch), 0.38 ms (32x3072), 3.2 ms (256x3072, a CIFAR batch); 2 threads 8-18 ms at every one
# of these sizes (the second core was busy). So a batch stays on one thread up to 1M elements per
# thread; re-measure on a quiet machine before lowering it.
GRAIN = 1 << 20


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


def augment_batch(const floating[:, ::1] x, Py_ssize_t channels, Py_ssize_t height, Py_ssize_t width,
                  const int64_t[::1] dy, const int64_t[::1] dx, const uint8_t[::1] flip,
                  const int64_t[::1] partner, const floating[::1] lam, const floating[:, ::1] noise,
                  double noise_scale, floating[:, ::1] out, int n_threads=1):
    """out = noise_scale * noise + mix of the flipped, translated examples (module comment).

    x (IN, N x C*H*W), dy/dx (IN, int64 shifts down/right; any value, |shift| >= extent gives 0),
    flip (IN, uint8 0/1), partner (IN, int64 in [0, N)), lam (IN), noise (IN, N x C*H*W),
    out (OUT, N x C*H*W, may not alias x). ValueError for a wrong size or a partner out of range.
    """
    cdef Py_ssize_t n = x.shape[0], d = x.shape[1], e, k, base, i, j, c, p
    cdef floating l, ml, v, s = <floating> noise_scale
    if channels < 1 or height < 1 or width < 1 or channels * height * width != d:
        raise ValueError(f"x must have channels*height*width = {channels}*{height}*{width} features "
                         f"per example, got {d}")
    check_1d("dy", dy.shape[0], n)
    check_1d("dx", dx.shape[0], n)
    check_1d("flip", flip.shape[0], n)
    check_1d("partner", partner.shape[0], n)
    check_1d("lam", lam.shape[0], n)
    check_2d("noise", noise.shape[0], noise.shape[1], n, d)
    check_2d("out", out.shape[0], out.shape[1], n, d)
    n_threads = threads(n_threads)
    for e in range(n):
        if partner[e] < 0 or partner[e] >= n:
            raise ValueError(f"partner must hold indices in [0, {n}), got {partner[e]} at {e}")
    with nogil:
        for e in prange(n, schedule='static', num_threads=n_threads):
            p = partner[e]
            l = lam[e]
            ml = 1 - l
            for c in range(channels):
                base = c * height * width
                for i in range(height):
                    for j in range(width):
                        v = _pixel(x, e, base, i, j, height, width, dy[e], dx[e], flip[e])
                        if l != 1:
                            v = l * v + ml * _pixel(x, p, base, i, j, height, width, dy[p], dx[p], flip[p])
                        k = base + i * width + j
                        if s != 0:
                            v = v + s * noise[e, k]
                        out[e, k] = v
