"""Tests written for mutants that survived the fresh mutation sample (seed 3, 3%; MUTATION.md).

Each test pins a documented behaviour and was checked by hand (tools/mutation_verify.py) to fail
with its mutant applied and to pass without; the mutant is named in the comment above it.
"""
import numpy as np
import pytest

from fastopt import optim
from fastopt.optim import SGD, lr_scheduler as S
from _refusal import refused_unchanged


# layers.normalization.spatial_groupnorm_forward__mutmut_17 and __mutmut_67: a bad gamma or beta is named.
def test_spatial_groupnorm_names_a_bad_gamma_or_beta():
    from fastopt.layers import spatial_groupnorm_forward
    x = np.ones((2, 4, 3, 3))
    with pytest.raises(TypeError, match=r"^gamma must be a NumPy array of real numbers, got list$"):
        spatial_groupnorm_forward(x, [1.0] * 4, np.zeros(4), 2, {})
    with pytest.raises(ValueError, match=r"^beta must have shape \(4,\) or \(1, 4, 1, 1\), got \(3,\)$"):
        spatial_groupnorm_forward(x, np.ones(4), np.zeros(3), 2, {})


# nn.FullyConnectedNet.param_groups__mutmut_37: a bad default_lr is named.
def test_param_groups_names_a_bad_default_lr():
    from fastopt.nn import FullyConnectedNet
    with pytest.raises(ValueError, match=r"^default_lr must be > 0"):
        FullyConnectedNet([5], input_dim=4, num_classes=3, rng=0).param_groups(default_lr=-1)


# nn.FullyConnectedNet.replace_head__mutmut_42 (the blocks described without the input width): a
# model without hidden layers gets a new head of shape (input_dim, num_classes), and it trains.
def test_replace_head_of_a_model_without_hidden_layers():
    from fastopt.nn import FullyConnectedNet
    model = FullyConnectedNet([], input_dim=4, num_classes=3, rng=0)
    model.replace_head(5, rng=1)
    assert model.params["W1"].shape == (4, 5) and model.params["b1"].shape == (5,)
    loss, grads = model.loss(np.ones((2, 4), np.float32), np.array([0, 4]))
    assert np.isfinite(loss) and grads["W1"].shape == (4, 5)


# nn.TwoLayerNet.__init____mutmut_31: rng= seeds the weights (two models of one seed are equal,
# another seed's differ), also with NumPy's global state moved in between.
def test_two_layer_net_draws_its_weights_from_rng():
    from fastopt.nn import TwoLayerNet
    make = lambda seed: TwoLayerNet(input_dim=4, hidden_dim=3, num_classes=2, weight_scale=0.5, rng=seed)  # noqa: E731
    a = make(9)
    np.random.standard_normal(5)
    b, c = make(9), make(10)
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])
    assert not np.array_equal(a.params["W1"], c.params["W1"])


# nn.workspace.Workspace.nbytes__mutmut_5 (no test called it): the bytes of every buffer.
def test_workspace_counts_the_bytes_of_its_buffers():
    from fastopt.nn.workspace import Workspace
    ws = Workspace(4, [3, 5], 2, np.float32, "batchnorm", False)
    # z, r, dh: (4, 3) and (4, 5) each; mean, inv_std: (3,) and (5,); scores, dscores: (4, 2).
    assert ws.nbytes() == 4 * (3 * 4 * 8 + 2 * 8 + 2 * 4 * 2)
    ws = Workspace(4, [3], 2, np.float64, "layernorm", True)
    assert ws.nbytes() == 8 * (4 * 4 * 3 + 2 * 4 + 2 * 4 * 2)


# optim._base.Optimizer._register__mutmut_4: a hook that is not callable is named by its type.
def test_a_hook_that_is_not_callable_is_named():
    with pytest.raises(TypeError, match=r"^hook must be callable, got int$"):
        optim.Adam([np.zeros(2)]).register_step_pre_hook(3)


