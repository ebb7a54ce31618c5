"""FullyConnectedNet's promises (issue 8): all or nothing, threads, validated state, owned gradients."""
import threading

import numpy as np
import pytest

from fastopt.nn import FullyConnectedNet

D, H, C, N = 9, [8, 7], 4, 6


def make(**kw):
    args = dict(hidden_dims=H, input_dim=D, num_classes=C, dtype=np.float64, rng=4, weight_scale=1e-1,
                normalization="batchnorm", dropout_keep_ratio=0.7)
    args.update(kw)
    return FullyConnectedNet(**args)


def batch(n=N, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, D)), rng.integers(0, C, size=n)


def snapshot(model):
    """Everything a call may change: params, grads, bn_params (arrays and settings), the rng state."""
    return ({k: v.copy() for k, v in model.params.items()},
            {k: v.copy() for k, v in model.grads.items()},
            [{k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in p.items()} for p in model.bn_params],
            None if model.rng is None else model.rng.bit_generator.state)


def assert_unchanged(model, snap):
    params, grads, bn, rng_state = snap
    now = snapshot(model)
    for a, b in ((params, now[0]), (grads, now[1])):
        assert all(np.array_equal(a[k], b[k]) for k in a)
    assert len(bn) == len(now[2])
    for p, q in zip(bn, now[2]):
        assert p.keys() == q.keys()
        for k in p:
            assert np.array_equal(p[k], q[k]) if isinstance(p[k], np.ndarray) else p[k] == q[k]
    assert rng_state == now[3]


def trained(**kw):
    model = make(**kw)
    X, y = batch()
    model.loss(X, y, out=model.grads)     # running statistics exist, grads are non-zero
    return model


# ---------------------------------------------------------------- all or nothing


@pytest.mark.parametrize("spoil, exc, fragment", [
    (lambda m: m.bn_params[1].__setitem__("momentum", 2.0), ValueError, r"bn_params\[1\]\['momentum'\]"),
    (lambda m: m.bn_params[1].__setitem__("eps", 0.0), ValueError, r"bn_params\[1\]\['eps'\]"),
    (lambda m: m.bn_params[1].__setitem__("running_var", np.ones(3)), ValueError, r"bn_params\[1\]\['running_var'\]"),
    (lambda m: m.bn_params[1].__setitem__("running_mean", np.ones(7, np.float32)), TypeError,
     r"bn_params\[1\]\['running_mean'\]"),
    (lambda m: m.bn_params[1].__setitem__("running_mean", m.bn_params[1]["running_var"]), ValueError,
     "running_var"),
    (lambda m: m.dropout_param.__setitem__("p", 1.5), ValueError, r"dropout_param\['p'\]"),
    (lambda m: m.dropout_param.__setitem__("rng", "nope"), TypeError, r"dropout_param\['rng'\]"),
    (lambda m: m.bn_params[1].__setitem__("running_mean", m.params["gamma2"]), ValueError, "overlaps"),
    (lambda m: m.bn_params.pop(), ValueError, "bn_params must be a list of 2"),
    # in-place edits of an array already validated by an earlier call are seen too
    (lambda m: setattr(m.bn_params[1]["running_var"].flags, "writeable", False), ValueError, "writeable"),
    (lambda m: setattr(m.bn_params[0]["running_mean"], "shape", (2, 4)), ValueError, r"bn_params\[0\]"),
    (lambda m: setattr(m, "reg", -1.0), ValueError, "reg"),
    (lambda m: setattr(m, "reg_type", "l3"), ValueError, "reg_type"),
])
def test_a_bad_later_setting_changes_nothing(spoil, exc, fragment):
    model = trained()
    spoil(model)
    snap = snapshot(model)
    X, y = batch(seed=1)
    with pytest.raises(exc, match=fragment):
        model.loss(X, y)
    with pytest.raises(exc, match=fragment):
        model.loss(X, y, out=model.grads)
    assert_unchanged(model, snap)


def test_layernorm_settings_live_in_bn_params_and_are_validated():
    model = trained(normalization="layernorm")
    assert model.bn_params == [{}, {}] or all("eps" not in p for p in model.bn_params)
    assert model.ln_params is model.bn_params
    model.bn_params[1]["eps"] = -1.0
    snap = snapshot(model)
    with pytest.raises(ValueError, match=r"bn_params\[1\]\['eps'\]"):
        model.loss(*batch())
    assert_unchanged(model, snap)


@pytest.mark.parametrize("bad_out, exc", [
    (lambda m: {k: v for k, v in list(m.grads.items())[1:]}, ValueError),
    (lambda m: {k: v.astype(np.float32) for k, v in m.grads.items()}, TypeError),
    (lambda m: {k: (m.params[k] if k == "W2" else np.zeros_like(v)) for k, v in m.grads.items()}, ValueError),
    (lambda m: {k: np.zeros((1,) + v.shape) for k, v in m.grads.items()}, ValueError),
    (lambda m: [np.zeros_like(v) for v in m.grads.values()], ValueError),
])
def test_bad_out_changes_nothing(bad_out, exc):
    model = trained()
    out = bad_out(model)
    snap = snapshot(model)
    with pytest.raises(exc, match="out"):
        model.loss(*batch(seed=2), out=out)
    assert_unchanged(model, snap)


