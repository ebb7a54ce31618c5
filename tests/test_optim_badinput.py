"""Bad input at every entry point of fastopt.optim: the right error, a message naming the argument,
and nothing changed (params, optimizer state, param groups, config)."""
import copy

import numpy as np
import pytest

from fastopt import optim
from fastopt.optim._declarations import class_rules

CLASSES = [getattr(optim, r.class_name) for r in class_rules()]   # every declared rule
FULL_OPTIONS = {
    optim.SGD: dict(lr=0.1, momentum=0.9),
    optim.Adagrad: dict(lr=0.1),
    optim.RMSprop: dict(lr=0.1, momentum=0.5, centered=True),
    optim.Adam: dict(lr=0.1, amsgrad=True),
    optim.AdamW: dict(lr=0.1, amsgrad=True),
}


def snapshot(opt):
    return ([r.array.copy() for r in opt._params],
            [{k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in st.items()} for st in opt.state],
            [{k: v for k, v in g.items() if k not in ("params",)} for g in opt.param_groups])


def assert_same(opt, snap):
    params, state, groups = snapshot(opt)
    for a, b in zip(params, snap[0]):
        np.testing.assert_array_equal(a, b)
    assert len(state) == len(snap[1])
    for a, b in zip(state, snap[1]):
        assert a.keys() == b.keys()
        for key in a:
            if isinstance(a[key], np.ndarray):
                assert a[key].shape == b[key].shape
                np.testing.assert_array_equal(a[key], b[key])
            else:
                assert a[key] == b[key]
    assert groups == snap[2]


def stepped(cls, rng=None):
    """An optimizer over three params (two groups) after two good steps, and good grads."""
    rng = rng or np.random.default_rng(0)
    a = rng.standard_normal((3, 2))
    b = rng.standard_normal(4)
    c = rng.standard_normal(5).astype(np.float32)
    opt = cls([{"params": [a, b]}, {"params": [c], "lr": 0.05}], **FULL_OPTIONS.get(cls, dict(lr=0.1)))
    grads = [np.ones_like(a), np.ones_like(b), np.ones_like(c)]
    opt.step(grads)
    opt.step(grads)
    return opt, grads


# ---------------------------------------------------------------- construction

