"""The fused MLP kernels composed into one training step give PyTorch's loss and gradients."""
import numpy as np
import pytest

from fastopt.bench.mlp_torch import build_torch_step, make_problem

K = pytest.importorskip("fastopt._mlp_kernels")


def _fused_grads(X, y, p, eps):
    """Forward + backward of (affine -> batchnorm -> ReLU) x 2 -> affine -> softmax with the kernels."""
    n = X.shape[0]
    grads, cache, x = {}, [], X
    for i in (1, 2):
        d = p[f"W{i}"].shape[1]
        z, h = x @ p[f"W{i}"], np.empty((n, d))
        mean, inv_std = np.empty(d), np.empty(d)
        K.batchnorm_relu_forward(z, p[f"b{i}"], p[f"gamma{i}"], p[f"beta{i}"], eps, 0.9, np.zeros(d),
                                 np.ones(d), h, mean, inv_std, 2)
        cache.append((x, z, h, mean, inv_std))
        x = h
    scores = x @ p["W3"] + p["b3"]
    ds = np.empty_like(scores)
    loss = K.softmax_loss_grad(scores, y, ds, 2)
    grads["W3"], grads["b3"] = x.T @ ds, np.empty(p["b3"].size)
    K.bias_grad(ds, grads["b3"], 2)
    dh = ds @ p["W3"].T
    for i in (2, 1):
        x_in, z, h, mean, inv_std = cache[i - 1]
        d = z.shape[1]
        grads.update({f"gamma{i}": np.empty(d), f"beta{i}": np.empty(d), f"b{i}": np.empty(d)})
        K.relu_batchnorm_backward(dh, h, z, p[f"b{i}"], p[f"gamma{i}"], mean, inv_std, dh,
                                  grads[f"gamma{i}"], grads[f"beta{i}"], grads[f"b{i}"], 2)
        grads[f"W{i}"] = x_in.T @ dh
        dh = dh @ p[f"W{i}"].T
    return loss, grads


def test_fused_step_matches_torch_autograd():
    torch = pytest.importorskip("torch")
    dims = (13, 70, 9, 5)
    X, y, p = make_problem(16, dims, seed=3, dtype=np.float64)
    rng = np.random.default_rng(0)
    for k in p:                                      # non-trivial gammas/betas/biases
        if not k.startswith("W"):
            p[k] = p[k] + rng.standard_normal(p[k].shape) * 0.3
    loss, grads = _fused_grads(X, y, p, 1e-5)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        step = build_torch_step(16, dims, 1, problem=(X, y, p))
        model = step.model
        out = torch.nn.functional.cross_entropy(model(torch.from_numpy(X)), torch.from_numpy(y))
        out.backward()
    finally:
        torch.set_default_dtype(old)
    assert loss == pytest.approx(out.item(), rel=1e-12)
    lin = [m for m in model if isinstance(m, torch.nn.Linear)]
    bns = [m for m in model if isinstance(m, torch.nn.BatchNorm1d)]
    for i, m in enumerate(lin, 1):
        np.testing.assert_allclose(grads[f"W{i}"], m.weight.grad.numpy().T, rtol=1e-9, atol=1e-12)
        # b1, b2 feed a batchnorm: their true gradient is 0; both sides give rounding noise.
        np.testing.assert_allclose(grads[f"b{i}"], m.bias.grad.numpy(), rtol=1e-9, atol=1e-12)
    for i, m in enumerate(bns, 1):
        np.testing.assert_allclose(grads[f"gamma{i}"], m.weight.grad.numpy(), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(grads[f"beta{i}"], m.bias.grad.numpy(), rtol=1e-9, atol=1e-12)
