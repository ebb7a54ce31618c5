"""Tests written to kill mutants that survived the mutation run on the merged code (MUTATION.md).

Each test pins a documented behaviour. Some call a factory (make_function, _doc,
cs231n_to_torch_keys) directly: the module-level tables they build are made at import, before mutmut
switches a mutant on, so only a call inside a test lets a mutant of the factory act at all.
"""
import copy
import math
import types

import numpy as np
import pytest

import fastopt
from fastopt.nn import TwoLayerNet
from fastopt.optim import LBFGS, clip_grad_norm_, functional, lr_scheduler as S
from fastopt.optim._classes import _doc
from fastopt.optim._declarations import RULES, cs231n_forms, cs231n_to_torch_keys
from fastopt.optim.lbfgs import _cubic_interpolate


# ------------------------------------------------------------------ CS231n functions (make_function)
def _cs231n(name, w, dw, config):
    """CS231n assignment 2's optim.py, written out (the oracle), on float64 copies."""
    w, c = w.copy(), copy.deepcopy(config)
    if name == "sgd":
        w -= c["learning_rate"] * dw
    elif name == "sgd_momentum":
        c["velocity"] = c["momentum"] * c["velocity"] - c["learning_rate"] * dw
        w += c["velocity"]
    elif name == "rmsprop":
        c["cache"] = c["decay_rate"] * c["cache"] + (1 - c["decay_rate"]) * dw * dw
        w -= c["learning_rate"] * dw / (np.sqrt(c["cache"]) + c["epsilon"])
    elif name == "adam":
        c["t"] += 1
        c["m"] = c["beta1"] * c["m"] + (1 - c["beta1"]) * dw
        c["v"] = c["beta2"] * c["v"] + (1 - c["beta2"]) * dw * dw
        mt, vt = c["m"] / (1 - c["beta1"] ** c["t"]), c["v"] / (1 - c["beta2"] ** c["t"])
        w -= c["learning_rate"] * mt / (np.sqrt(vt) + c["epsilon"])
    return w, c


FIRST_CONFIG = {
    "sgd": {"learning_rate": 0.1},
    "sgd_momentum": {"learning_rate": 0.1, "momentum": 0.9, "velocity": np.zeros(7)},
    "rmsprop": {"learning_rate": 0.01, "decay_rate": 0.9, "epsilon": 1e-8, "cache": np.zeros(7)},
    "adam": {"learning_rate": 0.01, "beta1": 0.9, "beta2": 0.99, "epsilon": 1e-8, "m": np.zeros(7),
             "v": np.zeros(7), "t": 0},
}


@pytest.mark.parametrize("name", sorted(FIRST_CONFIG))
def test_make_function_builds_the_cs231n_rule(name):
    rule, form = cs231n_forms()[name]
    update = functional.make_function(rule, form)
    assert update.__name__ == name
    rng = np.random.default_rng(3)
    w, config = rng.standard_normal(7), copy.deepcopy(FIRST_CONFIG[name])
    want_w, want_c = w.copy(), copy.deepcopy(config)
    for _ in range(3):
        dw = rng.standard_normal(7)
        want_w, want_c = _cs231n(name, want_w, dw, want_c)
        w, config = update(w, dw, config)
    np.testing.assert_allclose(w, want_w, rtol=1e-12, atol=1e-15)
    for key, value in want_c.items():
        np.testing.assert_allclose(config[key], value, rtol=1e-12, atol=1e-15, err_msg=key)
    if name == "adam":
        assert config["t"] == 3


def test_make_function_creates_missing_state_and_refuses_a_missing_dw():
    rule, form = cs231n_forms()["adam"]
    update = functional.make_function(rule, form)
    w = np.ones(5)
    w, config = update(w, np.full(5, 0.5))
    assert config["t"] == 1 and config["m"].shape == (5,) and config["v"].shape == (5,)
    with pytest.raises(TypeError):
        update(w)


# ------------------------------------------------------------------ declarations
def test_cs231n_to_torch_keys():
    # beta1/beta2 go into torch's "betas" pair and are not in this flat map.
    assert cs231n_to_torch_keys() == {"learning_rate": "lr", "momentum": "momentum", "epsilon": "eps",
                                      "decay_rate": "alpha"}


def test_class_docstrings_name_torch_and_the_state():
    doc = _doc(RULES["sgd"])
    assert doc.startswith("torch.optim.SGD over NumPy arrays")
    assert "\nState per parameter: momentum_buffer (size 0 until used).\n" in doc
    assert fastopt.optim.Adam.__doc__.startswith("torch.optim.Adam over NumPy arrays")


