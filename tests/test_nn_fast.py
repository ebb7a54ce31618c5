"""FullyConnectedNet's fast path (workspaces + fused kernels) against its layer-by-layer path."""
import pickle

import numpy as np
import pytest

import fastopt
from fastopt.flat import tiles_one_buffer
from fastopt.nn import FullyConnectedNet
from fastopt import _blas, _mlp_kernels

D, H, C = 37, [70, 66], 5   # 66 * N crosses a COLS=64 block boundary of the column reductions


def make(**kw):
    args = dict(hidden_dims=H, input_dim=D, num_classes=C, dtype=np.float64, rng=5, weight_scale=1e-1)
    args.update(kw)
    return FullyConnectedNet(**args)


def batch(n, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, D)).astype(dtype), rng.integers(0, C, size=n)


def run_steps(model, steps, n=33, lr=1e-2):
    """A few plain SGD steps; returns the losses, the last grads (copied) and the last test scores."""
    losses = []
    for t in range(steps):
        X, y = batch(n, seed=t, dtype=model.dtype)
        loss, grads = model.loss(X, y)
        losses.append(loss)
        last = {k: g.copy() for k, g in grads.items()}
        for k, g in grads.items():
            model.params[k] -= lr * g
    scores = model.loss(batch(9, seed=99, dtype=model.dtype)[0])
    return losses, last, scores


@pytest.mark.parametrize("backend", ["cython", "numpy"])
@pytest.mark.parametrize("normalization", [None, "batchnorm", "layernorm"])
@pytest.mark.parametrize("keep,reg,reg_type", [(1, 0.0, "l2"), (0.7, 0.3, "l2"), (0.8, 0.2, "l1"),
                                               (1, 0.5, "l1")])
def test_fast_path_matches_layer_path_float64(backend, normalization, keep, reg, reg_type):
    fastopt.set_backend(backend)
    kw = dict(normalization=normalization, dropout_keep_ratio=keep, reg=reg, reg_type=reg_type)
    fast, slow = make(**kw), make(**kw)
    slow.fast_path = False
    assert fast.fused and not slow.fused
    lf, gf, sf = run_steps(fast, 3)
    ls, gs, ss = run_steps(slow, 3)
    np.testing.assert_allclose(lf, ls, rtol=1e-12, atol=0)
    for k in gs:
        np.testing.assert_allclose(gf[k], gs[k], rtol=1e-10, atol=1e-12, err_msg=k)
        np.testing.assert_allclose(fast.params[k], slow.params[k], rtol=1e-12, atol=1e-13, err_msg=k)
    np.testing.assert_allclose(sf, ss, rtol=1e-12, atol=1e-13)
    for a, b in zip(fast.bn_params, slow.bn_params) if normalization == "batchnorm" else ():
        for key in ("running_mean", "running_var"):
            np.testing.assert_allclose(a[key], b[key], rtol=1e-12, atol=1e-14)
    # The same dropout Generator draws happened on both paths.
    assert fast.rng.bit_generator.state == slow.rng.bit_generator.state


