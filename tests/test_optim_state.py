"""Optimizer state: state_dict() is plain data, round-trips through pickle and np.savez, and a
restored optimizer continues bit for bit."""
import io
import pickle

import numpy as np
import pytest

from fastopt import optim

CONFIGS = [
    (optim.SGD, dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=1e-3)),
    (optim.SGD, dict(lr=0.05, momentum=0.9, nesterov=True)),
    (optim.Adagrad, dict(lr=0.1, lr_decay=0.01, initial_accumulator_value=0.1)),
    (optim.RMSprop, dict(lr=0.01, momentum=0.5, centered=True, weight_decay=0.01)),
    (optim.Adam, dict(lr=0.01, amsgrad=True, weight_decay=0.01)),
    (optim.AdamW, dict(lr=0.01, betas=(0.8, 0.95))),
]
IDS = [f"{cls.__name__}-{i}" for i, (cls, _) in enumerate(CONFIGS)]


def make_params(rng, dtype=np.float32):
    return {"W1": rng.standard_normal((4, 3)).astype(dtype), "b1": rng.standard_normal(3).astype(dtype),
            "W2": rng.standard_normal((3, 2)).astype(np.float64)}


def make_groups(params, extra):
    return [{"params": {"W1": params["W1"], "b1": params["b1"]}},
            {"params": {"W2": params["W2"]}, **extra}]


def grad_stream(rng, params, n):
    return [{k: rng.standard_normal(v.shape).astype(v.dtype) for k, v in params.items()} for _ in range(n)]


def pickle_round_trip(opt, target):
    target.load_state_dict(pickle.loads(pickle.dumps(opt.state_dict())))


def savez_round_trip(opt, target):
    buf = io.BytesIO()
    optim.save_state(buf, opt)
    buf.seek(0)
    optim.load_state(buf, target)


def manual_savez_round_trip(opt, target):
    buf = io.BytesIO()
    np.savez(buf, **optim.state_to_arrays(opt.state_dict()))
    buf.seek(0)
    with np.load(buf) as data:  # allow_pickle=False: the file holds no pickles
        target.load_state_dict(optim.state_from_arrays(data))


@pytest.mark.parametrize("round_trip", [pickle_round_trip, savez_round_trip, manual_savez_round_trip])
@pytest.mark.parametrize("cls, kwargs", CONFIGS, ids=IDS)
def test_restored_optimizer_continues_bit_for_bit(cls, kwargs, round_trip, rng):
    params = make_params(rng)
    extra = {"lr": kwargs["lr"] * 2}
    opt = cls(make_groups(params, extra), **kwargs)
    grads = grad_stream(rng, params, 10)
    for g in grads[:5]:
        opt.step(g)
    saved = {k: v.copy() for k, v in params.items()}
    holder = cls(make_groups({k: v.copy() for k, v in params.items()}, {}), lr=0.123)  # other settings

    # Save now, keep going on the original.
    blob = opt.state_dict()
    for g in grads[5:]:
        opt.step(g)

    restored_params = {k: v.copy() for k, v in saved.items()}
    fresh = cls(make_groups(restored_params, {}), lr=0.999)
    holder.load_state_dict(blob)  # blob was taken at step 5; later steps of `opt` must not show in it
    round_trip(holder, fresh)
    assert fresh.param_groups[1]["lr"] == extra["lr"] and fresh.param_groups[0]["lr"] == kwargs["lr"]
    for g in grads[5:]:
        fresh.step(g)
    for k in params:
        np.testing.assert_array_equal(restored_params[k], params[k], err_msg=k)
    for a, b in zip(fresh.state, opt.state):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_state_dict_is_plain_data_with_indices_and_names(rng):
    params = make_params(rng)
    opt = optim.Adam(make_groups(params, {"lr": 0.5}), lr=0.01)
    opt.step(grad_stream(rng, params, 1)[0])
    sd = opt.state_dict()
    assert set(sd) == {"state", "param_groups"}
    assert [g["params"] for g in sd["param_groups"]] == [[0, 1], [2]]
    assert [g["param_names"] for g in sd["param_groups"]] == [["W1", "b1"], ["W2"]]
    assert sd["param_groups"][1]["lr"] == 0.5 and sd["param_groups"][0]["betas"] == (0.9, 0.999)
    assert sorted(sd["state"]) == [0, 1, 2]
    st = sd["state"][0]
    assert st["step"] == 1 and type(st["step"]) is int
    assert st["exp_avg"].shape == (4, 3) and st["exp_avg"].dtype == np.float32
    assert sd["state"][2]["exp_avg"].dtype == np.float64

    def plain(x):
        if isinstance(x, dict):
            return all(isinstance(k, (str, int)) and plain(v) for k, v in x.items())
        if isinstance(x, (list, tuple)):
            return all(plain(v) for v in x)
        return isinstance(x, (np.ndarray, int, float, str, bool))
    assert plain(sd)


