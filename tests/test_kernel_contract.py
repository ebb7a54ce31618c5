"""One kernel contract, checked generically on every compiled function of every compiled module.

The compiled modules are found by introspection (every extension module of the fastopt package);
every public function in them must be described in REGISTRY below (a new kernel without an entry
fails here), with exactly the parameter names of its signature, n_threads last. From the entry the
test builds valid arguments and:

  * compares the kernel with its NumPy twin in fastopt.reference (both dtypes, odd and threaded
    sizes), buffer by buffer, return value included;
  * throws at it, in a subprocess (a wrong size could crash the interpreter), every buffer one
    element too long or too short on each axis, with one axis too many, non-contiguous, of the
    other precision, read-only where it is written, None, and n_threads 0, negative or huge: each must
    raise ValueError/TypeError (a size error: ValueError naming the argument) and leave every
    buffer bitwise unchanged, and the subprocess must end normally;
  * throws the same wrong sizes at the twin, which must raise the same ValueError;
  * checks that each kernel module owns a GRAIN equal to its twin's.
"""
import importlib
import inspect
import json
import os
import pkgutil
import subprocess
import sys

import numpy as np
import pytest

import fastopt
from fastopt import _backend, _openmp
from fastopt.layers.activations import ACTIVATIONS

# Children run from the folder holding the fastopt under test, so `python -c` imports that one (CI runs
# the suite from the source checkout, whose fastopt/ has no compiled modules).
PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(fastopt.__file__)))

# ---------------------------------------------------------------------------------------------------
# registry: family -> function -> {parameter: spec}
#   ("f", shape, fill)   a buffer of the floating dtype under test; shape in symbols N, D, C, S, L
#   ("u8", shape, fill)  a uint8 buffer;  ("i64", shape, fill) an int64 buffer
#   ("v", value)         a scalar or flag;  ("dim", symbol) the size `symbol` as an int (groups)
#   ("bitgen",) a fresh PCG64;  ("threads",) n_threads
# fills: "n" normal, "p" positive (0.5..2), "s" small (0.1 * normal), "m" 0/1 mask,
#        "y" labels in [0, D), "e" output buffer (filled with 7 so both backends start alike)

F, P, S, E = "n", "p", "s", "e"
T = ("threads",)
ND, D_, N_, NCS, C_, L_ = ("N", "D"), ("D",), ("N",), ("N", "C", "S"), ("C",), ("L",)
M_ = ("M",)   # groupnorm's (sample, group) statistics: M = N * G


def _f(shape, fill=F):
    return ("f", shape, fill)


def _bn(x, v):
    """The three batchnorm-like signatures for a layout x and per-feature vectors v."""
    return {
        "train_forward": dict(x=_f(x), gamma=_f(v), beta=_f(v), eps=("v", 1e-5), momentum=("v", 0.9),
                              out=_f(x, E), mean=_f(v, E), inv_std=_f(v, E), running_mean=_f(v),
                              running_var=_f(v, P), n_threads=T),
        "test_forward": dict(x=_f(x), gamma=_f(v), beta=_f(v), running_mean=_f(v), running_var=_f(v, P),
                             eps=("v", 1e-5), out=_f(x, E), n_threads=T),
        "backward": dict(dout=_f(x), x=_f(x), mean=_f(v), inv_std=_f(v, P), gamma=_f(v), dx=_f(x, E),
                         dgamma=_f(v, E), dbeta=_f(v, E), n_threads=T),
    }


# The step kernels' clipping scale and averaging weight (a kernel reads the scaled gradient and
# updates param_avg in the same pass).
_AVG = dict(grad_scale=("v", 0.5), avg_weight=("v", 0.1))