def test_out_needs_a_training_call():
    model = trained()
    with pytest.raises(ValueError, match="out="):
        model.loss(batch()[0], out=model.grads)


def test_normalization_given_an_ndarray_is_a_clear_error():
    with pytest.raises(TypeError, match="normalization must be None, 'batchnorm' or 'layernorm'"):
        FullyConnectedNet([3], input_dim=2, num_classes=2, normalization=np.array(["batchnorm"]))
    with pytest.raises(TypeError, match="weight_init"):
        FullyConnectedNet([3], input_dim=2, num_classes=2, weight_init=np.array([1.0]))


def test_seed_and_rng_exclude_each_other_and_dropout_alias_conflicts():
    with pytest.raises(ValueError, match="not both"):
        FullyConnectedNet([3], input_dim=2, num_classes=2, seed=1, rng=1)
    with pytest.raises(ValueError, match="not both"):
        FullyConnectedNet([3], input_dim=2, num_classes=2, dropout_keep_ratio=0.5, dropout=0.5)
    with pytest.raises(ValueError, match="KEEPING"):
        FullyConnectedNet([3], input_dim=2, num_classes=2, dropout=0)
    with pytest.raises(TypeError, match="rng"):
        FullyConnectedNet([3], input_dim=2, num_classes=2, rng="seed")


# ---------------------------------------------------------------- owned gradients, the flat buffer


def test_loss_returns_arrays_the_caller_owns():
    model = make()
    X, y = batch()
    _, g1 = model.loss(X, y)
    keep = {k: v.copy() for k, v in g1.items()}
    model.loss(*batch(seed=5))
    model.loss(*batch(seed=6), out=model.grads)
    assert all(np.array_equal(g1[k], keep[k]) for k in keep)
    assert not any(np.shares_memory(g1[k], model.grads[k]) or np.shares_memory(g1[k], model.params[k])
                   for k in g1)


def test_out_grads_equal_owned_grads():
    a, b = make(), make()
    X, y = batch()
    la, ga = a.loss(X, y)
    lb, gb = b.loss(X, y, out=b.grads)
    assert gb is b.grads and la == lb
    assert all(np.array_equal(ga[k], gb[k]) for k in ga)
    mine = {k: np.zeros_like(v) for k, v in a.grads.items()}   # any mapping of writeable arrays
    c = make()
    lc, gc = c.loss(X, y, out=mine)
    assert gc is mine and lc == la and all(np.array_equal(ga[k], mine[k]) for k in ga)


def test_assigning_params_copies_into_the_buffer_all_or_nothing():
    model = make()
    ids = {k: id(v) for k, v in model.params.items()}
    new = {k: np.full(v.shape, 0.5) for k, v in model.params.items()}
    model.params = new
    assert all(np.all(model.params[k] == 0.5) for k in new) and {k: id(v) for k, v in model.params.items()} == ids
    bad = dict(new, W2=np.zeros((2, 2)))
    before = {k: v.copy() for k, v in model.params.items()}
    bad["W1"] = np.zeros_like(new["W1"])
    with pytest.raises(ValueError, match="W2"):
        model.params = bad
    assert all(np.array_equal(before[k], model.params[k]) for k in before)


# ---------------------------------------------------------------- state_dict validation


def _state(model):
    return model.state_dict()


@pytest.mark.parametrize("tamper, fragment", [
    (lambda s: s["bn_params"][1].__setitem__("running_mean", np.ones(7, np.float32)), "dtype"),
    (lambda s: s["bn_params"][1].__setitem__("running_var", np.ones(6)), r"\(7,\)"),
    (lambda s: s["bn_params"][1].__setitem__("running_var", [1.0] * 7), "running_var"),
    (lambda s: s["bn_params"][1].__setitem__("eps", -1e-5), "eps"),
    (lambda s: s["bn_params"][1].__setitem__("momentum", float("nan")), "momentum"),
    (lambda s: s["bn_params"][1].__setitem__("momentum", "0.9"), "momentum"),
    (lambda s: s["bn_params"][0].__setitem__("evil", "os:system"), "unknown keys"),
    (lambda s: s.__setitem__("rng", {"bit_generator": "MT19937"}), "rng"),
    (lambda s: s["params"].__setitem__("W3", np.zeros((7, 4), np.float32)), "W3"),
    (lambda s: s.__setitem__("extra", 1), "unknown keys"),
    (lambda s: s["bn_params"].pop(), "bn_params"),
])
def test_load_state_dict_validates_everything_before_assigning(tamper, fragment):
    model = trained()
    state = _state(model)
    # a state from a different point of training: if anything were assigned before the error, it shows
    other = trained()
    other.loss(*batch(seed=9))
    state = other.state_dict()
    tamper(state)
    snap = snapshot(model)
    with pytest.raises((ValueError, TypeError), match=fragment):
        model.load_state_dict(state)
    assert_unchanged(model, snap)


