/* Lanes of the update/weight ratio's two sums (issue 12): sum p_old^2 and sum (p_new - p_old)^2,
 * element k of a chunk into lane k % 8, each lane in element order, in double.
 *
 * The vectors are the build's own width (GCC vector extensions): FO_VB bytes, 64 with AVX-512, 32
 * with AVX, 16 in the SSE2 baseline, so the 8 lanes of a sum are FO_NL vectors of FO_ND doubles
 * (1 x 8, 2 x 4, 4 x 2). Every build performs the same IEEE operations on the same lanes in the same
 * order, so the sums have the same bits in all of them (setup.py: -ffp-contract=off, no -ffast-math).
 * The lanes stay in registers when a caller keeps its fo_lanes in a local variable whose address
 * goes only to these inline functions and indexes them with constants (through a pointer that a
 * store to the parameter could alias, every add would go to memory and back). */
#ifndef FASTOPT_RATIO_LANES_H
#define FASTOPT_RATIO_LANES_H

#if defined(__AVX512F__)
#define FO_VB 64
#elif defined(__AVX__)
#define FO_VB 32
#else
#define FO_VB 16
#endif
#define FO_NF (FO_VB / 4)    /* floats per vector */
#define FO_ND (FO_VB / 8)    /* doubles per vector */
#define FO_NL (8 / FO_ND)    /* vectors per 8 lanes */

typedef double fo_vd __attribute__((vector_size(FO_VB)));
typedef float fo_vf __attribute__((vector_size(FO_VB)));

typedef struct {
    fo_vd s[FO_NL];      /* sum p_old^2: lane j is s[j / FO_ND][j % FO_ND] */
    fo_vd d[FO_NL];      /* sum (p_new - p_old)^2, same lanes */
} fo_lanes;

static inline void fo_lanes_zero(fo_lanes* L) {
    const fo_vd z = {0};
    int v;
    for (v = 0; v < FO_NL; v++) { L->s[v] = z; L->d[v] = z; }
}

/* Lane j % 8 of both sums, one element: a chunk's tail. */
static inline void fo_lanes_1(fo_lanes* L, int j, double o, double d) {
    j %= 8;
    L->s[j / FO_ND][j % FO_ND] += o * o;
    L->d[j / FO_ND][j % FO_ND] += d * d;
}

/* acc[0] = sum p_old^2, acc[1] = sum d^2: the 8 lanes added in lane order. */
static inline void fo_lanes_total(const fo_lanes* L, double* acc) {
    double s = 0.0, d = 0.0;
    int j;
    for (j = 0; j < 8; j++) { s += L->s[j / FO_ND][j % FO_ND]; d += L->d[j / FO_ND][j % FO_ND]; }
    acc[0] = s; acc[1] = d;
}
#endif
