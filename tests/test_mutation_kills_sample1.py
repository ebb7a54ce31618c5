"""Tests written for mutants that survived the fresh mutation sample (seed 1, 3%; MUTATION.md).

Each test pins a documented behaviour and was checked by hand to fail with its mutant applied and to
pass without; the mutant is named in the comment above it.
"""
import math

import numpy as np
import pytest

from fastopt import optim
from fastopt.optim import SGD, Adam, clip_grad_norm_, lr_scheduler as S
from fastopt.reference import optim as twin
from test_optim_small_step import _module, _plan_args, _registry_scalars
from _refusal import refused_unchanged


def _sgd(lr=0.1):
    return SGD([np.zeros(3)], lr=lr)


# ------------------------------------------------------------------ clipping (optim._clip)
# grad_norm__mutmut_29: `max(total, s)` -> `max(s)` for the inf-norm.
def test_clip_grad_norm_inf_norm_is_the_largest_magnitude():
    gs = [np.array([1.0, -7.0, 2.0]), np.array([[3.0], [-4.0]]), np.array([6.5])]
    norm = clip_grad_norm_(gs, 1.0, norm_type=math.inf)
    assert norm == 7.0
    np.testing.assert_array_equal(gs[0], np.array([1.0, -7.0, 2.0]) * (1.0 / (7.0 + 1e-6)))
    np.testing.assert_array_equal(gs[2], np.array([6.5]) * (1.0 / (7.0 + 1e-6)))


# ------------------------------------------------------------------ Optimizer.__repr__ (optim._base)
# Optimizer.__repr____mutmut_8: the parameters listed among the hyperparameters.
def test_optimizer_repr_lists_the_hyperparameters_not_the_params():
    text = repr(Adam([np.zeros(2)], lr=0.5))
    lines = text.splitlines()
    assert lines[:2] == ["Adam (", "Parameter Group 0"] and lines[-1] == ")"
    assert "    lr: 0.5" in lines
    assert not any(line.lstrip().startswith(("params:", "param_names:")) for line in lines), text


# ------------------------------------------------------------------ optimizer files (optim._serialize)
# _meta__mutmut_5: `or` -> `and` in the check of the metadata entry's layout.
@pytest.mark.parametrize("form", ["1-d str", "0-d bytes"])
def test_state_from_arrays_wants_a_0d_str_metadata_entry(form):
    arrays = optim.state_to_arrays(Adam([np.zeros(2)]).state_dict())
    text = str(arrays["__meta__"][()])
    arrays["__meta__"] = np.array([text]) if form == "1-d str" else np.array(text.encode())
    with pytest.raises(ValueError, match="must be a 0-d str array"):
        optim.state_from_arrays(arrays)


# ------------------------------------------------------------------ schedulers (optim.lr_scheduler)
# LinearLR.__init____mutmut_32: end_factor accepted up to 2 (torch: 0 <= end_factor <= 1).
@pytest.mark.parametrize("end_factor", [1.0 + 1e-9, 1.5, 2.0])
def test_linear_lr_refuses_an_end_factor_above_one(end_factor):
    with pytest.raises(ValueError, match="end_factor"):
        S.LinearLR(_sgd(), end_factor=end_factor)
    S.LinearLR(_sgd(), end_factor=1.0)          # the bound itself is allowed


# CosineAnnealingWarmRestarts.step__mutmut_22: `_step_count += 1` -> `= 1`. torch counts the
# constructor's initial step and every step after it; the count is saved in the state dict.
@pytest.mark.parametrize("make", [lambda o: S.CosineAnnealingWarmRestarts(o, T_0=3),
                                  lambda o: S.StepLR(o, step_size=2)], ids=["warm_restarts", "step"])
def test_a_scheduler_counts_its_steps_as_torch(make):
    sched = make(_sgd())
    assert sched.state_dict()["_step_count"] == 1
    for n in range(1, 6):
        sched.step()
        assert sched.state_dict()["_step_count"] == 1 + n


# SequentialLR.load_state_dict__mutmut_6: the message of a state without its schedulers.
def test_sequential_lr_state_without_schedulers_is_named():
    opt = _sgd()
    sched = S.SequentialLR(opt, [S.StepLR(opt, step_size=1), S.ExponentialLR(opt, gamma=0.9)], milestones=[2])
    with pytest.raises(ValueError, match="SequentialLR state with a '_schedulers' list"):
        sched.load_state_dict({"last_epoch": 0})