# optim.lbfgs._cubic_interpolate__mutmut_56: with no real minimiser (d2^2 < 0) the trial is the
# middle of the bounds, as torch's.
def test_cubic_interpolate_without_a_real_minimiser_takes_the_middle():
    from fastopt.optim.lbfgs import _cubic_interpolate
    # f = x^3 - x on [0, 2] by its two ends... a cubic whose derivative has no real root instead:
    # f(x) = x^3 + x: f(0) = 0, f'(0) = 1, f(1) = 2, f'(1) = 4; d1 = 1 + 4 - 3 * 2 = -1, d1^2 - 4 < 0.
    assert _cubic_interpolate(0.0, 0.0, 1.0, 1.0, 2.0, 4.0) == 0.5
    assert _cubic_interpolate(0.0, 0.0, 1.0, 1.0, 2.0, 4.0, bounds=(0.25, 3.0)) == 1.625


# optim.lbfgs.LBFGS._strong_wolfe__mutmut_42 (`>=` in the sufficient-decrease test): a trial exactly
# on the Armijo line f + c1 t g.d is accepted (torch's strict `>`): with the curvature condition met
# it ends the line search at once (two closure calls; max_eval leaves the search room for more).
def test_strong_wolfe_accepts_a_trial_on_the_armijo_line():
    x, calls = np.array([0.0]), []

    def closure():
        calls.append(float(x[0]))
        if len(calls) == 1:
            return 1.0, [np.array([-1.0])]
        return 1.0 + 1e-4 * 1.0 * -1.0, [np.array([0.0])]   # f + c1 * t * gtd, computed as the search does

    optim.LBFGS([x], lr=1.0, max_iter=1, max_eval=10, line_search_fn="strong_wolfe").step(closure)
    assert calls == [0.0, 1.0] and x[0] == 1.0


def _lbfgs_state():
    w = np.ones(3)
    opt = optim.LBFGS([w], max_iter=2)
    opt.step(lambda: (float(w @ w), [2 * w]))
    return opt.state_dict()


# optim.lbfgs.LBFGS._validate_state__mutmut_89 and __mutmut_174: a bad loaded state is named with
# what it holds; nothing is loaded.
def test_lbfgs_names_what_is_wrong_in_a_loaded_state():
    state = _lbfgs_state()
    state["state"]["d"] = np.zeros(2)
    target = optim.LBFGS([np.ones(3)])
    with pytest.raises(ValueError, match=r"\['d'\] must be None or a float64 array of shape \(3,\), got float64 \(2,\)$"):
        target.load_state_dict(state)
    state = _lbfgs_state()
    state["state"]["unevaluated_move"] = not state["state"]["unevaluated_move"]
    with pytest.raises(ValueError, match=r": last_finite_x is given exactly when unevaluated_move is True$"):
        target.load_state_dict(state)
    assert target.state["n_iter"] == 0


# lr_scheduler.StepLR._get_closed_form_lr__mutmut_5 (no test reached it): SequentialLR switching to a
# StepLR at its milestone sets the StepLR's closed form. torch 2.13.0's rates, written out.
def test_sequential_lr_switches_to_a_step_lr_as_torch():
    opt = SGD([np.zeros(2)], lr=1.0)
    sched = S.SequentialLR(opt, [S.LinearLR(opt, start_factor=0.5, total_iters=3),
                                 S.StepLR(opt, step_size=2, gamma=0.1)], milestones=[3])
    np.testing.assert_allclose(lr_trace(opt, sched, 7), [0.5, 2 / 3, 5 / 6, 1.0, 1.0, 0.1, 0.1, 0.01], rtol=1e-12)


def lr_trace(opt, sched, steps):
    """The first group's lr before the first and after each of `steps` scheduler steps."""
    seen = [opt.param_groups[0]["lr"]]
    for _ in range(steps):
        sched.step()
        seen.append(opt.param_groups[0]["lr"])
    return seen


