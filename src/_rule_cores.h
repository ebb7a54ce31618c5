/* Every optimizer rule's compiled core, and the update/weight ratio's two sums in the same loop
 * (issue 12).
 *
 * Each rule's formula is written once, in explicit vectors of the build's width (GCC vector
 * extensions: 16 floats / 8 doubles with AVX-512, 8 / 4 with AVX, 4 / 2 in SSE2); one driver
 * (FO_RULE) makes its block loop, and a rule declares only its constants, the state arrays it uses
 * and its formula on one vector (FO_<RULE>_CONSTS / _USES / _BODY below), written for either vector
 * type (fo_vf: floats; fo_vd: doubles). Tracked, each block's p_old and p_new, already in
 * registers, go straight into the ratio's sums: no copy, no second loop. Untracked, the same loop
 * without the lane adds (the tile path of an earlier pass ran each 128-element tile three times:
 * +25% to +78% at 16M; against the Cython per-element cores these replaced, the untracked step
 * at 16M float32 takes -10% to +4% of their time per rule: BENCHMARKS.md, "One core per rule").
 *
 * Bits: every operation is an IEEE one per lane (+ - * / sqrt, compare-and-select, sign-bit
 * clear), and setup.py compiles with -ffp-contract=off, so no FMA is formed: the same parameters
 * and state in every build, tracked or not, for any split across threads. The sums: element k of a
 * chunk into lane k % 8 of double lanes, each lane in element order (float32 through float partial
 * sums first, fo_fpart below), the same in every build and for any thread count
 * (tests/test_optim2_ratio.py). */
#ifndef FASTOPT_RULE_CORES_H
#define FASTOPT_RULE_CORES_H
#include <string.h>
#include <emmintrin.h>
#if defined(__AVX__)
#include <immintrin.h>
#endif
#include "_ratio_lanes.h"

/* The build's vectors (src/_ratio_lanes.h: fo_vf, fo_vd of FO_VB bytes) and their compare masks. */
typedef int fo_vfi __attribute__((vector_size(FO_VB)));
typedef long long fo_vdl __attribute__((vector_size(FO_VB)));

#define FO_INLINE static inline __attribute__((always_inline))

/* Elements per block: 16 floats in every build (1, 2 or 4 vectors: the float lanes below are the
 * same everywhere); 8 doubles (FO_NL vectors: lanes 0-7). */
#define FO_BF 16
#define FO_BD 8

/* ------------------------------------------------------------------ lane-wise helpers */
/* sqrt (IEEE, correctly rounded: the bits of sqrtf / sqrt), one instruction per vector. */
FO_INLINE fo_vf fo_sqrt_vf(fo_vf x) {
#if FO_VB == 64
    return (fo_vf)_mm512_sqrt_ps((__m512)x);
#elif FO_VB == 32
    return (fo_vf)_mm256_sqrt_ps((__m256)x);
#else
    return (fo_vf)_mm_sqrt_ps((__m128)x);
#endif
}

FO_INLINE fo_vd fo_sqrt_vd(fo_vd x) {
#if FO_VB == 64
    return (fo_vd)_mm512_sqrt_pd((__m512d)x);
#elif FO_VB == 32
    return (fo_vd)_mm256_sqrt_pd((__m256d)x);
#else
    return (fo_vd)_mm_sqrt_pd((__m128d)x);
#endif
}

/* f_max of _fastmath.pxd: a if a >= b or a is NaN, else b. */
FO_INLINE fo_vf fo_max_vf(fo_vf a, fo_vf b) {
    fo_vfi m = (a >= b) | (a != a);
    return (fo_vf)((m & (fo_vfi)a) | (~m & (fo_vfi)b));
}

FO_INLINE fo_vd fo_max_vd(fo_vd a, fo_vd b) {
    fo_vdl m = (a >= b) | (a != a);
    return (fo_vd)((m & (fo_vdl)a) | (~m & (fo_vdl)b));
}