REGISTRY = {
    "augment": {
        "augment_batch": dict(x=_f(("N", "F")), channels=("v", 1), height=("v", 3), width=("v", 4),
                              dy=("i64", N_, F), dx=("i64", N_, F), flip=("u8", N_, "m"), partner=("i64", N_, "y"),
                              lam=_f(N_, P), noise_keys=("i64", N_, F), noise_scale=("v", 0.1),
                              out=_f(("N", "F"), E), n_threads=T),
    },
    "norm": {
        **{f"batchnorm_{k}": v for k, v in _bn(ND, D_).items()},
        **{f"spatial_batchnorm_{k}": v for k, v in _bn(NCS, C_).items()},
        "layernorm_forward": dict(x=_f(ND), gamma=_f(D_), beta=_f(D_), eps=("v", 1e-5), out=_f(ND, E),
                                  mean=_f(N_, E), inv_std=_f(N_, E), n_threads=T),
        "layernorm_backward": dict(dout=_f(ND), x=_f(ND), mean=_f(N_), inv_std=_f(N_, P), gamma=_f(D_),
                                   dx=_f(ND, E), dgamma=_f(D_, E), dbeta=_f(D_, E), n_threads=T),
        "spatial_groupnorm_forward": dict(x=_f(NCS), gamma=_f(C_), beta=_f(C_), groups=("dim", "G"),
                                          eps=("v", 1e-5), out=_f(NCS, E), mean=_f(M_, E), inv_std=_f(M_, E),
                                          n_threads=T),
        "spatial_groupnorm_backward": dict(dout=_f(NCS), x=_f(NCS), mean=_f(M_), inv_std=_f(M_, P),
                                           gamma=_f(C_), groups=("dim", "G"), dx=_f(NCS, E), dgamma=_f(C_, E),
                                           dbeta=_f(C_, E), n_threads=T),
    },
    "activation": {   # every activation of the layers' table; param is its slope/alpha (ignored by some)
        **{a.forward_kernel: dict(x=_f(L_), param=("v", 0.3), out=_f(L_, E), n_threads=T)
           for a in ACTIVATIONS.values()},
        **{a.backward_kernel: dict(dout=_f(L_), saved=_f(L_), param=("v", 0.3), dx=_f(L_, E), n_threads=T)
           for a in ACTIVATIONS.values()},
    },
    "lbfgs": {
        "dot": dict(x=_f(L_), y=_f(L_), n_threads=T),
        "abs_sum": dict(x=_f(L_), n_threads=T),
        "abs_max": dict(x=_f(L_), n_threads=T),
        "axpy": dict(y=_f(L_), a=("v", -0.3), x=_f(L_), n_threads=T),
        "axpy_dot": dict(y=_f(L_), a=("v", -0.3), x=_f(L_), z=_f(L_), n_threads=T),
        "add_scaled": dict(out=_f(L_, E), x=_f(L_), a=("v", 0.7), d=_f(L_), n_threads=T),
        "scale": dict(out=_f(L_, E), a=("v", 0.7), x=_f(L_), n_threads=T),
    },
    "dropout": {
        "dropout_train": dict(x=_f(L_), p=("v", 0.6), scale=("v", 1 / 0.6), bit_generator=("bitgen",),
                              mask=("u8", L_, E), out=_f(L_, E), n_threads=T),
        "dropout_apply": dict(x=_f(L_), mask=("u8", L_, "m"), scale=("v", 2.5), out=_f(L_, E), n_threads=T),
    },
    "mlp": {
        "bias_relu_forward": dict(z=_f(ND), b=_f(D_), out=_f(ND, E), n_threads=T),
        "relu_backward_inplace": dict(dout=_f(ND), out=_f(ND), n_threads=T),
        "bias_grad": dict(dout=_f(ND), db=_f(D_, E), n_threads=T),
        "relu_bias_backward": dict(dout=_f(ND), out=_f(ND), db=_f(D_, E), n_threads=T),
        "batchnorm_relu_forward": dict(z=_f(ND), b=_f(D_), gamma=_f(D_), beta=_f(D_), eps=("v", 1e-5),
                                       momentum=("v", 0.9), running_mean=_f(D_), running_var=_f(D_, P),
                                       out=_f(ND, E), mean=_f(D_, E), inv_std=_f(D_, E), n_threads=T),
        "batchnorm_relu_eval": dict(z=_f(ND), b=_f(D_), gamma=_f(D_), beta=_f(D_), running_mean=_f(D_),
                                    running_var=_f(D_, P), eps=("v", 1e-5), out=_f(ND, E), n_threads=T),
        "relu_batchnorm_backward": dict(dout=_f(ND), out=_f(ND), z=_f(ND), b=_f(D_), gamma=_f(D_),
                                        mean=_f(D_), inv_std=_f(D_, P), dz=_f(ND, E), dgamma=_f(D_, E),
                                        dbeta=_f(D_, E), db=_f(D_, E), n_threads=T),
        "softmax_loss_grad": dict(scores=_f(ND), y=("i64", N_, "y"), dscores=_f(ND, E), n_threads=T),
        # branch mlp: the output layer in one call, and the bench's roofline stream loop
        "bias_softmax_loss_grad": dict(scores=_f(ND), b=_f(D_), y=("i64", N_, "y"), dscores=_f(ND, E),
                                       db=_f(D_, E), n_threads=T),
        "stream_loop": dict(src=_f(("N", "D")), dst=_f(("C", "D"), E), n_reads=("dim", "N"),
                            n_writes=("dim", "C"), n_threads=T),
    },
    "optim": {  # every state buffer in use (momentum, centered, amsgrad, averaging): all must match param
        "sgd_step": dict(param=_f(L_), grad=_f(L_), momentum_buffer=_f(L_), param_avg=_f(L_), lr=("v", 1e-2),
                         weight_decay=("v", 1e-2), momentum=("v", 0.9), dampening=("v", 0.1),
                         nesterov=("v", True), maximize=("v", False), first_step=("v", False), **_AVG, n_threads=T),
        "velocity_step": dict(param=_f(L_), grad=_f(L_), velocity=_f(L_), lr=("v", 1e-2), mu=("v", 0.9),
                              nesterov=("v", True), n_threads=T),
        "adagrad_step": dict(param=_f(L_), grad=_f(L_), state_sum=_f(L_, P), param_avg=_f(L_), clr=("v", 1e-2),
                             weight_decay=("v", 1e-2), eps=("v", 1e-8), maximize=("v", False), **_AVG,
                             n_threads=T),
        "rmsprop_step": dict(param=_f(L_), grad=_f(L_), square_avg=_f(L_, P), grad_avg=_f(L_, S),
                             momentum_buffer=_f(L_), param_avg=_f(L_), lr=("v", 1e-2), alpha=("v", 0.99),
                             eps=("v", 1e-8), weight_decay=("v", 1e-2), momentum=("v", 0.9), centered=("v", True),
                             maximize=("v", False), **_AVG, n_threads=T),
        "adam_step": dict(param=_f(L_), grad=_f(L_), exp_avg=_f(L_), exp_avg_sq=_f(L_, P),
                          max_exp_avg_sq=_f(L_, P), param_avg=_f(L_), lr=("v", 1e-3), beta1=("v", 0.9),
                          beta2=("v", 0.999), eps=("v", 1e-8), weight_decay=("v", 1e-2), step_size=("v", 1e-2),
                          bias_correction2_sqrt=("v", 0.05), decoupled=("v", True), amsgrad=("v", True),
                          maximize=("v", False), **_AVG, n_threads=T),
        "nadam_step": dict(param=_f(L_), grad=_f(L_), exp_avg=_f(L_), exp_avg_sq=_f(L_, P), param_avg=_f(L_),
                           lr=("v", 1e-3), beta1=("v", 0.9), beta2=("v", 0.999), eps=("v", 1e-8),
                           weight_decay=("v", 1e-2), bias_correction2=("v", 0.002), grad_coef=("v", -1e-3),
                           exp_avg_coef=("v", -2e-3), decoupled=("v", True), maximize=("v", False), **_AVG,
                           n_threads=T),
        "radam_step": dict(param=_f(L_), grad=_f(L_), exp_avg=_f(L_), exp_avg_sq=_f(L_, P), param_avg=_f(L_),
                           lr=("v", 1e-3), beta1=("v", 0.9), beta2=("v", 0.999), eps=("v", 1e-8),
                           weight_decay=("v", 1e-2), bias_correction1=("v", 0.5), bias_correction2_sqrt=("v", 0.2),
                           rect=("v", 0.7), rectified=("v", True), decoupled=("v", True), maximize=("v", False),
                           **_AVG, n_threads=T),
        "adamax_step": dict(param=_f(L_), grad=_f(L_), exp_avg=_f(L_), exp_inf=_f(L_, P), param_avg=_f(L_),
                            clr=("v", 1e-2), beta1=("v", 0.9), beta2=("v", 0.999), eps=("v", 1e-8),
                            weight_decay=("v", 1e-2), maximize=("v", False), **_AVG, n_threads=T),
        "adadelta_step": dict(param=_f(L_), grad=_f(L_), square_avg=_f(L_, P), acc_delta=_f(L_, P),
                              param_avg=_f(L_), lr=("v", 1.0), rho=("v", 0.9), eps=("v", 1e-6),
                              weight_decay=("v", 1e-2), maximize=("v", False), **_AVG, n_threads=T),
        "lion_step": dict(param=_f(L_), grad=_f(L_), exp_avg=_f(L_), param_avg=_f(L_), lr=("v", 1e-4),
                          beta1=("v", 0.9), beta2=("v", 0.99), weight_decay=("v", 1e-2), maximize=("v", False),
                          **_AVG, n_threads=T),
        "norm_partial": dict(x=_f(L_), norm_type=("v", 2.0), n_threads=T),
        "scale_": dict(x=_f(L_), factor=("v", 0.5), n_threads=T),
    },
}
# Branch optim (issue 11): the multi-tensor step kernels take a StepPlan (a compiled object holding
# the checked pointers of many tensors), not buffers, so the buffer-spec machinery above cannot
# build their arguments; tests/test_optim_small_step.py holds their contract tests (sizes, types,
# n_threads, twin equality). The cached step (CachedStep, run_cached, and step_scalars, its
# per-step scalars) runs them on a prepared program: tests/test_cached_step.py. Listed here so that
# every public name stays accounted for.
PLANNED = {"optim": {"StepPlan", "StepGuard", "CachedStep", "run_cached", "step_scalars", *(f"{r}_multi" for r in (
    "sgd", "velocity", "adagrad", "rmsprop", "adam", "nadam", "radam", "adamax", "adadelta", "lion"))}}

