"""Size sweep of every fast path, up to more than 1M elements: the path taken (which kernels ran,
how many calls, on how many threads) and not only the results.

Fast paths: a flat optimizer param group (one kernel call over the whole buffer), the model's fused
step (FullyConnectedNet's fused mlp kernels, and the Solver's one optimizer call per iteration), and
kernels split across threads (optimizer classes and CS231n rules, normalization and dropout layers).
Kernel calls are counted by the `kernel_calls` fixture (conftest.py), which wraps what
fastopt._backend.kernels(family) returns.
"""
import numpy as np
import pytest

import fastopt
from fastopt import _blas, _dropout_kernels, _mlp_kernels, _norm_kernels, _optim_kernels, optim
from fastopt.flat import FlatParams
from fastopt.layers import (batchnorm_backward, batchnorm_forward, dropout_backward, dropout_forward,
                            layernorm_backward, layernorm_forward)
from fastopt.nn import FullyConnectedNet
from fastopt.optim import SGD, Adagrad, Adam, AdamW, RMSprop
from fastopt.optim._declarations import class_rules

BIG = (1 << 20) + 7                     # > 1M elements, and odd
SIZES = [1, 7, 1023, 70001, BIG]        # 70001 float32 state is > 64 KiB (placed state buffers)

KERNEL = {r.class_name: r.kernel for r in class_rules()}
# Options that turn every optional state buffer on; every other class of the declaration table
# with its `fastopt bench` options (so a rule added to the table is swept too).
_WITH_OPTIONS = [
    (SGD, dict(lr=0.1, momentum=0.9, weight_decay=0.01, nesterov=True)),
    (Adagrad, dict(lr=0.1, lr_decay=0.01, initial_accumulator_value=0.1)),
    (RMSprop, dict(lr=0.01, momentum=0.5, centered=True)),
    (Adam, dict(lr=0.01, amsgrad=True, weight_decay=0.01)),
    (AdamW, dict(lr=0.01, weight_decay=0.1)),
]
OPT_CASES = [(cls, opts, KERNEL[cls.__name__]) for cls, opts in _WITH_OPTIONS] + [
    (getattr(optim, r.class_name), dict(r.bench), r.kernel) for r in class_rules()
    if r.class_name not in {cls.__name__ for cls, _ in _WITH_OPTIONS}]
OPT_IDS = [f"{cls.__name__}-{i}" for i, (cls, _, _) in enumerate(OPT_CASES)]


def bits(a):
    return a.view(np.uint32 if a.dtype == np.float32 else np.uint64)


def multi(kernel):
    """The rule's multi-tensor kernel: a cached step calls it on the flat buffer as one tensor."""
    return kernel.replace("_step", "_multi")


def one_call(kernel, step):
    """The one kernel call of a flat group's step: the validated first step calls the rule's
    kernel over the buffer, the cached steps after it the multi-tensor kernel on a one-tensor plan."""
    return [kernel if step == 0 else multi(kernel)]


def split(n):
    """Shapes (a 2-D one first when n allows) whose sizes sum to n."""
    shapes, q = [], n // 14
    if q:
        shapes.append((q, 7))
    rest = n - 7 * q
    if rest > 1:
        shapes += [(rest - 1,), (1,)]
    elif rest:
        shapes.append((rest,))
    assert sum(int(np.prod(s)) for s in shapes) == n
    return shapes


