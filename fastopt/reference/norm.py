"""Pure-NumPy twin of fastopt._norm_kernels: the test oracle and the benchmark baseline.

Same function names and signatures as the compiled kernels, and the same size checks (ValueError);
n_threads is checked and otherwise ignored.
Every function writes into the outputs the caller allocated. Statistics are computed in float64
(two-pass: mean, then mean of squared deviations) and cast to the array's dtype; the per-element
arithmetic (xhat, out, dx, and the products dout * (x - mean) summed into dgamma) is done in the
array's dtype, in the kernels' order. The kernels' sums run in a different order (shifted one-pass
statistics, row chunks), so results agree to rounding, not bit for bit.

Shapes: batchnorm x (N, D), per-feature parameters/statistics (D,); spatial batchnorm x (N, C, S)
(an (N, C, H, W) array viewed with S = H*W), per-channel parameters/statistics (C,); layernorm
x (N, D), gamma/beta (D,), per-row mean/inv_std (N,).
"""
import numpy as np

from ._contract import check_nonempty, check_shapes, threads

GRAIN = 1 << 14   # same constant as the compiled module (elements of x per thread); unused here


def _check_x(x):
    axes = ("row", "column") if x.ndim == 2 else ("sample (axis 0)", "channel (axis 1)",
                                                  "spatial element (axis 2)")
    for extent, axis in zip(x.shape, axes):
        check_nonempty("x", extent, axis)


def _check_train(x, gamma, beta, out, mean, inv_std, running_mean, running_var, n_threads):
    _check_x(x)
    v = (x.shape[1],)
    check_shapes(v, gamma=gamma, beta=beta)
    check_shapes(x.shape, out=out)
    check_shapes(v, mean=mean, inv_std=inv_std, running_mean=running_mean, running_var=running_var)
    threads(n_threads)


def _check_test(x, gamma, beta, running_mean, running_var, out, n_threads):
    _check_x(x)
    check_shapes((x.shape[1],), gamma=gamma, beta=beta, running_mean=running_mean, running_var=running_var)
    check_shapes(x.shape, out=out)
    threads(n_threads)


def _check_backward(dout, x, mean, inv_std, gamma, dx, dgamma, dbeta, n_threads, stats):
    # stats: the shape of mean/inv_std ((D,) or (C,) for batchnorm, (N,) for layernorm)
    _check_x(x)
    check_shapes(x.shape, dout=dout)
    check_shapes(stats, mean=mean, inv_std=inv_std)
    check_shapes((x.shape[1],), gamma=gamma)
    check_shapes(x.shape, dx=dx)
    check_shapes((x.shape[1],), dgamma=dgamma, dbeta=dbeta)
    threads(n_threads)


def _stats(x, axes):
    """Mean and biased variance over `axes`, computed in float64."""
    x64 = x.astype(np.float64)
    mu = x64.mean(axis=axes)
    var = np.square(x64 - np.expand_dims(mu, axes)).mean(axis=axes)
    return mu, var


def _normalize(x, mean, inv_std, gamma, beta, out):
    """out = gamma * ((x - mean) * inv_std) + beta, broadcast, in x's dtype."""
    np.multiply(gamma, (x - mean) * inv_std, out=out)
    out += beta


def _train_forward(x, axes, gamma, beta, eps, momentum, out, mean, inv_std, running_mean, running_var):
    mu, var = _stats(x, axes)
    mean[...] = mu
    inv_std[...] = 1.0 / np.sqrt(var + eps)
    running_mean[...] = momentum * running_mean.astype(np.float64) + (1.0 - momentum) * mu
    running_var[...] = momentum * running_var.astype(np.float64) + (1.0 - momentum) * var
    bshape = [1] * x.ndim
    bshape[1] = -1
    r = lambda a: a.reshape(bshape)  # noqa: E731  per-feature/channel vector -> broadcastable
    _normalize(x, r(mean), r(inv_std), r(gamma), r(beta), out)


def _test_forward(x, gamma, beta, running_mean, running_var, eps, out):
    bshape = [1] * x.ndim
    bshape[1] = -1
    inv_std = (1.0 / np.sqrt(running_var.astype(np.float64) + eps)).astype(x.dtype)
    _normalize(x, running_mean.reshape(bshape), inv_std.reshape(bshape), gamma.reshape(bshape),
               beta.reshape(bshape), out)


