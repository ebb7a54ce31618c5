"""Pure-NumPy twin of fastopt._augment_kernels: same name, same signature, bitwise the same result.

The same size checks as the kernel (ValueError) run before anything is written. The noise is the
kernel's stream computed the same way: the same hash, and log/sin/cos by the same polynomials in the
same operation order (each +, -, *, /, sqrt, frexp correctly rounded in both), so it agrees bitwise.
"""
import numpy as np

from ._contract import check_shapes, threads

GRAIN = 1 << 20   # the compiled module's constant (elements per thread); unused here


GOLDEN = np.uint64(0x9E3779B97F4A7C15)
NOISE_SLOT0 = np.uint64(1 << 32)
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
SQRT_HALF = 0.7071067811865476
LN2 = 0.6931471805599453
HALF_PI = 1.5707963267948966


def mix64(z):
    """SplitMix64's finalizer on a uint64 array (wrapping arithmetic): a bijective 64-bit hash."""
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def poly_log(u):
    """log(u), u > 0, as the kernel computes it (u = m 2^e; log m = 2 atanh((m-1)/(m+1)))."""
    m, e = np.frexp(u)
    small = m < SQRT_HALF
    m = np.where(small, m * 2.0, m)
    e = (e - small).astype(np.float64)
    f = m - 1.0
    t = f / (2.0 + f)
    t2 = t * t
    p = t2 * (1.0 / 3.0 + t2 * (1.0 / 5.0 + t2 * (1.0 / 7.0 + t2 * (1.0 / 9.0 + t2 * (1.0 / 11.0 + t2 * (1.0 / 13.0))))))
    return e * LN2 + 2.0 * (t + t * p)


def _sin0(x):
    x2 = x * x
    return x * (1.0 + x2 * (-1.0 / 6.0 + x2 * (1.0 / 120.0 + x2 * (-1.0 / 5040.0 + x2 * (1.0 / 362880.0
        + x2 * (-1.0 / 39916800.0 + x2 * (1.0 / 6227020800.0 + x2 * (-1.0 / 1307674368000.0
        + x2 * (1.0 / 355687428096000.0)))))))))


def _cos0(x):
    x2 = x * x
    return 1.0 + x2 * (-1.0 / 2.0 + x2 * (1.0 / 24.0 + x2 * (-1.0 / 720.0 + x2 * (1.0 / 40320.0
        + x2 * (-1.0 / 3628800.0 + x2 * (1.0 / 479001600.0 + x2 * (-1.0 / 87178291200.0
        + x2 * (1.0 / 20922789888000.0 + x2 * (-1.0 / 6402373705728000.0)))))))))


def poly_sincos_turns(a):
    """(sin, cos) of 2 pi a for a in [0, 1), as the kernel computes them (quadrant + Taylor)."""
    a = a * 4.0
    q = np.floor(a)
    x = (a - q) * HALF_PI
    s0, c0 = _sin0(x), _cos0(x)
    quadrant = q.astype(np.int64)
    sin = np.choose(quadrant, [s0, c0, -s0, -c0])
    cos = np.choose(quadrant, [c0, -s0, -c0, s0])
    return sin, cos


def normals(keys, features):
    """(N, features) float64: standard normal k of each example's stream keys[n] (int64 bits)."""
    k = np.arange(features, dtype=np.uint64)
    bits = mix64(keys.view(np.uint64)[:, None] + (NOISE_SLOT0 + k // np.uint64(2) + np.uint64(1)) * GOLDEN)
    r = np.sqrt(-2.0 * poly_log(((bits >> np.uint64(32)).astype(np.float64) + 0.5) * (1.0 / 4294967296.0)))
    sin, cos = poly_sincos_turns((bits & np.uint64(0xFFFFFFFF)).astype(np.float64) * (1.0 / 4294967296.0))
    return r * np.where((k % np.uint64(2) == 0)[None, :], cos, sin)


def _translated(x, channels, height, width, dy, dx, flip):
    """A(m) for every example m: flipped left-right where flip, then shifted by (dy, dx), zero-filled."""
    n = x.shape[0]
    img = x.reshape(n, channels, height, width)
    img = np.where(flip.astype(bool)[:, None, None, None], img[..., ::-1], img)
    rows = np.arange(height)[None, :] - np.clip(dy, -height, height)[:, None]     # (n, H) source rows
    cols = np.arange(width)[None, :] - np.clip(dx, -width, width)[:, None]       # (n, W) source cols
    ok = ((rows >= 0) & (rows < height))[:, :, None] & ((cols >= 0) & (cols < width))[:, None, :]
    r = np.clip(rows, 0, height - 1)[:, None, :, None]
    c = np.clip(cols, 0, width - 1)[:, None, None, :]
    moved = img[np.arange(n)[:, None, None, None], np.arange(channels)[None, :, None, None], r, c]
    return np.where(ok[:, None], moved, x.dtype.type(0)).reshape(n, -1)


def augment_batch(x, channels, height, width, dy, dx, flip, partner, lam, noise_keys, noise_scale, out,
                  n_threads=1):
    """The kernel's pass in NumPy (see src/_augment_kernels.pyx); n_threads is checked, then ignored."""
    n, d = x.shape
    if channels < 1 or height < 1 or width < 1 or channels * height * width != d:
        raise ValueError(f"x must have channels*height*width = {channels}*{height}*{width} features "
                         f"per example, got {d}")
    check_shapes((n,), dy=dy, dx=dx, flip=flip, partner=partner, lam=lam, noise_keys=noise_keys)
    check_shapes((n, d), out=out)
    threads(n_threads)
    bad = np.flatnonzero((partner < 0) | (partner >= n))
    if bad.size:
        raise ValueError(f"partner must hold indices in [0, {n}), got {partner[bad[0]]} at {bad[0]}")
    t = x.dtype.type
    a = _translated(x, channels, height, width, dy, dx, flip)
    l = lam[:, None]
    mixed = l * a + (t(1) - l) * a[partner]
    v = np.where(l != 1, mixed, a)
    s = t(noise_scale)
    if s != 0:
        v = v + s * normals(noise_keys, d).astype(x.dtype)
    out[...] = v