@pytest.mark.parametrize("normalization", [None, "batchnorm", "layernorm"])
def test_fast_path_float32_close_to_layer_path(normalization):
    kw = dict(normalization=normalization, dtype=np.float32, dropout_keep_ratio=0.9, reg=0.1)
    fast, slow = make(**kw), make(**kw)
    slow.fast_path = False
    lf, gf, sf = run_steps(fast, 2)
    ls, gs, ss = run_steps(slow, 2)
    np.testing.assert_allclose(lf, ls, rtol=1e-5)
    for k in gs:
        assert gf[k].dtype == np.float32
        np.testing.assert_allclose(gf[k], gs[k], rtol=2e-3, atol=2e-5, err_msg=k)
    np.testing.assert_allclose(sf, ss, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("threads", [2, 3])
def test_results_do_not_depend_on_thread_count(threads, kernel_calls):
    # loss() runs inside beside_blas, where the kernels take one thread whenever OpenBLAS runs
    # several: hold BLAS at one thread so the kernels really run on 1, then on `threads` threads.
    out = []
    with _blas.limit_blas_threads(1):
        for n in (1, threads):
            fastopt.set_num_threads(n)
            model = make(normalization="batchnorm", hidden_dims=[600, 300], dtype=np.float32)
            X, y = batch(256, dtype=np.float32)
            kernel_calls.clear()
            loss, grads = model.loss(X, y)
            used = [t for fam, name, t in kernel_calls.calls if name == "batchnorm_relu_forward"]
            assert used == [min(n, 256 * h // _mlp_kernels.GRAIN) for h in (600, 300)], kernel_calls.calls
            out.append((loss, {k: g.copy() for k, g in grads.items()}))
    assert out[0][0] == out[1][0]
    for k in out[0][1]:
        assert np.array_equal(out[0][1][k], out[1][1][k]), k


def test_params_and_grads_tile_one_buffer_and_out_grads_are_reused():
    model = make(normalization="batchnorm")
    names = list(model.params)
    assert names == ["W1", "b1", "gamma1", "beta1", "W2", "b2", "gamma2", "beta2", "W3", "b3"]
    assert tiles_one_buffer([model.params[k] for k in names]) is not None
    X, y = batch(8)
    _, g1 = model.loss(X, y, out=model.grads)
    assert g1 is model.grads and list(g1) == names
    assert tiles_one_buffer([g1[k] for k in names]) is not None
    _, g2 = model.loss(X, y, out=model.grads)
    assert g2 is g1   # the same views, overwritten (like torch's .grad)


def test_workspaces_are_reused_and_bounded():
    model = make(normalization="layernorm", dropout_keep_ratio=0.5)
    X, y = batch(16)
    model.loss(X, y)
    ws = model._workspaces.get(16)
    buffers = [a.__array_interface__["data"][0] for a in ws.z + ws.r + ws.dh + ws.tmp]
    model.loss(X, y)
    model.loss(X[:4])                     # a second size (test mode) joins
    model.loss(X, y)
    assert model._workspaces.get(16) is ws
    assert [a.__array_interface__["data"][0] for a in ws.z + ws.r + ws.dh + ws.tmp] == buffers
    model.loss(X[:3], y[:3])
    model.loss(X[:5], y[:5])
    assert model._workspaces.sizes() == [3, 5]   # at most KEEP sizes, least recent dropped


def test_scores_are_a_copy():
    model = make(normalization="batchnorm")
    X, y = batch(6)
    model.loss(X, y)
    s1 = model.loss(X)
    keep = s1.copy()
    model.loss(X, y)
    model.loss(X[::-1].copy())
    assert np.array_equal(s1, keep)


def test_a_block_without_fused_kernels_runs_the_layer_execution():
    # An activation the fused execution has no kernels for (here a stand-in with only layer
    # functions): the model then runs the readable execution for it, with correct gradients.
    import dataclasses
    from fastopt.gradcheck import eval_numerical_gradient

    class Leaky:
        name = "my_leaky"

        def forward(self, x):
            return np.where(x > 0, x, 0.1 * x), x

        def backward(self, dout, x):
            return np.where(x > 0, dout, 0.1 * dout)

    model = make()
    model.blocks = [dataclasses.replace(b, activation=Leaky()) if hasattr(b, "activation") else b
                    for b in model.blocks]
    assert not model.fused
    X, y = batch(7)
    loss, grads = model.loss(X, y)
    num = eval_numerical_gradient(lambda _: model.loss(X, y)[0], model.params["W1"], verbose=False)
    np.testing.assert_allclose(grads["W1"], num, rtol=1e-6, atol=1e-9)


def test_pickle_drops_workspaces_and_keeps_training():
    model = make(normalization="batchnorm", dropout_keep_ratio=0.6)
    X, y = batch(10)
    model.loss(X, y)
    clone = pickle.loads(pickle.dumps(model))
    assert clone._workspaces.sizes() == []
    assert tiles_one_buffer([clone.params[k] for k in clone.params]) is not None
    a, ga = model.loss(X, y)
    b, gb = clone.loss(X, y)
    assert a == b and all(np.array_equal(ga[k], gb[k]) for k in ga)


def test_beside_blas_thread_policy(monkeypatch):
    from fastopt import _backend
    fastopt.set_num_threads(2)
    big = 10 * 32768
    monkeypatch.setattr(_blas, "blas_num_threads", lambda: 2)
    assert _backend.threads_for(big, 32768) == 2          # outside the block: the usual count
    with fastopt.beside_blas():
        assert _backend.threads_for(big, 32768) == 1      # BLAS runs 2 threads: kernels take 1
        with fastopt.beside_blas():                       # blocks nest
            assert _backend.threads_for(big, 32768) == 1
        assert _backend.threads_for(big, 32768) == 1
        monkeypatch.setattr(_blas, "blas_num_threads", lambda: 1)
        assert _backend.threads_for(big, 32768) == 2
        monkeypatch.setattr(_blas, "blas_num_threads", lambda: None)
        assert _backend.threads_for(big, 32768) == 2
        assert _backend.threads_for(100, 32768) == 1
    monkeypatch.setattr(_blas, "blas_num_threads", lambda: 2)
    assert _backend.threads_for(big, 32768) == 2


def test_beside_blas_restores_after_an_error():
    from fastopt import _backend
    with pytest.raises(RuntimeError):
        with fastopt.beside_blas():
            raise RuntimeError("boom")
    assert _backend._beside_blas.depth == 0


def test_limit_blas_threads_restores():
    before = _blas.blas_num_threads()
    if before is None:
        pytest.skip("NumPy's BLAS is not OpenBLAS")
    with _blas.limit_blas_threads(1):
        assert _blas.blas_num_threads() == 1
    assert _blas.blas_num_threads() == before


def test_plans_are_kept_per_mode_and_rebuilt_when_bound_objects_change():
    """Training and test calls alternate without rebuilding; a new running-statistics array, a new
    out= mapping or a frozen set makes a new plan (nothing stale is written)."""
    fastopt.set_backend("cython")
    model = make(normalization="batchnorm")
    X, y = batch(12)
    model.loss(X, y)
    ws = model._workspaces.get(12)
    train = ws.plans[True]
    model.loss(X)
    test = ws.plans[False]
    model.loss(X, y)
    model.loss(X)
    assert ws.plans[True] is train and ws.plans[False] is test
    model.bn_params[0]["running_mean"] = model.bn_params[0]["running_mean"].copy()
    model.loss(X, y)
    assert ws.plans[True] is not train
    out = {k: np.zeros_like(v) for k, v in model.params.items()}
    _, got = model.loss(X, y, out=out)
    assert got is out and any(np.any(v != 0) for v in out.values())
    out2 = {k: np.zeros_like(v) for k, v in model.params.items()}
    model.loss(X, y, out=out2)
    for k in out:
        np.testing.assert_array_equal(out2[k], out[k], err_msg=k)