# lr_scheduler.CosineAnnealingWarmRestarts.__init____mutmut_31 and _check_state__mutmut_18: a bad
# eta_min is named; a state with a negative T_cur is refused (nothing loaded).
def test_warm_restarts_names_eta_min_and_refuses_a_negative_t_cur():
    opt = SGD([np.zeros(2)], lr=1.0)
    with pytest.raises(ValueError, match=r"^eta_min "):
        S.CosineAnnealingWarmRestarts(opt, T_0=3, eta_min=-1.0)
    sched = S.CosineAnnealingWarmRestarts(opt, T_0=3)
    sched.step()
    state = sched.state_dict()
    state["T_cur"] = -1
    target = S.CosineAnnealingWarmRestarts(SGD([np.zeros(2)], lr=1.0), T_0=3)
    with pytest.raises(ValueError, match=r"\['T_cur'\]"):
        target.load_state_dict(state)
    assert target.T_cur == 0


# lr_scheduler.OneCycleLR.__init____mutmut_129: the momenta lie in [0, 1].
@pytest.mark.parametrize("key", ["max_momentum", "base_momentum"])
def test_onecycle_refuses_a_momentum_above_one(key):
    with pytest.raises(ValueError, match=f"^{key}"):
        S.OneCycleLR(SGD([np.zeros(2)], lr=0.1, momentum=0.9), max_lr=0.1, total_steps=10, **{key: 1.5})


# lr_scheduler.SequentialLR._rebuild__mutmut_10: a state with the wrong number of milestones says
# how many this SequentialLR needs.
def test_sequential_lr_state_with_the_wrong_milestones_says_how_many():
    opt = SGD([np.zeros(2)], lr=1.0)
    sched = S.SequentialLR(opt, [S.StepLR(opt, 1), S.StepLR(opt, 1), S.StepLR(opt, 1)], milestones=[2, 4])
    state = sched.state_dict()
    state["milestones"] = [2]
    with pytest.raises(ValueError, match=r"milestones must list 2 epochs, got \[2\]$"):
        sched.load_state_dict(state)


# reference.lbfgs.axpy_dot__mutmut_8: the twin names a wrongly sized z.
def test_lbfgs_twin_names_a_wrongly_sized_z():
    from fastopt.reference import lbfgs
    with pytest.raises(ValueError, match=r"^z must have 3 elements, got 2$"):
        lbfgs.axpy_dot(np.zeros(3), 1.0, np.zeros(3), np.zeros(2), 1)


# solver._monitor.check_record__mutmut_58: a damaged activations entry of a stored record is named.
def test_a_damaged_monitor_record_names_its_activations():
    from _nn_data import blob_data
    from fastopt.nn import FullyConnectedNet
    from fastopt.solver import Solver, _monitor
    solver = Solver(FullyConnectedNet([8], input_dim=6, num_classes=3, rng=0), blob_data(), update_rule="sgd",
                    num_epochs=1, batch_size=30, verbose=False, seed=0, monitor=1)
    solver.train()
    rec = dict(solver.monitor_history[0], activations=[{"layer": 0}])
    _monitor.check_record(dict(solver.monitor_history[0]), "h[0]", solver.iteration)
    with pytest.raises(ValueError, match=r"^h\[0\]: activations must be a list of dicts with keys \('layer', "):
        _monitor.check_record(rec, "h[0]", solver.iteration)


# solver._registry.tracks_update_ratio__mutmut_7 and __mutmut_22: a subclass without its own __init__
# is followed to its base (Adam takes track_update_ratio); a class whose constructors only pass
# **kwargs on up to object does not take it.
def test_tracks_update_ratio_follows_the_constructors():
    from fastopt.solver._registry import tracks_update_ratio

    class MyAdam(optim.Adam):
        pass

    class Passes:
        def __init__(self, params, **kwargs):
            super().__init__(**kwargs)

    assert tracks_update_ratio(optim.Adam) and tracks_update_ratio(MyAdam)
    assert not tracks_update_ratio(Passes)