# ------------------------------------------------------------------ NumPy twin multi-tensor steps
# reference.optim.radam_multi__mutmut_38 (maximize dropped): every <rule>_multi of the twin passes
# maximize through, so it equals its single-tensor step tensor by tensor (bitwise), and the compiled
# multi kernel equals the twin's. (Lion's sign(c) can agree for both signs of the gradient: its state
# tells them apart.)
MAXIMIZING = sorted(k for k in twin._STATE_ARGS if "maximize" in _registry_scalars(k))


@pytest.mark.parametrize("kernel", MAXIMIZING)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_twin_multi_steps_honour_maximize(kernel, dtype):
    names = twin._STATE_ARGS[kernel]
    averaging = kernel != "velocity_step"
    sizes = [1, 7, 1023]
    multi = kernel.replace("_step", "_multi")

    def stepped(maximize, how):
        ps, gs, ss, av = _plan_args(twin, dtype, sizes, len(names), avg=averaging, seed=3)
        kw = dict(_registry_scalars(kernel), maximize=maximize)
        if how == "single":
            for k in range(len(sizes)):
                avg = {"param_avg": av[k]} if averaging else {}
                getattr(twin, kernel)(param=ps[k], grad=gs[k], **dict(zip(names, ss[k])), **avg, **kw, n_threads=1)
        else:
            mod = twin if how == "twin" else _module("_optim_kernels")
            getattr(mod, multi)(plan=mod.StepPlan(ps, gs, ss, av), **kw, track_ratio=False, n_threads=1)
        return ps + [s for states in ss for s in states if s.size]     # the parameters, then the states

    single, multi_twin = stepped(True, "single"), stepped(True, "twin")
    for a, b in zip(single, multi_twin):
        assert np.array_equal(a.view(np.uint8), b.view(np.uint8))
    tol = 1e-5 if dtype == np.float32 else 1e-13
    for a, b in zip(stepped(True, "compiled"), multi_twin):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
    assert not all(np.array_equal(a, b) for a, b in zip(stepped(False, "twin"), multi_twin))


# OneCycleLR.__init____mutmut_58 (the label of pct_start) and __mutmut_122 (momentum bounds dropped).
@pytest.mark.parametrize("kw, name", [(dict(pct_start=1.5), "pct_start"), (dict(base_momentum=-0.1), "base_momentum"),
                                      (dict(max_momentum=-0.5), "max_momentum")])
def test_onecycle_names_a_setting_out_of_range(kw, name):
    with pytest.raises(ValueError, match=f"^{name} must be"):
        S.OneCycleLR(SGD([np.zeros(3)], lr=0.1, momentum=0.9), max_lr=1.0, total_steps=10, **kw)


# OneCycleLR.__init____mutmut_183 ("betas" misspelt: Adam's momentum written to a "momentum" entry) and
# __mutmut_292 (SGD's momentum written to a misspelt entry): as torch, the 1cycle policy adds
# initial_lr, max_lr, min_lr, max_momentum and base_momentum to each group, and cycles the group's own
# momentum (SGD) or betas[0] (Adam), starting at max_momentum.
@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_onecycle_cycles_the_groups_own_momentum(kind):
    opt = SGD([np.zeros(3)], lr=0.1, momentum=0.5) if kind == "sgd" else Adam([np.zeros(3)], lr=0.1)
    before = set(opt.param_groups[0])
    sched = S.OneCycleLR(opt, max_lr=1.0, total_steps=10, base_momentum=0.8, max_momentum=0.9)
    group = opt.param_groups[0]
    assert set(group) - before == {"initial_lr", "max_lr", "min_lr", "max_momentum", "base_momentum"}
    momentum = (lambda: group["momentum"]) if kind == "sgd" else (lambda: group["betas"][0])
    assert momentum() == 0.9
    for _ in range(3):
        sched.step()
    assert 0.8 <= momentum() < 0.9
    assert set(group) - before == {"initial_lr", "max_lr", "min_lr", "max_momentum", "base_momentum"}


