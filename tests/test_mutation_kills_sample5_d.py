"""Tests written for mutants that survived the fresh mutation sample (seed 5, 3%; MUTATION.md), group D.

Each test pins a documented behaviour and was checked by hand (tools/mutation_verify.py) to fail
with its mutant applied and to pass without; the mutant is named in the comment above it. Most of
them are NumPy-twin mutants (fastopt.reference): the twins promise the compiled kernels' results
and refusals, so the compiled module is the oracle. Where a mutant only changes a message, the
`match` here is anchored, so the test kills it on its own.
"""
import numpy as np
import pytest

from fastopt import _activation_kernels, _norm_kernels, _optim_kernels
from fastopt.reference import activations as twin_act, norm as twin_norm, optim as twin
from test_optim_small_step import _plan_args, _registry_scalars


def bits(a):
    return np.ascontiguousarray(a).view(np.uint8)


# reference.optim.lion_step__mutmut_49 (`lr * sign(c)` -> `lr / sign(c)`): where c = beta1*m +
# (1-beta1)*g is 0 (a zero gradient on a zero moment, as on a first step) Lion moves by
# lr * sign(0) = 0: only the weight decay acts, as in the compiled kernel (and torch). Every earlier
# test drew nonzero gradients, where dividing by sign(c) = +-1 is the same as multiplying.
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_twin_lion_does_not_move_where_the_update_direction_is_zero(dtype):
    def stepped(mod):
        p = np.array([1.0, -2.0, 3.0], dtype)
        g = np.array([0.0, 0.5, -0.0], dtype)
        m, avg = np.zeros(3, dtype), np.empty(0, dtype)
        mod.lion_step(p, g, m, avg, lr=0.1, beta1=0.9, beta2=0.99, weight_decay=0.01, maximize=False,
                      grad_scale=1.0, avg_weight=0.0, n_threads=1)
        return p
    with np.errstate(all="raise"):
        p = stepped(twin)
    decay = dtype(1.0 - 0.1 * 0.01)
    np.testing.assert_array_equal(p[[0, 2]], np.array([1.0, 3.0], dtype) * decay)
    assert np.array_equal(bits(p), bits(stepped(_optim_kernels)))


# reference.optim.StepPlan.__init____mutmut_64 (the average's "used" flag taken from None, so
# always False): a plan with averages reports the average used (the last entry of `used`, as the
# compiled plan does), and then every tensor's average must match its parameter: an empty average
# beside a full one is refused by both.
@pytest.mark.parametrize("mod", [twin, _optim_kernels], ids=["twin", "compiled"])
def test_step_plan_marks_its_averages_used(mod):
    ps, gs, ss, av = _plan_args(mod, np.float64, [3, 4], nstate=1, used=(True,), avg=True)
    assert mod.StepPlan(ps, gs, ss, av).used == (True, True)
    ps, gs, ss, av = _plan_args(mod, np.float64, [3, 4], nstate=1, used=(True,), avg=False)
    assert mod.StepPlan(ps, gs, ss, av).used == (True, False)
    ps, gs, ss, av = _plan_args(mod, np.float64, [3, 4], nstate=1, used=(True,), avg=True)
    with pytest.raises(ValueError, match=r"^avgs\[1\] must have 4 elements \(the size of param\), got 0$"):
        mod.StepPlan(ps, gs, ss, [av[0], np.empty(0)])


# reference.optim.radam_multi__mutmut_40 (avg_weight=None: the averages become NaN): every twin
# <rule>_multi moves the averages exactly as its single-tensor step does, and as the compiled
# multi kernel (earlier tests compared the parameters and states only, not the averages).
AVERAGING = sorted(k for k in twin._STATE_ARGS if k != "velocity_step")


