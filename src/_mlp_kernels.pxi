# Fused elementwise passes of an MLP training step on (N, D) C-contiguous float32/float64 arrays.
#
# Each kernel replaces several NumPy expressions (and their temporaries) by one pass over memory.
# Twin: fastopt/reference/mlp.py (same names, same signatures, same operation order). Every buffer
# is checked against the shape of the first argument and n_threads (last) is checked (src/_contract.pxd).
#
# Determinism: column reductions (bias grads, batchnorm statistics) are partitioned by feature in
# fixed blocks of COLS columns; each column is summed in row order by exactly one thread, so the
# result does not depend on the thread count. Row kernels write disjoint rows. The softmax loss sums
# per-row losses serially in row order after the parallel pass.
#
# One thread: the loops run outside any OpenMP parallel region (`if n_threads == 1`). Entering
# one costs ~1-3 us even for a team of one (a 1-element prange kernel 3.3-4.2 us against 0.8-1.5 us
# for the same loop without it, loaded Zen 3), as much as the work on the digits MLP's 64-row
# arrays, six regions a step. The serial loop runs the same blocks or rows in the same order, so
# the results are the same bits.
#
# Cache: a block is N x COLS elements (256 x 64 float32 = 64 KiB for the benchmark MLP). The
# batchnorm kernels pass over a block two or three times; after the first pass the block sits in
# L2, so the extra passes cost cache bandwidth, not memory bandwidth.
from cython cimport floating
from cython.parallel cimport prange
from libc.stdint cimport int32_t, int64_t
from libc.stdlib cimport free, malloc
from libc.math cimport sqrt, log

from _fastmath cimport f_exp, f_max
from _contract cimport check_1d as _check_1d, check_2d as _check_2d, threads

# Elements per thread below which a kernel runs on one thread (work = N * D): threads_for(N * D,
# GRAIN) gives 2 threads from 64k elements. Measured with `tools/profile_mlp_step.py --grain` on
# (N, 1024) float32 (2-core EPYC, other jobs running): below ~16k elements a 2nd thread gains
# nothing or loses (fork/join ~5-10 us against passes of 5-30 us); from 32k-64k elements the
# batchnorm kernels gain 20-40%, the one-pass ReLU kernels 10-20%.
GRAIN = 32768

cdef enum:
    COLS = 64          # columns per reduction block (fixed: it decides the summation partition)

ctypedef fused label_t:
    int32_t
    int64_t


cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    /* g where o > 0, else +0, as a bit mask: no branch for GCC to if-convert. A plain select
       (Cython's `a if c else b`, or C's `c ? a : b`) stayed control flow in the accumulating
       batchnorm-backward loop ("not vectorized: control flow in loop") and, on the ~50/50 random
       sign of `o`, mispredicted: 2.4 ms instead of ~0.3 ms for 256 x 1024 float32. */
    static inline float fo_select_pos_f(float g, float o) {
        uint32_t bits, mask = (uint32_t)0 - (uint32_t)(o > 0.0f);
        memcpy(&bits, &g, sizeof bits); bits &= mask; memcpy(&g, &bits, sizeof bits); return g;
    }
    static inline double fo_select_pos_d(double g, double o) {
        uint64_t bits, mask = (uint64_t)0 - (uint64_t)(o > 0.0);
        memcpy(&bits, &g, sizeof bits); bits &= mask; memcpy(&g, &bits, sizeof bits); return g;
    }
    /* expf(x) for x <= 0 or NaN (softmax's s - max s): Cephes' expf (x = n ln2 + r, ln2 in two
       parts, a degree-5 polynomial) in IEEE float operations only, within 1 ulp of the correctly
       rounded value (checked at every float32 in [-110, 0]; 99% of them equal to glibc's expf).
       No libm call, so the softmax loop vectorizes and every SIMD build computes the same bits;
       glibc's expf, called per element, was most of the output layer's ~11 ns per score. */
    static inline float fo_expf_nonpos(float x) {
        float fx, n, r, p;
        int ni, n1, n2;
        uint32_t b1, b2;
        float s1, s2;
        x = x < -104.0f ? -104.0f : x;             /* expf(-104) < 2^-150 rounds to 0; NaN stays */
        fx = x * 1.44269504088896341f;             /* log2(e) */
        n = (fx + 12582912.0f) - 12582912.0f;      /* round to nearest: |fx| <= 151 < 2^22 */
        r = x - n * 0.693359375f;                  /* exact: 9-bit ln2 head, n has 8 bits */
        r = r - n * -2.12194440e-4f;               /* ln2 tail */
        p = 1.9875691500e-4f;
        p = p * r + 1.3981999507e-3f;
        p = p * r + 8.3334519073e-3f;
        p = p * r + 4.1665795894e-2f;
        p = p * r + 1.6666665459e-1f;
        p = p * r + 5.0000001201e-1f;
        p = (p * (r * r) + r) + 1.0f;
        /* p * 2^n with n in [-150, 0], as two normal factors: one rounding, into a subnormal too */
        ni = (int)(n == n ? n : 0.0f);
        n1 = ni / 2;
        n2 = ni - n1;
        b1 = (uint32_t)(n1 + 127) << 23;
        b2 = (uint32_t)(n2 + 127) << 23;
        memcpy(&s1, &b1, sizeof s1);
        memcpy(&s2, &b2, sizeof s2);
        return (p * s1) * s2;
    }
    """
    float fo_select_pos_f(float g, float o) noexcept nogil
    double fo_select_pos_d(double g, double o) noexcept nogil
    float fo_expf_nonpos(float x) noexcept nogil


cdef inline floating _exp_nonpos(floating x) noexcept nogil:
    # exp(x), x <= 0: float32 by fo_expf_nonpos (above), float64 by libm's exp (as f_exp).
    if floating is float:
        return fo_expf_nonpos(x)
    else:
        return f_exp(x)


cdef inline floating _relu_grad(floating g, floating out) noexcept nogil:
    # g where out > 0, else 0 (a select: NaN/inf in g where out <= 0 become 0, as in torch).
    if floating is float:
        return fo_select_pos_f(g, out)
    else:
        return fo_select_pos_d(g, out)


cdef inline Py_ssize_t _n_blocks(Py_ssize_t d) noexcept nogil:
    return (d + COLS - 1) // COLS


# ---------------------------------------------------------------------------------------------
# affine bias + ReLU
# ---------------------------------------------------------------------------------------------

cdef inline void _bias_relu_row(const floating* z, const floating* b, floating* out,
                                Py_ssize_t d) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(d):
        out[j] = f_max(z[j] + b[j], <floating>0)


def bias_relu_forward(const floating[:, ::1] z,      # IN  (N, D) x @ W
                      const floating[::1] b,         # IN  (D,)
                      floating[:, ::1] out,          # OUT (N, D) max(z + b, 0); may be z itself
                      int n_threads=1):
    """out = max(z + b, 0) in one pass (out may be z: in place)."""
    cdef Py_ssize_t n = z.shape[0], d = z.shape[1], i
    _check_1d("b", b.shape[0], d)
    _check_2d("out", out.shape[0], out.shape[1], n, d)
    n_threads = threads(n_threads)
    if n == 0 or d == 0:
        return
    cdef const floating* zp = &z[0, 0]
    cdef const floating* bp = &b[0]
    cdef floating* op = &out[0, 0]
    with nogil:
        if n_threads == 1:          # no parallel region (module comment)
            for i in range(n):
                _bias_relu_row(zp + i * d, bp, op + i * d, d)
        else:
            for i in prange(n, schedule='static', num_threads=n_threads):
                _bias_relu_row(zp + i * d, bp, op + i * d, d)


cdef inline void _relu_grad_row(floating* g, const floating* out, Py_ssize_t d) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(d):
        g[j] = _relu_grad(g[j], out[j])


def relu_backward_inplace(floating[:, ::1] dout,      # INOUT (N, D) upstream grad -> grad wrt ReLU input
                          const floating[:, ::1] out,  # IN (N, D) the ReLU's output
                          int n_threads=1):
    """dout[out <= 0] = 0 in one pass (a select: a NaN/inf upstream grad is zeroed like torch)."""
    cdef Py_ssize_t n = dout.shape[0], d = dout.shape[1], i
    _check_2d("out", out.shape[0], out.shape[1], n, d)
    n_threads = threads(n_threads)
    if n == 0 or d == 0:
        return
    cdef floating* gp = &dout[0, 0]
    cdef const floating* op = &out[0, 0]
    with nogil:
        if n_threads == 1:          # no parallel region (module comment)
            for i in range(n):
                _relu_grad_row(gp + i * d, op + i * d, d)
        else:
            for i in prange(n, schedule='static', num_threads=n_threads):
                _relu_grad_row(gp + i * d, op + i * d, d)


cdef void _colsum_block(const floating* x, floating* db, Py_ssize_t n, Py_ssize_t d,
                        Py_ssize_t j0, Py_ssize_t w) noexcept nogil:
    cdef double acc[COLS]
    cdef Py_ssize_t i, j
    cdef const floating* row
    for j in range(w):
        acc[j] = 0
    for i in range(n):
        row = x + i * d + j0
        for j in range(w):
            acc[j] += row[j]
    for j in range(w):
        db[j0 + j] = <floating>acc[j]


def bias_grad(const floating[:, ::1] dout,   # IN  (N, D)
              floating[::1] db,              # OUT (D,) column sums, accumulated in double
              int n_threads=1):
    """db = dout.sum(0), summed in double in row order (deterministic for any thread count)."""
    cdef Py_ssize_t n = dout.shape[0], d = dout.shape[1], k
    _check_1d("db", db.shape[0], d)
    if d == 0:
        return
    n_threads = threads(n_threads)
    if n == 0:
        db[:] = 0
        return
    cdef const floating* xp = &dout[0, 0]
    cdef floating* dbp = &db[0]
    with nogil:
        if n_threads == 1:          # no parallel region (module comment)
            for k in range(_n_blocks(d)):
                _colsum_block(xp, dbp, n, d, k * COLS, min(COLS, d - k * COLS))
        else:
            for k in prange(_n_blocks(d), schedule='static', num_threads=n_threads):
                _colsum_block(xp, dbp, n, d, k * COLS, min(COLS, d - k * COLS))


cdef void _relu_colsum_block(floating* g, const floating* o, floating* db, Py_ssize_t n,
                             Py_ssize_t d, Py_ssize_t j0, Py_ssize_t w) noexcept nogil:
    cdef double acc[COLS]
    cdef Py_ssize_t i, j
    cdef floating* grow
    cdef const floating* orow
    for j in range(w):
        acc[j] = 0
    for i in range(n):
        grow = g + i * d + j0
        orow = o + i * d + j0
        for j in range(w):          # two simple loops over the (L1-resident) row segment: the
            grow[j] = _relu_grad(grow[j], orow[j])      # merged loop did not vectorize (1.5 ms
        for j in range(w):          # instead of 0.1 ms on 256 x 1024 float32)
            acc[j] += grow[j]
    for j in range(w):
        db[j0 + j] = <floating>acc[j]


def relu_bias_backward(floating[:, ::1] dout,       # INOUT (N, D) upstream grad -> grad wrt z
                       const floating[:, ::1] out,  # IN    (N, D) the ReLU's output
                       floating[::1] db,            # OUT   (D,) bias grad = column sums of new dout
                       int n_threads=1):
    """relu_backward_inplace(dout, out) then bias_grad(dout, db), in one pass."""
    cdef Py_ssize_t n = dout.shape[0], d = dout.shape[1], k
    _check_2d("out", out.shape[0], out.shape[1], n, d)
    _check_1d("db", db.shape[0], d)
    if d == 0:
        return
    n_threads = threads(n_threads)
    if n == 0:
        db[:] = 0
        return
    cdef floating* gp = &dout[0, 0]
    cdef const floating* op = &out[0, 0]
    cdef floating* dbp = &db[0]
    with nogil:
        if n_threads == 1:          # no parallel region (module comment)
            for k in range(_n_blocks(d)):
                _relu_colsum_block(gp, op, dbp, n, d, k * COLS, min(COLS, d - k * COLS))
        else:
            for k in prange(_n_blocks(d), schedule='static', num_threads=n_threads):
                _relu_colsum_block(gp, op, dbp, n, d, k * COLS, min(COLS, d - k * COLS))


# ---------------------------------------------------------------------------------------------
# affine bias + batchnorm (training) + ReLU
# ---------------------------------------------------------------------------------------------

cdef void _bn_relu_fwd_block(const floating* z, const floating* b, const floating* gamma,
                             const floating* beta, double eps, double momentum,
                             floating* rmean, floating* rvar, floating* out, floating* mean_out,
                             floating* istd_out, Py_ssize_t n, Py_ssize_t d, Py_ssize_t j0,
                             Py_ssize_t w) noexcept nogil:
    cdef double s[COLS]
    cdef double v[COLS]
    cdef floating mf[COLS]
    cdef floating sf[COLS]
    cdef Py_ssize_t i, j
    cdef const floating* zr
    cdef floating* orow
    cdef const floating* bb = b + j0
    cdef const floating* gg = gamma + j0
    cdef const floating* be = beta + j0
    cdef double dlt, mean
    for j in range(w):
        s[j] = 0
        v[j] = 0
    for i in range(n):                                # pass 1: mean of a = z + b
        zr = z + i * d + j0
        for j in range(w):
            s[j] += <floating>(zr[j] + bb[j])
    for j in range(w):
        s[j] = s[j] / n
    for i in range(n):                                # pass 2: biased variance, two-pass (stable)
        zr = z + i * d + j0
        for j in range(w):
            dlt = <floating>(zr[j] + bb[j]) - s[j]
            v[j] += dlt * dlt
    for j in range(w):
        mean = s[j]
        v[j] = v[j] / n
        mf[j] = <floating>mean
        sf[j] = <floating>(1.0 / sqrt(v[j] + eps))
        mean_out[j0 + j] = mf[j]
        istd_out[j0 + j] = sf[j]
        rmean[j0 + j] = <floating>(momentum * rmean[j0 + j] + (1.0 - momentum) * mean)
        rvar[j0 + j] = <floating>(momentum * rvar[j0 + j] + (1.0 - momentum) * v[j])
    for i in range(n):                                # pass 3: out = relu(gamma * xhat + beta)
        zr = z + i * d + j0
        orow = out + i * d + j0
        for j in range(w):
            orow[j] = f_max(gg[j] * (((zr[j] + bb[j]) - mf[j]) * sf[j]) + be[j], <floating>0)


def batchnorm_relu_forward(const floating[:, ::1] z,        # IN  (N, D) x @ W (kept for backward)
                           const floating[::1] b,           # IN  (D,) affine bias (added here)
                           const floating[::1] gamma,       # IN  (D,)
                           const floating[::1] beta,        # IN  (D,)
                           double eps, double momentum,
                           floating[::1] running_mean,      # INOUT (D,)
                           floating[::1] running_var,       # INOUT (D,) (biased batch variance)
                           floating[:, ::1] out,            # OUT (N, D) relu(batchnorm(z + b)); not z
                           floating[::1] mean,              # OUT (D,) batch mean of z + b
                           floating[::1] inv_std,           # OUT (D,) 1 / sqrt(var + eps)
                           int n_threads=1):
    """Training-mode out = max(gamma * (a - mean) * inv_std + beta, 0) with a = z + b.

    Batch statistics in double (two passes over each cached column block); running statistics
    running = momentum * running + (1 - momentum) * batch (CS231n convention, biased variance).
    `out` must not be `z`: the backward pass recomputes xhat from z, mean and inv_std.
    """
    cdef Py_ssize_t n = z.shape[0], d = z.shape[1], k
    _check_1d("b", b.shape[0], d)
    _check_1d("gamma", gamma.shape[0], d)
    _check_1d("beta", beta.shape[0], d)
    _check_1d("running_mean", running_mean.shape[0], d)
    _check_1d("running_var", running_var.shape[0], d)
    _check_1d("mean", mean.shape[0], d)
    _check_1d("inv_std", inv_std.shape[0], d)
    _check_2d("out", out.shape[0], out.shape[1], n, d)
    n_threads = threads(n_threads)
    if n == 0:
        raise ValueError("z must have at least one row: batch statistics of an empty batch are undefined")
    if d == 0:
        return
    cdef const floating* zp = &z[0, 0]
    cdef const floating* bp = &b[0]
    cdef const floating* gp = &gamma[0]
    cdef const floating* bep = &beta[0]
    cdef floating* rmp = &running_mean[0]
    cdef floating* rvp = &running_var[0]
    cdef floating* op = &out[0, 0]
    cdef floating* mp = &mean[0]
    cdef floating* sp = &inv_std[0]
    with nogil:
        if n_threads == 1:          # no parallel region (module comment)
            for k in range(_n_blocks(d)):
                _bn_relu_fwd_block(zp, bp, gp, bep, eps, momentum, rmp, rvp, op, mp, sp, n, d,
                                   k * COLS, min(COLS, d - k * COLS))
        else:
            for k in prange(_n_blocks(d), schedule='static', num_threads=n_threads):
                _bn_relu_fwd_block(zp, bp, gp, bep, eps, momentum, rmp, rvp, op, mp, sp, n, d,
                                   k * COLS, min(COLS, d - k * COLS))


cdef void _bn_relu_eval_block(const floating* z, const floating* b, const floating* gamma,
                              const floating* beta, const floating* rmean, const floating* rvar,
                              double eps, floating* out, Py_ssize_t n, Py_ssize_t d, Py_ssize_t j0,
                              Py_ssize_t w) noexcept nogil:
    cdef floating sf[COLS]
    cdef Py_ssize_t i, j
    cdef const floating* zr
    cdef floating* orow
    cdef const floating* bb = b + j0
    cdef const floating* gg = gamma + j0
    cdef const floating* be = beta + j0
    cdef const floating* mm = rmean + j0
    for j in range(w):
        sf[j] = <floating>(1.0 / sqrt(<double>rvar[j0 + j] + eps))
    for i in range(n):
        zr = z + i * d + j0
        orow = out + i * d + j0
        for j in range(w):
            orow[j] = f_max(gg[j] * (((zr[j] + bb[j]) - mm[j]) * sf[j]) + be[j], <floating>0)


def batchnorm_relu_eval(const floating[:, ::1] z,          # IN  (N, D) x @ W
                        const floating[::1] b,             # IN  (D,)
                        const floating[::1] gamma,         # IN  (D,)
                        const floating[::1] beta,          # IN  (D,)
                        const floating[::1] running_mean,  # IN  (D,)
                        const floating[::1] running_var,   # IN  (D,)
                        double eps,
                        floating[:, ::1] out,              # OUT (N, D); may be z itself
                        int n_threads=1):
    """Test-mode out = max(gamma * (z + b - running_mean) * inv_std + beta, 0),
    inv_std = 1 / sqrt(running_var + eps) computed in double once per feature."""
    cdef Py_ssize_t n = z.shape[0], d = z.shape[1], k
    _check_1d("b", b.shape[0], d)
    _check_1d("gamma", gamma.shape[0], d)
    _check_1d("beta", beta.shape[0], d)
    _check_1d("running_mean", running_mean.shape[0], d)
    _check_1d("running_var", running_var.shape[0], d)
    _check_2d("out", out.shape[0], out.shape[1], n, d)
    n_threads = threads(n_threads)
    if n == 0 or d == 0:
        return
    cdef const floating* zp = &z[0, 0]
    cdef const floating* bp = &b[0]
    cdef const floating* gp = &gamma[0]
    cdef const floating* bep = &beta[0]
    cdef const floating* rmp = &running_mean[0]
    cdef const floating* rvp = &running_var[0]
    cdef floating* op = &out[0, 0]
    with nogil:
        if n_threads == 1:          # no parallel region (module comment)
            for k in range(_n_blocks(d)):
                _bn_relu_eval_block(zp, bp, gp, bep, rmp, rvp, eps, op, n, d, k * COLS,
                                    min(COLS, d - k * COLS))
        else:
            for k in prange(_n_blocks(d), schedule='static', num_threads=n_threads):
                _bn_relu_eval_block(zp, bp, gp, bep, rmp, rvp, eps, op, n, d, k * COLS,
                                    min(COLS, d - k * COLS))


cdef void _bn_relu_bwd_block(const floating* dout, const floating* out, const floating* z,
                             const floating* b, const floating* gamma, const floating* mean,
                             const floating* istd, floating* dz, floating* dgamma,
                             floating* dbeta, floating* db, Py_ssize_t n, Py_ssize_t d,
                             Py_ssize_t j0, Py_ssize_t w) noexcept nogil:
    cdef double sdy[COLS]
    cdef double sdx[COLS]
    cdef floating dbf[COLS]
    cdef floating dgf[COLS]
    cdef floating c[COLS]
    cdef Py_ssize_t i, j, off
    cdef floating g, xh, dx
    cdef floating nf = <floating>n
    cdef const floating* bb = b + j0
    cdef const floating* mm = mean + j0
    cdef const floating* ss = istd + j0
    for j in range(w):
        sdy[j] = 0
        sdx[j] = 0
    for i in range(n):                          # pass 1: dbeta = sum(g), dgamma = sum(g * xhat)
        off = i * d + j0
        for j in range(w):
            g = _relu_grad(dout[off + j], out[off + j])
            xh = ((z[off + j] + bb[j]) - mm[j]) * ss[j]
            sdy[j] += g
            sdx[j] += g * xh
    for j in range(w):
        dbf[j] = <floating>sdy[j]
        dgf[j] = <floating>sdx[j]
        dbeta[j0 + j] = dbf[j]
        dgamma[j0 + j] = dgf[j]
        c[j] = gamma[j0 + j] * ss[j] / nf
        sdy[j] = 0                              # reused: sum of dz for the affine bias grad
    for i in range(n):                          # pass 2: dz = gamma*istd/N * (N*g - dbeta - xhat*dgamma)
        off = i * d + j0
        for j in range(w):
            g = _relu_grad(dout[off + j], out[off + j])
            xh = ((z[off + j] + bb[j]) - mm[j]) * ss[j]
            dx = c[j] * ((nf * g - dbf[j]) - xh * dgf[j])
            dz[off + j] = dx
            sdy[j] += dx
    for j in range(w):
        db[j0 + j] = <floating>sdy[j]


def relu_batchnorm_backward(const floating[:, ::1] dout,   # IN  (N, D) grad wrt the ReLU output
                            const floating[:, ::1] out,    # IN  (N, D) the ReLU output (forward `out`)
                            const floating[:, ::1] z,      # IN  (N, D) forward input z
                            const floating[::1] b,         # IN  (D,)
                            const floating[::1] gamma,     # IN  (D,)
                            const floating[::1] mean,      # IN  (D,) forward `mean`
                            const floating[::1] inv_std,   # IN  (D,) forward `inv_std`
                            floating[:, ::1] dz,           # OUT (N, D) grad wrt z; may be dout itself
                            floating[::1] dgamma,          # OUT (D,)
                            floating[::1] dbeta,           # OUT (D,)
                            floating[::1] db,              # OUT (D,) grad wrt b = dz.sum(0)
                            int n_threads=1):
    """Backward of batchnorm_relu_forward: ReLU mask, batchnorm backward and bias grad in one kernel.

    g = dout * (out > 0); xhat = (z + b - mean) * inv_std; dbeta = sum(g); dgamma = sum(g * xhat);
    dz = gamma * inv_std / N * (N * g - dbeta - xhat * dgamma); db = sum(dz) (sums in double).
    """
    cdef Py_ssize_t n = dout.shape[0], d = dout.shape[1], k
    _check_2d("out", out.shape[0], out.shape[1], n, d)
    _check_2d("z", z.shape[0], z.shape[1], n, d)
    _check_2d("dz", dz.shape[0], dz.shape[1], n, d)
    _check_1d("b", b.shape[0], d)
    _check_1d("gamma", gamma.shape[0], d)
    _check_1d("mean", mean.shape[0], d)
    _check_1d("inv_std", inv_std.shape[0], d)
    _check_1d("dgamma", dgamma.shape[0], d)
    _check_1d("dbeta", dbeta.shape[0], d)
    _check_1d("db", db.shape[0], d)
    n_threads = threads(n_threads)
    if n == 0:
        raise ValueError("dout must have at least one row")
    if d == 0:
        return
    cdef const floating* gp = &dout[0, 0]
    cdef const floating* op = &out[0, 0]
    cdef const floating* zp = &z[0, 0]
    cdef const floating* bp = &b[0]
    cdef const floating* gam = &gamma[0]
    cdef const floating* mp = &mean[0]
    cdef const floating* sp = &inv_std[0]
    cdef floating* dzp = &dz[0, 0]
    cdef floating* dgp = &dgamma[0]
    cdef floating* dbep = &dbeta[0]
    cdef floating* dbp = &db[0]
    with nogil:
        if n_threads == 1:          # no parallel region (module comment)
            for k in range(_n_blocks(d)):
                _bn_relu_bwd_block(gp, op, zp, bp, gam, mp, sp, dzp, dgp, dbep, dbp, n, d,
                                   k * COLS, min(COLS, d - k * COLS))
        else:
            for k in prange(_n_blocks(d), schedule='static', num_threads=n_threads):
                _bn_relu_bwd_block(gp, op, zp, bp, gam, mp, sp, dzp, dgp, dbep, dbp, n, d,
                                   k * COLS, min(COLS, d - k * COLS))


# ---------------------------------------------------------------------------------------------
# softmax cross-entropy loss and its gradient
# ---------------------------------------------------------------------------------------------

cdef inline floating _row_max(const floating* s, Py_ssize_t c) noexcept nogil:
    cdef Py_ssize_t j
    cdef floating m = s[0]
    for j in range(1, c):
        m = f_max(s[j], m)
    return m


cdef inline double _exp_scaled(const floating* s, floating m, floating* ds, Py_ssize_t c,
                               floating inv_n) noexcept nogil:
    # ds = exp(s - m) / Z / N (ds may be s); returns Z = sum(exp(s - m)), summed in double.
    cdef Py_ssize_t j
    cdef double total = 0
    cdef floating scale
    for j in range(c):                   # vectorizable (no call); the sum after it, in order
        ds[j] = _exp_nonpos(s[j] - m)
    for j in range(c):
        total += ds[j]
    scale = <floating>(1.0 / total) * inv_n
    for j in range(c):
        ds[j] = ds[j] * scale
    return total


cdef double _softmax_row(const floating* s, Py_ssize_t label, floating* ds, Py_ssize_t c,
                         floating inv_n) noexcept nogil:
    cdef floating m = _row_max(s, c)
    cdef floating sy = s[label]            # read first: ds may be s itself (in place)
    cdef double total = _exp_scaled(s, m, ds, c, inv_n)
    ds[label] -= inv_n
    return log(total) - <double>(sy - m)


cdef double _soft_softmax_row(const floating* s, const floating* t, floating* ds, Py_ssize_t c,
                              floating inv_n) noexcept nogil:
    # -sum_j t_j log softmax(s)_j = sum(t) log(Z) - sum_j t_j (s_j - m);  ds = (softmax(s) - t) / N.
    # The target sums are read before ds is written (ds may be s; it must not be t).
    cdef Py_ssize_t j
    cdef floating m = _row_max(s, c)
    cdef double dot = 0, tsum = 0, total
    for j in range(c):
        tsum += t[j]
        dot += <double>t[j] * <double>(s[j] - m)
    total = _exp_scaled(s, m, ds, c, inv_n)
    for j in range(c):
        ds[j] = ds[j] - t[j] * inv_n
    return tsum * log(total) - dot


cdef inline floating* _add_bias(floating* s, const floating* b, Py_ssize_t c) noexcept nogil:
    # s += b in place (a row of scores); returns s.
    cdef Py_ssize_t j
    for j in range(c):
        s[j] = s[j] + b[j]
    return s


cdef int _check_scores(Py_ssize_t n, Py_ssize_t c) except -1:
    if n == 0:
        raise ValueError("scores must have at least one row: the mean loss of no samples is undefined")
    if c == 0:
        raise ValueError("scores must have at least one class column")
    return 0


cdef int _check_labels(const label_t[::1] y, Py_ssize_t c) except -1:
    cdef Py_ssize_t i
    for i in range(y.shape[0]):
        if y[i] < 0 or y[i] >= c:
            raise ValueError(f"y must hold class indices in [0, {c}), got y[{i}] = {y[i]}")
    return 0


cdef double _mean_and_bias_grad(const double* row_loss, const floating* dp, floating* dbp, Py_ssize_t n,
                                Py_ssize_t c, int n_threads) noexcept nogil:
    # The output layer's tail: the per-row losses summed in row order, and db = dscores.sum(0).
    cdef Py_ssize_t i, k
    cdef double loss = 0
    for i in range(n):
        loss += row_loss[i]
    if n_threads == 1:          # no parallel region (module comment)
        for k in range(_n_blocks(c)):
            _colsum_block(dp, dbp, n, c, k * COLS, min(COLS, c - k * COLS))
    else:
        for k in prange(_n_blocks(c), schedule='static', num_threads=n_threads):
            _colsum_block(dp, dbp, n, c, k * COLS, min(COLS, c - k * COLS))
    return loss


def softmax_loss_grad(const floating[:, ::1] scores,   # IN  (N, C)
                      const label_t[::1] y,            # IN  (N,) labels in [0, C), int32 or int64
                      floating[:, ::1] dscores,        # OUT (N, C) grad of the mean loss; may be scores
                      int n_threads=1):
    """Mean softmax cross-entropy of `scores` against `y`; writes its gradient into `dscores`.

    Per row: m = max(s); e = exp(s - m); Z = sum(e) in double; loss_i = log(Z) - (s_y - m);
    dscores = e * (1/Z * 1/N) with 1/N subtracted at the label. Returns sum(loss_i) / N, the
    per-row losses summed in row order (deterministic).
    """
    cdef Py_ssize_t n = scores.shape[0], c = scores.shape[1], i
    _check_1d("y", y.shape[0], n)
    _check_2d("dscores", dscores.shape[0], dscores.shape[1], n, c)
    n_threads = threads(n_threads)
    _check_scores(n, c)
    _check_labels(y, c)
    cdef double* row_loss = <double*>malloc(n * sizeof(double))
    if row_loss == NULL:
        raise MemoryError()
    cdef const floating* sp = &scores[0, 0]
    cdef floating* dp = &dscores[0, 0]
    cdef floating inv_n = <floating>(1.0 / n)
    cdef double loss = 0
    with nogil:
        if n_threads == 1:          # no parallel region (module comment)
            for i in range(n):
                row_loss[i] = _softmax_row(sp + i * c, <Py_ssize_t>y[i], dp + i * c, c, inv_n)
        else:
            for i in prange(n, schedule='static', num_threads=n_threads):
                row_loss[i] = _softmax_row(sp + i * c, <Py_ssize_t>y[i], dp + i * c, c, inv_n)
        for i in range(n):
            loss += row_loss[i]
    free(row_loss)
    return loss / n


def bias_softmax_loss_grad(floating[:, ::1] scores,        # INOUT (N, C) x @ W; + b in place
                           const floating[::1] b,          # IN    (C,) the output layer's bias
                           const label_t[::1] y,           # IN    (N,) labels in [0, C)
                           floating[:, ::1] dscores,       # OUT   (N, C) grad of the mean loss; may be scores
                           floating[::1] db,               # OUT   (C,) bias grad = dscores.sum(0)
                           int n_threads=1):
    """The output layer in one call: scores += b, then softmax_loss_grad(scores, y, dscores), then
    bias_grad(dscores, db); returns the mean loss. Same operations in the same order as those three
    calls (bitwise the same results). Labels are checked before anything is written."""
    cdef Py_ssize_t n = scores.shape[0], c = scores.shape[1], i, j, k
    _check_1d("b", b.shape[0], c)
    _check_1d("y", y.shape[0], n)
    _check_2d("dscores", dscores.shape[0], dscores.shape[1], n, c)
    _check_1d("db", db.shape[0], c)
    n_threads = threads(n_threads)
    _check_scores(n, c)
    _check_labels(y, c)
    cdef double* row_loss = <double*>malloc(n * sizeof(double))
    if row_loss == NULL:
        raise MemoryError()
    cdef floating* sp = &scores[0, 0]
    cdef const floating* bp = &b[0]
    cdef floating* dp = &dscores[0, 0]
    cdef floating* dbp = &db[0]
    cdef floating inv_n = <floating>(1.0 / n)
    cdef double loss = 0
    with nogil:
        if n_threads == 1:          # no parallel region (module comment)
            for i in range(n):
                row_loss[i] = _softmax_row(_add_bias(sp + i * c, bp, c), <Py_ssize_t>y[i], dp + i * c, c, inv_n)
        else:
            for i in prange(n, schedule='static', num_threads=n_threads):
                row_loss[i] = _softmax_row(_add_bias(sp + i * c, bp, c), <Py_ssize_t>y[i], dp + i * c, c, inv_n)
        loss = _mean_and_bias_grad(row_loss, dp, dbp, n, c, n_threads)
    free(row_loss)
    return loss / n


def bias_softmax_soft_loss_grad(floating[:, ::1] scores,      # INOUT (N, C) x @ W; + b in place
                                const floating[::1] b,        # IN    (C,) the output layer's bias
                                const floating[:, ::1] targets,  # IN (N, C) target probabilities
                                floating[:, ::1] dscores,     # OUT   (N, C) grad of the mean loss; may be
                                                              #       scores, not targets
                                floating[::1] db,             # OUT   (C,) bias grad = dscores.sum(0)
                                int n_threads=1):
    """bias_softmax_loss_grad with soft targets (mixup's): scores += b; per row
    loss_i = -sum_j t_j log softmax(s)_j (= sum(t) log Z - sum_j t_j (s_j - m), in double) and
    dscores = (softmax(s) - t) / N; db = dscores.sum(0); returns mean(loss_i) (rows summed in order).
    The targets' values are the caller's to check (rows >= 0 summing to 1: fastopt.layers.losses)."""
    cdef Py_ssize_t n = scores.shape[0], c = scores.shape[1], i, j
    _check_1d("b", b.shape[0], c)
    _check_2d("targets", targets.shape[0], targets.shape[1], n, c)
    _check_2d("dscores", dscores.shape[0], dscores.shape[1], n, c)
    _check_1d("db", db.shape[0], c)
    n_threads = threads(n_threads)
    _check_scores(n, c)
    cdef double* row_loss = <double*>malloc(n * sizeof(double))
    if row_loss == NULL:
        raise MemoryError()
    cdef floating* sp = &scores[0, 0]
    cdef const floating* bp = &b[0]
    cdef const floating* tp = &targets[0, 0]
    cdef floating* dp = &dscores[0, 0]
    cdef floating* dbp = &db[0]
    cdef floating inv_n = <floating>(1.0 / n)
    cdef double loss = 0
    with nogil:
        if n_threads == 1:          # no parallel region (module comment)
            for i in range(n):
                row_loss[i] = _soft_softmax_row(_add_bias(sp + i * c, bp, c), tp + i * c, dp + i * c, c, inv_n)
        else:
            for i in prange(n, schedule='static', num_threads=n_threads):
                row_loss[i] = _soft_softmax_row(_add_bias(sp + i * c, bp, c), tp + i * c, dp + i * c, c, inv_n)
        loss = _mean_and_bias_grad(row_loss, dp, dbp, n, c, n_threads)
    free(row_loss)
    return loss / n


# ---------------------------------------------------------------------------------------------
# the roofline of `fastopt bench`: a plain stream over the arrays a kernel reads and writes
# ---------------------------------------------------------------------------------------------

cdef enum:
    STREAM_BLOCK = 16384   # elements per partial sum (fixed: it decides the summation partition)


cdef enum:
    STREAM_CHUNK = 512     # elements per inner pass (a stack buffer in L1): contiguous, vectorizable loops


cdef double _stream_block(const floating* src, floating* dst, Py_ssize_t n_reads,
                          Py_ssize_t n_writes, Py_ssize_t length, Py_ssize_t i0,
                          Py_ssize_t i1) noexcept nogil:
    # Per L1-sized chunk: one contiguous loop per array read or written (the first written array
    # holds the running sum, or a stack buffer when nothing is written), then the lane sums.
    cdef floating acc[STREAM_CHUNK]
    cdef floating part[STREAM_CHUNK]       # lane sums: a vectorizable add, no reassociation
    cdef Py_ssize_t c0, j, r, w, m
    cdef const floating* s
    cdef floating* d
    cdef floating* d0
    cdef double total = 0
    for j in range(STREAM_CHUNK):
        part[j] = 0
    c0 = i0
    while c0 < i1:
        m = min(<Py_ssize_t>STREAM_CHUNK, i1 - c0)
        d0 = dst + c0 if n_writes > 0 else acc
        if n_reads > 0:
            s = src + c0
            for j in range(m):
                d0[j] = s[j]
            for r in range(1, n_reads):
                s = src + r * length + c0
                for j in range(m):
                    d0[j] = d0[j] + s[j]
        else:
            for j in range(m):
                d0[j] = 0
        for w in range(1, n_writes):
            d = dst + w * length + c0
            for j in range(m):
                d[j] = d0[j]
        for j in range(m):
            part[j] = part[j] + d0[j]
        c0 += STREAM_CHUNK
    for j in range(STREAM_CHUNK):
        total += part[j]
    return total


def stream_loop(const floating[:, ::1] src,    # IN  (R, L) R arrays of L elements, each read once
                floating[:, ::1] dst,          # OUT (W, L) W arrays of L elements, each written once
                Py_ssize_t n_reads,            # R (0 allowed: a write-only pattern)
                Py_ssize_t n_writes,           # W (0 allowed: a read-only pattern)
                int n_threads=1):
    """One pass reading R arrays and writing W arrays of L elements (dst[w, i] = sum_r src[r, i]):
    the access pattern of a streaming kernel with nothing else in the loop. `fastopt bench` times it
    with each kernel's (R, W) at the kernel's size, dtype and thread count: the kernel's roofline.
    Returns a checksum of the sums (fixed blocks and lanes, added in order: thread-count independent),
    so the reads of a read-only pattern cannot be optimised away."""
    cdef Py_ssize_t length = src.shape[1], k, nb
    if n_reads < 0 or n_writes < 0:
        raise ValueError(f"n_reads and n_writes must be >= 0, got {n_reads} and {n_writes}")
    _check_2d("src", src.shape[0], src.shape[1], n_reads, length)
    _check_2d("dst", dst.shape[0], dst.shape[1], n_writes, length)
    n_threads = threads(n_threads)
    if length == 0 or (n_reads == 0 and n_writes == 0):
        return 0.0
    cdef const floating* sp = &src[0, 0] if n_reads > 0 else NULL
    cdef floating* dp = &dst[0, 0] if n_writes > 0 else NULL
    nb = (length + STREAM_BLOCK - 1) // STREAM_BLOCK
    cdef double* partial = <double*>malloc(nb * sizeof(double))
    if partial == NULL:
        raise MemoryError()
    cdef double total = 0
    with nogil:
        for k in prange(nb, schedule='static', num_threads=n_threads):
            partial[k] = _stream_block(sp, dp, n_reads, n_writes, length, k * STREAM_BLOCK,
                                       min(length, (k + 1) * STREAM_BLOCK))
        for k in range(nb):
            total += partial[k]
    free(partial)
    return total


# ---------------------------------------------------------------------------------------------
# bound arguments of fastopt.nn.run_fused.Plan
# ---------------------------------------------------------------------------------------------

def _view(floating[::1] a):
    """The Cython memoryview of a C-contiguous 1-D array. A kernel given it (instead of the array)
    takes the buffer without the buffer protocol; run_fused.Plan binds its arrays this way."""
    return a


def _view2d(floating[:, ::1] a):
    """The Cython memoryview of a C-contiguous 2-D array (see _view)."""
    return a
