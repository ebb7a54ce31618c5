"""The optimizer classes' flat fast path (fastopt.flat): one kernel call per group, same bits as per parameter."""
import pickle

import numpy as np
import pytest
from _kernel_calls import count_kernel_calls

from fastopt.flat import FlatParams
from fastopt.optim import SGD, Adagrad, Adam, AdamW, RMSprop

SHAPES = {"W1": (13, 7), "b1": (7,), "W2": (7, 5), "b2": (5,), "s": (1,)}

CASES = [
    (SGD, dict(lr=0.1)),
    (SGD, dict(lr=0.1, momentum=0.9, dampening=0.2, weight_decay=0.01)),
    (SGD, dict(lr=0.1, momentum=0.9, nesterov=True, maximize=True)),
    (Adagrad, dict(lr=0.1, lr_decay=0.01, weight_decay=0.01, initial_accumulator_value=0.1)),
    (RMSprop, dict(lr=0.01, alpha=0.9, weight_decay=0.01, momentum=0.5, centered=True)),
    (RMSprop, dict(lr=0.01, maximize=True)),
    (Adam, dict(lr=0.01, betas=(0.8, 0.99), weight_decay=0.01, amsgrad=True)),
    (Adam, dict(lr=0.01, maximize=True)),
    (AdamW, dict(lr=0.01, weight_decay=0.1)),
    (AdamW, dict(lr=0.01, weight_decay=0.1, amsgrad=True)),
]
IDS = [f"{cls.__name__}-{i}" for i, (cls, _) in enumerate(CASES)]


def bits(a):
    return a.view(np.uint32 if a.dtype == np.float32 else np.uint64)


