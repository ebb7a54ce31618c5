/* The update/weight ratio's two sums in the rule's own loop (issue 12, fourth pass).
 *
 * The tile path of _optim_kernels.pxi ran each 128-element tile three times (copy p_old and sum
 * p_old^2; the rule's untracked core; sum (p_new - p_old)^2 from L1), and in this memory-bound
 * step the extra passes did not hide under the traffic (+25% to +78% at 16M). Here each rule's
 * core is written once more in explicit vectors (GCC vector extensions, one block of 8 elements per
 * iteration), and the block's p_old and p_new, already in registers, go straight into the lanes of
 * src/_ratio_lanes.h: no copy, no second loop.
 *
 * One driver (FO_TRACKED_RULE) for every rule; a rule declares only its constants, the state
 * arrays it uses and its formula on one vector (FO_<RULE>_CONSTS / _USES / _BODY below), written
 * for either vector type (fo_v8f: 8 floats; fo_v4d: 4 doubles, two per block).
 *
 * Bits: each body is the formula of the rule's Cython core (_<rule>_range in _optim_kernels.pxi),
 * the same operations in the same order, parenthesized as Cython emits it; every operation is an
 * IEEE one per lane (+ - * / sqrt, compare-and-select, sign-bit clear), and setup.py compiles with
 * -ffp-contract=off, so no FMA is formed: the parameters and state are bitwise those of the
 * untracked step, in every build (SSE2 lowers a 32-byte vector to two 16-byte ones). The ratio's
 * lanes are those of the tile path: element k of a chunk into lane k % 8, each lane in element
 * order, the same double conversions and subtraction (tests/test_optim2_ratio.py). */
#ifndef FASTOPT_RATIO_FUSED_H
#define FASTOPT_RATIO_FUSED_H
#include <string.h>
#include <emmintrin.h>
#if defined(__AVX__)
#include <immintrin.h>
#endif
#include "_ratio_lanes.h"

/* 32-byte vector arguments of inline helpers in the SSE2 build: never an ABI boundary here. */
#pragma GCC diagnostic ignored "-Wpsabi"

typedef float fo_v8f __attribute__((vector_size(32)));
typedef int fo_v8i __attribute__((vector_size(32)));
typedef long long fo_v4l __attribute__((vector_size(32)));

#define FO_INLINE static inline __attribute__((always_inline))

/* ------------------------------------------------------------------ lane-wise helpers */
/* sqrt (IEEE, correctly rounded: the bits of sqrtf / sqrt); AVX builds one ymm, SSE2 two xmm. */
FO_INLINE fo_v8f fo_sqrt_v8f(fo_v8f x) {
#if defined(__AVX__)
    return (fo_v8f)_mm256_sqrt_ps((__m256)x);
#else
    __m128 lo = _mm_sqrt_ps((__m128)__builtin_shufflevector(x, x, 0, 1, 2, 3));
    __m128 hi = _mm_sqrt_ps((__m128)__builtin_shufflevector(x, x, 4, 5, 6, 7));
    return (fo_v8f)__builtin_shufflevector((fo_v4f)lo, (fo_v4f)hi, 0, 1, 2, 3, 4, 5, 6, 7);
#endif
}

FO_INLINE fo_v4d fo_sqrt_v4d(fo_v4d x) {
#if defined(__AVX__)
    return (fo_v4d)_mm256_sqrt_pd((__m256d)x);
#else
    typedef double v2d __attribute__((vector_size(16)));
    __m128d lo = _mm_sqrt_pd((__m128d)__builtin_shufflevector(x, x, 0, 1));
    __m128d hi = _mm_sqrt_pd((__m128d)__builtin_shufflevector(x, x, 2, 3));
    return __builtin_shufflevector((v2d)lo, (v2d)hi, 0, 1, 2, 3);
#endif
}

/* f_max of _fastmath.pxd: a if a >= b or a is NaN, else b. */
FO_INLINE fo_v8f fo_max_v8f(fo_v8f a, fo_v8f b) {
    fo_v8i m = (a >= b) | (a != a);
    return (fo_v8f)((m & (fo_v8i)a) | (~m & (fo_v8i)b));
}