# ReduceLROnPlateau.step__mutmut_23: `cooldown_counter -= 1` -> `= 1` (the cooldown never ends).
def test_plateau_cooldown_ends_as_torchs():
    # torch: patience 0, cooldown 2, a constant metric: reduce, two cooldown epochs, reduce, ...
    opt = _sgd(1.0)
    sched = S.ReduceLROnPlateau(opt, factor=0.5, patience=0, cooldown=2)
    seen = []
    for _ in range(8):
        sched.step(1.0)
        seen.append(opt.param_groups[0]["lr"])
    assert seen == [1.0, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.125]


# ------------------------------------------------------------------ optimizer state (optim._declarations)
# _adadelta_step__mutmut_31: the step count advanced by 2. torch's Adadelta keeps a step count per
# parameter, one per step.
def test_adadelta_counts_its_steps():
    w = np.ones(4)
    opt = optim.Adadelta([w], lr=1.0)
    for n in range(1, 4):
        opt.step([np.full(4, 0.5)])
        assert float(opt.state_dict()["state"][0]["step"]) == n


# ------------------------------------------------------------------ LBFGS (optim.lbfgs)
def _quadratic(w):
    def closure():
        return float(0.5 * w @ w), {"w": w.copy()}
    return closure


# _parse_params__mutmut_25: the check of a param-group dict's entries.
def test_lbfgs_takes_one_param_group_dict_and_names_unknown_entries():
    w = np.ones(3)
    opt = optim.LBFGS([{"params": {"w": w}, "lr": 0.5}])
    assert opt.param_groups[0]["lr"] == 0.5
    with pytest.raises(ValueError, match="unknown entries.*'momentum'"):
        optim.LBFGS([{"params": {"w": np.ones(3)}, "lr": 0.5, "momentum": 0.9}])


# step__mutmut_19: the message of a replaced parameter list.
def test_lbfgs_names_replaced_params():
    w = np.ones(3)
    opt = optim.LBFGS({"w": w})
    opt.param_groups[0]["params"] = [np.ones(3)]
    with pytest.raises(ValueError, match=r"param_groups\[0\]\['params'\] was replaced"):
        opt.step(_quadratic(w))


# _run__mutmut_183: torch's first step t = min(1, 1 / |g|_1) * lr (here |g|_1 = 0.3 < 1: t = lr).
# _run__mutmut_109: the first iteration's H_diag (torch: 1) is what the state keeps after it.
def test_lbfgs_first_step_and_its_state():
    w = np.array([0.1, -0.2])
    opt = optim.LBFGS({"w": w}, lr=0.5, max_iter=1)
    opt.step(_quadratic(w))
    np.testing.assert_allclose(w, np.array([0.1, -0.2]) * 0.5, rtol=0, atol=1e-16)
    assert opt.state_dict()["state"]["H_diag"] == 1.0
    assert opt.state_dict()["state"]["func_evals"] == 1


# _run__mutmut_283: func_evals counts the line search's closure calls too.
def test_lbfgs_counts_every_closure_call():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((6, 6))
    A = A @ A.T + np.eye(6)
    w = rng.standard_normal(6)
    calls = []

    def closure():
        calls.append(1)
        return float(0.5 * w @ A @ w), {"w": A @ w}

    opt = optim.LBFGS({"w": w}, lr=1, max_iter=5, line_search_fn="strong_wolfe")
    opt.step(closure)
    assert len(calls) > 5
    assert opt.state_dict()["state"]["func_evals"] == len(calls)


# reference.dropout.dropout_train__mutmut_12: the message names the type it got.
def test_dropout_twin_names_a_wrong_bit_generator():
    from fastopt.reference import dropout as D
    x = np.ones(4)
    with pytest.raises(TypeError, match="got Generator"):
        D.dropout_train(x, 0.5, 2.0, np.random.default_rng(0), np.empty(4, np.uint8), np.empty(4), 1)


# _run__mutmut_283: the same count when the line search finds no finite point (it shrinks the step
# MAX_SHRINK times, then the iteration goes back to the last finite point).
def test_lbfgs_counts_the_closure_calls_of_a_failed_line_search():
    w0 = np.array([1.0, 2.0])
    w = w0.copy()
    calls = []

    def closure():                       # finite only at the starting point
        calls.append(1)
        loss = float(0.5 * w @ w) if np.array_equal(w, w0) else math.nan
        return loss, {"w": w.copy()}

    opt = optim.LBFGS({"w": w}, lr=1, max_iter=2, line_search_fn="strong_wolfe")
    opt.step(closure)
    np.testing.assert_array_equal(w, w0)
    assert len(calls) > 3
    assert opt.state_dict()["state"]["func_evals"] == len(calls)