/* fabs: the sign bit cleared (what fabsf / fabs do). */
FO_INLINE fo_vf fo_abs_vf(fo_vf x) { return (fo_vf)((fo_vfi)x & 0x7fffffff); }
FO_INLINE fo_vd fo_abs_vd(fo_vd x) { return (fo_vd)((fo_vdl)x & 0x7fffffffffffffffLL); }

/* _sign of _optim_kernels.pxi: (c > 0) - (c < 0) as floats (a true compare is -1 here, so the
 * subtraction is reversed), c itself when NaN. */
FO_INLINE fo_vf fo_sign_vf(fo_vf c) {
    fo_vfi nan = c != c;
    fo_vf s = __builtin_convertvector(c < 0, fo_vf) - __builtin_convertvector(c > 0, fo_vf);
    return (fo_vf)((nan & (fo_vfi)c) | (~nan & (fo_vfi)s));
}

FO_INLINE fo_vd fo_sign_vd(fo_vd c) {
    fo_vdl nan = c != c;
    fo_vd s = __builtin_convertvector(c < 0, fo_vd) - __builtin_convertvector(c > 0, fo_vd);
    return (fo_vd)((nan & (fo_vdl)c) | (~nan & (fo_vdl)s));
}

#define FO_SQRT(x) _Generic((x), fo_vf: fo_sqrt_vf, fo_vd: fo_sqrt_vd)(x)
#define FO_MAX(a, b) _Generic((a), fo_vf: fo_max_vf, fo_vd: fo_max_vd)((a), (b))
#define FO_ABS(x) _Generic((x), fo_vf: fo_abs_vf, fo_vd: fo_abs_vd)(x)
#define FO_SIGN(x) _Generic((x), fo_vf: fo_sign_vf, fo_vd: fo_sign_vd)(x)

/* A float vector's low and high halves as double vectors (exact): one conversion instruction per
 * half (GCC's __builtin_convertvector of a half emitted two 2-element conversions and an insert
 * per half with AVX: tracked Adam float32 16M, 1 thread, C harness, CPU time: +22-25% over
 * untracked -> +8-16%). */
FO_INLINE void fo_cvt_vf(fo_vf x, fo_vd* lo, fo_vd* hi) {
#if FO_VB == 64
    *lo = (fo_vd)_mm512_cvtps_pd(_mm512_castps512_ps256((__m512)x));
    *hi = (fo_vd)_mm512_cvtps_pd((__m256)_mm512_extractf64x4_pd((__m512d)x, 1));
#elif FO_VB == 32
    *lo = (fo_vd)_mm256_cvtps_pd(_mm256_castps256_ps128((__m256)x));
    *hi = (fo_vd)_mm256_cvtps_pd(_mm256_extractf128_ps((__m256)x, 1));
#else
    *lo = (fo_vd)_mm_cvtps_pd((__m128)x);
    *hi = (fo_vd)_mm_cvtps_pd(_mm_movehl_ps((__m128)x, (__m128)x));
#endif
}

/* float32: the squares are summed in float over FO_KF blocks of 16 elements (16 float lanes:
 * element k of a chunk into float lane k % 16, FO_BF / FO_NF vectors), then flushed into the double
 * lanes (float lane i into lane i % 8, lanes 0-7 before 8-15): about a third of the instructions
 * of converting every element (kernel alone, AVX-512, 16M, 1 thread: Adam +8.7% -> +3.4%, NAdam
 * +12.8% -> +5.5% over the untracked step, BENCHMARKS.md fifth pass). The float lanes and the flush
 * order are the same in every build, so the sums still have the same bits everywhere.
 * Error: a float lane adds FO_KF rounded squares, relative error <= FO_KF * u on the sum of
 * p_old^2 and <= (FO_KF + 2) * u on that of d^2 (d = p_new - p_old rounded once, often exact by
 * Sterbenz), u = 2^-24; the double adds after the flush add <= n * 2^-53. The ratio sqrt(D / S) is
 * then within (FO_KF + 1) * u + n * 2^-53 (FO_KF = 8: 5.4e-7 + n * 1.1e-16) relatively of the exact
 * one, as long as no square leaves float's normal range (1.1e-19 <= |p_old|, |d| <= 6.5e18 for 8
 * terms): a diagnostic of order 1e-3 needs far less (tests/test_optim2_ratio.py checks the bound). */