# optim.lbfgs.LBFGS._two_loop__mutmut_52 (`i > 1`: the dot product for the first history pair
# skipped): the iterates of torch 2.13.0's LBFGS on Rosenbrock's function from (-1.2, 1), no line
# search, lr 0.1, history_size 3, max_iter 12, float64, written out (the 1-D tests of the line
# search never hold two pairs whose order matters).
TORCH_ROSENBROCK_ITERATES = [
    (-1.2, 1.0), (-1.12898550724638, 1.02898550724638), (-1.12083603389706, 1.0326372109383),
    (-1.11285461496886, 1.03634478820877), (-1.10556514175321, 1.03981851264079),
    (-1.09890308178086, 1.04304142912379), (-1.0928128660568, 1.0460016015517),
    (-1.08724259880745, 1.04869337617999), (-1.08214411115807, 1.05111620045422),
    (-1.07747289935075, 1.05327359181261), (-1.07318800525417, 1.05517222896131),
    (-1.06925185085429, 1.05682115741697),
]


def test_lbfgs_two_loop_recursion_matches_torch_on_rosenbrock():
    x, trials = np.array([-1.2, 1.0]), []

    def closure():
        trials.append(tuple(x))
        a, b = x
        return float((1 - a) ** 2 + 100 * (b - a * a) ** 2), [np.array([-2 * (1 - a) - 400 * a * (b - a * a),
                                                                          200 * (b - a * a)])]

    optim.LBFGS([x], lr=0.1, max_iter=12, history_size=3).step(closure)
    np.testing.assert_allclose(trials, TORCH_ROSENBROCK_ITERATES, rtol=1e-12, atol=0)


# optim.lbfgs.LBFGS._strong_wolfe__mutmut_237 (after a zoom trial that replaces the high end, the
# ends re-sorted as (1, 1) when bracket_f[0] <= bracket_f[1]): torch 2.13.0's trial points on
# sin(7x) + 0.05 x^2 from -2.52 (strong_wolfe, lr 5, max_iter 20, float64), written out.
def test_strong_wolfe_resorts_the_bracket_ends_as_torch():
    x, trials = np.array([-2.52]), []

    def closure():
        trials.append(float(x[0]))
        return float(np.sin(7 * x[0]) + 0.05 * x[0] ** 2), [7 * np.cos(7 * x) + 0.1 * x]

    optim.LBFGS([x], lr=5.0, max_iter=20, line_search_fn="strong_wolfe").step(closure)
    np.testing.assert_allclose(trials, [-2.52, -7.52, -5.38064798045038, -2.85075697519609, -3.13583712627418,
                                        -2.90368687636912, -3.28751542607318, -2.90962181368431,
                                        -2.91777702091063, -2.91124992518667], rtol=1e-9, atol=0)


# optim._declarations._radam_step__mutmut_48 (the rectification term's (rho_inf - 2) as + 2): RAdam
# against torch 2.13.0's iterates. Steps 6-8 are the first with rho_t > 5 (beta2 0.999), where the
# rectified step begins; the torch-parity tests that pin this skip without torch.
def test_radam_rectified_steps_match_torch():
    p = np.array([1.0, -2.0, 0.5])
    opt = optim.RAdam([p], lr=0.1)
    for _ in range(8):
        opt.step([2 * p])
    np.testing.assert_allclose(p, [0.19408385613224668, -0.3957276562272956, 0.09326822988263486], rtol=1e-12)


# layers.losses._softmax_soft_loss__mutmut_7: soft targets of a dtype fastopt does not compute in are
# named with the scores.
def test_soft_targets_of_an_unsupported_dtype_are_named():
    from fastopt.layers import softmax_loss
    y = np.full((2, 3), 1 / 3, np.longdouble)
    if np.dtype(np.longdouble) == np.float64:
        pytest.skip("long double is double on this platform")
    with pytest.raises(TypeError, match=r"^x, y promote to "):
        softmax_loss(np.ones((2, 3)), y)


# optim._base.Optimizer._load_state_dict__mutmut_85: the indices a state must have are named.
def test_a_state_with_missing_parameter_indices_names_the_range():
    ps = [np.zeros(2), np.zeros(3)]
    opt = optim.Adam(ps, lr=0.1)
    opt.step([np.ones(2), np.ones(3)])
    state = opt.state_dict()
    del state["state"][1]
    with pytest.raises(ValueError, match=r"\['state'\] must have an entry for each parameter index 0\.\.1, "):
        optim.Adam([np.zeros(2), np.zeros(3)], lr=0.1).load_state_dict(state)