FO_INLINE fo_v4d fo_max_v4d(fo_v4d a, fo_v4d b) {
    fo_v4l m = (a >= b) | (a != a);
    return (fo_v4d)((m & (fo_v4l)a) | (~m & (fo_v4l)b));
}

/* fabs: the sign bit cleared (what fabsf / fabs do). */
FO_INLINE fo_v8f fo_abs_v8f(fo_v8f x) { return (fo_v8f)((fo_v8i)x & 0x7fffffff); }
FO_INLINE fo_v4d fo_abs_v4d(fo_v4d x) { return (fo_v4d)((fo_v4l)x & 0x7fffffffffffffffLL); }

/* _sign of _optim_kernels.pxi: (c > 0) - (c < 0) as floats (a true compare is -1 here, so the
 * subtraction is reversed), c itself when NaN. */
FO_INLINE fo_v8f fo_sign_v8f(fo_v8f c) {
    fo_v8i nan = c != c;
    fo_v8f s = __builtin_convertvector(c < 0, fo_v8f) - __builtin_convertvector(c > 0, fo_v8f);
    return (fo_v8f)((nan & (fo_v8i)c) | (~nan & (fo_v8i)s));
}

FO_INLINE fo_v4d fo_sign_v4d(fo_v4d c) {
    fo_v4l nan = c != c;
    fo_v4d s = __builtin_convertvector(c < 0, fo_v4d) - __builtin_convertvector(c > 0, fo_v4d);
    return (fo_v4d)((nan & (fo_v4l)c) | (~nan & (fo_v4l)s));
}

#define FO_SQRT(x) _Generic((x), fo_v8f: fo_sqrt_v8f, fo_v4d: fo_sqrt_v4d)(x)
#define FO_MAX(a, b) _Generic((a), fo_v8f: fo_max_v8f, fo_v4d: fo_max_v4d)((a), (b))
#define FO_ABS(x) _Generic((x), fo_v8f: fo_abs_v8f, fo_v4d: fo_abs_v4d)(x)
#define FO_SIGN(x) _Generic((x), fo_v8f: fo_sign_v8f, fo_v4d: fo_sign_v4d)(x)

/* 8 floats to two vectors of 4 doubles (exact). With AVX, one vcvtps2pd per half: GCC's
 * __builtin_convertvector of a 4-float vector emitted two 2-element conversions and an insert per
 * half (tracked Adam float32 16M, 1 thread, C harness, CPU time: +22-25% over untracked -> +8-16%).
 * SSE2 has only the 2-element conversion: the generic form there. */
FO_INLINE void fo_cvt_v8f(fo_v8f x, fo_v4d* lo, fo_v4d* hi) {
#if defined(__AVX__)
    *lo = (fo_v4d)_mm256_cvtps_pd(_mm256_castps256_ps128((__m256)x));
    *hi = (fo_v4d)_mm256_cvtps_pd(_mm256_extractf128_ps((__m256)x, 1));
#else
    *lo = __builtin_convertvector(__builtin_shufflevector(x, x, 0, 1, 2, 3), fo_v4d);
    *hi = __builtin_convertvector(__builtin_shufflevector(x, x, 4, 5, 6, 7), fo_v4d);
#endif
}

/* One block's p_old (o) and p_new (n) into the lanes (lanes 0-3 and 4-7). */
FO_INLINE void fo_lanes_add_v8f(fo_lanes* L, fo_v8f o, fo_v8f n) {
    fo_v4d ol, oh, nl, nh, dl, dh;
    fo_cvt_v8f(o, &ol, &oh);
    fo_cvt_v8f(n, &nl, &nh);
    dl = nl - ol; dh = nh - oh;
    L->s_lo += ol * ol; L->s_hi += oh * oh;
    L->d_lo += dl * dl; L->d_hi += dh * dh;
}

FO_INLINE void fo_lanes_add_v4d(fo_v4d* s, fo_v4d* d, fo_v4d o, fo_v4d n) {
    fo_v4d x = n - o;
    *s += o * o; *d += x * x;
}