# ------------------------------------------------------------------ clip_grad_norm_
def test_clip_grad_norm_takes_any_mapping():
    g = np.array([3.0, 4.0])
    norm = clip_grad_norm_(types.MappingProxyType({"w": g}), 1.0)
    assert norm == 5.0
    np.testing.assert_allclose(g, np.array([3.0, 4.0]) / (5.0 + 1e-6), rtol=1e-15)


# ------------------------------------------------------------------ LBFGS
def _lbfgs():
    params = {"w": np.ones(3)}
    opt = LBFGS(params, lr=1)

    def closure():
        w = params["w"]
        return float(0.5 * w @ w), {"w": w.copy()}

    return opt, params, closure


def test_cubic_interpolate_finds_the_minimum_of_a_cubic():
    # f(x) = (x - 1)^3 - 3 (x - 1) + 2 has its local minimum at x = 2; both argument orders.
    f = lambda x: (x - 1) ** 3 - 3 * (x - 1) + 2           # noqa: E731
    g = lambda x: 3 * (x - 1) ** 2 - 3                     # noqa: E731
    assert _cubic_interpolate(1.5, f(1.5), g(1.5), 3.0, f(3.0), g(3.0)) == pytest.approx(2.0, abs=1e-12)
    assert _cubic_interpolate(3.0, f(3.0), g(3.0), 1.5, f(1.5), g(1.5)) == pytest.approx(2.0, abs=1e-12)


def test_lbfgs_load_state_dict_refuses_a_group_that_is_not_a_dict():
    opt, _, closure = _lbfgs()
    opt.step(closure)
    sd = opt.state_dict()
    sd["param_groups"] = [5]
    with pytest.raises(ValueError, match="must be a list of one dict"):
        opt.load_state_dict(sd)


def test_lbfgs_load_state_dict_shows_the_wrong_params():
    opt, _, closure = _lbfgs()
    opt.step(closure)
    sd = opt.state_dict()
    sd["param_groups"][0]["params"] = [7]
    with pytest.raises(ValueError, match=r"must be \[0\], got \[7\]"):
        opt.load_state_dict(sd)


@pytest.mark.parametrize("key", ["func_evals", "n_iter", "n_resets"])
def test_lbfgs_state_counts_must_be_ints(key):
    opt, _, closure = _lbfgs()
    opt.step(closure)
    sd = opt.state_dict()
    sd["state"][key] = float(sd["state"][key]) + 0.5
    with pytest.raises(TypeError, match=rf"\['{key}'\] must be an int"):
        opt.load_state_dict(sd)


def test_lbfgs_state_flags_must_be_bools_by_message():
    opt, _, closure = _lbfgs()
    opt.step(closure)
    sd = opt.state_dict()
    sd["state"]["restart"] = 1
    with pytest.raises(TypeError, match=r"\['restart'\] must be a bool, got int"):
        opt.load_state_dict(sd)


def test_lbfgs_closure_grads_are_checked_by_name():
    opt, params, _ = _lbfgs()
    with pytest.raises(ValueError, match=r"missing \[\], unexpected \['zz'\]"):
        opt.step(lambda: (1.0, {"w": np.ones(3), "zz": np.ones(3)}))
    with pytest.raises(ValueError, match=r"grads\['w'\] must have the shape of params\['w'\]"):
        opt.step(lambda: (1.0, {"w": np.ones(4)}))
    np.testing.assert_array_equal(params["w"], np.ones(3))


# ------------------------------------------------------------------ schedulers
def _sgd(lrs=(0.1,)):
    return fastopt.SGD([{"params": [np.zeros(3)], "lr": lr} for lr in lrs], lr=lrs[0])


def _lr(opt):
    return opt.param_groups[0]["lr"]


def test_onecycle_messages_are_torchs():
    with pytest.raises(ValueError) as e:
        S.OneCycleLR(_sgd(), max_lr=0.1)
    assert str(e.value) == "You must define either total_steps OR (epochs AND steps_per_epoch)"
    with pytest.raises(ValueError, match="^total_steps must be >= 1"):
        S.OneCycleLR(_sgd(), max_lr=0.1, total_steps=0)


