# The MLP kernels, portable baseline build (SSE2 on x86-64; what a wheel may assume).
# The kernel code lives in _mlp_kernels.pxi, shared with _mlp_kernels_avx2.pyx; setup.py compiles
# that twin with -mavx2 -mfma and fastopt._backend.kernels("mlp") picks it when the CPU has both.
SIMD_VARIANT = "sse2"
include "_mlp_kernels.pxi"
