#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifndef T
#define T float
#endif
#define CB (4096 / sizeof(T))
typedef void (*F)(const T*, const T*, long, long, const T*, double*, double*);
/* current kernel (8-row groups, stride-1 for wide rows, column blocks of 4 KB) */
__attribute__((noinline)) void k_orig(const T *restrict dout, const T *restrict x, long n, long d, const T *restrict mean, double *restrict sb, double *restrict sg) {
  long D = d; for (long j = 0; j < d; j++) { sb[j] = 0; sg[j] = 0; }
  for (long j0 = 0; j0 < d; j0 += CB) { long w = CB < d - j0 ? CB : d - j0;
    for (long i = 0; i + 8 <= n; i += 8) { const T *xr = x + i * d + j0, *dr = dout + i * d + j0;
      for (long j = 0; j < w; j++) { T mj = mean[j0 + j];
        sb[j0+j] += (double)(((dr[j] + dr[j+D]) + (dr[j+2*D] + dr[j+3*D])) + ((dr[j+4*D] + dr[j+5*D]) + (dr[j+6*D] + dr[j+7*D])));
        sg[j0+j] += (double)(((dr[j]*(xr[j]-mj) + dr[j+D]*(xr[j+D]-mj)) + (dr[j+2*D]*(xr[j+2*D]-mj) + dr[j+3*D]*(xr[j+3*D]-mj)))
                 + ((dr[j+4*D]*(xr[j+4*D]-mj) + dr[j+5*D]*(xr[j+5*D]-mj)) + (dr[j+6*D]*(xr[j+6*D]-mj) + dr[j+7*D]*(xr[j+7*D]-mj)))); } } } }
__attribute__((noinline)) void roof(const T *restrict dout, const T *restrict x, long n, long d, const T *restrict mean, double *restrict sb, double *restrict sg) {
  T s = 0; long m = n * d;
  #pragma omp simd reduction(+:s)
  for (long i = 0; i < m; i++) s += dout[i] + x[i];
  sb[0] = s; }
static T tb[1 << 16] __attribute__((aligned(64))), tg[1 << 16] __attribute__((aligned(64)));
/* one row at a time over the full width (2 sequential streams): G rows summed in array-precision temporaries, sequentially, then into double */
#define SEQ(NAME, G) \
__attribute__((noinline)) void NAME(const T *restrict dout, const T *restrict x, long n, long d, const T *restrict mean, double *restrict sb, double *restrict sg) { \
  T *restrict b = tb, *restrict g = tg; for (long j = 0; j < d; j++) { sb[j] = 0; sg[j] = 0; } \
  for (long i = 0; i + G <= n; i += G) { \
    { const T *restrict xr = x + i * d, *restrict dr = dout + i * d; for (long j = 0; j < d; j++) { b[j] = dr[j]; g[j] = dr[j] * (xr[j] - mean[j]); } } \
    for (long q = 1; q < G - 1; q++) { const T *restrict xr = x + (i + q) * d, *restrict dr = dout + (i + q) * d; \
      for (long j = 0; j < d; j++) { b[j] = b[j] + dr[j]; g[j] = g[j] + dr[j] * (xr[j] - mean[j]); } } \
    { const T *restrict xr = x + (i + G - 1) * d, *restrict dr = dout + (i + G - 1) * d; \
      for (long j = 0; j < d; j++) { sb[j] += (double)(b[j] + dr[j]); sg[j] += (double)(g[j] + dr[j] * (xr[j] - mean[j])); } } } }
