"""The update/weight ratio's error bound, derived in src/_rule_cores.h (fo_fpart): float32 squares
are summed in float over FO_KF = 8 blocks of 16 elements, then in double, so the ratio's relative
error is <= (FO_KF + 1) * 2**-24 + n * 2**-53 on a tensor of n elements; float64 sums in double
lanes, whose n * 2**-53 stays under 1e-10 at the tests' sizes."""
import numpy as np

FO_KF = 8


def ratio_rel(dtype, n):
    """The relative tolerance of a compiled ratio of an n-element tensor of `dtype` against an exact one."""
    return (FO_KF + 1) * 2.0 ** -24 + n * 2.0 ** -53 if np.dtype(dtype) == np.float32 else 1e-10
