#include <stdio.h>
#include <stdlib.h>
#include <time.h>
typedef float T;
#define CB 1024
#define GRADS(NAME, PF) \
__attribute__((noinline)) void NAME(const T *restrict dout, const T *restrict x, long n, long d, const T *restrict mean, double *restrict sb, double *restrict sg) { \
  long D = d; for (long j = 0; j < d; j++) { sb[j] = 0; sg[j] = 0; } \
  for (long j0 = 0; j0 < d; j0 += CB) { long w = CB < d - j0 ? CB : d - j0; \
    for (long i = 0; i + 8 <= n; i += 8) { \
      const T *xr = x + i * d + j0, *dr = dout + i * d + j0; \
      const T *xn = xr + 8 * d, *dn = dr + 8 * d; int pf = PF && i + 16 <= n; \
      for (long jb = 0; jb < w; jb += 16) { \
        if (pf) { for (int q = 0; q < 8; q++) { __builtin_prefetch(xn + q * D + jb); __builtin_prefetch(dn + q * D + jb); } } \
        long je = jb + 16 <= w ? jb + 16 : w; \
        for (long j = jb; j < je; j++) { \
        T mj = mean[j0 + j]; \
        sb[j0+j] += (double)(((dr[j] + dr[j+D]) + (dr[j+2*D] + dr[j+3*D])) + ((dr[j+4*D] + dr[j+5*D]) + (dr[j+6*D] + dr[j+7*D]))); \
        sg[j0+j] += (double)(((dr[j]*(xr[j]-mj) + dr[j+D]*(xr[j+D]-mj)) + (dr[j+2*D]*(xr[j+2*D]-mj) + dr[j+3*D]*(xr[j+3*D]-mj))) \
                 + ((dr[j+4*D]*(xr[j+4*D]-mj) + dr[j+5*D]*(xr[j+5*D]-mj)) + (dr[j+6*D]*(xr[j+6*D]-mj) + dr[j+7*D]*(xr[j+7*D]-mj)))); \
      } } } } }
GRADS(g_orig, 0)
GRADS(g_pf, 1)
__attribute__((noinline)) double roof(const T *restrict dout, const T *restrict x, long n, long d, const T *restrict mean, double *restrict sb, double *restrict sg) {
  float s = 0; long m = n * d;
  #pragma omp simd reduction(+:s)
  for (long i = 0; i < m; i++) s += dout[i] + x[i];
  sb[0] = s; return s; }
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
typedef void (*F)(const T*, const T*, long, long, const T*, double*, double*);
int main(int argc, char **argv) {
  long n = atol(argv[1]), d = atol(argv[2]);
  T *x = (T*)((char*)aligned_alloc(64, n*d*4 + 128) + 16), *dout = (T*)((char*)aligned_alloc(64, n*d*4 + 128) + 16);
  T *mean = aligned_alloc(64, d * 4); double *sb = aligned_alloc(64, d * 8), *sg = aligned_alloc(64, d * 8);
  for (long i = 0; i < n*d; i++) { x[i] = (i % 97) * 0.01f; dout[i] = (i % 89) * 0.02f; }
  for (long j = 0; j < d; j++) mean[j] = 0.5f;
  F fs[] = {(F)roof, g_orig, g_pf}; const char *names[] = {"roof", "orig", "prefetch"};
  double v[3][31];
  for (int r = 0; r < 31; r++) for (int k = 0; k < 3; k++) { double t = now(); fs[k](dout, x, n, d, mean, sb, sg); v[k][r] = now() - t; }
  for (int k = 0; k < 3; k++) { double *a = v[k]; for (int i = 0; i < 31; i++) for (int j = i+1; j < 31; j++) if (a[j] < a[i]) { double s = a[i]; a[i] = a[j]; a[j] = s; }
    printf("%-9s %.3f ms (min %.3f)\n", names[k], a[15] * 1e3, a[0] * 1e3); }
}