/* ------------------------------------------------------------------ the rules
 * FO_<R>_CONSTS(T): the rule's constants in precision T from its _<rule>_consts doubles c[...]
 *   (aw, the running average's weight, in every rule that has one);
 * FO_<R>_USES(F): the state arrays s0, s1, s2 it reads and writes (bits 1, 2, 4) under flags F;
 * FO_<R>_BODY(VT, F, P, G, S0, S1, S2): the rule on one vector, in place (P: p_old in, p_new out;
 *   the caller then moves the running average toward P when F & FO_AVG).
 * F holds the flags of _<rule>_consts; the bit values are those of _optim_kernels.pxi. */
#define FO_AVG 8

/* SGD: WD 1, MOM 2, FIRST 4, NESTEROV 16; s0 momentum_buffer */
#define FO_SGD_CONSTS(T) const T gs = (T)c[0], lr_ = (T)c[1], wd = (T)c[2], mom = (T)c[3], damp1 = (T)c[4], \
    aw = (T)c[5]
#define FO_SGD_USES(F) ((F) & 2 ? 1 : 0)
#define FO_SGD_BODY(VT, F, P, G, S0, S1, S2) do { \
        VT g_ = gs * (G), b_; \
        if ((F) & 1) g_ = g_ + wd * (P); \
        if ((F) & 2) { \
            b_ = ((F) & 4) ? g_ : (mom * (S0)) + (damp1 * g_); \
            (S0) = b_; \
            g_ = ((F) & 16) ? g_ + (mom * b_) : b_; \
        } \
        (P) = (P) - (lr_ * g_); \
    } while (0)

/* CS231n momentum: NESTEROV 1; s0 velocity; no gradient factor, no average */
#define FO_VELOCITY_CONSTS(T) const T lr_ = (T)c[0], mu_ = (T)c[1], mu1 = (T)c[2], aw = (T)0
#define FO_VELOCITY_USES(F) 1
#define FO_VELOCITY_BODY(VT, F, P, G, S0, S1, S2) do { \
        VT vp_ = (S0), v_ = (mu_ * vp_) - (lr_ * (G)); \
        (S0) = v_; \
        (P) = ((F) & 1) ? ((P) - (mu_ * vp_)) + (mu1 * v_) : (P) + v_; \
    } while (0)

/* Adagrad: WD 1; s0 state_sum */
#define FO_ADAGRAD_CONSTS(T) const T gs = (T)c[0], clr_ = (T)c[1], wd = (T)c[2], eps_ = (T)c[3], aw = (T)c[4]
#define FO_ADAGRAD_USES(F) 1
#define FO_ADAGRAD_BODY(VT, F, P, G, S0, S1, S2) do { \
        VT g_ = gs * (G); \
        if ((F) & 1) g_ = g_ + wd * (P); \
        (S0) = (S0) + (g_ * g_); \
        (P) = (P) - ((clr_ * g_) / (FO_SQRT(S0) + eps_)); \
    } while (0)

/* RMSprop: WD 1, CENTERED 2, MOMENTUM 4; s0 square_avg, s1 grad_avg, s2 momentum_buffer */
#define FO_RMSPROP_CONSTS(T) const T gs = (T)c[0], lr_ = (T)c[1], alpha_ = (T)c[2], alpha1 = (T)c[3], \
    eps_ = (T)c[4], wd = (T)c[5], mom = (T)c[6], aw = (T)c[7]
#define FO_RMSPROP_USES(F) (1 | ((F) & 2 ? 2 : 0) | ((F) & 4 ? 4 : 0))
#define FO_RMSPROP_BODY(VT, F, P, G, S0, S1, S2) do { \
        VT g_ = gs * (G), a_, d_; \
        if ((F) & 1) g_ = g_ + wd * (P); \
        (S0) = (alpha_ * (S0)) + ((alpha1 * g_) * g_); \
        if ((F) & 2) { \
            (S1) = (S1) + (alpha1 * (g_ - (S1))); \
            a_ = FO_SQRT((S0) - ((S1) * (S1))) + eps_; \
        } else { \
            a_ = FO_SQRT(S0) + eps_; \
        } \
        if ((F) & 4) { (S2) = (mom * (S2)) + (g_ / a_); d_ = (S2); } else { d_ = g_ / a_; } \
        (P) = (P) - (lr_ * d_); \
    } while (0)