# optim.lbfgs._check_max_eval__mutmut_4, LBFGS._parse_params__mutmut_20, step__mutmut_35 and
# _run__mutmut_48: LBFGS's messages name what is wrong.
def test_lbfgs_messages_name_what_is_wrong():
    w = np.ones(2)
    with pytest.raises(ValueError, match=r"^param_groups\[0\]\['max_eval'\] "):
        optim.LBFGS([w], max_eval=0)
    with pytest.raises(ValueError, match=r"^param_groups\[0\] has no 'params' entry$"):
        optim.LBFGS([{"lr": 1.0}])
    opt = optim.LBFGS([w])

    def reentrant():
        opt.step(lambda: (1.0, [np.ones(2)]))
    with pytest.raises(RuntimeError, match=r"the closure called step\); one step at a time$"):
        opt.step(lambda: (reentrant(), [np.ones(2)]))
    with pytest.raises(FloatingPointError, match=r"^LBFGS: the closure returned a non-finite loss"):
        optim.LBFGS([np.ones(2)]).step(lambda: (float("nan"), [np.ones(2)]))


# solver._schedule.check_spec__mutmut_16: a spec holding an object says what a spec may hold.
def test_a_schedule_spec_holding_an_object_says_what_it_may_hold():
    from fastopt.solver import _schedule
    with pytest.raises(TypeError, match=r"^lr_schedule: a schedule spec holds numbers, words, flags and lists "
                                        r"of numbers only$"):
        _schedule.check_spec({"name": "step", "step_size": object()})


# reference.dropout.philox_threshold__mutmut_9 and __mutmut_11: T is 2**32 for every p >= 1 (as documented).
@pytest.mark.parametrize("p", [1.0, 1.5])
def test_philox_threshold_is_two_to_the_32_from_p_one(p):
    from fastopt.reference.dropout import philox_threshold
    assert philox_threshold(p) == 2 ** 32
    assert philox_threshold(0.25) == 2 ** 30


# optim.rule_adapter.RuleOptimizer.load_state_dict__mutmut_89 (the configs marked clean after a load):
# a loaded state is checked at the next step. Setting the group's lr at the end of the load clears
# the mark anyway, except for a state whose lr is None (each config keeps its own learning_rate):
# there, configs that disagree (one momentum per parameter) must take the per-parameter calls,
# bitwise as the CS231n rule on each parameter, not one flat call with the first config's values.
def test_rule_optimizer_steps_with_the_loaded_per_parameter_hyperparameters():
    from fastopt.nn import FullyConnectedNet
    from fastopt.optim import functional as F
    from fastopt.optim.rule_adapter import RuleOptimizer
    model = FullyConnectedNet([5], input_dim=4, num_classes=3, rng=0, dtype=np.float64)
    opt = RuleOptimizer(F.sgd_momentum, model.params, {"learning_rate": 0.1, "momentum": 0.9})
    rng = np.random.default_rng(1)
    for g in model.grads.values():
        g[...] = rng.standard_normal(g.shape)
    opt.step(model.grads)
    state = opt.state_dict()
    state["param_groups"][0]["lr"] = None
    for i, cfg in enumerate(state["configs"].values()):
        cfg["momentum"] = 0.5 if i == 0 else 0.9
    opt.load_state_dict(state)
    expected = {}
    for name, w in model.params.items():
        cfg = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in state["configs"][name].items()}
        expected[name], _ = F.sgd_momentum(w.copy(), model.grads[name], cfg)
    opt.step(model.grads)
    for name, w in model.params.items():
        np.testing.assert_array_equal(w, expected[name])


# optim.lr_scheduler.build__mutmut_57: an onecycle spec without total_steps nor epochs says what it needs.
def test_onecycle_spec_without_total_steps_or_epochs_says_what_it_needs():
    with pytest.raises(ValueError, match=r"^schedule 'onecycle' needs total_steps \(or the number of epochs"):
        S.build("onecycle:max_lr=0.1", SGD([np.zeros(2)], lr=0.1))


