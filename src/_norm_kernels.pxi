# Normalization kernels: batchnorm (N, D), spatial batchnorm (N, C, S) and layernorm (N, D).
#
# Every function writes into outputs the caller allocated (fastopt.layers.normalization validates
# and allocates them); the NumPy twin with the same names and signatures is fastopt.reference.norm.
# Each function also checks every buffer's shape against x's and refuses an empty x (src/_contract.pxd)
# before touching memory, so a direct call with wrong sizes raises ValueError instead of corrupting
# memory; n_threads is always the last argument.
#
# Statistics accumulate in double. Means and variances use a shifted sum: each feature's sums run over
# t = x - K with K = the feature's first value, var = E[t^2] - E[t]^2. Since K is a sample, |mean - K| is
# a few standard deviations and the subtraction loses no meaningful bits, even for float32 data such as
# 1e4 + N(0, 1); one pass over x suffices (a two-pass scheme would read x three times in the forward).
# In the backward sums (dbeta, dgamma) the products dout * (x - mean) are formed in the array's
# precision, as xhat itself is, and only a group of ROWS (or one lane's) terms is added in that
# precision before the double accumulator: float32 rounding already present in xhat, 2x faster.
#
# Determinism: every sum is taken in an order fixed by the shapes alone, never by the thread count.
#   * batchnorm and the layernorm dgamma/dbeta (sums over rows): the rows are cut into at most
#     MAX_CHUNKS chunks whose bounds depend only on N; a thread sums whole chunks into the chunk's own
#     partial sums, which are then added in chunk order. The element-wise passes split rows freely.
#     (Splitting columns between threads instead made 2 threads slower than 1: each core's prefetcher
#     streams on into the other thread's half of every row, doubling the memory traffic.)
#   * spatial batchnorm: threads own channels; a channel's S-long runs are summed into LANES partial
#     sums (element k goes to lane k % LANES) combined in lane order at the end.
#   * layernorm statistics: threads own rows, summed with the same lanes.
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport sqrt
from libc.stdlib cimport malloc, free

from _contract cimport check_1d, check_2d, check_3d, check_nonempty, threads

# Work (elements of x) per thread below which a kernel runs on one thread (the caller passes
# fastopt._backend.threads_for(x.size, GRAIN)). Measured with `benchmarks/norm_kernels_roofline.py --grain`
# (float32 fwd+bwd, 2 threads vs 1, 2-core shared machine): batchnorm 0.7-0.8x at 8K elements,
# ~0.9-1.0x at 16K, 1.2x at 32K, 1.5x at 128K; layernorm ~1.0x at 8K, 1.2x at 16K, 1.3-1.5x at 32K.
# 2**14 splits from 32K elements on.
GRAIN = 1 << 14

cdef enum:
    # Row chunks for the sums over rows: at most MAX_CHUNKS (so at most that many threads share a
    # reduction), each at least MIN_CHUNK_ROWS rows, a multiple of ROWS.
    MAX_CHUNKS = 8
    MIN_CHUNK_ROWS = 64
    # Widest column block a chunk's rows are walked in: 8192 columns keep the block's double
    # accumulators (2 x 64 KB) within the 512 KB L2; rows' slices stay long and contiguous.
    CB = 8192
    # Rows handled together in the sums over rows: their terms are added together before they reach
    # the accumulators in memory, ROWS times fewer accumulator loads and stores.
    ROWS = 4
    # Independent partial sums for reductions along a contiguous run (element k goes to lane
    # k % LANES): vector accumulators without reassociation (no -ffast-math). With 8 lanes GCC fully
    # unrolled the lane loop into scalar code; 32 keeps it a vectorized loop: layernorm forward
    # 1024x4096 float32 4.3 -> 3.3 ms, spatial forward 32x64x32x32 2.1 -> 1.9 ms (64 was no better).
    LANES = 32


