"""Which implementation runs the kernels, and on how many threads.

Every kernel family exists twice with the same function names and signatures: a compiled module
``fastopt._<family>_kernels`` and its pure-NumPy twin ``fastopt.reference.<family>``. The Python API
asks :func:`kernels` for the family's module at call time, so ``set_backend`` takes effect at once.

SIMD variants: a family may also be compiled with AVX2+FMA as ``fastopt._<family>_kernels_avx2``
and with AVX-512 as ``fastopt._<family>_kernels_avx512`` (same code, same functions, same bits; see
setup.py). :func:`kernels` returns the widest variant that was built AND that the CPU runs (on an
Intel CPU the optimizer family's AVX2 one: see _AVX2_ON_INTEL), unless ``FASTOPT_SIMD`` (or
:func:`set_simd`) names one: "sse2" (the portable baseline), "avx2" (at most AVX2) or "avx512".
"""
import contextlib
import importlib
import os
import sys
import threading
import warnings

_BACKENDS = ("cython", "numpy")
# Every kernel family -> its NumPy twin: fastopt._<family>_kernels and fastopt.reference.<twin>.
FAMILIES = {"optim": "optim", "norm": "norm", "dropout": "dropout", "mlp": "mlp", "activation": "activations",
            "lbfgs": "lbfgs", "augment": "augment"}
_SIMD = ("auto", "sse2", "avx2", "avx512")
# The variants above the baseline, widest first: module suffix and the CPU check (fastopt._openmp /
# fastopt._norm_kernels, both baseline code and so safe to import on any CPU).
_VARIANTS = ("avx512", "avx2")
_state = {"backend": None, "threads": None, "simd": None}
_modules = {}
_active = {}    # family -> kernels(family) under the current backend and SIMD choice (cleared when they change)
class _BlasDepth(threading.local):
    # Per thread, how many beside_blas() blocks are open. A class attribute, not getattr(...,
    # default): a missing attribute of a threading.local raises and catches AttributeError, which
    # cost every multi-threaded step ~0.3 us (measured: thread_budget() 0.38 us, 0.06 with this).
    depth = 0


_beside_blas = _BlasDepth()


def _compiled_available():
    try:
        importlib.import_module("fastopt._openmp")
    except ImportError:
        return False
    return True


def _default_backend():
    requested = os.environ.get("FASTOPT_BACKEND", "").strip().lower()
    if requested:
        if requested not in _BACKENDS:
            raise ValueError(f"FASTOPT_BACKEND must be one of {_BACKENDS}, got {requested!r}")
        if requested == "cython" and not _compiled_available():
            raise ImportError("FASTOPT_BACKEND=cython but the compiled core is not built; "
                              "install fastopt with pip so its extensions are compiled")
        return requested
    if _compiled_available():
        return "cython"
    warnings.warn("fastopt's compiled core is not built; using the pure-NumPy backend",
                  RuntimeWarning, stacklevel=3)
    return "numpy"


def backend():
    """The active backend: "cython" (the compiled core) or "numpy" (the reference twins)."""
    if _state["backend"] is None:
        _state["backend"] = _default_backend()
    return _state["backend"]


def set_backend(name):
    """Route every kernel to "cython" (compiled) or "numpy" (fastopt.reference)."""
    if not isinstance(name, str):
        raise TypeError(f"backend name must be a str, got {type(name).__name__}")
    name = name.strip().lower()
    if name not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, got {name!r}")
    if name == "cython" and not _compiled_available():
        raise ImportError("the compiled core is not built; reinstall fastopt with pip")
    _state["backend"] = name
    _active.clear()


def kernels(family):
    """The module implementing kernel `family` ("optim", "norm", ...) on the active backend."""
    # Every step asks (several times): the answer is kept until the backend or SIMD choice changes.
    module = _active.get(family)
    if module is None:
        module = _active[family] = _resolve(family)
    return module


def _resolve(family):
    key = (backend(), family, simd())
    module = _modules.get(key)
    if module is None:
        if family not in FAMILIES:
            raise ValueError(f"kernel family must be one of {tuple(FAMILIES)}, got {family!r}")
        if key[0] == "numpy":
            module = importlib.import_module(f"fastopt.reference.{FAMILIES[family]}")
        else:
            module = _variant_module(family, key[2])
        _modules[key] = module
    return module


def _check_simd(name, what):
    if not isinstance(name, str):
        raise TypeError(f"{what} must be a str, got {type(name).__name__}")
    value = name.strip().lower() or "auto"
    if value not in _SIMD:
        raise ValueError(f"{what} must be one of {_SIMD}, got {name!r}")
    return value


