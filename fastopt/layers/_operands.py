"""How a layer function turns its read-only operands into the arrays it computes with.

The rule (every layer function of fastopt.layers follows it): arrays a layer only READS may be of
any real dtype and are converted as NumPy's promotion would (``compute_dtype``); ``as_operand``
makes the converted, C-contiguous operand. fastopt.layers.core re-exports both. Arrays a layer
WRITES and returns come from ``output``.
"""
import math

import numpy as np

from .._validation import FLOAT_DTYPES, _describe, check_scalar


def compute_dtype(*named):
    """The float dtype a layer computes in for read-only operands `named` = (name, array) pairs.

    NumPy's promotion (np.result_type) of the operands' dtypes, with two adjustments: operands that
    are all integers give float64 (as NumPy's true division does), and float16 gives float32 (the
    kernels run float32/float64 only). Raises TypeError naming the operand that is not a real array.
    """
    dtypes = []
    for name, a in named:
        if not isinstance(a, np.ndarray):
            raise TypeError(f"{name} must be a NumPy array of real numbers, got {_describe(a)}")
        if a.dtype.kind not in "iuf":
            raise TypeError(f"{name} must have a real numeric dtype (integer or float), got {a.dtype}")
        dtypes.append(a.dtype)
    if not any(dt.kind == "f" for dt in dtypes):
        return np.dtype(np.float64)
    dt = np.result_type(*dtypes)
    if dt == np.float16:
        return np.dtype(np.float32)
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"{', '.join(n for n, _ in named)} promote to {dt}; "
                        f"fastopt computes in float32 or float64")
    return dt


def as_operand(a, dtype):
    """A read-only operand in `dtype`, C-contiguous (a copy only when needed; never written)."""
    return np.asarray(a, dtype=dtype, order="C")     # keeps a 0-d shape (ascontiguousarray makes it 1-d)


try:                                    # absent when the compiled core is not built
    from .. import _buffers
except ImportError:                     # a source checkout without the build: NumPy's allocator
    _buffers = None

# Outputs of at least this many bytes come from the block cache (fastopt._buffers: why, and how it
# bounds what it keeps). 32 MiB is glibc's largest mmap threshold: every block this big is fresh pages
# from the kernel, so the cache only catches what the allocator never reuses. Below it, glibc reuses
# freed blocks in a steady loop, and a cache there only moved the faults: holding fastopt's 16 MiB
# outputs made the caller's own 16 MiB np.empty fault instead (benchmarks/results/2026-12-04c-zen5/
# fresh_outputs_probe.txt).
CACHED_OUTPUT_BYTES = 32 << 20


def output(shape, dtype):
    """A new C-contiguous array for a layer's result (uninitialized, like np.empty)."""
    dtype = np.dtype(dtype)
    # math.prod, not np.prod: this runs on every layer call, and np.prod of a tuple costs ~2 us
    if _buffers is not None and math.prod(shape) * dtype.itemsize >= CACHED_OUTPUT_BYTES:
        return _buffers.empty(shape, dtype)
    return np.empty(shape, dtype)


def set_output_cache_limit(nbytes):
    """Keep at most `nbytes` of freed large layer outputs for reuse (256 MiB by default; 0 keeps
    none, and blocks held over the new limit are freed now)."""
    nbytes = check_scalar("nbytes", nbytes, low=0, integer=True)
    if _buffers is not None:
        _buffers.set_limit(nbytes)


def output_cache_stats():
    """{'hits', 'misses', 'blocks', 'bytes', 'limit'} of the output cache: allocations it served and
    did not, the freed blocks and bytes it holds now, its limit (all 0 without the compiled core)."""
    if _buffers is None:
        return dict.fromkeys(("hits", "misses", "blocks", "bytes", "limit"), 0)
    return _buffers.stats()
