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
# The terms of every sum are formed in the array's precision: t = x - K (exact for x within a factor 2
# of K, else one rounding), t * t, and in the backward sums dout * (x - mean), as xhat itself is. A
# small fixed group of them (FO_BN_ROWS rows, a fixed stride apart: _group_stride; or FO_PAIR consecutive lane
# blocks) is added in that precision
# before the double accumulator: float32 rounding like that already present in xhat, at half the
# double-precision work (float32 data: twice the vector width, half the conversions). The groups are
# fixed by the shapes, the same in every SIMD variant (-ffp-contract=off, no reassociation), so the
# results are bitwise equal across variants and thread counts.
#
# Determinism: every sum is taken in an order fixed by the shapes alone, never by the thread count.
#   * batchnorm and the layernorm dgamma/dbeta (sums over rows): the rows are cut into at most
#     MAX_CHUNKS chunks whose bounds depend only on N; a thread sums whole chunks into the chunk's own
#     partial sums, which are then added in chunk order. The element-wise passes split rows freely.
#     (Splitting columns between threads instead made 2 threads slower than 1: each core's prefetcher
#     streams on into the other thread's half of every row, doubling the memory traffic.)
#   * spatial batchnorm: threads own channels; a channel's S-long runs are summed into FO_LANES
#     partial sums (element k goes to lane k % FO_LANES) combined in a fixed tree at the end.
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

