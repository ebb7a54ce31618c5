"""FullyConnectedNet(activation=..., activation_param=...): every activation of the table, gradient-
checked in float64, the fused execution against the readable one, the fused path taken at a real
size (kernel calls counted), weight_init="auto", and the activation kept in the model state."""
import json
from collections import Counter

import numpy as np
import pytest

from fastopt import _backend
from fastopt.gradcheck import rel_error
from fastopt.layers.activations import ACTIVATIONS
from fastopt.nn import FullyConnectedNet
from fastopt.nn.init import init_weight

NAMES = tuple(ACTIVATIONS)
PARAMS = {"leaky_relu": 0.2, "elu": 0.7}   # a non-default hyperparameter where there is one


def data(n=8, dim=6, classes=4, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, dim)).astype(dtype), rng.integers(0, classes, n)


def model(activation, dtype=np.float64, **kw):
    args = dict(hidden_dims=[7, 5], input_dim=6, num_classes=4, dtype=dtype, rng=3, weight_init="auto",
                activation=activation, activation_param=PARAMS.get(activation), reg=0.1)
    args.update(kw)
    return FullyConnectedNet(**args)


def numerical_gradient(f, p, h=1e-5):
    """Fourth-order centered differences, (8 (f(+h) - f(-h)) - (f(+2h) - f(-2h))) / 12h: truncation
    ~h^4 and rounding ~eps/h, so small gradient entries (sigmoid's) are checked to ~1e-9 too."""
    grad = np.zeros_like(p)
    for ix in np.ndindex(p.shape):
        old = p[ix]
        values = []
        for step in (h, -h, 2 * h, -2 * h):
            p[ix] = old + step
            values.append(f())
        p[ix] = old
        grad[ix] = (8 * (values[0] - values[1]) - (values[2] - values[3])) / (12 * h)
    return grad


@pytest.mark.parametrize("normalization", [None, "batchnorm", "layernorm"])
@pytest.mark.parametrize("activation", NAMES)
def test_gradient_check_float64(activation, normalization):
    m = model(activation, normalization=normalization)
    X, y = data()
    # Smooth activations take a larger step (less rounding); a kinked one (the ReLU family, elu's
    # second derivative) a small one, so that no perturbation crosses a kink.
    h = 1e-4 if activation in ("tanh", "sigmoid") else 1e-5
    for fast in (True, False):
        m.fast_path = fast
        _, grads = m.loss(X, y)
        for name, p in m.params.items():
            num = numerical_gradient(lambda: m.loss(X, y)[0], p, h=h)
            if normalization == "batchnorm" and name[0] == "b" and name[1:].isdigit() and int(name[1:]) < m.num_layers:
                # Batchnorm subtracts the batch mean: the bias before it has gradient 0 exactly.
                assert np.abs(grads[name]).max() < 1e-15 and np.abs(num).max() < 1e-9, name
                continue
            # Relative to the whole gradient (batchnorm makes some entries vanish: an entry-wise
            # ratio of two ~1e-11 numbers says nothing), and entry-wise where entries are not tiny.
            norm_err = np.linalg.norm(grads[name] - num) / (np.linalg.norm(grads[name]) + np.linalg.norm(num))
            assert norm_err < 1e-8, (activation, normalization, fast, name)
            big = np.abs(num) > 1e-3 * np.abs(num).max()
            assert rel_error(grads[name][big], num[big]) < 1e-7, (activation, normalization, fast, name)


@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-12), (np.float32, 2e-5)])
@pytest.mark.parametrize("dropout", [1, 0.7])
@pytest.mark.parametrize("activation", NAMES)
def test_fused_matches_readable(activation, dtype, rtol, dropout):
    X, y = data(n=33, dtype=dtype, seed=4)
    fused, readable = model(activation, dtype, dropout_keep_ratio=dropout), model(activation, dtype, dropout_keep_ratio=dropout)
    readable.fast_path = False
    assert fused.fused and not readable.fused
    # Test mode: the same operations in the same order (matmul, bias add, the activation kernel).
    np.testing.assert_array_equal(fused.loss(X), readable.loss(X))
    (lf, gf), (lr, gr) = fused.loss(X, y), readable.loss(X, y)
    assert lf == pytest.approx(lr, rel=rtol)
    for k in gf:   # the bias gradient sums in another order: not bitwise
        np.testing.assert_allclose(gf[k], gr[k], rtol=rtol, atol=rtol * float(np.abs(gr[k]).max()), err_msg=k)