def test_state_roundtrip_restores_masks_and_statistics():
    model = trained()
    state = model.state_dict()
    X, y = batch(seed=3)
    ref = model.loss(X, y)
    model.loss(X, y)
    model.load_state_dict(state)
    again = model.loss(X, y)
    assert ref[0] == again[0] and all(np.array_equal(ref[1][k], again[1][k]) for k in ref[1])


def test_rng_state_into_a_model_without_a_stream_is_refused():
    state = trained().state_dict()
    cs231n = make(rng=None, seed=3)
    with pytest.raises(ValueError, match="rng"):
        cs231n.load_state_dict(state)


# ---------------------------------------------------------------- threads


def test_two_threads_on_one_model_serialize():
    model = make(dropout_keep_ratio=1, normalization="layernorm", hidden_dims=[64, 64], rng=1)
    batches = [batch(n=32, seed=s) for s in range(8)]
    expected = [model.loss(X, y) for X, y in batches]     # layernorm, no dropout: calls are pure
    results = {}
    errors = []

    def work(tid):
        try:
            for rep in range(15):
                for j, (X, y) in enumerate(batches):
                    results.setdefault((tid, j), []).append(model.loss(X, y))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for (tid, j), outs in results.items():
        for loss, grads in outs:
            assert loss == expected[j][0]
            assert all(np.array_equal(grads[k], expected[j][1][k]) for k in grads)


def test_models_in_threads_match_sequential_runs_bitwise():
    def run(model):
        out = []
        for s in range(6):
            X, y = batch(n=24, seed=s)
            loss, grads = model.loss(X, y, out=model.grads)
            out.append(loss)
            for k in grads:
                model.params[k] -= 0.1 * grads[k]
        return out, {k: v.copy() for k, v in model.params.items()}, model.rng.bit_generator.state

    sequential = [run(make(rng=i)) for i in range(3)]
    models = [make(rng=i) for i in range(3)]
    threaded = [None] * 3

    def work(i):
        threaded[i] = run(models[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for (la, pa, ra), (lb, pb, rb) in zip(sequential, threaded):
        assert la == lb and ra == rb
        assert all(np.array_equal(pa[k], pb[k]) for k in pa)


def test_pickled_model_gets_a_fresh_lock():
    import pickle
    model = trained()
    clone = pickle.loads(pickle.dumps(model))
    assert clone._lock is not model._lock
    X, y = batch()
    assert clone.loss(X, y)[0] == model.loss(X, y)[0]


# ---------------------------------------------------------------- randomness modes


def test_rng_generator_and_int_are_reproducible_streams():
    X, y = batch()
    a = make(rng=np.random.default_rng(5))
    b = make(rng=np.random.default_rng(5))
    la = [a.loss(X, y)[0] for _ in range(3)]
    lb = [b.loss(X, y)[0] for _ in range(3)]
    assert la == lb and len(set(la)) == 3          # same stream, a fresh mask each call
    c, d = make(rng=7), make(rng=7)
    assert all(np.array_equal(c.params[k], d.params[k]) for k in c.params)


def test_seed_gives_the_same_mask_every_call_and_weights_follow_numpy_global_state():
    X, y = batch()
    np.random.seed(0)
    a = make(rng=None, seed=3)
    np.random.seed(0)
    b = make(rng=None, seed=99)
    assert all(np.array_equal(a.params[k], b.params[k]) for k in a.params)   # seed does not choose weights
    assert a.rng is None and a.dropout_param == {"mode": "train", "p": 0.7, "seed": 3}
    assert a.loss(X, y)[0] == a.loss(X, y)[0] != b.loss(X, y)[0]
    # a call leaves the global state where CS231n's np.random.seed(seed) + rand leave it
    a.loss(X, y)
    after = np.random.rand()
    np.random.seed(3)
    np.random.rand(N, H[-1])
    assert after == np.random.rand()


def test_read_only_grads_buffer_is_refused_before_anything_changes():
    model = trained()
    model.grads["b2"].flags.writeable = False
    snap = snapshot(model)
    with pytest.raises(ValueError, match=r"model.grads\['b2'\]"):
        model.loss(*batch(), out=model.grads)
    assert_unchanged(model, snap)


@pytest.mark.parametrize("kw", [dict(rng=None), dict(rng=None, seed=1, dropout_keep_ratio=0.5),
                                dict(normalization="layernorm", reg=0.3)])
def test_softmax_classifier_without_hidden_layers(kw):
    model = make(hidden_dims=[], **kw)
    X, y = batch()
    loss, grads = model.loss(X, y)
    assert sorted(grads) == ["W1", "b1"] and model.loss(X).shape == (N, C)
    model.fast_path = False
    assert model.loss(X, y)[0] == pytest.approx(loss, rel=1e-12)
