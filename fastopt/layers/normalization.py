"""Batch normalization, spatial batch/group normalization and layer normalization, CS231n-style.

    out, cache = batchnorm_forward(x, gamma, beta, bn_param)
    dx, dgamma, dbeta = batchnorm_backward(dout, cache)

Each function validates its arguments, allocates its outputs and calls one kernel of the "norm"
family (fastopt._norm_kernels, or the NumPy twin fastopt.reference.norm on the numpy backend),
chosen at call time. Statistics are accumulated in float64 whatever the dtype.

Conventions, and where they differ from PyTorch:
  * bn_param["mode"] is required: "train" normalizes with the batch statistics and updates
    bn_param["running_mean"] / ["running_var"] IN PLACE (created as zeros of the call's dtype when
    absent); "test" normalizes with them. running = momentum * running + (1 - momentum) * batch,
    with the biased batch variance (CS231n). PyTorch's momentum is the weight of the batch (its 0.1
    is our 0.9) and its running_var uses the unbiased variance; outputs and gradients agree.
  * Dtypes (fastopt.layers.core.compute_dtype): x, gamma, beta and dout are only read; they may
    have any real dtype (integers too, e.g. gamma = np.asarray([3, 4, 5])) and are converted as
    NumPy's promotion would: the call computes, and returns, that dtype. The running statistics are
    updated in place and keep their own dtype (the update is computed in the call's dtype and stored
    cast); they must be C-contiguous, writeable float arrays and are refused otherwise, never copied.
  * A call that raises has changed nothing, bn_param included.
  * Backward needs the cache of a training-mode forward of the same layer kind.
"""
import numpy as np

from .. import _backend
from .._validation import check_array, check_choice, check_distinct, check_scalar
from ._operands import as_operand, compute_dtype, output

__all__ = [
    "batchnorm_forward", "batchnorm_backward", "batchnorm_backward_alt",
    "spatial_batchnorm_forward", "spatial_batchnorm_backward",
    "spatial_groupnorm_forward", "spatial_groupnorm_backward",
    "layernorm_forward", "layernorm_backward",
]


class NormCache:
    """What a normalization backward needs: the (contiguous) input and the saved statistics.

    `kind` names the forward that made it ("batchnorm", "spatial_batchnorm", "layernorm",
    "spatial_groupnorm"), so a cache handed to the wrong backward is refused. xhat is not stored:
    the kernels recompute it. `groups` is groupnorm's G; `param_shape` the shape gamma was given in
    (dgamma and dbeta are returned in it: CS231n passes (C,) or (1, C, 1, 1)).
    """
    __slots__ = ("kind", "mode", "x", "gamma", "mean", "inv_std", "groups", "param_shape")

    def __init__(self, kind, mode, x, gamma, mean, inv_std, groups=None, param_shape=None):
        self.kind, self.mode, self.x, self.gamma, self.mean, self.inv_std = kind, mode, x, gamma, mean, inv_std
        self.groups = groups
        self.param_shape = gamma.shape if param_shape is None else param_shape

    def __repr__(self):
        return f"NormCache(kind={self.kind!r}, mode={self.mode!r}, x shape={self.x.shape}, dtype={self.x.dtype})"


# ---------------------------------------------------------------------------------------------------
# validation helpers


def _input(name, a, ndim, what):
    """An array of `ndim` dimensions with no empty axis (its dtype is checked by compute_dtype)."""
    if a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D {what}, got shape {a.shape}")
    if 0 in a.shape:
        raise ValueError(f"{name} must not be empty, got shape {a.shape}")
    return a


def _param(name, a, size, spatial=False):
    """gamma/beta: shape (size,), or (1, size, 1, 1) for the spatial layers (CS231n uses both)."""
    if a.shape == (size,) or (spatial and a.shape == (1, size, 1, 1)):
        return a
    expected = f"({size},)" + (f" or (1, {size}, 1, 1)" if spatial else "")
    raise ValueError(f"{name} must have shape {expected}, got {a.shape}")


def _param_dict(name, p):
    if not isinstance(p, dict):
        raise TypeError(f"{name} must be a dict, got {type(p).__name__}")
    return p


def norm_eps(name, p):
    """The validated p['eps'] (default 1e-5) of a bn_param/ln_param/gn_param dict named `name`."""
    _param_dict(name, p)
    return check_scalar(f"{name}['eps']", p.get("eps", 1e-5), low=0.0, low_open=True)


