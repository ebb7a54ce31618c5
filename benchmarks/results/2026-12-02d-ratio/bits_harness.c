/* Every tracked core on LCG data, every flag word 0..31, odd sizes: params, state, avg, acc to stdout. */
#include "_ratio_fused.h"
#include <stdio.h>
#include <stdlib.h>
static unsigned long long st = 12345;
static double rnd(void) { st = st * 6364136223846793005ULL + 1442695040888963407ULL; return ((st >> 11) * (1.0 / 9007199254740992.0)) * 2 - 1; }
typedef void (*ff)(float*, const float*, float*, float*, float*, float*, long, long, const double*, int, double*);
typedef void (*fd)(double*, const double*, double*, double*, double*, double*, long, long, const double*, int, double*);
#define N 17000
static float F[6][N]; static double D[6][N];
int main(void) {
    ff fs[] = {fo_sgd_tracked_f, fo_velocity_tracked_f, fo_adagrad_tracked_f, fo_rmsprop_tracked_f, fo_adam_tracked_f,
               fo_nadam_tracked_f, fo_radam_tracked_f, fo_adadelta_tracked_f, fo_adamax_tracked_f, fo_lion_tracked_f};
    fd ds[] = {fo_sgd_tracked_d, fo_velocity_tracked_d, fo_adagrad_tracked_d, fo_rmsprop_tracked_d, fo_adam_tracked_d,
               fo_nadam_tracked_d, fo_radam_tracked_d, fo_adadelta_tracked_d, fo_adamax_tracked_d, fo_lion_tracked_d};
    long sizes[] = {1, 7, 8, 9, 15, 16, 17, 31, 129, 1023, 16389};
    double c[16], acc[2];
    int r, f, s, a, i;
    for (r = 0; r < 10; r++) for (f = 0; f < 32; f++) for (s = 0; s < 11; s++) {
        long n = sizes[s];
        for (i = 0; i < 16; i++) c[i] = 0.05 + 0.9 * (0.5 + 0.5 * rnd());
        c[0] = f & 1 ? -1.0 : 1.0;
        for (a = 0; a < 6; a++) for (i = 0; i < n; i++) {
            double x = rnd(); if (a >= 2 && a <= 4) x = x * x;  /* states >= 0 (square averages) */
            if (a == 1) x *= 1e-2;
            if ((i % 97) == 5) x = 0.0;
            F[a][i] = (float)x; D[a][i] = x;
        }
        /* lo = 0: a chunk's start; several runs of each to carry state over */
        fs[r](F[0], F[1], F[2], F[3], F[4], F[5], 0, n, c, f, acc);
        fwrite(acc, sizeof acc, 1, stdout);
        for (a = 0; a < 6; a++) fwrite(F[a], sizeof(float), n, stdout);
        ds[r](D[0], D[1], D[2], D[3], D[4], D[5], 0, n, c, f, acc);
        fwrite(acc, sizeof acc, 1, stdout);
        for (a = 0; a < 6; a++) fwrite(D[a], sizeof(double), n, stdout);
    }
    return 0;
}
