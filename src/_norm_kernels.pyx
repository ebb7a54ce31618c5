# Normalization kernels: batchnorm (N, D), spatial batchnorm (N, C, S) and layernorm (N, D).
#
# Every function writes into outputs the caller allocated and validated (fastopt.layers.normalization
# does that); the NumPy twin with the same names and signatures is fastopt.reference.norm.
#
# Statistics accumulate in double. Means and variances use a shifted sum: each feature's sums run over
# t = x - K with K = the feature's first value, var = E[t^2] - E[t]^2. Since K is a sample, |mean - K| is
# a few standard deviations and the subtraction loses no meaningful bits, even for float32 data such as
# 1e4 + N(0, 1); one pass over x suffices (a two-pass scheme would read x three times in the forward).
#
# Determinism: each statistic is owned by exactly one thread and summed in a fixed order.
#   * batchnorm: threads own blocks of columns and walk all rows in order; a column's sums do not
#     depend on how the columns are blocked, so the result does not depend on the thread count.
#   * spatial batchnorm: threads own channels; a channel's S-long runs are summed into LANES partial
#     sums (element k goes to lane k % LANES, fixed) combined in lane order at the end.
#   * layernorm: threads own rows (row sums with the same lanes); dgamma/dbeta, which are sums over
#     rows, come from a separate pass in which threads own blocks of columns, as in batchnorm.
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport sqrt
from libc.stdlib cimport malloc, free

# Work (elements of x) per thread below which a kernel runs on one thread. Measured with
# benchmarks/bench_norm_grain.py (batchnorm fwd+bwd, float32, 2 threads vs 1 on this 2-core machine):
# 2 threads break even near 64K elements (256x256) and win ~1.7x at 1M; 2**16 keeps small calls serial.
GRAIN = 1 << 16

cdef enum:
    # Widest column block in the column-blocked passes. Blocks walk their rows in order, so each
    # row's slice of a block should be long and contiguous for the prefetchers: 1 KB slices
    # (256 float32 columns) ran the 1024x4096 float32 forward 3x slower than whole 16 KB rows.
    # 8192 columns keep a block's double accumulators (3 x 64 KB) within the 512 KB L2.
    CB = 8192
    # Rows handled together in the column-blocked reductions: their terms are added together before
    # they reach the accumulators in memory, ROWS times fewer accumulator loads and stores.
    # The grouping depends only on N, never on the thread count.
    ROWS = 4
    # Independent partial sums for reductions along a contiguous run: lets the compiler keep several
    # vector accumulators in flight without reassociating (no -ffast-math).
    LANES = 8


# ---------------------------------------------------------------------------------------------------
# batchnorm on (N, D): column blocks. Each helper gets pointers at its block's first column (row
# stride d) and a workspace of 6 * w doubles from the caller's single per-call allocation.