# _reset_history__mutmut_8: the history a fall-back to the last finite point leaves (torch's fresh
# start: H_diag 1), here when the gradient there already meets tolerance_grad and the call returns.
def test_lbfgs_fall_back_leaves_a_fresh_history():
    w = np.array([1.0, 2.0])
    opt = optim.LBFGS({"w": w}, lr=0.1, max_iter=1)
    opt.step(_quadratic(w))                   # moves without evaluating the new point
    start = np.array([1.0, 2.0])

    def closure():                            # not finite away from the first point
        loss = float(0.5 * w @ w) if np.array_equal(w, start) else math.inf
        return loss, {"w": w.copy()}

    opt.param_groups[0]["tolerance_grad"] = 10.0
    opt.step(closure)
    np.testing.assert_array_equal(w, start)
    state = opt.state_dict()
    assert state["state"]["H_diag"] == 1.0 and state["state"]["n_resets"] == 1
    optim.LBFGS({"w": w.copy()}).load_state_dict(state)


# ------------------------------------------------------------------ more of the sample's survivors
# Optimizer.update_ratios__mutmut_3: the message names the optimizer's class.
def test_update_ratios_names_the_class_that_tracks_none():
    with pytest.raises(RuntimeError, match="^SGD tracks no update ratios"):
        SGD([np.zeros(2)], lr=0.1).update_ratios()


# Optimizer._load_state_dict__mutmut_103: the averaging count of a state must be >= 0.
def test_ema_count_in_a_state_dict_must_not_be_negative():
    opt = SGD([np.ones(3)], lr=0.1, ema="polyak")
    opt.step([np.ones(3)])
    sd = opt.state_dict()
    sd["state"][0]["avg_count"] = -1
    with pytest.raises(ValueError, match=r"\['avg_count'\]"):
        opt.load_state_dict(sd)


# _nadam_mu__mutmut_4 and _nadam_step__mutmut_31: torch.optim.NAdam's momentum schedule
# mu_t = beta1 (1 - 0.5 * 0.96 ** (t psi)), written out here in float64 for four steps.
def test_nadam_follows_torchs_momentum_schedule():
    rng = np.random.default_rng(4)
    grads = [rng.standard_normal(5) for _ in range(4)]
    w = rng.standard_normal(5)
    lr, b1, b2, eps, psi = 0.01, 0.9, 0.999, 1e-8, 4e-3
    opt = optim.NAdam([w], lr=lr)
    ref, m, v, mu_product = w.copy(), np.zeros(5), np.zeros(5), 1.0
    for t, g in enumerate(grads, start=1):
        opt.step([g])
        mu, mu_next = b1 * (1 - 0.5 * 0.96 ** (t * psi)), b1 * (1 - 0.5 * 0.96 ** ((t + 1) * psi))
        mu_product *= mu
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        denom = np.sqrt(v / (1 - b2 ** t)) + eps
        ref = ref - lr * (1 - mu) / (1 - mu_product) * g / denom
        ref = ref - lr * mu_next / (1 - mu_product * mu_next) * m / denom
        np.testing.assert_allclose(w, ref, rtol=1e-12, atol=0)


# StepLR.__init____mutmut_1: torch's default gamma 0.1.
def test_step_lr_default_gamma_is_torchs():
    opt = _sgd(1.0)
    sched = S.StepLR(opt, step_size=2)
    for _ in range(4):
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01, rel=1e-15)


# _check_spec_keys__mutmut_14: an unknown schedule's message lists the known ones.
def test_an_unknown_schedule_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown schedule 'nope'; expected one of step, "):
        S.build({"name": "nope"}, _sgd())


# solver._schedule.check_spec__mutmut_15: the message of a spec value that is not plain data.
def test_a_schedule_spec_of_objects_is_refused_by_message():
    from fastopt.solver._schedule import check_spec
    with pytest.raises(TypeError, match="a schedule spec holds numbers, words, flags and lists of numbers only"):
        check_spec({"name": "step", "step_size": object()})


