"""Type stubs of fastopt._dropout_kernels_avx512: the kernels of fastopt._dropout_kernels built with other instruction sets (tools/gen_stubs.py)."""
from ._dropout_kernels import *
