"""Inverted dropout, CS231n-compatible: p is the probability of KEEPING a unit.

Train mode: mask = (u < p) for u uniform in [0, 1), out = x * mask / p; the mask is drawn inside
the compiled kernel from a NumPy bit generator and kept in the cache as uint8 (1 byte a unit).
Test mode: out is x itself (not a copy), as in CS231n; do not write into it expecting x unchanged.

Where the random numbers come from (one uniform double per element, in C order of x):
- ``dropout_param['seed']`` (int in [0, 2**32); None means absent): a fresh
  ``np.random.RandomState(seed)`` stream on every call, so the same seed gives the same mask -- the
  very mask CS231n's reference code draws (``np.random.seed(seed); np.random.rand(*x.shape) < p``),
  without touching NumPy's global state.
- ``dropout_param['rng']``: a ``np.random.Generator`` or ``np.random.RandomState`` you own; each
  call advances it exactly as ``rng.random(x.size)`` would.
- neither: NumPy's global RandomState, advanced exactly as CS231n's ``np.random.rand(*x.shape)``
  advances it, so ``np.random.seed(...)`` makes runs reproducible and matches CS231n's numbers.
  For faster draws pass ``'rng': np.random.default_rng(...)`` (PCG64 draws ~2x faster than MT19937).
The mask does not depend on the dtype of x (float32 and float64 see the same mask) nor on the
thread count.

Opt-in counter-based generator: ``dropout_param['generator'] = 'philox'`` (default ``'numpy'``,
the NumPy stream above). The mask then comes from Philox4x32-10 (Salmon et al., SC11; Random123's
constants), computed in parallel by the kernel (fastopt._dropout_kernels.dropout_train_philox, NumPy
twin fastopt.reference.dropout): element g of x (C order) is kept iff its 32-bit word is below
floor(p * 2**32), and that word depends only on ``(seed, offset + g)``:
- ``dropout_param['seed']`` (required with 'philox'): an int in [0, 2**64), the Philox key. The
  same seed gives the same mask on every call (pass a new seed per training step, e.g. derived
  from (run seed, step, layer), for fresh masks);
- ``dropout_param['offset']`` (int >= 0, default 0): the global index of x's first element. A batch
  split over workers reproduces the whole batch's mask: rows [a, b) of an (N, ...) batch use
  ``offset = a * (x.size // N)`` (plus the whole batch's offset).
No generator state is consumed, 'rng' is refused, and the mask is the same for any thread count,
SIMD variant and dtype. It is a different stream from CS231n's (the notebooks' checks use the
default generator).

Dtypes (fastopt.layers.core.compute_dtype, as every layer function): x and dout are only read and may
have any real dtype; an integer or float16 array is converted (to float64 / float32), and out and dx
have the converted dtype. A float32/float64 x is used as it is (test mode returns it itself).
"""
import numbers

import numpy as np

from .. import _backend
from .._validation import _describe, check_choice, check_scalar
from ._operands import as_operand, compute_dtype, output

__all__ = ["dropout_forward", "dropout_backward"]

_MODES = ("train", "test")
_GENERATORS = ("numpy", "philox")


def _bit_generator(dropout_param):
    """The BitGenerator the mask is drawn from (see the module docstring for the three cases)."""
    if dropout_param.get("seed") is not None:
        # RandomState(seed) seeds MT19937 the legacy way, like np.random.seed: CS231n's stream.
        return np.random.RandomState(dropout_param["seed"])._bit_generator
    rng = dropout_param.get("rng")
    if rng is None:
        rng = np.random.mtrand._rand  # the RandomState behind np.random.rand / np.random.seed
    if isinstance(rng, np.random.Generator):
        return rng.bit_generator
    return rng._bit_generator  # RandomState keeps its BitGenerator here (and its lock is the same)


def _check_p(name, p):
    return check_scalar(f"{name}['p'] (probability of keeping a unit)", p, low=0.0, high=1.0, low_open=True)


def _check_param(dropout_param):
    """Validate dropout_param; returns (p, mode). Raises before anything is drawn or allocated."""
    if not isinstance(dropout_param, dict):
        raise TypeError(f"dropout_param must be a dict with keys 'p' and 'mode', "
                        f"got {type(dropout_param).__name__}")
    for key in ("p", "mode"):
        if key not in dropout_param:
            raise ValueError(f"dropout_param must have key {key!r} (keys 'p', 'mode', optional "
                             f"'seed' or 'rng', 'generator', 'offset'), got keys {sorted(map(str, dropout_param))}")
    p = _check_p("dropout_param", dropout_param["p"])
    mode = check_choice("dropout_param['mode']", dropout_param["mode"], _MODES)
    generator = check_choice("dropout_param['generator']", dropout_param.get("generator", "numpy"), _GENERATORS)
    seed = dropout_param.get("seed")
    rng = dropout_param.get("rng")
    if seed is not None and rng is not None:
        raise ValueError("dropout_param may give 'seed' or 'rng', not both")
    if generator == "philox":
        if rng is not None:
            raise ValueError("dropout_param['generator'] = 'philox' draws from (seed, offset), not from 'rng'")
        if seed is None:
            raise ValueError("dropout_param['generator'] = 'philox' needs dropout_param['seed'] (int in [0, 2**64))")
        _check_int("dropout_param['seed']", seed, 2**64)
        _check_int("dropout_param['offset']", dropout_param.get("offset", 0), 2**64)
    else:
        if dropout_param.get("offset", 0) != 0:
            raise ValueError("dropout_param['offset'] is for generator 'philox'; the NumPy stream has none")
        if seed is not None:
            _check_int("dropout_param['seed']", seed, 2**32)
    if rng is not None and not isinstance(rng, (np.random.Generator, np.random.RandomState)):
        raise TypeError(f"dropout_param['rng'] must be a numpy.random.Generator or RandomState, "
                        f"got {type(rng).__name__}")
    return p, mode, generator


