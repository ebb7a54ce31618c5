"""Issue 8's optimizer items, adversarially: aliasing, stale caches, read-only parameters, huge ints,
threads, non-finite gradients. Each bad case snapshots every parameter and state array first and
asserts the exception type, that the message names the culprit, and that nothing changed (bitwise)."""
import threading

import numpy as np
import pytest
from _kernel_calls import count_kernel_calls

from fastopt import _backend, optim
from fastopt.flat import FlatParams
from fastopt.optim._declarations import class_rules

CLASSES = [getattr(optim, r.class_name) for r in class_rules()]
IDS = [c.__name__ for c in CLASSES]


def snapshot(opt):
    return ([r.array.copy() for r in opt._params],
            [{k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in st.items()} for st in opt.state])


def assert_unchanged(opt, snap):
    params, states = snap
    for r, p in zip(opt._params, params):
        assert np.array_equal(r.array, p, equal_nan=True)
    for st, before in zip(opt.state, states):
        assert st.keys() == before.keys()
        for k, v in before.items():
            if isinstance(v, np.ndarray):
                assert np.array_equal(st[k], v, equal_nan=True), k
            else:
                assert st[k] == v, k


def stepped(cls, n=2, **kw):
    rng = np.random.default_rng(0)
    params = [rng.standard_normal((4, 3)), rng.standard_normal(5)]
    opt = cls(params, **kw)
    grads = [rng.standard_normal(p.shape) for p in params]
    for _ in range(n):
        opt.step(grads)
    return opt, params, grads


# ---------------------------------------------------------------- aliasing
@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_grad_that_is_a_view_of_a_param_or_of_state_is_refused(cls):
    opt, params, grads = stepped(cls)
    snap = snapshot(opt)
    bad = [params[0][::-1].copy(), params[0].reshape(-1)[:5]]        # grads[1] views params[0]
    with pytest.raises(ValueError, match=r"grads\[1\] shares memory with params\[0\]"):
        opt.step(bad)
    assert_unchanged(opt, snap)
    arrays = [(k, v) for k, v in opt.state[1].items() if isinstance(v, np.ndarray) and v.size]
    for key, a in arrays:
        with pytest.raises(ValueError, match=rf"grads\[1\] shares memory with state\[1\]\['{key}'\]"):
            opt.step([grads[0], a.reshape(5)])
        assert_unchanged(opt, snap)


def test_grad_overlapping_a_flat_group_is_refused_once_per_span():
    fp = FlatParams({"W": np.ones((3, 4)), "b": np.ones(4)})
    opt = optim.Adam(dict(fp.params), lr=0.1)
    opt.step(dict(fp.grads))
    snap = snapshot(opt)
    with pytest.raises(ValueError, match="shares memory with params"):
        opt.step({"W": fp.grads["W"], "b": fp.params["W"].reshape(-1)[:4]})
    assert_unchanged(opt, snap)


def test_overlapping_views_of_one_buffer_as_two_params_are_refused():
    buf = np.zeros(10)
    with pytest.raises(ValueError, match="overlaps the memory"):
        optim.SGD([buf[:6], buf[4:]], lr=0.1)
    opt = optim.SGD([buf[:5]], lr=0.1)
    with pytest.raises(ValueError, match="overlaps the memory"):
        opt.add_param_group({"params": [buf[3:8]]})
    assert len(opt.param_groups) == 1


