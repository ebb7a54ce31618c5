# The dropout kernels compiled with -mavx2 -mfma (setup.py): the same code as the baseline
# (_dropout_kernels.pxi) and the same bits. Import only on a CPU with AVX2 and FMA (fastopt._backend).
SIMD_VARIANT = "avx2"
include "_dropout_kernels.pxi"