@pytest.mark.parametrize("kernel", AVERAGING)
def test_twin_multi_steps_move_the_averages(kernel):
    names = twin._STATE_ARGS[kernel]
    kw = _registry_scalars(kernel)
    sizes = [1, 7, 100]

    def stepped(how):
        ps, gs, ss, av = _plan_args(twin, np.float64, sizes, len(names), avg=True, seed=4)
        if how == "single":
            for k in range(len(sizes)):
                getattr(twin, kernel)(param=ps[k], grad=gs[k], **dict(zip(names, ss[k])), param_avg=av[k], **kw,
                                      n_threads=1)
        else:
            mod = twin if how == "twin" else _optim_kernels
            getattr(mod, kernel.replace("_step", "_multi"))(plan=mod.StepPlan(ps, gs, ss, av), **kw,
                                                            track_ratio=False, n_threads=1)
        return av

    before = _plan_args(twin, np.float64, sizes, len(names), avg=True, seed=4)[3]
    single, multi = stepped("single"), stepped("twin")
    for a, b, a0 in zip(single, multi, before):
        assert np.isfinite(b).all() and not np.array_equal(b, a0)
        assert np.array_equal(bits(a), bits(b))
    for a, b in zip(stepped("compiled"), multi):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-13)


# reference.optim.StepGuard.check__mutmut_21 (`not c_contiguous or dtype is not p.dtype` ->
# `... and ...`): a gradient whose dtype is not its parameter's fails the check (the compiled
# StepGuard compares the dtype objects), also when it is C-contiguous.
@pytest.mark.parametrize("mod", [twin, _optim_kernels], ids=["twin", "compiled"])
def test_step_guard_refuses_a_gradient_of_another_dtype(mod):
    p = np.zeros(3)
    same, other = np.zeros(3), np.zeros(3, np.float32)
    assert mod.StepGuard([p], [same], 0, [], [], ()).check([same]) is True
    assert mod.StepGuard([p], [other], 0, [], [], ()).check([other]) is False


# reference.norm._check_x__mutmut_10 (the label of axis 0 of a 3-D x): an (N, C, S) input without
# samples is refused as the compiled kernel refuses it, naming the axis.
@pytest.mark.parametrize("mod", [twin_norm, _norm_kernels], ids=["twin", "compiled"])
def test_spatial_norm_names_an_input_without_samples(mod):
    x, c = np.zeros((0, 2, 3)), 2
    with pytest.raises(ValueError, match=r"^x must have at least one sample \(axis 0\), got 0$"):
        mod.spatial_batchnorm_train_forward(x, np.ones(c), np.zeros(c), 1e-5, 0.9, np.empty_like(x), np.empty(c),
                                            np.empty(c), np.zeros(c), np.ones(c), 1)


# reference.activations.leaky_relu_forward__mutmut_19 (`x > 0` -> `x >= 0`): at x = 0 the twin
# takes negative_slope * x, as the compiled kernel does, bit for bit (the module's promise for the
# piecewise-linear functions). The two differ only where slope * 0 is not +0: a negative slope
# (-0.0) or a slope beyond float32's range, which rounds to inf (inf * 0 is NaN); the layer API
# accepts the latter (any finite slope >= 0).
@pytest.mark.parametrize("dtype, slope", [(np.float32, 1e300), (np.float64, -0.5), (np.float32, -0.5)])
def test_twin_leaky_relu_at_zero_is_the_kernels(dtype, slope):
    x = np.array([0.0, -0.0, 1.5, -2.0], dtype)
    out = {}
    for name, mod in (("twin", twin_act), ("compiled", _activation_kernels)):
        out[name] = np.empty_like(x)
        with np.errstate(invalid="ignore", over="ignore"):
            mod.leaky_relu_forward(x, slope, out[name], 1)
    assert np.array_equal(bits(out["twin"]), bits(out["compiled"]))
    with np.errstate(over="ignore", invalid="ignore"):
        expected0 = np.array([dtype(slope) * dtype(0.0)], dtype)    # NaN or -0.0: x > 0 is False at 0
    assert np.array_equal(bits(out["twin"][:1]), bits(expected0))
