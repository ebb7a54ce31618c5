#include <stdio.h>
#include <stdlib.h>
#include <time.h>
typedef float T;
typedef void (*F)(const T*, long, long, const T*, double*, double*);
#define CB 1024
__attribute__((noinline)) void s8(const T *restrict x, long n, long d, const T *restrict sh, double *restrict s1, double *restrict s2) {
  long D = d; for (long j = 0; j < d; j++) { s1[j] = 0; s2[j] = 0; }
  for (long j0 = 0; j0 < d; j0 += CB) { long w = CB < d - j0 ? CB : d - j0;
    for (long i = 0; i + 8 <= n; i += 8) { const T *r = x + i * d + j0;
      for (long j = 0; j < w; j++) { T s = sh[j0 + j];
        T t0 = r[j] - s, t1 = r[j+D] - s, t2 = r[j+2*D] - s, t3 = r[j+3*D] - s, t4 = r[j+4*D] - s, t5 = r[j+5*D] - s, t6 = r[j+6*D] - s, t7 = r[j+7*D] - s;
        s1[j0+j] += (double)(((t0 + t1) + (t2 + t3)) + ((t4 + t5) + (t6 + t7)));
        s2[j0+j] += (double)(((t0*t0 + t1*t1) + (t2*t2 + t3*t3)) + ((t4*t4 + t5*t5) + (t6*t6 + t7*t7))); } } } }
#define SK(NAME, CBW, PF) \
__attribute__((noinline)) void NAME(const T *restrict x, long n, long d, const T *restrict sh, double *restrict s1, double *restrict s2) { \
  long D = d; for (long j = 0; j < d; j++) { s1[j] = 0; s2[j] = 0; } \
  for (long j0 = 0; j0 < d; j0 += CBW) { long w = CBW < d - j0 ? CBW : d - j0; \
    for (long i = 0; i + 4 <= n; i += 4) { const T *restrict r = x + i * d + j0; \
      for (long j = 0; j < w; j++) { T s = sh[j0 + j]; \
        if (PF && (j & 15) == 0) { __builtin_prefetch(r + j + 4 * D + PF); __builtin_prefetch(r + j + 5*D + PF); __builtin_prefetch(r + j + 6*D + PF); __builtin_prefetch(r + j + 7*D + PF);} \
        T t0 = r[j] - s, t1 = r[j+D] - s, t2 = r[j+2*D] - s, t3 = r[j+3*D] - s; \
        s1[j0+j] += (double)((t0 + t1) + (t2 + t3)); s2[j0+j] += (double)((t0*t0 + t1*t1) + (t2*t2 + t3*t3)); } } } }
SK(s4, CB, 0)
SK(s4full, 1 << 20, 0)
SK(s4pf, 1 << 20, 0)
__attribute__((noinline)) void s2r(const T *restrict x, long n, long d, const T *restrict sh, double *restrict s1, double *restrict s2) {
  long D = d; for (long j = 0; j < d; j++) { s1[j] = 0; s2[j] = 0; }
  for (long i = 0; i + 2 <= n; i += 2) { const T *restrict r = x + i * d;
    for (long j = 0; j < d; j++) { T s = sh[j]; T t0 = r[j] - s, t1 = r[j+D] - s;
      s1[j] += (double)(t0 + t1); s2[j] += (double)(t0*t0 + t1*t1); } } }
__attribute__((noinline)) void roof1(const T *restrict x, long n, long d, const T *restrict sh, double *restrict s1, double *restrict s2) {
  T s = 0; long m = n * d;
  #pragma omp simd reduction(+:s)
  for (long i = 0; i < m; i++) s += x[i];
  s1[0] = s; }
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
int main(int argc, char **argv) {
  long n = atol(argv[1]), d = atol(argv[2]);
  T *x = (T*)((char*)aligned_alloc(64, n*d*sizeof(T) + 128) + 16);
  T *sh = aligned_alloc(64, d * sizeof(T)); double *sb = aligned_alloc(64, d * 8), *sg = aligned_alloc(64, d * 8);
  for (long i = 0; i < n*d; i++) x[i] = (i % 97) * 0.01f;
  for (long j = 0; j < d; j++) sh[j] = 0.5f;
  F fs[] = {roof1, s8, s4, s4full, s2r};
  const char *names[] = {"roof1", "s8", "s4", "s4full", "s2"};
  int K = sizeof(fs) / sizeof(fs[0]); double v[8][41];
  for (int r = 0; r < 41; r++) for (int k = 0; k < K; k++) { double t = now(); fs[k](x, n, d, sh, sb, sg); v[k][r] = now() - t; }
  for (int k = 0; k < K; k++) { double *a = v[k]; for (int i = 0; i < 41; i++) for (int j = i+1; j < 41; j++) if (a[j] < a[i]) { double s = a[i]; a[i] = a[j]; a[j] = s; }
    printf("%-9s %.3f ms (min %.3f)\n", names[k], a[20] * 1e3, a[0] * 1e3); }
}