def expected_threads(work, grain, threads):
    """The documented policy, written out: one thread below two grains of work, else at most one
    thread per grain."""
    if threads == 1 or work < 2 * grain:
        return 1
    return min(threads, work // grain)


def test_expected_threads_is_the_backend_policy():
    # The helper above is the documented rule; pin it against the implementation on fixed numbers.
    fastopt.set_num_threads(3)
    for work, want in [(0, 1), (65535, 1), (2 * 32768 - 1, 1), (2 * 32768, 2), (3 * 32768, 3), (10**7, 3)]:
        assert fastopt._backend.threads_for(work, 32768) == want == expected_threads(work, 32768, 3)


# ------------------------------------------------------------------------------------------------
# flat optimizer groups: one kernel call per step at every size


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("cls, opts, kernel", OPT_CASES, ids=OPT_IDS)
def test_flat_group_is_one_kernel_call_at_every_size(cls, opts, kernel, n, kernel_calls):
    dtype = np.float32
    rng = np.random.default_rng(n)
    shapes = split(n)
    arrays = {f"p{i}": rng.standard_normal(s).astype(dtype) for i, s in enumerate(shapes)}
    loose = {k: v.copy() for k, v in arrays.items()}
    flat = FlatParams(arrays)
    fastopt.set_num_threads(2)
    opt_flat, opt_loose = cls(flat.params, **opts), cls(loose, **opts)
    for step in range(3):
        g = {k: rng.standard_normal(v.shape).astype(dtype) for k, v in arrays.items()}
        for k in g:
            flat.grads[k][...] = g[k]
        kernel_calls.clear()
        opt_flat.step(flat.grads)
        # ONE call over the whole buffer, on the threads its size asks for (state >= 64 KiB too).
        assert kernel_calls.names("optim") == one_call(kernel, step), (step, kernel_calls.calls)
        assert kernel_calls.threads("optim") == [expected_threads(n, _optim_kernels.STEP_GRAIN[kernel][0], 2)]
        kernel_calls.clear()
        opt_loose.step(g)
        assert kernel_calls.names("optim") == [kernel] * len(shapes)     # new gradient objects: validated
    for k in arrays:
        assert np.array_equal(bits(flat.params[k]), bits(loose[k])), k
    for sf, sl in zip(opt_flat.state, opt_loose.state):
        for key, v in sf.items():
            if isinstance(v, np.ndarray):
                assert np.array_equal(bits(v), bits(sl[key])), key


@pytest.mark.parametrize("cls, opts, kernel", OPT_CASES, ids=OPT_IDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_each_rule_splits_from_two_of_its_grains(cls, opts, kernel, dtype, kernel_calls):
    # STEP_GRAIN: per rule and dtype, on the validated and the cached step alike
    grain = _optim_kernels.STEP_GRAIN[kernel][dtype == np.float64]
    fastopt.set_num_threads(2)
    for n in (2 * grain - 1, 2 * grain, 3 * grain + 5):
        p = np.random.default_rng(n).standard_normal(n).astype(dtype)
        g = np.random.default_rng(n + 1).standard_normal(n).astype(dtype)
        opt = cls([p], **opts)
        kernel_calls.clear()
        for _ in range(3):
            opt.step([g])
        assert kernel_calls.names("optim") == [kernel] + [multi(kernel)] * 2
        assert kernel_calls.threads("optim") == [expected_threads(n, grain, 2)] * 3, n


def test_every_update_kernel_has_a_grain_per_dtype():
    assert set(_optim_kernels.STEP_GRAIN) == {n for n in dir(_optim_kernels) if n.endswith("_step")}
    assert all(len(g) == 2 and all(isinstance(x, int) and x > 0 for x in g)
               for g in _optim_kernels.STEP_GRAIN.values())


@pytest.mark.parametrize("threads", [1, 2, 3, 4])
def test_flat_group_above_1m_splits_across_threads_with_the_same_bits(threads, kernel_calls):
    rng = np.random.default_rng(0)
    shapes = split(BIG)
    base = {f"p{i}": rng.standard_normal(s).astype(np.float32) for i, s in enumerate(shapes)}
    grads = [{k: rng.standard_normal(v.shape).astype(np.float32) for k, v in base.items()} for _ in range(2)]
    results = {}
    for n_threads in (1, threads):
        fastopt.set_num_threads(n_threads)
        flat = FlatParams(base)
        opt = Adam(flat.params, lr=0.01, amsgrad=True)
        kernel_calls.clear()
        for g in grads:
            for k in g:
                flat.grads[k][...] = g[k]
            opt.step(flat.grads)
        assert kernel_calls.threads("optim") == [min(n_threads, BIG // _optim_kernels.GRAIN)] * 2
        results[n_threads] = flat.params.buffer(np.float32).copy()
    assert np.array_equal(bits(results[1]), bits(results[threads]))


def test_state_loaded_into_a_large_flat_group_keeps_the_one_call_path(kernel_calls):
    # load_state_dict copies state into placed (page-offset) buffers: they must still tile.
    rng = np.random.default_rng(1)
    base = {f"p{i}": rng.standard_normal(s).astype(np.float32) for i, s in enumerate(split(70001))}
    a, b = FlatParams(base), FlatParams(base)
    opt_a, opt_b = Adam(a.params, lr=0.01), Adam(b.params, lr=0.01)
    a.grads.buffer(np.float32)[...] = 1.0
    opt_a.step(a.grads)
    b.params.buffer(np.float32)[...] = a.params.buffer(np.float32)
    opt_b.load_state_dict(opt_a.state_dict())
    b.grads.buffer(np.float32)[...] = 1.0
    kernel_calls.clear()
    opt_a.step(a.grads)
    opt_b.step(b.grads)
    # a: its second step, cached; b: its first after the load, validated. One call over the buffer each.
    assert kernel_calls.names("optim") == ["adam_multi", "adam_step"]
    assert kernel_calls.threads("optim") == [expected_threads(70001, _optim_kernels.STEP_GRAIN["adam_step"][0],
                                                              fastopt.get_num_threads())] * 2
    assert opt_a._fast.entries[0][1].n_segments == 1
    assert np.array_equal(bits(a.params.buffer(np.float32)), bits(b.params.buffer(np.float32)))


# ------------------------------------------------------------------------------------------------
# the model's fused step

# (batch, hidden): activations of 7 ... > 1M elements; 70007 and 1M are split across threads.
MODEL_SIZES = [(1, 7), (3, 341), (73, 959), (1024, 1025)]
FAST_KERNELS = {   # per training loss(): the mlp kernels, tagged h (hidden block) or o (output layer)
    None: [("bias_relu_forward", "h"), ("bias_softmax_loss_grad", "o"), ("relu_bias_backward", "h")],
    "batchnorm": [("batchnorm_relu_forward", "h"), ("bias_softmax_loss_grad", "o"),
                  ("relu_batchnorm_backward", "h")],
    "layernorm": [("bias_softmax_loss_grad", "o"), ("relu_backward_inplace", "h"), ("bias_grad", "h")],
}


@pytest.mark.parametrize("normalization", [None, "batchnorm", "layernorm"])
@pytest.mark.parametrize("n, hidden", MODEL_SIZES)
def test_fused_model_step_kernels_and_threads(n, hidden, normalization, kernel_calls):
    rng = np.random.default_rng(hidden)
    X = rng.standard_normal((n, 16)).astype(np.float32)
    y = rng.integers(0, 10, size=n)
    kw = dict(hidden_dims=[hidden], input_dim=16, num_classes=10, normalization=normalization,
              dtype=np.float32, rng=0)
    fast, slow = FullyConnectedNet(**kw), FullyConnectedNet(**kw)
    slow.fast_path = False
    fastopt.set_num_threads(2)
    with _blas.limit_blas_threads(1):   # BLAS on one thread: beside_blas leaves the kernels 2
        kernel_calls.clear()
        loss_f, grads_f = fast.loss(X, y)
        calls = list(kernel_calls.calls)
        kernel_calls.clear()
        loss_s, grads_s = slow.loss(X, y)
        slow_calls = list(kernel_calls.calls)
    nt = {"h": expected_threads(n * hidden, _mlp_kernels.GRAIN, 2),
          "o": expected_threads(n * 10, _mlp_kernels.GRAIN, 2)}
    assert [(name, t) for fam, name, t in calls if fam == "mlp"] == \
        [(name, nt[tag]) for name, tag in FAST_KERNELS[normalization]]
    norm_threads = expected_threads(n * hidden, _norm_kernels.GRAIN, 2)
    want_norm = ([("layernorm_forward", norm_threads), ("layernorm_backward", norm_threads)]
                 if normalization == "layernorm" else [])
    assert [(name, t) for fam, name, t in calls if fam == "norm"] == want_norm
    assert not any(fam == "mlp" for fam, _, _ in slow_calls)          # the layer path: layer kernels
    assert loss_f == pytest.approx(loss_s, rel=1e-5)
    # One absolute floor for all: a bias before batchnorm has a gradient that is 0 up to rounding.
    scale = max(float(np.max(np.abs(g))) for g in grads_s.values())
    for k in grads_s:
        np.testing.assert_allclose(grads_f[k], grads_s[k], rtol=2e-3, atol=1e-5 * scale, err_msg=k)


@pytest.mark.parametrize("threads", [2, 3, 4])
def test_fused_model_step_above_1m_is_bitwise_independent_of_threads(threads, kernel_calls):
    rng = np.random.default_rng(2)
    X = rng.standard_normal((1024, 16)).astype(np.float32)
    y = rng.integers(0, 10, size=1024)
    out = []
    with _blas.limit_blas_threads(1):
        for n_threads in (1, threads):
            fastopt.set_num_threads(n_threads)
            model = FullyConnectedNet([1025], input_dim=16, num_classes=10, normalization="batchnorm",
                                      dtype=np.float32, rng=0)
            kernel_calls.clear()
            loss, grads = model.loss(X, y)
            assert kernel_calls.threads("mlp")[0] == min(n_threads, 1024 * 1025 // _mlp_kernels.GRAIN)
            out.append((loss, {k: g.copy() for k, g in grads.items()}))
    assert out[0][0] == out[1][0]
    for k in out[0][1]:
        assert np.array_equal(bits(out[0][1][k]), bits(out[1][1][k])), k


def test_solver_step_with_a_class_is_one_optimizer_call_over_1m_params(kernel_calls):
    from fastopt import Solver
    rng = np.random.default_rng(3)
    data = {"X_train": rng.standard_normal((64, 1024)).astype(np.float32), "y_train": rng.integers(0, 10, 64),
            "X_val": rng.standard_normal((8, 1024)).astype(np.float32), "y_val": rng.integers(0, 10, 8)}
    model = FullyConnectedNet([1024], input_dim=1024, num_classes=10, dtype=np.float32, rng=0)
    n_params = sum(p.size for p in model.params.values())
    assert n_params > 1 << 20
    solver = Solver(model, data, update_rule=Adam, optim_config={"lr": 1e-3}, batch_size=32, num_epochs=1,
                    verbose=False, seed=0)
    kernel_calls.clear()
    solver.train()
    iterations = len(solver.loss_history)
    assert iterations == 2
    assert kernel_calls.names("optim") == one_call("adam_step", 0) + one_call("adam_step", 1) * (iterations - 1)


@pytest.mark.parametrize("rule", sorted(optim.RULES))
@pytest.mark.parametrize("hidden", [[16], [1024]], ids=["small", "over-1m"])
def test_solver_step_with_a_cs231n_rule_is_one_optimizer_call(rule, hidden, kernel_calls):
    # update_rule="adam" (the Solver's CS231n default form): the model's params and grads tile one
    # buffer each, so RuleOptimizer takes the flat path -- one kernel call per iteration.
    from fastopt import Solver
    from fastopt.optim._declarations import cs231n_forms
    rng = np.random.default_rng(3)
    data = {"X_train": rng.standard_normal((64, 1024)).astype(np.float32), "y_train": rng.integers(0, 10, 64),
            "X_val": rng.standard_normal((8, 1024)).astype(np.float32), "y_val": rng.integers(0, 10, 8)}
    model = FullyConnectedNet(hidden, input_dim=1024, num_classes=10, dtype=np.float32, rng=0)
    assert (sum(p.size for p in model.params.values()) > 1 << 20) == (hidden == [1024])
    solver = Solver(model, data, update_rule=rule, optim_config={"learning_rate": 1e-3}, batch_size=32,
                    num_epochs=1, verbose=False, seed=0)
    kernel_calls.clear()
    solver.train()
    iterations = len(solver.loss_history)
    assert iterations == 2
    assert kernel_calls.names("optim") == [multi(cs231n_forms()[rule][0].kernel)] * iterations


# ------------------------------------------------------------------------------------------------
# kernels split across threads: CS231n rules and layers at > 1M elements, thread counts 1..4

# Every CS231n function of the registry, with its default config.
@pytest.mark.parametrize("rule, config", [(name, {}) for name in optim.RULES])
def test_cs231n_rules_split_large_arrays_across_threads(rule, config, kernel_calls):
    rng = np.random.default_rng(4)
    w0 = rng.standard_normal(BIG)
    dws = [rng.standard_normal(BIG) for _ in range(2)]
    results = {}
    for threads in (1, 2, 3, 4):
        fastopt.set_num_threads(threads)
        w, cfg = w0.copy(), dict(config)
        kernel_calls.clear()
        for dw in dws:
            w, cfg = optim.RULES[rule](w, dw, cfg)
        assert kernel_calls.threads("optim") == [min(threads, BIG // _optim_kernels.GRAIN)] * 2, rule
        results[threads] = w
    for threads in (2, 3, 4):
        assert np.array_equal(bits(results[1]), bits(results[threads])), (rule, threads)


@pytest.mark.parametrize("kind", ["batchnorm", "layernorm"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_normalization_layers_split_above_1m(kind, dtype, kernel_calls):
    rng = np.random.default_rng(5)
    x = (3 + rng.standard_normal((1025, 1024))).astype(dtype)
    dout = rng.standard_normal(x.shape).astype(dtype)
    gamma, beta = rng.standard_normal(1024).astype(dtype), rng.standard_normal(1024).astype(dtype)
    forward, backward = ((batchnorm_forward, batchnorm_backward) if kind == "batchnorm"
                         else (layernorm_forward, layernorm_backward))
    results = {}
    for threads in (1, 2, 3, 4):
        fastopt.set_num_threads(threads)
        kernel_calls.clear()
        out, cache = forward(x, gamma, beta, {"mode": "train"})
        grads = backward(dout, cache)
        want = min(threads, x.size // _norm_kernels.GRAIN)
        assert kernel_calls.threads("norm") == [want, want], kernel_calls.calls
        results[threads] = (out,) + tuple(grads)
    for threads in (2, 3, 4):
        for a, b in zip(results[1], results[threads]):
            assert np.array_equal(bits(a), bits(b)), threads


def test_dropout_backward_splits_above_1m(kernel_calls):
    rng = np.random.default_rng(6)
    x = rng.standard_normal(BIG)
    dout = rng.standard_normal(BIG)
    results = {}
    for threads in (1, 2, 3):
        fastopt.set_num_threads(threads)
        out, cache = dropout_forward(x, {"p": 0.7, "mode": "train", "seed": 1})
        kernel_calls.clear()
        dx = dropout_backward(dout, cache)
        assert kernel_calls.calls == [("dropout", "dropout_apply",
                                       min(threads, BIG // _dropout_kernels.GRAIN))]
        results[threads] = (out, dx)
    for threads in (2, 3):
        for a, b in zip(results[1], results[threads]):
            assert np.array_equal(bits(a), bits(b))
