"""The cached step's own invalidation (branch step, issue 11): the cached step is bound to the kernel
module it was planned on (by name: backend and SIMD variant), taken by step() directly only when no
hook, extra argument or averaged() block asks for the general path, and the one-thread kernels run
their chunks without an OpenMP region -- every case bitwise as the validated path."""
import numpy as np
import pytest

import fastopt
from fastopt import _backend, optim
from fastopt.optim import Adam, SGD
from test_optim_flat import bits
from test_optim_small_step import arrays, assert_same, assert_unchanged, fill, snapshot

SIZES = [1000] * 5 + [7, 1023]


def _pair(dtype=np.float64, cls=Adam, **kw):
    return (cls(arrays(dtype, sizes=SIZES), lr=1e-2, **kw), cls(arrays(dtype, sizes=SIZES), lr=1e-2, **kw),
            arrays(dtype, seed=1, sizes=SIZES))


def _modules():
    """(backend, simd) settings that give distinct optim kernel modules on this machine."""
    out = [("numpy", "auto"), ("cython", "sse2")]
    if _backend.variant_supported("avx2"):
        out.append(("cython", "avx2"))
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_changed_kernel_module_is_planned_again(dtype):
    fast, slow, grads = _pair(dtype)
    with _backend.preserved():
        for step, (backend, simd) in enumerate(_modules() * 2):
            _backend.set_backend(backend)
            _backend.set_simd(simd)
            fill(grads, step)
            fast.step(grads)                         # cached after its first step on each module
            slow.step([g.copy() for g in grads])     # new gradient objects: always validated
            name = _backend.kernels("optim").__name__
            assert fast._fast is not None and fast._fast.module == name
            assert fast._fast.entries[0][1].__class__ is _backend.kernels("optim").StepPlan
            fill(grads, 100 + step)
            fast.step(grads)                         # the cached step on this module
            slow.step([g.copy() for g in grads])
            assert_same(fast, slow)


def test_a_hook_added_after_caching_runs_and_the_step_stays_exact():
    fast, slow, grads = _pair()
    fast.step(grads)
    fast.step(grads)
    slow.step([g.copy() for g in grads])
    slow.step([g.copy() for g in grads])
    seen = []
    handle = fast.register_step_pre_hook(lambda opt, args, kwargs: seen.append("pre"))
    post = fast.register_step_post_hook(lambda opt, args, kwargs: seen.append("post"))
    fill(grads, 7)
    fast.step(grads)
    slow.step([g.copy() for g in grads])
    assert seen == ["pre", "post"]
    handle.remove()
    post.remove()
    fill(grads, 8)
    fast.step(grads)
    fast.step(grads)                                 # cached again, without hooks
    slow.step([g.copy() for g in grads])
    slow.step([g.copy() for g in grads])
    assert seen == ["pre", "post"]
    assert fast._fast is not None
    assert_same(fast, slow)


def test_extra_arguments_are_refused_by_a_cached_optimizer_before_anything_changes():
    opt, _, grads = _pair()
    opt.step(grads)
    opt.step(grads)
    snap = snapshot(opt)
    with pytest.raises(TypeError, match="step\\(\\) takes one argument"):
        opt.step(grads, 1)
    with pytest.raises(TypeError, match="step\\(\\) takes one argument"):
        opt.step(grads, closure=None)
    assert_unchanged(opt, snap)


def test_step_inside_averaged_is_refused_by_a_cached_optimizer():
    opt, _, grads = _pair(ema=0.9)
    opt.step(grads)
    opt.step(grads)
    assert opt._fast is not None
    snap = snapshot(opt)
    with opt.averaged():
        with pytest.raises(RuntimeError, match="averaged"):
            opt.step(grads)
    assert_unchanged(opt, snap)


def test_a_gradient_of_the_wrong_size_is_refused_after_cached_steps():
    opt, _, grads = _pair()
    opt.step(grads)
    opt.step(grads)
    snap = snapshot(opt)
    bad = list(grads)
    bad[3] = np.ones(999)
    with pytest.raises(ValueError, match=r"grads\[3\]"):
        opt.step(bad)
    assert_unchanged(opt, snap)
    opt.step(grads)                                  # and the good gradients step again
    assert opt._fast is not None


@pytest.mark.parametrize("cls, kw", [(SGD, dict(lr=0.1, momentum=0.9)), (Adam, dict(lr=1e-2, amsgrad=True)),
                                     (optim.RMSprop, dict(lr=1e-2, centered=True))], ids=["sgd", "adam", "rmsprop"])
@pytest.mark.parametrize("track", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_one_thread_runs_the_same_chunks_as_more(cls, kw, track, dtype):
    # One thread takes the serial chunk loop (no OpenMP region), two and three the prange; the
    # sizes span several NORM_BLOCK chunks and 2 * GRAIN, so both paths cut and split the same work.
    k = _backend.kernels("optim")
    sizes = [2 * k.GRAIN + 9, 3 * k.NORM_BLOCK + 1, 5]
    results = {}
    with _backend.preserved():
        for threads in (1, 2, 3):
            fastopt.set_num_threads(threads)
            opt = cls(arrays(dtype, sizes=sizes), **kw, track_update_ratio=track)
            grads = arrays(dtype, seed=2, sizes=sizes)
            for step in range(3):
                fill(grads, step)
                opt.step(grads)
            results[threads] = ([bits(p).copy() for p in opt.param_groups[0]["params"]],
                                opt.update_ratios() if track else None)
    for threads in (2, 3):
        for a, b in zip(results[1][0], results[threads][0]):
            assert np.array_equal(a, b)
        assert results[1][1] == results[threads][1]