def simd():
    """The requested kernel variant: "auto" (the widest built and supported, per family:
    auto_variants), "sse2", "avx2" or "avx512"."""
    if _state["simd"] is None:
        _state["simd"] = _check_simd(os.environ.get("FASTOPT_SIMD", ""), "FASTOPT_SIMD")
    return _state["simd"]


def set_simd(name):
    """Ask for kernel variant "auto", "sse2" (the portable baseline), "avx2" or "avx512" (error if
    this CPU/build cannot run it). "avx2" means at most AVX2: families without an AVX2 module run
    the baseline. The variants compute identical bits (setup.py: -ffp-contract=off, no fast-math);
    only their speed differs.
    """
    name = _check_simd(name, "simd")
    if name in _VARIANTS and not variant_supported(name):
        raise ImportError(f"simd={name!r} needs a CPU with {_CPU_NEEDS[name]} and the compiled core; "
                          f"this machine/build has no {name.upper()} kernel variants")
    _state["simd"] = name
    _active.clear()


_CPU_NEEDS = {"avx2": "AVX2 and FMA", "avx512": "AVX-512 F/BW/DQ/VL"}

# Families whose "auto" choice on an Intel CPU stops at the AVX2 (256-bit) variant although AVX-512
# runs. Why optim: a rule's divides and square roots cost as much per element at 512 bits as at 256
# on Intel's cores (a 512-bit divide or square root issues as two 256-bit halves and a shuffle), and
# the rest of the loop does not win it back: on an Intel Xeon (family 6 model 167, KVM) every rule
# with a divide or a square root ran 7-9% faster in the AVX2 build, float32 and float64, from 1e4
# elements in cache to 1e6, 1 and 2 threads (benchmarks/optim_variants.py; SGD with momentum, which
# has neither, -8% to +7%; BENCHMARKS.md, "Intel Xeon, 2026-12-04"). On AMD's Zen 5 the AVX-512
# build was the faster one. Both compute the same bits; set_simd("avx512") / FASTOPT_SIMD=avx512
# still asks for the wide one.
_AVX2_ON_INTEL = frozenset({"optim"})


def auto_variants(family):
    """The variants "auto" tries for `family`, in order (see _AVX2_ON_INTEL): the widest first,
    or on Intel for those families AVX2 first (AVX-512 where a build has no AVX2 variant)."""
    if family in _AVX2_ON_INTEL and _compiled_available() \
            and importlib.import_module("fastopt._openmp").cpu_is_intel():
        return tuple(reversed(_VARIANTS))
    return _VARIANTS


def variant_supported(name):
    """True when the compiled core is built and this CPU runs SIMD variant `name` ("avx2", "avx512")."""
    if not _compiled_available():
        return False
    if name == "avx2":
        return importlib.import_module("fastopt._openmp").cpu_has_avx2_fma()
    return importlib.import_module("fastopt._norm_kernels")._cpu_has_avx512()


class _VariantGuard:
    """A sys.meta_path finder that refuses to load a SIMD variant module this CPU cannot run.

    A variant's whole extension is compiled with its instruction set, module initialization included:
    importing fastopt._dropout_kernels_avx512 on an AVX2-only CPU died of SIGILL (the interpreter,
    not an exception). Every import of fastopt.X passes fastopt/__init__.py, which imports this
    module first, so the guard is in place before any variant can be loaded."""

    @staticmethod
    def find_spec(fullname, path=None, target=None):
        prefix, _, variant = fullname.rpartition("_")
        if variant in _VARIANTS and prefix.startswith("fastopt._") and prefix.endswith("_kernels") \
                and _compiled_available() and not variant_supported(variant):
            raise ImportError(f"{fullname} needs a CPU with {_CPU_NEEDS[variant]}, which this one lacks "
                              f"(fastopt's kernels() picks the variants this CPU runs by itself)", name=fullname)
        return None     # not ours to refuse: the normal finders load it


if not any(isinstance(f, _VariantGuard) for f in sys.meta_path):
    sys.meta_path.insert(0, _VariantGuard())


def avx2_supported():
    """True when the compiled core is built and this CPU runs AVX2 and FMA."""
    return variant_supported("avx2")