# optim.lr_scheduler.LRScheduler.__init____mutmut_31: resuming without initial_lr names the group (torch's words).
def test_resuming_a_schedule_without_initial_lr_names_the_group():
    with pytest.raises(KeyError, match=r"param 'initial_lr' is not specified in param_groups\[0\] when resuming"):
        S.StepLR(SGD([np.zeros(2)], lr=0.1), step_size=1, last_epoch=3)


# reference.norm._check_train__mutmut_22: the twin names a wrongly shaped running_mean, as the kernel does.
@pytest.mark.parametrize("name", ["twin", "_norm_kernels"])
def test_batchnorm_twin_and_kernel_name_a_wrongly_shaped_running_mean(name):
    import importlib
    from fastopt.reference import norm
    mod = norm if name == "twin" else importlib.import_module(f"fastopt.{name}")
    d = 3
    vec = lambda: np.ones(d)                                           # noqa: E731
    with pytest.raises(ValueError, match=r"^running_mean must have shape \(3,\), got \(4,\)$"):
        mod.batchnorm_train_forward(np.ones((4, d)), vec(), vec(), 1e-5, 0.9, np.empty((4, d)), vec(), vec(),
                                    np.ones(d + 1), vec(), 1)


# solver._checkpoint.restore_plan__mutmut_59: a damaged train_acc_history is named; nothing is loaded.
def test_a_checkpoint_with_a_damaged_train_accuracy_history_is_named(tmp_path):
    from test_mutation_kills_sample2 import _solver_checkpoint_state
    from fastopt import checkpoint
    fresh, path, state = _solver_checkpoint_state(tmp_path)
    checkpoint.save(path, dict(state, train_acc_history=["x"]))
    target = fresh()
    with pytest.raises(ValueError, match=r": train_acc_history must be a list of floats$"):
        target.load_checkpoint(path)
    assert target.iteration == 0


# solver._registry.rule_name__mutmut_13: a rule object without __qualname__ (a callable instance) is
# stored under its class's name.
def test_the_name_of_a_callable_rule_object_is_its_class():
    from fastopt.solver._registry import CUSTOM, rule_name

    class Halve:
        def __call__(self, w, dw, config=None):
            return w - 0.5 * dw, config or {}
    assert rule_name(Halve()) == f"{CUSTOM}{__name__}.Halve"


# nn.FullyConnectedNet._check_state__mutmut_101: a model state whose bn_params entry is not a dict is
# named by index and type; nothing is loaded.
def test_a_model_state_with_a_bn_params_entry_that_is_not_a_dict_is_named():
    from fastopt.nn import FullyConnectedNet
    model = FullyConnectedNet([5], input_dim=4, num_classes=3, rng=0, normalization="batchnorm")
    state = model.state_dict()
    state["bn_params"] = [3]
    refused_unchanged(model.params, lambda: model.load_state_dict(state), ValueError,
                      r"^model state bn_params\[0\] must be a dict, got int$")


# reference.norm.layernorm_forward__mutmut_12: the twin names a wrongly shaped out, as the kernel does.
@pytest.mark.parametrize("name", ["twin", "_norm_kernels"])
def test_layernorm_twin_and_kernel_name_a_wrongly_shaped_out(name):
    import importlib
    from fastopt.reference import norm
    mod = norm if name == "twin" else importlib.import_module(f"fastopt.{name}")
    with pytest.raises(ValueError, match=r"^out must have shape \(4, 3\), got \(5, 3\)$"):
        mod.layernorm_forward(np.ones((4, 3)), np.ones(3), np.ones(3), 1e-5, np.empty((5, 3)), np.empty(4),
                              np.empty(4), 1)


def _flat_sgd_momentum():
    from fastopt.nn import FullyConnectedNet
    from fastopt.optim import functional as F
    from fastopt.optim.rule_adapter import RuleOptimizer
    model = FullyConnectedNet([5], input_dim=4, num_classes=3, rng=0, dtype=np.float64)
    rng = np.random.default_rng(1)
    for g in model.grads.values():
        g[...] = rng.standard_normal(g.shape)
    return model, RuleOptimizer(F.sgd_momentum, model.params, {"learning_rate": 0.1, "momentum": 0.9})


