#include <stdio.h>
#include <stdlib.h>
#include <time.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
__attribute__((noinline)) float sum2(const float *restrict a, const float *restrict b, long m) { float s = 0;
  #pragma omp simd reduction(+:s)
  for (long i = 0; i < m; i++) s += a[i] + b[i];
  return s; }
__attribute__((noinline)) void wr(const float *restrict a, const float *restrict b, float *restrict o, long m, float c) {
  #pragma omp simd
  for (long i = 0; i < m; i++) o[i] = a[i] + b[i] + c; }
int main(int argc, char **argv) {
  long n = atol(argv[1]), d = atol(argv[2]), m = n * d, B = 16384;
  float *x = (float*)((char*)aligned_alloc(64, m*4 + 128) + 16), *dout = (float*)((char*)aligned_alloc(64, m*4 + 128) + 16), *dx = (float*)((char*)aligned_alloc(64, m*4 + 128) + 16);
  float *x2 = (float*)((char*)aligned_alloc(64, m*4 + 128) + 16);
  for (long i = 0; i < m; i++) { x[i] = i % 7; dout[i] = i % 5; dx[i] = 0; x2[i] = 1; }
  double tf[41], tr[41]; float s = 0;
  for (int r = 0; r < 41; r++) {
    double t0 = now();
    for (long b = 0; b < m; b += B) s += sum2(dout + b, x + b, B);
    for (long b = 0; b < m; b += B) wr(dout + b, x + b, dx + b, B, s * 1e-30f);
    double t1 = now();
    for (long b = 0; b < m; b += B) s += sum2(x2 + b, x2 + b, B);   /* evict */
    double t2 = now();
    for (long b = 0; b < m; b += B) s += sum2(dout + b, x + b, B);
    for (long b = m - B; b >= 0; b -= B) wr(dout + b, x + b, dx + b, B, s * 1e-30f);
    double t3 = now();
    for (long b = 0; b < m; b += B) s += sum2(x2 + b, x2 + b, B);
    tf[r] = t1 - t0; tr[r] = t3 - t2;
  }
  for (int i = 0; i < 41; i++) for (int j = i + 1; j < 41; j++) { if (tf[j] < tf[i]) { double q = tf[i]; tf[i] = tf[j]; tf[j] = q; } if (tr[j] < tr[i]) { double q = tr[i]; tr[i] = tr[j]; tr[j] = q; } }
  printf("%ldx%ld bwd pattern: forward-forward %.3f ms, forward-reverse %.3f ms (%.2fx)  [%g]\n", n, d, tf[20]*1e3, tr[20]*1e3, tf[20]/tr[20], s);
}