# ---------------------------------------------------------------- stale caches
def test_in_place_edit_of_a_list_hyperparameter_is_refused_or_seen():
    p = np.ones(3)
    opt = optim.Adam([p], lr=0.1, betas=[0.9, 0.999])
    group = opt.param_groups[0]
    assert group["betas"] == (0.9, 0.999) and isinstance(group["betas"], tuple)
    with pytest.raises(TypeError):
        group["betas"][0] = 0.5                       # stored as a tuple: an in-place edit is refused
    new = [0.5, 0.9]
    group["betas"] = new                              # rebinding to a list is seen ...
    ref = optim.Adam([np.ones(3)], lr=0.1, betas=(0.5, 0.9))
    opt.step([np.ones(3)])
    ref.step([np.ones(3)])
    np.testing.assert_array_equal(p, ref.param_groups[0]["params"][0])
    assert isinstance(group["betas"], tuple)          # ... and stored back as a tuple
    new[0] = 0.1                                      # the old list is no longer the group's value
    opt.step([np.ones(3)])
    ref.step([np.ones(3)])
    np.testing.assert_array_equal(p, ref.param_groups[0]["params"][0])


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_param_made_read_only_after_construction_is_refused_at_step(cls):
    opt, params, grads = stepped(cls)
    snap = snapshot(opt)
    params[1].flags.writeable = False
    with pytest.raises(ValueError, match=r"params\[1\] is read-only"):
        opt.step(grads)
    assert_unchanged(opt, snap)


def test_flat_param_made_read_only_is_refused_too():
    fp = FlatParams({"W": np.ones((3, 4)), "b": np.ones(4)})
    opt = optim.SGD(dict(fp.params), lr=0.1)
    fp.params["b"].flags.writeable = False             # the view only: the buffer stays writeable
    with pytest.raises(ValueError, match=r"params\['b'\] is read-only"):
        opt.step(dict(fp.grads))
    assert np.all(fp.params.buffer(np.float64) == 1)


def test_rebound_or_read_only_state_is_refused():
    opt, params, grads = stepped(optim.Adam)
    snap = snapshot(opt)
    opt.state[0]["exp_avg"] = np.zeros((4, 3))
    with pytest.raises(ValueError, match=r"state\[0\]\['exp_avg'\] was rebound"):
        opt.step(grads)
    opt.state[0]["exp_avg"] = snap[1][0]["exp_avg"]  # an equal array is still another object
    with pytest.raises(ValueError, match="was rebound"):
        opt.step(grads)
    opt2, _, grads2 = stepped(optim.Adam)
    opt2.state[1]["exp_avg_sq"].flags.writeable = False
    snap2 = snapshot(opt2)
    with pytest.raises(ValueError, match=r"state\[1\]\['exp_avg_sq'\] is read-only"):
        opt2.step(grads2)
    assert_unchanged(opt2, snap2)


# ---------------------------------------------------------------- values
@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_int_too_large_for_a_float_is_a_value_error(cls):
    with pytest.raises(ValueError, match="lr must be a finite real number"):
        cls([np.ones(2)], lr=10 ** 400)
    opt, params, grads = stepped(cls)
    snap = snapshot(opt)
    opt.param_groups[0]["lr"] = 10 ** 400
    with pytest.raises(ValueError, match=r"param_groups\[0\]\['lr'\] must be a finite real number"):
        opt.step(grads)
    assert_unchanged(opt, snap)
    with pytest.raises(ValueError, match="max_grad_norm"):
        cls([np.ones(2)], max_grad_norm=10 ** 400)


def test_functional_int_too_large_is_a_value_error():
    w = np.ones(3)
    with pytest.raises(ValueError, match=r"config\['learning_rate'\] must be a finite real number"):
        optim.adam(w, np.ones(3), {"learning_rate": -10 ** 400})
    assert np.all(w == 1)


@pytest.mark.parametrize("bad", ["0.1", 0.0 - 1.0, float("nan"), 1.5, True])
def test_bad_options_refused(bad):
    with pytest.raises((TypeError, ValueError), match="ema"):
        optim.Adam([np.ones(2)], ema=bad)
    with pytest.raises((TypeError, ValueError), match="max_grad_norm"):
        optim.Adam([np.ones(2)], max_grad_norm=bad if bad != 1.5 else -1.5)


# ---------------------------------------------------------------- all or nothing with several groups
def test_bad_second_group_changes_nothing_in_the_first():
    a, b = np.ones(3), np.ones(2)
    opt = optim.Adam([{"params": [a]}, {"params": [b], "lr": 0.1}], lr=0.2)
    opt.step([np.ones(3), np.ones(2)])
    snap = snapshot(opt)
    opt.param_groups[1]["betas"] = (0.9, 1.0)
    with pytest.raises(ValueError, match=r"param_groups\[1\]\['betas'\]\[1\]"):
        opt.step([np.ones(3), np.ones(2)])
    assert_unchanged(opt, snap)


