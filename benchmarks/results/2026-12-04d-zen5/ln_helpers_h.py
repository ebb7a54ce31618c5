"""Write ln.h: the C helpers of src/_norm_kernels.pxi (its first two verbatim blocks), for ln_narrow_backward.c.

    python benchmarks/results/2026-12-04d-zen5/ln_helpers_h.py src/_norm_kernels.pxi > ln.h
"""
import re
import sys

s = open(sys.argv[1]).read()
blocks = re.findall(r'cdef extern from \*:\n    """\n(.*?)\n    """', s, re.S)
print("#include <stddef.h>\n#include <math.h>\ntypedef long Py_ssize_t;")
for b in blocks[:2]:
    print(b.replace('\\\\\n', '\\\n'))
