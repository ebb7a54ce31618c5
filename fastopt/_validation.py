"""Argument checks shared by every public entry point.

Convention: a wrong type or dtype raises TypeError, a wrong shape, layout or value raises
ValueError, and the message names the argument, what it got and what it expected. Callers check
everything first and only then touch an array, so a call that raises has changed nothing.
"""
import copy
import math
import numbers

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
INT64_LIMIT = 2**63      # integer arguments without an explicit upper bound must be below it


def _describe(value):
    if isinstance(value, np.ndarray):
        return f"ndarray of dtype {value.dtype} and shape {value.shape}"
    return type(value).__name__


def _short(value, limit=40):
    """repr(value), cut in the middle when long (a 400-digit int in a message helps nobody)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit // 2]}...{text[-limit // 2:]} ({len(text)} chars)"


def check_array(name, a, *, writeable=False, contiguous=True, dtype=None, shape=None):
    """`a` must be a float32/float64 ndarray (of `dtype`/`shape` when given), C-contiguous if asked.

    Parameters are never copied silently: a copy would break in-place semantics, so a
    non-contiguous or read-only array is refused rather than fixed.
    """
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array of float32 or float64, got {_describe(a)}")
    if a.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must have dtype float32 or float64, got {a.dtype}")
    if dtype is not None and a.dtype != dtype:
        raise TypeError(f"{name} must have dtype {np.dtype(dtype)} (matching its partner), got {a.dtype}")
    if shape is not None and a.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {a.shape}")
    if contiguous and not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (it is updated in place and never copied); "
                         f"pass np.ascontiguousarray(...) and keep that array")
    if writeable and not a.flags.writeable:
        raise ValueError(f"{name} must be writeable: it is updated in place")
    return a


def check_like(name, a, ref_name, ref, *, writeable=False):
    """`a` must be an array with `ref`'s dtype and shape (a grad beside its param, a state buffer)."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array like {ref_name} "
                        f"({ref.dtype}, shape {ref.shape}), got {_describe(a)}")
    if a.dtype != ref.dtype:
        raise TypeError(f"{name} must have the dtype of {ref_name} ({ref.dtype}), got {a.dtype}")
    if a.shape != ref.shape:
        raise ValueError(f"{name} must have the shape of {ref_name} {ref.shape}, got {a.shape}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")
    if writeable and not a.flags.writeable:
        raise ValueError(f"{name} must be writeable: it is updated in place")
    return a


def check_distinct(named_arrays):
    """No array (or overlapping view) may appear twice among arrays that are written or read.

    `named_arrays` is a sequence of (name, array). Identity is checked first (cheap), then memory
    overlap of the remaining pairs (bounds only: may_share_memory never scans the data).
    """
    seen = {}
    for name, a in named_arrays:
        other = seen.get(id(a))
        if other is not None:
            raise ValueError(f"{name} is the same array as {other}; each array may be given once")
        seen[id(a)] = name
    items = list(named_arrays)
    if len(items) > 64:
        # Sort by start address so overlapping ranges are neighbours: O(n log n) instead of O(n^2).
        spans = sorted((a.__array_interface__["data"][0], a.__array_interface__["data"][0] + a.nbytes, name)
                       for name, a in items if a.nbytes)
        for (s0, e0, n0), (s1, e1, n1) in zip(spans, spans[1:]):
            if s1 < e0:
                raise ValueError(f"{n1} overlaps the memory of {n0}; each array may be given once")
        return
    for i in range(len(items)):
        for j in range(i + 1, len(items)):
            if np.may_share_memory(items[i][1], items[j][1]):
                raise ValueError(f"{items[j][0]} overlaps the memory of {items[i][0]}; "
                                 f"each array may be given once")


def check_scalar(name, value, *, low=None, high=None, low_open=False, high_open=False, integer=False):
    """A finite real number (an int when `integer`) within [low, high]; `*_open` excludes the bound.

    Returns it as a Python float (or int). bool, None, strings and arrays are refused (TypeError); a
    number beyond float range (10**400) or, for an int without `high`, beyond int64, is a ValueError.
    """
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, kind):
        expected = "an int" if integer else "a real number"
        raise TypeError(f"{name} must be {expected}, got {_describe(value)}")
    if integer:
        value = int(value)
        # Counts, steps and seeds end up in int64 arrays or float arithmetic (beta ** t): an int
        # beyond int64 is refused here, unless the caller's own bounds say otherwise.
        if (high is None and value >= INT64_LIMIT) or (low is None and value < -INT64_LIMIT):
            raise ValueError(f"{name} must be an int in the int64 range, got {_short(value)}")
    else:
        try:
            value = float(value)
        except OverflowError:   # an int (or Fraction) beyond float range, such as 10**400
            raise ValueError(f"{name} must be finite, got a number too large for a float "
                             f"({_short(value)})") from None
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value}")
    if low is not None and (value < low or (low_open and value == low)):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {_short(value)}")
    if high is not None and (value > high or (high_open and value == high)):
        raise ValueError(f"{name} must be {'<' if high_open else '<='} {high}, got {_short(value)}")
    return value


def check_bool(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {_describe(value)}")
    return bool(value)


def check_choice(name, value, choices):
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


def check_rng_state(name, state, like=None):
    """`state` must be a valid `bit_generator.state` of the bit generator `like` (default: NumPy's
    default Generator's, PCG64), checked on a probe (a copy of `like`), so nothing is changed; the
    state's own 'bit_generator' name only has to match like's type: it never picks one."""
    probe = np.random.default_rng().bit_generator if like is None else copy.deepcopy(like)
    try:
        probe.state = state
    except (TypeError, ValueError, KeyError) as exc:
        raise ValueError(f"{name} is not a valid {type(probe).__name__} state: {exc}") from exc
    # NumPy's setter reads the keys it knows and ignores the rest: a key it does not have is refused
    # here, so that what loads is exactly a state (and a file cannot smuggle data through it).
    extra = _extra_keys(state, probe.state)
    if extra:
        raise ValueError(f"{name} is not a valid {type(probe).__name__} state: unexpected keys {', '.join(extra)}")


def _extra_keys(got, want, path=""):
    """The keys of dict `got` (and of its dict values, by path) that `want` does not have."""
    out = []
    for key, value in got.items():
        where = f"{path}[{key!r}]"
        if key not in want:
            out.append(where)
        elif isinstance(value, dict) and isinstance(want[key], dict):
            out.extend(_extra_keys(value, want[key], where))
    return out
