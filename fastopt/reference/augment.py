"""Pure-NumPy twin of fastopt._augment_kernels: same name, same signature, bitwise the same result.

The same size checks as the kernel (ValueError) run before anything is written.
"""
import numpy as np

from ._contract import check_shapes, threads

GRAIN = 1 << 20   # the compiled module's constant (elements per thread); unused here


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


def augment_batch(x, channels, height, width, dy, dx, flip, partner, lam, noise, noise_scale, out,
                  n_threads=1):
    """The kernel's pass in NumPy (see src/_augment_kernels.pyx); n_threads is checked, then ignored."""
    n, d = x.shape
    if channels < 1 or height < 1 or width < 1 or channels * height * width != d:
        raise ValueError(f"x must have channels*height*width = {channels}*{height}*{width} features "
                         f"per example, got {d}")
    check_shapes((n,), dy=dy, dx=dx, flip=flip, partner=partner, lam=lam)
    check_shapes((n, d), noise=noise, out=out)
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
        v = v + s * noise
    out[...] = v
