"""Tests written for mutants that survived the fresh mutation sample (seed 5, 3%; MUTATION.md), group C.

Each test pins a documented or intended behaviour and was checked by hand (tools/mutation_verify.py) to
fail with its mutant applied and to pass without; the mutant is named in the comment above it. The exact
text of each refusal is pinned by tests/error_messages.json (tests/_messages.py), not by `match`.
"""
import ctypes

import numpy as np
import pytest

from _nn_data import blob_data


def _fc(**kw):
    from fastopt.nn import FullyConnectedNet
    return FullyConnectedNet([8], input_dim=6, num_classes=3, rng=0, **kw)


def _solver(**kw):
    from fastopt.solver import Solver
    kw = {"update_rule": "sgd", "num_epochs": 1, "batch_size": 30, "verbose": False, "seed": 0, **kw}
    return Solver(_fc(), blob_data(), **kw)


# nn.FullyConnectedNet._overlaps_own_buffers__mutmut_8 (`begin <= start + nbytes`): an array that
# ends exactly where the params (or grads) buffer begins does not lie in it (half-open address
# ranges). No public path reaches that case with NumPy's default allocator (the allocator's chunk
# header lies between two allocations), so the helper is asked directly, on arrays made over the
# addresses next to the buffer (no data is read or written).
def test_an_array_next_to_the_models_buffer_does_not_overlap_it():
    model = _fc(normalization="batchnorm")
    buf = next(iter(model.params.buffers.values()))
    begin = buf.__array_interface__["data"][0]

    def at(address, n):
        return np.frombuffer((ctypes.c_char * (8 * n)).from_address(address), dtype=np.float64)

    assert model._overlaps_own_buffers(buf[:1])
    assert not model._overlaps_own_buffers(at(begin - 32, 4))      # ends where the buffer begins
    assert model._overlaps_own_buffers(at(begin - 24, 4))          # its last element is the buffer's first
    assert not model._overlaps_own_buffers(at(begin + buf.nbytes, 4))   # begins where the buffer ends
    assert model._overlaps_own_buffers(at(begin + buf.nbytes - 8, 4))


# nn.FullyConnectedNet.replace_head__mutmut_76 (init_weight without dtype=: float32, its default): the
# new head has the model's dtype, drawn in float64 (fastopt.nn.init), so a float64 model keeps one
# float64 buffer and the head is not rounded to float32. The tests so far replaced float32 heads.
def test_replace_head_of_a_float64_model_draws_a_float64_head():
    model = _fc(dtype=np.float64, weight_scale=0.5)
    model.replace_head(5, rng=7)
    expected = np.random.default_rng(7).standard_normal((8, 5)) * 0.5
    assert model.params["W2"].dtype == np.float64 and model.params["b2"].dtype == np.float64
    np.testing.assert_array_equal(model.params["W2"], expected)
    assert list(model.params.buffers) == [np.dtype(np.float64)]
    X, y = blob_data()["X_train"][:10], np.arange(10) % 5
    loss, grads = model.loss(X, y)
    assert np.isfinite(loss) and grads["W2"].dtype == np.float64


# nn.TwoLayerNet.__init____mutmut_4 (default reg=1.0): CS231n's default is reg=0.0, so the default
# model's loss is the data loss alone (the tests so far gave reg or compared two default models).
def test_two_layer_net_default_has_no_regularization():
    from fastopt.nn import TwoLayerNet
    model = TwoLayerNet(input_dim=6, hidden_dim=5, num_classes=3, weight_scale=0.5, rng=0)
    assert model.reg == 0.0
    X, y = blob_data()["X_train"][:12], np.arange(12) % 3
    p = model.params
    scores = np.maximum(X @ p["W1"] + p["b1"], 0) @ p["W2"] + p["b2"]
    shifted = scores - scores.max(axis=1, keepdims=True)
    data_loss = np.mean(np.log(np.exp(shifted).sum(axis=1)) - shifted[np.arange(12), y])
    loss, _ = model.loss(X, y)
    assert loss == pytest.approx(data_loss, rel=1e-12)