def test_onecycle_three_phase_phase_ends():
    # torch: phases end at steps pct*total - 1, 2*pct*total - 2 and total - 1.
    opt = _sgd()
    sched = S.OneCycleLR(opt, max_lr=1.0, total_steps=10, pct_start=0.3, three_phase=True,
                         div_factor=10.0, cycle_momentum=False)
    seen = [_lr(opt)]
    for _ in range(9):
        sched.step()
        seen.append(_lr(opt))
    assert seen[0] == pytest.approx(0.1) and seen[2] == pytest.approx(1.0)
    assert seen[4] == pytest.approx(0.1, rel=1e-12)         # back at initial_lr at 2*3 - 2
    assert 0.1 < seen[3] < 1.0 and seen[5] < 0.1


def test_plateau_messages_name_the_argument():
    with pytest.raises(ValueError, match="^cooldown must be >= 0"):
        S.ReduceLROnPlateau(_sgd(), cooldown=-1)
    with pytest.raises(ValueError, match="^min_lr must be >= 0"):
        S.ReduceLROnPlateau(_sgd(), min_lr=-1)
    with pytest.raises(ValueError, match=r"^min_lr\[1\] must be >= 0"):
        S.ReduceLROnPlateau(_sgd((0.1, 0.2)), min_lr=[0.0, -1.0])


def test_cosine_annealing_is_the_periodic_cosine_of_torch():
    # torch's chainable form follows eta_min + (base - eta_min) (1 + cos(pi e / T_max)) / 2 for every
    # epoch e, going back up after T_max (period 2 T_max).
    opt = _sgd((0.1,))
    sched = S.CosineAnnealingLR(opt, T_max=2, eta_min=0.01)
    for e in range(1, 12):
        sched.step()
        want = 0.01 + 0.09 * (1 + math.cos(math.pi * e / 2)) / 2
        assert _lr(opt) == pytest.approx(want, rel=1e-12, abs=1e-15), e


@pytest.mark.parametrize("second", ["cosine", "multistep"])
def test_sequential_lr_restarts_the_next_schedule_at_its_closed_form(second):
    # At a milestone torch calls the next scheduler's closed form at epoch 0: its base lr.
    opt = _sgd((0.1,))
    first = S.ExponentialLR(opt, gamma=0.5)
    nxt = (S.CosineAnnealingLR(opt, T_max=4, eta_min=0.0) if second == "cosine"
           else S.MultiStepLR(opt, milestones=[1, 3], gamma=0.1))
    sched = S.SequentialLR(opt, [first, nxt], milestones=[2])
    seen = []
    for _ in range(3):
        sched.step()
        seen.append(_lr(opt))
    assert seen[0] == pytest.approx(0.05) and seen[1] == pytest.approx(0.1, rel=1e-15)


# ------------------------------------------------------------------ models
def test_two_layer_net_repr_shows_its_sizes():
    r = repr(TwoLayerNet(input_dim=4, hidden_dim=3, num_classes=2))
    assert r.startswith("TwoLayerNet(input_dim=4, hidden_dim=3, ")


# ------------------------------------------------------------------ optimizer state, LBFGS inputs
def test_load_state_dict_keeps_the_groups_own_params():
    p = np.ones(3)
    opt = fastopt.SGD([p], lr=0.1, momentum=0.9)
    opt.step([np.ones(3)])
    opt.load_state_dict(opt.state_dict())
    assert opt.param_groups[0]["params"][0] is p           # not the saved index list
    opt.step([np.ones(3)])
    np.testing.assert_allclose(p, 1.0 - 0.1 - 0.1 * 1.9)


def test_ema_count_in_a_state_dict_must_be_an_int():
    opt = fastopt.SGD([np.ones(3)], lr=0.1, ema="polyak")
    opt.step([np.ones(3)])
    sd = opt.state_dict()
    sd["state"][0]["avg_count"] = 1.5
    with pytest.raises(TypeError, match=r"\['avg_count'\] must be an int"):
        opt.load_state_dict(sd)


def test_lbfgs_messages_name_what_is_wrong():
    with pytest.raises(TypeError, match="params must be a list or dict of arrays, got int"):
        LBFGS(5)
    opt = LBFGS({"w": np.ones(3)})
    sd = opt.state_dict()
    del sd["param_groups"][0]["lr"]
    with pytest.raises(ValueError, match=r"\[0\] has no 'lr' entry"):
        opt.load_state_dict(sd)


# ------------------------------------------------------------------ twins: the kernels' messages
def _message(f, *args):
    with pytest.raises(ValueError) as e:
        f(*args)
    return str(e.value)