#define FO_KF 8
typedef struct {
    fo_vf s[FO_BF / FO_NF], d[FO_BF / FO_NF];   /* vector j: float lanes FO_NF * j on */
} fo_fpart;

FO_INLINE void fo_fpart_zero(fo_fpart* Q) {
    const fo_vf z = {0};
    int j;
    for (j = 0; j < FO_BF / FO_NF; j++) { Q->s[j] = z; Q->d[j] = z; }
}

/* Vector j of a block: its p_old (o) and p_new (n) into float lanes FO_NF * j on. */
FO_INLINE void fo_fpart_add(fo_fpart* Q, int j, fo_vf o, fo_vf n) {
    fo_vf x = n - o;
    Q->s[j] += o * o; Q->d[j] += x * x;
}

/* The float lanes into the double lanes and zeroed: vector j's low half starts at lane
 * (FO_NF * j) % 8, its high half FO_ND further (with AVX-512 both halves are lanes 0-7, low first). */
FO_INLINE void fo_fpart_flush(fo_lanes* L, fo_fpart* Q) {
    int j;
    for (j = 0; j < FO_BF / FO_NF; j++) {
        const int a = (FO_NF * j % 8) / FO_ND, b = ((FO_NF * j + FO_ND) % 8) / FO_ND;
        fo_vd lo, hi;
        fo_cvt_vf(Q->s[j], &lo, &hi);
        L->s[a] += lo; L->s[b] += hi;
        fo_cvt_vf(Q->d[j], &lo, &hi);
        L->d[a] += lo; L->d[b] += hi;
    }
    fo_fpart_zero(Q);
}