cdef inline Py_ssize_t _chunk_rows(Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t r = (n + MAX_CHUNKS - 1) // MAX_CHUNKS
    if r < MIN_CHUNK_ROWS:
        r = MIN_CHUNK_ROWS
    return ((r + ROWS - 1) // ROWS) * ROWS


cdef double* _workspace(Py_ssize_t count) except NULL:
    """One allocation per call (partial sums and per-column coefficients), freed by the caller."""
    cdef double* work = <double*>malloc(count * sizeof(double))
    if work == NULL:
        raise MemoryError(f"cannot allocate a {count * 8} byte workspace")
    return work


cdef int _check_x2(str name, Py_ssize_t n, Py_ssize_t d) except -1:
    # The kernels read a first row (batchnorm's shift) or a first column (layernorm's).
    check_nonempty(name, n, "row")
    check_nonempty(name, d, "column")
    return 0


cdef int _check_x3(str name, Py_ssize_t n, Py_ssize_t c, Py_ssize_t s) except -1:
    check_nonempty(name, n, "sample (axis 0)")
    check_nonempty(name, c, "channel (axis 1)")
    check_nonempty(name, s, "spatial element (axis 2)")
    return 0


# ---------------------------------------------------------------------------------------------------
# batchnorm on (N, D)


cdef void _bn_chunk_stats(const floating* x, Py_ssize_t n, Py_ssize_t d, const double* shift,
                          double* s1, double* s2) noexcept nogil:
    # s1[j] = sum(x[i, j] - shift[j]), s2[j] = sum((x[i, j] - shift[j])^2) over this chunk's n rows.
    cdef Py_ssize_t i, j, j0, w
    cdef const floating* r
    cdef double t0, t1, t2, t3
    for j in range(d):
        s1[j] = 0.0
        s2[j] = 0.0
    j0 = 0
    while j0 < d:
        w = min(<Py_ssize_t>CB, d - j0)
        i = 0
        while i + ROWS <= n:
            r = x + i * d + j0
            for j in range(w):
                t0 = <double>r[j] - shift[j0 + j]
                t1 = <double>r[j + d] - shift[j0 + j]
                t2 = <double>r[j + 2 * d] - shift[j0 + j]
                t3 = <double>r[j + 3 * d] - shift[j0 + j]
                s1[j0 + j] += (t0 + t1) + (t2 + t3)
                s2[j0 + j] += (t0 * t0 + t1 * t1) + (t2 * t2 + t3 * t3)
            i += ROWS
        while i < n:
            r = x + i * d + j0
            for j in range(w):
                t0 = <double>r[j] - shift[j0 + j]
                s1[j0 + j] += t0
                s2[j0 + j] += t0 * t0
            i += 1
        j0 += w


cdef void _bn_chunk_grads(const floating* dout, const floating* x, Py_ssize_t n, Py_ssize_t d,
                          const floating* mean, double* sb, double* sg) noexcept nogil:
    # sb[j] = sum(dout), sg[j] = sum(dout * (x - mean)) over this chunk's n rows (times inv_std later).
    # The products are formed in the array's precision, as xhat is, and a group of ROWS of them is
    # added in that precision before the double accumulator; forming them in double made this pass
    # 2x slower (conversions, half-width vectors) for no gain: x - mean is already rounded in xhat.
    cdef Py_ssize_t i, j, j0, w
    cdef const floating* xr
    cdef const floating* dr
    cdef floating mj
    for j in range(d):
        sb[j] = 0.0
        sg[j] = 0.0
    j0 = 0
    while j0 < d:
        w = min(<Py_ssize_t>CB, d - j0)
        i = 0
        while i + ROWS <= n:
            xr = x + i * d + j0
            dr = dout + i * d + j0
            for j in range(w):
                mj = mean[j0 + j]
                sb[j0 + j] += <double>((dr[j] + dr[j + d]) + (dr[j + 2 * d] + dr[j + 3 * d]))
                sg[j0 + j] += <double>((dr[j] * (xr[j] - mj) + dr[j + d] * (xr[j + d] - mj))
                                       + (dr[j + 2 * d] * (xr[j + 2 * d] - mj)
                                          + dr[j + 3 * d] * (xr[j + 3 * d] - mj)))
            i += ROWS
        while i < n:
            xr = x + i * d + j0
            dr = dout + i * d + j0
            for j in range(w):
                sb[j0 + j] += <double>dr[j]
                sg[j0 + j] += <double>(dr[j] * (xr[j] - mean[j0 + j]))
            i += 1
        j0 += w


cdef inline void _normalize_row(const floating* x, Py_ssize_t d, const floating* mean,
                                const floating* inv_std, const floating* gamma, const floating* beta,
                                floating* out) noexcept nogil:
    # out = gamma * ((x - mean) * inv_std) + beta. Kept in this form rather than x*A + B: for data
    # like 1e4 + N(0, 1) the latter cancels catastrophically in float32.
    cdef Py_ssize_t j
    for j in range(d):
        out[j] = gamma[j] * ((x[j] - mean[j]) * inv_std[j]) + beta[j]


cdef inline void _bn_dx_row(const floating* dout, const floating* x, Py_ssize_t d,
                            const floating* mean, const floating* inv_std, const floating* k0,
                            const floating* kb, const floating* kg, floating* dx) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(d):
        dx[j] = k0[j] * dout[j] - kb[j] - kg[j] * ((x[j] - mean[j]) * inv_std[j])


def batchnorm_train_forward(const floating[:, ::1] x, const floating[::1] gamma,
                            const floating[::1] beta, double eps, double momentum,
                            floating[:, ::1] out, floating[::1] mean, floating[::1] inv_std,
                            floating[::1] running_mean, floating[::1] running_var, int n_threads):
    """Training-mode batchnorm over the rows of x (N, D), N >= 1, D >= 1.

    IN x (N, D), gamma (D,), beta (D,), eps > 0, momentum in [0, 1].
    OUT out (N, D) = gamma * (x - mean) * inv_std + beta; mean (D,); inv_std (D,) = 1/sqrt(var + eps)
    with the biased batch variance var. INOUT running_mean, running_var (D,):
    running = momentum * running + (1 - momentum) * batch statistic (CS231n convention).
    Passes: read x (statistics), read x and write out.
    """
    cdef Py_ssize_t n = x.shape[0], d = x.shape[1]
    _check_x2("x", n, d)
    check_1d("gamma", gamma.shape[0], d)
    check_1d("beta", beta.shape[0], d)
    check_2d("out", out.shape[0], out.shape[1], n, d)
    check_1d("mean", mean.shape[0], d)
    check_1d("inv_std", inv_std.shape[0], d)
    check_1d("running_mean", running_mean.shape[0], d)
    check_1d("running_var", running_var.shape[0], d)
    n_threads = threads(n_threads)
    cdef Py_ssize_t cr = _chunk_rows(n)
    cdef Py_ssize_t nch = (n + cr - 1) // cr
    cdef Py_ssize_t k, kk, i, j
    cdef double* shift = _workspace((2 * nch + 1) * d)
    cdef double* part = shift + d                    # chunk k: s1 at part[2kd], s2 at part[(2k+1)d]
    cdef double s1, s2, mu, var
    for j in range(d):
        shift[j] = x[0, j]
    for k in prange(nch, nogil=True, schedule='static', num_threads=n_threads):
        _bn_chunk_stats(&x[k * cr, 0], min(cr, n - k * cr), d, shift,
                        part + 2 * k * d, part + (2 * k + 1) * d)
    for j in prange(d, nogil=True, schedule='static', num_threads=n_threads):
        s1 = 0.0
        s2 = 0.0
        for kk in range(nch):                        # chunk order
            s1 = s1 + part[2 * kk * d + j]
            s2 = s2 + part[(2 * kk + 1) * d + j]
        mu = s1 / n
        var = s2 / n - mu * mu
        if var < 0.0:
            var = 0.0
        mu = mu + shift[j]
        mean[j] = <floating>mu
        inv_std[j] = <floating>(1.0 / sqrt(var + eps))
        running_mean[j] = <floating>(momentum * running_mean[j] + (1.0 - momentum) * mu)
        running_var[j] = <floating>(momentum * running_var[j] + (1.0 - momentum) * var)
    free(shift)
    for i in prange(n, nogil=True, schedule='static', num_threads=n_threads):
        _normalize_row(&x[i, 0], d, &mean[0], &inv_std[0], &gamma[0], &beta[0], &out[i, 0])


def batchnorm_test_forward(const floating[:, ::1] x, const floating[::1] gamma,
                           const floating[::1] beta, const floating[::1] running_mean,
                           const floating[::1] running_var, double eps, floating[:, ::1] out,
                           int n_threads):
    """Test-mode batchnorm: out = gamma * (x - running_mean) / sqrt(running_var + eps) + beta."""
    cdef Py_ssize_t n = x.shape[0], d = x.shape[1]
    _check_x2("x", n, d)
    check_1d("gamma", gamma.shape[0], d)
    check_1d("beta", beta.shape[0], d)
    check_1d("running_mean", running_mean.shape[0], d)
    check_1d("running_var", running_var.shape[0], d)
    check_2d("out", out.shape[0], out.shape[1], n, d)
    n_threads = threads(n_threads)
    cdef Py_ssize_t i, j
    cdef floating* a = <floating*>_workspace(d)
    for j in range(d):
        a[j] = <floating>(1.0 / sqrt(<double>running_var[j] + eps))
    for i in prange(n, nogil=True, schedule='static', num_threads=n_threads):
        _normalize_row(&x[i, 0], d, &running_mean[0], a, &gamma[0], &beta[0], &out[i, 0])
    free(a)


def batchnorm_backward(const floating[:, ::1] dout, const floating[:, ::1] x,
                       const floating[::1] mean, const floating[::1] inv_std,
                       const floating[::1] gamma, floating[:, ::1] dx, floating[::1] dgamma,
                       floating[::1] dbeta, int n_threads):
    """Backward of batchnorm_train_forward from its saved mean and inv_std; xhat is recomputed.

    OUT dx (N, D) = gamma*inv_std/N * (N*dout - dbeta - xhat*dgamma), dgamma = sum_rows(dout * xhat),
    dbeta = sum_rows(dout) (D,). Passes: read dout and x (sums), read dout and x and write dx.
    """
    cdef Py_ssize_t n = x.shape[0], d = x.shape[1]
    _check_x2("x", n, d)
    check_2d("dout", dout.shape[0], dout.shape[1], n, d)
    check_1d("mean", mean.shape[0], d)
    check_1d("inv_std", inv_std.shape[0], d)
    check_1d("gamma", gamma.shape[0], d)
    check_2d("dx", dx.shape[0], dx.shape[1], n, d)
    check_1d("dgamma", dgamma.shape[0], d)
    check_1d("dbeta", dbeta.shape[0], d)
    n_threads = threads(n_threads)
    cdef Py_ssize_t cr = _chunk_rows(n)
    cdef Py_ssize_t nch = (n + cr - 1) // cr
    cdef Py_ssize_t k, kk, i, j
    cdef double* part = _workspace((2 * nch + 3) * d)
    cdef floating* k0 = <floating*>(part + 2 * nch * d)
    cdef floating* kb = <floating*>(part + (2 * nch + 1) * d)
    cdef floating* kg = <floating*>(part + (2 * nch + 2) * d)
    cdef double sb, sg, inv, scale
    for k in prange(nch, nogil=True, schedule='static', num_threads=n_threads):
        _bn_chunk_grads(&dout[k * cr, 0], &x[k * cr, 0], min(cr, n - k * cr), d, &mean[0],
                        part + 2 * k * d, part + (2 * k + 1) * d)
    for j in prange(d, nogil=True, schedule='static', num_threads=n_threads):
        sb = 0.0
        sg = 0.0
        for kk in range(nch):                        # chunk order
            sb = sb + part[2 * kk * d + j]
            sg = sg + part[(2 * kk + 1) * d + j]
        inv = inv_std[j]
        sg = sg * inv                                # sum(dout * xhat)
        dbeta[j] = <floating>sb
        dgamma[j] = <floating>sg
        # dx = k0*dout - kb - kg*xhat
        scale = <double>gamma[j] * inv
        k0[j] = <floating>scale
        kb[j] = <floating>(scale * sb / n)
        kg[j] = <floating>(scale * sg / n)
    for i in prange(n, nogil=True, schedule='static', num_threads=n_threads):
        _bn_dx_row(&dout[i, 0], &x[i, 0], d, &mean[0], &inv_std[0], k0, kb, kg, &dx[i, 0])
    free(part)


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
    cdef double sb = 0.0, sg = 0.0, cnt = <double>n * s, scale
    cdef Py_ssize_t i, k, l
    cdef const floating* p
    cdef const floating* dp
    cdef floating* q
    cdef floating k0, kb, kg
    for l in range(LANES):
        lb[l] = 0.0
        lg[l] = 0.0
    # Pass 1: read dout, x. Products dout * (x - mean) in the array's precision, as in batchnorm.
    for i in range(n):
        p = x + (i * nc + c) * s
        dp = dout + (i * nc + c) * s
        k = 0
        while k + LANES <= s:
            for l in range(LANES):
                lb[l] += <double>dp[k + l]
                lg[l] += <double>(dp[k + l] * (p[k + l] - m))
            k += LANES
        for l in range(s - k):
            lb[l] += <double>dp[k + l]
            lg[l] += <double>(dp[k + l] * (p[k + l] - m))
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
    _check_x3("x", n, nc, s)
    check_1d("gamma", gamma.shape[0], nc)
    check_1d("beta", beta.shape[0], nc)
    check_3d("out", out.shape[0], out.shape[1], out.shape[2], n, nc, s)
    check_1d("mean", mean.shape[0], nc)
    check_1d("inv_std", inv_std.shape[0], nc)
    check_1d("running_mean", running_mean.shape[0], nc)
    check_1d("running_var", running_var.shape[0], nc)
    n_threads = threads(n_threads)
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
    _check_x3("x", n, nc, s)
    check_1d("gamma", gamma.shape[0], nc)
    check_1d("beta", beta.shape[0], nc)
    check_1d("running_mean", running_mean.shape[0], nc)
    check_1d("running_var", running_var.shape[0], nc)
    check_3d("out", out.shape[0], out.shape[1], out.shape[2], n, nc, s)
    n_threads = threads(n_threads)
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
    _check_x3("x", n, nc, s)
    check_3d("dout", dout.shape[0], dout.shape[1], dout.shape[2], n, nc, s)
    check_1d("mean", mean.shape[0], nc)
    check_1d("inv_std", inv_std.shape[0], nc)
    check_1d("gamma", gamma.shape[0], nc)
    check_3d("dx", dx.shape[0], dx.shape[1], dx.shape[2], n, nc, s)
    check_1d("dgamma", dgamma.shape[0], nc)
    check_1d("dbeta", dbeta.shape[0], nc)
    n_threads = threads(n_threads)
    cdef Py_ssize_t c
    for c in prange(nc, nogil=True, schedule='static', num_threads=n_threads):
        _sbn_backward_channel(&dout[0, 0, 0], &x[0, 0, 0], n, nc, s, c, mean[c], inv_std[c],
                              gamma[c], &dx[0, 0, 0], &dgamma[0], &dbeta[0])


# ---------------------------------------------------------------------------------------------------
# layernorm on (N, D): rows for the normalization, row chunks for the dgamma/dbeta sums


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
    cdef double sb = 0.0, sg = 0.0
    cdef Py_ssize_t k, l
    cdef floating kb, kg, g
    for l in range(LANES):
        lb[l] = 0.0
        lg[l] = 0.0
    # dxhat = dout * gamma and dxhat * (x - mean) in the array's precision (the module's policy for
    # backward sums), accumulated in double lanes.
    k = 0
    while k + LANES <= d:
        for l in range(LANES):
            g = dout[k + l] * gamma[k + l]
            lb[l] += <double>g
            lg[l] += <double>(g * (x[k + l] - m))
        k += LANES
    for l in range(d - k):
        g = dout[k + l] * gamma[k + l]
        lb[l] += <double>g
        lg[l] += <double>(g * (x[k + l] - m))
    for l in range(LANES):
        sb += lb[l]
        sg += lg[l]
    # dx = inv_std/D * (D*dxhat - sum(dxhat) - xhat*sum(dxhat*xhat)), sum(dxhat*xhat) = a*sg
    kb = <floating>(a * sb / d)
    kg = <floating>(<double>a * a * sg / d)
    for k in range(d):                              # the row is still in cache
        dx[k] = a * (dout[k] * gamma[k]) - kb - kg * ((x[k] - m) * a)


cdef void _ln_backward_chunk(const floating* dout, const floating* x, Py_ssize_t n, Py_ssize_t d,
                             const floating* mean, const floating* inv_std, const floating* gamma,
                             floating* dx, double* sb, double* sg) noexcept nogil:
    # One row chunk: dx row by row, and the chunk's partial dbeta = sum(dout) and
    # dgamma = sum(dout * xhat) from the same rows while they are in cache, ROWS rows at a time
    # (products and the ROWS-term group in the array's precision, as in batchnorm's backward).
    cdef Py_ssize_t i, j, r
    cdef const floating* xr
    cdef const floating* dr
    cdef floating m0, m1, m2, m3, a0, a1, a2, a3
    for j in range(d):
        sb[j] = 0.0
        sg[j] = 0.0
    i = 0
    while i + ROWS <= n:
        for r in range(i, i + ROWS):
            _ln_backward_row(dout + r * d, x + r * d, d, mean[r], inv_std[r], gamma, dx + r * d)
        xr = x + i * d
        dr = dout + i * d
        m0, m1, m2, m3 = mean[i], mean[i + 1], mean[i + 2], mean[i + 3]
        a0, a1, a2, a3 = inv_std[i], inv_std[i + 1], inv_std[i + 2], inv_std[i + 3]
        for j in range(d):
            sb[j] += <double>((dr[j] + dr[j + d]) + (dr[j + 2 * d] + dr[j + 3 * d]))
            sg[j] += <double>((dr[j] * ((xr[j] - m0) * a0) + dr[j + d] * ((xr[j + d] - m1) * a1))
                              + (dr[j + 2 * d] * ((xr[j + 2 * d] - m2) * a2)
                                 + dr[j + 3 * d] * ((xr[j + 3 * d] - m3) * a3)))
        i += ROWS
    while i < n:
        _ln_backward_row(dout + i * d, x + i * d, d, mean[i], inv_std[i], gamma, dx + i * d)
        xr = x + i * d
        dr = dout + i * d
        m0 = mean[i]
        a0 = inv_std[i]
        for j in range(d):
            sb[j] += <double>dr[j]
            sg[j] += <double>(dr[j] * ((xr[j] - m0) * a0))
        i += 1


def layernorm_forward(const floating[:, ::1] x, const floating[::1] gamma, const floating[::1] beta,
                      double eps, floating[:, ::1] out, floating[::1] mean, floating[::1] inv_std,
                      int n_threads):
    """Layernorm over each row of x (N, D): out = gamma * (x - mean) * inv_std + beta.

    OUT out (N, D); mean, inv_std (N,) per row (biased variance), saved for layernorm_backward.
    Passes: read x, write out (each row is normalized while it is in cache).
    """
    cdef Py_ssize_t n = x.shape[0], d = x.shape[1]
    _check_x2("x", n, d)
    check_1d("gamma", gamma.shape[0], d)
    check_1d("beta", beta.shape[0], d)
    check_2d("out", out.shape[0], out.shape[1], n, d)
    check_1d("mean", mean.shape[0], n)
    check_1d("inv_std", inv_std.shape[0], n)
    n_threads = threads(n_threads)
    cdef Py_ssize_t i
    for i in prange(n, nogil=True, schedule='static', num_threads=n_threads):
        _ln_forward_row(&x[i, 0], d, &gamma[0], &beta[0], eps, &out[i, 0], &mean[i], &inv_std[i])


def layernorm_backward(const floating[:, ::1] dout, const floating[:, ::1] x,
                       const floating[::1] mean, const floating[::1] inv_std,
                       const floating[::1] gamma, floating[:, ::1] dx, floating[::1] dgamma,
                       floating[::1] dbeta, int n_threads):
    """Backward of layernorm_forward. OUT dx (N, D); dgamma, dbeta (D,) summed over rows.

    Passes: read dout and x, write dx (the sums over rows reuse the rows while in cache).
    """
    cdef Py_ssize_t n = x.shape[0], d = x.shape[1]
    _check_x2("x", n, d)
    check_2d("dout", dout.shape[0], dout.shape[1], n, d)
    check_1d("mean", mean.shape[0], n)
    check_1d("inv_std", inv_std.shape[0], n)
    check_1d("gamma", gamma.shape[0], d)
    check_2d("dx", dx.shape[0], dx.shape[1], n, d)
    check_1d("dgamma", dgamma.shape[0], d)
    check_1d("dbeta", dbeta.shape[0], d)
    n_threads = threads(n_threads)
    cdef Py_ssize_t cr = _chunk_rows(n)
    cdef Py_ssize_t nch = (n + cr - 1) // cr
    cdef Py_ssize_t k, kk, j
    cdef double* part = _workspace(2 * nch * d)
    cdef double sb, sg
    for k in prange(nch, nogil=True, schedule='static', num_threads=n_threads):
        _ln_backward_chunk(&dout[k * cr, 0], &x[k * cr, 0], min(cr, n - k * cr), d, &mean[k * cr],
                           &inv_std[k * cr], &gamma[0], &dx[k * cr, 0],
                           part + 2 * k * d, part + (2 * k + 1) * d)
    for j in prange(d, nogil=True, schedule='static', num_threads=n_threads):
        sb = 0.0
        sg = 0.0
        for kk in range(nch):                        # chunk order
            sb = sb + part[2 * kk * d + j]
            sg = sg + part[(2 * kk + 1) * d + j]
        dbeta[j] = <floating>sb
        dgamma[j] = <floating>sg
    free(part)
