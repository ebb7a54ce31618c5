# The optim kernels, portable baseline build (SSE2 on x86-64; what a wheel may assume).
# The kernel code lives in _optim_kernels.pxi, shared with _optim_kernels_avx2.pyx; setup.py compiles
# that twin with -mavx2 -mfma and fastopt._backend.kernels("optim") picks it when the CPU has both.
SIMD_VARIANT = "sse2"
include "_optim_kernels.pxi"