def _check_int(name, value, end):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not 0 <= value < end:
        raise ValueError(f"{name} must be in [0, {'2**64' if end == 2**64 else '2**32'}), got {value}")
    return int(value)


def dropout_forward(x, dropout_param):
    """Inverted dropout. Returns (out, cache).

    x: a real array of any shape (module docstring). dropout_param: dict with 'p' in (0, 1]
    (probability of keeping a unit), 'mode' ('train' or 'test'), optional 'seed' or 'rng',
    'generator' ('numpy' or 'philox') and, with 'philox', 'offset' (module docstring).
    Train: out = x * mask / p, a new array of x's shape (out and the mask from
    fastopt.layers._operands.output: those of 32 MiB and more come from its block cache, so a loop's
    freed results are reused without page faults). Test: out is x itself (converted when x is not
    float32/float64).
    """
    p, mode, generator = _check_param(dropout_param)
    dt = compute_dtype(("x", x))
    if mode == "test":
        return np.asarray(x, dtype=dt), ({"p": p, "mode": mode}, None)
    x_flat = as_operand(x, dt).reshape(-1)  # read only: a copy is harmless for an input
    out, mask = output(x_flat.shape, dt), output(x_flat.shape, np.uint8)
    k = _backend.kernels("dropout")
    if generator == "philox":
        k.dropout_train_philox(x_flat, p, 1.0 / p, int(dropout_param["seed"]), int(dropout_param.get("offset", 0)),
                               mask, out, _backend.threads_for(x_flat.shape[0], k.GRAIN))
    else:
        k.dropout_train(x_flat, p, 1.0 / p, _bit_generator(dropout_param), mask, out, n_threads=1)
    # A snapshot of p and mode: later edits of dropout_param (say mode='test') cannot desync backward.
    return out.reshape(x.shape), ({"p": p, "mode": mode}, mask.reshape(x.shape))


def _check_cache(cache):
    """(p, mode, mask) of a dropout_forward cache; a cache not made by it is refused, not trusted."""
    expected = "the (params, mask) tuple returned by dropout_forward"
    if not (isinstance(cache, tuple) and len(cache) == 2 and isinstance(cache[0], dict)):
        raise TypeError(f"cache must be {expected}, got {type(cache).__name__}")
    params, mask = cache
    if set(params) != {"p", "mode"}:
        raise ValueError(f"cache must be {expected}: its params must have keys 'p' and 'mode', "
                         f"got keys {sorted(map(str, params))}")
    mode = check_choice("cache params['mode']", params["mode"], _MODES)
    if mode == "test":
        if mask is not None:
            raise ValueError(f"cache must be {expected}: a test-mode cache has no mask")
        return None, mode, None
    p = _check_p("cache params", params["p"])
    if not isinstance(mask, np.ndarray) or mask.dtype != np.uint8:
        raise TypeError(f"cache must be {expected}: its mask must be a uint8 ndarray, got {_describe(mask)}")
    if mask.size and int(mask.max()) > 1:
        raise ValueError(f"cache must be {expected}: its mask must hold 0 and 1 only, got {int(mask.max())}")
    return p, mode, mask


def dropout_backward(dout, cache):
    """Gradient of dropout_forward: dx = dout * mask / p in train mode; dout itself in test mode."""
    p, mode, mask = _check_cache(cache)
    dt = compute_dtype(("dout", dout))
    if mode == "test":
        return np.asarray(dout, dtype=dt)
    if dout.shape != mask.shape:
        raise ValueError(f"dout must have shape {mask.shape} (the x of dropout_forward), got {dout.shape}")
    dout_flat = as_operand(dout, dt).reshape(-1)
    dx = output(dout_flat.shape, dout_flat.dtype)
    k = _backend.kernels("dropout")
    k.dropout_apply(dout_flat, np.ascontiguousarray(mask).reshape(-1), 1.0 / p, dx,
                    n_threads=_backend.threads_for(dx.shape[0], k.GRAIN))
    return dx.reshape(dout.shape)
