"""fastopt.distributed's sharded execution in one process ("serial"): batchnorm with the GLOBAL batch's
statistics, dropout masks seeded by (seed, step, shard), the row combine, gradient checks in float64.
The same code on real MPI ranks: tests/test_distributed_bn.py."""
import re

import numpy as np
import pytest

import fastopt
from fastopt import layers
from fastopt.distributed import GlobalLoss, RankFailure, for_solver, shard_bounds
from fastopt.distributed._comm import Serial
from fastopt.distributed.combine import RowCombine
from fastopt.distributed.sharded import dropout_rng
from fastopt.gradcheck import eval_numerical_gradient
from test_norm_layers import rel_error as max_rel_error


def make_model(dtype=np.float64, reg=0.02, normalization="batchnorm", keep=1, hidden=(9, 7), **kw):
    return fastopt.FullyConnectedNet(list(hidden), input_dim=6, num_classes=4, dtype=dtype, rng=3, reg=reg,
                                     weight_init="he", normalization=normalization, dropout_keep_ratio=keep, **kw)


def batch(n=37, seed=0, dtype=np.float64):
    r = np.random.default_rng(seed)
    X = r.standard_normal((n, 6)) * 2 + 0.5
    return X.astype(dtype), r.integers(0, 4, n)


def running(model):
    return [np.array(p[k]) for p in model.bn_params for k in ("running_mean", "running_var")]