/* The Adam family's shared head: the gradient factor, L2 (1) or decoupled (2) weight decay, the
 * two moments. Adam's float32 core always multiplies by decay (1 unless decoupled; p * 1 == p). */
#define FO_MOMENTS(VT, F, P, G, S0, S1) \
        VT g_ = gs * (G); \
        if ((F) & 2) (P) = (P) * decay; \
        else if ((F) & 1) g_ = g_ + wd * (P); \
        (S0) = (S0) + (beta1c * (g_ - (S0))); \
        (S1) = (beta2_ * (S1)) + ((beta2c * g_) * g_)

/* Adam / AdamW: L2 1, DECAY 2, AMSGRAD 4; s0 exp_avg, s1 exp_avg_sq, s2 max_exp_avg_sq */
#define FO_ADAM_CONSTS(T) const T gs = (T)c[0], beta1c = (T)c[1], beta2_ = (T)c[2], beta2c = (T)c[3], \
    eps_ = (T)c[4], wd = (T)c[5], decay = (T)c[6], step = (T)c[7], inv_bc2 = (T)c[8], aw = (T)c[9]
#define FO_ADAM_USES(F) (1 | 2 | ((F) & 4 ? 4 : 0))
#define FO_ADAM_BODY(VT, F, P, G, S0, S1, S2) do { \
        FO_MOMENTS(VT, F, P, G, S0, S1); \
        VT v_ = (S1); \
        if ((F) & 4) { v_ = FO_MAX((S2), v_); (S2) = v_; } \
        (P) = (P) - ((step * (S0)) / ((FO_SQRT(v_) * inv_bc2) + eps_)); \
    } while (0)

/* NAdam: L2 1, DECAY 2; s0 exp_avg, s1 exp_avg_sq */
#define FO_NADAM_CONSTS(T) const T gs = (T)c[0], beta1c = (T)c[1], beta2_ = (T)c[2], beta2c = (T)c[3], \
    eps_ = (T)c[4], wd = (T)c[5], decay = (T)c[6], bc2 = (T)c[7], cg = (T)c[8], cm = (T)c[9], aw = (T)c[10]
#define FO_NADAM_USES(F) 3
#define FO_NADAM_BODY(VT, F, P, G, S0, S1, S2) do { \
        FO_MOMENTS(VT, F, P, G, S0, S1); \
        VT d_ = FO_SQRT((S1) / bc2) + eps_; \
        (P) = (P) + ((cg * g_) / d_); \
        (P) = (P) + ((cm * (S0)) / d_); \
    } while (0)

/* RAdam: L2 1, DECAY 2, RECTIFIED 4; s0 exp_avg, s1 exp_avg_sq */
#define FO_RADAM_CONSTS(T) const T gs = (T)c[0], beta1c = (T)c[1], beta2_ = (T)c[2], beta2c = (T)c[3], \
    eps_ = (T)c[4], wd = (T)c[5], decay = (T)c[6], step = (T)c[7], rc = (T)c[8], aw = (T)c[9]
#define FO_RADAM_USES(F) 3
#define FO_RADAM_BODY(VT, F, P, G, S0, S1, S2) do { \
        FO_MOMENTS(VT, F, P, G, S0, S1); \
        VT u_ = (S0) * step; \
        if ((F) & 4) u_ = (u_ * rc) / (FO_SQRT(S1) + eps_); \
        (P) = (P) - u_; \
    } while (0)

/* Adamax: WD 1; s0 exp_avg, s1 exp_inf */
#define FO_ADAMAX_CONSTS(T) const T gs = (T)c[0], beta1c = (T)c[1], beta2_ = (T)c[2], eps_ = (T)c[3], \
    clr_ = (T)c[4], wd = (T)c[5], aw = (T)c[6]
#define FO_ADAMAX_USES(F) 3
#define FO_ADAMAX_BODY(VT, F, P, G, S0, S1, S2) do { \
        VT g_ = gs * (G); \
        if ((F) & 1) g_ = g_ + wd * (P); \
        (S0) = (S0) + (beta1c * (g_ - (S0))); \
        (S1) = FO_MAX(beta2_ * (S1), FO_ABS(g_) + eps_); \
        (P) = (P) - ((clr_ * (S0)) / (S1)); \
    } while (0)

