"""Gradient clipping by global norm (fastopt.clip_grad_norm_ and the optimizers' max_grad_norm) and
parameter averaging (the optimizers' ema option, with averaged() swap-in), against direct NumPy
formulas and torch's clip_grad_norm_ where installed. Also the step hooks."""
import math

import numpy as np
import pytest
from _kernel_calls import count_kernel_calls

import fastopt
from fastopt import optim
from fastopt import _optim_kernels as K
from fastopt.flat import FlatParams
from fastopt.optim._declarations import class_rules
from fastopt.reference import optim as R

CLASSES = [getattr(optim, r.class_name) for r in class_rules()]
IDS = [c.__name__ for c in CLASSES]


def bits(a):
    return a.view(np.uint32 if a.dtype == np.float32 else np.uint64)


# ---------------------------------------------------------------- the norm kernel
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [0, 1, 7, 1023, 16384, 16385, 1_000_003])
@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf, 3.0])
def test_norm_kernel_matches_twin_and_is_thread_count_independent(dtype, n, norm_type):
    x = np.random.default_rng(n).standard_normal(n).astype(dtype)
    one = K.norm_partial(x=x, norm_type=norm_type, n_threads=1)
    two = K.norm_partial(x=x, norm_type=norm_type, n_threads=2)
    assert one == two                                    # bitwise: fixed blocks, combined in order
    twin = R.norm_partial(x, norm_type, 1)
    assert one[1] is True and twin[1] is True
    assert one[0] == pytest.approx(twin[0], rel=1e-12, abs=0)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_norm_kernel_flags_non_finite(bad):
    x = np.ones(40000, np.float32)
    x[33333] = bad
    for norm_type in (2.0, 1.0, math.inf):
        assert K.norm_partial(x=x, norm_type=norm_type, n_threads=2)[1] is False
        assert R.norm_partial(x, norm_type, 1)[1] is False
    big = np.full(10, 1e200)         # finite, though its square overflows: still "finite"
    s, finite = K.norm_partial(x=big, norm_type=2.0, n_threads=1)
    assert finite and s == math.inf


# ---------------------------------------------------------------- clip_grad_norm_
def test_clip_grad_norm_scales_in_place_and_returns_the_norm():
    rng = np.random.default_rng(0)
    grads = [rng.standard_normal((30, 20)), rng.standard_normal(7)]
    before = [g.copy() for g in grads]
    total = math.sqrt(sum(float(np.sum(g * g)) for g in before))
    got = fastopt.clip_grad_norm_(grads, 1.0)
    assert got == pytest.approx(total, rel=1e-14)
    coef = 1.0 / (total + 1e-6)
    for g, b in zip(grads, before):
        np.testing.assert_allclose(g, b * coef, rtol=1e-15)
    small = [np.full(3, 1e-3)]
    fastopt.clip_grad_norm_(small, 1.0)
    assert np.all(small[0] == 1e-3)                  # below the limit: untouched


def test_clip_grad_norm_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    grads = [rng.standard_normal(1000).astype(np.float32), rng.standard_normal((10, 10)).astype(np.float32)]
    tensors = [torch.nn.Parameter(torch.zeros(g.shape)) for g in grads]
    for t, g in zip(tensors, grads):
        t.grad = torch.from_numpy(g.copy())
    for norm_type in (2.0, 1.0, math.inf):
        ours = [g.copy() for g in grads]
        for t, g in zip(tensors, grads):
            t.grad.copy_(torch.from_numpy(g))
        tn = torch.nn.utils.clip_grad_norm_(tensors, 0.5, norm_type=norm_type)
        n = fastopt.clip_grad_norm_(ours, 0.5, norm_type=norm_type)
        assert n == pytest.approx(float(tn), rel=1e-6)
        for t, g in zip(tensors, ours):
            np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-6)


