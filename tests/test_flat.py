"""fastopt.flat: one contiguous buffer per dtype, parameters as views, and the tiling test."""
import pickle

import numpy as np
import pytest

from fastopt.flat import FlatArrays, FlatParams, tiles_one_buffer


def _model(rng):
    return {"W1": rng.standard_normal((5, 4)).astype(np.float32),
            "b1": rng.standard_normal(4).astype(np.float32),
            "W2": rng.standard_normal((4, 3)),                    # float64: its own buffer
            "b2": rng.standard_normal(3).astype(np.float32)}


def test_views_share_the_buffer_and_keep_values(rng):
    init = _model(rng)
    flat = FlatParams(init)
    assert flat.names == ("W1", "b1", "W2", "b2")
    buf32 = flat.params.buffer(np.float32)
    buf64 = flat.params.buffer("float64")
    assert buf32.shape == (20 + 4 + 3,) and buf64.shape == (12,)
    np.testing.assert_array_equal(buf32, np.concatenate([init["W1"].ravel(), init["b1"], init["b2"]]))
    for name, a in init.items():
        v = flat.params[name]
        assert v.dtype == a.dtype and v.shape == a.shape and v.flags.c_contiguous and v.flags.writeable
        np.testing.assert_array_equal(v, a)
        assert np.shares_memory(v, flat.params.buffer(a.dtype))
        assert not np.shares_memory(v, a)                   # values were copied in, once
        g = flat.grads[name]
        assert g.shape == a.shape and np.all(g == 0)
        assert np.shares_memory(g, flat.grads.buffer(a.dtype))


def test_updates_through_buffer_show_in_views_and_back(rng):
    flat = FlatParams(_model(rng))
    buf = flat.params.buffer(np.float32)
    buf -= 1.0                                              # an optimizer step on the whole buffer
    before = flat.params["b2"].copy()
    flat.params["b2"][...] = 3.0                            # a model writing one view in place
    assert np.all(buf[-3:] == 3.0)
    assert not np.array_equal(before, buf[-3:])
    np.matmul(np.ones((2, 5), np.float32).T, np.ones((2, 4), np.float32), out=flat.grads["W1"])
    assert np.all(flat.grads.buffer(np.float32)[:20] == 2.0)
    flat.grads.zero_()
    assert not flat.grads.buffer(np.float32).any() and not flat.grads.buffer(np.float64).any()


def test_dtype_casts_into_one_buffer_and_list_input(rng):
    flat = FlatParams([np.ones((2, 2)), np.zeros(3, np.float32)], dtype=np.float32)
    assert flat.names == ("0", "1")
    assert list(flat.params.buffers) == [np.dtype(np.float32)]
    assert tiles_one_buffer(list(flat.params.values())) is not None


def test_zeros_like_flat_has_the_same_layout(rng):
    flat = FlatParams(_model(rng))
    state = flat.zeros_like_flat()
    assert isinstance(state, FlatArrays) and list(state) == list(flat.params)
    for name in flat.params:
        assert state[name].shape == flat.params[name].shape
        assert not state[name].any()
    assert not np.shares_memory(state.buffer(np.float32), flat.grads.buffer(np.float32))
    assert np.all(flat.zeros_like_flat(fill=1.5).buffer(np.float64) == 1.5)


def test_assignment_writes_through_and_never_rebinds(rng):
    flat = FlatParams(_model(rng))
    view = flat.params["W1"]
    new = np.full((5, 4), 2.5, np.float32)
    flat.params["W1"] = new                              # CS231n Solver: model.params[p] = next_w
    assert flat.params["W1"] is view and not np.shares_memory(view, new)
    assert np.all(flat.params.buffer(np.float32)[:20] == 2.5)
    flat.params["W1"] = flat.params["W1"]                # an in-place rule returning the same array
    assert np.all(view == 2.5)
    before = flat.params.buffer(np.float32).copy()
    with pytest.raises(ValueError, match=r"W1 has shape \(5, 4\).*shape \(4, 5\)"):
        flat.params["W1"] = np.zeros((4, 5), np.float32)
    with pytest.raises(KeyError, match="'W9' is not one of the flat arrays"):
        flat.params["W9"] = np.zeros(3)
    with pytest.raises(TypeError, match="W1 must be assigned a real NumPy array"):
        flat.params["W1"] = [[0.0] * 4] * 5
    np.testing.assert_array_equal(flat.params.buffer(np.float32), before)
    with pytest.raises(AttributeError):                  # names are never removed
        del flat.params["W1"]
    assert list(flat.params) == ["W1", "b1", "W2", "b2"]