SEQ(seq8, 8)
SEQ(seq16, 16)
/* the same, in column blocks of CBW elements: for each block the group's rows one after another */
#define SEQCB(NAME, G, CBW) \
__attribute__((noinline)) void NAME(const T *restrict dout, const T *restrict x, long n, long d, const T *restrict mean, double *restrict sb, double *restrict sg) { \
  T *restrict b = tb, *restrict g = tg; for (long j = 0; j < d; j++) { sb[j] = 0; sg[j] = 0; } \
  for (long i = 0; i + G <= n; i += G) for (long j0 = 0; j0 < d; j0 += CBW) { long w = CBW < d - j0 ? CBW : d - j0; \
    const T *restrict mm = mean + j0; \
    { const T *restrict xr = x + i * d + j0, *restrict dr = dout + i * d + j0; for (long j = 0; j < w; j++) { b[j] = dr[j]; g[j] = dr[j] * (xr[j] - mm[j]); } } \
    for (long q = 1; q < G - 1; q++) { const T *restrict xr = x + (i + q) * d + j0, *restrict dr = dout + (i + q) * d + j0; \
      for (long j = 0; j < w; j++) { b[j] = b[j] + dr[j]; g[j] = g[j] + dr[j] * (xr[j] - mm[j]); } } \
    { const T *restrict xr = x + (i + G - 1) * d + j0, *restrict dr = dout + (i + G - 1) * d + j0; double *restrict ab = sb + j0, *restrict ag = sg + j0; \
      for (long j = 0; j < w; j++) { ab[j] += (double)(b[j] + dr[j]); ag[j] += (double)(g[j] + dr[j] * (xr[j] - mm[j])); } } } }
SEQCB(seq8cb1k, 8, 1024)
SEQCB(seq8cb2k, 8, 2048)
/* two rows at a time (4 sequential streams), pair sums accumulated in temporaries */
__attribute__((noinline)) void pair8(const T *restrict dout, const T *restrict x, long n, long d, const T *restrict mean, double *restrict sb, double *restrict sg) {
  T *restrict b = tb, *restrict g = tg; for (long j = 0; j < d; j++) { sb[j] = 0; sg[j] = 0; }
  for (long i = 0; i + 8 <= n; i += 8) {
    for (long q = 0; q < 8; q += 2) { const T *restrict x0 = x + (i + q) * d, *restrict x1 = x0 + d, *restrict d0 = dout + (i + q) * d, *restrict d1 = d0 + d;
      if (q == 0) for (long j = 0; j < d; j++) { T m = mean[j]; b[j] = d0[j] + d1[j]; g[j] = d0[j]*(x0[j]-m) + d1[j]*(x1[j]-m); }
      else if (q < 6) for (long j = 0; j < d; j++) { T m = mean[j]; b[j] = b[j] + (d0[j] + d1[j]); g[j] = g[j] + (d0[j]*(x0[j]-m) + d1[j]*(x1[j]-m)); }
      else for (long j = 0; j < d; j++) { T m = mean[j]; sb[j] += (double)(b[j] + (d0[j] + d1[j])); sg[j] += (double)(g[j] + (d0[j]*(x0[j]-m) + d1[j]*(x1[j]-m))); } } } }
/* row by row straight into double (NumPy's pattern) */
__attribute__((noinline)) void dbl(const T *restrict dout, const T *restrict x, long n, long d, const T *restrict mean, double *restrict sb, double *restrict sg) {
  for (long j = 0; j < d; j++) { sb[j] = 0; sg[j] = 0; }
  for (long i = 0; i < n; i++) { const T *restrict xr = x + i * d, *restrict dr = dout + i * d;
    for (long j = 0; j < d; j++) { sb[j] += (double)dr[j]; sg[j] += (double)(dr[j] * (xr[j] - mean[j])); } } }

__attribute__((noinline)) void racc1(const T *restrict dout, const T *restrict x, long n, long d, const T *restrict mean, double *restrict sb, double *restrict sg) {
  T *restrict b = tb; for (long j = 0; j < d; j++) b[j] = 0;
  for (long i = 0; i < n; i++) { const T *restrict xr = x + i * d, *restrict dr = dout + i * d;
    for (long j = 0; j < d; j++) b[j] = b[j] + (dr[j] + xr[j]); } sb[0] = b[0]; }
__attribute__((noinline)) void racc2(const T *restrict dout, const T *restrict x, long n, long d, const T *restrict mean, double *restrict sb, double *restrict sg) {
  T *restrict b = tb, *restrict g = tg; for (long j = 0; j < d; j++) { b[j] = 0; g[j] = 0; }
  for (long i = 0; i < n; i++) { const T *restrict xr = x + i * d, *restrict dr = dout + i * d;
    for (long j = 0; j < d; j++) { b[j] = b[j] + dr[j]; g[j] = g[j] + dr[j] * (xr[j] - mean[j]); } } sb[0] = b[0]; sg[0] = g[0]; }