# branch norm: the counter-based (Philox4x32-10) dropout kernel; seed above 2**32 and an offset not a
# multiple of its 64-element groups, so both key words and a partial first group are exercised.
REGISTRY["dropout"]["dropout_train_philox"] = dict(
    x=_f(L_), p=("v", 0.6), scale=("v", 1 / 0.6), seed=("v", 2**63 + 12345), offset=("v", 1_000_003),
    mask=("u8", L_, E), out=_f(L_, E), n_threads=T)

# branch model: the output layer with soft targets (mixup's target probabilities; fill "p": positive
# rows, the kernel does not need them to sum to 1). It adds the bias to `scores` in place.
REGISTRY["mlp"]["bias_softmax_soft_loss_grad"] = dict(
    scores=_f(ND), b=_f(D_), targets=_f(ND, P), dscores=_f(ND, E), db=_f(D_, E), n_threads=T)

# Build facts, not kernels: no buffers, no twin. They take no arguments.
FACTS = {"_openmp": {"openmp_enabled", "omp_max_threads", "cpu_has_avx2_fma", "cpu_is_intel", "simd_flags"}}
# The other modules without kernels (no twin): the output block cache, tested in tests/test_buffers.py.
NOT_KERNELS = dict(FACTS, _buffers={"empty", "set_limit", "stats"})