def _backward(dout, x, axes, mean, inv_std, gamma, dx, dgamma, dbeta):
    bshape = [1] * x.ndim
    bshape[1] = -1
    count = x.size // x.shape[1]
    db = dout.astype(np.float64).sum(axis=axes)
    # dout * (x - mean) in x's dtype (as xhat is), summed in float64
    dg = (dout * (x - mean.reshape(bshape))).astype(np.float64).sum(axis=axes)
    dg *= inv_std                                   # sum(dout * xhat)
    dbeta[...] = db
    dgamma[...] = dg
    # dx = gamma*inv_std/N * (N*dout - dbeta - xhat*dgamma) = k0*dout - kb - kg*xhat
    scale = gamma.astype(np.float64) * inv_std
    k0 = scale.astype(x.dtype).reshape(bshape)
    kb = (scale * db / count).astype(x.dtype).reshape(bshape)
    kg = (scale * dg / count).astype(x.dtype).reshape(bshape)
    xhat = (x - mean.reshape(bshape)) * inv_std.reshape(bshape)
    np.multiply(k0, dout, out=dx)
    dx -= kb
    dx -= kg * xhat


def batchnorm_train_forward(x, gamma, beta, eps, momentum, out, mean, inv_std, running_mean,
                            running_var, n_threads):
    """Training-mode batchnorm over the rows of x (N, D); see fastopt._norm_kernels."""
    _check_train(x, gamma, beta, out, mean, inv_std, running_mean, running_var, n_threads)
    _train_forward(x, 0, gamma, beta, eps, momentum, out, mean, inv_std, running_mean, running_var)


def batchnorm_test_forward(x, gamma, beta, running_mean, running_var, eps, out, n_threads):
    """out = gamma * (x - running_mean) / sqrt(running_var + eps) + beta."""
    _check_test(x, gamma, beta, running_mean, running_var, out, n_threads)
    _test_forward(x, gamma, beta, running_mean, running_var, eps, out)


def batchnorm_backward(dout, x, mean, inv_std, gamma, dx, dgamma, dbeta, n_threads):
    """dx (N, D), dgamma = sum(dout * xhat), dbeta = sum(dout) from the saved mean and inv_std."""
    _check_backward(dout, x, mean, inv_std, gamma, dx, dgamma, dbeta, n_threads, (x.shape[1],))
    _backward(dout, x, 0, mean, inv_std, gamma, dx, dgamma, dbeta)


def spatial_batchnorm_train_forward(x, gamma, beta, eps, momentum, out, mean, inv_std, running_mean,
                                    running_var, n_threads):
    """batchnorm_train_forward per channel of x (N, C, S): statistics over N and S."""
    _check_train(x, gamma, beta, out, mean, inv_std, running_mean, running_var, n_threads)
    _train_forward(x, (0, 2), gamma, beta, eps, momentum, out, mean, inv_std, running_mean, running_var)


def spatial_batchnorm_test_forward(x, gamma, beta, running_mean, running_var, eps, out, n_threads):
    """batchnorm_test_forward per channel of x (N, C, S)."""
    _check_test(x, gamma, beta, running_mean, running_var, out, n_threads)
    _test_forward(x, gamma, beta, running_mean, running_var, eps, out)


def spatial_batchnorm_backward(dout, x, mean, inv_std, gamma, dx, dgamma, dbeta, n_threads):
    """batchnorm_backward per channel of x (N, C, S)."""
    _check_backward(dout, x, mean, inv_std, gamma, dx, dgamma, dbeta, n_threads, (x.shape[1],))
    _backward(dout, x, (0, 2), mean, inv_std, gamma, dx, dgamma, dbeta)


def layernorm_forward(x, gamma, beta, eps, out, mean, inv_std, n_threads):
    """Layernorm of each row of x (N, D); mean and inv_std (N,) are saved for the backward."""
    _check_x(x)
    check_shapes((x.shape[1],), gamma=gamma, beta=beta)
    check_shapes(x.shape, out=out)
    check_shapes((x.shape[0],), mean=mean, inv_std=inv_std)
    threads(n_threads)
    mu, var = _stats(x, 1)
    mean[...] = mu
    inv_std[...] = 1.0 / np.sqrt(var + eps)
    _normalize(x, mean[:, None], inv_std[:, None], gamma, beta, out)