class _Counting:
    """A kernel module whose calls are counted by name."""

    def __init__(self, module, counts):
        self._module, self._counts = module, counts

    def __getattr__(self, name):
        value = getattr(self._module, name)
        if not callable(value):
            return value

        def counted(*args, **kw):
            self._counts[name] += 1
            return value(*args, **kw)
        return counted


@pytest.mark.parametrize("normalization", [None, "batchnorm"])
@pytest.mark.parametrize("activation", NAMES)
def test_realistic_size_takes_the_fused_path(activation, normalization, monkeypatch):
    counts, real = Counter(), _backend.kernels
    monkeypatch.setattr(_backend, "kernels", lambda family: _Counting(real(family), counts))
    X, y = data(n=256, dim=512, classes=10, seed=1, dtype=np.float32)
    kw = dict(hidden_dims=[1024, 1024], input_dim=512, num_classes=10, normalization=normalization)
    fused, readable = model(activation, np.float32, **kw), model(activation, np.float32, **kw)
    readable.fast_path = False
    lf, gf = fused.loss(X, y)
    spec = ACTIVATIONS[activation]
    if activation == "relu":   # ReLU stays on the fused bias+relu / batchnorm+relu kernels of _mlp_kernels
        name = "bias_relu" if normalization is None else "batchnorm_relu"
        assert counts[f"{name}_forward"] == 2 and counts[spec.forward_kernel] == 0
    else:
        assert counts["bias_relu_forward"] == counts["batchnorm_relu_forward"] == 0
        assert counts[spec.forward_kernel] == 2 and counts[spec.backward_kernel] == 2
        assert counts["batchnorm_train_forward"] == (2 if normalization else 0)
    assert counts["bias_softmax_loss_grad"] == 1      # the fused output layer
    counts.clear()
    lr, gr = readable.loss(X, y)
    assert counts["softmax_loss_grad"] == counts["bias_softmax_loss_grad"] == 0 and counts["bias_relu_forward"] == 0
    assert lf == pytest.approx(lr, rel=1e-5)
    scale = max(float(np.abs(v).max()) for v in gr.values())
    for k in gf:
        np.testing.assert_allclose(gf[k], gr[k], rtol=1e-3, atol=1e-4 * scale, err_msg=k)


@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-12), (np.float32, 2e-5)])
@pytest.mark.parametrize("normalization", ["batchnorm", "layernorm"])
@pytest.mark.parametrize("activation", NAMES)
def test_fused_matches_readable_with_a_normalization(activation, normalization, dtype, rtol):
    X, y = data(n=17, dtype=dtype, seed=6)
    fused = model(activation, dtype, normalization=normalization, dropout_keep_ratio=0.8)
    readable = model(activation, dtype, normalization=normalization, dropout_keep_ratio=0.8)
    readable.fast_path = False
    assert fused.fused
    for _ in range(2):   # the second call runs on the running statistics the first one updated
        (lf, gf), (lr, gr) = fused.loss(X, y), readable.loss(X, y)
        assert lf == pytest.approx(lr, rel=rtol)
        # Relative to the largest gradient: batchnorm's hidden biases have gradient 0, both sides noise.
        scale = max(float(np.abs(v).max()) for v in gr.values())
        for k in gf:
            np.testing.assert_allclose(gf[k], gr[k], rtol=rtol, atol=rtol * scale, err_msg=k)
    np.testing.assert_allclose(fused.loss(X), readable.loss(X), rtol=rtol, atol=rtol)
    for a, b in zip(fused.bn_params, readable.bn_params):
        for key in ("running_mean", "running_var"):
            if key in a:
                np.testing.assert_allclose(a[key], b[key], rtol=rtol, atol=rtol)


