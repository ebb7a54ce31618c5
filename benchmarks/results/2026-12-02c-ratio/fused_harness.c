/* The tracked Adam core of src/_ratio_fused.h alone, in C: its block loop untracked (track = 0) vs
 * fo_adam_tracked_f, float32, interleaved, CPU time of the thread, median and min of REPEATS.
 * N elements (default 16M) swept 16M / N times per repeat (N = 65536 keeps the arrays in L2; there
 * the 256 sweeps per repeat drive m and d^2 of the g = 0 elements into denormals: not a valid
 * compute-only figure, see BENCHMARKS.md).
 * gcc -O3 -fno-math-errno -ffp-contract=off -mavx2 -mfma -I../../../src fused_harness.c -o h && ./h REPEATS [N] */
#include "_ratio_fused.h"
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }
static int cmp(const void* a, const void* b) { double x = *(const double*)a, y = *(const double*)b; return (x > y) - (x < y); }
static void plain(float* p, const float* g, float* m, float* v, long n, const double* c) {
    long lo; fo_lanes L; fo_lanes_zero(&L);
    for (lo = 0; lo < n; lo += 16384) fo_adam_blocks_f(p, g, m, v, 0, 0, lo, 2048, c, 0, &L, 0);
}
static void tracked(float* p, const float* g, float* m, float* v, long n, const double* c, double* acc) {
    long lo; for (lo = 0; lo < n; lo += 16384) fo_adam_tracked_f(p, g, m, v, 0, 0, lo, lo + 16384, c, 0, acc + 2 * (lo / 16384));
}
int main(int argc, char** argv) {
    long n = argc > 2 ? atol(argv[2]) : 1L << 24, i; int reps = atoi(argv[1]), r, k, it, inner = (int)((1L << 24) / n);
    float* buf = malloc((4 * n + 1024) * sizeof(float));
    float *p = buf, *g = buf + n + 64, *m = buf + 2 * n + 128, *v = buf + 3 * n + 192;
    double c[10] = {1.0, 0.1, 0.999, 0.001, 1e-8, 0, 1.0, 1e-3, 1.0, 0}, *acc = malloc((n / 16384 + 1) * 2 * sizeof(double));
    double T[2][64];
    for (i = 0; i < 4 * n + 1024; i++) buf[i] = 1e-3f * (float)(i % 97);
    for (r = 0; r <= reps; r++) for (k = 0; k < 2; k++) {
        double t0 = now();
        for (it = 0; it < inner; it++) { if (k == 0) plain(p, g, m, v, n, c); else tracked(p, g, m, v, n, c, acc); }
        if (r) T[k][r - 1] = now() - t0;
    }
    for (k = 0; k < 2; k++) qsort(T[k], reps, sizeof(double), cmp);
    printf("plain %.2f ms [min %.2f]  tracked %.2f ms [min %.2f]  %+.1f%% (median) %+.1f%% (min)\n", 1e3 * T[0][reps / 2], 1e3 * T[0][0],
           1e3 * T[1][reps / 2], 1e3 * T[1][0], 100 * (T[1][reps / 2] / T[0][reps / 2] - 1), 100 * (T[1][0] / T[0][0] - 1));
    return acc[0] > 1e300;
}
