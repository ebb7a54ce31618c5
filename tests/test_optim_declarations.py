"""The optimizer table (fastopt.optim._declarations.RULES) and everything derived from it: kernel
signatures, class signatures and defaults (torch's where torch has the rule), validation, state_dict
round trips, the flat path, the CS231n functions, the `fastopt train` options and the bench cases."""
import argparse
import inspect
import pickle

import numpy as np
import pytest
from _kernel_calls import count_kernel_calls

from fastopt import optim, train_cli
from fastopt import _optim_kernels as K
from fastopt.bench import suites
from fastopt.flat import FlatParams
from fastopt.optim._declarations import RULES, class_rules, cs231n_forms
from fastopt.reference import optim as R

CLASS_RULES = class_rules()
IDS = [r.key for r in CLASS_RULES]


def kernel_arguments(rule):
    """The keyword arguments the API passes to rule's kernel, from the declaration alone."""
    h = dict(rule.defaults)
    s = {sc.name: sc.initial for sc in rule.scalars}
    scalars, _ = rule.per_step(h, s, False)
    names = {"param", "grad", "n_threads"} | {st.kernel_arg for st in rule.state} | set(scalars)
    if rule.averaging:
        names |= {"param_avg", "grad_scale", "avg_weight"}
    return names


@pytest.mark.parametrize("key", list(RULES))
def test_kernel_and_twin_take_exactly_the_declared_arguments(key):
    rule = RULES[key]
    twin = inspect.signature(getattr(R, rule.kernel))
    assert set(twin.parameters) == kernel_arguments(rule)
    assert list(twin.parameters)[-1] == "n_threads"
    assert callable(getattr(K, rule.kernel))


@pytest.mark.parametrize("key", list(RULES))
def test_every_rule_has_a_multi_tensor_kernel_taking_its_scalars_in_per_step_order(key):
    # The optimizers call <rule>_multi without a fallback (cached steps, ratio tracking, the
    # RuleOptimizer flat step), positionally: the plan, per_step's scalars in the order it returns
    # them (+ grad_scale, avg_weight), track_ratio, n_threads -- on both backends.
    rule = RULES[key]
    h = dict(rule.defaults)
    scalars, _ = rule.per_step(h, {sc.name: sc.initial for sc in rule.scalars}, False)
    expected = ["plan", *scalars, *(("grad_scale", "avg_weight") if rule.averaging else ()), "track_ratio",
                "n_threads"]
    assert list(inspect.signature(getattr(R, rule.multi_kernel)).parameters) == expected
    code = getattr(K, rule.multi_kernel).__code__
    assert list(code.co_varnames[:code.co_argcount]) == expected


@pytest.mark.parametrize("rule", CLASS_RULES, ids=IDS)
def test_class_signature_and_defaults_come_from_the_declaration(rule):
    cls = getattr(optim, rule.class_name)
    params = inspect.signature(cls).parameters
    for h in rule.hypers:
        assert params[h.name].default == h.default
        assert (params[h.name].kind is inspect.Parameter.KEYWORD_ONLY) == h.keyword_only
    opt = cls([np.zeros(2)])
    assert opt.defaults == rule.defaults
    assert set(opt.state[0]) >= {s.name for s in rule.state} | {s.name for s in rule.scalars}
    if rule.base:
        assert issubclass(cls, getattr(optim, RULES[rule.base].class_name))


@pytest.mark.parametrize("rule", [r for r in CLASS_RULES if r.torch_name], ids=lambda r: r.key)
def test_defaults_are_torchs(rule):
    torch = pytest.importorskip("torch")
    theirs = inspect.signature(getattr(torch.optim, rule.torch_name)).parameters
    for h in rule.hypers:
        assert h.name in theirs, h.name
        assert theirs[h.name].default == h.default, h.name


@pytest.mark.parametrize("rule", CLASS_RULES, ids=IDS)
def test_validation_comes_from_the_declaration(rule):
    cls = getattr(optim, rule.class_name)
    for h in rule.hypers:
        if h.kind == "bool":
            with pytest.raises(TypeError, match=h.name):
                cls([np.ones(2)], **{h.name: 1.5})
        elif h.kind == "pair":
            with pytest.raises(TypeError, match=h.name):
                cls([np.ones(2)], **{h.name: (0.5,)})
            with pytest.raises(ValueError, match=rf"{h.name}\[1\]"):
                cls([np.ones(2)], **{h.name: (0.5, h.high if h.high is not None else -1.0)})
        else:
            with pytest.raises(ValueError, match=h.name):
                cls([np.ones(2)], **{h.name: h.low - 1.0})
            with pytest.raises(TypeError, match=h.name):
                cls([np.ones(2)], **{h.name: "0.1"})
    with pytest.raises(TypeError, match="unexpected keyword"):
        cls([np.ones(2)], not_a_hyperparameter=1)


def _config(rule):
    h = {k: v for k, v in rule.defaults.items()}
    for key, value in (("weight_decay", 0.05), ("momentum", 0.5), ("amsgrad", True), ("centered", True)):
        if key in h:
            h[key] = value
    return {k: v for k, v in h.items() if k in rule.defaults}


