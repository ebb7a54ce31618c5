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
#include <string.h>

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

/* Lane j (0..7) of the p_old^2 sums, and of the d^2 sums: a tile's last < 8 elements. */
static inline void fo_lanes_s1(fo_lanes* L, int j, double o) {
    if (j < 4) L->s_lo[j] += o * o; else L->s_hi[j - 4] += o * o;
}

static inline void fo_lanes_d1(fo_lanes* L, int j, double d) {
    if (j < 4) L->d_lo[j] += d * d; else L->d_hi[j - 4] += d * d;
}

/* Before the rule's core on a tile of n elements (starting at a multiple of 8 from the chunk's
 * start): p_old copied to o (L1) and added into the p_old^2 lanes in the same loop, while the
 * loads bring the tile in for the core. GCC's loop distribution would split the copy out into a
 * memcpy call per tile (as it did with the Cython copy loop: ~10% of the tracked Adam step's
 * samples): FO_NO_MEMCPY keeps it in the loop. */
#define FO_NO_MEMCPY __attribute__((optimize("no-tree-loop-distribute-patterns")))
static inline FO_NO_MEMCPY void fo_lanes_old_f(fo_lanes* L, float* o, const float* p, long n) {
    long k, m = n - n % 8;
    for (k = 0; k < m; k += 8) {
        fo_v4f a, b;
        fo_v4d x, y;
        memcpy(&a, p + k, 16); memcpy(&b, p + k + 4, 16);
        memcpy(o + k, &a, 16); memcpy(o + k + 4, &b, 16);
        x = __builtin_convertvector(a, fo_v4d); y = __builtin_convertvector(b, fo_v4d);
        L->s_lo += x * x; L->s_hi += y * y;
    }
    for (k = m; k < n; k++) { o[k] = p[k]; fo_lanes_s1(L, (int)(k - m), (double)p[k]); }
}

static inline FO_NO_MEMCPY void fo_lanes_old_d(fo_lanes* L, double* o, const double* p, long n) {
    long k, m = n - n % 8;
    for (k = 0; k < m; k += 8) {
        fo_v4d x, y;
        memcpy(&x, p + k, 32); memcpy(&y, p + k + 4, 32);
        memcpy(o + k, &x, 32); memcpy(o + k + 4, &y, 32);
        L->s_lo += x * x; L->s_hi += y * y;
    }
    for (k = m; k < n; k++) { o[k] = p[k]; fo_lanes_s1(L, (int)(k - m), p[k]); }
}

/* After the core: (p_new - p_old)^2 of the tile, both in L1, into the d^2 lanes. */
static inline void fo_lanes_new_f(fo_lanes* L, const float* o, const float* nw, long n) {
    long k, m = n - n % 8;
    for (k = 0; k < m; k += 8) {
        fo_v4f a, b, c, e;
        fo_v4d x, y;
        memcpy(&a, o + k, 16); memcpy(&b, o + k + 4, 16); memcpy(&c, nw + k, 16); memcpy(&e, nw + k + 4, 16);
        x = __builtin_convertvector(c, fo_v4d) - __builtin_convertvector(a, fo_v4d);
        y = __builtin_convertvector(e, fo_v4d) - __builtin_convertvector(b, fo_v4d);
        L->d_lo += x * x; L->d_hi += y * y;
    }
    for (k = m; k < n; k++) fo_lanes_d1(L, (int)(k - m), (double)nw[k] - (double)o[k]);
}

static inline void fo_lanes_new_d(fo_lanes* L, const double* o, const double* nw, long n) {
    long k, m = n - n % 8;
    for (k = 0; k < m; k += 8) {
        fo_v4d a, b, c, e, x, y;
        memcpy(&a, o + k, 32); memcpy(&b, o + k + 4, 32); memcpy(&c, nw + k, 32); memcpy(&e, nw + k + 4, 32);
        x = c - a; y = e - b;
        L->d_lo += x * x; L->d_hi += y * y;
    }
    for (k = m; k < n; k++) fo_lanes_d1(L, (int)(k - m), nw[k] - o[k]);
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