# rule_adapter.RuleOptimizer.load_state_dict__mutmut_15: a state dict with the wrong keys is named.
def test_rule_optimizer_names_the_keys_of_a_wrong_state_dict():
    from fastopt.optim.rule_adapter import RuleOptimizer
    opt = RuleOptimizer(optim.adam, {"w": np.ones(3)}, {"learning_rate": 1e-2})
    with pytest.raises(ValueError, match=r"""must be a dict with 'configs' and 'param_groups', got \["'configs'"\]"""):
        opt.load_state_dict({"configs": {}})


# reference.optim.StepPlan.__init____mutmut_97 (a read-only average accepted) and __mutmut_103 (the
# dtype message): the twin's StepPlan refuses what the compiled one refuses, by the same message.
@pytest.mark.parametrize("name", ["twin", "_optim_kernels"])
def test_step_plan_refuses_a_read_only_average_and_a_wrong_state_dtype(name):
    mod = twin if name == "twin" else _module(name)
    ps, gs, ss, av = ([np.ones(3, np.float32)], [np.ones(3, np.float32)], [[np.ones(3, np.float32)]],
                      [np.ones(3, np.float32)])
    av[0].flags.writeable = False
    with pytest.raises(ValueError, match=r"^avgs\[0\] must be writeable"):
        mod.StepPlan(ps, gs, ss, av)
    with pytest.raises(TypeError, match=r"^states\[0\]\[0\] must be float32, got float64"):
        mod.StepPlan(ps, gs, [[np.ones(3)]], [np.ones(3, np.float32)])


# solver._sampling.SeededDraws.check__mutmut_13: a sampling state without its entries is named.
def test_seeded_draws_state_names_its_missing_entries():
    from fastopt.solver._sampling import SeededDraws
    with pytest.raises(ValueError, match=r"""^sampling must hold 'kind', 'batch' and 'eval', got \["'kind'"\]$"""):
        SeededDraws.check({"kind": "generators"}, "sampling")


# rule_adapter.RuleOptimizer._prepare__mutmut_35: a bad learning rate in the group is named.
def test_rule_optimizer_names_a_negative_group_lr():
    from fastopt.optim.rule_adapter import RuleOptimizer
    w = np.ones(3)
    opt = RuleOptimizer(optim.sgd, {"w": w}, {"learning_rate": 1e-2})
    opt.param_groups[0]["lr"] = -1.0
    with pytest.raises(ValueError, match=r"^param_groups\[0\]\['lr'\] must be >= 0"):
        opt.step({"w": np.ones(3)})
    np.testing.assert_array_equal(w, np.ones(3))


# rule_adapter._with_lr__mutmut_9: a user's own rule reads the learning rate last written, by the
# group's setter (what a scheduler sets) or into the config by hand (CS231n's own code does that);
# the state dict and the group then say so.
def test_a_user_rule_gets_the_learning_rate_last_written():
    from fastopt.optim.rule_adapter import RuleOptimizer
    seen = []

    def rule(w, dw, config):                  # returns a new array: the adapter copies it in
        seen.append(config["learning_rate"])
        return w - config["learning_rate"] * dw, config

    w = np.ones(3)
    opt = RuleOptimizer(rule, {"w": w}, {"learning_rate": 0.1})
    opt.configs["w"]["learning_rate"] = 0.3
    opt.param_groups[0]["lr"] = 0.5           # the group's setter writes every config
    assert opt.state_dict()["configs"]["w"]["learning_rate"] == 0.5
    opt.step({"w": np.ones(3)})
    assert seen[-1] == 0.5
    np.testing.assert_array_equal(w, np.full(3, 0.5))
    opt.configs["w"]["learning_rate"] = 0.25  # by hand, after the group's
    assert opt.state_dict()["configs"]["w"]["learning_rate"] == 0.25
    opt.step({"w": np.ones(3)})
    assert seen[-1] == 0.25 and opt.param_groups[0]["lr"] == 0.25
    np.testing.assert_array_equal(w, np.full(3, 0.25))


# rule_adapter.RuleOptimizer.__init____mutmut_6: params must be a non-empty mapping.
@pytest.mark.parametrize("params", [[np.ones(3)], {}], ids=["list", "empty"])
def test_rule_optimizer_wants_a_non_empty_mapping(params):
    from fastopt.optim.rule_adapter import RuleOptimizer
    with pytest.raises(TypeError, match="^params must be a non-empty Mapping name -> array"):
        RuleOptimizer(optim.sgd, params, {"learning_rate": 1e-2})


