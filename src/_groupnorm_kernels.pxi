# Spatial group normalization kernels (CS231n 2019+), included by _norm_kernels.pyx and
# _norm_kernels_avx2.pyx after _norm_kernels.pxi (so they share its GRAIN); NumPy twin:
# fastopt.reference.norm.spatial_groupnorm_forward/backward.
#
# x is (N, C, S), an (N, C, H, W) array viewed with S = H*W; the G groups split the channels into runs
# of CPG = C // G. Group g of sample n is then ONE contiguous row of CPG*S elements, normalized with its
# own mean and inv_std (stored at index n*G + g); gamma and beta are per channel.
#
# Determinism: a row's statistics and its dx are computed by one thread, summed into GN_LANES double
# lanes in element order; dgamma/dbeta of channel c are owned by one thread, summed over n in order.
# Nothing depends on the thread count. Precision follows _norm_kernels.pxi: statistics in double
# (shifted by the row's first value), per-element products in the array's precision.
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport sqrt

from _contract cimport check_3d, check_size, threads

cdef enum:
    GN_LANES = 32


cdef int _gn_check_shape(Py_ssize_t n, Py_ssize_t c, Py_ssize_t s, Py_ssize_t groups) except -1:
    if n < 1 or c < 1 or s < 1:
        raise ValueError(f"x must be a non-empty (N, C, H*W) array, got ({n}, {c}, {s})")
    if groups < 1 or c % groups != 0:
        raise ValueError(f"groups must be >= 1 and divide the C = {c} channels of x, got {groups}")
    return 0


cdef void _gn_forward_row(const floating* x, Py_ssize_t cpg, Py_ssize_t s, const floating* gamma,
                          const floating* beta, double eps, floating* out, floating* mean,
                          floating* inv_std) noexcept nogil:
    cdef double l1[GN_LANES]
    cdef double l2[GN_LANES]
    cdef Py_ssize_t m = cpg * s, k, l, ch
    cdef double shift = x[0], t, s1 = 0.0, s2 = 0.0, mu, var
    cdef floating mf, a, g, b
    cdef const floating* p
    cdef floating* q
    for l in range(GN_LANES):
        l1[l] = 0.0
        l2[l] = 0.0
    k = 0
    while k + GN_LANES <= m:
        for l in range(GN_LANES):
            t = <double>x[k + l] - shift
            l1[l] += t
            l2[l] += t * t
        k += GN_LANES
    for l in range(m - k):
        t = <double>x[k + l] - shift
        l1[l] += t
        l2[l] += t * t
    for l in range(GN_LANES):
        s1 += l1[l]
        s2 += l2[l]
    mu = s1 / m
    var = s2 / m - mu * mu
    if var < 0.0:
        var = 0.0
    mean[0] = mf = <floating>(mu + shift)
    inv_std[0] = a = <floating>(1.0 / sqrt(var + eps))
    for ch in range(cpg):
        g = gamma[ch]
        b = beta[ch]
        p = x + ch * s
        q = out + ch * s
        for k in range(s):
            q[k] = g * ((p[k] - mf) * a) + b


cdef void _gn_dx_row(const floating* dout, const floating* x, Py_ssize_t cpg, Py_ssize_t s,
                     floating mf, floating a, const floating* gamma, floating* dx) noexcept nogil:
    # dx = inv_std/M * (M*dxhat - sum(dxhat) - xhat*sum(dxhat*xhat)), dxhat = dout * gamma[channel]
    cdef double lb[GN_LANES]
    cdef double lg[GN_LANES]
    cdef Py_ssize_t m = cpg * s, k, l, ch
    cdef double sb = 0.0, sg = 0.0
    cdef floating g, d, kb, kg
    cdef const floating* p
    cdef const floating* dp
    cdef floating* q
    for l in range(GN_LANES):
        lb[l] = 0.0
        lg[l] = 0.0
    for ch in range(cpg):
        g = gamma[ch]
        p = x + ch * s
        dp = dout + ch * s
        # lane = element index within the channel run: a fixed order, independent of threads
        k = 0
        while k + GN_LANES <= s:
            for l in range(GN_LANES):
                d = dp[k + l] * g
                lb[l] += <double>d
                lg[l] += <double>(d * (p[k + l] - mf))
            k += GN_LANES
        for l in range(s - k):
            d = dp[k + l] * g
            lb[l] += <double>d
            lg[l] += <double>(d * (p[k + l] - mf))
    for l in range(GN_LANES):
        sb += lb[l]
        sg += lg[l]
    kb = <floating>(a * sb / m)
    kg = <floating>(<double>a * a * sg / m)
    for ch in range(cpg):
        g = gamma[ch]
        p = x + ch * s
        dp = dout + ch * s
        q = dx + ch * s
        for k in range(s):
            q[k] = a * (dp[k] * g) - kb - kg * ((p[k] - mf) * a)