# optim.rule_adapter._FlatRule.step__mutmut_18 (the cache key of the checked hyperparameters without
# their values): a momentum changed in every config is used at the next flat step, bitwise as the
# per-parameter rule.
def test_rule_optimizer_uses_a_hyperparameter_changed_in_the_configs():
    from fastopt.optim import functional as F
    model, opt = _flat_sgd_momentum()
    opt.step(model.grads)
    for cfg in opt.configs.values():
        cfg["momentum"] = 0.5
    expected = {}
    for name, w in model.params.items():
        cfg = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in opt.configs[name].items()}
        expected[name], _ = F.sgd_momentum(w.copy(), model.grads[name], cfg)
    opt.step(model.grads)
    for name, w in model.params.items():
        np.testing.assert_array_equal(w, expected[name])


# optim.rule_adapter.RuleOptimizer.__init____mutmut_68 and __mutmut_71: the group's lr is the one the
# rule's probe filled in (fastopt's rules: CS231n's default 1e-2), else the given config's (a user rule
# that does not return it).
def test_rule_optimizer_takes_its_lr_from_the_probe_or_the_config():
    from fastopt.optim import functional as F
    from fastopt.optim.rule_adapter import RuleOptimizer

    def plain(w, dw, config):
        return w - dw, {}
    assert RuleOptimizer(F.sgd, {"w": np.ones(3)}, {}).param_groups[0]["lr"] == 1e-2
    assert RuleOptimizer(plain, {"w": np.ones(3)}, {"learning_rate": 0.5}).param_groups[0]["lr"] == 0.5


# optim.rule_adapter.RuleOptimizer._probe__mutmut_39: a rule object without __name__ that returns no
# config is named by its repr (the mutant raises AttributeError instead).
def test_a_rule_object_that_returns_no_config_is_named_by_repr():
    from fastopt.optim.rule_adapter import RuleOptimizer

    class Bare:
        def __call__(self, w, dw, config):
            return w - dw

        def __repr__(self):
            return "Bare()"
    with pytest.raises(TypeError, match=r"^update rule Bare\(\) must return \(next_w, config\), got ndarray$"):
        RuleOptimizer(Bare(), {"w": np.ones(3)}, {})


# layers.normalization.layernorm_forward__mutmut_16: a gamma that is not an array is named.
def test_layernorm_names_a_gamma_that_is_not_an_array():
    from fastopt.layers import layernorm_forward
    with pytest.raises(TypeError, match=r"^gamma must be a NumPy array of real numbers, got list$"):
        layernorm_forward(np.ones((2, 3)), [1.0, 1.0, 1.0], np.zeros(3), {})


# nn.FullyConnectedNet._check_dropout_param__mutmut_17 (the memo of validated dropout settings keyed
# without the seed): a seed changed to a bad value after a step is checked again before anything
# changes (all or nothing: the batchnorm running statistics stay as they were).
def test_a_dropout_seed_changed_after_a_step_is_checked_before_anything_changes():
    from fastopt.nn import FullyConnectedNet
    model = FullyConnectedNet([5], input_dim=4, num_classes=3, rng=0, dropout_keep_ratio=0.5,
                              normalization="batchnorm")
    del model.dropout_param["rng"]
    model.dropout_param["seed"] = 3
    X, y = np.random.default_rng(0).standard_normal((4, 4)).astype(np.float32), np.array([0, 1, 2, 0])
    model.loss(X, y)
    model.dropout_param["seed"] = -1
    before = [{k: v.copy() for k, v in p.items() if isinstance(v, np.ndarray)} for p in model.bn_params]
    with pytest.raises(ValueError, match="seed"):
        model.loss(X, y)
    for p, b in zip(model.bn_params, before):
        for k, v in b.items():
            np.testing.assert_array_equal(p[k], v)


