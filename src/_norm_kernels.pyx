# The norm kernels, portable baseline build (SSE2 on x86-64; what a wheel may assume).
# The kernel code lives in _norm_kernels.pxi, shared with _norm_kernels_avx2.pyx; setup.py compiles
# that twin with -mavx2 -mfma and fastopt._backend.kernels("norm") picks it when the CPU has both.
SIMD_VARIANT = "sse2"
include "_norm_kernels.pxi"
include "_groupnorm_kernels.pxi"
