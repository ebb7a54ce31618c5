"""Tests written for mutants that survived the fresh mutation sample (seed 6, 3%; MUTATION.md), group C.

Each test pins a documented behaviour and was checked by hand (tools/mutation_verify.py) to fail
with its mutant applied and to pass without; the mutant is named in the comment above it. The exact
text of each refusal is pinned by tests/error_messages.json (tests/_messages.py), not by `match`.
"""
import numpy as np
import pytest
from _nn_data import blob_data

from fastopt import checkpoint, layers, optim
from fastopt.diagnose import init_experiment, layer_stats
from fastopt.layers.activations import ACTIVATIONS
from fastopt.nn import FullyConnectedNet
from fastopt.solver import Solver

from test_solver import make_model, solver_kwargs


# nn.fully_connected._copy_state__mutmut_3 (`type(None)(...)` for a list or tuple): load_state_dict
# validates everything first and changes nothing on a refusal. A state whose rng entry NumPy's
# PCG64 accepts (check_rng_state's test: the probe ignores a key it does not read) but which carries a
# list is either loaded whole or refused with nothing changed; under the mutant the copy of the list
# raised TypeError after the params had been copied in (half a load).
def test_a_model_state_with_a_list_in_its_rng_entry_loads_all_or_nothing():
    X, y = np.random.default_rng(0).standard_normal((4, 3)), np.array([0, 1, 1, 0])
    source = FullyConnectedNet([5], input_dim=3, num_classes=2, normalization="batchnorm", rng=0)
    source.loss(X, y)
    state = source.state_dict()
    state["rng"]["note"] = [1, (2, 3)]
    model = FullyConnectedNet([5], input_dim=3, num_classes=2, normalization="batchnorm", rng=7)
    before = {k: v.copy() for k, v in model.params.items()}
    rng_before = model.rng.bit_generator.state
    try:
        model.load_state_dict(state)
    except (TypeError, ValueError):
        assert all(np.array_equal(before[k], v) for k, v in model.params.items())
        assert model.rng.bit_generator.state == rng_before
    else:
        assert all(np.array_equal(state["params"][k], v) for k, v in model.params.items())
        np.testing.assert_array_equal(model.bn_params[0]["running_mean"], state["bn_params"][0]["running_mean"])
        assert model.rng.random() == source.rng.random()


# solver._monitor.check_diagnosis__mutmut_36 (`or` for `and`): a checkpoint's diagnosis message must
# be a str of at most 1000 characters; a longer one, or a list, is refused by name before anything is
# loaded (under the mutant both were accepted).
@pytest.mark.parametrize("message", ["x" * 1001, ["x"]])
def test_a_checkpoint_diagnosis_message_must_be_a_short_str(tmp_path, message):
    data = blob_data()
    solver = Solver(make_model(), data, checkpoint_name=str(tmp_path / "run"), **solver_kwargs(monitor=2, num_epochs=1))
    solver.train()
    state = checkpoint.load(tmp_path / "run_epoch_1.pkl")
    state["diagnoses"] = [{"iteration": 1, "epoch": 0, "kind": "not_moving", "message": message}]
    state["stopped"] = None
    checkpoint.save(tmp_path / "bad.pkl", state)
    fresh = Solver(make_model(rng=4), data, **solver_kwargs(monitor=2, num_epochs=1))
    before = {k: v.copy() for k, v in fresh.model.params.items()}
    with pytest.raises(ValueError, match=r"diagnoses\[0\]: message must be a str"):
        fresh.load_checkpoint(tmp_path / "bad.pkl")
    assert fresh.diagnoses == [] and all(np.array_equal(before[k], v) for k, v in fresh.model.params.items())