@pytest.mark.parametrize("ema", [None, 0.9])
@pytest.mark.parametrize("rule", CLASS_RULES, ids=IDS)
def test_state_dict_round_trip_continues_bit_for_bit(rule, ema):
    cls = getattr(optim, rule.class_name)
    rng = np.random.default_rng(0)
    p0 = {"W": rng.standard_normal((5, 4)), "b": rng.standard_normal(4)}
    grads = [{k: rng.standard_normal(v.shape) for k, v in p0.items()} for _ in range(5)]
    kw = dict(_config(rule), ema=ema)
    a = {k: v.copy() for k, v in p0.items()}
    opt = cls(a, **kw)
    for g in grads[:2]:
        opt.step(g)
    saved = pickle.loads(pickle.dumps(opt.state_dict()))
    b = {k: v.copy() for k, v in a.items()}
    other = cls(b, **kw)
    other.load_state_dict(saved)
    for g in grads[2:]:
        opt.step(g)
        other.step(g)
    for k in p0:
        np.testing.assert_array_equal(a[k], b[k])
    for s1, s2 in zip(opt.state, other.state):
        for key, v in s1.items():
            if isinstance(v, np.ndarray):
                np.testing.assert_array_equal(v, s2[key])
            else:
                assert v == s2[key]


@pytest.mark.parametrize("rule", CLASS_RULES, ids=IDS)
def test_flat_group_of_a_million_elements_is_one_kernel_call_with_the_loose_bits(rule, monkeypatch):
    # >= 1M elements: state arrays are page-placed (views of uint8 buffers); the group must still
    # make ONE call, and compute what the per-parameter loop computes.
    cls = getattr(optim, rule.class_name)
    rng = np.random.default_rng(1)
    shapes = {"W": (1000, 1000), "b": (1000,), "W2": (1000, 10)}
    arrays = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
    fp = FlatParams(arrays)
    loose = {k: v.copy() for k, v in arrays.items()}
    kw = _config(rule)
    flat_opt, loose_opt = cls(dict(fp.params), **kw), cls(loose, **kw)
    steps = [{k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()} for _ in range(2)]
    counts = count_kernel_calls(monkeypatch)
    for g in steps:
        for k in shapes:
            fp.grads[k][...] = g[k]
        flat_opt.step(dict(fp.grads))
    # the validated first step: the rule's kernel over the buffer; the cached second: its multi-tensor
    # kernel on a plan holding the buffer as ONE tensor
    assert counts == [rule.kernel, rule.kernel.replace("_step", "_multi")]
    assert flat_opt._fast.entries[0][1].n_segments == 1
    monkeypatch.undo()
    for g in steps:
        loose_opt.step(g)
    for k in shapes:
        assert np.array_equal(fp.params[k], loose[k]), k


def test_cs231n_functions_are_the_declared_forms():
    assert list(optim.RULES) == list(cs231n_forms())
    assert list(optim.RULES) == ["sgd", "sgd_momentum", "nesterov_momentum", "adagrad", "rmsprop", "adam"]
    for name, (rule, form) in cs231n_forms().items():
        fn = optim.RULES[name]
        assert fn.__name__ == name and fn is getattr(optim, name)
        w = np.ones(3)
        _, config = fn(w, np.full(3, 0.5))
        assert set(config) == {k.name for k in form.config} | {k for k, _ in form.state} | (
            {form.step} if form.step else set())
        for k in form.config:
            assert config[k.name] == k.default


def test_cli_and_bench_tables_come_from_the_declarations():
    assert set(train_cli.OPTIMIZERS) == set(cs231n_forms()) | {r.key for r in CLASS_RULES if r.key not in cs231n_forms()}
    for name in ("nadam", "radam", "adamax", "adadelta", "lion", "adamw"):
        assert name in train_cli.OPTIMIZERS
        assert train_cli.update_rule(name) is getattr(optim, RULES[name].class_name)
    assert "lion" in train_cli.OPTIMIZER_OPTIONS["--beta2"][1]
    assert train_cli.OPTIMIZER_OPTIONS["--rho"][1] == ("adadelta",)
    assert train_cli.OPTIMIZER_OPTIONS["--momentum-decay"][1] == ("nadam",)
    assert set(suites.OPTIMIZERS) == {r.bench_case for r in CLASS_RULES}
    for r in CLASS_RULES:
        class_name, kwargs, moved, torch_name = suites.OPTIMIZERS[r.bench_case]
        assert class_name == r.class_name and torch_name == r.torch_name
        assert moved == r.arrays_moved({**r.defaults, **kwargs})
    assert suites.OPTIMIZERS["lion"][2] == 5 and suites.OPTIMIZERS["adam"][2] == 7


def test_cli_fills_the_other_beta_from_the_rule():
    args = argparse.Namespace(**{o[2:].replace("-", "_"): None for o in train_cli.OPTIMIZER_OPTIONS})
    args.beta1 = "0.8"
    cfg = {"optimizer": "lion", "lr": 1e-3}
    config = train_cli._optim_config(args, cfg)
    assert config["beta1"] == 0.8 and config["beta2"] == 0.99


@pytest.mark.parametrize("rule", CLASS_RULES, ids=IDS)
def test_npz_state_file_round_trip(rule, tmp_path):
    # Per-parameter scalars (NAdam's mu_product, avg_count) and averages go through np.savez too.
    cls = getattr(optim, rule.class_name)
    rng = np.random.default_rng(3)
    a = [rng.standard_normal(6)]
    opt = cls(a, ema="polyak")
    opt.step([rng.standard_normal(6)])
    optim.save_state(tmp_path / "s.npz", opt)
    b = [a[0].copy()]
    other = cls(b, ema="polyak")
    optim.load_state(tmp_path / "s.npz", other)
    g = rng.standard_normal(6)
    opt.step([g])
    other.step([g])
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(opt.averages()[0], other.averages()[0])
