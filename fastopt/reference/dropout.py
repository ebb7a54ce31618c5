"""Pure-NumPy twin of fastopt._dropout_kernels: same names, same signatures, same results.

`dropout_train` consumes the bit generator's stream exactly as the kernel does (one double per
element, u < p keeps), so both give the identical mask from the same generator state. The same size
checks as the kernels (ValueError) run before anything is drawn or written.
"""
import numpy as np

from ._contract import check_shapes, threads

GRAIN = 32768   # the compiled module's constant (elements per thread of dropout_apply); unused here


def _check(x, mask, out, n_threads):
    check_shapes(x.shape, mask=mask, out=out)
    threads(n_threads)


def dropout_train(x, p, scale, bit_generator, mask, out, n_threads=1):
    """mask = (u < p) for x.size uniform doubles u from `bit_generator`; out = x * (mask * scale)."""
    _check(x, mask, out, n_threads)
    if not isinstance(bit_generator, np.random.BitGenerator):
        raise TypeError(f"bit_generator must be a numpy.random.BitGenerator, got {type(bit_generator).__name__}")
    # A Generator wrapping the bit generator shares (and advances) its state and its lock.
    np.less(np.random.Generator(bit_generator).random(x.shape[0]), p, out=mask, casting="unsafe")
    dropout_apply(x, mask, scale, out, 1)


def dropout_apply(x, mask, scale, out, n_threads=1):
    """out = x * (mask * scale), with scale rounded to x's precision first; n_threads is ignored."""
    _check(x, mask, out, n_threads)
    np.multiply(x, mask * x.dtype.type(scale), out=out)