@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("bad, exc, fragment", [
    (np.ones(3, np.int64), TypeError, "params[1] must have dtype float32 or float64, got int64"),
    (np.ones(3, np.float16), TypeError, "params[1] must have dtype float32 or float64, got float16"),
    (np.ones(3, np.complex128), TypeError, "params[1] must have dtype"),
    (None, TypeError, "params[1] must be a NumPy array"),
    ([1.0, 2.0], TypeError, "params[1] must be a NumPy array"),
    (np.ones((3, 4))[:, ::2], ValueError, "params[1] must be C-contiguous"),
])
def test_bad_params_refused(cls, bad, exc, fragment):
    good = np.ones(2)
    with pytest.raises(exc, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        cls([good, bad])
    np.testing.assert_array_equal(good, np.ones(2))


@pytest.mark.parametrize("cls", CLASSES)
def test_read_only_param_refused(cls):
    p = np.ones(3)
    p.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        cls([p])


@pytest.mark.parametrize("cls", CLASSES)
def test_same_array_twice_or_overlapping_views_refused(cls):
    a = np.ones(10)
    with pytest.raises(ValueError, match="same array"):
        cls([a, a])
    with pytest.raises(ValueError, match="overlaps"):
        cls([a[:6], a[4:]])
    with pytest.raises(ValueError, match="overlaps"):
        cls([{"params": [a[:5]]}, {"params": [a[3:]]}])
    opt = cls([a[:5]])
    snap = snapshot(opt)
    with pytest.raises(ValueError, match="overlaps"):
        opt.add_param_group({"params": [a[4:]]})
    assert len(opt.param_groups) == 1 and len(opt.state) == 1
    assert_same(opt, snap)
    cls([a[:5], a[5:]])  # disjoint views are fine


@pytest.mark.parametrize("params, exc, fragment", [
    ([], ValueError, "empty"),
    (np.ones(3), TypeError, "single ndarray"),
    (3.0, TypeError, "params must be a list or dict"),
    ({"w": None}, TypeError, r"params\['w'\] must be a NumPy array"),
    ({1: np.ones(2)}, TypeError, "keys must be str"),
    ([{"lr": 0.1}], ValueError, r"param_groups\[0\] has no 'params'"),
    ([{"params": []}], ValueError, r"param_groups\[0\]\['params'\] is empty"),
    ([{"params": np.ones(2)}], TypeError, "single ndarray"),
    ([{"params": [np.ones(2)], "lr": -1.0}], ValueError, r"param_groups\[0\]\['lr'\] must be >= 0"),
    ([{"params": {"w": np.ones(2)}}, {"params": {"w": np.ones(2)}}], ValueError, "already used"),
])
def test_bad_param_structures(params, exc, fragment):
    with pytest.raises(exc, match=fragment):
        optim.SGD(params)


BAD_HYPER = [
    (optim.SGD, "lr", -0.1, ValueError, ">= 0"),
    (optim.SGD, "lr", float("nan"), ValueError, "finite"),
    (optim.SGD, "lr", float("inf"), ValueError, "finite"),
    (optim.SGD, "lr", "0.1", TypeError, "real number"),
    (optim.SGD, "lr", None, TypeError, "real number"),
    (optim.SGD, "lr", True, TypeError, "real number"),
    (optim.SGD, "momentum", 1.0, ValueError, "< 1.0"),
    (optim.SGD, "momentum", -0.5, ValueError, ">= 0"),
    (optim.SGD, "dampening", 1.5, ValueError, "<= 1.0"),
    (optim.SGD, "weight_decay", -1e-3, ValueError, ">= 0"),
    (optim.SGD, "nesterov", 1, TypeError, "bool"),
    (optim.SGD, "maximize", "yes", TypeError, "bool"),
    (optim.Adagrad, "lr_decay", -1.0, ValueError, ">= 0"),
    (optim.Adagrad, "eps", -1e-10, ValueError, ">= 0"),
    (optim.Adagrad, "initial_accumulator_value", -0.1, ValueError, ">= 0"),
    (optim.RMSprop, "alpha", 1.5, ValueError, "<= 1.0"),
    (optim.RMSprop, "alpha", -0.1, ValueError, ">= 0"),
    (optim.RMSprop, "momentum", 1.0, ValueError, "< 1.0"),
    (optim.RMSprop, "eps", float("nan"), ValueError, "finite"),
    (optim.RMSprop, "centered", None, TypeError, "bool"),
    (optim.Adam, "betas", (1.0, 0.999), ValueError, r"betas'?\]?\[0\] must be < 1.0"),
    (optim.Adam, "betas", (0.9, -0.1), ValueError, r"betas'?\]?\[1\] must be >= 0"),
    (optim.Adam, "betas", (0.9,), TypeError, "pair"),
    (optim.Adam, "betas", 0.9, TypeError, "pair"),
    (optim.Adam, "eps", -1e-8, ValueError, ">= 0"),
    (optim.Adam, "amsgrad", 0, TypeError, "bool"),
    (optim.AdamW, "weight_decay", float("-inf"), ValueError, "finite"),
    (optim.AdamW, "lr", np.array([0.1]), TypeError, "real number"),
]
HYPER_IDS = [f"{c.__name__}-{k}-{v!r}" for c, k, v, _, _ in BAD_HYPER]


@pytest.mark.parametrize("cls, key, value, exc, fragment", BAD_HYPER, ids=HYPER_IDS)
def test_bad_constructor_hyperparameter(cls, key, value, exc, fragment):
    p = np.ones(3)
    with pytest.raises(exc, match=fragment) as info:
        cls([p], **{key: value})
    assert key in str(info.value)
    np.testing.assert_array_equal(p, np.ones(3))


@pytest.mark.parametrize("cls, key, value, exc, fragment", BAD_HYPER, ids=HYPER_IDS)
def test_bad_group_edit_raises_at_step_and_changes_nothing(cls, key, value, exc, fragment):
    opt, grads = stepped(cls)
    opt.param_groups[1][key] = value  # the second group: the first must not have stepped either
    snap = snapshot(opt)
    with pytest.raises(exc, match=fragment) as info:
        opt.step(grads)
    assert f"param_groups[1][{key!r}]" in str(info.value)
    assert_same(opt, snap)


@pytest.mark.parametrize("cls, key, value, exc, fragment", BAD_HYPER, ids=HYPER_IDS)
def test_bad_add_param_group_hyperparameter(cls, key, value, exc, fragment):
    opt, grads = stepped(cls)
    snap = snapshot(opt)
    with pytest.raises(exc, match=fragment) as info:
        opt.add_param_group({"params": [np.ones(2)], key: value})
    assert f"param_group[{key!r}]" in str(info.value)
    assert len(opt.param_groups) == 2
    assert_same(opt, snap)
    opt.step(grads)  # still consistent


def test_nesterov_needs_momentum_and_no_dampening():
    with pytest.raises(ValueError, match="nesterov momentum requires momentum > 0"):
        optim.SGD([np.ones(2)], nesterov=True)
    with pytest.raises(ValueError, match="dampening == 0"):
        optim.SGD([np.ones(2)], momentum=0.9, dampening=0.1, nesterov=True)
    opt, grads = stepped(optim.SGD)
    opt.param_groups[0]["nesterov"] = True
    opt.param_groups[0]["dampening"] = 0.5
    snap = snapshot(opt)
    with pytest.raises(ValueError, match=r"param_groups\[0\]: nesterov"):
        opt.step(grads)
    assert_same(opt, snap)


@pytest.mark.parametrize("cls", CLASSES)
def test_group_structure_edits_refused(cls):
    opt, grads = stepped(cls)
    snap = snapshot(opt)
    del opt.param_groups[0]["lr"]
    with pytest.raises(ValueError, match=r"param_groups\[0\] has no 'lr'"):
        opt.step(grads)
    opt.param_groups[0]["lr"] = 0.1
    opt.param_groups[0]["params"] = [np.ones(3)]
    with pytest.raises(ValueError, match="was replaced"):
        opt.step(grads)
    assert_same(opt, snap)


# ---------------------------------------------------------------- step(grads)

def bad_grads_cases(grads):
    a, b, c = grads
    non_contig = np.ones((4, 2))[:, 0]
    return [
        ([a, b.astype(np.float32), c], TypeError, r"grads\[1\] must have the dtype of params\[1\] \(float64\)"),
        ([a, b, c.astype(np.float64)], TypeError, r"grads\[2\] must have the dtype"),
        ([a, b.astype(np.int64), c], TypeError, r"grads\[1\] must have the dtype"),
        ([a, b.astype(np.complex128), c], TypeError, r"grads\[1\] must have the dtype"),
        ([a, np.ones(5), c], ValueError, r"grads\[1\] must have the shape of params\[1\] \(4,\)"),
        ([a.reshape(-1), b, c], ValueError, r"grads\[0\] must have the shape"),
        ([a, non_contig, c], ValueError, r"grads\[1\] must be C-contiguous"),
        ([a, None, c], TypeError, r"grads\[1\] must be a NumPy array"),
        ([a, [1.0] * 4, c], TypeError, r"grads\[1\] must be a NumPy array"),
        ([a, b], ValueError, "grads has 2 entries, expected 3"),
        ([a, b, c, c], ValueError, "grads has 4 entries, expected 3"),
        (a, TypeError, "grads must be a list"),
        (None, TypeError, "grads must be a list"),
        ({"a": a}, TypeError, "not all given by name"),
    ]


@pytest.mark.parametrize("cls", CLASSES)
def test_bad_grads_change_nothing(cls):
    opt, grads = stepped(cls)
    for bad, exc, fragment in bad_grads_cases(grads):
        snap = snapshot(opt)
        with pytest.raises(exc, match=fragment):
            opt.step(bad)
        assert_same(opt, snap)


@pytest.mark.parametrize("cls", CLASSES)
def test_grad_that_is_the_param_refused(cls):
    p = np.ones(3)
    opt = cls([p])
    snap = snapshot(opt)
    with pytest.raises(ValueError, match=r"grads\[0\] is the parameter array itself"):
        opt.step([p])
    assert_same(opt, snap)


def test_bad_named_grads_change_nothing():
    params = {"W": np.ones((2, 2)), "b": np.ones(2)}
    opt = optim.Adam(params, lr=0.1)
    opt.step({"W": np.ones((2, 2)), "b": np.ones(2)})
    for bad, exc, fragment in [
        ({"W": np.ones((2, 2))}, ValueError, r"missing \['b'\]"),
        ({"W": np.ones((2, 2)), "b": np.ones(2), "c": np.ones(2)}, ValueError, r"unexpected \['c'\]"),
        ({"W": np.ones((2, 2)), "B": np.ones(2)}, ValueError, "missing"),
        ({"W": np.ones((2, 2)), "b": np.ones(3)}, ValueError, r"grads\['b'\] must have the shape of params\['b'\]"),
        ({"W": np.ones((2, 2), np.float32), "b": np.ones(2)}, TypeError, r"grads\['W'\] must have the dtype"),
    ]:
        snap = snapshot(opt)
        with pytest.raises(exc, match=fragment):
            opt.step(bad)
        assert_same(opt, snap)


def test_added_group_outside_add_param_group_refused():
    opt, grads = stepped(optim.SGD)
    opt.param_groups.append({"params": [np.ones(2)], "lr": 0.1})
    with pytest.raises(ValueError, match="add_param_group"):
        opt.step(grads)


def test_add_param_group_bad_inputs():
    opt, grads = stepped(optim.Adam)
    p0 = opt._params[0].array
    for bad, exc, fragment in [
        ([np.ones(2)], TypeError, "param_group must be a dict"),
        ({"lr": 0.1}, ValueError, "no 'params'"),
        ({"params": [p0]}, ValueError, "same array"),
        ({"params": [np.ones(2, np.int32)]}, TypeError, r"param_group\['params'\]\[0\] must have dtype"),
        ({"params": "abc"}, TypeError, "list or dict of arrays"),
    ]:
        snap = snapshot(opt)
        with pytest.raises(exc, match=fragment):
            opt.add_param_group(bad)
        assert len(opt.param_groups) == 2
        assert_same(opt, snap)


# ---------------------------------------------------------------- load_state_dict

def _set(sd, path, value):
    target = sd
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value


_DELETE = object()


def _state_key(cls):
    return cls._RULE.state[0].name       # the declaration's first state array


def bad_state_dict_cases(cls, sd):
    key = _state_key(cls)
    arr = sd["state"][1][key]
    cases = [
        ("param_groups", lambda s: s["param_groups"].pop(), ValueError, "has 1 param groups, this optimizer has 2"),
        ("extra group", lambda s: s["param_groups"].append(dict(s["param_groups"][1])), ValueError,
         "has 3 param groups"),
        ("param count", lambda s: s["param_groups"][0]["params"].pop(), ValueError,
         r"\['param_groups'\]\[0\]\['params'\] must list 2"),
        ("param order", lambda s: s["param_groups"][0].update(params=[1, 0]), ValueError, "must be"),
        ("bad lr", lambda s: s["param_groups"][1].update(lr=-1.0), ValueError,
         r"state_dict\['param_groups'\]\[1\]\['lr'\] must be >= 0"),
        ("nan lr", lambda s: s["param_groups"][0].update(lr=float("nan")), ValueError, "finite"),
        ("missing lr", lambda s: _set(s, ["param_groups", 0, "lr"], _DELETE), ValueError, "no 'lr'"),
        ("shape", lambda s: _set(s, ["state", 1, key], np.zeros(arr.size + 1, arr.dtype)), ValueError,
         rf"state_dict\['state'\]\[1\]\['{key}'\] must have the shape of params\[1\]"),
        ("dtype", lambda s: _set(s, ["state", 1, key], arr.astype(np.float32)), TypeError,
         rf"\['state'\]\[1\]\['{key}'\] must have the dtype"),
        ("not array", lambda s: _set(s, ["state", 1, key], arr.tolist()), TypeError, "must be an ndarray"),
        ("unknown key", lambda s: _set(s, ["state", 0, "bogus"], np.zeros(2)), ValueError, "unexpected entries"),
        ("missing state", lambda s: _set(s, ["state", 2], _DELETE), ValueError, "an entry for each parameter"),
        ("state not dict", lambda s: _set(s, ["state", 0], [1, 2]), TypeError, r"\['state'\]\[0\] must be a dict"),
        ("no state", lambda s: _set(s, ["state"], _DELETE), ValueError, "no 'state'"),
        ("groups not list", lambda s: _set(s, ["param_groups"], 3), TypeError, "must be a list"),
    ]
    if any(sc.name == "step" for sc in cls._RULE.scalars):
        cases += [
            ("negative step", lambda s: _set(s, ["state", 0, "step"], -1), ValueError, r"\['step'\] must be >= 0"),
            ("float step", lambda s: _set(s, ["state", 0, "step"], 2.5), TypeError, r"\['step'\] must be an int"),
        ]
    if cls._RULE.state[0].when is None:
        cases.append(("missing required", lambda s: _set(s, ["state", 0, key], _DELETE), ValueError, f"no '{key}'"))
    if cls is optim.NAdam:
        cases += [("mu_product", lambda s: _set(s, ["state", 0, "mu_product"], 1.5), ValueError,
                   r"\['mu_product'\] must be <= 1"),
                  ("huge mu_product", lambda s: _set(s, ["state", 0, "mu_product"], 10 ** 400), ValueError,
                   r"\['mu_product'\] must be a finite real number")]
    return cases


@pytest.mark.parametrize("cls", CLASSES)
def test_bad_state_dicts_change_nothing(cls):
    source, _ = stepped(cls)
    opt, grads = stepped(cls, np.random.default_rng(1))
    opt.step(grads)
    for name, mutate, exc, fragment in bad_state_dict_cases(cls, source.state_dict()):
        sd = source.state_dict()
        mutate(sd)
        snap = snapshot(opt)
        with pytest.raises(exc, match=fragment):
            opt.load_state_dict(sd)
        assert_same(opt, snap)
    with pytest.raises(TypeError, match="state_dict must be a dict"):
        opt.load_state_dict([1])
    opt.load_state_dict(source.state_dict())  # the intact dict loads
    opt.step(grads)


def test_state_dict_of_other_class_refused():
    sgd, _ = stepped(optim.SGD)
    adam, _ = stepped(optim.Adam)
    snap = snapshot(adam)
    with pytest.raises((ValueError, TypeError)):
        adam.load_state_dict(sgd.state_dict())
    assert_same(adam, snap)


def test_state_dict_with_other_param_names_refused():
    a = optim.SGD({"w": np.ones(2)})
    b = optim.SGD({"v": np.ones(2)})
    with pytest.raises(ValueError, match="param_names"):
        b.load_state_dict(a.state_dict())


def test_load_state_file_with_wrong_shapes_changes_nothing(tmp_path):
    import io
    small = optim.Adam([np.ones(2)])
    big = optim.Adam([np.ones(3)])
    big.step([np.ones(3)])
    buf = io.BytesIO()
    optim.save_state(buf, small)
    buf.seek(0)
    snap = snapshot(big)
    with pytest.raises(ValueError, match="shape"):
        optim.load_state(buf, big)
    assert_same(big, snap)


# ---------------------------------------------------------------- CS231n functions

def snapshot_call(w, dw, config):
    return w.copy(), dw.copy(), None if config is None else {
        k: (v.copy() if isinstance(v, np.ndarray) else copy.deepcopy(v)) for k, v in config.items()}


def assert_call_unchanged(w, dw, config, snap):
    np.testing.assert_array_equal(w, snap[0])
    np.testing.assert_array_equal(dw, snap[1])
    if config is not None:
        assert config.keys() == snap[2].keys()
        for k, v in config.items():
            if isinstance(v, np.ndarray):
                np.testing.assert_array_equal(v, snap[2][k])
                assert v.dtype == snap[2][k].dtype and v.shape == snap[2][k].shape
            elif isinstance(v, float) and v != v:
                assert snap[2][k] != snap[2][k]
            else:
                assert v == snap[2][k]


STATE_KEYS = {optim.sgd: (), optim.sgd_momentum: ("velocity",), optim.nesterov_momentum: ("velocity",),
              optim.adagrad: ("cache",), optim.rmsprop: ("cache",), optim.adam: ("m", "v")}
RULES = list(STATE_KEYS)


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.__name__)
def test_functional_bad_arrays(rule):
    base = np.ones(8)
    w = base[:6].reshape(3, 2)
    for bad_w, bad_dw, exc, fragment in [
        (np.ones((3, 2), np.int32), np.ones((3, 2)), TypeError, "w must have dtype float32 or float64"),
        (np.ones((3, 2), np.float16), np.ones((3, 2)), TypeError, "w must have dtype"),
        (np.ones((3, 2), np.complex64), np.ones((3, 2)), TypeError, "w must have dtype"),
        (np.ones((3, 4))[:, ::2], np.ones((3, 2)), ValueError, "w must be C-contiguous"),
        (None, np.ones((3, 2)), TypeError, "w must be a NumPy array"),
        ([[1.0]], np.ones((3, 2)), TypeError, "w must be a NumPy array"),
        (w, np.ones((3, 2), np.float32), TypeError, "dw must have the dtype of w"),
        (w, np.ones((2, 3)), ValueError, r"dw must have the shape of w \(3, 2\)"),
        (w, None, TypeError, "dw must be a NumPy array"),
        (w, np.ones((3, 4))[:, ::2], ValueError, "dw must be C-contiguous"),
        (w, w, ValueError, "same array"),
        (w, base[2:].reshape(3, 2), ValueError, "overlaps"),
    ]:
        config = {"learning_rate": 0.1}
        snap = snapshot_call(w, np.ones(1), config)
        with pytest.raises(exc, match=fragment):
            rule(bad_w, bad_dw, config)
        assert_call_unchanged(w, np.ones(1), config, snap)
    ro = np.ones(3)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="w must be writeable"):
        rule(ro, np.ones(3))
    with pytest.raises(TypeError, match="config must be a dict"):
        rule(w, np.ones((3, 2)), [("learning_rate", 0.1)])
    np.testing.assert_array_equal(w, np.ones((3, 2)))


