"""Tests written for mutants that survived the fresh mutation sample (seed 6, 3%; MUTATION.md), group D.

Each test pins a documented behaviour and was checked by hand (tools/mutation_verify.py) to fail
with its mutant applied and to pass without; the mutant is named in the comment above it. All of
them are NumPy-twin mutants (fastopt.reference): the twins promise the compiled kernels' results
and refusals, so the compiled module is the oracle. The exact text of each refusal is pinned by
tests/error_messages.json (tests/_messages.py), not by `match`.
"""
import numpy as np
import pytest

from fastopt import _augment_kernels, _mlp_kernels, _optim_kernels
from fastopt.reference import augment as twin_aug, mlp as twin_mlp, optim as twin
from test_optim_small_step import _plan_args


def bits(a):
    return np.ascontiguousarray(a).view(np.uint8)


# reference.optim.StepPlan.__init____mutmut_91 (the states' "must be writeable" flag False): a
# read-only state array in use is refused when the plan is built (the kernels update it in place),
# as the compiled StepPlan refuses it; under the mutant the twin accepted it.
@pytest.mark.parametrize("mod", [twin, _optim_kernels], ids=["twin", "compiled"])
def test_step_plan_refuses_a_read_only_state(mod):
    ps, gs, ss, av = _plan_args(mod, np.float64, [3, 4], nstate=2, used=(True, True), avg=False)
    ss[1][1].flags.writeable = False
    with pytest.raises(ValueError, match=r"states\[1\]\[1\] must be writeable"):
        mod.StepPlan(ps, gs, ss, av)
    ss[1][1] = ss[1][1].copy()
    assert mod.StepPlan(ps, gs, ss, av).used == (True, True, False)


# reference.optim.StepGuard.check__mutmut_34 (`not a.flags.writeable` -> `a.flags.writeable`): an
# owned state array that is still the dict's entry and still writeable passes the check (True), as
# in the compiled StepGuard; one made read-only fails it.
@pytest.mark.parametrize("mod", [twin, _optim_kernels], ids=["twin", "compiled"])
def test_step_guard_accepts_its_writeable_owned_state(mod):
    p, g = np.zeros(3), np.zeros(3)
    state = {"velocity": np.zeros(3)}
    guard = mod.StepGuard([p], [g], 0, [(state, "velocity", state["velocity"])], [], ())
    assert guard.check([g]) is True
    state["velocity"].flags.writeable = False
    assert guard.check([g]) is False


# reference.optim.StepGuard.check__mutmut_37 (the step counts looked up under None): the guard
# passes while every dict still holds the step-count objects it saw (True, as the compiled guard),
# and fails once one of them was replaced.
@pytest.mark.parametrize("mod", [twin, _optim_kernels], ids=["twin", "compiled"])
def test_step_guard_accepts_unchanged_step_counts(mod):
    p, g = np.zeros(3), np.zeros(3)
    count = 7.0
    dicts = [{"step": count}, {"step": count}]
    guard = mod.StepGuard([p], [g], 0, [], dicts, ("step",))
    assert guard.check([g]) is True
    dicts[1]["step"] = 8.0
    assert guard.check([g]) is False


# reference.mlp.relu_batchnorm_backward__mutmut_20 (gamma's size not checked): a gamma of the
# wrong size is refused, naming gamma, as the compiled kernel refuses it; under the mutant a (1,)
# gamma was broadcast silently and the gradients written.
@pytest.mark.parametrize("mod", [twin_mlp, _mlp_kernels], ids=["twin", "compiled"])
def test_relu_batchnorm_backward_refuses_a_gamma_of_the_wrong_size(mod):
    rng = np.random.default_rng(0)
    n, d = 4, 3
    dout, z = rng.standard_normal((n, d)), rng.standard_normal((n, d))
    out = np.maximum(z, 0)
    b, mean, inv_std = np.zeros(d), z.mean(0), 1.0 / z.std(0)
    dz, dgamma, dbeta, db = (np.full((n, d), 5.0), np.full(d, 5.0), np.full(d, 5.0), np.full(d, 5.0))
    with pytest.raises(ValueError, match=r"gamma must have shape \(3,\), got \(1,\)"):
        mod.relu_batchnorm_backward(dout, out, z, b, np.ones(1), mean, inv_std, dz, dgamma, dbeta, db, 1)
    for a in (dz, dgamma, dbeta, db):
        assert (a == 5.0).all()


# reference.mlp._check_softmax__mutmut_5 (the labels' size not checked): a y of one label for a
# batch of three rows is refused, naming y, by both softmax kernels, as the compiled ones refuse
# it, and nothing is written; under the mutant it was broadcast over the batch and a loss returned.
@pytest.mark.parametrize("mod", [twin_mlp, _mlp_kernels], ids=["twin", "compiled"])
def test_softmax_kernels_refuse_labels_of_the_wrong_size(mod):
    scores = np.arange(6.0).reshape(3, 2)
    y = np.zeros(1, np.int64)
    dscores = np.full((3, 2), 5.0)
    with pytest.raises(ValueError, match=r"y must have shape \(3,\), got \(1,\)"):
        mod.softmax_loss_grad(scores, y, dscores, 1)
    assert (dscores == 5.0).all()
    b, db = np.zeros(2), np.full(2, 5.0)
    with pytest.raises(ValueError, match=r"y must have shape \(3,\), got \(1,\)"):
        mod.bias_softmax_loss_grad(scores, b, y, dscores, db, 1)
    assert (dscores == 5.0).all() and (db == 5.0).all()
    np.testing.assert_array_equal(scores, np.arange(6.0).reshape(3, 2))


# reference.augment._sin0__mutmut_44 (the x**15 coefficient -1/15! -> -1/(15!+1)): the twin's noise
# agrees with the compiled kernel's bit for bit (the module's promise). The keys below were chosen
# (by inverting the stream's hash) so that feature 1, r * sin, takes sin from an x near pi/2 where
# the changed coefficient moves the last bit; everywhere else the two round alike.
NOISE_KEYS = np.array([-4166532072787333030, -1413677019172748170, 3138523198898463792, -4263725427481946917,
                       7254997258648113166, -4156827254033323432, 5182049452308026695], np.int64)


def test_twin_noise_is_the_kernels_bit_for_bit_near_a_quarter_turn():
    n, d = NOISE_KEYS.size, 2
    out = {}
    for name, mod in (("twin", twin_aug), ("compiled", _augment_kernels)):
        out[name] = np.empty((n, d))
        mod.augment_batch(np.zeros((n, d)), 1, 1, d, np.zeros(n, np.int64), np.zeros(n, np.int64),
                          np.zeros(n, np.uint8), np.arange(n), np.ones(n), NOISE_KEYS, 1.0, out[name], 1)
    assert np.array_equal(bits(out["twin"]), bits(out["compiled"]))
    assert np.array_equal(bits(twin_aug.normals(NOISE_KEYS, d)), bits(out["compiled"]))