/* Adadelta: WD 1; s0 square_avg, s1 acc_delta */
#define FO_ADADELTA_CONSTS(T) const T gs = (T)c[0], rho_ = (T)c[1], rho1 = (T)c[2], eps_ = (T)c[3], \
    lr_ = (T)c[4], wd = (T)c[5], aw = (T)c[6]
#define FO_ADADELTA_USES(F) 3
#define FO_ADADELTA_BODY(VT, F, P, G, S0, S1, S2) do { \
        VT g_ = gs * (G), d_; \
        if ((F) & 1) g_ = g_ + wd * (P); \
        (S0) = ((S0) * rho_) + ((rho1 * g_) * g_); \
        d_ = FO_SQRT(((S1) + eps_) / ((S0) + eps_)) * g_; \
        (S1) = ((S1) * rho_) + ((rho1 * d_) * d_); \
        (P) = (P) - (lr_ * d_); \
    } while (0)

/* Lion: s0 exp_avg */
#define FO_LION_CONSTS(T) const T gs = (T)c[0], b1 = (T)c[1], b1c = (T)c[2], b2 = (T)c[3], b2c = (T)c[4], \
    lr_ = (T)c[5], decay = (T)c[6], aw = (T)c[7]
#define FO_LION_USES(F) 1
#define FO_LION_BODY(VT, F, P, G, S0, S1, S2) do { \
        VT g_ = gs * (G), m_ = (S0), c_ = (b1 * m_) + (b1c * g_); \
        (S0) = (b2 * m_) + (b2c * g_); \
        (P) = ((P) * decay) - (lr_ * FO_SIGN(c_)); \
    } while (0)

/* ------------------------------------------------------------------ the driver */
#define FO_LOAD(v, ptr) memcpy(&(v), (ptr), sizeof(v))
#define FO_STORE(ptr, v) memcpy((ptr), &(v), sizeof(v))

/* One vector of rule R at element i (every array's vector loaded before any is stored), then
 * the running average, the stores, and p_old / p_new left in O / P for the lanes. */
#define FO_VECTOR(R, VT, T, i) \
        VT P, G, O, S0 = {0}, S1 = {0}, S2 = {0}, A = {0}; \
        FO_LOAD(G, gp + (i)); FO_LOAD(P, pp + (i)); \
        if (u & 1) FO_LOAD(S0, s0 + (i)); \
        if (u & 2) FO_LOAD(S1, s1 + (i)); \
        if (u & 4) FO_LOAD(S2, s2 + (i)); \
        if (u & 8) FO_LOAD(A, ap + (i)); \
        O = P; \
        FO_##R##_BODY(VT, F, P, G, S0, S1, S2); \
        if (u & 8) A = A + aw * (P - A); \
        if (u & 1) FO_STORE(s0 + (i), S0); \
        if (u & 2) FO_STORE(s1 + (i), S1); \
        if (u & 4) FO_STORE(s2 + (i), S2); \
        FO_STORE(pp + (i), P); \
        if (u & 8) FO_STORE(ap + (i), A)

/* fo_<name>_tracked_f / _d(p, g, s0, s1, s2, avg, lo, hi, c, flags, acc): rule R on elements
 * lo..hi-1 of one tensor (a chunk: lo a multiple of 8 from the chunk's start), acc[0] = sum p_old^2,
 * acc[1] = sum (p_new - p_old)^2. The block loop is always_inline: called once with the flag word
 * `common` as a literal (the rule's default options: one branch-free copy) and once generic. The
 * last k < 8 elements go through one block on a padded copy (zeros; the padded lanes are dropped),
 * their lanes one element at a time. */