# Lane sums along a contiguous run (layernorm's rows, spatial batchnorm's channel runs), in C once for
# every caller: layernorm's narrow-row helpers below and the Cython wide-row and spatial paths.
cdef extern from *:
    """
    /* Element k of a run goes to lane k % FO_LANES (k counted from the run's start), each lane a
       double accumulator in element order: vector accumulators without reassociation (no
       -ffast-math). With 8 lanes GCC fully unrolled the lane loop into scalar code; 32 keeps it a
       vectorized loop: layernorm forward 1024x4096 float32 4.3 -> 3.3 ms, spatial forward
       32x64x32x32 2.1 -> 1.9 ms (64 was no better). The terms of FO_PAIR consecutive lane blocks are
       added in the array's precision before the lanes (module header; 4 instead of 2 made no
       difference above the loaded machine's noise).
       ahead > 0: each block of FO_PAIR * FO_LANES elements first prefetches the block `ahead`
       elements on (layernorm: 2 * d, two rows on; 1024x4096 float32, one thread, CPU time: forward
       1.49-1.58 -> 1.29-1.35 ms, backward 2.26-2.60 -> 2.18-2.30; narrow rows: fo_ln_forward_row1);
       0 for none (spatial). A prefetch never faults, also past the arrays' end. Tried in
       batchnorm's four-row passes (1024x4096, the next four rows' line in every 64-byte step):
       forward 1.59-1.64 -> 1.96-2.04 ms, backward 2.70-2.74 -> 3.39-3.44; left out there.
       Always inlined: the callers' lanes are local arrays and the flags below literal constants. */
    #define FO_LANES 32             /* fo_lane_total's tree is written for 32 */
    #define FO_PAIR 2
    #define FO_BLOCK (FO_PAIR * FO_LANES)
    #define FO_LANE_INLINE static inline __attribute__((always_inline))

    FO_LANE_INLINE void fo_lanes_zero(double *restrict a, double *restrict b) {
        for (int l = 0; l < FO_LANES; l++) { a[l] = 0.0; b[l] = 0.0; }
    }
    /* The lanes summed in a fixed tree, a[l] += a[l + h] for h = 16, 8, 4, 2, 1 (overwrites a): each
       level is independent adds, so vectorized and scalar code add the same pairs (same bits), and
       its latency is 5 adds, not 31 (estimated ~30% of a 512-column layernorm row's time; not
       measured alone). */
    FO_LANE_INLINE double fo_lane_total(double *a) {
        int l;
        for (l = 0; l < 16; l++) a[l] = a[l] + a[l + 16];
        for (l = 0; l < 8; l++) a[l] = a[l] + a[l + 8];
        for (l = 0; l < 4; l++) a[l] = a[l] + a[l + 4];
        for (l = 0; l < 2; l++) a[l] = a[l] + a[l + 2];
        return a[0] + a[1];
    }
    #define FO_NORM_LANES(T, S)                                                                     \\
    /* l1[l] += sum(p[k] - m), l2[l] += sum((p[k] - m)^2) over the k of lane l. */                 \\
    FO_LANE_INLINE void fo_lane_stats_##S(const T *restrict p, Py_ssize_t length, T m,             \\
            double *restrict l1, double *restrict l2, Py_ssize_t ahead) {                          \\
        Py_ssize_t k = 0, l, w, o;                                                                  \\
        while (k + FO_BLOCK <= length) {                                                            \\
            if (ahead)                                                                              \\
                for (o = 0; o < FO_BLOCK * (Py_ssize_t)sizeof(T); o += 64)                          \\
                    __builtin_prefetch((const char *)(p + ahead + k) + o, 0, 3);                    \\
            for (l = 0; l < FO_LANES; l++) {                                                        \\
                T u = p[k + l] - m, v = p[k + FO_LANES + l] - m;                                    \\
                l1[l] += (double)(u + v);                                                           \\
                l2[l] += (double)(u * u + v * v);                                                   \\
            }                                                                                       \\
            k += FO_BLOCK;                                                                          \\
        }                                                                                           \\
        while (k < length) {                                                                        \\
            w = length - k < FO_LANES ? length - k : FO_LANES;                                      \\
            for (l = 0; l < w; l++) {                                                               \\
                T u = p[k + l] - m;                                                                 \\
                l1[l] += (double)u;                                                                 \\
                l2[l] += (double)(u * u);                                                           \\
            }                                                                                       \\
            k += w;                                                                                 \\
        }                                                                                           \\
    }                                                                                               \\
    /* lb[l] += sum(e), lg[l] += sum(e * (p[k] - m)) with e = dp[k] * g[k] when `scaled` (layernorm's \\
       dxhat), else dp[k] (spatial). `sums`: in the same loop also add each element's terms of the    \\
       column sums, sb[k] += dp[k], sg[k] += dp[k] * ((p[k] - m) * a) (layernorm's narrow rows, see  \\
       fo_ln_coefs_sums_row1). Products in the array's precision, as xhat is. */                  \\
    FO_LANE_INLINE void fo_lane_grads_##S(const T *restrict dp, const T *restrict p,               \\
            const T *restrict g, Py_ssize_t length, T m, double *restrict lb, double *restrict lg,  \\
            Py_ssize_t ahead, T a, double *restrict sb, double *restrict sg, const int scaled,     \\
            const int sums) {                                                                       \\
        Py_ssize_t k = 0, l, w, o;                                                                  \\
        while (k + FO_BLOCK <= length) {                                                            \\
            if (ahead)                                                                              \\
                for (o = 0; o < FO_BLOCK * (Py_ssize_t)sizeof(T); o += 64) {                        \\
                    __builtin_prefetch((const char *)(dp + ahead + k) + o, 0, 3);                   \\
                    __builtin_prefetch((const char *)(p + ahead + k) + o, 0, 3);                    \\
                }                                                                                   \\
            for (l = 0; l < FO_LANES; l++) {                                                        \\
                T e0 = dp[k + l], e1 = dp[k + FO_LANES + l];                                        \\
                T t0 = p[k + l] - m, t1 = p[k + FO_LANES + l] - m;                                  \\
                T u = scaled ? e0 * g[k + l] : e0, v = scaled ? e1 * g[k + FO_LANES + l] : e1;      \\
                lb[l] += (double)(u + v);                                                           \\
                lg[l] += (double)(u * t0 + v * t1);                                                 \\
                if (sums) {                                                                         \\
                    sb[k + l] += (double)e0;                                                        \\
                    sb[k + FO_LANES + l] += (double)e1;                                             \\
                    sg[k + l] += (double)(e0 * (t0 * a));                                           \\
                    sg[k + FO_LANES + l] += (double)(e1 * (t1 * a));                                \\
                }                                                                                   \\
            }                                                                                       \\
            k += FO_BLOCK;                                                                          \\
        }                                                                                           \\
        while (k < length) {                                                                        \\
            w = length - k < FO_LANES ? length - k : FO_LANES;                                      \\
            for (l = 0; l < w; l++) {                                                               \\
                T e0 = dp[k + l], t0 = p[k + l] - m;                                                \\
                T u = scaled ? e0 * g[k + l] : e0;                                                  \\
                lb[l] += (double)u;                                                                 \\
                lg[l] += (double)(u * t0);                                                          \\
                if (sums) {                                                                         \\
                    sb[k + l] += (double)e0;                                                        \\
                    sg[k + l] += (double)(e0 * (t0 * a));                                           \\
                }                                                                                   \\
            }                                                                                       \\
            k += w;                                                                                 \\
        }                                                                                           \\
    }                                                                                               \\
    /* A layernorm row's mean and inv_std (biased variance), its sums shifted by its first value. */\\
    FO_LANE_INLINE void fo_ln_row_stats_##S(const T *restrict p, Py_ssize_t d, double eps,         \\
            T *restrict mean, T *restrict inv_std, Py_ssize_t ahead) {                             \\
        double l1[FO_LANES], l2[FO_LANES];                                                          \\
        T m = p[0];                                                                                 \\
        fo_lanes_zero(l1, l2);                                                                      \\
        fo_lane_stats_##S(p, d, m, l1, l2, ahead);                                                  \\
        double s1 = fo_lane_total(l1), s2 = fo_lane_total(l2);                                      \\
        double mu = s1 / (double)d, var = s2 / (double)d - mu * mu;                                 \\
        if (var < 0.0) var = 0.0;                                                                   \\
        *mean = (T)(mu + (double)m);                                                                \\
        *inv_std = (T)(1.0 / sqrt(var + eps));                                                      \\
    }                                                                                               \\
    /* A layernorm row's dx = a * dxhat - kb - kg * xhat, dxhat = dout * gamma:                     \\
       dx = inv_std/D * (D*dxhat - sum(dxhat) - xhat*sum(dxhat*xhat)), sum(dxhat*xhat) = a*sg, so   \\
       kb = a * sb / D, kg = a^2 * sg / D. `sums`: fo_lane_grads' column sums too. */             \\
    FO_LANE_INLINE void fo_ln_row_coefs_##S(const T *restrict dp, const T *restrict p,             \\
            const T *restrict g, Py_ssize_t d, T m, T a, T *restrict kb, T *restrict kg,            \\
            Py_ssize_t ahead, double *restrict sb, double *restrict sg, const int sums) {          \\
        double lb[FO_LANES], lg[FO_LANES];                                                          \\
        fo_lanes_zero(lb, lg);                                                                      \\
        fo_lane_grads_##S(dp, p, g, d, m, lb, lg, ahead, a, sb, sg, 1, sums);                       \\
        double s1 = fo_lane_total(lb), s2 = fo_lane_total(lg);                                      \\
        *kb = (T)((double)a * s1 / (double)d);                                                      \\
        *kg = (T)((double)a * (double)a * s2 / (double)d);                                          \\
    }
    FO_NORM_LANES(float, f)
    FO_NORM_LANES(double, d)
    """
    enum: FO_LANES
    void fo_lanes_zero(double* a, double* b) noexcept nogil
    double fo_lane_total(double* a) noexcept nogil
    void fo_lane_stats_f(const float* p, Py_ssize_t length, float m, double* l1, double* l2,
                         Py_ssize_t ahead) noexcept nogil
    void fo_lane_stats_d(const double* p, Py_ssize_t length, double m, double* l1, double* l2,
                         Py_ssize_t ahead) noexcept nogil
    void fo_lane_grads_f(const float* dp, const float* p, const float* g, Py_ssize_t length, float m,
                         double* lb, double* lg, Py_ssize_t ahead, float a, double* sb, double* sg,
                         int scaled, int sums) noexcept nogil
    void fo_lane_grads_d(const double* dp, const double* p, const double* g, Py_ssize_t length, double m,
                         double* lb, double* lg, Py_ssize_t ahead, double a, double* sb, double* sg,
                         int scaled, int sums) noexcept nogil
    void fo_ln_row_stats_f(const float* p, Py_ssize_t d, double eps, float* mean, float* inv_std,
                           Py_ssize_t ahead) noexcept nogil
    void fo_ln_row_stats_d(const double* p, Py_ssize_t d, double eps, double* mean, double* inv_std,
                           Py_ssize_t ahead) noexcept nogil
    void fo_ln_row_coefs_f(const float* dp, const float* p, const float* g, Py_ssize_t d, float m, float a,
                           float* kb, float* kg, Py_ssize_t ahead, double* sb, double* sg,
                           int sums) noexcept nogil
    void fo_ln_row_coefs_d(const double* dp, const double* p, const double* g, Py_ssize_t d, double m,
                           double a, double* kb, double* kg, Py_ssize_t ahead, double* sb, double* sg,
                           int sums) noexcept nogil


