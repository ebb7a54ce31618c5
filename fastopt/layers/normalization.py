"""Batch normalization, spatial batch normalization and layer normalization, CS231n-style.

    out, cache = batchnorm_forward(x, gamma, beta, bn_param)
    dx, dgamma, dbeta = batchnorm_backward(dout, cache)

Each function validates its arguments, allocates its outputs and calls one kernel of the "norm"
family (fastopt._norm_kernels, or the NumPy twin fastopt.reference.norm on the numpy backend),
chosen at call time. Statistics are accumulated in float64 whatever the dtype.

Conventions, and where they differ from PyTorch:
  * bn_param["mode"] is required: "train" normalizes with the batch statistics and updates
    bn_param["running_mean"] / ["running_var"] IN PLACE (created as zeros of x's dtype when absent);
    "test" normalizes with them. running = momentum * running + (1 - momentum) * batch, with the
    biased batch variance (CS231n). PyTorch's momentum is the weight of the batch (its 0.1 is our
    0.9) and its running_var uses the unbiased variance; outputs and gradients agree.
  * Arrays that are only read (x, gamma, beta, dout) may be non-contiguous: a contiguous copy is made,
    which changes nothing for the caller. The running statistics are updated in place and so must be
    C-contiguous and writeable; they are refused otherwise, never copied.
  * A call that raises has changed nothing, bn_param included.
  * Backward needs the cache of a training-mode forward of the same layer kind.
"""
import numpy as np

from .. import _backend
from .._validation import check_array, check_choice, check_distinct, check_scalar

__all__ = [
    "batchnorm_forward", "batchnorm_backward", "batchnorm_backward_alt",
    "spatial_batchnorm_forward", "spatial_batchnorm_backward",
    "layernorm_forward", "layernorm_backward",
]


class NormCache:
    """What a normalization backward needs: the (contiguous) input and the saved statistics.

    `kind` names the forward that made it ("batchnorm", "spatial_batchnorm", "layernorm"), so a
    cache handed to the wrong backward is refused. xhat is not stored: the kernels recompute it.
    """
    __slots__ = ("kind", "mode", "x", "gamma", "mean", "inv_std")

    def __init__(self, kind, mode, x, gamma, mean, inv_std):
        self.kind, self.mode, self.x, self.gamma, self.mean, self.inv_std = kind, mode, x, gamma, mean, inv_std

    def __repr__(self):
        return f"NormCache(kind={self.kind!r}, mode={self.mode!r}, x shape={self.x.shape}, dtype={self.x.dtype})"


# ---------------------------------------------------------------------------------------------------
# validation helpers


def _input(name, a, ndim, what):
    """A float32/float64 array of `ndim` dimensions with no empty axis; returned C-contiguous."""
    check_array(name, a, contiguous=False)
    if a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D {what}, got shape {a.shape}")
    if 0 in a.shape:
        raise ValueError(f"{name} must not be empty, got shape {a.shape}")
    return a


def _param(name, a, x, size):
    """gamma/beta: x's dtype, shape (size,)."""
    check_array(name, a, contiguous=False, dtype=x.dtype, shape=(size,))
    return a


def _contiguous(*arrays):
    return [np.ascontiguousarray(a) for a in arrays]


def _param_dict(name, p):
    if not isinstance(p, dict):
        raise TypeError(f"{name} must be a dict, got {type(p).__name__}")
    return p


def _eps(name, p):
    return check_scalar(f"{name}['eps']", p.get("eps", 1e-5), low=0.0, low_open=True)


def _bn_config(x, gamma, beta, bn_param, size):
    """Validate a batchnorm call; returns (mode, eps, momentum, running_mean, running_var, created).

    Running statistics that are absent come back as new zero arrays (created=True), to be stored
    into bn_param only once the kernel has run.
    """
    _param_dict("bn_param", bn_param)
    if "mode" not in bn_param:
        raise ValueError("bn_param['mode'] is required: 'train' or 'test'")
    mode = check_choice("bn_param['mode']", bn_param["mode"], ("train", "test"))
    eps = _eps("bn_param", bn_param)
    momentum = check_scalar("bn_param['momentum']", bn_param.get("momentum", 0.9), low=0.0, high=1.0)
    _param("gamma", gamma, x, size)
    _param("beta", beta, x, size)
    running = {}
    for key in ("running_mean", "running_var"):
        value = bn_param.get(key)
        if value is not None:
            check_array(f"bn_param[{key!r}]", value, writeable=True, dtype=x.dtype, shape=(size,))
        running[key] = value
    present = [(f"bn_param[{k!r}]", v) for k, v in running.items() if v is not None]
    for name, a in (("x", x), ("gamma", gamma), ("beta", beta)):   # written arrays vs everything
        check_distinct(present + [(name, a)])
    created = {k: v is None for k, v in running.items()}
    rm = running["running_mean"] if running["running_mean"] is not None else np.zeros(size, x.dtype)
    rv = running["running_var"] if running["running_var"] is not None else np.zeros(size, x.dtype)
    return mode, eps, momentum, rm, rv, created