# Known contract gaps, as (family, "n_threads"): their cases run only with gaps=True. None today; the
# optimizer kernels' unchecked n_threads (-1 made libgomp exit the process, 100000 segfaulted) was the
# last one.
KNOWN_GAPS = set()



def _norm_dims(**dims):
    """Norm sizes with groupnorm's derived extent M = N * G (G divides C)."""
    return dict(dims, M=dims["N"] * dims["G"])


# Sizes: odd ones, and ones large enough to run on 2 threads (2 * GRAIN elements and more; the
# L-BFGS reductions also over more than one of their 4096-element blocks).
DIMS = {
    # augment: D = N, because fill "y" draws the mixup partners' indices in [0, D)
    "augment": [dict(N=1, F=12, D=1), dict(N=7, F=12, D=7), dict(N=12000, F=12, D=12000)],
    "norm": [_norm_dims(N=1, D=1, C=1, S=1, G=1), _norm_dims(N=7, D=33, C=6, S=7, G=3),
             _norm_dims(N=130, D=1023, C=10, S=64, G=5)],
    "mlp": [dict(N=1, D=1, C=1), dict(N=7, D=33, C=3), dict(N=80, D=1023, C=2), dict(N=3, D=70001, C=2)],
    "dropout": [dict(L=1), dict(L=1023), dict(L=70001)],
    "optim": [dict(L=1), dict(L=1023), dict(L=140001)],
    "activation": [dict(L=1), dict(L=1023), dict(L=70001)],
    "lbfgs": [dict(L=1), dict(L=1023), dict(L=140001)],
}
SMALL = {"augment": dict(N=6, F=12, D=6), "norm": _norm_dims(N=7, D=5, C=6, S=4, G=3), "mlp": dict(N=6, D=5, C=2), "dropout": dict(L=9),
         "optim": dict(L=9), "activation": dict(L=9), "lbfgs": dict(L=9)}
RTOL = {np.float32: 1e-4, np.float64: 1e-10}
DTYPES = [np.float32, np.float64]


def compiled_modules():
    """Every extension module of the fastopt package: {name: module}."""
    found = {}
    for info in pkgutil.iter_modules(fastopt.__path__):
        if info.name.startswith("__") or not runnable(info.name):
            continue   # a variant this CPU cannot run may fault at import (its init is compiled for it)
        module = importlib.import_module(f"fastopt.{info.name}")
        if getattr(module, "__file__", "").endswith((".so", ".pyd")):
            found[info.name] = module
    return found


def family_of(name):
    """"_norm_kernels_avx2" -> "norm"; None for a module without kernels (_openmp)."""
    stem = name[1:].split("_kernels")[0] if "_kernels" in name else None
    return stem