# Element-wise passes over wide rows, in C for `restrict`: four rows at a time share each load of the
# per-column vectors (batchnorm's mean, inv_std, gamma, beta or k0, kb, kg; layernorm's gamma, beta).
# Cython cannot say restrict, and without it GCC does not vectorize a loop writing four rows (too
# many possible aliases to check at run time). Per element the arithmetic is exactly that of the
# one-row loops below (same operations, same order), so the results are the same bits.
# Outputs must not overlap inputs (the layer functions allocate them fresh).
cdef extern from *:
    """
    /* FO_VEC: in the AVX-512 build, the helpers marked with it are compiled as separate functions
       with 256-bit vectors. NumPy's large arrays start 16 bytes past a 64-byte line, so there a
       512-bit load or store of a row spans two cache lines on every iteration (and aligning the row
       by peeling misaligns the per-column vectors instead). Measured on Zen 5 (C, float32, 8192x512
       narrow-row normalize, one thread): rows at offset 16: 512-bit 0.83-0.87 ms, peeled for the
       store 0.78, 256-bit 0.55; aligned rows: both 0.53. In the kernels (one thread): batchnorm
       8192x512 normalize 1.0-1.1 -> 0.6 ms, backward 2.3-2.7 -> 1.9-2.1 ms; layernorm 1024x4096
       backward (fo_ln_bwd_rows4) about 8-10% faster. The four-row passes of batchnorm and
       layernorm's forward stay at 512 bits: at 1024x4096 the 256-bit ones were slower (normalize
       0.81 -> 0.85-0.91 ms in C, ~+5% in the kernels). Tried at 256 bits and left as they were:
       layernorm's lane sums (no gain), its narrow-row normalize (slower: 0.8 -> 1.7 ms at
       8192x512), batchnorm's row-group sums (no gain). Vector width does not change any result:
       same operations per element, no reassociation. */
    #if defined(__AVX512F__) && defined(__GNUC__) && !defined(__clang__)
    #define FO_VEC __attribute__((noinline, target("prefer-vector-width=256")))
    #else
    #define FO_VEC
    #endif
    #define FO_NORM_ROWS4(T, S)                                                                     \\
    static void fo_bn_norm_rows4_##S(const T *restrict x, Py_ssize_t rows, Py_ssize_t d,            \\
            const T *restrict m, const T *restrict a, const T *restrict g, const T *restrict b,     \\
            T *restrict o) {                                                                        \\
        for (Py_ssize_t i = 0; i + 4 <= rows; i += 4) {                                             \\
            const T *restrict p0 = x + i * d, *restrict p1 = p0 + d, *restrict p2 = p1 + d,         \\
                *restrict p3 = p2 + d;                                                               \\
            T *restrict q0 = o + i * d, *restrict q1 = q0 + d, *restrict q2 = q1 + d,              \\
                *restrict q3 = q2 + d;                                                               \\
            for (Py_ssize_t j = 0; j < d; j++) {                                                    \\
                T mj = m[j], aj = a[j], gj = g[j], bj = b[j];                                       \\
                q0[j] = gj * ((p0[j] - mj) * aj) + bj;                                              \\
                q1[j] = gj * ((p1[j] - mj) * aj) + bj;                                              \\
                q2[j] = gj * ((p2[j] - mj) * aj) + bj;                                              \\
                q3[j] = gj * ((p3[j] - mj) * aj) + bj;                                              \\
            }                                                                                       \\
        }                                                                                           \\
    }                                                                                               \\
    static void fo_bn_dx_rows4_##S(const T *restrict dout, const T *restrict x, Py_ssize_t rows,    \\
            Py_ssize_t d, const T *restrict m, const T *restrict a, const T *restrict k0,           \\
            const T *restrict kb, const T *restrict kg, T *restrict dx) {                           \\
        for (Py_ssize_t i = 0; i + 4 <= rows; i += 4) {                                             \\
            const T *restrict p0 = x + i * d, *restrict p1 = p0 + d, *restrict p2 = p1 + d,         \\
                *restrict p3 = p2 + d;                                                               \\
            const T *restrict e0 = dout + i * d, *restrict e1 = e0 + d, *restrict e2 = e1 + d,      \\
                *restrict e3 = e2 + d;                                                               \\
            T *restrict q0 = dx + i * d, *restrict q1 = q0 + d, *restrict q2 = q1 + d,             \\
                *restrict q3 = q2 + d;                                                               \\
            for (Py_ssize_t j = 0; j < d; j++) {                                                    \\
                T mj = m[j], aj = a[j], cj = k0[j], bj = kb[j], gj = kg[j];                         \\
                q0[j] = cj * e0[j] - bj - gj * ((p0[j] - mj) * aj);                                 \\
                q1[j] = cj * e1[j] - bj - gj * ((p1[j] - mj) * aj);                                 \\
                q2[j] = cj * e2[j] - bj - gj * ((p2[j] - mj) * aj);                                 \\
                q3[j] = cj * e3[j] - bj - gj * ((p3[j] - mj) * aj);                                 \\
            }                                                                                       \\
        }                                                                                           \\
    }                                                                                               \\
    /* Layernorm forward: four rows (per-row m, a) normalized together. */                         \\
    static void fo_ln_norm_rows4_##S(const T *restrict x, Py_ssize_t d, const T *restrict m,        \\
            const T *restrict a, const T *restrict g, const T *restrict b, T *restrict o) {         \\
        const T *restrict p0 = x, *restrict p1 = p0 + d, *restrict p2 = p1 + d, *restrict p3 = p2 + d; \\
        T *restrict q0 = o, *restrict q1 = q0 + d, *restrict q2 = q1 + d, *restrict q3 = q2 + d;   \\
        T m0 = m[0], m1 = m[1], m2 = m[2], m3 = m[3], a0 = a[0], a1 = a[1], a2 = a[2], a3 = a[3];  \\
        for (Py_ssize_t j = 0; j < d; j++) {                                                        \\
            T gj = g[j], bj = b[j];                                                                 \\
            q0[j] = gj * ((p0[j] - m0) * a0) + bj;                                                  \\
            q1[j] = gj * ((p1[j] - m1) * a1) + bj;                                                  \\
            q2[j] = gj * ((p2[j] - m2) * a2) + bj;                                                  \\
            q3[j] = gj * ((p3[j] - m3) * a3) + bj;                                                  \\
        }                                                                                           \\
    }                                                                                               \\
    /* Batchnorm's narrow rows (and the rows after the last four) one at a time, `w` columns of   \\
       each of `rows` rows (row stride d): the one-row forms of the four-row loops, with restrict   \\
       (GCC neither versions each row for aliases nor spills the row pointers) and FO_VEC. */     \\
    static FO_VEC void fo_bn_norm_rows1_##S(const T *restrict x, Py_ssize_t rows, Py_ssize_t d,            \\
            Py_ssize_t w, const T *restrict m, const T *restrict a, const T *restrict g,            \\
            const T *restrict b, T *restrict o) {                                                   \\
        for (Py_ssize_t i = 0; i < rows; i++) {                                                     \\
            const T *restrict p = x + i * d;                                                        \\
            T *restrict q = o + i * d;                                                              \\
            for (Py_ssize_t j = 0; j < w; j++)                                                      \\
                q[j] = g[j] * ((p[j] - m[j]) * a[j]) + b[j];                                        \\
        }                                                                                           \\
    }                                                                                               \\
    static FO_VEC void fo_bn_dx_rows1_##S(const T *restrict dout, const T *restrict x, Py_ssize_t rows,    \\
            Py_ssize_t d, Py_ssize_t w, const T *restrict m, const T *restrict a,                   \\
            const T *restrict k0, const T *restrict kb, const T *restrict kg, T *restrict dx) {     \\
        for (Py_ssize_t i = 0; i < rows; i++) {                                                     \\
            const T *restrict p = x + i * d, *restrict e = dout + i * d;                            \\
            T *restrict q = dx + i * d;                                                             \\
            for (Py_ssize_t j = 0; j < w; j++)                                                      \\
                q[j] = k0[j] * e[j] - kb[j] - kg[j] * ((p[j] - m[j]) * a[j]);                       \\
        }                                                                                           \\
    }                                                                                               \\
    /* Layernorm backward, four rows (per-row m, a, kb, kg): dx of each row (fo_ln_row_coefs) and the \\
       chunk's column sums of _ln_backward_chunk, in one loop sharing the loads of dout, x and the \\
       xhat of both (same operations in the same order, so the same bits). Wide rows only: at     \\
       8192x512 it was slower than the separate loops (backward 2.2-2.3 -> 2.6-2.9 ms). */       \\
    static FO_VEC void fo_ln_bwd_rows4_##S(const T *restrict dout, const T *restrict x, Py_ssize_t d,      \\
            const T *restrict m, const T *restrict a, const T *restrict kb, const T *restrict kg,  \\
            const T *restrict g, T *restrict dx, double *restrict sb, double *restrict sg) {        \\
        const T *restrict p0 = x, *restrict p1 = p0 + d, *restrict p2 = p1 + d, *restrict p3 = p2 + d; \\
        const T *restrict e0 = dout, *restrict e1 = e0 + d, *restrict e2 = e1 + d,                  \\
            *restrict e3 = e2 + d;                                                                  \\
        T *restrict q0 = dx, *restrict q1 = q0 + d, *restrict q2 = q1 + d, *restrict q3 = q2 + d;  \\
        T m0 = m[0], m1 = m[1], m2 = m[2], m3 = m[3], a0 = a[0], a1 = a[1], a2 = a[2], a3 = a[3];  \\
        T b0 = kb[0], b1 = kb[1], b2 = kb[2], b3 = kb[3], c0 = kg[0], c1 = kg[1], c2 = kg[2],      \\
            c3 = kg[3];                                                                             \\
        for (Py_ssize_t j = 0; j < d; j++) {                                                        \\
            T gj = g[j], d0 = e0[j], d1 = e1[j], d2 = e2[j], d3 = e3[j];                            \\
            T h0 = (p0[j] - m0) * a0, h1 = (p1[j] - m1) * a1, h2 = (p2[j] - m2) * a2,               \\
                h3 = (p3[j] - m3) * a3;                                                             \\
            q0[j] = a0 * (d0 * gj) - b0 - c0 * h0;                                                  \\
            q1[j] = a1 * (d1 * gj) - b1 - c1 * h1;                                                  \\
            q2[j] = a2 * (d2 * gj) - b2 - c2 * h2;                                                  \\
            q3[j] = a3 * (d3 * gj) - b3 - c3 * h3;                                                  \\
            sb[j] += (double)((d0 + d1) + (d2 + d3));                                               \\
            sg[j] += (double)((d0 * h0 + d1 * h1) + (d2 * h2 + d3 * h3));                           \\
        }                                                                                           \\
    }                                                                                               \\
    /* Layernorm backward, one row: fo_ln_coefs_sums_row1 computes the row's kb, kg (fo_ln_row_coefs, \\
       as the wide rows) and, in the same loop, adds the row's terms of the chunk's column sums to   \\
       the double accumulators one by one: sb[j] += dout, sg[j] += dout * xhat (xhat = (x - m) * a,  \\
       as in the other sums); fo_ln_dx_row1 then writes its dx while the row is in L1. Narrow rows   \\
       and the rows after the last four of wide ones. Measured (C copies, float32, AVX-512, one      \\
       thread, CPU time, 8192x512 backward): dx row by row then the sums of 4 rows in a second loop  \\
       (until this session) 2.4-2.7 ms; dx and the sums fused in one loop after the coefficients     \\
       1.6-1.8 ms; the sums in the coefficients' loop, which waits on memory anyway, and dx alone     \\
       1.3-1.5 ms. (The 4-row sum loop cost 0.25 ms on data in L1 alone but 0.9-1.4 ms in the       \\
       kernel; 2- and 4-row fused dx+sum loops were slower still at 512 columns, 3-4 ms. At 1024x4096 \\
       this path is slower than the wide rows' fo_ln_bwd_rows4: 3.3-3.6 against 2.9-3.0 ms.)        \\
       dx at 256 bits (FO_VEC: 1.6-1.7 -> 1.1-1.3 ms for coefficients + dx in C); the lane loop at  \\
       the build's width. The lane loop prefetches two rows on in both arrays (fo_lane_grads): in   \\
       the kernel (one thread, CPU time, separate processes) backward 1.78-1.89 -> 1.51-1.59 ms;     \\
       prefetching the two rows whole before the row was slower (2.75-2.84). */                     \\
    static void fo_ln_coefs_sums_row1_##S(const T *restrict dp, const T *restrict p,               \\
            const T *restrict g, Py_ssize_t d, T m, T a, double *restrict sb, double *restrict sg,  \\
            T *restrict kb, T *restrict kg) {                                                       \\
        fo_ln_row_coefs_##S(dp, p, g, d, m, a, kb, kg, 2 * d, sb, sg, 1);                           \\
    }                                                                                               \\
    static FO_VEC void fo_ln_dx_row1_##S(const T *restrict dout, const T *restrict x, Py_ssize_t d, \\
            T m, T a, T kb, T kg, const T *restrict g, T *restrict dx) {                            \\
        for (Py_ssize_t j = 0; j < d; j++)                                                          \\
            dx[j] = a * (dout[j] * g[j]) - kb - kg * ((x[j] - m) * a);                              \\
    }                                                                                               \\
    /* Layernorm forward, one narrow row: its statistics (fo_ln_row_stats, as the wide rows) and    \\
       then its normalize while it is in L1. Each 64-element block of the lane loop prefetches the  \\
       block two rows on (fo_lane_stats; at 512 float32 columns 4 KB on: a row is half a 4 KB page; \\
       our guess is that the hardware prefetchers restart at every page). Measured in the kernel    \\
       (float32 8192x512 forward, AVX-512, one thread, CPU time, separate processes):               \\
       the Cython row loop 0.90-1.05 ms in the previous build but 1.1-1.5 in this one with the same \\
       instructions at other addresses (code placement; not understood), this helper without the    \\
       prefetch 1.1-1.4, prefetching the whole row two rows on before it 0.80-0.83, per block       \\
       0.71-0.80. */                                                                                \\
    static void fo_ln_forward_row1_##S(const T *restrict p, Py_ssize_t d, double eps,              \\
            const T *restrict g, const T *restrict b, T *restrict q, T *restrict mean,              \\
            T *restrict inv_std) {                                                                  \\
        T mm, a;                                                                                    \\
        fo_ln_row_stats_##S(p, d, eps, &mm, &a, 2 * d);                                             \\
        *mean = mm;                                                                                 \\
        *inv_std = a;                                                                               \\
        for (Py_ssize_t j = 0; j < d; j++)                                                          \\
            q[j] = g[j] * ((p[j] - mm) * a) + b[j];                                                 \\
    }
    FO_NORM_ROWS4(float, f)
    FO_NORM_ROWS4(double, d)
    """
    void fo_bn_norm_rows4_f(const float* x, Py_ssize_t rows, Py_ssize_t d, const float* m, const float* a,
                            const float* g, const float* b, float* o) noexcept nogil
    void fo_bn_norm_rows4_d(const double* x, Py_ssize_t rows, Py_ssize_t d, const double* m, const double* a,
                            const double* g, const double* b, double* o) noexcept nogil
    void fo_bn_dx_rows4_f(const float* dout, const float* x, Py_ssize_t rows, Py_ssize_t d, const float* m,
                          const float* a, const float* k0, const float* kb, const float* kg,
                          float* dx) noexcept nogil
    void fo_bn_dx_rows4_d(const double* dout, const double* x, Py_ssize_t rows, Py_ssize_t d,
                          const double* m, const double* a, const double* k0, const double* kb,
                          const double* kg, double* dx) noexcept nogil
    void fo_ln_norm_rows4_f(const float* x, Py_ssize_t d, const float* m, const float* a, const float* g,
                            const float* b, float* o) noexcept nogil
    void fo_ln_norm_rows4_d(const double* x, Py_ssize_t d, const double* m, const double* a,
                            const double* g, const double* b, double* o) noexcept nogil
    void fo_bn_norm_rows1_f(const float* x, Py_ssize_t rows, Py_ssize_t d, Py_ssize_t w, const float* m,
                            const float* a, const float* g, const float* b, float* o) noexcept nogil
    void fo_bn_norm_rows1_d(const double* x, Py_ssize_t rows, Py_ssize_t d, Py_ssize_t w, const double* m,
                            const double* a, const double* g, const double* b, double* o) noexcept nogil
    void fo_bn_dx_rows1_f(const float* dout, const float* x, Py_ssize_t rows, Py_ssize_t d, Py_ssize_t w,
                          const float* m, const float* a, const float* k0, const float* kb, const float* kg,
                          float* dx) noexcept nogil
    void fo_bn_dx_rows1_d(const double* dout, const double* x, Py_ssize_t rows, Py_ssize_t d, Py_ssize_t w,
                          const double* m, const double* a, const double* k0, const double* kb,
                          const double* kg, double* dx) noexcept nogil
    void fo_ln_bwd_rows4_f(const float* dout, const float* x, Py_ssize_t d, const float* m, const float* a,
                           const float* kb, const float* kg, const float* g, float* dx, double* sb,
                           double* sg) noexcept nogil
    void fo_ln_bwd_rows4_d(const double* dout, const double* x, Py_ssize_t d, const double* m,
                           const double* a, const double* kb, const double* kg, const double* g,
                           double* dx, double* sb, double* sg) noexcept nogil
    void fo_ln_coefs_sums_row1_f(const float* dp, const float* p, const float* g, Py_ssize_t d, float m,
                                 float a, double* sb, double* sg, float* kb, float* kg) noexcept nogil
    void fo_ln_coefs_sums_row1_d(const double* dp, const double* p, const double* g, Py_ssize_t d, double m,
                                 double a, double* sb, double* sg, double* kb, double* kg) noexcept nogil
    void fo_ln_forward_row1_f(const float* p, Py_ssize_t d, double eps, const float* g, const float* b, float* q,
                              float* mean, float* inv_std) noexcept nogil
    void fo_ln_forward_row1_d(const double* p, Py_ssize_t d, double eps, const double* g, const double* b,
                              double* q, double* mean, double* inv_std) noexcept nogil
    void fo_ln_dx_row1_f(const float* dout, const float* x, Py_ssize_t d, float m, float a, float kb, float kg,
                         const float* g, float* dx) noexcept nogil
    void fo_ln_dx_row1_d(const double* dout, const double* x, Py_ssize_t d, double m, double a, double kb,
                         double kg, const double* g, double* dx) noexcept nogil


