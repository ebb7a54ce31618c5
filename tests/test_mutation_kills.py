"""Tests written to kill mutants that survived the mutation run (MUTATION.md lists them).

Each test names the behaviour it pins; together with tests elsewhere they make a mutant of the
checked code fail at least one test.
"""
import numpy as np
import pytest

from fastopt import _openmp
from fastopt import _optim_kernels as K
from fastopt.reference import optim as R


def _variants():
    mods = [K]
    if _openmp.cpu_has_avx2_fma():
        try:
            from fastopt import _optim_kernels_avx2
        except ImportError:
            pass
        else:
            mods.append(_optim_kernels_avx2)
    return mods + [R]


MODULES = _variants()
MOD_IDS = [getattr(m, "SIMD_VARIANT", "twin") for m in MODULES]

# kernel: (buffer names after param, grad; scalars with every option on; scalars with every
# optional buffer unused; which buffers are optional)
KERNELS = {
    "sgd_step": (["momentum_buffer"], [0.1, 0.01, 0.9, 0.1, True, False, False],
                 [0.1, 0.0, 0.0, 0.0, False, False, False], {"momentum_buffer"}),
    "velocity_step": (["velocity"], [0.1, 0.9, True], None, set()),
    "adagrad_step": (["state_sum"], [0.1, 0.01, 1e-10, False], None, set()),
    "rmsprop_step": (["square_avg", "grad_avg", "momentum_buffer"], [0.01, 0.9, 1e-8, 0.0, 0.9, True, False],
                     [0.01, 0.9, 1e-8, 0.0, 0.0, False, False], {"grad_avg", "momentum_buffer"}),
    "adam_step": (["exp_avg", "exp_avg_sq", "max_exp_avg_sq"],
                  [1e-3, 0.9, 0.999, 1e-8, 0.0, 1e-2, 0.03, False, True, False],
                  [1e-3, 0.9, 0.999, 1e-8, 0.0, 1e-2, 0.03, False, False, False], {"max_exp_avg_sq"}),
}
CASES = [(name, slot) for name, (bufs, *_rest) in KERNELS.items() for slot in ["grad"] + bufs]


@pytest.mark.parametrize("mod", MODULES, ids=MOD_IDS)
@pytest.mark.parametrize("name, slot", CASES)
@pytest.mark.parametrize("bad_size", [4, 0])
def test_every_used_buffer_of_the_wrong_size_is_refused_by_name(mod, name, slot, bad_size):
    bufs, scalars, _, _ = KERNELS[name]
    arrays = {"param": np.ones(5), "grad": np.ones(5), **{b: np.ones(5) for b in bufs}}
    arrays[slot] = np.ones(bad_size)
    before = {k: v.copy() for k, v in arrays.items()}
    with pytest.raises(ValueError, match=rf"^{slot} must have 5 elements \(the size of param\), got {bad_size}$"):
        getattr(mod, name)(*arrays.values(), *scalars, 1)
    for k in arrays:
        np.testing.assert_array_equal(arrays[k], before[k], err_msg=k)


UNUSED = [(name, slot) for name, (_, _, off, optional) in KERNELS.items() for slot in sorted(optional)]


@pytest.mark.parametrize("mod", MODULES, ids=MOD_IDS)
@pytest.mark.parametrize("name, slot", UNUSED)
def test_an_unused_buffer_may_be_empty_or_full_but_nothing_else(mod, name, slot):
    bufs, _, scalars_off, _ = KERNELS[name]

    def call(size):
        arrays = [np.ones(5), np.ones(5)] + [np.ones(size if b == slot else 5) for b in bufs]
        getattr(mod, name)(*arrays, *scalars_off, 1)
        return arrays
    assert not np.array_equal(call(0)[0], np.ones(5))          # stepped with an empty unused buffer
    np.testing.assert_array_equal(call(0)[0], call(5)[0])      # a full one is accepted and ignored
    with pytest.raises(ValueError, match=rf"^{slot} is unused here and must be empty \(or of size 5\), "
                                         rf"got 3 elements$"):
        call(3)