@pytest.mark.parametrize("rule", [r for r in RULES if STATE_KEYS[r]], ids=lambda r: r.__name__)
def test_functional_bad_state_arrays(rule):
    w, dw = np.ones((3, 2)), np.full((3, 2), 0.5)
    keys = STATE_KEYS[rule]
    for key in keys:
        for bad, exc, fragment in [
            (np.zeros((3, 2), np.float32), TypeError, f"config\\['{key}'\\] must have the dtype of w"),
            (np.zeros(6), ValueError, f"config\\['{key}'\\] must have the shape of w"),
            (np.zeros((3, 4))[:, ::2], ValueError, f"config\\['{key}'\\] must be C-contiguous"),
            (None, TypeError, f"config\\['{key}'\\] must be a NumPy array"),
            (0.0, TypeError, f"config\\['{key}'\\] must be a NumPy array"),
            (w, ValueError, "same array"),
            (dw, ValueError, "same array"),
        ]:
            config = {k: np.zeros((3, 2)) for k in keys}
            config[key] = bad
            snap = snapshot_call(w, dw, config)
            with pytest.raises(exc, match=fragment):
                rule(w, dw, config)
            assert_call_unchanged(w, dw, config, snap)
        ro = np.zeros((3, 2))
        ro.flags.writeable = False
        config = {k: np.zeros((3, 2)) for k in keys}
        config[key] = ro
        with pytest.raises(ValueError, match="writeable"):
            rule(w, dw, config)
    if len(keys) == 2:
        shared = np.zeros((3, 2))
        with pytest.raises(ValueError, match="same array"):
            rule(w, dw, {keys[0]: shared, keys[1]: shared})
    np.testing.assert_array_equal(w, np.ones((3, 2)))


