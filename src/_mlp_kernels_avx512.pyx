# The MLP kernels compiled with AVX-512 F/BW/DQ/VL, 512-bit vectors (setup.py builds this module
# only on x86-64 with gcc/clang). Same code as the baseline: _mlp_kernels.pxi, and the same bits
# (-ffp-contract=off, no fast-math). Import it only on a CPU with AVX-512 (fastopt._backend.kernels
# checks); elsewhere its first vector instruction would fault.
SIMD_VARIANT = "avx512"
include "_mlp_kernels.pxi"