# solver._monitor.Recorder.before_step__mutmut_9 (getattr without its default): an optimizer that
# has no track_update_ratio (a user's class, which the Solver builds as it builds fastopt's) is
# monitored from snapshots of the params, not refused with an AttributeError.
class _UserSGD:
    def __init__(self, params, lr=0.1):
        self.params = params
        self.param_groups = [{"lr": lr}]

    def step(self, grads):
        for k, w in self.params.items():
            w -= self.param_groups[0]["lr"] * grads[k]


def test_a_user_optimizer_class_without_ratio_tracking_is_monitored_from_snapshots():
    solver = _solver(update_rule=_UserSGD, optim_config={"lr": 0.1}, monitor=1)
    solver.train()
    assert len(solver.monitor_history) == solver.iteration > 0
    assert {rec["ratio_source"] for rec in solver.monitor_history} == {"snapshot"}
    # the same steps as fastopt's SGD, whose kernels measure the ratios
    tracked = _solver(update_rule="sgd", optim_config={"learning_rate": 0.1}, monitor=1)
    tracked.train()
    assert tracked.monitor_history[0]["ratio_source"] == "optimizer"
    for mine, theirs in zip(solver.monitor_history, tracked.monitor_history):
        assert mine["update_ratio"] == pytest.approx(theirs["update_ratio"], rel=1e-5, abs=1e-12)


# solver._registry.rule_name__mutmut_10 ('XX?XX'): the stored name of a rule without a __module__
# (a method-wrapper such as a rule function's __call__) is "custom:?.<qualname>".
def test_the_stored_name_of_a_rule_without_a_module():
    from fastopt import optim
    from fastopt.solver import _registry
    rule = optim.sgd.__call__
    assert not hasattr(rule, "__module__")
    assert _registry.rule_name(rule) == f"custom:?.{rule.__qualname__}"


# solver.Solver._train__mutmut_38 (`t / print_every == 0`): verbose prints the loss every
# print_every iterations (CS231n's), not only the first.
def test_verbose_prints_every_print_every_iterations(capsys):
    solver = _solver(verbose=True, print_every=2, batch_size=24)     # 5 iterations
    solver.train()
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("(Iteration")]
    assert [ln.split(")")[0] for ln in lines] == ["(Iteration 1 / 5", "(Iteration 3 / 5", "(Iteration 5 / 5"]


# solver.Solver._check_early_stopping__mutmut_19 (`stopped["MESSAGE"]`): verbose prints the early
# stopping diagnosis (no test stopped early with verbose=True).
def test_verbose_prints_the_early_stopping_message(capsys):
    solver = _solver(verbose=True, optim_config={"learning_rate": 0.0}, num_epochs=4, early_stopping=1)
    solver.train()
    assert solver.stopped["kind"] == "early_stopping"
    assert solver.stopped["message"] in capsys.readouterr().out.splitlines()


# solver._options.check_options__mutmut_129 (the patience attribute read from a Mapping too): a dict
# monitor spec is its keys (patience is not one of them: refused as a key), so an attribute of a
# Mapping is not a setting; only a Monitor-like object's patience is early stopping.
class _SpecDict(dict):
    patience = 1


def test_a_mapping_monitor_spec_is_read_by_its_keys_only():
    from fastopt.babysit import Monitor
    with pytest.raises(ValueError, match="unknown keys"):
        _solver(monitor={"interval": 1, "patience": 1})
    assert _solver(monitor=_SpecDict(interval=1)).early_stopping is None
    assert _solver(monitor=Monitor(interval=1, patience=1)).early_stopping == 1


# layers.activations.activation_backward__mutmut_47 (dout must be contiguous): dout of any layout is
# accepted (as x in the forward: the module docstring), and gives what its contiguous copy gives.
@pytest.mark.parametrize("name", ["relu", "tanh"])
def test_activation_backward_takes_a_non_contiguous_dout(name):
    from fastopt import layers
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 4))
    _, cache = getattr(layers, f"{name}_forward")(x)
    wide = rng.standard_normal((5, 8))
    dout = wide[:, ::2]
    assert not dout.flags.c_contiguous
    dx = getattr(layers, f"{name}_backward")(dout, cache)
    np.testing.assert_array_equal(dx, getattr(layers, f"{name}_backward")(dout.copy(), cache))
    np.testing.assert_array_equal(wide[:, ::2], dout)     # read only