# solver._registry.class_kwargs__mutmut_13 (the message upper-cased) and class_kwargs__mutmut_25
# (wrapped in XX): an optim_config that gives a setting in both spellings is refused with a message
# that says which (messages no test raised).
def test_an_optim_config_giving_a_setting_twice_is_refused_by_name():
    with pytest.raises(ValueError, match=r"^optim_config gives both 'learning_rate' and 'lr'; give one$"):
        Solver(make_model(), blob_data(), **solver_kwargs(update_rule=optim.Adam,
                                                          optim_config={"learning_rate": 1e-2, "lr": 1e-2}))
    with pytest.raises(ValueError, match=r"^optim_config gives both 'betas' and 'beta1'/'beta2'; give one form$"):
        Solver(make_model(), blob_data(), **solver_kwargs(
            update_rule=optim.Adam, optim_config={"learning_rate": 1e-2, "beta1": 0.8, "betas": (0.9, 0.99)}))


# solver._schedule.check_spec__mutmut_34 (`max(epochs, 2)`): a schedule spec is checked against the
# run's own number of epochs. A one-epoch run with OneCycleLR stepped per epoch (total_steps 1,
# pct_start 0.5) is valid and ends at max_lr / div_factor / final_div_factor; under the mutant it was
# checked as a two-epoch cycle, which divides by zero, and the Solver could not be built.
def test_a_one_epoch_onecycle_schedule_is_checked_for_one_epoch():
    solver = Solver(make_model(), blob_data(), **solver_kwargs(
        num_epochs=1, lr_schedule="onecycle:max_lr=0.01,pct_start=0.5,unit=epoch"))
    solver.train()
    assert solver.optimizer.param_groups[0]["lr"] == pytest.approx(0.01 / 25 / 1e4, rel=1e-9)


# solver._solver.Solver.check_accuracy__mutmut_34 (num_samples without `low=1`): num_samples must be
# >= 1, refused by name before anything is drawn (under the mutant 0 and -1 reached NumPy: "need at
# least one array to concatenate", "negative dimensions are not allowed").
@pytest.mark.parametrize("num_samples", [0, -1])
def test_check_accuracy_refuses_num_samples_below_one(num_samples):
    data = blob_data()
    solver = Solver(make_model(), data, **solver_kwargs())
    eval_state = solver._draws.eval_rng.bit_generator.state
    with pytest.raises(ValueError, match=r"^num_samples must be >= 1"):
        solver.check_accuracy(data["X_val"], data["y_val"], num_samples=num_samples)
    assert solver._draws.eval_rng.bit_generator.state == eval_state


# layers.activations.Activation.flat_mask__mutmut_2 (`np.zeros(None)`): an activation whose gradient
# never vanishes (leaky_relu, elu) has no flat units: an all-False mask of the output's shape, and
# fastopt.diagnose reports flat_fraction 0 and dead_units 0 for it (under the mutant: TypeError).
@pytest.mark.parametrize("name", ["leaky_relu", "elu"])
def test_an_activation_without_flat_region_has_no_flat_units(name):
    out = np.linspace(-3, 3, 12).reshape(3, 4)
    mask = ACTIVATIONS[name].flat_mask(out)
    assert mask.shape == (3, 4) and mask.dtype == bool and not mask.any()
    assert layer_stats(ACTIVATIONS[name], out)["flat_fraction"] == 0.0
    r = init_experiment(name, "he", depth=2, width=8, examples=16)
    assert [(s["flat_fraction"], s["dead_units"]) for s in r["layers"]] == [(0.0, 0.0), (0.0, 0.0)]


# layers.normalization.layernorm_forward__mutmut_15 (`"X"` for `"x"`): layernorm_forward names its
# input x, as the signature does, when x is not a real array.
def test_layernorm_forward_names_a_bad_x_as_x():
    gamma, beta = np.ones(3), np.zeros(3)
    with pytest.raises(TypeError, match=r"^x must be a NumPy array of real numbers"):
        layers.layernorm_forward([[1.0, 2.0, 3.0]], gamma, beta, {})
    with pytest.raises(TypeError, match=r"^x must have a real numeric dtype"):
        layers.layernorm_forward(np.ones((2, 3), dtype=complex), gamma, beta, {})
