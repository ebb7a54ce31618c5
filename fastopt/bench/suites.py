"""The optim and norm suites of `fastopt bench` (the case contract is in :mod:`fastopt.bench.cases`).

Every call into fastopt's public API and into PyTorch made by the bench is in this module (and in the
separately written suite modules registered in cases.SUITES), so an API change is fixed in one place.
"""
import numpy as np

from .cases import Case, size_label, using_backend


# ---------------------------------------------------------------------------------------------------
# optim: one whole public `opt.step(grads)` per call, one parameter array of n elements.

OPTIM_SIZES = (10_000, 100_000, 1_000_000, 16_000_000)
OPTIM_SIZES_QUICK = (10_000, 100_000)

def _optimizer_cases():
    """kernel -> (class name in fastopt.optim (and torch.optim where torch has the rule), constructor
    kwargs, arrays moved per element), from the declarations (fastopt/optim/_declarations.py).
    Arrays moved = each array the update must read plus each it must write, once: p (read, write),
    g (read), each state array the configuration uses (read, write): Adam 7, SGD momentum 5."""
    from fastopt.optim._declarations import class_rules

    cases = {}
    for rule in class_rules():
        h = {**rule.defaults, **rule.bench}
        cases[rule.bench_case] = (rule.class_name, dict(rule.bench), rule.arrays_moved(h), rule.torch_name)
    return cases


OPTIMIZERS = _optimizer_cases()


def optim_cases(config):
    """Every optimizer at every size (config.sizes overrides the defaults) and dtype."""
    sizes = config.sizes or (OPTIM_SIZES_QUICK if config.quick else OPTIM_SIZES)
    for kernel in OPTIMIZERS:
        for n in sizes:
            for dtype in config.dtypes:
                yield make_optim_case(kernel, n, dtype, torch=config.torch, seed=config.seed)


def make_optim_case(kernel, n, dtype, torch=None, seed=0):
    """The Case of optimizer `kernel` (a key of OPTIMIZERS) stepping one parameter array of n elements."""
    from fastopt import optim

    class_name, kwargs, arrays_moved, torch_name = OPTIMIZERS[kernel]
    rng = np.random.default_rng(seed)
    param = rng.standard_normal(n).astype(dtype)
    grad = rng.standard_normal(n).astype(dtype)

    def new_step():
        # Each implementation gets its own parameter copy and optimizer state; grads are read-only.
        p, g = param.copy(), grad.copy()
        opt = getattr(optim, class_name)([p], **kwargs)
        return lambda: opt.step([g])

    torch_step, torch_impl = (None, "")
    if torch is not None and torch_name is not None:
        torch_step, torch_impl = _torch_optim_step(torch, torch_name, kwargs, param, grad)
    return Case(kernel=kernel, size=size_label(n), elements=n, dtype=dtype,
                bytes_moved=arrays_moved * param.itemsize * n,
                fastopt=new_step(), numpy=new_step(),
                torch=torch_step, torch_impl=torch_impl,
                access=optim_access(arrays_moved))


def optim_access(arrays_moved):
    """(arrays read, arrays written) of an optimizer step moving `arrays_moved` arrays: p and each
    state array are read and written, g only read (arrays_moved = 2 * writes + 1)."""
    return (arrays_moved + 1) // 2, (arrays_moved - 1) // 2


def _torch_optim_step(torch, class_name, kwargs, param, grad):
    """torch.optim.<class_name> stepping a copy of `param`: fused when torch supports it on CPU, else
    foreach, else the for-loop (single-tensor) implementation."""
    p = torch.from_numpy(param.copy()).requires_grad_(True)
    p.grad = torch.from_numpy(grad.copy())
    cls = getattr(torch.optim, class_name)
    for mode in ("fused", "foreach", "for-loop"):
        try:
            opt = cls([p], **kwargs, **({"foreach": False} if mode == "for-loop" else {mode: True}))
            opt.step()  # fused support is only checked at the first step on some versions
        except (RuntimeError, ValueError, TypeError):
            continue
        return opt.step, mode
    return None, ""


# ---------------------------------------------------------------------------------------------------
# norm: batchnorm / layernorm / spatial batchnorm, forward, backward and both.

NORM_SHAPES = {"batchnorm": ((256, 1024), (1024, 4096), (8192, 512)),
               "layernorm": ((256, 1024), (1024, 4096), (8192, 512)),
               "spatial batchnorm": ((32, 64, 32, 32),)}