/* A double vector's p_old and p_new into lanes FO_ND * v on (v = the vector's place in its block). */
FO_INLINE void fo_lanes_add_vd(fo_lanes* L, int v, fo_vd o, fo_vd n) {
    fo_vd x = n - o;
    L->s[v] += o * o; L->d[v] += x * x;
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


/* fo_<name>_range_f / _d(p, g, s0, s1, s2, avg, lo, hi, c, flags, acc): rule R on elements lo..hi-1
 * of one tensor (a chunk, or a thread's share of one); with acc (not NULL) also acc[0] = sum
 * p_old^2 and acc[1] = sum (p_new - p_old)^2, lo then the chunk's start. This is the rule's only
 * compiled core: the untracked step is the same block loop with the lane code compiled out
 * (track a literal 0), so the two give the same parameters and state by construction. The block
 * loop is always_inline: called with the flag word `common` as a literal (the rule's default
 * options: one branch-free copy) and once generic, each tracked and untracked. The last k < block
 * elements go through one block on a padded copy (zeros; the padded lanes are dropped), their
 * lanes one element at a time. */
#define FO_RULE(R, name, common) \
FO_BLOCKS(R, name, float, _f, fo_vf, FO_NF, FO_BF, fo_fpart_add(&Q, j, O, P), \
          fo_fpart_flush(&L, &Q)) \
FO_BLOCKS(R, name, double, _d, fo_vd, FO_ND, FO_BD, fo_lanes_add_vd(&L, j, O, P), (void)0) \
FO_RANGE(name, float, _f, FO_BF, common) \
FO_RANGE(name, double, _d, FO_BD, common)

/* Software prefetch, FO_PF bytes ahead of element i, of every array the rule uses: one line per
 * array per block (a block is 64 bytes in both precisions). Why (issue 12, AMD Zen 5, AVX-512, 16M
 * float32, 1 thread): Adagrad's tracked loop ran +36-48% over its untracked one while RMSprop's
 * (same streams, same ops) did not. The slow loop differed from a fast build of itself (the same
 * source without -fwrapv, which Python's CFLAGS add) only in register numbers, and it was slow only
 * when p and g shared their offset in a 4 KiB page (NumPy's layout of large arrays; g 64 bytes
 * further on: fast). perf put the time on the instruction after a g load: waiting for g from
 * memory, the hardware prefetcher falling behind in a way that depends on the exact code (a first
 * fix by pointer increments cured Adagrad and made NAdam's tracked loop +26-39% instead). With the
 * explicit prefetches every rule's tracked loop measured -3.7% to +1.4% of its untracked one
 * (Adagrad -3.4 / -0.8% at 1 thread, +1.4% at 2), and the untracked step at 16M took 0-7% less
 * time (BENCHMARKS.md, "Zen 5, late evening"). A prefetch changes no value (no bits change) and never
 * faults, also past an array's end.
 * The untracked step prefetches only from element FO_PF_FROM of a tensor on (a separate copy of
 * the loop without it below): in cache the extra instructions cost (Adam 1e5 float32 untracked,
 * every chunk prefetched: +2% to +13% over no prefetch, five runs). */
#define FO_PF 2048
#define FO_PF_FROM (1L << 18)
#define FO_AHEAD(a, i) ((const void*)((__UINTPTR_TYPE__)((a) + (i)) + FO_PF))
#define FO_PREFETCH(i) do { \
        __builtin_prefetch(FO_AHEAD(pp, i), 1); \
        __builtin_prefetch(FO_AHEAD(gp, i), 0); \
        if (u & 1) __builtin_prefetch(FO_AHEAD(s0, i), 1); \
        if (u & 2) __builtin_prefetch(FO_AHEAD(s1, i), 1); \
        if (u & 4) __builtin_prefetch(FO_AHEAD(s2, i), 1); \
        if (u & 8) __builtin_prefetch(FO_AHEAD(ap, i), 1); \
    } while (0)

/* Blocks b .. b+n-1 (bb counts them), vector by vector with ADD after each, then END closes the
 * group: FO_KF blocks at a time (n a literal: GCC unrolls the group, and END, the float32 flush,
 * runs once per group, not behind a test after every block), the last group shorter. */
#define FO_GROUP(R, VT, T, W, B, ADD, END, n) do { \
        _Pragma("GCC unroll 8") \
        for (bb = 0; bb < (n); bb++) { \
            if (pf) FO_PREFETCH(lo + (B) * (b + bb)); \
            _Pragma("GCC unroll 8") \
            for (j = 0; j < (B) / (W); j++) { \
                FO_VECTOR(R, VT, T, lo + (B) * (b + bb) + (W) * j); \
                if (track) ADD; \
            } \
        } \
        if (track) { END; } \
    } while (0)

/* fo_<name>_blocks_<f|d>: nb blocks of B elements from lo, W per vector; ADD puts vector j's
 * p_old (O) and p_new (P) into the lanes (j and the lanes' indices are literals once the inner
 * loop is unrolled), END closes a group of blocks. */
#define FO_BLOCKS(R, name, T, sfx, VT, W, B, ADD, END) \
FO_INLINE void fo_##name##_blocks##sfx(T* pp, const T* gp, T* s0, T* s1, T* s2, T* ap, long lo, long nb, \
                                       const double* c, const int F, fo_lanes* Lp, int track, int pf) { \
    FO_##R##_CONSTS(T); \
    const int u = FO_##R##_USES(F) | ((F) & FO_AVG ? 8 : 0); \
    fo_lanes L = *Lp; \
    fo_fpart Q; \
    long b, bb; \
    int j; \
    (void)aw; \
    fo_fpart_zero(&Q); \
    for (b = 0; b + FO_KF <= nb; b += FO_KF) FO_GROUP(R, VT, T, W, B, ADD, END, FO_KF); \
    if (b < nb) FO_GROUP(R, VT, T, W, B, ADD, END, nb - b); \
    *Lp = L; \
}