def functions_of(module):
    planned = PLANNED.get(family_of(module.__name__.rsplit(".", 1)[-1]), ())
    return {n: getattr(module, n) for n in dir(module)
            if not n.startswith("_") and callable(getattr(module, n)) and n not in planned
            and getattr(getattr(module, n), "__module__", None) == module.__name__}


def twin_of(family):
    """The NumPy twin of a kernel family, as the numpy backend loads it."""
    return importlib.import_module(f"fastopt.reference.{_backend.FAMILIES[family]}")


def runnable(name):
    """Whether this CPU runs compiled module `name` (a SIMD variant needs its instruction set)."""
    for variant in ("avx2", "avx512"):
        if name.endswith("_" + variant):
            return _backend.variant_supported(variant)
    return True


MODULES = compiled_modules()
KERNEL_MODULES = sorted(n for n in MODULES if family_of(n) is not None)


# ---------------------------------------------------------------------------------------------------
# argument construction


def _fill(rng, dtype, shape, fill, dims):
    if fill == E:
        return np.full(shape, 7, dtype)
    if fill == "m":
        return rng.integers(0, 2, shape).astype(dtype)
    if fill == "y":
        return rng.integers(0, dims["D"], shape).astype(dtype)
    if fill == P:
        return rng.uniform(0.5, 2.0, shape).astype(dtype)
    scale = 0.1 if fill == S else 1.0
    return (scale * rng.standard_normal(shape)).astype(dtype)


BUFFER_DTYPES = {"u8": np.uint8, "i64": np.int64}


def build_args(family, fname, dtype, dims, seed, n_threads=1):
    """{name: value} for a valid call, in signature order (the registry's order is the signature's)."""
    rng = np.random.default_rng(seed)
    args = {}
    for name, spec in REGISTRY[family][fname].items():
        kind = spec[0]
        if kind in ("f", "u8", "i64"):
            dt = dtype if kind == "f" else BUFFER_DTYPES[kind]
            args[name] = _fill(rng, dt, tuple(dims[s] for s in spec[1]), spec[2], dims)
        elif kind == "v":
            args[name] = spec[1]
        elif kind == "dim":
            args[name] = dims[spec[1]]
        elif kind == "bitgen":
            args[name] = np.random.PCG64(seed)
        else:
            args[name] = n_threads
    return args


def buffers(args):
    return {k: v for k, v in args.items() if isinstance(v, np.ndarray)}


def call(fn, args):
    return fn(*args.values())


# Buffers a kernel updates in place besides the outputs ("e" fills) of the registry.
_INOUT = {
    "norm": {f: ("running_mean", "running_var") for f in ("batchnorm_train_forward",
                                                          "spatial_batchnorm_train_forward")},
    "mlp": {"relu_backward_inplace": ("dout",), "relu_bias_backward": ("dout",),
            "batchnorm_relu_forward": ("running_mean", "running_var"),
            "bias_softmax_loss_grad": ("scores",)},   # branch mlp
    "optim": {f: tuple(n for n in spec if n != "grad" and spec[n][0] == "f")
              for f, spec in REGISTRY["optim"].items() if f != "norm_partial"},   # reads x only
    "lbfgs": {"axpy": ("y",), "axpy_dot": ("y",)},
}


_INOUT["mlp"]["bias_softmax_soft_loss_grad"] = ("scores",)     # branch model


def written(family, fname):
    """The buffers a kernel writes: its outputs ("e" fills) and its in-place updates (_INOUT)."""
    return {n for n, spec in REGISTRY[family][fname].items()
            if spec[0] in ("f", "u8", "i64") and (spec[-1] == E or n in _INOUT.get(family, {}).get(fname, ()))}


# ---------------------------------------------------------------------------------------------------
# bad-argument cases (shared by the subprocess and the parent: built deterministically)


