"""The cached step's positional kernel call and the even split of a step over threads (branch step,
fourth pass, issue 11).

The cached step calls the compiled kernel positionally only while kernels() hands back the very
function the call was checked against (its argument names read from its code object); a wrapper
(the tests' call recorders) gets the keyword call. Both must give the validated path's bits. With
several threads an untracked step splits the elements evenly (boundaries inside the 16384-element
chunks): the bits must not depend on the thread count, and must equal the NumPy twin's."""
import numpy as np
import pytest

import fastopt
from fastopt import _backend, optim
from fastopt.flat import FlatParams
from fastopt.optim._base import _positional
from test_optim_small_step import CASES, IDS, arrays, assert_same, fill

SIZES = [1000] * 3 + [1, 7, 1023, 16385]


def _separate(cls, kw, dtype, **opts):
    return cls(arrays(dtype, sizes=SIZES), **kw, **opts)


def _flat(cls, kw, dtype, **opts):
    flat = FlatParams({f"p{i}": a for i, a in enumerate(arrays(dtype, sizes=SIZES))})
    return cls(list(flat.params.values()), **kw, **opts)


def _flat_grads(dtype):
    return list(FlatParams({f"p{i}": a for i, a in enumerate(arrays(dtype, seed=1, sizes=SIZES))}).params.values())


@pytest.mark.parametrize("cls, kw", CASES, ids=IDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("make", [_separate, _flat], ids=["separate", "flat"])
@pytest.mark.parametrize("ema", [None, 0.9])
def test_the_positional_call_is_taken_and_gives_the_validated_bits(cls, kw, dtype, make, ema):
    fast, slow = make(cls, kw, dtype, ema=ema), make(cls, kw, dtype, ema=ema)
    grads = arrays(dtype, seed=1, sizes=SIZES) if make is _separate else _flat_grads(dtype)
    for step in range(7):
        fill(grads, 10 + step)
        fast.step(grads)                        # the same gradient objects: cached from step 2 on
        slow.step([g.copy() for g in grads])    # new objects every step: always validated
        if step:
            calls = [entry[3] for entry in fast._fast.entries]
            assert all(c.arrays is not None and c.fn is getattr(_backend.kernels("optim"), c.name)
                       for c in calls)
            # one multi-kernel call: a flat group's plan holds its buffer as one tensor
            assert [c.plan.n_segments for c in calls] == [len(SIZES) if make is _separate else 1]
    assert_same(fast, slow)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_wrapped_kernel_module_gets_keywords_and_the_same_bits(dtype, monkeypatch):
    from _kernel_calls import count_kernel_calls
    plain, wrapped = _separate(optim.Adam, dict(lr=1e-2), dtype), _separate(optim.Adam, dict(lr=1e-2), dtype)
    grads = arrays(dtype, seed=1, sizes=SIZES)
    fill(grads, 3)
    plain.step(grads)
    plain.step(grads)
    calls = count_kernel_calls(monkeypatch)      # asserts that every call it sees has keywords only
    wrapped.step(grads)
    wrapped.step(grads)
    assert calls == ["adam_step"] * len(SIZES) + ["adam_multi"]
    assert_same(plain, wrapped)


def test_positional_needs_exactly_the_checked_argument_names():
    def kernel(plan, lr, beta1, track_ratio, n_threads):
        pass
    assert _positional(kernel, {"plan": 1}, ("lr", "beta1"), ("track_ratio", "n_threads")) == (1,)
    assert _positional(kernel, {"plan": 1}, ("beta1", "lr"), ("track_ratio", "n_threads")) is None
    assert _positional(kernel, {"plan": 1}, ("lr", "beta1", "eps"), ("track_ratio", "n_threads")) is None
    assert _positional(kernel, {"param": 1}, ("lr", "beta1"), ("track_ratio", "n_threads")) is None
    assert _positional(kernel, {"plan": 1}, ("lr",), ("beta1", "track_ratio", "n_threads")) is None
    assert _positional(lambda *a, **k: None, {"plan": 1}, ("lr", "beta1"), ("track_ratio", "n_threads")) is None

    def flat(grad, param, lr, beta1, n_threads):
        pass
    assert _positional(flat, {"param": "p", "grad": "g"}, ("lr", "beta1"), ("n_threads",)) == ("g", "p")


def test_a_rebound_hyperparameter_is_seen_by_the_cached_step():
    fast, slow = (_separate(optim.Adam, dict(lr=1e-2), np.float64) for _ in range(2))
    grads = arrays(np.float64, seed=1, sizes=SIZES)
    for step, lr in enumerate([1e-2, 1e-2, 3e-3, 3e-3, np.float64(3e-3), 1e-3]):
        fill(grads, step)
        for opt in (fast, slow):
            opt.param_groups[0]["lr"] = lr
        fast.step(grads)
        slow.step([g.copy() for g in grads])
        assert type(fast.param_groups[0]["lr"]) is float   # np.float64 was validated and normalized
    assert_same(fast, slow)
    fast.param_groups[0]["lr"] = -1.0
    before = [p.copy() for p in fast.param_groups[0]["params"]]
    with pytest.raises(ValueError, match="lr"):
        fast.step(grads)
    assert all(np.array_equal(a, b) for a, b in zip(before, fast.param_groups[0]["params"]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cls, kw", [(optim.Adam, dict(lr=1e-2, weight_decay=0.01)),
                                     (optim.SGD, dict(lr=0.1, momentum=0.9)), (optim.Lion, dict(lr=1e-3))],
                         ids=["Adam", "SGD", "Lion"])
def test_the_even_thread_split_keeps_the_bits_of_one_thread_and_the_twin(dtype, cls, kw):
    # sizes put the split points inside chunks, at odd places, and past 1M elements
    sizes = [1_000_003, 7, 65_537, 16_383, 100_001]
    results = []
    with _backend.preserved():
        for backend, threads in [("numpy", 1), ("cython", 1), ("cython", 2), ("cython", 3)]:
            _backend.set_backend(backend)
            fastopt.set_num_threads(threads)
            opt = cls(arrays(dtype, sizes=sizes), **kw)
            grads = arrays(dtype, seed=1, sizes=sizes)
            for step in range(3):
                fill(grads, step)
                opt.step(grads)
            results.append(opt)
    for other in results[1:]:
        assert_same(results[0], other)
