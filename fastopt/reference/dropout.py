"""Pure-NumPy twin of fastopt._dropout_kernels: same names, same signatures, same results.

`dropout_mask` consumes the bit generator's stream exactly as the kernel does (one double per
element, u < p keeps), so both give the identical mask from the same generator state.
"""
import numpy as np


def dropout_mask(bit_generator, p, mask):
    """Fill uint8 `mask` with (u < p) for mask.size uniform doubles drawn from `bit_generator`."""
    # A Generator wrapping the bit generator shares (and advances) its state and its lock.
    np.less(np.random.Generator(bit_generator).random(mask.shape[0]), p, out=mask, casting="unsafe")


def dropout_apply(x, mask, scale, out, n_threads):
    """out = x * (mask * scale), with scale rounded to x's precision first; n_threads is ignored."""
    np.multiply(x, mask * x.dtype.type(scale), out=out)