cdef enum:
    # Row chunks for the sums over rows: at most MAX_CHUNKS (so at most that many threads share a
    # reduction), each at least MIN_CHUNK_ROWS rows, a multiple of FO_BN_ROWS.
    MAX_CHUNKS = 8
    MIN_CHUNK_ROWS = 64
    # Column blocks, in bytes of one row's slice (1024 float32 or 512 float64 columns): the sums over
    # rows and the element-wise passes walk a group of rows one block at a time, so that the block's
    # per-column arrays (double accumulators and the shift, or the 4-5 coefficient vectors of a
    # normalize/dx pass) stay in the 32 KB L1. Measured (float32, AVX-512, one thread, CPU time):
    # the whole-row normalize pass took 2.1 ms at 1024x4096 and 1.2 ms at 8192x512 for the same
    # bytes, the 16 KB coefficient vectors of a 4096-wide row spilling to L2. A 4 KB slice is one
    # page, which the hardware prefetchers do not cross anyway. (Re-measured this session in C: the
    # column-blocked normalize was no faster than row by row at 1024x4096; wide rows now take the
    # four-row passes below, and the blocks serve the sums over rows and the narrow rows.)
    CB_BYTES = 4096
    # Rows of at least this many bytes take the four-row element-wise passes (C helpers above): with
    # a 16 KB row the 4-5 per-column vectors no longer stay in L1 and are re-read from L2 for every
    # row. Measured (C, float32, AVX-512, one thread, CPU time; loaded machine): normalize 1024x4096
    # 2.4-2.6 ms row by row or in column blocks, 1.3-1.8 ms four rows at a time (a flat copy: 1.2-1.4);
    # 4096x1024 2.3 -> 1.8 ms; at 8192x512 four rows were slower (1.9 ms against 1.3-1.7).
    WIDE_ROW_BYTES = 4096
    # Rows per task of the element-wise passes (each task walks its rows block by block).
    TILE = 16
    # Batchnorm's sums over rows take FO_BN_ROWS = 8 rows together (their C helpers below).
    # Layernorm's dgamma/dbeta pass re-reads rows from cache: LN_ROWS.
    MAX_STRIDE = 8           # _group_stride's cap: a block of FO_BN_ROWS * MAX_STRIDE = MIN_CHUNK_ROWS rows
    LN_ROWS = 4              # fo_ln_norm_rows4 is written for 4