def test_clip_grad_norm_bad_input_changes_nothing():
    g = np.ones(4)
    for args, exc, frag in [(([g], -1.0), ValueError, "max_norm"), (([g], 1.0, 0), ValueError, "norm_type"),
                            (([g, [1.0]], 1.0), TypeError, r"grads\[1\]"), ((3, 1.0), TypeError, "grads"),
                            (([g], 10 ** 400), ValueError, "max_norm")]:
        with pytest.raises(exc, match=frag):
            fastopt.clip_grad_norm_(*args)
    with pytest.raises(ValueError, match="not finite"):
        fastopt.clip_grad_norm_([np.array([1.0, np.inf]), g], 1.0, error_if_nonfinite=True)
    assert np.all(g == 1)


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, math.inf])
@pytest.mark.parametrize("where", [0, 1], ids=["nan-first", "nan-second"])
def test_a_nan_in_any_array_makes_the_total_norm_nan_as_torchs(norm_type, where):
    # The inf-norm's maximum over arrays once dropped a NaN (Python's max keeps its first argument
    # when the comparison is False): a NaN gradient gave a finite norm and was clipped silently.
    grads = [np.array([1.0, 2.0]), np.array([3.0, -4.0])]
    grads[where][0] = np.nan
    before = [g.copy() for g in grads]
    assert math.isnan(fastopt.clip_grad_norm_([g.copy() for g in grads], 1.0, norm_type=norm_type))
    with pytest.raises(ValueError, match="is nan: not finite"):
        fastopt.clip_grad_norm_(grads, 1.0, norm_type=norm_type, error_if_nonfinite=True)
    for g, b in zip(grads, before):
        np.testing.assert_array_equal(g, b)
    grads[where][0] = np.inf                      # inf stays inf
    assert fastopt.clip_grad_norm_([g.copy() for g in grads], 1.0, norm_type=norm_type) == math.inf


# ---------------------------------------------------------------- max_grad_norm inside the step
@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_max_grad_norm_equals_clipping_first(cls):
    rng = np.random.default_rng(2)
    p0 = [rng.standard_normal((6, 5)), rng.standard_normal(5)]
    grads = [[3 * rng.standard_normal(p.shape) for p in p0] for _ in range(3)]
    a = [p.copy() for p in p0]
    b = [p.copy() for p in p0]
    inside = cls(a, max_grad_norm=0.7)
    outside = cls(b)
    for gs in grads:
        inside.step(gs)
        clipped = [g.copy() for g in gs]
        norm = fastopt.clip_grad_norm_(clipped, 0.7)
        assert inside.last_grad_norm == pytest.approx(norm, rel=1e-14)
        outside.step(clipped)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=1e-14, atol=1e-15)
    for g0, gs in zip(grads[0], grads):       # the gradients were not written
        assert not np.shares_memory(g0, a[0])
    assert np.all(grads[0][0] == grads[0][0])


def test_max_grad_norm_on_a_flat_group_is_one_read_pass_and_one_kernel_call(monkeypatch):
    fp = FlatParams({"W": np.ones((1024, 1024), np.float32), "b": np.ones(1000, np.float32)})
    opt = optim.NAdam(dict(fp.params), lr=0.1, max_grad_norm=1.0)
    calls = count_kernel_calls(monkeypatch)
    fp.grads["W"][...] = 2.0
    grads_before = fp.grads["W"].copy()
    opt.step(dict(fp.grads))
    opt.step(dict(fp.grads))
    assert calls == ["norm_partial", "nadam_step"] * 2
    np.testing.assert_array_equal(fp.grads["W"], grads_before)


