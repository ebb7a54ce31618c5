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
__attribute__((noinline)) double roof16(const T *restrict dout, const T *restrict x, long n, long d, const T *restrict mean, double *restrict sb, double *restrict sg) {
  /* the kernel's access pattern (8-row groups, 1024-column blocks, x and dout) with one add per element into float accumulators */
  long D = d; float *acc = (float*)sg; for (long j = 0; j < d; j++) acc[j] = 0;
  for (long j0 = 0; j0 < d; j0 += CB) { long w = CB < d - j0 ? CB : d - j0;
    for (long i = 0; i + 8 <= n; i += 8) { const T *xr = x + i * d + j0, *dr = dout + i * d + j0;
      for (long j = 0; j < w; j++) acc[j0+j] += ((dr[j] + dr[j+D]) + (dr[j+2*D] + dr[j+3*D])) + ((dr[j+4*D] + dr[j+5*D]) + (dr[j+6*D] + dr[j+7*D]))
          + ((xr[j] + xr[j+D]) + (xr[j+2*D] + xr[j+3*D])) + ((xr[j+4*D] + xr[j+5*D]) + (xr[j+6*D] + xr[j+7*D])); } }
  return acc[0]; }
/* the same sums, rows streamed two at a time: per column the 8-row tree ((v0+v1)+(v2+v3))+((v4+v5)+(v6+v7)) is built in
   temporaries A (left half) and B (right half), so the same bits */
__attribute__((noinline)) void g_pairs(const T *restrict dout, const T *restrict x, long n, long d, const T *restrict mean, double *restrict sb, double *restrict sg) {
  static float tA[2][PCB] __attribute__((aligned(64))), tB[2][PCB] __attribute__((aligned(64)));
  for (long j = 0; j < d; j++) { sb[j] = 0; sg[j] = 0; }
  for (long j0 = 0; j0 < d; j0 += PCB) { long w = PCB < d - j0 ? PCB : d - j0;
    const T *restrict mm = mean + j0; double *restrict ab = sb + j0, *restrict ag = sg + j0;
    float *restrict Ab = tA[0], *restrict Ag = tA[1], *restrict Bb = tB[0], *restrict Bg = tB[1];
    for (long i = 0; i + 8 <= n; i += 8) {
      for (int q = 0; q < 4; q++) {
        const T *restrict x0 = x + (i + 2*q) * d + j0, *restrict x1 = x0 + d, *restrict d0 = dout + (i + 2*q) * d + j0, *restrict d1 = d0 + d;
        if (q == 0) for (long j = 0; j < w; j++) { T m = mm[j]; Ab[j] = d0[j] + d1[j]; Ag[j] = d0[j]*(x0[j]-m) + d1[j]*(x1[j]-m); }
        else if (q == 1) for (long j = 0; j < w; j++) { T m = mm[j]; Ab[j] = Ab[j] + (d0[j] + d1[j]); Ag[j] = Ag[j] + (d0[j]*(x0[j]-m) + d1[j]*(x1[j]-m)); }
        else if (q == 2) for (long j = 0; j < w; j++) { T m = mm[j]; Bb[j] = d0[j] + d1[j]; Bg[j] = d0[j]*(x0[j]-m) + d1[j]*(x1[j]-m); }
        else for (long j = 0; j < w; j++) { T m = mm[j];
            ab[j] += (double)(Ab[j] + (Bb[j] + (d0[j] + d1[j])));
            ag[j] += (double)(Ag[j] + (Bg[j] + (d0[j]*(x0[j]-m) + d1[j]*(x1[j]-m)))); }
      } } } }
/* one row at a time (2 streams): the 8-row tree ((v0+v1)+(v2+v3))+((v4+v5)+(v6+v7)) built in per-column
   temporaries: A = v0; A += v1; B = v2; B += v3; A += B; B = v4; B += v5; C = v6; C += v7; B += C; acc += A + B */