def _store_running(bn_param, rm, rv, created):
    if created["running_mean"]:
        bn_param["running_mean"] = rm
    if created["running_var"]:
        bn_param["running_var"] = rv


def _cache_for(cache, kind, forward):
    if not isinstance(cache, NormCache):
        raise TypeError(f"cache must be the cache returned by {forward}, got {type(cache).__name__}")
    if cache.kind != kind:
        raise ValueError(f"cache comes from {cache.kind}_forward, not from {forward}")
    if cache.mode != "train":
        raise ValueError(f"cache comes from a {cache.mode}-mode {forward}; backward needs a "
                         f"training-mode forward (test mode uses fixed running statistics)")
    return cache


def _dout(dout, cache):
    check_array("dout", dout, contiguous=False, dtype=cache.x.dtype, shape=cache.x.shape)
    return np.ascontiguousarray(dout)


def _backward(kind, dout, cache):
    """(dx, dgamma, dbeta) from the `{kind}_backward` kernel, for a cache of `{kind}_forward`.

    Spatial batchnorm's kernel sees (N, C, H, W) arrays as (N, C, H*W) views.
    """
    cache = _cache_for(cache, kind, f"{kind}_forward")
    dout = _dout(dout, cache)
    x = cache.x
    dx = np.empty_like(x)
    shape3 = (x.shape[0], x.shape[1], -1) if kind == "spatial_batchnorm" else x.shape
    k = _backend.kernels("norm")
    n_threads = _backend.threads_for(x.size, k.GRAIN)
    dgamma, dbeta = np.empty_like(cache.gamma), np.empty_like(cache.gamma)
    getattr(k, f"{kind}_backward")(dout.reshape(shape3), x.reshape(shape3), cache.mean, cache.inv_std,
                                   cache.gamma, dx.reshape(shape3), dgamma, dbeta, n_threads)
    return dx, dgamma, dbeta


# ---------------------------------------------------------------------------------------------------
# batchnorm on (N, D)


def batchnorm_forward(x, gamma, beta, bn_param):
    """Batch normalization of x (N, D) per feature; gamma, beta (D,). Returns (out, cache).

    bn_param: "mode" ('train' | 'test', required), "eps" (1e-5), "momentum" (0.9),
    "running_mean" / "running_var" (D,) of x's dtype (created as zeros when absent; updated in place
    in train mode).
    """
    _input("x", x, 2, "(N, D)")
    d = x.shape[1]
    mode, eps, momentum, rm, rv, created = _bn_config(x, gamma, beta, bn_param, d)
    x, gamma, beta = _contiguous(x, gamma, beta)
    k = _backend.kernels("norm")
    n_threads = _backend.threads_for(x.size, k.GRAIN)
    out = np.empty_like(x)
    if mode == "train":
        mean, inv_std = np.empty(d, x.dtype), np.empty(d, x.dtype)
        k.batchnorm_train_forward(x, gamma, beta, eps, momentum, out, mean, inv_std, rm, rv, n_threads)
    else:
        mean = inv_std = None
        k.batchnorm_test_forward(x, gamma, beta, rm, rv, eps, out, n_threads)
    _store_running(bn_param, rm, rv, created)
    return out, NormCache("batchnorm", mode, x, gamma, mean, inv_std)


def batchnorm_backward(dout, cache):
    """Gradients (dx, dgamma, dbeta) of a training-mode batchnorm_forward.

    One fused kernel: a pass that sums dbeta = sum(dout) and dgamma = sum(dout * xhat) (xhat
    recomputed from x and the saved statistics), then a pass that writes
    dx = gamma * inv_std / N * (N * dout - dbeta - xhat * dgamma).
    """
    return _backward("batchnorm", dout, cache)


