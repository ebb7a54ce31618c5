#include <stdio.h>
#include <stdlib.h>
#include <time.h>
typedef long Py_ssize_t;
#ifndef T
#define T float
#endif
#define CBW (4096 / sizeof(T))
Py_ssize_t gst = 1;
static inline Py_ssize_t mn(Py_ssize_t a, Py_ssize_t b) { return a < b ? a : b; }
/* Cython-like: no restrict anywhere, column-block loop around */
__attribute__((noinline)) void cy(const T *dout, const T *x, Py_ssize_t n, Py_ssize_t d, const T *mean, double *sb, double *sg) {
  Py_ssize_t st = gst, D = st * d, i, j, j0, w, p; const T *xr, *dr; T mj;
  for (j = 0; j < d; j++) { sb[j] = 0; sg[j] = 0; }
  j0 = 0;
  while (j0 < d) { w = mn(CBW, d - j0); i = 0;
    while (i + 8 * st <= n) { for (p = 0; p < st; p++) { xr = x + (i + p) * d + j0; dr = dout + (i + p) * d + j0;
        for (j = 0; j < w; j++) { mj = mean[j0 + j];
          sb[j0 + j] += (double)(((dr[j] + dr[j + D]) + (dr[j + 2 * D] + dr[j + 3 * D])) + ((dr[j + 4 * D] + dr[j + 5 * D]) + (dr[j + 6 * D] + dr[j + 7 * D])));
          sg[j0 + j] += (double)(((dr[j] * (xr[j] - mj) + dr[j + D] * (xr[j + D] - mj)) + (dr[j + 2 * D] * (xr[j + 2 * D] - mj) + dr[j + 3 * D] * (xr[j + 3 * D] - mj)))
                         + ((dr[j + 4 * D] * (xr[j + 4 * D] - mj) + dr[j + 5 * D] * (xr[j + 5 * D] - mj)) + (dr[j + 6 * D] * (xr[j + 6 * D] - mj) + dr[j + 7 * D] * (xr[j + 7 * D] - mj)))); } }
      i += 8 * st; }
    j0 += w; } }
#define HELPER(NAME, RX) \
static void NAME##_block(const T *restrict dout, const T *restrict x, Py_ssize_t n, Py_ssize_t d, Py_ssize_t st, Py_ssize_t w, const T *restrict m, double *restrict sb, double *restrict sg) { \
  Py_ssize_t D = st * d, i = 0; \
  for (; i + 8 * st <= n; i += 8 * st) \
    for (Py_ssize_t p = 0; p < st; p++) { const T *RX xr = x + (i + p) * d, *RX dr = dout + (i + p) * d; \
      for (Py_ssize_t j = 0; j < w; j++) { T mj = m[j]; \
        sb[j] += (double)(((dr[j] + dr[j + D]) + (dr[j + 2 * D] + dr[j + 3 * D])) + ((dr[j + 4 * D] + dr[j + 5 * D]) + (dr[j + 6 * D] + dr[j + 7 * D]))); \
        sg[j] += (double)(((dr[j] * (xr[j] - mj) + dr[j + D] * (xr[j + D] - mj)) + (dr[j + 2 * D] * (xr[j + 2 * D] - mj) + dr[j + 3 * D] * (xr[j + 3 * D] - mj))) \
                         + ((dr[j + 4 * D] * (xr[j + 4 * D] - mj) + dr[j + 5 * D] * (xr[j + 5 * D] - mj)) + (dr[j + 6 * D] * (xr[j + 6 * D] - mj) + dr[j + 7 * D] * (xr[j + 7 * D] - mj)))); } } } \
__attribute__((noinline)) void NAME(const T *dout, const T *x, Py_ssize_t n, Py_ssize_t d, const T *mean, double *sb, double *sg) { \
  for (Py_ssize_t j = 0; j < d; j++) { sb[j] = 0; sg[j] = 0; } \
  for (Py_ssize_t j0 = 0; j0 < d; j0 += CBW) NAME##_block(dout + j0, x + j0, n, d, gst, mn(CBW, d - j0), mean + j0, sb + j0, sg + j0); }
HELPER(hr, restrict)
HELPER(hn, )
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
typedef void (*F)(const T*, const T*, Py_ssize_t, Py_ssize_t, const T*, double*, double*);
int main(int argc, char **argv) {
  long n = atol(argv[1]), d = atol(argv[2]); gst = argc > 3 ? atol(argv[3]) : 1;
  T *x = (T*)((char*)aligned_alloc(64, n*d*sizeof(T) + 128) + 16), *dout = (T*)((char*)aligned_alloc(64, n*d*sizeof(T) + 128) + 16);
  T *mean = aligned_alloc(64, d * sizeof(T)); double *sb = aligned_alloc(64, d * 8), *sg = aligned_alloc(64, d * 8);
  for (long i = 0; i < n*d; i++) { x[i] = (i % 97) * 0.01f; dout[i] = (i % 89) * 0.02f; }
  for (long j = 0; j < d; j++) mean[j] = 0.5f;
  F fs[] = {hr, hn, cy}; const char *names[] = {"hr", "hn", "cy"};
  int K = 3; double v[3][61];
  for (int r = 0; r < 61; r++) for (int k = 0; k < K; k++) { double t = now(); fs[k](dout, x, n, d, mean, sb, sg); v[k][r] = now() - t; }
  for (int k = 0; k < K; k++) { double *a = v[k]; for (int i = 0; i < 61; i++) for (int j = i+1; j < 61; j++) if (a[j] < a[i]) { double s = a[i]; a[i] = a[j]; a[j] = s; }
    printf("%-4s %.3f ms (min %.3f)\n", names[k], a[30] * 1e3, a[0] * 1e3); }
}