__attribute__((noinline)) void g_rows(const T *restrict dout, const T *restrict x, long n, long d, const T *restrict mean, double *restrict sb, double *restrict sg) {
  static float t[6][RCB] __attribute__((aligned(64)));
  float *restrict Ab = t[0], *restrict Bb = t[1], *restrict Cb = t[2], *restrict Ag = t[3], *restrict Bg = t[4], *restrict Cg = t[5];
  for (long j = 0; j < d; j++) { sb[j] = 0; sg[j] = 0; }
  for (long j0 = 0; j0 < d; j0 += RCB) { long w = RCB < d - j0 ? RCB : d - j0;
    const T *restrict mm = mean + j0; double *restrict ab = sb + j0, *restrict ag = sg + j0;
    for (long i = 0; i + 8 <= n; i += 8) {
      for (int q = 0; q < 8; q++) {
        const T *restrict xr = x + (i + q) * d + j0, *restrict dr = dout + (i + q) * d + j0;
        switch (q) {
        case 0: for (long j = 0; j < w; j++) { Ab[j] = dr[j]; Ag[j] = dr[j] * (xr[j] - mm[j]); } break;
        case 1: for (long j = 0; j < w; j++) { Ab[j] = Ab[j] + dr[j]; Ag[j] = Ag[j] + dr[j] * (xr[j] - mm[j]); } break;
        case 2: for (long j = 0; j < w; j++) { Bb[j] = dr[j]; Bg[j] = dr[j] * (xr[j] - mm[j]); } break;
        case 3: for (long j = 0; j < w; j++) { Ab[j] = Ab[j] + (Bb[j] + dr[j]); Ag[j] = Ag[j] + (Bg[j] + dr[j] * (xr[j] - mm[j])); } break;
        case 4: for (long j = 0; j < w; j++) { Bb[j] = dr[j]; Bg[j] = dr[j] * (xr[j] - mm[j]); } break;
        case 5: for (long j = 0; j < w; j++) { Bb[j] = Bb[j] + dr[j]; Bg[j] = Bg[j] + dr[j] * (xr[j] - mm[j]); } break;
        case 6: for (long j = 0; j < w; j++) { Cb[j] = dr[j]; Cg[j] = dr[j] * (xr[j] - mm[j]); } break;
        default: for (long j = 0; j < w; j++) {
            ab[j] += (double)(Ab[j] + (Bb[j] + (Cb[j] + dr[j])));
            ag[j] += (double)(Ag[j] + (Bg[j] + (Cg[j] + dr[j] * (xr[j] - mm[j])))); }
        } } } } }
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
typedef void (*F)(const T*, const T*, long, long, const T*, double*, double*);
int main(int argc, char **argv) {
  long n = atol(argv[1]), d = atol(argv[2]);
  T *x = (T*)((char*)aligned_alloc(64, n*d*4 + 128) + 16), *dout = (T*)((char*)aligned_alloc(64, n*d*4 + 128) + 16);
  T *mean = aligned_alloc(64, d * 4); double *sb = aligned_alloc(64, d * 8), *sg = aligned_alloc(64, d * 8);
  for (long i = 0; i < n*d; i++) { x[i] = (i % 97) * 0.01f; dout[i] = (i % 89) * 0.02f; }
  for (long j = 0; j < d; j++) mean[j] = 0.5f;
  F fs[] = {(F)roof, (F)roof16, g_orig, g_pairs, g_rows}; const char *names[] = {"roof", "roof16", "kernel", "pairs", "rows"};
  double v[5][31];
  for (int r = 0; r < 31; r++) for (int k = 0; k < 5; k++) { double t = now(); fs[k](dout, x, n, d, mean, sb, sg); v[k][r] = now() - t; }
  for (int k = 0; k < 5; k++) { double *a = v[k]; for (int i = 0; i < 31; i++) for (int j = i+1; j < 31; j++) if (a[j] < a[i]) { double s = a[i]; a[i] = a[j]; a[j] = s; }
    printf("%-9s %.3f ms (min %.3f)\n", names[k], a[15] * 1e3, a[0] * 1e3); }
  /* bitwise check */
  double *b1 = malloc(d*8), *b2 = malloc(d*8), *b3 = malloc(d*8), *b4 = malloc(d*8);
  g_orig(dout, x, n, d, mean, b1, b2); g_rows(dout, x, n, d, mean, b3, b4);
  long bad = 0; for (long j = 0; j < d; j++) bad += (b1[j] != b3[j]) + (b2[j] != b4[j]);
  printf("mismatches %ld\n", bad);
}