def batchnorm_backward_alt(dout, cache):
    """Gradients (dx, dgamma, dbeta) of a training-mode batchnorm_forward, by CS231n's simplified
    closed form, computed here in NumPy (not by the kernel behind batchnorm_backward):

        xhat = (x - mean) * inv_std
        dbeta = sum_n dout,  dgamma = sum_n dout * xhat
        dx = inv_std / N * (N * dout - dbeta - xhat * dgamma) * gamma

    An independent derivation of the same gradient: tests compare the two, and it is the readable
    version to study. Sums accumulate in float64; results are in x's dtype.
    """
    cache = _cache_for(cache, "batchnorm", "batchnorm_forward")
    dout = _dout(dout, cache)
    x, dtype = cache.x, cache.x.dtype
    n = x.shape[0]
    inv_std = cache.inv_std.astype(np.float64)
    xhat = (x - cache.mean.astype(np.float64)) * inv_std
    dout64 = dout.astype(np.float64)
    dbeta = dout64.sum(axis=0)
    dgamma = (dout64 * xhat).sum(axis=0)
    dx = (cache.gamma * inv_std / n) * (n * dout64 - dbeta - xhat * dgamma)
    return dx.astype(dtype, copy=False), dgamma.astype(dtype), dbeta.astype(dtype)


# ---------------------------------------------------------------------------------------------------
# spatial batchnorm on (N, C, H, W)


def spatial_batchnorm_forward(x, gamma, beta, bn_param):
    """Batch normalization of x (N, C, H, W) per channel (statistics over N, H, W); gamma, beta (C,).

    bn_param as for batchnorm_forward, with running statistics of shape (C,). Works on the 4-D
    layout directly (no transpose). Returns (out, cache).
    """
    _input("x", x, 4, "(N, C, H, W)")
    n, c, h, w = x.shape
    mode, eps, momentum, rm, rv, created = _bn_config(x, gamma, beta, bn_param, c)
    x, gamma, beta = _contiguous(x, gamma, beta)
    x3 = x.reshape(n, c, h * w)
    k = _backend.kernels("norm")
    n_threads = _backend.threads_for(x.size, k.GRAIN)
    out = np.empty_like(x)
    out3 = out.reshape(n, c, h * w)
    if mode == "train":
        mean, inv_std = np.empty(c, x.dtype), np.empty(c, x.dtype)
        k.spatial_batchnorm_train_forward(x3, gamma, beta, eps, momentum, out3, mean, inv_std, rm, rv,
                                          n_threads)
    else:
        mean = inv_std = None
        k.spatial_batchnorm_test_forward(x3, gamma, beta, rm, rv, eps, out3, n_threads)
    _store_running(bn_param, rm, rv, created)
    return out, NormCache("spatial_batchnorm", mode, x, gamma, mean, inv_std)


def spatial_batchnorm_backward(dout, cache):
    """Gradients (dx (N, C, H, W), dgamma (C,), dbeta (C,)) of a training-mode spatial_batchnorm_forward."""
    return _backward("spatial_batchnorm", dout, cache)


# ---------------------------------------------------------------------------------------------------
# layernorm on (N, D)


def layernorm_forward(x, gamma, beta, ln_param):
    """Layer normalization of each row of x (N, D); gamma, beta (D,). Returns (out, cache).

    ln_param: "eps" (1e-5). The same computation in training and test (other keys, such as a
    "mode", are ignored); there are no running statistics.
    """
    _param_dict("ln_param", ln_param)
    _input("x", x, 2, "(N, D)")
    n, d = x.shape
    eps = _eps("ln_param", ln_param)
    _param("gamma", gamma, x, d)
    _param("beta", beta, x, d)
    x, gamma, beta = _contiguous(x, gamma, beta)
    k = _backend.kernels("norm")
    n_threads = _backend.threads_for(x.size, k.GRAIN)
    out = np.empty_like(x)
    mean, inv_std = np.empty(n, x.dtype), np.empty(n, x.dtype)
    k.layernorm_forward(x, gamma, beta, eps, out, mean, inv_std, n_threads)
    return out, NormCache("layernorm", "train", x, gamma, mean, inv_std)


def layernorm_backward(dout, cache):
    """Gradients (dx (N, D), dgamma (D,), dbeta (D,)) of layernorm_forward."""
    return _backward("layernorm", dout, cache)
