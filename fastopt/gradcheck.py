"""Numerical gradient checking by centered differences, CS231n-compatible.

Each probe writes x[i] + h and x[i] - h into x itself (f sees x), and puts the original value back
even when f raises, so x is unchanged afterwards. Check in float64: in float32 the rounding error of
f(x + h) - f(x - h) swamps the difference for any useful h.
"""
import numpy as np

from ._validation import _describe, check_array, check_bool, check_scalar

__all__ = ["eval_numerical_gradient", "eval_numerical_gradient_array", "rel_error",
           "grad_check_sparse"]


def _check_probe_args(f, x, h):
    if not callable(f):
        raise TypeError(f"f must be a callable taking x, got {_describe(f)}")
    check_array("x", x, writeable=True, contiguous=False)
    return check_scalar("h", h, low=0.0, low_open=True)


def _check_seed(seed):
    """None or an int in [0, 2**128) (what np.random.default_rng takes as a plain seed)."""
    if seed is None:
        return None
    return check_scalar("seed", seed, low=0, high=2**128, high_open=True, integer=True)


def _centered(fn, x, ix, h):
    """(fn(x with x[ix] + h), fn(x with x[ix] - h)), x[ix] restored whatever happens."""
    old = x[ix]
    try:
        x[ix] = old + h
        pos = fn()
        x[ix] = old - h
        neg = fn()
    finally:
        x[ix] = old
    return pos, neg


def eval_numerical_gradient(f, x, verbose=True, h=1e-5):
    """Gradient of the scalar function f at x: grad[i] = (f(x + h e_i) - f(x - h e_i)) / (2h).

    f takes x (the same array, probed in place) and returns a real number. Prints each index and
    its partial derivative when verbose, as CS231n's version does.
    """
    h = _check_probe_args(f, x, h)
    verbose = check_bool("verbose", verbose)
    grad = np.zeros_like(x)
    for ix in np.ndindex(x.shape):
        fxph, fxmh = _centered(lambda: float(f(x)), x, ix, h)
        grad[ix] = (fxph - fxmh) / (2 * h)
        if verbose:
            print(ix, grad[ix])
    return grad


def eval_numerical_gradient_array(f, x, df, h=1e-5):
    """Numerical gradient of sum(df * f(x)) with respect to x, for an array-valued f.

    This is what a layer's backward returns for upstream gradient df: sum over outputs of
    df * d out / d x[i]. f's output is copied at each probe (f may return the same buffer).
    """
    h = _check_probe_args(f, x, h)
    df = _as_float64("df", df) if not isinstance(df, np.ndarray) else df
    if df.dtype.kind not in "biuf":
        raise TypeError(f"df must be a real array (the upstream gradient), got dtype {df.dtype}")
    grad = np.zeros_like(x)
    for ix in np.ndindex(x.shape):
        pos, neg = _centered(lambda: np.array(f(x), copy=True), x, ix, h)
        if pos.shape != df.shape:
            raise ValueError(f"df must have the shape of f(x) {pos.shape}, got {df.shape}")
        grad[ix] = np.sum((pos - neg) * df) / (2 * h)
    return grad


def _as_float64(name, a):
    if np.iscomplexobj(a):      # the cast would drop the imaginary part with only a warning
        raise TypeError(f"{name} must be real, got complex values")
    try:
        return np.asarray(a, dtype=np.float64)
    except OverflowError:       # an int beyond float range, such as 10**400
        raise ValueError(f"{name} holds a number too large for a float") from None


def rel_error(x, y):
    """Largest elementwise relative error max(|x - y| / max(1e-8, |x| + |y|)), as a float."""
    x, y = _as_float64("x", x), _as_float64("y", y)
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {x.shape} and {y.shape}")
    return float(np.max(np.abs(x - y) / np.maximum(1e-8, np.abs(x) + np.abs(y))))


def grad_check_sparse(f, x, analytic_grad, num_checks=10, h=1e-5, seed=None, verbose=True):
    """Compare analytic_grad with centered differences of the scalar f at num_checks random indices.

    Indices are drawn with replacement from np.random.default_rng(seed). Prints each check like
    CS231n's version when verbose; returns the relative errors (float64 array of num_checks).
    """
    h = _check_probe_args(f, x, h)
    check_array("analytic_grad", analytic_grad, contiguous=False, shape=x.shape)
    num_checks = check_scalar("num_checks", num_checks, low=1, high=2**31, integer=True)
    seed = _check_seed(seed)
    verbose = check_bool("verbose", verbose)
    if x.size == 0:
        raise ValueError("x must have at least one element to check")
    rng = np.random.default_rng(seed)
    errors = np.empty(num_checks)
    for k in range(num_checks):
        ix = tuple(int(rng.integers(m)) for m in x.shape)
        fxph, fxmh = _centered(lambda: float(f(x)), x, ix, h)
        numeric = (fxph - fxmh) / (2 * h)
        analytic = float(analytic_grad[ix])
        errors[k] = rel_error(numeric, analytic)
        if verbose:
            print(f"numerical: {numeric:f} analytic: {analytic:f}, relative error: {errors[k]:e}")
    return errors