def _variant_module(family, requested):
    """The module of the widest variant allowed by `requested` ("auto": auto_variants(family))
    that was built and that the CPU runs: fastopt._<family>_kernels_<variant>, else the baseline
    fastopt._<family>_kernels."""
    allowed = auto_variants(family) if requested == "auto" else {"sse2": (), "avx2": ("avx2",),
                                                                    "avx512": _VARIANTS}[requested]
    if requested in _VARIANTS and not variant_supported(requested):
        raise ImportError(f"FASTOPT_SIMD={requested} but this CPU lacks {_CPU_NEEDS[requested]} "
                          f"or the core is not built")
    for name in allowed:
        if not variant_supported(name):
            continue
        try:
            return importlib.import_module(f"fastopt._{family}_kernels_{name}")
        except ImportError:   # not built here (non-x86 build, FASTOPT_NO_AVX2) or no such variant of this family
            continue
    return importlib.import_module(f"fastopt._{family}_kernels")


def compiled_variants(family):
    """{variant: module} of every compiled variant of kernel `family` that is built and that this CPU
    runs, the baseline ("sse2") first (tests and benchmarks compare them)."""
    found = {"sse2": importlib.import_module(f"fastopt._{family}_kernels")}
    for name in reversed(_VARIANTS):
        if variant_supported(name):
            try:
                found[name] = importlib.import_module(f"fastopt._{family}_kernels_{name}")
            except ImportError:
                pass
    return found


def simd_variant(family):
    """Which variant kernels(family) runs: "avx512", "avx2", "sse2" (the compiled baseline) or "numpy"."""
    module = kernels(family)
    return getattr(module, "SIMD_VARIANT", "numpy" if backend() == "numpy" else "sse2")


def _default_threads():
    env = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if env:
        try:
            n = int(env)
        except ValueError:
            n = 0
        if n > 0:
            return n
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def get_num_threads():
    """Threads a large kernel may use: set_num_threads, else OMP_NUM_THREADS, else usable cores."""
    if _state["threads"] is None:
        _state["threads"] = _default_threads()
    return _state["threads"]


def set_num_threads(n):
    """Set how many threads large kernels use (n >= 1). Results do not depend on it."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n must be an int >= 1, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    _state["threads"] = n


def threads_for(work, grain):
    """Threads for a kernel over `work` items: one below `grain` items per thread.

    `grain` is each kernel family's benchmarked size under which splitting costs more than it saves.
    (The optimizers' compiled run_cached applies the same rule to thread_budget() in C.)
    """
    if work < 2 * grain:
        return 1
    threads = thread_budget()
    return 1 if threads == 1 else min(threads, work // grain)


def thread_budget():
    """The most threads a kernel may use now: get_num_threads(), or 1 inside beside_blas() while
    BLAS runs threads of its own."""
    threads = get_num_threads()
    if threads > 1 and _beside_blas.depth:
        from ._blas import blas_num_threads
        blas = blas_num_threads()
        if blas is not None and blas > 1:
            return 1
    return threads


class _BesideBlas:
    """The block of beside_blas(): a class, not a @contextmanager generator, because the training
    step enters it every iteration (measured here: the generator form 1.6 us a block, this 0.5)."""
    __slots__ = ()

    def __enter__(self):
        _beside_blas.depth += 1

    def __exit__(self, *exc):
        _beside_blas.depth -= 1
        return False


_BESIDE_BLAS = _BesideBlas()     # stateless: the depth is per Python thread, so one object serves all


def beside_blas():
    """Within this block, kernels run on one thread while NumPy's BLAS runs on more than one.

    A training step alternates big matmuls (NumPy's OpenBLAS, its own pthread pool) with short
    kernels (fastopt's OpenMP pool). When both pools run several threads, the workers of the pool
    that just finished keep spinning and steal the cores from the other: on a 2-core machine the
    3072-1024-1024-10 MLP step took 83 ms with its kernels on 2 threads and 44 ms on 1 (PyTorch,
    whose BLAS and kernels share one pool: 43 ms). FullyConnectedNet.loss and the Solver's update
    run inside this block; wrap your own training step's optimizer call in it too. Outside it,
    kernels use `get_num_threads()` as usual. Per Python thread; blocks nest.
    """
    return _BESIDE_BLAS


def openmp_enabled():
    """True when the compiled core was built with OpenMP."""
    if not _compiled_available():
        return False
    return importlib.import_module("fastopt._openmp").openmp_enabled()


@contextlib.contextmanager
def preserved():
    """Put the backend, the SIMD choice and the thread count back as they were when the block ends
    (tests and benchmarks switch them)."""
    saved = backend(), simd(), get_num_threads()
    try:
        yield
    finally:
        _state["backend"], _state["simd"], _state["threads"] = saved
        _active.clear()