def bn_settings(name, bn_param, size):
    """Validate the settings and running statistics of a batchnorm param dict, changing nothing.

    Returns (eps, momentum, running_mean, running_var), a statistic being None when absent. Each
    present statistic must be a C-contiguous, writeable float32/float64 array of shape (size,);
    its dtype is kept (in-place target). Used by the layers and by FullyConnectedNet.
    """
    eps = norm_eps(name, bn_param)
    momentum = check_scalar(f"{name}['momentum']", bn_param.get("momentum", 0.9), low=0.0, high=1.0)
    running = []
    for key in ("running_mean", "running_var"):
        value = bn_param.get(key)
        if value is not None:
            check_array(f"{name}[{key!r}]", value, writeable=True, shape=(size,))
        running.append(value)
    if running[0] is not None and running[1] is not None:
        check_distinct([(f"{name}['running_mean']", running[0]), (f"{name}['running_var']", running[1])])
    return eps, momentum, running[0], running[1]


def _bn_config(x, gamma, beta, bn_param, size, spatial):
    """Validate a batchnorm call. Returns (dtype, mode, eps, momentum, running_mean, running_var).

    A running statistic that is absent comes back as None (created once the kernel has run).
    """
    _param_dict("bn_param", bn_param)
    if "mode" not in bn_param:
        raise ValueError("bn_param['mode'] is required: 'train' or 'test'")
    mode = check_choice("bn_param['mode']", bn_param["mode"], ("train", "test"))
    dt = compute_dtype(("x", x), ("gamma", gamma), ("beta", beta))
    _param("gamma", gamma, size, spatial)
    _param("beta", beta, size, spatial)
    eps, momentum, rm, rv = bn_settings("bn_param", bn_param, size)
    present = [(f"bn_param[{k!r}]", v) for k, v in (("running_mean", rm), ("running_var", rv)) if v is not None]
    for name, a in (("x", x), ("gamma", gamma), ("beta", beta)):   # written arrays vs everything
        check_distinct(present + [(name, a)])
    return dt, mode, eps, momentum, rm, rv


class _Running:
    """The running statistics as the kernel sees them (the call's dtype), stored back afterwards.

    A statistic of another dtype is worked on in a temporary and copied back cast (it keeps its
    dtype); an absent one is created in the call's dtype and stored into bn_param.
    """

    def __init__(self, bn_param, rm, rv, size, dt):
        self.bn_param, self.targets = bn_param, (rm, rv)
        self.work = tuple(np.zeros(size, dt) if t is None else (t if t.dtype == dt else t.astype(dt))
                          for t in self.targets)

    def store(self):
        for key, target, work in zip(("running_mean", "running_var"), self.targets, self.work):
            if target is None:
                self.bn_param[key] = work
            elif work is not target:
                np.copyto(target, work, casting="unsafe")


_X_NDIM = {"batchnorm": 2, "layernorm": 2, "spatial_batchnorm": 4, "spatial_groupnorm": 4}


def _stat_shape(kind, x, groups):
    """The shape of the mean / inv_std a `kind` forward saves for x."""
    if kind == "layernorm":
        return (x.shape[0],)
    return (x.shape[0] * groups,) if kind == "spatial_groupnorm" else (x.shape[1],)


def _cache_for(cache, kind, forward):
    """A NormCache of a training-mode `kind` forward whose fields are what that forward stores (arrays
    of x's float dtype and the shapes x implies): a forged or edited cache is refused, not trusted."""
    if not isinstance(cache, NormCache):
        raise TypeError(f"cache must be the cache returned by {forward}, got {type(cache).__name__}")
    if cache.kind != kind:
        raise ValueError(f"cache comes from {cache.kind}_forward, not from {forward}")
    if cache.mode != "train":
        raise ValueError(f"cache comes from a {cache.mode}-mode {forward}; backward needs a "
                         f"training-mode forward (test mode uses fixed running statistics)")
    x = check_array("cache.x", cache.x)
    _input("cache.x", x, _X_NDIM[kind], "as its forward saw it")
    groups = cache.groups
    if kind == "spatial_groupnorm":
        groups = check_scalar("cache.groups", groups, low=1, integer=True)
        if x.shape[1] % groups:
            raise ValueError(f"cache.groups must divide the C = {x.shape[1]} channels of cache.x, got {groups}")
    elif groups is not None:
        raise ValueError(f"cache.groups must be None for {forward}, got {groups!r}")
    check_array("cache.gamma", cache.gamma, dtype=x.dtype, shape=(x.shape[1],))
    stats = _stat_shape(kind, x, groups)
    check_array("cache.mean", cache.mean, dtype=x.dtype, shape=stats)
    check_array("cache.inv_std", cache.inv_std, dtype=x.dtype, shape=stats)
    c, shape = x.shape[1], cache.param_shape
    if not (isinstance(shape, tuple) and (shape == (c,) or (x.ndim == 4 and shape == (1, c, 1, 1)))):
        raise ValueError(f"cache.param_shape must be gamma's shape in {forward}, got {shape!r}")
    return cache


