"""The mlp suite of `fastopt bench`: one training step of the CS231n batchnorm MLP, three ways.

Network 3072-1024-1024-10, (affine -> batchnorm -> ReLU) x 2 -> affine -> softmax loss, batch 256,
Adam (lr 1e-3), float32; ``--quick``: 256-128-128-10, batch 64. Same data and initial weights on
every side (fastopt.bench.mlp_torch.make_problem).

  fastopt  FullyConnectedNet.loss(X, y) (its fast path) + fastopt.optim.Adam.step(grads)
  numpy    the same code under fastopt.set_backend("numpy"): every kernel is its NumPy twin
  torch    torch.nn + torch.optim.Adam(fused=True) (mlp_torch.build_torch_step)

Threads: the runner sets fastopt's and torch's thread count; NumPy's OpenBLAS pool is set to the
same count around each fastopt/numpy step (fastopt._blas.limit_blas_threads), so all three
sides use the same number of threads for their matmuls.
"""
import numpy as np

import fastopt

from .cases import Case, using_backend
from .mlp_torch import build_torch_step, make_problem

DIMS = (3072, 1024, 1024, 10)
BATCH = 256
DIMS_QUICK = (256, 128, 128, 10)
BATCH_QUICK = 64
LR = 1e-3


def build_fastopt_step(problem, dims):
    """A zero-argument training step: FullyConnectedNet (batchnorm) + fastopt.optim.Adam."""
    from fastopt.nn import FullyConnectedNet
    from fastopt._blas import limit_blas_threads
    from fastopt.optim import Adam

    X, y, params = problem
    model = FullyConnectedNet(hidden_dims=list(dims[1:-1]), input_dim=dims[0], num_classes=dims[-1],
                              normalization="batchnorm", dtype=X.dtype, seed=0)
    for k, v in params.items():
        model.params[k] = v                      # copied into the flat buffer
    opt = Adam(dict(model.params), lr=LR)

    def step():
        with limit_blas_threads(fastopt.get_num_threads()), fastopt.beside_blas():
            _, grads = model.loss(X, y)
            opt.step(grads)

    step.model, step.optimizer = model, opt
    return step


def cases(config):
    dims, batch = (DIMS_QUICK, BATCH_QUICK) if config.quick else (DIMS, BATCH)
    size = f"{batch}x" + "-".join(map(str, dims))
    n_params = sum(dims[i] * dims[i + 1] + dims[i + 1] for i in range(len(dims) - 1))
    n_params += 2 * sum(dims[1:-1])              # gamma, beta
    for dtype in config.dtypes:
        problem = make_problem(batch, dims, seed=config.seed, dtype=np.dtype(dtype))
        with using_backend("cython"):
            fast = build_fastopt_step(problem, dims)
        with using_backend("numpy"):
            slow = build_fastopt_step(problem, dims)
        torch_step = None
        if config.torch is not None and np.dtype(dtype) == np.float32:
            torch_step = build_torch_step(batch, dims, fastopt.get_num_threads(), seed=config.seed,
                                          lr=LR, problem=problem)
        yield Case(kernel="mlp train step", size=size, elements=n_params, dtype=str(np.dtype(dtype)),
                   bytes_moved=None, fastopt=fast, numpy=slow, torch=torch_step,
                   torch_impl="nn + fused Adam" if torch_step else "",
                   notes={"batch": batch, "dims": "-".join(map(str, dims))})