# ---------------------------------------------------------------- ema / polyak
@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_ema_follows_its_formula(cls):
    rng = np.random.default_rng(3)
    p = rng.standard_normal(50)
    p0 = p.copy()
    opt = cls([p], ema=0.9)
    ref = cls([p0.copy()])
    avg = p0.copy()
    for _ in range(4):
        g = rng.standard_normal(50)
        opt.step([g])
        ref.step([g])
        avg = avg + 0.1 * (ref.param_groups[0]["params"][0] - avg)
    np.testing.assert_array_equal(p, ref.param_groups[0]["params"][0])     # the step is unchanged
    np.testing.assert_allclose(opt.averages()[0], avg, rtol=1e-13, atol=1e-15)


def test_polyak_is_the_mean_of_the_iterates():
    rng = np.random.default_rng(4)
    p = rng.standard_normal(20)
    iterates = [p.copy()]
    opt = optim.SGD([p], lr=0.1, momentum=0.5, ema="polyak")
    for _ in range(5):
        opt.step([rng.standard_normal(20)])
        iterates.append(p.copy())
    np.testing.assert_allclose(opt.averages()[0], np.mean(iterates, axis=0), rtol=1e-13)
    assert opt.state[0]["avg_count"] == 5


def test_averaged_swaps_in_and_back_and_refuses_step_inside():
    p = np.zeros(3)
    opt = optim.Adam([p], lr=0.1, ema=0.5)
    opt.step([np.ones(3)])
    trained, avg = p.copy(), opt.averages()[0].copy()
    with opt.averaged():
        np.testing.assert_array_equal(p, avg)
        with pytest.raises(RuntimeError, match="averaged"):
            opt.step([np.ones(3)])
    np.testing.assert_array_equal(p, trained)
    np.testing.assert_array_equal(opt.averages()[0], avg)
    with pytest.raises(ZeroDivisionError):
        with opt.averaged():
            1 / 0
    np.testing.assert_array_equal(p, trained)            # restored on an exception too
    with pytest.raises(RuntimeError, match="ema="):
        with optim.Adam([np.zeros(2)]).averaged():
            pass


def test_ema_state_round_trips_and_flat_ema_is_one_kernel_call(monkeypatch):
    fp = FlatParams({"W": np.ones((3, 4)), "b": np.ones(4)})
    opt = optim.RAdam(dict(fp.params), lr=0.1, ema=0.99)
    opt.step(dict(fp.grads))
    sd = opt.state_dict()
    assert "param_avg" in sd["state"][0] and sd["state"][0]["avg_count"] == 1
    other_fp = FlatParams({"W": np.ones((3, 4)), "b": np.ones(4)})
    other = optim.RAdam(dict(other_fp.params), lr=0.1, ema=0.99)
    other.load_state_dict(sd)
    g = {"W": np.full((3, 4), 0.3), "b": np.full(4, -0.2)}
    opt.step(g)
    other.step(g)
    for a, b in zip(opt.averages() + [fp.params["W"]], other.averages() + [other_fp.params["W"]]):
        assert np.array_equal(bits(a), bits(b))
    with pytest.raises(ValueError, match="param_avg"):
        optim.RAdam(dict(FlatParams({"W": np.ones((3, 4)), "b": np.ones(4)}).params)).load_state_dict(sd)


# ---------------------------------------------------------------- hooks
def test_step_hooks_run_in_order_replace_arguments_and_remove():
    p = np.zeros(2)
    opt = optim.SGD([p], lr=1.0)
    seen = []
    pre = opt.register_step_pre_hook(lambda o, args, kw: seen.append(("pre", args[0][0][0])))
    double = opt.register_step_pre_hook(lambda o, args, kw: (([2 * args[0][0]],), kw))
    post = opt.register_step_post_hook(lambda o, args, kw: seen.append(("post", p[0])))
    opt.step([np.ones(2)])
    assert seen == [("pre", 1.0), ("post", -2.0)]
    double.remove()
    pre.remove()
    double.remove()                                      # idempotent
    opt.step([np.ones(2)])
    assert seen[-1] == ("post", -3.0) and len(seen) == 3
    post.remove()
    with pytest.raises(TypeError, match="callable"):
        opt.register_step_pre_hook(3)
