"""Type stubs of fastopt._optim_kernels_avx512: the kernels of fastopt._optim_kernels built with other instruction sets (tools/gen_stubs.py)."""
from ._optim_kernels import *