def test_lbfgs_twin_names_y_as_the_kernel_does():
    from fastopt import _lbfgs_kernels as K
    from fastopt.reference import lbfgs as R
    args = (np.ones(2), 1.0, np.ones(3), 1)
    assert _message(R.axpy, *args) == _message(K.axpy, *args) == "y must have 3 elements, got 2"


def test_norm_twin_names_the_empty_column_as_the_kernel_does():
    from fastopt import _norm_kernels as K
    from fastopt.reference import norm as R
    args = (np.ones((4, 0)), np.ones(0), np.ones(0), 1e-5, 0.9, np.ones((4, 0)), np.ones(0), np.ones(0),
            np.ones(0), np.ones(0), 1)
    twin = _message(R.batchnorm_train_forward, *args)
    assert twin == _message(K.batchnorm_train_forward, *args)
    assert twin == "x must have at least one column, got 0"


# ------------------------------------------------------------------ scheduler and Solver state
def test_scheduler_state_refuses_a_negative_last_lr():
    opt = _sgd()
    sched = S.StepLR(opt, step_size=2)
    sd = sched.state_dict()
    sd["_last_lr"] = [-0.1]
    with pytest.raises(ValueError, match=r"\['_last_lr'\]"):
        sched.load_state_dict(sd)
    assert sched.get_last_lr() == [0.1]


def test_a_checkpoint_with_a_schedule_names_the_solver_without_one(tmp_path):
    from _nn_data import blob_data
    from fastopt.nn import FullyConnectedNet
    from fastopt.solver import Solver
    data = blob_data()

    def solver(**kw):
        return Solver(FullyConnectedNet([8], input_dim=6, num_classes=3, rng=1), data, num_epochs=1,
                      optim_config={"learning_rate": 0.1}, verbose=False, **kw)

    scheduled = solver(lr_schedule="step:step_size=1")
    scheduled.train()
    path = scheduled.save_checkpoint(tmp_path / "c.ckpt")
    target = solver()
    with pytest.raises(ValueError, match="written with a learning-rate schedule; this Solver has none$"):
        target.load_checkpoint(path)
    assert target.iteration == 0


# ------------------------------------------------------------------ normalization layer messages
def test_batchnorm_names_the_expected_layout():
    from fastopt.layers import normalization as N
    with pytest.raises(ValueError, match=r"^x must be 2-D \(N, D\), got shape \(2, 3, 4\)$"):
        N.batchnorm_forward(np.ones((2, 3, 4)), np.ones(3), np.zeros(3), {"mode": "train"})


def test_groupnorm_backward_names_the_channels_of_a_forged_cache():
    from fastopt.layers import normalization as N
    x = np.random.default_rng(0).standard_normal((2, 6, 3, 5))
    _, cache = N.spatial_groupnorm_forward(x, np.ones((1, 6, 1, 1)), np.zeros((1, 6, 1, 1)), 3, {})
    cache.groups = 4
    with pytest.raises(ValueError, match=r"must divide the C = 6 channels of cache.x, got 4"):
        N.spatial_groupnorm_backward(np.ones_like(x), cache)


# ------------------------------------------------------------------ found after the error fix (run 3)
def test_a_changed_dropout_seed_is_validated_again():
    from _nn_data import blob_data
    from fastopt.nn import FullyConnectedNet
    data = blob_data()
    model = FullyConnectedNet([8], input_dim=6, num_classes=3, dropout_keep_ratio=0.5, seed=1)
    model.loss(data["X_train"][:4], data["y_train"][:4])
    model.dropout_param["seed"] = -1
    with pytest.raises(ValueError, match="seed"):
        model.loss(data["X_train"][:4], data["y_train"][:4])


def test_check_spec_without_epochs():
    from fastopt.solver import _schedule
    assert _schedule.check_spec("cosine:T_max=3") == {"name": "cosine", "T_max": 3}


def test_a_checkpoint_for_another_model_names_both_shapes(tmp_path):
    from _nn_data import blob_data
    from fastopt.nn import FullyConnectedNet
    from fastopt.solver import Solver
    data = blob_data()
    solver = Solver(FullyConnectedNet([8], input_dim=6, num_classes=3, rng=1), data, num_epochs=1,
                    optim_config={"learning_rate": 0.1}, verbose=False)
    path = solver.save_checkpoint(tmp_path / "c.ckpt")
    other = Solver(FullyConnectedNet([5], input_dim=6, num_classes=3, rng=1), data, num_epochs=1,
                   optim_config={"learning_rate": 0.1}, verbose=False)
    with pytest.raises(ValueError, match=r"model params\[.W1.\] is float32 \(6, 8\), the model.s is float32 \(6, 5\)"):
        other.load_checkpoint(path)


