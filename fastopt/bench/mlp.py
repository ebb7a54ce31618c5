"""The mlp suite of `fastopt bench`: one training step of the CS231n batchnorm MLP, three ways.

Network 3072-1024-1024-10, (affine -> batchnorm -> ReLU) x 2 -> affine -> softmax loss, batch 256,
Adam (lr 1e-3), float32; ``--quick``: 256-128-128-10, batch 64. Same data and initial weights on
every side (fastopt.bench.mlp_torch.make_problem).

  fastopt  FullyConnectedNet.loss(X, y) (its fast path) + fastopt.optim.Adam.step(grads)
  numpy    the same code under fastopt.set_backend("numpy"): every kernel is its NumPy twin
  torch    torch.nn + torch.optim.Adam(fused=True) (mlp_torch.build_torch_step)
  gemms    the step's matmuls alone (gemms_of_step): "gemms / fastopt" is the share of the step in them
  torch gemms  the same matmuls through torch.matmul on the same arrays (torch's BLAS: MKL in its
           x86 wheels, NumPy's is OpenBLAS): where torch's step is faster, this says whether the
           difference is the BLAS

Then one row per fused kernel of the hidden layers at the same shape, with its roofline (a stream
loop over the arrays it reads and writes).

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
            _, grads = model.loss(X, y, out=model.grads)   # the Solver's zero-copy form
            opt.step(grads)

    step.model, step.optimizer = model, opt
    return step


def _gemm_operands(step, problem):
    """(a, b, out) of each matmul of `step`'s training step (the forward products, the weight
    gradients, the gradients wrt each hidden layer's output), on the model's own workspace, in the
    order the fused execution runs them."""
    model, (X, _, _) = step.model, problem
    ws, p, g = model._workspaces.get(X.shape[0]), model.params, model.grads
    for a in ws.z + ws.r + ws.dh + [ws.scores, ws.dscores]:
        a.fill(0.5)                                  # finite values (the step overwrites them all)
    hidden = len(model.hidden_dims)
    inputs = [X] + ws.r                               # each affine layer's input
    outs = ws.z + [ws.scores]
    upstream = ws.dh + [ws.dscores]                   # grad wrt each layer's pre-activation
    ops = [(inputs[i], p[f"W{i + 1}"], outs[i]) for i in range(hidden + 1)]
    for i in range(hidden, -1, -1):
        ops.append((inputs[i].T, upstream[i], g[f"W{i + 1}"]))
        if i > 0:
            ops.append((upstream[i], p[f"W{i + 1}"].T, ws.dh[i - 1]))
    return ops


def gemms_of_step(step, problem):
    """A zero-argument callable running just the matmuls of `step`'s training step with NumPy's BLAS
    and `out=`, as the fused execution does: what the step costs at least."""
    ops = _gemm_operands(step, problem)

    def gemms():
        for a, b, out in ops:
            np.matmul(a, b, out=out)
    return gemms


def torch_gemms_of_step(step, problem):
    """The same matmuls through torch.matmul on the same memory (torch.from_numpy views, the
    transposed operands included): NumPy's BLAS against torch's on identical operands."""
    import torch
    ops = [tuple(torch.from_numpy(x) for x in op) for op in _gemm_operands(step, problem)]

    def gemms():
        for a, b, out in ops:
            torch.matmul(a, b, out=out)
    return gemms


# Kernel rows at the suite's hidden-layer shape: (kernel, argument builder, (arrays read, written)).
# The pattern counts each (N, D) array the kernel must read or write once (a column block it passes
# over twice stays in L2).
def _kernel_args(rng, n, d, dtype):
    a = {k: rng.standard_normal((n, d)).astype(dtype) for k in ("z", "g", "out", "dz")}
    v = {k: (rng.random(d) + 0.5).astype(dtype) for k in ("b", "gamma", "beta", "rm", "rv", "mean", "istd",
                                                          "dg", "dbe", "db")}
    return {
        "bias_relu_forward": ((a["z"], v["b"], a["out"]), (1, 1)),
        "relu_bias_backward": ((a["g"], a["out"], v["db"]), (2, 1)),
        "batchnorm_relu_forward": ((a["z"], v["b"], v["gamma"], v["beta"], 1e-5, 0.9, v["rm"], v["rv"],
                                    a["out"], v["mean"], v["istd"]), (1, 1)),
        "relu_batchnorm_backward": ((a["g"], a["out"], a["z"], v["b"], v["gamma"], v["mean"], v["istd"],
                                     a["dz"], v["dg"], v["dbe"], v["db"]), (3, 1)),
    }


def kernel_cases(dims, batch, dtype, seed):
    from fastopt import _backend

    n, d = batch, dims[1]
    rng = np.random.default_rng(seed)
    for name, (args, access) in _kernel_args(rng, n, d, np.dtype(dtype)).items():
        def run(name=name, args=args):
            kernels = _backend.kernels("mlp")        # the backend the runner selected
            getattr(kernels, name)(*args, _backend.threads_for(n * d, kernels.GRAIN))
        yield Case(kernel=name, size=f"{n}x{d}", elements=n * d, dtype=str(np.dtype(dtype)),
                   bytes_moved=sum(access) * n * d * np.dtype(dtype).itemsize, fastopt=run, numpy=run,
                   access=access)


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
        with using_backend("cython"):
            extra = {"gemms": gemms_of_step(fast, problem)}
            if torch_step is not None:
                extra["torch gemms"] = torch_gemms_of_step(fast, problem)
        yield Case(kernel="mlp train step", size=size, elements=n_params, dtype=str(np.dtype(dtype)),
                   bytes_moved=None, fastopt=fast, numpy=slow, torch=torch_step,
                   torch_impl="nn + fused Adam" if torch_step else "",
                   notes={"batch": batch, "dims": "-".join(map(str, dims))},
                   extra=extra)
        yield from kernel_cases(dims, batch, dtype, config.seed)