/* The last k < B elements from i0: one block on a padded copy; with L their lanes, element by element. */
#define FO_RANGE(name, T, sfx, B, common) \
FO_INLINE void fo_##name##_tail##sfx(T* pp, const T* gp, T* s0, T* s1, T* s2, T* ap, long i0, long k, \
                                     const double* c, int flags, fo_lanes* L) { \
    T P[B] = {0}, G[B] = {0}, X0[B] = {0}, X1[B] = {0}, X2[B] = {0}, A[B] = {0}, O[B]; \
    fo_lanes Z; \
    long j; \
    fo_lanes_zero(&Z); \
    for (j = 0; j < k; j++) { \
        P[j] = O[j] = pp[i0 + j]; G[j] = gp[i0 + j]; \
        if (s0) X0[j] = s0[i0 + j]; \
        if (s1) X1[j] = s1[i0 + j]; \
        if (s2) X2[j] = s2[i0 + j]; \
        if (ap) A[j] = ap[i0 + j]; \
    } \
    fo_##name##_blocks##sfx(P, G, X0, X1, X2, A, 0, 1, c, flags, &Z, 0, 0); \
    for (j = 0; j < k; j++) { \
        pp[i0 + j] = P[j]; \
        if (s0) s0[i0 + j] = X0[j]; \
        if (s1) s1[i0 + j] = X1[j]; \
        if (s2) s2[i0 + j] = X2[j]; \
        if (ap) ap[i0 + j] = A[j]; \
        if (L) fo_lanes_1(L, (int)j, (double)O[j], (double)P[j] - (double)O[j]); \
    } \
} \
static void fo_##name##_range##sfx(T* pp, const T* gp, T* s0, T* s1, T* s2, T* ap, long lo, long hi, \
                                   const double* c, int flags, double* acc) { \
    fo_lanes L; \
    long nb = (hi - lo) / (B), i0 = lo + (B) * nb; \
    fo_lanes_zero(&L); \
    if (acc) { \
        if (flags == (common)) fo_##name##_blocks##sfx(pp, gp, s0, s1, s2, ap, lo, nb, c, (common), &L, 1, 1); \
        else fo_##name##_blocks##sfx(pp, gp, s0, s1, s2, ap, lo, nb, c, flags, &L, 1, 1); \
    } else if (lo >= FO_PF_FROM) { \
        if (flags == (common)) fo_##name##_blocks##sfx(pp, gp, s0, s1, s2, ap, lo, nb, c, (common), &L, 0, 1); \
        else fo_##name##_blocks##sfx(pp, gp, s0, s1, s2, ap, lo, nb, c, flags, &L, 0, 1); \
    } else { \
        if (flags == (common)) fo_##name##_blocks##sfx(pp, gp, s0, s1, s2, ap, lo, nb, c, (common), &L, 0, 0); \
        else fo_##name##_blocks##sfx(pp, gp, s0, s1, s2, ap, lo, nb, c, flags, &L, 0, 0); \
    } \
    if (hi > i0) fo_##name##_tail##sfx(pp, gp, s0, s1, s2, ap, i0, hi - i0, c, flags, acc ? &L : NULL); \
    if (acc) fo_lanes_total(&L, acc); \
}

FO_RULE(SGD, sgd, 2)
FO_RULE(VELOCITY, velocity, 0)
FO_RULE(ADAGRAD, adagrad, 0)
FO_RULE(RMSPROP, rmsprop, 0)
FO_RULE(ADAM, adam, 0)
FO_RULE(NADAM, nadam, 0)
FO_RULE(RADAM, radam, 4)
FO_RULE(ADADELTA, adadelta, 0)
FO_RULE(ADAMAX, adamax, 0)
FO_RULE(LION, lion, 0)
#endif