cdef inline Py_ssize_t _block_width(Py_ssize_t d, int n_threads) noexcept nogil:
    # Enough blocks to feed every thread, none wider than CB; a multiple of 8 keeps vector loops whole.
    cdef Py_ssize_t w = (d + n_threads - 1) // n_threads
    w = ((w + 7) // 8) * 8
    return CB if w > CB else w


cdef double* _workspace(Py_ssize_t d) except NULL:
    """6 doubles per column: per-block accumulators and per-column coefficients."""
    cdef double* work = <double*>malloc(6 * d * sizeof(double))
    if work == NULL:
        raise MemoryError(f"cannot allocate the {6 * d * 8} byte workspace")
    return work


cdef void _normalize_cols(const floating* x, Py_ssize_t n, Py_ssize_t d, Py_ssize_t w,
                          const floating* mean, const floating* inv_std, const floating* gamma,
                          const floating* beta, floating* out) noexcept nogil:
    # out = gamma * ((x - mean) * inv_std) + beta (read x, write out). Kept in this form rather than
    # x*A + B: for data like 1e4 + N(0, 1) the latter cancels catastrophically in float32.
    cdef Py_ssize_t i, j
    cdef const floating* r
    cdef floating* o
    for i in range(n):
        r = x + i * d
        o = out + i * d
        for j in range(w):
            o[j] = gamma[j] * ((r[j] - mean[j]) * inv_std[j]) + beta[j]


cdef void _bn_train_cols(const floating* x, Py_ssize_t n, Py_ssize_t d, Py_ssize_t w,
                         const floating* gamma, const floating* beta, double eps, double momentum,
                         floating* out, floating* mean, floating* inv_std,
                         floating* running_mean, floating* running_var, double* work) noexcept nogil:
    cdef double* shift = work
    cdef double* s1 = work + w
    cdef double* s2 = work + 2 * w
    cdef Py_ssize_t i, j
    cdef const floating* r
    cdef double t0, t1, t2, t3, mu, var
    for j in range(w):
        shift[j] = x[j]
        s1[j] = 0.0
        s2[j] = 0.0
    i = 0                                           # pass 1: read x
    while i + ROWS <= n:
        r = x + i * d
        for j in range(w):
            t0 = <double>r[j] - shift[j]
            t1 = <double>r[j + d] - shift[j]
            t2 = <double>r[j + 2 * d] - shift[j]
            t3 = <double>r[j + 3 * d] - shift[j]
            s1[j] += (t0 + t1) + (t2 + t3)
            s2[j] += (t0 * t0 + t1 * t1) + (t2 * t2 + t3 * t3)
        i += ROWS
    while i < n:
        r = x + i * d
        for j in range(w):
            t0 = <double>r[j] - shift[j]
            s1[j] += t0
            s2[j] += t0 * t0
        i += 1
    for j in range(w):
        mu = s1[j] / n
        var = s2[j] / n - mu * mu
        if var < 0.0:
            var = 0.0
        mu = mu + shift[j]
        mean[j] = <floating>mu
        inv_std[j] = <floating>(1.0 / sqrt(var + eps))
        running_mean[j] = <floating>(momentum * running_mean[j] + (1.0 - momentum) * mu)
        running_var[j] = <floating>(momentum * running_var[j] + (1.0 - momentum) * var)
    _normalize_cols(x, n, d, w, mean, inv_std, gamma, beta, out)   # pass 2: read x, write out


cdef void _bn_test_cols(const floating* x, Py_ssize_t n, Py_ssize_t d, Py_ssize_t w,
                        const floating* gamma, const floating* beta,
                        const floating* running_mean, const floating* running_var, double eps,
                        floating* out, double* work) noexcept nogil:
    cdef floating* a = <floating*>work
    cdef Py_ssize_t j
    for j in range(w):
        a[j] = <floating>(1.0 / sqrt(<double>running_var[j] + eps))
    _normalize_cols(x, n, d, w, running_mean, a, gamma, beta, out)


cdef void _bn_backward_cols(const floating* dout, const floating* x, Py_ssize_t n, Py_ssize_t d,
                            Py_ssize_t w, const floating* mean, const floating* inv_std,
                            const floating* gamma, floating* dx, floating* dgamma, floating* dbeta,
                            double* work) noexcept nogil:
    cdef double* sb = work
    cdef double* sg = work + w
    cdef floating* k0 = <floating*>(work + 2 * w)
    cdef floating* kb = <floating*>(work + 3 * w)
    cdef floating* kg = <floating*>(work + 4 * w)
    cdef Py_ssize_t i, j
    cdef const floating* xr
    cdef const floating* dr
    cdef floating* o
    cdef double inv, scale, dg, db
    cdef floating mj
    for j in range(w):
        sb[j] = 0.0
        sg[j] = 0.0
    # Pass 1: read dout, x. The products dout * (x - mean) are formed in the array's precision, as
    # xhat is, and a group of ROWS of them is added in that precision before the double accumulator;
    # forming them in double made this pass 2x slower (float->double conversions, half-width vectors)
    # for no gain: the float32 rounding of x - mean is already in xhat.
    i = 0
    while i + ROWS <= n:
        xr = x + i * d
        dr = dout + i * d
        for j in range(w):
            mj = mean[j]
            sb[j] += <double>((dr[j] + dr[j + d]) + (dr[j + 2 * d] + dr[j + 3 * d]))
            sg[j] += <double>((dr[j] * (xr[j] - mj) + dr[j + d] * (xr[j + d] - mj))
                              + (dr[j + 2 * d] * (xr[j + 2 * d] - mj) + dr[j + 3 * d] * (xr[j + 3 * d] - mj)))
        i += ROWS
    while i < n:
        xr = x + i * d
        dr = dout + i * d
        for j in range(w):
            sb[j] += <double>dr[j]
            sg[j] += <double>(dr[j] * (xr[j] - mean[j]))
        i += 1
    for j in range(w):
        inv = inv_std[j]
        db = sb[j]
        dg = sg[j] * inv                           # sum(dout * xhat)
        dbeta[j] = <floating>db
        dgamma[j] = <floating>dg
        # dx = gamma*inv_std/N * (N*dout - dbeta - xhat*dgamma) = k0*dout - kb - kg*xhat
        scale = <double>gamma[j] * inv
        k0[j] = <floating>scale
        kb[j] = <floating>(scale * db / n)
        kg[j] = <floating>(scale * dg / n)
    for i in range(n):                              # pass 2: read dout, x, write dx
        xr = x + i * d
        dr = dout + i * d
        o = dx + i * d
        for j in range(w):
            o[j] = k0[j] * dr[j] - kb[j] - kg[j] * ((xr[j] - mean[j]) * inv_std[j])


def batchnorm_train_forward(const floating[:, ::1] x, const floating[::1] gamma,
                            const floating[::1] beta, double eps, double momentum,
                            floating[:, ::1] out, floating[::1] mean, floating[::1] inv_std,
                            floating[::1] running_mean, floating[::1] running_var, int n_threads):
    """Training-mode batchnorm over the rows of x (N, D), N >= 1, D >= 1.

    IN x (N, D), gamma (D,), beta (D,), eps > 0, momentum in [0, 1].
    OUT out (N, D) = gamma * (x - mean) * inv_std + beta; mean (D,); inv_std (D,) = 1/sqrt(var + eps)
    with the biased batch variance var. INOUT running_mean, running_var (D,):
    running = momentum * running + (1 - momentum) * batch statistic (CS231n convention).
    """
    cdef Py_ssize_t n = x.shape[0], d = x.shape[1]
    cdef Py_ssize_t w = _block_width(d, n_threads)
    cdef Py_ssize_t nb = (d + w - 1) // w
    cdef Py_ssize_t blk, j0
    cdef double* work = _workspace(d)
    for blk in prange(nb, nogil=True, schedule='static', num_threads=n_threads):
        j0 = blk * w
        _bn_train_cols(&x[0, j0], n, d, min(w, d - j0), &gamma[j0], &beta[j0], eps, momentum,
                       &out[0, j0], &mean[j0], &inv_std[j0], &running_mean[j0], &running_var[j0],
                       work + 6 * j0)
    free(work)


def batchnorm_test_forward(const floating[:, ::1] x, const floating[::1] gamma,
                           const floating[::1] beta, const floating[::1] running_mean,
                           const floating[::1] running_var, double eps, floating[:, ::1] out,
                           int n_threads):
    """Test-mode batchnorm: out = gamma * (x - running_mean) / sqrt(running_var + eps) + beta."""
    cdef Py_ssize_t n = x.shape[0], d = x.shape[1]
    cdef Py_ssize_t w = _block_width(d, n_threads)
    cdef Py_ssize_t nb = (d + w - 1) // w
    cdef Py_ssize_t blk, j0
    cdef double* work = _workspace(d)
    for blk in prange(nb, nogil=True, schedule='static', num_threads=n_threads):
        j0 = blk * w
        _bn_test_cols(&x[0, j0], n, d, min(w, d - j0), &gamma[j0], &beta[j0],
                      &running_mean[j0], &running_var[j0], eps, &out[0, j0], work + 6 * j0)
    free(work)


def batchnorm_backward(const floating[:, ::1] dout, const floating[:, ::1] x,
                       const floating[::1] mean, const floating[::1] inv_std,
                       const floating[::1] gamma, floating[:, ::1] dx, floating[::1] dgamma,
                       floating[::1] dbeta, int n_threads):
    """Backward of batchnorm_train_forward from its saved mean and inv_std; xhat is recomputed.

    OUT dx (N, D), dgamma = sum_rows(dout * xhat), dbeta = sum_rows(dout) (D,).
    """
    cdef Py_ssize_t n = x.shape[0], d = x.shape[1]
    cdef Py_ssize_t w = _block_width(d, n_threads)
    cdef Py_ssize_t nb = (d + w - 1) // w
    cdef Py_ssize_t blk, j0
    cdef double* work = _workspace(d)
    for blk in prange(nb, nogil=True, schedule='static', num_threads=n_threads):
        j0 = blk * w
        _bn_backward_cols(&dout[0, j0], &x[0, j0], n, d, min(w, d - j0), &mean[j0], &inv_std[j0],
                          &gamma[j0], &dx[0, j0], &dgamma[j0], &dbeta[j0], work + 6 * j0)
    free(work)


# ---------------------------------------------------------------------------------------------------
# spatial batchnorm on (N, C, S), S = H*W: one channel per task, N runs of S contiguous elements


cdef void _sbn_train_channel(const floating* x, Py_ssize_t n, Py_ssize_t nc, Py_ssize_t s, Py_ssize_t c,
                             floating gamma, floating beta, double eps, double momentum,
                             floating* out, floating* mean, floating* inv_std,
                             floating* running_mean, floating* running_var) noexcept nogil:
    cdef double l1[LANES]
    cdef double l2[LANES]
    cdef double shift = x[c * s], t, s1 = 0.0, s2 = 0.0, mu, var, cnt = <double>n * s
    cdef Py_ssize_t i, k, l
    cdef const floating* p
    cdef floating* q
    cdef floating m, a
    for l in range(LANES):
        l1[l] = 0.0
        l2[l] = 0.0
    for i in range(n):                              # pass 1: read x
        p = x + (i * nc + c) * s
        k = 0
        while k + LANES <= s:
            for l in range(LANES):
                t = <double>p[k + l] - shift
                l1[l] += t
                l2[l] += t * t
            k += LANES
        for l in range(s - k):
            t = <double>p[k + l] - shift
            l1[l] += t
            l2[l] += t * t
    for l in range(LANES):
        s1 += l1[l]
        s2 += l2[l]
    mu = s1 / cnt
    var = s2 / cnt - mu * mu
    if var < 0.0:
        var = 0.0
    mu = mu + shift
    mean[c] = m = <floating>mu
    inv_std[c] = a = <floating>(1.0 / sqrt(var + eps))
    running_mean[c] = <floating>(momentum * running_mean[c] + (1.0 - momentum) * mu)
    running_var[c] = <floating>(momentum * running_var[c] + (1.0 - momentum) * var)
    for i in range(n):                              # pass 2: read x, write out
        p = x + (i * nc + c) * s
        q = out + (i * nc + c) * s
        for k in range(s):
            q[k] = gamma * ((p[k] - m) * a) + beta


cdef void _sbn_test_channel(const floating* x, Py_ssize_t n, Py_ssize_t nc, Py_ssize_t s, Py_ssize_t c,
                            floating gamma, floating beta, floating m, floating a,
                            floating* out) noexcept nogil:
    cdef Py_ssize_t i, k
    cdef const floating* p
    cdef floating* q
    for i in range(n):
        p = x + (i * nc + c) * s
        q = out + (i * nc + c) * s
        for k in range(s):
            q[k] = gamma * ((p[k] - m) * a) + beta


cdef void _sbn_backward_channel(const floating* dout, const floating* x, Py_ssize_t n, Py_ssize_t nc,
                                Py_ssize_t s, Py_ssize_t c, floating m, floating a, floating gamma,
                                floating* dx, floating* dgamma, floating* dbeta) noexcept nogil:
    cdef double lb[LANES]
    cdef double lg[LANES]
    cdef double md = m, t, sb = 0.0, sg = 0.0, cnt = <double>n * s, scale
    cdef Py_ssize_t i, k, l
    cdef const floating* p
    cdef const floating* dp
    cdef floating* q
    cdef floating k0, kb, kg
    for l in range(LANES):
        lb[l] = 0.0
        lg[l] = 0.0
    for i in range(n):                              # pass 1: read dout, x
        p = x + (i * nc + c) * s
        dp = dout + (i * nc + c) * s
        k = 0
        while k + LANES <= s:
            for l in range(LANES):
                t = dp[k + l]
                lb[l] += t
                lg[l] += t * (<double>p[k + l] - md)
            k += LANES
        for l in range(s - k):
            t = dp[k + l]
            lb[l] += t
            lg[l] += t * (<double>p[k + l] - md)
    for l in range(LANES):
        sb += lb[l]
        sg += lg[l]
    sg = sg * a                                     # sum(dout * xhat)
    dbeta[c] = <floating>sb
    dgamma[c] = <floating>sg
    scale = <double>gamma * a
    k0 = <floating>scale
    kb = <floating>(scale * sb / cnt)
    kg = <floating>(scale * sg / cnt)
    for i in range(n):                              # pass 2: read dout, x, write dx
        p = x + (i * nc + c) * s
        dp = dout + (i * nc + c) * s
        q = dx + (i * nc + c) * s
        for k in range(s):
            q[k] = k0 * dp[k] - kb - kg * ((p[k] - m) * a)


def spatial_batchnorm_train_forward(const floating[:, :, ::1] x, const floating[::1] gamma,
                                    const floating[::1] beta, double eps, double momentum,
                                    floating[:, :, ::1] out, floating[::1] mean, floating[::1] inv_std,
                                    floating[::1] running_mean, floating[::1] running_var,
                                    int n_threads):
    """batchnorm_train_forward per channel of x (N, C, S) (an (N, C, H, W) array viewed with S = H*W):
    statistics over N and S, parameters and statistics of shape (C,)."""
    cdef Py_ssize_t n = x.shape[0], nc = x.shape[1], s = x.shape[2]
    cdef Py_ssize_t c
    for c in prange(nc, nogil=True, schedule='static', num_threads=n_threads):
        _sbn_train_channel(&x[0, 0, 0], n, nc, s, c, gamma[c], beta[c], eps, momentum,
                           &out[0, 0, 0], &mean[0], &inv_std[0], &running_mean[0], &running_var[0])


def spatial_batchnorm_test_forward(const floating[:, :, ::1] x, const floating[::1] gamma,
                                   const floating[::1] beta, const floating[::1] running_mean,
                                   const floating[::1] running_var, double eps,
                                   floating[:, :, ::1] out, int n_threads):
    """batchnorm_test_forward per channel of x (N, C, S)."""
    cdef Py_ssize_t n = x.shape[0], nc = x.shape[1], s = x.shape[2]
    cdef Py_ssize_t c
    for c in prange(nc, nogil=True, schedule='static', num_threads=n_threads):
        _sbn_test_channel(&x[0, 0, 0], n, nc, s, c, gamma[c], beta[c], running_mean[c],
                          <floating>(1.0 / sqrt(<double>running_var[c] + eps)), &out[0, 0, 0])


def spatial_batchnorm_backward(const floating[:, :, ::1] dout, const floating[:, :, ::1] x,
                               const floating[::1] mean, const floating[::1] inv_std,
                               const floating[::1] gamma, floating[:, :, ::1] dx,
                               floating[::1] dgamma, floating[::1] dbeta, int n_threads):
    """batchnorm_backward per channel of x (N, C, S)."""
    cdef Py_ssize_t n = x.shape[0], nc = x.shape[1], s = x.shape[2]
    cdef Py_ssize_t c
    for c in prange(nc, nogil=True, schedule='static', num_threads=n_threads):
        _sbn_backward_channel(&dout[0, 0, 0], &x[0, 0, 0], n, nc, s, c, mean[c], inv_std[c],
                              gamma[c], &dx[0, 0, 0], &dgamma[0], &dbeta[0])


# ---------------------------------------------------------------------------------------------------
# layernorm on (N, D): rows for the normalization, column blocks for dgamma/dbeta


cdef void _ln_forward_row(const floating* x, Py_ssize_t d, const floating* gamma,
                          const floating* beta, double eps, floating* out, floating* mean,
                          floating* inv_std) noexcept nogil:
    cdef double l1[LANES]
    cdef double l2[LANES]
    cdef double shift = x[0], t, s1 = 0.0, s2 = 0.0, mu, var
    cdef Py_ssize_t k, l
    cdef floating m, a
    for l in range(LANES):
        l1[l] = 0.0
        l2[l] = 0.0
    k = 0
    while k + LANES <= d:
        for l in range(LANES):
            t = <double>x[k + l] - shift
            l1[l] += t
            l2[l] += t * t
        k += LANES
    for l in range(d - k):
        t = <double>x[k + l] - shift
        l1[l] += t
        l2[l] += t * t
    for l in range(LANES):
        s1 += l1[l]
        s2 += l2[l]
    mu = s1 / d
    var = s2 / d - mu * mu
    if var < 0.0:
        var = 0.0
    mean[0] = m = <floating>(mu + shift)
    inv_std[0] = a = <floating>(1.0 / sqrt(var + eps))
    for k in range(d):                              # the row is still in cache
        out[k] = gamma[k] * ((x[k] - m) * a) + beta[k]


cdef void _ln_backward_row(const floating* dout, const floating* x, Py_ssize_t d, floating m,
                           floating a, const floating* gamma, floating* dx) noexcept nogil:
    cdef double lb[LANES]
    cdef double lg[LANES]
    cdef double md = m, t, sb = 0.0, sg = 0.0
    cdef Py_ssize_t k, l
    cdef floating kb, kg
    for l in range(LANES):
        lb[l] = 0.0
        lg[l] = 0.0
    k = 0
    while k + LANES <= d:
        for l in range(LANES):
            t = <double>dout[k + l] * gamma[k + l]  # dxhat
            lb[l] += t
            lg[l] += t * (<double>x[k + l] - md)
        k += LANES
    for l in range(d - k):
        t = <double>dout[k + l] * gamma[k + l]
        lb[l] += t
        lg[l] += t * (<double>x[k + l] - md)
    for l in range(LANES):
        sb += lb[l]
        sg += lg[l]
    # dx = inv_std/D * (D*dxhat - sum(dxhat) - xhat*sum(dxhat*xhat)), sum(dxhat*xhat) = a*sg
    kb = <floating>(a * sb / d)
    kg = <floating>(<double>a * a * sg / d)
    for k in range(d):                              # the row is still in cache
        dx[k] = a * (dout[k] * gamma[k]) - kb - kg * ((x[k] - m) * a)


cdef void _ln_param_grad_cols(const floating* dout, const floating* x, Py_ssize_t n, Py_ssize_t d,
                              Py_ssize_t w, const floating* mean, const floating* inv_std,
                              floating* dgamma, floating* dbeta, double* work) noexcept nogil:
    # dbeta = sum_rows(dout), dgamma = sum_rows(dout * xhat) for one column block (pointers at its
    # first column), rows in order.
    cdef double* sb = work
    cdef double* sg = work + w
    cdef Py_ssize_t i, j
    cdef const floating* xr
    cdef const floating* dr
    cdef double md, a, t
    for j in range(w):
        sb[j] = 0.0
        sg[j] = 0.0
    for i in range(n):
        xr = x + i * d
        dr = dout + i * d
        md = mean[i]
        a = inv_std[i]
        for j in range(w):
            t = dr[j]
            sb[j] += t
            sg[j] += t * ((<double>xr[j] - md) * a)
    for j in range(w):
        dbeta[j] = <floating>sb[j]
        dgamma[j] = <floating>sg[j]


def layernorm_forward(const floating[:, ::1] x, const floating[::1] gamma, const floating[::1] beta,
                      double eps, floating[:, ::1] out, floating[::1] mean, floating[::1] inv_std,
                      int n_threads):
    """Layernorm over each row of x (N, D): out = gamma * (x - mean) * inv_std + beta.

    OUT out (N, D); mean, inv_std (N,) per row (biased variance), saved for layernorm_backward.
    """
    cdef Py_ssize_t n = x.shape[0], d = x.shape[1]
    cdef Py_ssize_t i
    for i in prange(n, nogil=True, schedule='static', num_threads=n_threads):
        _ln_forward_row(&x[i, 0], d, &gamma[0], &beta[0], eps, &out[i, 0], &mean[i], &inv_std[i])


def layernorm_backward(const floating[:, ::1] dout, const floating[:, ::1] x,
                       const floating[::1] mean, const floating[::1] inv_std,
                       const floating[::1] gamma, floating[:, ::1] dx, floating[::1] dgamma,
                       floating[::1] dbeta, int n_threads):
    """Backward of layernorm_forward. OUT dx (N, D); dgamma, dbeta (D,) summed over rows."""
    cdef Py_ssize_t n = x.shape[0], d = x.shape[1]
    cdef Py_ssize_t w = _block_width(d, n_threads)
    cdef Py_ssize_t nb = (d + w - 1) // w
    cdef Py_ssize_t i, blk, j0
    cdef double* work = _workspace(d)
    for i in prange(n, nogil=True, schedule='static', num_threads=n_threads):
        _ln_backward_row(&dout[i, 0], &x[i, 0], d, mean[i], inv_std[i], &gamma[0], &dx[i, 0])
    for blk in prange(nb, nogil=True, schedule='static', num_threads=n_threads):
        j0 = blk * w
        _ln_param_grad_cols(&dout[0, j0], &x[0, j0], n, d, min(w, d - j0), &mean[0], &inv_std[0],
                            &dgamma[j0], &dbeta[j0], work + 6 * j0)
    free(work)