def test_state_dict_arrays_are_copies_and_load_copies_in(rng):
    p = np.ones(3)
    opt = optim.Adam([p], lr=0.1)
    opt.step([np.ones(3)])
    sd = opt.state_dict()
    before = sd["state"][0]["exp_avg"].copy()
    opt.step([np.ones(3)])
    np.testing.assert_array_equal(sd["state"][0]["exp_avg"], before)
    assert sd["state"][0]["step"] == 1

    other = optim.Adam([np.ones(3)], lr=0.1)
    other.load_state_dict(sd)
    assert other.state[0]["exp_avg"] is not sd["state"][0]["exp_avg"]
    other.step([np.ones(3)])
    np.testing.assert_array_equal(sd["state"][0]["exp_avg"], before)


def test_load_keeps_group_dicts_and_restores_hyperparameters():
    opt = optim.SGD([np.ones(2)], lr=0.1, momentum=0.5)
    target = optim.SGD([np.ones(2)], lr=0.7)
    group = target.param_groups[0]
    target.load_state_dict(opt.state_dict())
    assert target.param_groups[0] is group
    assert group["lr"] == 0.1 and group["momentum"] == 0.5
    assert group["params"][0] is target._params[0].array


def test_state_before_any_step_round_trips():
    opt = optim.Adagrad([np.ones(2)], initial_accumulator_value=0.5)
    sd = opt.state_dict()
    assert sd["state"][0]["step"] == 0
    np.testing.assert_array_equal(sd["state"][0]["sum"], [0.5, 0.5])
    target = optim.Adagrad([np.ones(2)])
    target.load_state_dict(sd)
    np.testing.assert_array_equal(target.state[0]["sum"], [0.5, 0.5])


def test_savez_file_on_disk_loads_without_pickle(tmp_path, rng):
    params = make_params(rng)
    opt = optim.RMSprop(make_groups(params, {"centered": True}), lr=0.01, momentum=0.9)
    for g in grad_stream(rng, params, 3):
        opt.step(g)
    path = tmp_path / "opt.npz"
    optim.save_state(path, opt)
    with np.load(path, allow_pickle=False) as data:
        assert "__meta__" in data.files
        assert "state/0/square_avg" in data.files and data["state/0/square_avg"].dtype == np.float32
    target = optim.RMSprop(make_groups({k: v.copy() for k, v in params.items()}, {}), lr=0.01)
    optim.load_state(path, target)
    assert target.param_groups[1]["centered"] is True and target.param_groups[0]["momentum"] == 0.9
    for a, b in zip(target.state, opt.state):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def test_state_to_arrays_refuses_non_plain_group_values():
    opt = optim.SGD([np.ones(2)])
    opt.param_groups[0]["callback"] = object()
    with pytest.raises(TypeError, match="cannot store"):
        optim.state_to_arrays(opt.state_dict())


def test_state_from_arrays_refuses_foreign_files():
    with pytest.raises(ValueError, match="no '__meta__'"):
        optim.state_from_arrays({"x": np.zeros(2)})
    with pytest.raises(ValueError, match="format"):
        optim.state_from_arrays({"__meta__": np.array('{"format": "other"}')})


# ---------------------------------------------------------------- state placement within pages
from fastopt.flat import FlatParams  # noqa: E402
from fastopt.optim import _base  # noqa: E402