@pytest.mark.parametrize("activation", NAMES)
def test_weight_init_auto_is_the_activations_recommendation(activation):
    m = model(activation, weight_init="auto")
    scheme = ACTIVATIONS[activation].init
    assert scheme == ("xavier" if activation in ("tanh", "sigmoid") else "he")
    same = model(activation, weight_init=scheme)
    for k in m.params:
        np.testing.assert_array_equal(m.params[k], same.params[k])
    # None stays CS231n's: N(0, weight_scale^2) whatever the activation.
    small = FullyConnectedNet([400], input_dim=300, activation=activation, weight_scale=1e-3, rng=0)
    assert small.params["W1"].std() == pytest.approx(1e-3, rel=0.02)
    ref = init_weight(np.random.default_rng(np.random.SeedSequence(0).spawn(2)[0]), 300, 400, weight_scale=1e-3)
    np.testing.assert_array_equal(small.params["W1"], ref)


@pytest.mark.parametrize("kwargs,exc,fragment", [
    ({"activation": "swish"}, ValueError, "activation must be one of"),
    ({"activation": 3}, ValueError, "activation must be one of"),
    ({"activation": "relu", "activation_param": 0.1}, TypeError, "takes no hyperparameter"),
    ({"activation": "leaky_relu", "activation_param": -0.5}, ValueError, "negative_slope"),
    ({"activation": "elu", "activation_param": "1"}, TypeError, "alpha"),
    ({"activation": "tanh", "weight_init": "lecun"}, ValueError, "weight_init"),
])
def test_bad_activation_arguments(kwargs, exc, fragment):
    with pytest.raises(exc, match=fragment):
        FullyConnectedNet([4], input_dim=3, **kwargs)


def test_the_state_keeps_the_activation_and_refuses_another():
    tanh, relu, leaky = model("tanh"), model("relu"), model("leaky_relu")
    state = tanh.state_dict()
    assert state["architecture"] == {"activation": "tanh", "activation_param": None}
    for other in (relu, leaky, model("leaky_relu", activation_param=0.3)):
        before = other.state_dict()
        src = leaky.state_dict() if other is not leaky else state
        with pytest.raises(ValueError, match="architecture"):
            other.load_state_dict(src)
        after = other.state_dict()
        assert all(np.array_equal(before["params"][k], after["params"][k]) for k in before["params"])
    model("tanh", rng=9).load_state_dict(state)      # the same architecture loads
    old = relu.state_dict()
    del old["architecture"]                         # a state written before the option: ReLU
    model("relu", rng=9).load_state_dict(old)
    with pytest.raises(ValueError, match="architecture"):
        model("tanh").load_state_dict(old)
    forged = dict(state, architecture={"activation": "tanh", "activation_param": np.zeros(2)})
    with pytest.raises(ValueError, match="architecture"):
        model("tanh").load_state_dict(forged)


def test_a_solver_checkpoint_refuses_a_model_with_another_activation(tmp_path):
    from fastopt.solver import Solver
    X, y = data(n=40)
    d = {"X_train": X, "y_train": y, "X_val": X, "y_val": y}
    s = Solver(model("elu"), d, update_rule="sgd", optim_config={"learning_rate": 0.1}, batch_size=10,
               num_epochs=1, verbose=False, seed=0)
    s.train()
    path = s.save_checkpoint(tmp_path / "elu.ckpt")
    Solver.from_checkpoint(path, model("elu", rng=5), d)
    target = model("tanh")
    with pytest.raises(ValueError, match="architecture"):
        Solver.from_checkpoint(path, target, d)


def test_train_cli_activation(tmp_path, capsys):
    from fastopt.cli import main
    out = tmp_path / "r.json"
    assert main(["train", "--activation", "tanh", "--weight-init", "auto", "--epochs", "1", "--hidden", "16",
                 "--threads", "1", "--quiet", "--json", str(out)]) == 0
    cfg = json.loads(out.read_text())["config"]
    assert cfg["activation"] == "tanh" and cfg["weight_init"] == "auto"
    assert main(["train", "--activation", "swish", "--epochs", "1", "--quiet"]) == 2
    assert "--activation must be one of" in capsys.readouterr().err