def bad_cases(family, fname, dtype):
    """[(case id, kind, argument name, {name: value})]: kind "size" (ValueError naming the argument,
    or any buffer's name for the shape reference, from which the others' shapes derive), "layout"
    (ValueError or TypeError) or "threads" (ValueError naming n_threads)."""
    dims = SMALL[family]
    base = build_args(family, fname, dtype, dims, seed=3)
    names = list(buffers(base))
    spec = REGISTRY[family][fname]
    cases = []
    for name in names:
        a = base[name]
        for axis in range(a.ndim):
            # An extent no other buffer shares (bias_grad's N) is free: a different valid call,
            # which must then succeed or be refused, never crash.
            symbol = spec[name][1][axis]
            shared = sum(symbol in spec[n][1] for n in names) > 1
            for delta in (1, -1):
                shape = list(a.shape)
                shape[axis] += delta
                cases.append((f"{name} axis {axis} {delta:+d}", "size" if shared else "free", name,
                              dict(base, **{name: np.zeros(shape, a.dtype)})))
        cases.append((f"{name} extra axis", "layout", name, dict(base, **{name: a[..., None].copy()})))
        cases.append((f"{name} None", "layout", name, dict(base, **{name: None})))   # a 0-size view
        if a.ndim >= 1 and a.shape[-1] > 1:
            wide = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
            cases.append((f"{name} non-contiguous", "layout", name, dict(base, **{name: wide[..., ::2]})))
        if a.dtype.kind == "f":
            # With a single floating buffer (abs_sum(x)) the other precision is another valid call.
            alone = sum(base[n].dtype.kind == "f" for n in names) == 1
            other = np.float64 if a.dtype == np.float32 else np.float32
            cases.append((f"{name} other precision", "free" if alone else "layout", name,
                          dict(base, **{name: a.astype(other)})))
        if name in written(family, fname):
            ro = a.copy()
            ro.flags.writeable = False
            cases.append((f"{name} read-only", "layout", name, dict(base, **{name: ro})))
    if "n_threads" in base:
        for bad in (0, -1, -(2**31)):
            cases.append((f"n_threads {bad}", "threads", "n_threads", dict(base, n_threads=bad)))
    return cases


def _digest(args):
    return {k: v.tobytes().hex() if v.size < 64 else str(hash(v.tobytes())) for k, v in buffers(args).items()}



def _selected(family, kind, gaps):
    """Cases of a known gap run only when asked for (gaps=True), and then only they."""
    gap = (family, "n_threads") in KNOWN_GAPS and kind in ("threads", "huge threads")
    return gap == gaps


def child(module_name, dtype_name, gaps=False):
    """Run every bad case of every function of one module; one JSON line per case (before the call
    its id is printed, so a crash names the case that caused it)."""
    module = importlib.import_module(f"fastopt.{module_name}")
    family = family_of(module_name)
    dtype = np.dtype(dtype_name).type
    for fname in sorted(REGISTRY[family]):
        fn = getattr(module, fname)
        for case, kind, name, args in bad_cases(family, fname, dtype):
            if not _selected(family, kind, gaps):
                continue
            print(json.dumps({"start": f"{fname}: {case}"}), flush=True)
            before = _digest(args)
            try:
                call(fn, args)
                result = {"exc": None, "msg": ""}
            except Exception as exc:   # noqa: BLE001 - the parent judges the type
                result = {"exc": type(exc).__name__, "msg": str(exc)}
            result.update(case=f"{fname}: {case}", changed=_digest(args) != before)
            print(json.dumps(result), flush=True)
    # n_threads far beyond the machine: capped, so the call succeeds (or is refused), never crashes
    for fname in sorted(REGISTRY[family]):
        if not _selected(family, "huge threads", gaps):
            continue
        args = build_args(family, fname, dtype, SMALL[family], seed=5, n_threads=100000)
        print(json.dumps({"start": f"{fname}: n_threads 100000"}), flush=True)
        try:
            call(getattr(module, fname), args)
            print(json.dumps({"case": f"{fname}: n_threads 100000", "exc": None, "msg": "", "changed": False}),
                  flush=True)
        except ValueError as exc:
            print(json.dumps({"case": f"{fname}: n_threads 100000", "exc": "ValueError", "msg": str(exc),
                              "changed": False}), flush=True)


# ---------------------------------------------------------------------------------------------------
# tests


def test_every_compiled_module_is_known():
    assert KERNEL_MODULES, "no compiled kernel module found"
    for name, module in MODULES.items():
        family = family_of(name)
        public = set(functions_of(module))
        if family is None:
            assert public == NOT_KERNELS.get(name), f"{name}: functions {sorted(public)} not in NOT_KERNELS"
            continue
        assert family in REGISTRY, f"{name}: kernel family {family!r} has no REGISTRY entry"
        assert public == set(REGISTRY[family]), (
            f"{name}: functions {sorted(public ^ set(REGISTRY[family]))} differ from the REGISTRY")


@pytest.mark.parametrize("module_name", KERNEL_MODULES)
def test_signatures_match_registry_and_end_with_n_threads(module_name):
    module = MODULES[module_name]
    family = family_of(module_name)
    twin = twin_of(family)
    for fname, fn in functions_of(module).items():
        params = list(inspect.signature(fn).parameters)
        assert params == list(REGISTRY[family][fname]), f"{module_name}.{fname}{tuple(params)}"
        assert params[-1] == "n_threads", f"{module_name}.{fname}: n_threads must be the last argument"
        assert list(inspect.signature(getattr(twin, fname)).parameters) == params, f"twin of {fname}"