def _backward_operands(kind, dout, cache):
    """(cache, dout, x, gamma, mean, inv_std) for a backward of `{kind}_forward`: the cache checked,
    dout of x's shape, all converted to one dtype (fastopt.layers.core.compute_dtype)."""
    cache = _cache_for(cache, kind, f"{kind}_forward")
    dt = compute_dtype(("dout", dout), ("cache.x", cache.x))
    if dout.shape != cache.x.shape:
        raise ValueError(f"dout must have shape {cache.x.shape}, got {dout.shape}")
    return (cache, *(as_operand(a, dt) for a in (dout, cache.x, cache.gamma, cache.mean, cache.inv_std)))


def _backward(kind, dout, cache):
    """(dx, dgamma, dbeta) from the `{kind}_backward` kernel, for a cache of `{kind}_forward`.

    Spatial kernels see (N, C, H, W) arrays as (N, C, H*W) views. dout of another dtype is
    converted with the cache (fastopt.layers.core.compute_dtype).
    """
    cache, dout, x, gamma, mean, inv_std = _backward_operands(kind, dout, cache)
    dx = output(x.shape, x.dtype)
    spatial = x.ndim == 4
    shape3 = (x.shape[0], x.shape[1], -1) if spatial else x.shape
    k = _backend.kernels("norm")
    n_threads = _backend.threads_for(x.size, k.GRAIN)
    dgamma, dbeta = np.empty_like(gamma), np.empty_like(gamma)
    extra = () if cache.groups is None else (cache.groups,)
    getattr(k, f"{kind}_backward")(dout.reshape(shape3), x.reshape(shape3), mean, inv_std,
                                   gamma, *extra, dx.reshape(shape3), dgamma, dbeta, n_threads)
    return dx, dgamma.reshape(cache.param_shape), dbeta.reshape(cache.param_shape)


# ---------------------------------------------------------------------------------------------------
# batchnorm on (N, D) and spatial batchnorm on (N, C, H, W): one driver, the kernels differ


def _batchnorm(kind, x, gamma, beta, bn_param, size, shape_k):
    spatial = x.ndim == 4
    dt, mode, eps, momentum, rm, rv = _bn_config(x, gamma, beta, bn_param, size, spatial)
    x, g, b = (as_operand(a, dt) for a in (x, gamma, beta))
    g, b = g.reshape(size), b.reshape(size)
    running = _Running(bn_param, rm, rv, size, dt)
    wm, wv = running.work
    k = _backend.kernels("norm")
    n_threads = _backend.threads_for(x.size, k.GRAIN)
    out = output(x.shape, x.dtype)
    xk, outk = x.reshape(shape_k), out.reshape(shape_k)
    if mode == "train":
        mean, inv_std = np.empty(size, dt), np.empty(size, dt)
        getattr(k, f"{kind}_train_forward")(xk, g, b, eps, momentum, outk, mean, inv_std, wm, wv, n_threads)
    else:
        mean = inv_std = None
        getattr(k, f"{kind}_test_forward")(xk, g, b, wm, wv, eps, outk, n_threads)
    running.store()
    return out, NormCache(kind, mode, x, g, mean, inv_std, param_shape=gamma.shape)


def batchnorm_forward(x, gamma, beta, bn_param):
    """Batch normalization of x (N, D) per feature; gamma, beta (D,). Returns (out, cache).

    bn_param: "mode" ('train' | 'test', required), "eps" (1e-5), "momentum" (0.9),
    "running_mean" / "running_var" (D,) (created as zeros when absent; updated in place in train
    mode). Dtypes: module docstring.
    """
    compute_dtype(("x", x))
    _input("x", x, 2, "(N, D)")
    return _batchnorm("batchnorm", x, gamma, beta, bn_param, x.shape[1], x.shape)


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
    _, dout, x, gamma, mean, inv_std = _backward_operands("batchnorm", dout, cache)
    dtype, n = x.dtype, x.shape[0]
    inv_std = inv_std.astype(np.float64)
    xhat = (x - mean.astype(np.float64)) * inv_std
    dout64 = dout.astype(np.float64)
    dbeta = dout64.sum(axis=0)
    dgamma = (dout64 * xhat).sum(axis=0)
    dx = (gamma * inv_std / n) * (n * dout64 - dbeta - xhat * dgamma)
    return dx.astype(dtype, copy=False), dgamma.astype(dtype), dbeta.astype(dtype)