NORM_SHAPES_QUICK = {"batchnorm": ((64, 256),), "layernorm": ((64, 256),),
                     "spatial batchnorm": ((4, 16, 8, 8),)}
# Passes over an x-sized array (reads plus writes) each part needs at least:
#   forward: read x for the statistics, read x again and write out -> 3;
#   backward: read dout and x for dgamma/dbeta, then read dout, x and write dx -> 5;  both -> 8.
NORM_PASSES = {"fwd": 3, "bwd": 5, "fwd+bwd": 8}
# The same passes as (arrays read, arrays written): the roofline's access pattern.
NORM_ACCESS = {"fwd": (2, 1), "bwd": (4, 1), "fwd+bwd": (6, 2)}
NORM_EPS = 1e-5


def norm_cases(config):
    """Every norm kernel at every shape and dtype, in forward, backward and forward+backward rows."""
    shapes = NORM_SHAPES_QUICK if config.quick else NORM_SHAPES
    for kernel, kernel_shapes in shapes.items():
        for shape in kernel_shapes:
            for dtype in config.dtypes:
                for part in NORM_PASSES:
                    yield make_norm_case(kernel, shape, dtype, part, torch=config.torch, seed=config.seed)


def _norm_api(kernel):
    """(forward, backward, layer parameter dict template) of a norm kernel in fastopt.layers."""
    from fastopt import layers

    if kernel == "batchnorm":
        return layers.batchnorm_forward, layers.batchnorm_backward, {"mode": "train", "eps": NORM_EPS}
    if kernel == "spatial batchnorm":
        return (layers.spatial_batchnorm_forward, layers.spatial_batchnorm_backward,
                {"mode": "train", "eps": NORM_EPS})
    if kernel == "layernorm":
        return layers.layernorm_forward, layers.layernorm_backward, {"eps": NORM_EPS}
    raise KeyError(kernel)


def make_norm_case(kernel, shape, dtype, part, torch=None, seed=0):
    """The Case of `kernel` (a key of NORM_SHAPES) on an x of `shape`, timing `part` (a key of NORM_PASSES)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    dout = rng.standard_normal(shape).astype(dtype)
    features = shape[-1] if kernel == "layernorm" else shape[1]
    gamma = (1 + 0.1 * rng.standard_normal(features)).astype(dtype)
    beta = (0.1 * rng.standard_normal(features)).astype(dtype)

    def impl(backend):
        forward, backward, param_template = _norm_api(kernel)
        param = dict(param_template)  # own running statistics per implementation
        if part == "fwd":
            return lambda: forward(x, gamma, beta, param)
        if part == "bwd":
            with using_backend(backend):  # the cache's layout belongs to the backend that made it
                _, cache = forward(x, gamma, beta, param)
            return lambda: backward(dout, cache)
        return lambda: backward(dout, forward(x, gamma, beta, param)[1])

    torch_fn = _torch_norm_fn(torch, kernel, part, x, gamma, beta, dout) if torch is not None else None
    return Case(kernel=f"{kernel} {part}", size="x".join(map(str, shape)), elements=x.size, dtype=dtype,
                bytes_moved=NORM_PASSES[part] * x.nbytes,
                fastopt=impl("cython"), numpy=impl("numpy"),
                torch=torch_fn, torch_impl="autograd" if torch_fn is not None else "",
                access=NORM_ACCESS[part])


def _torch_norm_fn(torch, kernel, part, x, gamma, beta, dout):
    """torch.nn.functional batch_norm / layer_norm; backward through autograd (grads of x, gamma, beta)."""
    F = torch.nn.functional
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    gt = torch.from_numpy(gamma.copy()).requires_grad_(True)
    bt = torch.from_numpy(beta.copy()).requires_grad_(True)
    dt = torch.from_numpy(dout.copy())
    if kernel == "layernorm":
        def forward():
            return F.layer_norm(xt, (x.shape[-1],), gt, bt, eps=NORM_EPS)
    else:
        running_mean = torch.zeros(gamma.shape[0], dtype=xt.dtype)
        running_var = torch.ones(gamma.shape[0], dtype=xt.dtype)

        def forward():
            return F.batch_norm(xt, running_mean, running_var, gt, bt, training=True, eps=NORM_EPS)
    inputs = (xt, gt, bt)
    if part == "fwd":
        return forward
    if part == "bwd":
        out = forward()
        return lambda: torch.autograd.grad(out, inputs, dt, retain_graph=True)
    return lambda: torch.autograd.grad(forward(), inputs, dt)