@pytest.mark.parametrize("mode", ["deterministic", "fast"])
@pytest.mark.parametrize("shards", [1, 3, 8, 37])
def test_batchnorm_uses_the_global_batch(shards, mode):
    """The sharded loss, gradients and running statistics == model.loss on the whole batch (float64)."""
    X, y = batch()
    ref, model = make_model(), make_model()
    loss, grads = ref.loss(X, y)
    gl = GlobalLoss(model, "serial", shards=shards, mode=mode)
    got, g = gl.loss(X, y)
    assert got == pytest.approx(loss, rel=1e-12)
    assert set(g) == set(grads)
    for k in grads:
        np.testing.assert_allclose(g[k], grads[k], rtol=1e-9, atol=1e-12, err_msg=k)
    for a, b in zip(running(model), running(ref)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    assert gl.steps == 1 and model.reg == 0.02


def test_batchnorm_float32_agrees_with_the_model_within_float_rounding():
    X, y = batch(dtype=np.float32)
    ref, model = make_model(np.float32), make_model(np.float32)
    loss, grads = ref.loss(X, y)
    got, g = GlobalLoss(model, "serial", shards=5).loss(X, y)
    assert got == pytest.approx(loss, rel=1e-5)
    for k in grads:
        assert g[k].dtype == np.float32
        np.testing.assert_allclose(g[k], grads[k], rtol=2e-4, atol=2e-5, err_msg=k)
    for a, b in zip(running(model), running(ref)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_shards_do_not_normalize_with_their_own_statistics():
    """The check above could pass by accident only if per-shard statistics equalled global ones:
    here they do not (the first shard's rows are shifted)."""
    X, y = batch()
    X[:10] += 5.0
    bounds = shard_bounds(37, 4)
    per_shard = sum(make_model().loss(X[a:b], y[a:b])[0] * (b - a) for a, b in zip(bounds[:-1], bounds[1:])) / 37
    whole = make_model().loss(X, y)[0]
    assert GlobalLoss(make_model(), "serial", shards=4).loss(X, y)[0] == pytest.approx(whole, rel=1e-12)
    assert abs(per_shard - whole) > 1e-3


def _params_gradcheck(model, f, grads):
    for k, p in model.params.items():
        num = eval_numerical_gradient(lambda _: f(), p, verbose=False, h=1e-5)
        if model.normalization == "batchnorm" and re.fullmatch(r"b\d+", k) and k != f"b{model.num_layers}":
            # a bias before batchnorm cancels in the normalization: its gradient is 0 (rounding here)
            assert np.abs(grads[k]).max() < 1e-15 and np.abs(num).max() < 1e-8, (k, num, grads[k])
            continue
        # relative to the gradient's largest entry, as tests/test_nn.py (an entry near 1e-5 turns the
        # difference's ~1e-12 rounding into an elementwise 'relative error' above 1e-8)
        assert max_rel_error(num, grads[k]) < 1e-8, (k, max_rel_error(num, grads[k]))


@pytest.mark.parametrize("normalization, keep", [("batchnorm", 1), ("batchnorm", 0.6), ("layernorm", 0.6)])
def test_gradient_check_float64_several_shards(normalization, keep):
    """Centered differences of the sharded global loss against its gradients (float64, 5 shards):
    the batchnorm backward through the global sums, dropout with the step's fixed masks."""
    X, y = batch(n=23)
    model = make_model(normalization=normalization, keep=keep)
    r = np.random.default_rng(1)
    for k, v in model.params.items():     # off the initial zeros: a zero row would sit on a ReLU kink
        if not k.startswith("W"):
            v += r.normal(0, 0.3, v.shape)
    gl = GlobalLoss(model, "serial", shards=5, seed=11)

    def f():
        gl.steps = 4                       # the same masks on every probe
        return gl.loss(X, y)[0]

    gl.steps = 4
    _, g = gl.loss(X, y)
    grads = {k: v.copy() for k, v in g.items()}
    _params_gradcheck(model, f, grads)


def full_batch_reference(model, X, y, masks):
    """CS231n's forward/backward on the WHOLE batch with fastopt.layers, full-batch batchnorm and the
    given dropout masks (one (N, width) 0/1 array per hidden layer): (loss, grads), reg included."""
    p, keep, L = model.params, model.dropout_keep_ratio, model.num_layers
    h, caches = X, []
    for i in range(1, L):
        a, fc = layers.affine_forward(h, p[f"W{i}"], p[f"b{i}"])
        a, bn = layers.batchnorm_forward(a, p[f"gamma{i}"], p[f"beta{i}"], {"mode": "train"})
        a, relu = layers.relu_forward(a)
        h = a * masks[i - 1] / keep
        caches.append((fc, bn, relu))
    scores, fc = layers.affine_forward(h, p[f"W{L}"], p[f"b{L}"])
    loss, d = layers.softmax_loss(scores, y)
    grads = {}
    d, grads[f"W{L}"], grads[f"b{L}"] = layers.affine_backward(d, fc)
    for i in range(L - 1, 0, -1):
        fc, bn, relu = caches[i - 1]
        d = layers.relu_backward(d * masks[i - 1] / keep, relu)
        d, grads[f"gamma{i}"], grads[f"beta{i}"] = layers.batchnorm_backward(d, bn)
        d, grads[f"W{i}"], grads[f"b{i}"] = layers.affine_backward(d, fc)
    for i in range(1, L + 1):
        loss += 0.5 * model.reg * float(np.sum(p[f"W{i}"] ** 2))
        grads[f"W{i}"] = grads[f"W{i}"] + model.reg * p[f"W{i}"]
    return loss, grads


def shard_masks(model, n, shards, seed, step):
    """The masks the sharded execution draws: shard s's Generator, one mask per layer in order."""
    keep, bounds = model.dropout_keep_ratio, shard_bounds(n, shards)
    per_shard = []
    for s in range(shards):
        rng = dropout_rng(seed, step, s)
        per_shard.append([rng.random((bounds[s + 1] - bounds[s], w)) < keep for w in model.hidden_dims])
    return [np.concatenate([m[i] for m in per_shard]).astype(np.float64) for i in range(len(model.hidden_dims))]


def test_dropout_with_batchnorm_equals_the_full_batch_with_the_same_masks():
    X, y = batch(n=41)
    model = make_model(keep=0.7)
    gl = GlobalLoss(model, "serial", shards=6, seed=5)
    gl.steps = 3
    ref_loss, ref_grads = full_batch_reference(make_model(keep=0.7), X, y, shard_masks(model, 41, 6, 5, 3))
    loss, grads = gl.loss(X, y)
    assert loss == pytest.approx(ref_loss, rel=1e-12)
    for k in ref_grads:
        np.testing.assert_allclose(grads[k], ref_grads[k], rtol=1e-9, atol=1e-12, err_msg=k)


def test_dropout_masks_depend_on_seed_step_and_shard_only():
    X, y = batch(n=40)
    losses = {}
    for seed, step in ((1, 0), (1, 1), (2, 0), (1, 0)):
        model = make_model(keep=0.5, normalization=None)
        gl = GlobalLoss(model, "serial", shards=4, seed=seed)
        gl.steps = step
        losses.setdefault((seed, step), []).append(gl.loss(X, y)[0])
    assert losses[(1, 0)][0] == losses[(1, 0)][1]          # a function of (seed, step, shard)
    assert len({v[0] for v in losses.values()}) == 3       # and of each of them
    m = shard_masks(make_model(keep=0.5), 40, 4, 1, 0)[0]
    assert 0.4 < m.mean() < 0.6                            # keep ratio 0.5


def test_steps_advance_and_a_failure_changes_nothing():
    X, y = batch()
    model = make_model(keep=0.8)
    gl = GlobalLoss(model, "serial", shards=4)
    gl.loss(X, y)
    before = {k: v.copy() for k, v in model.params.items()}, running(model), gl.steps
    bad = y.copy()
    bad[-1] = 9
    with pytest.raises(RankFailure, match=r"rank 0: ValueError: y must hold integer labels in \[0, 3\]"):
        gl.loss(X, bad)
    with pytest.raises(RankFailure, match="rank 0: ValueError: X must be"):
        gl.loss(X[:, :5], y)
    for k, v in model.params.items():
        np.testing.assert_array_equal(v, before[0][k])
    for a, b in zip(running(model), before[1]):
        np.testing.assert_array_equal(a, b)
    assert gl.steps == before[2] == 1 and model.reg == 0.02


def test_broadcast_and_is_root_on_one_process():
    model = make_model()
    dist = for_solver(model, "serial", shards=2)
    opt = fastopt.Adam(model.params, lr=0.01)
    dist.broadcast(opt)
    assert dist.is_root and dist.steps == 0
    assert len(dist.state_arrays()) == len(model.params) + 2 * len(model.hidden_dims)
    assert dist.bytes_per_step() == 0


def test_frozen_or_foreign_models_are_refused():
    class NoBlocks:
        params = {"W1": np.zeros(3)}
        normalization = "batchnorm"

        def loss(self, X, y=None):
            raise AssertionError
    with pytest.raises(TypeError, match="block description"):
        GlobalLoss(NoBlocks(), "serial")
    model = make_model()
    model.freeze([0])
    with pytest.raises(ValueError, match="frozen"):
        GlobalLoss(model, "serial")


def test_batchnorm_settings_are_validated_before_anything_runs():
    model = make_model()
    model.bn_params[1]["momentum"] = 1.5
    with pytest.raises(ValueError, match=r"bn_params\[1\]\['momentum'\]"):
        GlobalLoss(model, "serial")


@pytest.mark.parametrize("width", [1, 7, 5000, 20000])
@pytest.mark.parametrize("mode", ["deterministic", "fast"])
def test_row_combine_sums_the_shards_in_order_on_one_process(width, mode):
    c = RowCombine(Serial(), 5, width, np.float32, mode)
    r = np.random.default_rng(width)
    c.rows[...] = r.standard_normal(c.rows.shape).astype(np.float32)
    expected = np.zeros(width, np.float32)
    for row in c.rows.copy():
        expected += row
    np.testing.assert_array_equal(c.combine(), expected)
    assert c.combine(failed=True) is None
