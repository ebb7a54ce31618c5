# The dropout kernels compiled with AVX-512 F/BW/DQ/VL (setup.py): the same code as the baseline
# (_dropout_kernels.pxi) and the same bits; Philox's 16 lanes are one 512-bit vector. Import only
# on a CPU with AVX-512 (fastopt._backend checks).
SIMD_VARIANT = "avx512"
include "_dropout_kernels.pxi"