def model(dtype, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {k: rng.standard_normal(s).astype(dtype) for k, s in SHAPES.items()}
    return FlatParams(arrays), arrays


def grad_seq(dtype, steps, seed=1):
    rng = np.random.default_rng(seed)
    return [{k: rng.standard_normal(s).astype(dtype) for k, s in SHAPES.items()} for _ in range(steps)]


def assert_same(opt_a, params_a, opt_b, params_b):
    for k in SHAPES:
        assert np.array_equal(bits(params_a[k]), bits(params_b[k])), k
    assert_same_state(opt_a.state, opt_b.state)


def assert_same_state(state_a, state_b):
    """Two optimizers' per-parameter state: the same keys, bitwise the same arrays and scalars."""
    for sa, sb in zip(state_a, state_b):
        assert sa.keys() == sb.keys()
        for key in sa:
            if isinstance(sa[key], np.ndarray):
                assert np.array_equal(bits(sa[key]), bits(sb[key])), key
            else:
                assert sa[key] == sb[key], key


@pytest.mark.parametrize("cls, opts", CASES, ids=IDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_flat_path_is_bitwise_the_per_param_path(cls, opts, dtype, monkeypatch):
    flat, _ = model(dtype)
    _, loose = model(dtype)                     # same values, separate arrays: per-parameter path
    fa, fg = flat.params, flat.grads
    opt_flat = cls(dict(fa), **opts)
    opt_loose = cls(loose, **opts)
    counts = count_kernel_calls(monkeypatch)
    for g in grad_seq(dtype, 4):
        for k in SHAPES:
            fg[k][...] = g[k]
        opt_flat.step(dict(fg))
        opt_loose.step(g)
    assert len(counts) == 4 + 4 * len(SHAPES)   # one call per flat step, one per param otherwise
    assert_same(opt_flat, fa, opt_loose, loose)
    # State stays per parameter: shaped like the params, views of one buffer per kind.
    for i, k in enumerate(SHAPES):
        for key, v in opt_flat.state[i].items():
            if isinstance(v, np.ndarray) and v.size:
                assert v.shape == SHAPES[k] and v.base is opt_flat.state[0][key].base


@pytest.mark.parametrize("cls, opts", CASES, ids=IDS)
def test_flat_params_with_loose_grads_fall_back_to_the_same_bits(cls, opts):
    flat, _ = model(np.float32)
    _, loose = model(np.float32)
    opt_flat, opt_loose = cls(dict(flat.params), **opts), cls(loose, **opts)
    for g in grad_seq(np.float32, 3):
        opt_flat.step(g)                        # grads are separate arrays: no flat span
        opt_loose.step(g)
    assert_same(opt_flat, flat.params, opt_loose, loose)


@pytest.mark.parametrize("cls, opts", CASES, ids=IDS)
def test_state_dict_round_trip_continues_bit_for_bit(cls, opts, monkeypatch):
    dtype = np.float64
    flat, _ = model(dtype)
    opt = cls(dict(flat.params), **opts)
    grads = grad_seq(dtype, 5)
    for g in grads[:2]:
        for k in SHAPES:
            flat.grads[k][...] = g[k]
        opt.step(dict(flat.grads))
    saved = pickle.loads(pickle.dumps(opt.state_dict()))
    params_saved = {k: v.copy() for k, v in flat.params.items()}
    for g in grads[2:]:
        for k in SHAPES:
            flat.grads[k][...] = g[k]
        opt.step(dict(flat.grads))
    expected = {k: v.copy() for k, v in flat.params.items()}
    # Restore into a NEW flat model + optimizer: load_state_dict copies into one buffer per kind.
    flat2, _ = model(dtype)
    for k in SHAPES:
        flat2.params[k][...] = params_saved[k]
    opt2 = cls(dict(flat2.params), **opts)
    opt2.load_state_dict(saved)
    counts = count_kernel_calls(monkeypatch)
    for g in grads[2:]:
        for k in SHAPES:
            flat2.grads[k][...] = g[k]
        opt2.step(dict(flat2.grads))
    assert len(counts) == 3                      # still the flat path after loading
    for k in SHAPES:
        assert np.array_equal(bits(flat2.params[k]), bits(expected[k])), k
    assert_same(opt2, flat2.params, opt, flat.params)


def test_unequal_steps_after_load_fall_back(monkeypatch):
    flat, _ = model(np.float64)
    _, loose = model(np.float64)
    opt, ref = Adam(dict(flat.params), lr=0.01), Adam(loose, lr=0.01)
    sd = ref.state_dict()
    sd["state"][1]["step"] = 5                           # b1 has taken more steps
    opt.load_state_dict(sd)
    ref.load_state_dict(sd)
    counts = count_kernel_calls(monkeypatch)
    g = grad_seq(np.float64, 1)[0]
    for k in SHAPES:
        flat.grads[k][...] = g[k]
    opt.step(dict(flat.grads))
    ref.step(g)
    assert counts.count("adam_step") == 2 * len(SHAPES)         # both per parameter
    assert_same(opt, flat.params, ref, loose)


def test_mixed_momentum_buffers_after_load_keep_torch_semantics():
    # After loading a state where only some params have a momentum buffer, the others take
    # torch's first step (buf = g) and the group steps per parameter: same as loose arrays.
    flat, _ = model(np.float64)
    _, loose = model(np.float64)
    opts = dict(lr=0.1, momentum=0.9, dampening=0.5)
    opt, ref = SGD(dict(flat.params), **opts), SGD(loose, **opts)
    sd = ref.state_dict()
    sd["state"][0]["momentum_buffer"] = np.ones(SHAPES["W1"])
    opt.load_state_dict(sd)
    ref.load_state_dict(sd)
    for g in grad_seq(np.float64, 2):
        for k in SHAPES:
            flat.grads[k][...] = g[k]
        opt.step(dict(flat.grads))
        ref.step(g)
    assert_same(opt, flat.params, ref, loose)


def test_bad_grad_changes_nothing_on_the_flat_path():
    flat, _ = model(np.float32)
    opt = Adam(dict(flat.params), lr=0.01, amsgrad=True)
    opt.step(dict(flat.grads))
    before = [flat.params.buffer(np.float32).copy()] + [v.copy() for v in opt.state[0].values()
                                                         if isinstance(v, np.ndarray)]
    bad = dict(flat.grads)
    bad["b2"] = np.zeros((5,), np.float64)
    with pytest.raises(TypeError, match="b2"):
        opt.step(bad)
    after = [flat.params.buffer(np.float32)] + [v for v in opt.state[0].values() if isinstance(v, np.ndarray)]
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)
    assert opt.state[0]["step"] == 1


def test_a_group_that_is_a_run_inside_the_buffer_is_flat(monkeypatch):
    flat, _ = model(np.float64)
    p = flat.params
    opt = Adam([{"params": [p["W1"], p["b1"]]}, {"params": [p["W2"], p["b2"], p["s"]], "lr": 0.1}], lr=0.01)
    counts = count_kernel_calls(monkeypatch)
    g = flat.grads
    opt.step([g["W1"], g["b1"], g["W2"], g["b2"], g["s"]])
    assert counts.count("adam_step") == 2


def test_flat_grads_mapping_is_accepted_by_name(monkeypatch):
    # FlatParams.grads is a Mapping (not a dict): step() takes it by name, on the flat path.
    flat, arrays = model(np.float32)
    ref = {k: v.copy() for k, v in arrays.items()}
    opt, ref_opt = Adam(flat.params, lr=0.01), Adam(ref, lr=0.01)
    (g,) = grad_seq(np.float32, 1)
    for k, v in g.items():
        flat.grads[k] = v
    counts = count_kernel_calls(monkeypatch)
    opt.step(flat.grads)
    assert counts.count("adam_step") == 1
    ref_opt.step(g)
    assert_same(opt, flat.params, ref_opt, ref)
