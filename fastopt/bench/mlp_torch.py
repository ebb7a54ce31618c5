"""The PyTorch side of the MLP benchmark: the same network, data and optimizer as fastopt's MLP.

Network (CS231n FullyConnectedNet with batchnorm): (affine -> batchnorm -> ReLU) for each hidden
layer, then affine; mean softmax cross-entropy; Adam with ``fused=True`` (PyTorch's single-kernel
optimizer step). torch is imported lazily: fastopt never depends on it.

BatchNorm momentum: CS231n's running = m * running + (1 - m) * batch with m = 0.9 is PyTorch's
momentum = 1 - m = 0.1. (PyTorch's running_var uses the unbiased batch variance; that only changes
the running statistic, not the training step's cost or its gradients.)
"""
import numpy as np

__all__ = ["make_problem", "build_torch_step"]


def make_problem(batch, dims, seed=0, dtype=np.float32):
    """Fixed data and initial parameters, shared by every side of the benchmark.

    Returns (X, y, params): X (batch, dims[0]), y (batch,) int64 labels in [0, dims[-1]), params a
    dict in CS231n naming (W1, b1, gamma1, beta1, ..., W{L}, b{L}) with He-normal weights.
    """
    dims = tuple(int(d) for d in dims)
    if len(dims) < 2 or min(dims) < 1:
        raise ValueError(f"dims must list at least an input and an output size >= 1, got {dims}")
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((batch, dims[0]), dtype=np.float32).astype(dtype)
    y = rng.integers(0, dims[-1], size=batch, dtype=np.int64)
    params = {}
    n_layers = len(dims) - 1
    for i in range(1, n_layers + 1):
        fan_in, fan_out = dims[i - 1], dims[i]
        params[f"W{i}"] = (rng.standard_normal((fan_in, fan_out), dtype=np.float32)
                           * np.float32(np.sqrt(2.0 / fan_in))).astype(dtype)
        params[f"b{i}"] = np.zeros(fan_out, dtype=dtype)
        if i < n_layers:
            params[f"gamma{i}"] = np.ones(fan_out, dtype=dtype)
            params[f"beta{i}"] = np.zeros(fan_out, dtype=dtype)
    return X, y, params


def build_torch_step(batch, dims, threads, seed=0, *, lr=1e-3, momentum=0.9, eps=1e-5,
                     problem=None):
    """A callable doing one training step in PyTorch (forward, backward, fused Adam) on fixed data.

    `threads` is passed to torch.set_num_threads (process-wide: call this right before timing).
    `problem` is (X, y, params) as from make_problem (defaults to make_problem(batch, dims, seed)).
    The callable returns the loss as a Python float only when called with ``sync=True`` (reading
    the loss costs a little); its attributes ``model`` and ``optimizer`` are the torch objects.
    """
    import torch
    from torch import nn

    torch.set_num_threads(int(threads))
    X, y, params = problem if problem is not None else make_problem(batch, dims, seed)
    n_layers = len(dims) - 1
    layers = []
    for i in range(1, n_layers + 1):
        lin = nn.Linear(dims[i - 1], dims[i])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(params[f"W{i}"].T)))
            lin.bias.copy_(torch.from_numpy(params[f"b{i}"]))
        layers.append(lin)
        if i < n_layers:
            bn = nn.BatchNorm1d(dims[i], eps=eps, momentum=1.0 - momentum)
            with torch.no_grad():
                bn.weight.copy_(torch.from_numpy(params[f"gamma{i}"]))
                bn.bias.copy_(torch.from_numpy(params[f"beta{i}"]))
            layers += [bn, nn.ReLU()]
    model = nn.Sequential(*layers).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, fused=True)
    xt = torch.from_numpy(X)
    yt = torch.from_numpy(y)
    loss_fn = nn.CrossEntropyLoss()

    def step(sync=False):
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(xt), yt)
        loss.backward()
        optimizer.step()
        return loss.item() if sync else None

    step.model = model
    step.optimizer = optimizer
    return step
