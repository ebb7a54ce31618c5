"""How a layer function turns its read-only operands into the arrays it computes with.

The rule (every layer function of fastopt.layers follows it): arrays a layer only READS may be of
any real dtype and are converted as NumPy's promotion would (``compute_dtype``); ``as_operand``
makes the converted, C-contiguous operand. fastopt.layers.core re-exports both.
"""
import numpy as np

from .._validation import FLOAT_DTYPES, _describe


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