def test_flat_buffers_pickle_round_trip(rng):
    flat = FlatParams(_model(rng))
    restored = pickle.loads(pickle.dumps(flat))
    np.testing.assert_array_equal(restored.params.buffer(np.float32), flat.params.buffer(np.float32))
    assert np.shares_memory(restored.params["W1"], restored.params.buffer(np.float32))


# ------------------------------------------------------------------------------------------------
# tiles_one_buffer
# ------------------------------------------------------------------------------------------------

def test_tiles_positive_whole_buffer_and_runs(rng):
    flat = FlatParams(_model(rng))
    p = flat.params
    whole = tiles_one_buffer([p["W1"], p["b1"], p["b2"]])
    assert whole is not None and np.shares_memory(whole, p.buffer(np.float32))
    assert whole.size == p.buffer(np.float32).size and whole.ndim == 1
    run = tiles_one_buffer([p["b1"], p["b2"]])             # a contiguous run inside the buffer
    assert run.size == 7
    run[...] = -4.0
    assert np.all(p["b1"] == -4.0) and np.all(p["b2"] == -4.0) and not np.any(p["W1"] == -4.0)
    g = tiles_one_buffer([flat.grads["W1"], flat.grads["b1"], flat.grads["b2"]])
    assert g is not None and g.size == whole.size
    assert tiles_one_buffer([p["W2"]]) is not None


def test_tiles_negative_cases(rng):
    flat = FlatParams(_model(rng))
    p = flat.params
    assert tiles_one_buffer([p["W1"], p["b2"]]) is None                   # gap (b1 skipped)
    assert tiles_one_buffer([p["b1"], p["W1"], p["b2"]]) is None          # wrong order
    assert tiles_one_buffer([p["W1"], p["b1"], p["W2"]]) is None          # different dtypes
    assert tiles_one_buffer([p["W1"], p["W1"]]) is None                   # overlap / duplicate
    assert tiles_one_buffer([p["W1"].T]) is None                          # not C-contiguous
    assert tiles_one_buffer([p["W1"][:, :2]]) is None                     # strided view
    assert tiles_one_buffer([np.zeros(3), np.zeros(3)]) is None           # separate arrays
    assert tiles_one_buffer([p["W1"].copy()]) is None                     # owns its memory
    assert tiles_one_buffer([p["W1"], flat.grads["b1"]]) is None          # another buffer
    assert tiles_one_buffer([]) is None
    assert tiles_one_buffer([p["W1"], "b1"]) is None
    ints = np.arange(6)
    assert tiles_one_buffer([ints[:3], ints[3:]]) is None                 # not float


def test_tiles_sees_a_rebound_parameter(rng):
    """After `params[name] = new_array` (not allowed on FlatArrays, but easy on a plain dict)."""
    flat = FlatParams(_model(rng))
    model_params = dict(flat.params)
    model_params["b1"] = model_params["b1"] * 2                           # a fresh array
    assert tiles_one_buffer([model_params[k] for k in ("W1", "b1", "b2")]) is None


# ------------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("arrays,exc,fragment", [
    ({"W": np.zeros(3, np.int64)}, TypeError, "parameter 'W' must have dtype float32 or float64, got int64"),
    ({"W": [1.0, 2.0]}, TypeError, "parameter 'W' must be a NumPy array"),
    ({"": np.zeros(3)}, TypeError, "names must be non-empty str"),
    ({1: np.zeros(3)}, TypeError, "names must be non-empty str"),
    ({}, ValueError, "at least one parameter"),
    (np.zeros(3), TypeError, "must be a dict name -> ndarray or a list"),
])
def test_bad_input(arrays, exc, fragment):
    with pytest.raises(exc, match=fragment):
        FlatParams(arrays)


def test_same_array_twice_is_refused():
    a = np.zeros(3)
    with pytest.raises(ValueError, match="'b' is the same array as 'a'"):
        FlatParams({"a": a, "b": a})


def test_bad_dtype_argument_and_originals_untouched():
    a = np.arange(3.0)
    for dtype, fragment in ((np.int32, "got int32"), ("nonsense", "got 'nonsense'")):
        with pytest.raises(TypeError, match=fragment):
            FlatParams({"a": a}, dtype=dtype)
    np.testing.assert_array_equal(a, [0, 1, 2])


def test_missing_dtype_buffer_raises_keyerror(rng):
    flat = FlatParams({"a": np.zeros(2, np.float32)})
    with pytest.raises(KeyError, match="float64"):
        flat.params.buffer(np.float64)
