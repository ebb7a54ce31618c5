"""Type stubs of fastopt._norm_kernels_avx512: the kernels of fastopt._norm_kernels built with other instruction sets (tools/gen_stubs.py)."""
from ._norm_kernels import *
