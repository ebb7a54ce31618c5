/* Lanes of the update/weight ratio's two sums (issue 12): sum p_old^2 and sum (p_new - p_old)^2,
 * element k of a chunk into lane k % 8, each lane in element order, in double.
 *
 * GCC vector extensions with explicit lanes: 4 doubles per vector (lanes 0-3 and 4-7). The SSE2
 * build lowers each 32-byte vector to two 16-byte ones and the AVX2 build uses one ymm: the same
 * IEEE operations on the same lanes, so the same bits (setup.py: -ffp-contract=off, no -ffast-math).
 * The lanes stay in registers when a caller keeps its fo_lanes in a local variable whose address
 * goes only to these inline functions (through a pointer that a store to the parameter could alias,
 * every add would go to memory and back). */
#ifndef FASTOPT_RATIO_LANES_H
#define FASTOPT_RATIO_LANES_H

typedef double fo_v4d __attribute__((vector_size(32)));
typedef float fo_v4f __attribute__((vector_size(16)));

typedef struct {
    fo_v4d s_lo, s_hi;   /* sum p_old^2, lanes 0-3 and 4-7 */
    fo_v4d d_lo, d_hi;   /* sum (p_new - p_old)^2, same lanes */
} fo_lanes;

static inline void fo_lanes_zero(fo_lanes* L) {
    const fo_v4d z = {0.0, 0.0, 0.0, 0.0};
    L->s_lo = z; L->s_hi = z; L->d_lo = z; L->d_hi = z;
}

/* Lane j (0..7) of the p_old^2 sums, and of the d^2 sums: a chunk's last < 8 elements. */
static inline void fo_lanes_s1(fo_lanes* L, int j, double o) {
    if (j < 4) L->s_lo[j] += o * o; else L->s_hi[j - 4] += o * o;
}

static inline void fo_lanes_d1(fo_lanes* L, int j, double d) {
    if (j < 4) L->d_lo[j] += d * d; else L->d_hi[j - 4] += d * d;
}

/* acc[0] = sum p_old^2, acc[1] = sum d^2: the 8 lanes added in lane order. */
static inline void fo_lanes_total(const fo_lanes* L, double* acc) {
    double s = 0.0, d = 0.0;
    int j;
    for (j = 0; j < 4; j++) { s += L->s_lo[j]; d += L->d_lo[j]; }
    for (j = 0; j < 4; j++) { s += L->s_hi[j]; d += L->d_hi[j]; }
    acc[0] = s; acc[1] = d;
}
#endif