@pytest.mark.parametrize("module_name", KERNEL_MODULES)
def test_each_module_owns_its_grain(module_name):
    module = MODULES[module_name]
    twin = twin_of(family_of(module_name))
    assert isinstance(module.GRAIN, int) and module.GRAIN > 0
    assert module.GRAIN == twin.GRAIN


def test_build_facts_take_no_arguments():
    for name, fns in FACTS.items():
        module = MODULES[name]
        for fname in fns:
            getattr(module, fname)()
            with pytest.raises(TypeError):
                getattr(module, fname)(1)


def _close(name, got, want, dtype):
    if got.dtype.kind != "f":
        np.testing.assert_array_equal(got, want, err_msg=name)
        return
    scale = max(1.0, float(np.max(np.abs(want.astype(np.float64)))))
    np.testing.assert_allclose(got, want, rtol=RTOL[dtype], atol=RTOL[dtype] * scale, err_msg=name)


VARIANT_MODULES = [n for n in KERNEL_MODULES if n.endswith(("_avx2", "_avx512"))]


@pytest.mark.skipif(not VARIANT_MODULES, reason="no SIMD variant built or runnable here")
@pytest.mark.parametrize("module_name", VARIANT_MODULES)
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_every_variant_computes_the_baselines_bits(module_name, dtype):
    # The variants are the baseline's .pxi compiled with wider vectors and -ffp-contract=off: every
    # kernel's outputs and return value are the baseline's bytes, at every size and thread count.
    module, base = MODULES[module_name], MODULES[module_name.rsplit("_", 1)[0]]
    family = family_of(module_name)
    for fname in sorted(REGISTRY[family]):
        for k, dims in enumerate(DIMS[family]):
            for n_threads in (1, 2):
                want = build_args(family, fname, dtype, dims, seed=k, n_threads=n_threads)
                got = build_args(family, fname, dtype, dims, seed=k, n_threads=n_threads)
                r_want, r_got = call(getattr(base, fname), want), call(getattr(module, fname), got)
                where = f"{module_name}.{fname} {dims} threads={n_threads}"
                assert r_got == r_want or (r_got != r_got and r_want != r_want), where
                for n in buffers(got):
                    assert got[n].tobytes() == want[n].tobytes(), f"{where}: {n}"


@pytest.mark.parametrize("module_name", [n for n in KERNEL_MODULES if runnable(n)])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_every_kernel_matches_its_twin(module_name, dtype):
    module = MODULES[module_name]
    family = family_of(module_name)
    twin = twin_of(family)
    for fname in sorted(REGISTRY[family]):
        for k, dims in enumerate(DIMS[family]):
            want = build_args(family, fname, dtype, dims, seed=k, n_threads=1)
            r_want = call(getattr(twin, fname), want)
            for n_threads in (1, 2):
                got = build_args(family, fname, dtype, dims, seed=k, n_threads=n_threads)
                inputs = {n: v.copy() for n, v in buffers(got).items()}
                r_got = call(getattr(module, fname), got)
                where = f"{module_name}.{fname} {dims} threads={n_threads}"
                if r_want is None:
                    assert r_got is None, where
                else:
                    np.testing.assert_allclose(r_got, r_want, rtol=RTOL[dtype], err_msg=where)
                for n in buffers(got):
                    _close(f"{where}: {n}", got[n], want[n], dtype)
                changed = {n for n in inputs if not np.array_equal(inputs[n], got[n], equal_nan=True)}
                extra = changed - written(family, fname)
                assert not extra, f"{where}: inputs changed: {extra}"


def _check_outcome(family, fname, case, kind, name, result, names):
    what = f"{case}: {result['exc']}: {result['msg']}"
    if kind == "free":
        assert result["exc"] in (None, "ValueError"), what
        return
    assert result["exc"] in ("ValueError", "TypeError"), f"accepted or wrong error: {what}"
    assert not result["changed"], f"a buffer changed although the call raised: {what}"
    if kind == "size":
        assert result["exc"] == "ValueError", what
        # The shape reference (x, else the first buffer) defines the extents the others must have:
        # resizing it makes another buffer the odd one out, or x itself too small.
        reference = "x" if "x" in names else names[0]
        named = [n for n in names if n in result["msg"]] if name == reference else [name]
        assert named and named[0] in result["msg"], f"the message must name {name}: {what}"
    if kind == "threads":
        assert result["exc"] == "ValueError" and "n_threads" in result["msg"], what