#define FO_TRACKED_RULE(R, name, common) \
FO_INLINE void fo_##name##_blocks_f(float* pp, const float* gp, float* s0, float* s1, float* s2, float* ap, \
                                    long lo, long nb, const double* c, const int F, fo_lanes* Lp, int track) { \
    FO_##R##_CONSTS(float); \
    const int u = FO_##R##_USES(F) | ((F) & FO_AVG ? 8 : 0); \
    fo_lanes L = *Lp; \
    long b; \
    (void)aw; \
    for (b = 0; b < nb; b++) { \
        FO_VECTOR(R, fo_v8f, float, lo + 8 * b); \
        if (track) fo_lanes_add_v8f(&L, O, P); \
    } \
    *Lp = L; \
} \
FO_INLINE void fo_##name##_blocks_d(double* pp, const double* gp, double* s0, double* s1, double* s2, \
                                    double* ap, long lo, long nb, const double* c, const int F, fo_lanes* Lp, \
                                    int track) { \
    FO_##R##_CONSTS(double); \
    const int u = FO_##R##_USES(F) | ((F) & FO_AVG ? 8 : 0); \
    fo_lanes L = *Lp; \
    long b; \
    (void)aw; \
    for (b = 0; b < nb; b++) { \
        { FO_VECTOR(R, fo_v4d, double, lo + 8 * b); if (track) fo_lanes_add_v4d(&L.s_lo, &L.d_lo, O, P); } \
        { FO_VECTOR(R, fo_v4d, double, lo + 8 * b + 4); if (track) fo_lanes_add_v4d(&L.s_hi, &L.d_hi, O, P); } \
    } \
    *Lp = L; \
} \
FO_TRACKED_RANGE(name, float, _f, common) \
FO_TRACKED_RANGE(name, double, _d, common)

#define FO_TRACKED_RANGE(name, T, sfx, common) \
static void fo_##name##_tracked##sfx(T* pp, const T* gp, T* s0, T* s1, T* s2, T* ap, long lo, long hi, \
                                     const double* c, int flags, double* acc) { \
    fo_lanes L; \
    long nb = (hi - lo) / 8, j, i0 = lo + 8 * nb, k = hi - i0; \
    fo_lanes_zero(&L); \
    if (flags == (common)) fo_##name##_blocks##sfx(pp, gp, s0, s1, s2, ap, lo, nb, c, (common), &L, 1); \
    else fo_##name##_blocks##sfx(pp, gp, s0, s1, s2, ap, lo, nb, c, flags, &L, 1); \
    if (k > 0) { \
        T P[8] = {0}, G[8] = {0}, X0[8] = {0}, X1[8] = {0}, X2[8] = {0}, A[8] = {0}, O[8]; \
        fo_lanes Z; \
        fo_lanes_zero(&Z); \
        for (j = 0; j < k; j++) { \
            P[j] = O[j] = pp[i0 + j]; G[j] = gp[i0 + j]; \
            if (s0) X0[j] = s0[i0 + j]; \
            if (s1) X1[j] = s1[i0 + j]; \
            if (s2) X2[j] = s2[i0 + j]; \
            if (ap) A[j] = ap[i0 + j]; \
        } \
        fo_##name##_blocks##sfx(P, G, X0, X1, X2, A, 0, 1, c, flags, &Z, 0); \
        for (j = 0; j < k; j++) { \
            pp[i0 + j] = P[j]; \
            if (s0) s0[i0 + j] = X0[j]; \
            if (s1) s1[i0 + j] = X1[j]; \
            if (s2) s2[i0 + j] = X2[j]; \
            if (ap) ap[i0 + j] = A[j]; \
            fo_lanes_s1(&L, (int)j, (double)O[j]); \
            fo_lanes_d1(&L, (int)j, (double)P[j] - (double)O[j]); \
        } \
    } \
    fo_lanes_total(&L, acc); \
}

FO_TRACKED_RULE(SGD, sgd, 2)
FO_TRACKED_RULE(VELOCITY, velocity, 0)
FO_TRACKED_RULE(ADAGRAD, adagrad, 0)
FO_TRACKED_RULE(RMSPROP, rmsprop, 0)
FO_TRACKED_RULE(ADAM, adam, 0)
FO_TRACKED_RULE(NADAM, nadam, 0)
FO_TRACKED_RULE(RADAM, radam, 4)
FO_TRACKED_RULE(ADADELTA, adadelta, 0)
FO_TRACKED_RULE(ADAMAX, adamax, 0)
FO_TRACKED_RULE(LION, lion, 0)
#endif