BIG = {"W": (300, 100), "b": (20000,)}  # 120 kB and 80 kB in float32: above _PLACE_MIN_BYTES
PLACED_CONFIGS = CONFIGS + [(optim.RMSprop, dict(lr=0.01, momentum=0.5, centered=True))]


def _expected_offset(slot):
    return _base._PLACE_STRIDE * (slot + 1) % _base._PAGE


def _check_placed(opt, params):
    offsets = set()
    for i, p in enumerate(params):
        st = opt.state[i]
        for slot, key in enumerate(s.name for s in opt._RULE.state):
            a = st[key]
            if a.size == 0:
                continue
            assert a.shape == p.shape and a.dtype == p.dtype, key
            assert a.flags.c_contiguous and a.flags.writeable, key
            assert a.ctypes.data % _base._PAGE == _expected_offset(slot), key
            offsets.add((slot, a.ctypes.data % _base._PAGE))
    return offsets


@pytest.mark.parametrize("flat", [False, True], ids=["loose", "flat"])
@pytest.mark.parametrize("cls, kwargs", PLACED_CONFIGS, ids=[f"{c.__name__}-{i}" for i, (c, _) in
                                                             enumerate(PLACED_CONFIGS)])
def test_large_state_arrays_start_at_distinct_page_offsets(cls, kwargs, flat, rng, kernel_calls):
    arrays = {k: rng.standard_normal(s).astype(np.float32) for k, s in BIG.items()}
    if flat:
        fp = FlatParams(arrays)
        params = dict(fp.params)
        # a group buffer's first parameter starts where the buffer does
        first = list(params)[0]
    else:
        params = arrays
    opt = cls(params, **kwargs)
    if cls is optim.Adagrad:  # a subclass's own initial value survives the move into place
        for st in opt.state:
            np.testing.assert_array_equal(st["sum"], np.float32(kwargs["initial_accumulator_value"]))
    grads = grad_stream(rng, arrays, 3)
    for g in grads[:2]:
        kernel_calls.clear()
        if flat:   # flat grads too (views of one buffer): the one-call path, state above 64 KiB
            for k in g:
                fp.grads[k][...] = g[k]
            opt.step(dict(fp.grads))
        else:
            opt.step(g)
        assert len(kernel_calls.names("optim")) == (1 if flat else len(params))
    plist = list(params.values())
    if flat:
        # later params of a group buffer are views further in; only the first starts at the offset
        for slot, key in enumerate(s.name for s in opt._RULE.state):
            a = opt.state[0][key]
            if a.size:
                assert a.ctypes.data % _base._PAGE == _expected_offset(slot), (first, key)
                assert opt.state[1][key].ctypes.data == a.ctypes.data + a.nbytes
    else:
        used = _check_placed(opt, plist)
        assert len({off for _, off in used}) == len({slot for slot, _ in used})  # kinds differ
    # state_dict holds plain C-contiguous copies; loading places them again; stepping continues bit
    # for bit against an optimizer that never went through the round trip
    saved = opt.state_dict()
    for i, st in saved["state"].items():
        for key, v in st.items():
            if isinstance(v, np.ndarray) and v.size:
                assert v.flags.c_contiguous and v.shape == plist[i].shape
                assert not np.shares_memory(v, opt.state[i][key])
    blob = pickle.loads(pickle.dumps(saved))
    copies = {k: v.copy() for k, v in params.items()}
    other = cls(copies, **kwargs)
    other.load_state_dict(blob)
    if not flat:
        _check_placed(other, list(copies.values()))
    opt.step(grads[2])
    other.step(grads[2])
    for k in params:
        np.testing.assert_array_equal(copies[k], params[k], err_msg=k)
    for a, b in zip(other.state, opt.state):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_small_state_arrays_are_plain_allocations():
    a = _base.placed_array((7, 3), np.float64, slot=1, fill=0)
    assert a.flags.owndata and a.shape == (7, 3) and not a.any()
    b = _base.placed_array((5000, 7), np.float32, slot=1, fill=2.5)
    assert not b.flags.owndata and b.flags.c_contiguous and b.shape == (5000, 7)
    assert b.ctypes.data % _base._PAGE == _expected_offset(1) and (b == 2.5).all()
