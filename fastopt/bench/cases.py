"""The contract between `fastopt bench` and its suites: the registry, SuiteConfig and Case.

A suite is a function ``cases(config: SuiteConfig) -> iterable of Case``, registered in SUITES as
"module:function". It should be a generator: the runner times each case as soon as it is yielded and
drops it before asking for the next, so only one case's arrays are alive at a time (the 16M float64
optimizer cases hold ~0.5 GB per implementation).

A Case holds zero-argument callables, each doing one unit of work (one optimizer step, one forward,
one training step...): ``fastopt`` runs with the compiled backend selected, ``numpy`` with
``fastopt.set_backend("numpy")`` (the runner selects the backend before each measurement, outside the
timed region), ``torch`` as is. Anything a builder prepares that depends on the backend (a forward
cache for a backward case, say) it prepares inside ``using_backend(...)``.

This module imports nothing heavy: the command line reads SUITES to list the choices.
"""
import contextlib
import importlib
from dataclasses import dataclass, field
from typing import Callable, Optional

import fastopt

# Suite name -> "module:function". Modules are imported only when their suite runs; a suite whose
# module is missing (the mlp suite is written separately) is reported as unavailable, not a crash.
SUITES = {
    "optim": "fastopt.bench.suites:optim_cases",
    "norm": "fastopt.bench.suites:norm_cases",
    "mlp": "fastopt.bench.mlp:cases",
    "small": "fastopt.bench.small:cases",
}


@dataclass
class SuiteConfig:
    """What the command line asked for, as the suite functions see it."""
    quick: bool = False
    dtypes: tuple = ("float32",)
    sizes: Optional[tuple] = None      # optimizer element counts overriding the defaults
    torch: object = None               # the torch module when installed and wanted, else None
    seed: int = 0


@dataclass
class Case:
    """One row of the table: a kernel at one size and dtype, in up to three implementations."""
    kernel: str                        # e.g. "adam", "batchnorm fwd+bwd", "mlp train step"
    size: str                          # human label: "1M", "1024x4096"
    elements: int                      # numeric size, the x axis of the speedup-vs-size plot
    dtype: str
    bytes_moved: Optional[int]         # bytes one call must move at least (see BENCHMARKS.md); None: n/a
    fastopt: Callable[[], object]
    numpy: Optional[Callable[[], object]] = None
    torch: Optional[Callable[[], object]] = None
    torch_impl: str = ""               # how torch ran: "fused", "foreach", "autograd", ...
    notes: dict = field(default_factory=dict)  # extra JSON fields for the row (stored as note_<key>)
    # (arrays read, arrays written) of `elements` elements each: the kernel's streaming access
    # pattern, timed as its roofline (fastopt._mlp_kernels.stream_loop) in the same run; None: n/a.
    access: Optional[tuple] = None
    extra: dict = field(default_factory=dict)  # other implementations: name -> callable ("numba", ...)


class SuiteUnavailable(Exception):
    """A registered suite cannot run here (its module or a dependency is missing)."""


def load_suite(name):
    """The case function of suite `name`; SuiteUnavailable with the reason when it cannot be imported."""
    module_name, func_name = SUITES[name].split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if getattr(exc, "name", None) == module_name:
            raise SuiteUnavailable(f"suite {name!r} needs module {module_name}, which is not installed") from exc
        raise SuiteUnavailable(f"suite {name!r} could not be imported: {exc}") from exc
    func = getattr(module, func_name, None)
    if func is None:
        raise SuiteUnavailable(f"suite {name!r}: {module_name} has no function {func_name}()")
    return func


def import_torch():
    """The torch module when importable, else None. PyTorch is never a dependency of fastopt."""
    try:
        import torch
    except ImportError:
        return None
    return torch


@contextlib.contextmanager
def using_backend(name):
    """Run a block with fastopt's backend set to `name`, restoring the previous one."""
    previous = fastopt.backend()
    fastopt.set_backend(name)
    try:
        yield
    finally:
        fastopt.set_backend(previous)


def size_label(n):
    """10000 -> "10k", 1000000 -> "1M", 16000000 -> "16M"; other counts stay plain."""
    for unit, suffix in ((1_000_000, "M"), (1_000, "k")):
        if n >= unit and n % unit == 0:
            return f"{n // unit}{suffix}"
    return str(n)


def parse_size(text):
    """Inverse of size_label, accepting "16M", "100k", "2500": ValueError otherwise."""
    text = text.strip()
    scale = {"k": 1_000, "K": 1_000, "M": 1_000_000}.get(text[-1:], 1)
    value = int(text[:-1] if scale != 1 else text) * scale
    if value < 1:
        raise ValueError(f"size must be >= 1, got {text!r}")
    return value