def test_dropout_backward_names_a_forged_cache_p():
    from fastopt.layers import dropout_backward
    with pytest.raises(ValueError, match=r"^cache params\['p'\]"):
        dropout_backward(np.ones((2, 3)), ({"p": 2.0, "mode": "train"}, np.ones((2, 3), np.uint8)))


def test_rule_optimizer_messages():
    from fastopt import optim
    from fastopt.optim.rule_adapter import RuleOptimizer
    with pytest.raises(TypeError, match=r"^optim_config\['beta1'\] must be a number, got str$"):
        RuleOptimizer(optim.adam, {"w": np.ones(3)}, {"learning_rate": 1e-2, "beta1": "x"})
    opt = RuleOptimizer(optim.adam, {"w": np.ones(3)}, {"learning_rate": 1e-2})
    opt.configs["w"]["beta1"] = "x"
    with pytest.raises(TypeError, match=r"^configs\['w'\]\['beta1'\] must be a number or an array, got str$"):
        opt.step({"w": np.ones(3)})
    opt.configs["w"]["beta1"] = 0.9
    opt._lock.acquire()               # as while another thread's step runs
    try:
        with pytest.raises(RuntimeError, match="one optimizer steps from one thread at a time$"):
            opt.step({"w": np.ones(3)})
    finally:
        opt._lock.release()


# ------------------------------------------------------------------ the 2% sample's missing tests (M)
def test_checkpoint_payload_is_pickle_protocol_5():
    """The documented file format: magic, SHA-256, then a protocol-5 pickle (out-of-band-capable;
    pickle's default protocol differs between Python versions)."""
    from fastopt import checkpoint
    data = checkpoint.dumps({"w": np.arange(3.0)})
    payload = data[len(checkpoint.MAGIC) + 32:]
    assert payload[:2] == b"\x80\x05"
    np.testing.assert_array_equal(checkpoint.loads(data)["w"], np.arange(3.0))


def test_a_bad_batchnorm_setting_in_a_model_state_names_its_layer():
    model = fastopt.FullyConnectedNet([5, 4], input_dim=3, num_classes=2, normalization="batchnorm", rng=0)
    state = model.state_dict()
    state["bn_params"][1]["eps"] = -1.0
    with pytest.raises(ValueError, match=r"model state bn_params\[1\]\['eps'\]"):
        model.load_state_dict(state)


def test_data_that_does_not_fit_the_model_reports_its_feature_count():
    from fastopt.solver._options import num_classes
    model = fastopt.FullyConnectedNet([4], input_dim=64, num_classes=3, rng=0)
    with pytest.raises(ValueError, match="rows have 10 features, the model's input_dim is 64"):
        num_classes(model, np.zeros((6, 2, 5)))


def test_strong_wolfe_zoom_clamps_a_trial_too_close_to_the_bracket():
    """sin(2x) + 0.1 x^2 from x0 = 2.5 with lr 30: the zoom's cubic lands within 10% of a bracket end
    twice, so the insufficient-progress clamp (moving the trial eps inside the bracket) runs; the
    iterate still reaches a stationary point."""
    import sys
    import fastopt.optim.lbfgs as lbfgs_module
    src = lbfgs_module.__file__
    clamp = next(i + 1 for i, line in enumerate(open(src)) if "t = max(bracket) - eps if abs" in line)
    hits = []

    def tracer(frame, event, arg):
        if frame.f_code.co_filename != src:
            return None
        if event == "line" and frame.f_lineno == clamp:
            hits.append(frame.f_lineno)
        return tracer

    x = np.array([2.5])
    f0 = float(np.sin(2 * x[0]) + 0.1 * x[0] ** 2)
    opt = LBFGS([x], lr=30.0, line_search_fn="strong_wolfe")

    def closure():
        return float(np.sin(2 * x[0]) + 0.1 * x[0] ** 2), [2 * np.cos(2 * x) + 0.2 * x]
    sys.settrace(tracer)
    try:
        for _ in range(5):
            opt.step(closure)
    finally:
        sys.settrace(None)
    assert hits, "the test no longer reaches the zoom's clamp"
    f, (g,) = closure()
    assert f < f0 and abs(g[0]) < 1e-5