# solver._solver.Solver._evaluate__mutmut_74 / _75: the "eval" event of the callback carries the
# learning rate under "lr", with the rest of its documented entries.
def test_solver_eval_event_carries_the_learning_rate():
    from _nn_data import blob_data
    from fastopt.nn import FullyConnectedNet
    from fastopt.solver import Solver
    events = []
    solver = Solver(FullyConnectedNet([8], input_dim=6, num_classes=3, rng=1), blob_data(), update_rule="sgd",
                    optim_config={"learning_rate": 0.1}, batch_size=20, num_epochs=1, num_train_samples=50,
                    num_val_samples=30, verbose=False, seed=5,
                    callback=lambda s, e, i: events.append(dict(i)) if e == "eval" else None)
    solver.train()
    assert events
    for info in events:
        assert set(info) == {"iteration", "num_iterations", "epoch", "num_epochs", "epoch_end", "train_acc",
                             "val_acc", "best_val_acc", "lr", "checkpoint"}
        assert info["lr"] == 0.1


# optim._base.Optimizer.__init____mutmut_72: the message of a single array passed as params.
def test_a_single_array_as_params_is_refused_with_advice():
    with pytest.raises(TypeError, match=r"got a single ndarray; pass \[array\]$"):
        SGD(np.ones(3), lr=0.1)


# layers.dropout._check_cache__mutmut_1: the message says what a dropout cache is.
def test_dropout_backward_says_what_its_cache_is():
    from fastopt import layers
    with pytest.raises(TypeError, match=r"^cache must be the \(params, mask\) tuple returned by dropout_forward, got str$"):
        layers.dropout_backward(np.ones(3), "junk")


# checkpoint.atomic_write_bytes__mutmut_26: the temporary file is opened close-on-exec (a child
# process started while a checkpoint is written must not inherit the half-written file).
def test_checkpoint_temporaries_are_opened_close_on_exec(tmp_path, monkeypatch):
    import os
    from fastopt import checkpoint
    if not hasattr(os, "O_CLOEXEC"):
        pytest.skip("no O_CLOEXEC on this platform")
    flags, real_open = [], os.open

    def recording_open(path, flag, *args, **kw):
        flags.append(flag)
        return real_open(path, flag, *args, **kw)
    monkeypatch.setattr(os, "open", recording_open)
    checkpoint.save(tmp_path / "c.ckpt", {"w": np.arange(3.0)})
    created = [f for f in flags if f & os.O_CREAT]         # the temporary (not the directory's fsync)
    assert len(created) == 1 and created[0] & os.O_CLOEXEC


# layers._operands.compute_dtype__mutmut_4: the message describes what was passed instead.
def test_a_layer_operand_that_is_not_an_array_is_described():
    from fastopt.layers._operands import compute_dtype
    with pytest.raises(TypeError, match=r"^x must be a NumPy array of real numbers, got list$"):
        compute_dtype(("x", [1.0, 2.0]))


# nn.FullyConnectedNet.__init____mutmut_80: the message names reg_type.
def test_an_unknown_reg_type_is_named():
    from fastopt import FullyConnectedNet
    with pytest.raises(ValueError, match=r"^reg_type "):
        FullyConnectedNet([4], input_dim=3, num_classes=2, reg_type="l3")


# ------------------------------------------------------------------ the sample's survivors left M, killed later
# checkpoint._orphan_writer__mutmut_32: the liveness probe is signal 0, which sends nothing. A writer
# that is alive (here a child process with SIGHUP's default action, which ends it) keeps its
# temporary and goes on running.
@pytest.mark.skipif(not hasattr(__import__("signal"), "SIGHUP"), reason="POSIX signals")
def test_the_liveness_probe_sends_a_live_writer_nothing(tmp_path):
    import subprocess
    import sys
    from fastopt import checkpoint
    from test_checkpoint_hygiene import _temp_of
    child = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGHUP, "
                              "signal.SIG_DFL); print('ready', flush=True); time.sleep(60)"],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "ready\n"
        name = _temp_of("c.ckpt", child.pid)
        (tmp_path / name).write_bytes(b"x")
        assert checkpoint.remove_orphan_temporaries(tmp_path / "c.ckpt") == []
        with pytest.raises(subprocess.TimeoutExpired):
            child.wait(timeout=0.5)
        assert (tmp_path / name).read_bytes() == b"x"
    finally:
        child.kill()
        child.wait()


