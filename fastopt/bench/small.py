"""The small suite of `fastopt bench`: where per-call overhead, not memory bandwidth, decides.

digits step   one training step of the digits MLP 64-128-64-10 (batchnorm, batch 64, Adam lr 1e-3,
              float32) on the bundled digits, the minibatch drawn each step:
  fastopt     ``Solver(model, data, update_rule="adam")`` -- its loop body (draw, loss, update)
  numpy       the same network written CS231n-style in pure NumPy (cs231n_numpy.Cs231nMLP)
  torch       torch.nn + torch.optim.Adam(fused=True), the batch gathered the same way
20-tensor     one ``fastopt.optim.Adam`` step over 20 separate float32 arrays of 1000 elements
  fastopt     the public API (``Adam(list_of_arrays).step(grads)``)
  numpy       the same under fastopt.set_backend("numpy")
  torch       torch.optim.Adam(fused=True); extra "torch foreach" (foreach=True)
  numba       (extra, when installed) a loop over the 20 arrays calling one @njit Adam kernel each
              -- with its roofline: a stream loop reading 4 and writing 3 arrays of 20,000 elements

Every ratio is measured in the same run (interleaved repeats; the report gives medians and the
range of the per-repeat ratios).
"""
import importlib.util

import numpy as np

from .cases import Case, using_backend
from .cs231n_numpy import Cs231nMLP

DIGITS_DIMS = (64, 128, 64, 10)
DIGITS_BATCH = 64
LR = 1e-3
TENSORS, TENSOR_SIZE = 20, 1000


def _digits_data(dtype):
    from fastopt.data.digits import load_digits

    d = load_digits(dtype=dtype)
    return {k: d[k] for k in ("X_train", "y_train", "X_val", "y_val")}


def solver_step(data, dtype, seed=0):
    """The Solver's training step on the digits MLP (its loop body: draw a batch, loss, update)."""
    from fastopt.nn import FullyConnectedNet
    from fastopt.solver import Solver

    model = FullyConnectedNet(list(DIGITS_DIMS[1:-1]), input_dim=DIGITS_DIMS[0], num_classes=DIGITS_DIMS[-1],
                              normalization="batchnorm", dtype=dtype, rng=seed, weight_init="he")
    solver = Solver(model, data, update_rule="adam", optim_config={"learning_rate": LR},
                    batch_size=DIGITS_BATCH, seed=seed, verbose=False)
    def step():                  # what Solver.train() runs per iteration (accuracy checks aside)
        return solver._step()
    step.solver, step.model = solver, model
    return step


def torch_digits_step(torch, data, threads, seed=0):
    """torch.nn + fused Adam on the same data, the minibatch drawn by NumPy and gathered as in fastopt."""
    from torch import nn

    torch.manual_seed(seed)
    dims = DIGITS_DIMS
    layers = []
    for i in range(1, len(dims)):
        layers.append(nn.Linear(dims[i - 1], dims[i]))
        if i < len(dims) - 1:
            layers += [nn.BatchNorm1d(dims[i], momentum=0.1), nn.ReLU()]
    model = nn.Sequential(*layers).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=LR, fused=True)
    loss_fn = nn.CrossEntropyLoss()
    X, y = data["X_train"], data["y_train"]
    rng = np.random.default_rng(seed)
    torch.set_num_threads(threads)

    def step():
        idx = rng.integers(0, X.shape[0], size=DIGITS_BATCH)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(torch.from_numpy(X[idx])), torch.from_numpy(y[idx]))
        loss.backward()
        optimizer.step()
    return step


def digits_case(config, threads):
    data = _digits_data(np.float32)
    with using_backend("cython"):
        fast = solver_step(data, np.float32, config.seed)
    naive = Cs231nMLP(data, DIGITS_DIMS, DIGITS_BATCH, lr=LR, seed=config.seed)
    torch_step = torch_digits_step(config.torch, data, threads, config.seed) if config.torch else None
    n_params = sum(a * b + b for a, b in zip(DIGITS_DIMS[:-1], DIGITS_DIMS[1:])) + 2 * sum(DIGITS_DIMS[1:-1])
    return Case(kernel="digits step", size="64x" + "-".join(map(str, DIGITS_DIMS)), elements=n_params,
                dtype="float32", bytes_moved=None, fastopt=fast, numpy=naive.step, torch=torch_step,
                torch_impl="nn + fused Adam" if torch_step else "",
                notes={"fastopt": "Solver(update_rule='adam')", "numpy": "CS231n-style NumPy"})


# ---------------------------------------------------------------------------------------------------
# 20 separate tensors

def _tensors(seed):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(TENSOR_SIZE).astype(np.float32) for _ in range(TENSORS)]
    grads = [rng.standard_normal(TENSOR_SIZE).astype(np.float32) for _ in range(TENSORS)]
    return params, grads


def fastopt_tensor_step(params, grads):
    from fastopt.optim import Adam

    ps = [p.copy() for p in params]
    opt = Adam(ps, lr=LR)
    return lambda: opt.step(grads)


def torch_tensor_step(torch, params, grads, mode):
    ps = [torch.from_numpy(p.copy()).requires_grad_(True) for p in params]
    for p, g in zip(ps, grads):
        p.grad = torch.from_numpy(g.copy())
    opt = torch.optim.Adam(ps, lr=LR, **{mode: True})
    return opt.step


def numba_tensor_step(params, grads):
    """Adam (torch's formula) as one @njit kernel called per array: the loop a numba user writes."""
    import math

    import numba

    @numba.njit(cache=False, fastmath=False)
    def adam(p, g, m, v, lr, b1, b2, eps, bc1, bc2_sqrt):
        step_size = lr / bc1
        for i in range(p.size):
            m[i] = b1 * m[i] + (1 - b1) * g[i]
            v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i]
            p[i] -= step_size * m[i] / (math.sqrt(v[i]) / bc2_sqrt + eps)

    ps = [p.copy() for p in params]
    ms = [np.zeros_like(p) for p in params]
    vs = [np.zeros_like(p) for p in params]
    state = {"t": 0}

    def step():
        state["t"] += 1
        t = state["t"]
        bc1, bc2_sqrt = 1 - 0.9 ** t, (1 - 0.999 ** t) ** 0.5
        for p, g, m, v in zip(ps, grads, ms, vs):
            adam(p, g, m, v, LR, 0.9, 0.999, 1e-8, bc1, bc2_sqrt)
    step()                        # compile outside the timing
    return step


def tensors_case(config):
    params, grads = _tensors(config.seed)
    extra = {}
    torch_step = None
    if config.torch is not None:
        torch_step = torch_tensor_step(config.torch, params, grads, "fused")
        extra["torch foreach"] = torch_tensor_step(config.torch, params, grads, "foreach")
    if importlib.util.find_spec("numba") is not None:
        extra["numba"] = numba_tensor_step(params, grads)
    return Case(kernel="adam 20 tensors", size=f"{TENSORS}x{TENSOR_SIZE}", elements=TENSORS * TENSOR_SIZE,
                dtype="float32", bytes_moved=7 * 4 * TENSORS * TENSOR_SIZE,
                fastopt=fastopt_tensor_step(params, grads), numpy=fastopt_tensor_step(params, grads),
                torch=torch_step, torch_impl="fused" if torch_step else "", access=(4, 3), extra=extra)


def cases(config):
    import fastopt

    yield digits_case(config, fastopt.get_num_threads())
    yield tensors_case(config)