cdef inline Py_ssize_t _chunk_rows(Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t r = (n + MAX_CHUNKS - 1) // MAX_CHUNKS
    if r < MIN_CHUNK_ROWS:
        r = MIN_CHUNK_ROWS
    return ((r + FO_BN_ROWS - 1) // FO_BN_ROWS) * FO_BN_ROWS


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


cdef inline Py_ssize_t _group_stride(Py_ssize_t d, Py_ssize_t itemsize) noexcept nogil:
    # Rows between the members of a FO_BN_ROWS-row group in batchnorm's sums over rows: narrow rows are
    # grouped across pages (row i with i + st, i + 2 st, ...; st rows span >= 4 KB, st <= MAX_STRIDE).
    # With two rows of one group in the same page (8192x512 float32: 2 KB rows) the interleaved
    # walk defeated the hardware prefetchers: statistics 1.3 -> 0.9 ms (C, one thread, CPU time).
    cdef Py_ssize_t st = 1
    while st < MAX_STRIDE and st * d * itemsize < 4096:
        st *= 2
    return st


# Batchnorm's sums over rows, in C: one chunk's n rows, column block by column block (cb elements), the
# rows of a group FO_BN_ROWS = 8 of them st rows apart (_group_stride); blocks of 8 * st rows hold st
# groups, the rows after the last block are added one by one. Each group's terms are added in the
# array's precision (module header) before they reach the double accumulators in memory (L2 at
# D = 4096): 8 times fewer accumulator loads, stores and conversions.
cdef extern from *:
    """
    /* The trees below are written for 8 rows. RS: the pointers' qualifier, `restrict` in float64
       only. Against the Cython loops these replace (the same sums in the same order, so the same
       bits: checked in every SIMD variant at 1 and 2 threads; AVX-512, Zen 5, forward and backward
       timed apart, interleaved, two runs; benchmarks/results/2026-12-04d-zen5/bn_sums_ab_final.txt):
       float64 forward 1.07-1.28x, backward 1.08-1.39x; float32 0.92-1.05x (its backward on thread
       CPU time 0.98-1.03x). Without restrict, float64 gained nothing (0.99-1.01x); with it in
       float32 too, float32's backward read 0.94-0.98x (CPU time 0.96-0.99x), and so it did with
       restrict in both and one helper call per column block (0.92-1.02x). The same operations
       each time: GCC's register and addressing choices for the 16 row streams differ. */
    #define FO_BN_ROWS 8
    #define FO_BN_SUMS(T, S, RS)                                                                    \\
    /* s1[j] = sum(x[i, j] - shift[j]), s2[j] = sum((x[i, j] - shift[j])^2) over the n rows. */     \\
    static void fo_bn_chunk_stats_##S(const T *RS x, Py_ssize_t n, Py_ssize_t d, Py_ssize_t st,    \\
            Py_ssize_t cb, const T *RS shift, double *RS s1, double *RS s2) {                       \\
        const Py_ssize_t D = st * d;                                                                \\
        Py_ssize_t i, j, j0, w, p;                                                                  \\
        for (j = 0; j < d; j++) { s1[j] = 0.0; s2[j] = 0.0; }                                       \\
        for (j0 = 0; j0 < d; j0 += w) {                                                             \\
            w = cb < d - j0 ? cb : d - j0;                                                          \\
            for (i = 0; i + FO_BN_ROWS * st <= n; i += FO_BN_ROWS * st)                             \\
                for (p = 0; p < st; p++) {                                                          \\
                    const T *RS r = x + (i + p) * d + j0;                                           \\
                    for (j = 0; j < w; j++) {                                                       \\
                        T sh = shift[j0 + j];                                                       \\
                        T t0 = r[j] - sh, t1 = r[j + D] - sh, t2 = r[j + 2 * D] - sh,               \\
                            t3 = r[j + 3 * D] - sh, t4 = r[j + 4 * D] - sh, t5 = r[j + 5 * D] - sh, \\
                            t6 = r[j + 6 * D] - sh, t7 = r[j + 7 * D] - sh;                         \\
                        s1[j0 + j] += (double)(((t0 + t1) + (t2 + t3)) + ((t4 + t5) + (t6 + t7)));  \\
                        s2[j0 + j] += (double)(((t0 * t0 + t1 * t1) + (t2 * t2 + t3 * t3))          \\
                                               + ((t4 * t4 + t5 * t5) + (t6 * t6 + t7 * t7)));     \\
                    }                                                                               \\
                }                                                                                   \\
            for (; i < n; i++) {                                                                    \\
                const T *RS r = x + i * d + j0;                                                     \\
                for (j = 0; j < w; j++) {                                                           \\
                    T t0 = r[j] - shift[j0 + j];                                                    \\
                    s1[j0 + j] += (double)t0;                                                       \\
                    s2[j0 + j] += (double)(t0 * t0);                                                \\
                }                                                                                   \\
            }                                                                                       \\
        }                                                                                           \\
    }                                                                                               \\
    /* sb[j] = sum(dout), sg[j] = sum(dout * (x - m)) over the n rows (times inv_std later). The     \\
       products are formed in the array's precision, as xhat is; forming them in double made this  \\
       pass 2x slower (conversions, half-width vectors) for no gain: x - m is already rounded in    \\
       xhat. */                                                                                     \\
    static void fo_bn_chunk_grads_##S(const T *RS dout, const T *RS x, Py_ssize_t n, Py_ssize_t d, \\
            Py_ssize_t st, Py_ssize_t cb, const T *RS m, double *RS sb, double *RS sg) {            \\
        const Py_ssize_t D = st * d;                                                                \\
        Py_ssize_t i, j, j0, w, p;                                                                  \\
        for (j = 0; j < d; j++) { sb[j] = 0.0; sg[j] = 0.0; }                                       \\
        for (j0 = 0; j0 < d; j0 += w) {                                                             \\
            w = cb < d - j0 ? cb : d - j0;                                                          \\
            for (i = 0; i + FO_BN_ROWS * st <= n; i += FO_BN_ROWS * st)                             \\
                for (p = 0; p < st; p++) {                                                          \\
                    const T *RS xr = x + (i + p) * d + j0, *RS dr = dout + (i + p) * d + j0;        \\
                    for (j = 0; j < w; j++) {                                                       \\
                        T mj = m[j0 + j];                                                           \\
                        sb[j0 + j] += (double)(((dr[j] + dr[j + D]) + (dr[j + 2 * D] + dr[j + 3 * D])) \\
                            + ((dr[j + 4 * D] + dr[j + 5 * D]) + (dr[j + 6 * D] + dr[j + 7 * D])));  \\
                        sg[j0 + j] += (double)(((dr[j] * (xr[j] - mj) + dr[j + D] * (xr[j + D] - mj)) \\
                                + (dr[j + 2 * D] * (xr[j + 2 * D] - mj)                             \\
                                   + dr[j + 3 * D] * (xr[j + 3 * D] - mj)))                         \\
                            + ((dr[j + 4 * D] * (xr[j + 4 * D] - mj) + dr[j + 5 * D] * (xr[j + 5 * D] - mj)) \\
                               + (dr[j + 6 * D] * (xr[j + 6 * D] - mj)                              \\
                                  + dr[j + 7 * D] * (xr[j + 7 * D] - mj))));                        \\
                    }                                                                               \\
                }                                                                                   \\
            for (; i < n; i++) {                                                                    \\
                const T *RS xr = x + i * d + j0, *RS dr = dout + i * d + j0;                        \\
                for (j = 0; j < w; j++) {                                                           \\
                    sb[j0 + j] += (double)dr[j];                                                    \\
                    sg[j0 + j] += (double)(dr[j] * (xr[j] - m[j0 + j]));                            \\
                }                                                                                   \\
            }                                                                                       \\
        }                                                                                           \\
    }
    FO_BN_SUMS(float, f, )
    FO_BN_SUMS(double, d, restrict)
    """
    enum: FO_BN_ROWS
    void fo_bn_chunk_stats_f(const float* x, Py_ssize_t n, Py_ssize_t d, Py_ssize_t st, Py_ssize_t cb,
                             const float* shift, double* s1, double* s2) noexcept nogil
    void fo_bn_chunk_stats_d(const double* x, Py_ssize_t n, Py_ssize_t d, Py_ssize_t st, Py_ssize_t cb,
                             const double* shift, double* s1, double* s2) noexcept nogil
    void fo_bn_chunk_grads_f(const float* dout, const float* x, Py_ssize_t n, Py_ssize_t d, Py_ssize_t st,
                             Py_ssize_t cb, const float* m, double* sb, double* sg) noexcept nogil
    void fo_bn_chunk_grads_d(const double* dout, const double* x, Py_ssize_t n, Py_ssize_t d, Py_ssize_t st,
                             Py_ssize_t cb, const double* m, double* sb, double* sg) noexcept nogil


cdef inline void _bn_chunk_stats(const floating* x, Py_ssize_t n, Py_ssize_t d, const floating* shift,
                                 double* s1, double* s2) noexcept nogil:
    cdef Py_ssize_t st = _group_stride(d, sizeof(floating)), cb = CB_BYTES // sizeof(floating)
    if floating is float:
        fo_bn_chunk_stats_f(x, n, d, st, cb, shift, s1, s2)
    else:
        fo_bn_chunk_stats_d(x, n, d, st, cb, shift, s1, s2)


cdef inline void _bn_chunk_grads(const floating* dout, const floating* x, Py_ssize_t n, Py_ssize_t d,
                                 const floating* mean, double* sb, double* sg) noexcept nogil:
    cdef Py_ssize_t st = _group_stride(d, sizeof(floating)), cb = CB_BYTES // sizeof(floating)
    if floating is float:
        fo_bn_chunk_grads_f(dout, x, n, d, st, cb, mean, sb, sg)
    else:
        fo_bn_chunk_grads_d(dout, x, n, d, st, cb, mean, sb, sg)


cdef void _normalize_tile(const floating* x, Py_ssize_t rows, Py_ssize_t d, const floating* mean,
                          const floating* inv_std, const floating* gamma, const floating* beta,
                          floating* out) noexcept nogil:
    # out = gamma * ((x - mean) * inv_std) + beta on `rows` rows: wide rows four at a time (C helpers
    # above), the rest (and every narrow row) one column block at a time (CB_BYTES). Kept in this
    # form rather than x*A + B: for data like 1e4 + N(0, 1) the latter cancels catastrophically in
    # float32.
    cdef Py_ssize_t j0 = 0, w, r0 = 0
    if d * <Py_ssize_t>sizeof(floating) >= WIDE_ROW_BYTES:
        r0 = rows - rows % 4
        if floating is float:
            fo_bn_norm_rows4_f(x, r0, d, mean, inv_std, gamma, beta, out)
        else:
            fo_bn_norm_rows4_d(x, r0, d, mean, inv_std, gamma, beta, out)
    while j0 < d:
        w = min(<Py_ssize_t>(CB_BYTES // sizeof(floating)), d - j0)
        if floating is float:
            fo_bn_norm_rows1_f(x + r0 * d + j0, rows - r0, d, w, mean + j0, inv_std + j0, gamma + j0,
                               beta + j0, out + r0 * d + j0)
        else:
            fo_bn_norm_rows1_d(x + r0 * d + j0, rows - r0, d, w, mean + j0, inv_std + j0, gamma + j0,
                               beta + j0, out + r0 * d + j0)
        j0 += w


cdef void _bn_dx_tile(const floating* dout, const floating* x, Py_ssize_t rows, Py_ssize_t d,
                      const floating* mean, const floating* inv_std, const floating* k0,
                      const floating* kb, const floating* kg, floating* dx) noexcept nogil:
    # dx = k0 * dout - kb - kg * ((x - mean) * inv_std) on `rows` rows, walked as _normalize_tile.
    cdef Py_ssize_t j0 = 0, w, r0 = 0
    if d * <Py_ssize_t>sizeof(floating) >= WIDE_ROW_BYTES:
        r0 = rows - rows % 4
        if floating is float:
            fo_bn_dx_rows4_f(dout, x, r0, d, mean, inv_std, k0, kb, kg, dx)
        else:
            fo_bn_dx_rows4_d(dout, x, r0, d, mean, inv_std, k0, kb, kg, dx)
    while j0 < d:
        w = min(<Py_ssize_t>(CB_BYTES // sizeof(floating)), d - j0)
        if floating is float:
            fo_bn_dx_rows1_f(dout + r0 * d + j0, x + r0 * d + j0, rows - r0, d, w, mean + j0, inv_std + j0,
                             k0 + j0, kb + j0, kg + j0, dx + r0 * d + j0)
        else:
            fo_bn_dx_rows1_d(dout + r0 * d + j0, x + r0 * d + j0, rows - r0, d, w, mean + j0, inv_std + j0,
                             k0 + j0, kb + j0, kg + j0, dx + r0 * d + j0)
        j0 += w


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
    cdef double* part = _workspace((2 * nch + 1) * d)  # chunk k: s1 at part[2kd], s2 at part[(2k+1)d]
    cdef floating* shift = <floating*>(part + 2 * nch * d)
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
    free(part)
    for i in prange((n + TILE - 1) // TILE, nogil=True, schedule='static', num_threads=n_threads):
        _normalize_tile(&x[i * TILE, 0], min(<Py_ssize_t>TILE, n - i * TILE), d, &mean[0], &inv_std[0],
                        &gamma[0], &beta[0], &out[i * TILE, 0])


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
    for i in prange((n + TILE - 1) // TILE, nogil=True, schedule='static', num_threads=n_threads):
        _normalize_tile(&x[i * TILE, 0], min(<Py_ssize_t>TILE, n - i * TILE), d, &running_mean[0], a,
                        &gamma[0], &beta[0], &out[i * TILE, 0])
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
    for i in prange((n + TILE - 1) // TILE, nogil=True, schedule='static', num_threads=n_threads):
        _bn_dx_tile(&dout[i * TILE, 0], &x[i * TILE, 0], min(<Py_ssize_t>TILE, n - i * TILE), d, &mean[0],
                    &inv_std[0], k0, kb, kg, &dx[i * TILE, 0])
    free(part)


# ---------------------------------------------------------------------------------------------------
# spatial batchnorm on (N, C, S), S = H*W: one channel per task, N runs of S contiguous elements


cdef void _sbn_train_channel(const floating* x, Py_ssize_t n, Py_ssize_t nc, Py_ssize_t s, Py_ssize_t c,
                             floating gamma, floating beta, double eps, double momentum,
                             floating* out, floating* mean, floating* inv_std,
                             floating* running_mean, floating* running_var) noexcept nogil:
    cdef double l1[FO_LANES]
    cdef double l2[FO_LANES]
    cdef double s1, s2, mu, var, cnt = <double>n * s
    cdef floating shift = x[c * s]
    cdef Py_ssize_t i, k
    cdef const floating* p
    cdef floating* q
    cdef floating m, a
    fo_lanes_zero(l1, l2)
    for i in range(n):                              # pass 1: read x
        if floating is float:
            fo_lane_stats_f(x + (i * nc + c) * s, s, shift, l1, l2, 0)
        else:
            fo_lane_stats_d(x + (i * nc + c) * s, s, shift, l1, l2, 0)
    s1 = fo_lane_total(l1)
    s2 = fo_lane_total(l2)
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
    cdef double lb[FO_LANES]
    cdef double lg[FO_LANES]
    cdef double sb, sg, cnt = <double>n * s, scale
    cdef Py_ssize_t i, k
    cdef const floating* p
    cdef const floating* dp
    cdef floating* q
    cdef floating k0, kb, kg
    fo_lanes_zero(lb, lg)
    # Pass 1: read dout, x. Products dout * (x - mean) in the array's precision, as in batchnorm.
    for i in range(n):
        if floating is float:
            fo_lane_grads_f(dout + (i * nc + c) * s, x + (i * nc + c) * s, NULL, s, m, lb, lg, 0, 0, NULL,
                            NULL, 0, 0)
        else:
            fo_lane_grads_d(dout + (i * nc + c) * s, x + (i * nc + c) * s, NULL, s, m, lb, lg, 0, 0, NULL,
                            NULL, 0, 0)
    sb = fo_lane_total(lb)
    sg = fo_lane_total(lg)
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


cdef inline void _ln_row_stats(const floating* x, Py_ssize_t d, double eps, floating* mean,
                               floating* inv_std) noexcept nogil:
    # A wide row's statistics, prefetching two rows on. Left to GCC's inliner (it keeps this and
    # _ln_row_coefs out of line); forced inline into the row loops (C, always_inline), the SSE2
    # build's backward at 1024x4096 was 4-6% slower (float32, one thread, CPU time).
    if floating is float:
        fo_ln_row_stats_f(x, d, eps, mean, inv_std, 2 * d)
    else:
        fo_ln_row_stats_d(x, d, eps, mean, inv_std, 2 * d)


cdef inline void _ln_row_coefs(const floating* dout, const floating* x, const floating* gamma, Py_ssize_t d,
                               floating m, floating a, floating* kb, floating* kg) noexcept nogil:
    # A wide row's dx coefficients (no column sums: fo_ln_bwd_rows4 adds them), prefetching two rows on.
    if floating is float:
        fo_ln_row_coefs_f(dout, x, gamma, d, m, a, kb, kg, 2 * d, NULL, NULL, 0)
    else:
        fo_ln_row_coefs_d(dout, x, gamma, d, m, a, kb, kg, 2 * d, NULL, NULL, 0)


cdef void _ln_forward_rows(const floating* x, Py_ssize_t rows, Py_ssize_t d, const floating* gamma,
                           const floating* beta, double eps, floating* out, floating* mean,
                           floating* inv_std) noexcept nogil:
    # `rows` (<= LN_ROWS) consecutive rows. Narrow rows are normalized one by one while each is in
    # L1; LN_ROWS wide rows (WIDE_ROW_BYTES) together, sharing the loads of gamma and beta
    # (fo_ln_norm_rows4), whose 2 x 16 KB at D = 4096 no longer stay in L1 beside the row.
    cdef Py_ssize_t i
    if rows == LN_ROWS and d * <Py_ssize_t>sizeof(floating) >= WIDE_ROW_BYTES:
        for i in range(rows):
            _ln_row_stats(x + i * d, d, eps, mean + i, inv_std + i)
        if floating is float:
            fo_ln_norm_rows4_f(x, d, mean, inv_std, gamma, beta, out)
        else:
            fo_ln_norm_rows4_d(x, d, mean, inv_std, gamma, beta, out)
        return
    for i in range(rows):                           # stats, then normalize while the row is in cache
        if floating is float:
            fo_ln_forward_row1_f(x + i * d, d, eps, gamma, beta, out + i * d, mean + i, inv_std + i)
        else:
            fo_ln_forward_row1_d(x + i * d, d, eps, gamma, beta, out + i * d, mean + i, inv_std + i)


cdef void _ln_backward_chunk(const floating* dout, const floating* x, Py_ssize_t n, Py_ssize_t d,
                             const floating* mean, const floating* inv_std, const floating* gamma,
                             floating* dx, double* sb, double* sg) noexcept nogil:
    # One row chunk: dx row by row, and the chunk's partial dbeta = sum(dout) and
    # dgamma = sum(dout * xhat) from the same rows while they are in cache (products in the array's
    # precision, as in batchnorm's backward). Wide rows (WIDE_ROW_BYTES): the coefficients of
    # LN_ROWS rows first, then their dx and the column sums in one C loop (fo_ln_bwd_rows4, restrict;
    # the LN_ROWS-term group added in the array's precision; fused in Cython, GCC found too many
    # possible aliases to vectorize it: backward 4.3 -> 15.5 ms at 1024x4096). Narrow rows (and the
    # rows after the last LN_ROWS): a row's coefficients and its terms of the column sums (each
    # added to the double accumulators alone) in one C loop, then its dx (fo_ln_coefs_sums_row1,
    # fo_ln_dx_row1). (Until this session narrow rows took dx row by row and then a separate loop
    # summing LN_ROWS rows: 2.4-2.7 ms against 1.3-1.5 at 8192x512, see the helpers.)
    cdef Py_ssize_t i, j, r
    cdef floating kb4[LN_ROWS]
    cdef floating kg4[LN_ROWS]
    for j in range(d):
        sb[j] = 0.0
        sg[j] = 0.0
    i = 0
    while d * <Py_ssize_t>sizeof(floating) >= WIDE_ROW_BYTES and i + LN_ROWS <= n:
        for r in range(LN_ROWS):
            _ln_row_coefs(dout + (i + r) * d, x + (i + r) * d, gamma, d, mean[i + r], inv_std[i + r],
                          &kb4[r], &kg4[r])
        if floating is float:
            fo_ln_bwd_rows4_f(dout + i * d, x + i * d, d, mean + i, inv_std + i, kb4, kg4, gamma,
                              dx + i * d, sb, sg)
        else:
            fo_ln_bwd_rows4_d(dout + i * d, x + i * d, d, mean + i, inv_std + i, kb4, kg4, gamma,
                              dx + i * d, sb, sg)
        i += LN_ROWS
    while i < n:                                    # narrow rows, and the rows after the last LN_ROWS
        if floating is float:
            fo_ln_coefs_sums_row1_f(dout + i * d, x + i * d, gamma, d, mean[i], inv_std[i], sb, sg,
                                    &kb4[0], &kg4[0])
            fo_ln_dx_row1_f(dout + i * d, x + i * d, d, mean[i], inv_std[i], kb4[0], kg4[0], gamma,
                            dx + i * d)
        else:
            fo_ln_coefs_sums_row1_d(dout + i * d, x + i * d, gamma, d, mean[i], inv_std[i], sb, sg,
                                    &kb4[0], &kg4[0])
            fo_ln_dx_row1_d(dout + i * d, x + i * d, d, mean[i], inv_std[i], kb4[0], kg4[0], gamma,
                            dx + i * d)
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
    for i in prange((n + LN_ROWS - 1) // LN_ROWS, nogil=True, schedule='static', num_threads=n_threads):
        _ln_forward_rows(&x[i * LN_ROWS, 0], min(<Py_ssize_t>LN_ROWS, n - i * LN_ROWS), d, &gamma[0],
                         &beta[0], eps, &out[i * LN_ROWS, 0], &mean[i * LN_ROWS], &inv_std[i * LN_ROWS])


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