def layernorm_backward(dout, x, mean, inv_std, gamma, dx, dgamma, dbeta, n_threads):
    """dx (N, D) and dgamma, dbeta (D,) (sums over rows) of layernorm_forward."""
    _check_backward(dout, x, mean, inv_std, gamma, dx, dgamma, dbeta, n_threads, (x.shape[0],))
    d = x.shape[1]
    a64 = inv_std.astype(np.float64)[:, None]
    d64 = dout.astype(np.float64)
    dxhat = dout * gamma                             # x's dtype, as the kernel
    sb = dxhat.astype(np.float64).sum(axis=1, keepdims=True)
    sg = (dxhat * (x - mean[:, None])).astype(np.float64).sum(axis=1, keepdims=True)
    # dx = inv_std/D * (D*dxhat - sum(dxhat) - xhat*sum(dxhat*xhat)), sum(dxhat*xhat) = inv_std*sg
    kb = (a64 * sb / d).astype(x.dtype)
    kg = (a64 * a64 * sg / d).astype(x.dtype)
    a = inv_std[:, None]
    xhat = (x - mean[:, None]) * a
    np.multiply(a, dxhat, out=dx)
    dx -= kb
    dx -= kg * xhat
    dbeta[...] = d64.sum(axis=0)
    dgamma[...] = (dout * xhat).astype(np.float64).sum(axis=0)   # products in x's dtype, as the kernel



def _check_groups(x, groups):
    """x (N, C, S) non-empty, groups dividing C; returns the shape of mean and inv_std."""
    _check_x(x)
    c = x.shape[1]
    if groups < 1 or c % groups:
        raise ValueError(f"groups must be >= 1 and divide the C = {c} channels of x, got {groups}")
    return (x.shape[0] * groups,)


def _groups(x, groups):
    """For each group g: (g, its channels' slice, a view (N, CPG*S) of its rows) of x (N, C, S)."""
    n, c, s = x.shape
    cpg = c // groups
    rows = x.reshape(n, groups, cpg * s)
    return [(g, slice(g * cpg, (g + 1) * cpg), rows[:, g]) for g in range(groups)]


def spatial_groupnorm_forward(x, gamma, beta, groups, eps, out, mean, inv_std, n_threads):
    """Group normalization of x (N, C, S): each (sample, group) row is layer-normalized, with gamma and
    beta repeated over each channel's S positions. mean, inv_std (N * groups,) at index n*groups + g."""
    check_shapes(_check_groups(x, groups), mean=mean, inv_std=inv_std)
    check_shapes((x.shape[1],), gamma=gamma, beta=beta)
    check_shapes(x.shape, out=out)
    threads(n_threads)
    s = x.shape[2]
    stats = mean.reshape(-1, groups), inv_std.reshape(-1, groups)
    for (g, ch, rows), (_, _, out_rows) in zip(_groups(x, groups), _groups(out, groups)):
        layernorm_forward(rows, np.repeat(gamma[ch], s), np.repeat(beta[ch], s), eps, out_rows,
                          stats[0][:, g], stats[1][:, g], n_threads)


def spatial_groupnorm_backward(dout, x, mean, inv_std, gamma, groups, dx, dgamma, dbeta, n_threads):
    """dx (N, C, S) and dgamma, dbeta (C,) of spatial_groupnorm_forward: layernorm_backward per group,
    its per-position parameter sums (kept in float64) summed over each channel's positions."""
    _check_backward(dout, x, mean, inv_std, gamma, dx, dgamma, dbeta, n_threads, _check_groups(x, groups))
    s = x.shape[2]
    stats = mean.reshape(-1, groups), inv_std.reshape(-1, groups)
    for (g, ch, rows), (_, _, d_rows), (_, _, dx_rows) in zip(_groups(x, groups), _groups(dout, groups),
                                                           _groups(dx, groups)):
        dg, db = np.empty(rows.shape[1]), np.empty(rows.shape[1])
        layernorm_backward(d_rows, rows, stats[0][:, g], stats[1][:, g], np.repeat(gamma[ch], s), dx_rows,
                           dg, db, n_threads)
        dgamma[ch] = dg.reshape(-1, s).sum(axis=1)
        dbeta[ch] = db.reshape(-1, s).sum(axis=1)