# solver._monitor.check_spec__mutmut_42 and __mutmut_160: a Monitor-like object's flat_window is used;
# a probe that is not an array is described by its type alone.
def test_monitor_spec_takes_flat_window_and_describes_a_bad_probe():
    from fastopt.solver import _monitor

    class Watch:
        interval, flat_window = 2, 7
    assert _monitor.check_spec(Watch())["flat_window"] == 7
    with pytest.raises(TypeError, match=r"must be a float ndarray of rows \(N >= 1, \.\.\.\), got list $"):
        _monitor.check_spec({"interval": 1, "probe": [[1.0]]})


# solver._options.check_options__mutmut_21 and solver._schedule.check__mutmut_27: a Solver's messages.
def test_solver_names_a_bad_update_rule_and_a_unit_beside_a_spec():
    from _nn_data import blob_data
    from test_solver import make_model, solver_kwargs
    from fastopt.solver import Solver
    with pytest.raises(TypeError, match=r"an optimizer class, got int$"):
        Solver(make_model(), blob_data(), **solver_kwargs(update_rule=3))
    with pytest.raises(ValueError, match=r"lr_schedule_unit is for a factory or rate function$"):
        Solver(make_model(), blob_data(), **solver_kwargs(lr_schedule="step:step_size=1", lr_schedule_unit="epoch"))


# reference.optim.StepPlan.__init____mutmut_130 (is_double = None): the twin's plan reports its
# dtype as the compiled plan does (a readonly attribute of the kernel's StepPlan).
@pytest.mark.parametrize("name", ["twin", "_optim_kernels"])
def test_step_plan_says_whether_it_is_double(name):
    import importlib
    from fastopt.reference import optim as twin
    mod = twin if name == "twin" else importlib.import_module(f"fastopt.{name}")
    for dtype in (np.float32, np.float64):
        plan = mod.StepPlan([np.zeros(3, dtype)], [np.zeros(3, dtype)], [[]], [np.empty(0, dtype)])
        assert plan.is_double is (dtype == np.float64)


# optim._base.Optimizer._collect_grads__mutmut_34: grads of the wrong type; the message offers a dict
# by name only when the parameters were given by name.
def test_grads_of_the_wrong_type_are_refused_with_the_forms_that_fit():
    with pytest.raises(TypeError, match=r"^grads must be a list of arrays aligned with the parameters or a dict "
                                        r"by name, got int$"):
        optim.Adam({"w": np.zeros(2)}).step(3)
    with pytest.raises(TypeError, match=r"^grads must be a list of arrays aligned with the parameters, got int$"):
        optim.Adam([np.zeros(2)]).step(3)


# optim._declarations.Hyper.check__mutmut_22: a betas that is not a pair says what it must be.
def test_betas_that_are_not_a_pair_are_named():
    with pytest.raises(TypeError, match=r"^betas must be a pair \(beta1, beta2\), got "):
        optim.Adam([np.zeros(2)], betas=(0.9,))


# layers.activations.activation_backward__mutmut_21 (the saved array required C-contiguous): a cache
# whose saved input is a strided view (a cache built by hand, CS231n style) gives the same dx.
def test_activation_backward_takes_a_cache_with_a_strided_saved_array():
    from fastopt.layers import activations as A
    x = np.random.default_rng(0).standard_normal((4, 6)).T
    dout = np.random.default_rng(1).standard_normal((6, 4))
    _, cache = A.activation_forward("relu", x)
    np.testing.assert_array_equal(A.activation_backward("relu", dout, ("relu", 0.0, x)),
                                  A.activation_backward("relu", dout, cache))


# optim._declarations._eps__mutmut_6 (cli_positive dropped): every rule's eps is asked > 0 by
# `fastopt train` (its bounds are open at 0: eps 0 would divide by zero); the CLI tests, which would
# show it, are left out of the mutation runs.
def test_every_eps_is_bounded_away_from_zero_for_the_cli():
    rules = [getattr(optim, name)._RULE for name in optim.__all__
             if isinstance(getattr(optim, name), type) and getattr(getattr(optim, name), "_RULE", None)]
    eps = [h for rule in rules for h in rule.hypers if h.name == "eps"]
    assert len(eps) >= 5 and all(h.bounds()["low_open"] for h in eps)
