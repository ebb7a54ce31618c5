"""Type stubs of fastopt._mlp_kernels_avx512: the kernels of fastopt._mlp_kernels built with other instruction sets (tools/gen_stubs.py)."""
from ._mlp_kernels import *