def _run_child(module_name, dtype, gaps):
    here = os.path.dirname(os.path.abspath(__file__))
    code = (f"import sys; sys.path.insert(0, {here!r}); import test_kernel_contract as t; "
            f"t.child({module_name!r}, {np.dtype(dtype).name!r}, gaps={gaps!r})")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=PACKAGE_PARENT)
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    started = [r["start"] for r in lines if "start" in r]
    assert proc.returncode == 0, (f"the process died (code {proc.returncode}) during "
                                  f"{started[-1] if started else '?'}\n{proc.stderr[-2000:]}")
    return {r["case"]: r for r in lines if "case" in r}


def _expect(module_name, dtype, gaps):
    family = family_of(module_name)
    by_case = _run_child(module_name, dtype, gaps)
    expected = {}
    for fname in sorted(REGISTRY[family]):
        names = list(buffers(build_args(family, fname, dtype, SMALL[family], 3)))
        for case, kind, name, _ in bad_cases(family, fname, dtype):
            if _selected(family, kind, gaps):
                expected[f"{fname}: {case}"] = (fname, kind, name, names)
    assert set(expected) <= set(by_case), f"cases not run: {sorted(set(expected) - set(by_case))[:5]}"
    for case, (fname, kind, name, names) in expected.items():
        _check_outcome(family, fname, case, kind, name, by_case[case], names)
    for fname in REGISTRY[family]:
        if _selected(family, "huge threads", gaps):
            huge = by_case[f"{fname}: n_threads 100000"]
            assert huge["exc"] in (None, "ValueError"), huge
    return len(expected)


@pytest.mark.parametrize("module_name", [n for n in KERNEL_MODULES if runnable(n)])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_bad_buffers_raise_and_never_crash(module_name, dtype):
    """Every bad case against the compiled kernel, in a subprocess: an out-of-bounds access could
    corrupt the heap or segfault, which an in-process test could not report."""
    assert _expect(module_name, dtype, gaps=False) > 0


@pytest.mark.parametrize("family", sorted(REGISTRY))
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_twins_refuse_the_same_sizes(family, dtype):
    """The NumPy twins (the numpy backend) refuse every wrong size with the kernels' ValueError."""
    twin = twin_of(family)
    for fname in sorted(REGISTRY[family]):
        names = list(buffers(build_args(family, fname, dtype, SMALL[family], 3)))
        for case, kind, name, args in bad_cases(family, fname, dtype):
            if kind not in ("size", "threads") or not _selected(family, kind, False):
                continue
            before = _digest(args)
            with pytest.raises(ValueError) as info:
                call(getattr(twin, fname), args)
            assert _digest(args) == before, f"{fname}: {case}"
            result = {"exc": "ValueError", "msg": str(info.value), "changed": False}
            _check_outcome(family, fname, f"twin {fname}: {case}", kind, name, result, names)


FORGED_NORM_CACHE = """
import sys
import numpy as np
import fastopt
from fastopt import layers
fastopt.set_backend(sys.argv[1])
rng = np.random.default_rng(0)
shapes = {"batchnorm": (64, 300), "spatial_batchnorm": (4, 30, 5, 5), "layernorm": (64, 300)}
for kind, shape in shapes.items():
    x = rng.standard_normal(shape)
    size = shape[1]
    forward = getattr(layers, f"{kind}_forward")
    param = {} if kind == "layernorm" else {"mode": "train"}
    for slot in ("gamma", "mean", "inv_std"):
        for bad in (1, size // 2, 10 * size):
            _, cache = forward(x, np.ones(size), np.zeros(size), param)
            setattr(cache, slot, np.ones(bad))
            print("START", kind, slot, bad, flush=True)
            try:
                getattr(layers, f"{kind}_backward")(np.ones_like(x), cache)
                print("ACCEPTED", kind, slot, bad, flush=True)
            except ValueError as exc:
                print("ValueError", kind, slot, bad, exc, flush=True)
"""


@pytest.mark.parametrize("backend", ["cython", "numpy"])
def test_forged_norm_cache_is_refused_not_a_crash(backend):
    """The reported segfault: a NormCache whose gamma (or statistics) has the wrong size, through
    the layer API. The kernels refuse it (ValueError naming the buffer); run in a subprocess."""
    proc = subprocess.run([sys.executable, "-c", FORGED_NORM_CACHE, backend], cwd=PACKAGE_PARENT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, f"died (code {proc.returncode}) after: {proc.stdout.splitlines()[-1:]}"
    outcomes = [line for line in proc.stdout.splitlines() if not line.startswith("START")]
    assert len(outcomes) == 3 * 3 * 3
    for line in outcomes:
        words = line.split()
        assert words[0] == "ValueError" and f"{words[2]} must have shape" in line, line