# layers.core.affine_forward__mutmut_10: a bad weight operand is named `w` (the arguments are x, w, b).
@pytest.mark.parametrize("bad", [[[1.0], [2.0]], np.array([["a"], ["b"]])], ids=["list", "str array"])
def test_affine_forward_names_a_bad_weight(bad):
    from fastopt import layers
    with pytest.raises(TypeError, match="^w must "):
        layers.affine_forward(np.ones((3, 2)), bad, np.ones(1))


# nn.FullyConnectedNet._check_state__mutmut_123: a model state's running statistic of the wrong dtype
# is named by its key, and nothing is loaded.
@pytest.mark.parametrize("key", ["running_mean", "running_var"])
def test_a_model_state_names_a_running_statistic_of_the_wrong_dtype(key):
    from fastopt import FullyConnectedNet
    model = FullyConnectedNet([5, 4], input_dim=3, num_classes=2, normalization="batchnorm", rng=0)
    model.loss(np.random.default_rng(0).standard_normal((4, 3)), np.array([0, 1, 1, 0]))   # creates them
    state = model.state_dict()
    state["bn_params"][1][key] = state["bn_params"][1][key].astype(np.float64)       # the model's: float32
    refused_unchanged(model.params, lambda: model.load_state_dict(state), ValueError,
                      rf"^model state bn_params\[1\]\['{key}'\] must have the model's dtype float32")


# nn.FullyConnectedNet._memo__mutmut_19 (`==` -> `!=`): the memo of validated settings is used only
# while the same objects keep their shape, dtype and flags; a running statistic made read-only or
# reshaped in place after a step is validated again and refused by name.
@pytest.mark.parametrize("change", ["read-only", "reshaped"])
def test_a_running_statistic_changed_in_place_is_validated_again(change):
    from fastopt import FullyConnectedNet
    model = FullyConnectedNet([5], input_dim=3, num_classes=2, normalization="batchnorm", rng=0)
    X, y = np.random.default_rng(0).standard_normal((4, 3)), np.array([0, 1, 1, 0])
    model.loss(X, y)                         # creates the running statistics
    model.loss(X, y)                         # validates them (and remembers that)
    rm = model.bn_params[0]["running_mean"]
    if change == "read-only":
        rm.flags.writeable = False
    else:
        rm.shape = (1, 5)
    before = rm.copy()
    with pytest.raises(ValueError, match=r"bn_params\[0\]\['running_mean'\]"):
        model.loss(X, y)
    np.testing.assert_array_equal(rm, before)


# solver._solver.Solver._diagnose__mutmut_24: a verbose Solver prints the diagnosis it records.
def test_a_verbose_solver_prints_its_diagnosis(capsys):
    from _nn_data import blob_data
    from test_solver import make_model, solver_kwargs
    from fastopt.solver import Solver
    solver = Solver(make_model(normalization=None, dropout_keep_ratio=1), blob_data(),
                    **solver_kwargs(update_rule="sgd", optim_config={"learning_rate": 1e3}, monitor=10,
                                    num_epochs=20, verbose=True))
    with np.errstate(all="ignore"):
        solver.train()
    assert solver.stopped is not None and solver.stopped["kind"] == "exploded"
    assert solver.stopped["message"] in capsys.readouterr().out.splitlines()


# solver._solver.Solver.load_checkpoint__mutmut_10: the refusal of a load during training names
# load_checkpoint, and the run goes on as if it had not been asked.
def test_load_checkpoint_from_the_training_callback_is_refused_by_name(tmp_path):
    from _nn_data import blob_data
    from test_solver import assert_same_run, make_model, solver_kwargs
    from fastopt.solver import Solver
    path = tmp_path / "start.ckpt"
    errors = []

    def load_again(solver, event, info):
        if event == "iteration" and not errors:
            try:
                solver.load_checkpoint(path)
            except RuntimeError as exc:
                errors.append(str(exc))

    data = blob_data()
    solver = Solver(make_model(), data, callback=load_again, **solver_kwargs(num_epochs=1))
    solver.save_checkpoint(path)
    solver.train()
    assert errors == ["Solver.load_checkpoint cannot be called while this Solver is training"]
    reference = Solver(make_model(), data, **solver_kwargs(num_epochs=1))
    reference.train()
    assert_same_run(solver, reference)