# ---------------------------------------------------------------- threads
def _threads(fn, n):
    errors = []

    def run():
        try:
            fn()
        except Exception as exc:   # surfaced below
            errors.append(exc)
    ts = [threading.Thread(target=run) for _ in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors


@pytest.mark.parametrize("cls", [optim.Adam, optim.NAdam, optim.Lion], ids=lambda c: c.__name__)
def test_one_optimizer_stepped_from_two_threads_serializes(cls):
    # Same gradient every step, so any interleaving of whole steps gives the sequential bits;
    # a torn step (two kernels on the same arrays at once) would not.
    rng = np.random.default_rng(1)
    n, steps = 300_000, 8
    p0, g = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)
    with _backend.preserved():
        _backend.set_num_threads(2)
        shared_p, seq_p = p0.copy(), p0.copy()
        shared, seq = cls([shared_p], lr=1e-2), cls([seq_p], lr=1e-2)
        _threads(lambda: [shared.step([g]) for _ in range(steps)], 2)
        for _ in range(2 * steps):
            seq.step([g])
    assert np.array_equal(shared_p, seq_p)
    assert shared.state[0].get("step", 2 * steps) == 2 * steps


def test_different_optimizers_in_threads_equal_sequential_runs():
    rng = np.random.default_rng(2)
    n = 200_000
    inits = [rng.standard_normal(n) for _ in range(3)]
    grads = [[rng.standard_normal(n) for _ in range(4)] for _ in range(3)]
    classes = [optim.RAdam, optim.Adadelta, optim.Adamax]
    par = [p.copy() for p in inits]
    opts = [c([p]) for c, p in zip(classes, par)]
    ts = [threading.Thread(target=lambda o=o, gs=gs: [o.step([g]) for g in gs]) for o, gs in zip(opts, grads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for c, p0, gs, p in zip(classes, inits, grads, par):
        q = p0.copy()
        o = c([q])
        for g in gs:
            o.step([g])
        assert np.array_equal(p, q), c.__name__


# ---------------------------------------------------------------- non-finite gradients (item 9)
@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_skip_nonfinite_leaves_everything_untouched_and_counts(cls, bad):
    opt, params, grads = stepped(cls, skip_nonfinite=True)
    snap = snapshot(opt)
    poisoned = [g.copy() for g in grads]
    poisoned[1][2] = bad
    opt.step(poisoned)
    assert opt.skipped_steps == 1
    assert_unchanged(opt, snap)
    opt.step(grads)                                   # a finite step goes through as usual
    assert opt.skipped_steps == 1
    assert not np.array_equal(params[0], snap[0][0])


def test_without_skip_nonfinite_nan_propagates_as_in_torch():
    p = np.ones(3)
    opt = optim.Adam([p], lr=0.1)
    opt.step([np.array([1.0, np.nan, 1.0])])
    assert np.isnan(p[1]) and np.isnan(opt.state[0]["exp_avg"][1]) and opt.skipped_steps == 0


def test_skip_nonfinite_counts_a_flat_group_in_one_pass(monkeypatch):
    fp = FlatParams({"W": np.ones((300, 400), np.float32), "b": np.ones(400, np.float32)})
    opt = optim.Adam(dict(fp.params), lr=0.1, skip_nonfinite=True)
    calls = count_kernel_calls(monkeypatch)
    fp.grads["b"][7] = np.inf
    opt.step(dict(fp.grads))
    assert calls == ["norm_partial"] and opt.skipped_steps == 1
    assert np.all(fp.params["W"] == 1)
    fp.grads["b"][7] = 0
    opt.step(dict(fp.grads))
    assert calls == ["norm_partial", "norm_partial", "adam_step"]


def test_optimizer_objects_are_not_pickled_or_copied():
    import copy
    import pickle
    opt = optim.Adam([np.ones(2)])
    for fn in (pickle.dumps, copy.deepcopy, copy.copy):
        with pytest.raises(TypeError, match="state_dict"):
            fn(opt)