__attribute__((noinline)) void racc2cb(const T *restrict dout, const T *restrict x, long n, long d, const T *restrict mean, double *restrict sb, double *restrict sg) {
  T *restrict b = tb, *restrict g = tg; for (long j = 0; j < d; j++) { b[j] = 0; g[j] = 0; }
  for (long j0 = 0; j0 < d; j0 += 1024) { long w = 1024 < d - j0 ? 1024 : d - j0;
  for (long i = 0; i < n; i++) { const T *restrict xr = x + i * d + j0, *restrict dr = dout + i * d + j0; const T *restrict mm = mean + j0; T *restrict bb = b + j0, *restrict gg = g + j0;
    for (long j = 0; j < w; j++) { bb[j] = bb[j] + dr[j]; gg[j] = gg[j] + dr[j] * (xr[j] - mm[j]); } } } sb[0] = b[0]; sg[0] = g[0]; }
/* read only, one row at a time, reduction into registers per row */
__attribute__((noinline)) void rreg(const T *restrict dout, const T *restrict x, long n, long d, const T *restrict mean, double *restrict sb, double *restrict sg) {
  T s = 0; for (long i = 0; i < n; i++) { const T *restrict xr = x + i * d, *restrict dr = dout + i * d;
  #pragma omp simd reduction(+:s)
  for (long j = 0; j < d; j++) s += dr[j] * (xr[j] - mean[j]); } sb[0] = s; }

#define STRIP(NAME, W, R) \
__attribute__((noinline)) void NAME(const T *restrict dout, const T *restrict x, long n, long d, const T *restrict mean, double *restrict sb, double *restrict sg) { \
  for (long c0 = 0; c0 < n; c0 += R) { long ce = c0 + R < n ? c0 + R : n; \
  for (long j0 = 0; j0 + W <= d; j0 += W) { double ab[W], ag[W]; T mm[W]; \
    for (int j = 0; j < W; j++) { ab[j] = 0; ag[j] = 0; mm[j] = mean[j0 + j]; } \
    for (long i = c0; i < ce; i++) { const T *restrict xr = x + i * d + j0, *restrict dr = dout + i * d + j0; \
      for (int j = 0; j < W; j++) { ab[j] += (double)dr[j]; ag[j] += (double)(dr[j] * (xr[j] - mm[j])); } } \
    for (int j = 0; j < W; j++) { sb[j0 + j] += ab[j]; sg[j0 + j] += ag[j]; } } } }
STRIP(strip16, 16, 128)
STRIP(strip32, 32, 128)
STRIP(strip64, 64, 128)
STRIP(strip32r1k, 32, 1024)
STRIP(strip32r32, 32, 32)
#define KR4(NAME, CBW) \
__attribute__((noinline)) void NAME(const T *restrict dout, const T *restrict x, long n, long d, const T *restrict mean, double *restrict sb, double *restrict sg) { \
  long D = d; for (long j = 0; j < d; j++) { sb[j] = 0; sg[j] = 0; } \
  for (long j0 = 0; j0 < d; j0 += CBW) { long w = CBW < d - j0 ? CBW : d - j0; \
    for (long i = 0; i + 4 <= n; i += 4) { const T *restrict xr = x + i * d + j0, *restrict dr = dout + i * d + j0; \
      for (long j = 0; j < w; j++) { T mj = mean[j0 + j]; \
        sb[j0+j] += (double)((dr[j] + dr[j+D]) + (dr[j+2*D] + dr[j+3*D])); \
        sg[j0+j] += (double)((dr[j]*(xr[j]-mj) + dr[j+D]*(xr[j+D]-mj)) + (dr[j+2*D]*(xr[j+2*D]-mj) + dr[j+3*D]*(xr[j+3*D]-mj))); } } } }
