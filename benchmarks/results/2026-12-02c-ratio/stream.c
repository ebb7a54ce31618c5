/* A compiled stream loop with Adam's access pattern (read p, g, m, v; write p, m, v), float32,
 * 16M elements, staggered arrays: the memory floor the Adam kernel is compared with.
 * gcc -O3 -mavx2 -fopenmp stream.c -o /tmp/ratio_stream && /tmp/ratio_stream REPEATS THREADS */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }
static int cmp(const void* a, const void* b) { double x = *(const double*)a, y = *(const double*)b; return (x > y) - (x < y); }
int main(int argc, char** argv) {
    long n = 1L << 24, i; int reps = argc > 1 ? atoi(argv[1]) : 11, th = argc > 2 ? atoi(argv[2]) : 1, r;
    float* buf = malloc((4 * n + 4 * 256) * sizeof(float));
    float *p = buf, *g = buf + n + 64, *m = buf + 2 * n + 128, *v = buf + 3 * n + 192;
    double t[64];
    for (i = 0; i < 4 * n + 4 * 256; i++) buf[i] = 1e-3f * (float)(i % 97);
    for (r = 0; r < reps + 1 && r < 64; r++) {
        double t0 = now();
        #pragma omp parallel for num_threads(th) schedule(static)
        for (i = 0; i < n; i++) {
            float gi = g[i], mi = m[i], vi = v[i], pi = p[i];
            m[i] = mi + 0.1f * (gi - mi); v[i] = vi + 0.001f * gi; p[i] = pi - 1e-3f * mi;
        }
        t[r] = now() - t0;
    }
    qsort(t + 1, reps, sizeof(double), cmp);
    printf("stream (Adam's 4 reads + 3 writes, float32, 16M) %dt: median %.2f ms [%.2f-%.2f]; %.1f GB/s\n", th,
           1e3 * t[1 + reps / 2], 1e3 * t[1], 1e3 * t[reps], 7.0 * 4 * n / t[1 + reps / 2] / 1e9);
    return (int)(p[7] > 1e9f);
}
