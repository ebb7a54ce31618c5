"""Pure-NumPy twin of fastopt._dropout_kernels: same names, same signatures, same results.

`dropout_train` consumes the bit generator's stream exactly as the kernel does (one double per
element, u < p keeps), so both give the identical mask from the same generator state.
"""
import numpy as np


def dropout_train(x, p, scale, bit_generator, mask, out):
    """mask = (u < p) for x.size uniform doubles u from `bit_generator`; out = x * (mask * scale)."""
    # A Generator wrapping the bit generator shares (and advances) its state and its lock.
    np.less(np.random.Generator(bit_generator).random(x.shape[0]), p, out=mask, casting="unsafe")
    dropout_apply(x, mask, scale, out, 1)


def dropout_apply(x, mask, scale, out, n_threads):
    """out = x * (mask * scale), with scale rounded to x's precision first; n_threads is ignored."""
    np.multiply(x, mask * x.dtype.type(scale), out=out)