KR4(k4, CB)
KR4(k4full, 1 << 20)
#define KR8(NAME, CBW) \
__attribute__((noinline)) void NAME(const T *restrict dout, const T *restrict x, long n, long d, const T *restrict mean, double *restrict sb, double *restrict sg) { \
  long D = d; for (long j = 0; j < d; j++) { sb[j] = 0; sg[j] = 0; } \
  for (long j0 = 0; j0 < d; j0 += CBW) { long w = CBW < d - j0 ? CBW : d - j0; \
    for (long i = 0; i + 8 <= n; i += 8) { const T *xr = x + i * d + j0, *dr = dout + i * d + j0; \
      for (long j = 0; j < w; j++) { T mj = mean[j0 + j]; \
        sb[j0+j] += (double)(((dr[j] + dr[j+D]) + (dr[j+2*D] + dr[j+3*D])) + ((dr[j+4*D] + dr[j+5*D]) + (dr[j+6*D] + dr[j+7*D]))); \
        sg[j0+j] += (double)(((dr[j]*(xr[j]-mj) + dr[j+D]*(xr[j+D]-mj)) + (dr[j+2*D]*(xr[j+2*D]-mj) + dr[j+3*D]*(xr[j+3*D]-mj))) \
                 + ((dr[j+4*D]*(xr[j+4*D]-mj) + dr[j+5*D]*(xr[j+5*D]-mj)) + (dr[j+6*D]*(xr[j+6*D]-mj) + dr[j+7*D]*(xr[j+7*D]-mj)))); } } } }
KR8(k8full, 1 << 20)
KR8(k8cb256, 256)
/* 2 rows, direct double */
__attribute__((noinline)) void k2(const T *restrict dout, const T *restrict x, long n, long d, const T *restrict mean, double *restrict sb, double *restrict sg) {
  long D = d; for (long j = 0; j < d; j++) { sb[j] = 0; sg[j] = 0; }
    for (long i = 0; i + 2 <= n; i += 2) { const T *restrict xr = x + i * d, *restrict dr = dout + i * d;
      for (long j = 0; j < d; j++) { T mj = mean[j];
        sb[j] += (double)(dr[j] + dr[j+D]); sg[j] += (double)(dr[j]*(xr[j]-mj) + dr[j+D]*(xr[j+D]-mj)); } } }
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
int main(int argc, char **argv) {
  long n = atol(argv[1]), d = atol(argv[2]);
  T *x = (T*)((char*)aligned_alloc(64, n*d*sizeof(T) + 128) + 16), *dout = (T*)((char*)aligned_alloc(64, n*d*sizeof(T) + 128) + 16);
  T *mean = aligned_alloc(64, d * sizeof(T)); double *sb = aligned_alloc(64, d * 8), *sg = aligned_alloc(64, d * 8);
  for (long i = 0; i < n*d; i++) { x[i] = (i % 97) * 0.01f; dout[i] = (i % 89) * 0.02f; }
  for (long j = 0; j < d; j++) mean[j] = 0.5f;
  /* argv[3]: "groups" (other groupings of the same sums) or "patterns" (other access patterns) */
  int groups = argc > 3 && argv[3][0] == 'g';
  F fg[] = {k4, k4full, k8full, k8cb256, k2, roof, k_orig, seq8, seq16, seq8cb1k, seq8cb2k, pair8, dbl};
  const char *ng[] = {"k4", "k4full", "k8full", "k8cb256", "k2", "roof", "kernel", "seq8", "seq16", "seq8cb1k", "seq8cb2k", "pair8", "dbl"};
  F fp[] = {strip16, strip32, strip64, strip32r1k, strip32r32, racc1, racc2, racc2cb, rreg, roof, k_orig, seq8, seq16, seq8cb1k, seq8cb2k, pair8, dbl};
  const char *np_[] = {"strip16", "strip32", "strip64", "strip32r1k", "strip32r32", "racc1", "racc2", "racc2cb", "rreg", "roof", "kernel", "seq8", "seq16", "seq8cb1k", "seq8cb2k", "pair8", "dbl"};
  F *fs = groups ? fg : fp; const char **names = groups ? ng : np_;
  int K = groups ? (int)(sizeof(fg) / sizeof(fg[0])) : (int)(sizeof(fp) / sizeof(fp[0])); double v[24][41];
  for (int r = 0; r < 41; r++) for (int k = 0; k < K; k++) { double t = now(); fs[k](dout, x, n, d, mean, sb, sg); v[k][r] = now() - t; }
  for (int k = 0; k < K; k++) { double *a = v[k]; for (int i = 0; i < 41; i++) for (int j = i+1; j < 41; j++) if (a[j] < a[i]) { double s = a[i]; a[i] = a[j]; a[j] = s; }
    printf("%-9s %.3f ms (min %.3f)\n", names[k], a[20] * 1e3, a[0] * 1e3); }
}
