"""The kernel contract of src/_contract.pxd, for the NumPy twins: the same checks, the same messages.

A twin given a buffer of the wrong size raises the ValueError its compiled kernel raises, instead of
broadcasting it silently (a (1,) gamma would otherwise be accepted for any D).
"""
import operator

MAX_THREADS = 256   # the compiled modules' cap on n_threads (src/_contract.pxd)


def check_shape(name, a, shape):
    if a.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {a.shape}")


def check_shapes(shape, **arrays):
    """Every array given by keyword must have `shape`."""
    for name, a in arrays.items():
        check_shape(name, a, shape)


def check_size(name, a, n):
    """The flat-buffer kernels' check (src/_contract.pxd check_size): a 1-D `a` of n elements."""
    if a.shape != (n,):
        got = a.shape[0] if a.ndim == 1 else f"shape {a.shape}"
        raise ValueError(f"{name} must have {n} elements, got {got}")


def check_nonempty(name, extent, axis):
    if extent < 1:
        raise ValueError(f"{name} must have at least one {axis}, got 0")


def threads(n_threads):
    """n_threads must be an int >= 1 (the twins run on one thread whatever it is)."""
    n = operator.index(n_threads)
    if n < 1:
        raise ValueError(f"n_threads must be >= 1, got {n}")
    return min(n, MAX_THREADS)
