# The MLP kernels compiled with -mavx2 -mfma (setup.py builds this module only on x86-64 with
# gcc/clang). Same code as the baseline: _mlp_kernels.pxi. Import it only on a CPU with AVX2 and
# FMA (fastopt._backend.kernels checks); elsewhere its first vector instruction would fault.
SIMD_VARIANT = "avx2"
include "_mlp_kernels.pxi"
