#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "ln.h"
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
int main(int argc, char **argv) {
  long n = atol(argv[1]), d = atol(argv[2]);
  float *x = (float*)((char*)aligned_alloc(64, n*d*4 + 128) + 16), *dout = (float*)((char*)aligned_alloc(64, n*d*4 + 128) + 16), *dx = (float*)((char*)aligned_alloc(64, n*d*4 + 128) + 16);
  float *g = aligned_alloc(64, d * 4), *m = aligned_alloc(64, n * 4), *a = aligned_alloc(64, n * 4);
  double *sb = aligned_alloc(64, d * 8), *sg = aligned_alloc(64, d * 8);
  for (long i = 0; i < n*d; i++) { x[i] = (i % 97) * 0.01f; dout[i] = (i % 89) * 0.02f; }
  for (long j = 0; j < d; j++) g[j] = 1.0f + j * 1e-3f;
  for (long i = 0; i < n; i++) { m[i] = 0.4f; a[i] = 1.3f; }
  double best[4] = {1e9, 1e9, 1e9, 1e9};
  for (int r = 0; r < 200; r++) {
    float kb, kg; double t0 = now();
    for (long i = 0; i < n; i++) fo_ln_coefs_sums_row1_f(dout + i * d, x + i * d, g, d, m[i], a[i], sb, sg, &kb, &kg);
    double t1 = now();
    for (long i = 0; i < n; i++) fo_ln_dx_row1_f(dout + i * d, x + i * d, d, m[i], a[i], kb, kg, g, dx + i * d);
    double t2 = now();
    for (long i = 0; i < n; i++) fo_ln_row_coefs_f(dout + i * d, x + i * d, g, d, m[i], a[i], &kb, &kg, 0, NULL, NULL, 0);
    double t3 = now();
    for (long i = 0; i < n; i++) { fo_ln_coefs_sums_row1_f(dout + i * d, x + i * d, g, d, m[i], a[i], sb, sg, &kb, &kg); fo_ln_dx_row1_f(dout + i * d, x + i * d, d, m[i], a[i], kb, kg, g, dx + i * d); }
    double t4 = now();
    double v[4] = {t1 - t0, t2 - t1, t3 - t2, t4 - t3};
    for (int k = 0; k < 4; k++) if (v[k] < best[k]) best[k] = v[k];
  }
  double el = (double)n * d;
  printf("coefs+sums %.3f ms (%.2f ns/elem)\ndx         %.3f ms (%.2f)\ncoefs only %.3f ms (%.2f)\nboth row by row %.3f ms (%.2f)\n", best[0]*1e3, best[0]/el*1e9, best[1]*1e3, best[1]/el*1e9, best[2]*1e3, best[2]/el*1e9, best[3]*1e3, best[3]/el*1e9);
}