cdef void _gn_param_grads(const floating* dout, const floating* x, Py_ssize_t n, Py_ssize_t nc,
                          Py_ssize_t s, Py_ssize_t c, Py_ssize_t groups, Py_ssize_t cpg,
                          const floating* mean, const floating* inv_std, floating* dgamma,
                          floating* dbeta) noexcept nogil:
    # dbeta[c] = sum(dout[:, c]), dgamma[c] = sum(dout[:, c] * xhat[:, c]), samples in order.
    cdef double lb[GN_LANES]
    cdef double lg[GN_LANES]
    cdef double sb = 0.0, sg = 0.0
    cdef Py_ssize_t i, k, l, r
    cdef floating mf, a
    cdef const floating* p
    cdef const floating* dp
    for l in range(GN_LANES):
        lb[l] = 0.0
        lg[l] = 0.0
    for i in range(n):
        r = i * groups + c // cpg
        mf = mean[r]
        a = inv_std[r]
        p = x + (i * nc + c) * s
        dp = dout + (i * nc + c) * s
        k = 0
        while k + GN_LANES <= s:
            for l in range(GN_LANES):
                lb[l] += <double>dp[k + l]
                lg[l] += <double>(dp[k + l] * ((p[k + l] - mf) * a))
            k += GN_LANES
        for l in range(s - k):
            lb[l] += <double>dp[k + l]
            lg[l] += <double>(dp[k + l] * ((p[k + l] - mf) * a))
    for l in range(GN_LANES):
        sb += lb[l]
        sg += lg[l]
    dbeta[c] = <floating>sb
    dgamma[c] = <floating>sg


def spatial_groupnorm_forward(const floating[:, :, ::1] x, const floating[::1] gamma,
                              const floating[::1] beta, Py_ssize_t groups, double eps,
                              floating[:, :, ::1] out, floating[::1] mean, floating[::1] inv_std,
                              int n_threads):
    """Group normalization of x (N, C, S) in `groups` groups of C // groups channels.

    IN x, gamma (C,), beta (C,), groups (divides C), eps > 0.
    OUT out (N, C, S) = gamma[c] * (x - mean[n, g]) * inv_std[n, g] + beta[c]; mean, inv_std
    (N * groups,) per (sample, group) (biased variance), saved for spatial_groupnorm_backward.
    Passes: read x, write out (each group's row is normalized while it is in cache).
    """
    cdef Py_ssize_t n = x.shape[0], nc = x.shape[1], s = x.shape[2]
    _gn_check_shape(n, nc, s, groups)
    check_size("gamma", gamma.shape[0], nc)
    check_size("beta", beta.shape[0], nc)
    check_3d("out", out.shape[0], out.shape[1], out.shape[2], n, nc, s)
    check_size("mean", mean.shape[0], n * groups)
    check_size("inv_std", inv_std.shape[0], n * groups)
    n_threads = threads(n_threads)
    cdef Py_ssize_t cpg = nc // groups, rows = n * groups, r
    cdef const floating* xp = &x[0, 0, 0]
    cdef floating* op = &out[0, 0, 0]
    for r in prange(rows, nogil=True, schedule='static', num_threads=n_threads):
        _gn_forward_row(xp + r * cpg * s, cpg, s, &gamma[(r % groups) * cpg],
                        &beta[(r % groups) * cpg], eps, op + r * cpg * s, &mean[r], &inv_std[r])


def spatial_groupnorm_backward(const floating[:, :, ::1] dout, const floating[:, :, ::1] x,
                               const floating[::1] mean, const floating[::1] inv_std,
                               const floating[::1] gamma, Py_ssize_t groups, floating[:, :, ::1] dx,
                               floating[::1] dgamma, floating[::1] dbeta, int n_threads):
    """Backward of spatial_groupnorm_forward from its saved mean and inv_std (xhat recomputed).

    OUT dx (N, C, S); dgamma, dbeta (C,) summed over samples and positions.
    Passes: read dout and x, write dx (row by row); read dout and x (channel sums).
    """
    cdef Py_ssize_t n = x.shape[0], nc = x.shape[1], s = x.shape[2]
    _gn_check_shape(n, nc, s, groups)
    check_3d("dout", dout.shape[0], dout.shape[1], dout.shape[2], n, nc, s)
    check_size("mean", mean.shape[0], n * groups)
    check_size("inv_std", inv_std.shape[0], n * groups)
    check_size("gamma", gamma.shape[0], nc)
    check_3d("dx", dx.shape[0], dx.shape[1], dx.shape[2], n, nc, s)
    check_size("dgamma", dgamma.shape[0], nc)
    check_size("dbeta", dbeta.shape[0], nc)
    n_threads = threads(n_threads)
    cdef Py_ssize_t cpg = nc // groups, rows = n * groups, r, c
    cdef const floating* xp = &x[0, 0, 0]
    cdef const floating* dp = &dout[0, 0, 0]
    cdef floating* qp = &dx[0, 0, 0]
    for r in prange(rows, nogil=True, schedule='static', num_threads=n_threads):
        _gn_dx_row(dp + r * cpg * s, xp + r * cpg * s, cpg, s, mean[r], inv_std[r],
                   &gamma[(r % groups) * cpg], qp + r * cpg * s)
    for c in prange(nc, nogil=True, schedule='static', num_threads=n_threads):
        _gn_param_grads(dp, xp, n, nc, s, c, groups, cpg, &mean[0], &inv_std[0], &dgamma[0], &dbeta[0])
