# The dropout kernels, portable baseline build (SSE2 on x86-64). The code lives in
# _dropout_kernels.pxi, shared with the _avx2 and _avx512 variants (setup.py, fastopt._backend).
SIMD_VARIANT = "sse2"
include "_dropout_kernels.pxi"