FUNC_BAD_HYPER = [
    (optim.sgd, "learning_rate", -1.0, ValueError, ">= 0"),
    (optim.sgd, "learning_rate", float("nan"), ValueError, "finite"),
    (optim.sgd, "learning_rate", "1e-2", TypeError, "real number"),
    (optim.sgd_momentum, "momentum", 1.0, ValueError, "< 1.0"),
    (optim.sgd_momentum, "learning_rate", float("inf"), ValueError, "finite"),
    (optim.nesterov_momentum, "momentum", -0.1, ValueError, ">= 0"),
    (optim.adagrad, "epsilon", -1e-8, ValueError, ">= 0"),
    (optim.rmsprop, "decay_rate", 1.0, ValueError, "< 1.0"),
    (optim.rmsprop, "learning_rate", None, TypeError, "real number"),
    (optim.adam, "beta1", 1.0, ValueError, "< 1.0"),
    (optim.adam, "beta2", -0.5, ValueError, ">= 0"),
    (optim.adam, "epsilon", float("nan"), ValueError, "finite"),
    (optim.adam, "t", -1, ValueError, ">= 0"),
    (optim.adam, "t", 1.5, TypeError, "an int"),
]


@pytest.mark.parametrize("rule, key, value, exc, fragment", FUNC_BAD_HYPER,
                         ids=[f"{r.__name__}-{k}-{v!r}" for r, k, v, _, _ in FUNC_BAD_HYPER])
def test_functional_bad_hyperparameters_change_nothing(rule, key, value, exc, fragment):
    w, dw = np.ones(4), np.full(4, 0.5)
    rule(w, dw, {})  # state exists in a config after a good step
    config = {key: value}
    for state_key in STATE_KEYS[rule]:
        config[state_key] = np.full(4, 0.25)
    snap = snapshot_call(w, dw, config)
    with pytest.raises(exc, match=fragment) as info:
        rule(w, dw, config)
    assert f"config[{key!r}]" in str(info.value)
    assert_call_unchanged(w, dw, config, snap)
    # An empty config is not filled in by a call that fails.
    empty = {key: value}
    with pytest.raises(exc):
        rule(w, dw, empty)
    assert list(empty) == [key]