# solver._monitor.Recorder._activations__mutmut_2 (`and` -> `or`): activation statistics are taken
# of fastopt's fully connected nets only (hidden_dims and W1); a user's model with a "W1" param, or
# with a hidden_dims attribute, gets none and trains under the monitor.
@pytest.mark.parametrize("kind", ["W1 param", "hidden_dims"])
def test_a_user_model_that_looks_half_like_a_fully_connected_net_has_no_activation_statistics(kind):
    from _nn_data import LinearSoftmax, blob_data
    from test_solver import solver_kwargs
    from fastopt.solver import Solver
    model = LinearSoftmax("W1" if kind == "W1 param" else "W")
    if kind == "hidden_dims":
        model.hidden_dims = [4]
    solver = Solver(model, blob_data(), **solver_kwargs(monitor=2, num_epochs=1))
    solver.train()
    assert solver.monitor_history and all(r["activations"] == [] and r["dead_fraction"] is None
                                          for r in solver.monitor_history)


# optim.lbfgs.LBFGS._strong_wolfe__mutmut_165 (the zoom's clamp eps = 0.1 (max + min) of the bracket)
# and __mutmut_184 (the clamp always toward the bracket's lower end): the trial points of torch
# 2.13.0's LBFGS (strong_wolfe, float64) on sin(5x) + 0.3 x^2, written out. From x0 = 1.6 (lr 1) the
# zoom clamps a trial next to the upper end of the bracket [1.0, 2.96], from x0 = 0.3 (lr 50) one next
# to the lower end of [0.99, 50.0]: brackets away from 0, where both mutants move the trial.
TORCH_SIN5_TRIALS = {
    (1.6, 1.0): [1.6, 1.36750016904307, 0.541722245986905, 0.881187146171561, 0.912036938118129,
                 0.957583261210623, 0.920326105825085, 0.921682795852006, 0.920344379812227],
    (0.3, 50.0): [0.3, -26.3843004169257, -0.229619595821851, -2.84508767793224, -0.895175119247428,
                  -0.288849585798024, -177.756807269511, -1.105327315047, -0.370497358722922,
                  -0.306688525836244, -0.312004426276177, -0.306794526552662],
}


@pytest.mark.parametrize("x0, lr", sorted(TORCH_SIN5_TRIALS))
def test_strong_wolfe_zoom_clamps_as_torch_away_from_zero(x0, lr):
    x, trials = np.array([x0]), []

    def closure():
        trials.append(float(x[0]))
        return float(np.sin(5 * x[0]) + 0.3 * x[0] ** 2), [5 * np.cos(5 * x) + 0.6 * x]

    optim.LBFGS([x], lr=lr, line_search_fn="strong_wolfe").step(closure)
    np.testing.assert_allclose(trials, TORCH_SIN5_TRIALS[x0, lr], rtol=1e-9, atol=0)


# reference.mlp.relu_batchnorm_backward__mutmut_63: dgamma summed in float32. Twin and kernel sum the
# column in double: 2^24 + 1 + 1 - 2^24 is 2, where a float32 running sum loses both ones (0).
@pytest.mark.parametrize("name", ["twin", "_mlp_kernels"])
def test_relu_batchnorm_backward_sums_dgamma_in_double(name):
    from fastopt.reference import mlp
    mod = mlp if name == "twin" else _module(name)
    f = np.float32
    z = np.array([[2.0 ** 24], [1.0], [1.0], [-2.0 ** 24]], f)
    ones, zero = np.ones((4, 1), f), np.zeros(1, f)
    dz, dgamma, dbeta, db = np.empty((4, 1), f), np.empty(1, f), np.empty(1, f), np.empty(1, f)
    mod.relu_batchnorm_backward(ones, ones, z, zero, np.ones(1, f), zero, np.ones(1, f), dz, dgamma, dbeta, db, 1)
    assert dgamma[0] == 2.0 and dbeta[0] == 4.0