# ---------------------------------------------------------------------------------------------------
# spatial batchnorm and spatial groupnorm on (N, C, H, W)


def spatial_batchnorm_forward(x, gamma, beta, bn_param):
    """Batch normalization of x (N, C, H, W) per channel (statistics over N, H, W); gamma, beta (C,)
    or (1, C, 1, 1).

    bn_param as for batchnorm_forward, with running statistics of shape (C,). Works on the 4-D
    layout directly (no transpose). Returns (out, cache); backward returns dgamma, dbeta in gamma's shape.
    """
    compute_dtype(("x", x))
    _input("x", x, 4, "(N, C, H, W)")
    n, c, h, w = x.shape
    return _batchnorm("spatial_batchnorm", x, gamma, beta, bn_param, c, (n, c, h * w))


def spatial_batchnorm_backward(dout, cache):
    """Gradients (dx (N, C, H, W), dgamma, dbeta (gamma's shape)) of a training-mode spatial_batchnorm_forward."""
    return _backward("spatial_batchnorm", dout, cache)


def spatial_groupnorm_forward(x, gamma, beta, G, gn_param):
    """Group normalization of x (N, C, H, W): the C channels form G groups of C // G, and each
    (sample, group) is normalized over its channels and positions. gamma, beta: (C,) or (1, C, 1, 1).

    gn_param: "eps" (1e-5); other keys (such as a "mode") are ignored: the same computation in
    training and test, no running statistics (CS231n 2019+). Returns (out, cache).
    """
    _param_dict("gn_param", gn_param)
    dt = compute_dtype(("x", x), ("gamma", gamma), ("beta", beta))
    _input("x", x, 4, "(N, C, H, W)")
    n, c, h, w = x.shape
    G = check_scalar("G", G, low=1, integer=True)
    if c % G:
        raise ValueError(f"G must divide the C = {c} channels of x, got G = {G}")
    eps = norm_eps("gn_param", gn_param)
    _param("gamma", gamma, c, spatial=True)
    _param("beta", beta, c, spatial=True)
    x, g, b = (as_operand(a, dt) for a in (x, gamma, beta))
    g, b = g.reshape(c), b.reshape(c)
    k = _backend.kernels("norm")
    out = output(x.shape, x.dtype)
    mean, inv_std = np.empty(n * G, dt), np.empty(n * G, dt)
    k.spatial_groupnorm_forward(x.reshape(n, c, h * w), g, b, G, eps, out.reshape(n, c, h * w), mean,
                                inv_std, _backend.threads_for(x.size, k.GRAIN))
    return out, NormCache("spatial_groupnorm", "train", x, g, mean, inv_std, groups=G,
                          param_shape=gamma.shape)


def spatial_groupnorm_backward(dout, cache):
    """Gradients (dx (N, C, H, W), dgamma, dbeta (gamma's shape)) of spatial_groupnorm_forward."""
    return _backward("spatial_groupnorm", dout, cache)


# ---------------------------------------------------------------------------------------------------
# layernorm on (N, D)


def layernorm_forward(x, gamma, beta, ln_param):
    """Layer normalization of each row of x (N, D); gamma, beta (D,). Returns (out, cache).

    ln_param: "eps" (1e-5). The same computation in training and test (other keys, such as a
    "mode", are ignored); there are no running statistics.
    """
    _param_dict("ln_param", ln_param)
    dt = compute_dtype(("x", x), ("gamma", gamma), ("beta", beta))
    _input("x", x, 2, "(N, D)")
    n, d = x.shape
    eps = norm_eps("ln_param", ln_param)
    _param("gamma", gamma, d)
    _param("beta", beta, d)
    x, gamma, beta = (as_operand(a, dt) for a in (x, gamma, beta))
    k = _backend.kernels("norm")
    n_threads = _backend.threads_for(x.size, k.GRAIN)
    out = output(x.shape, x.dtype)
    mean, inv_std = np.empty(n, dt), np.empty(n, dt)
    k.layernorm_forward(x, gamma, beta, eps, out, mean, inv_std, n_threads)
    return out, NormCache("layernorm", "train", x, gamma, mean, inv_std)


def layernorm_backward(dout, cache):
    """Gradients (dx (N, D), dgamma (D,), dbeta (D,)) of layernorm_forward."""
    return _backward("layernorm", dout, cache)
