"""`fastopt info`: what this installation runs on.

:func:`collect` is also the machine record that `fastopt bench` prints in its header and stores in its
JSON, so a benchmark result always says which build, backend, BLAS and CPU produced it.
"""
import json
import os
import platform
import sys

# Environment variables that change what the kernels or NumPy's BLAS do. They are reported, never changed:
# OPENBLAS_CORETYPE in particular may be set on this machine kind and alters NumPy's float32 speed.
ENV_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
            "MKL_NUM_THREADS", "FASTOPT_BACKEND", "FASTOPT_SIMD")
# Kernel families that may have an AVX2 variant; info reports which variant each one runs.
SIMD_FAMILIES = ("optim", "norm")


def configure(parser):
    parser.add_argument("--json", action="store_true", help="print the record as JSON")


def run(args):
    record = collect()
    if args.json:
        print(json.dumps(record, indent=2))
    else:
        print(format_text(record))
    return 0


def collect():
    """A JSON-ready dict describing fastopt's build, NumPy's BLAS, Python and the CPU."""
    import warnings

    import numpy as np

    import fastopt
    from fastopt import _backend

    with warnings.catch_warnings():
        # backend() warns once when the compiled core is missing; the record says so instead.
        warnings.simplefilter("ignore", RuntimeWarning)
        backend = fastopt.backend()
    compiled = _backend._compiled_available()
    simd, omp_max, variants, avx2 = [], None, {}, False
    if compiled:
        from fastopt import _openmp
        simd, omp_max = _openmp.simd_flags(), _openmp.omp_max_threads()
        avx2 = _openmp.cpu_has_avx2_fma()
        variants = {family: _backend.simd_variant(family) for family in SIMD_FAMILIES}
    return {
        "fastopt_version": fastopt.__version__,
        "fastopt_path": os.path.dirname(fastopt.__file__),
        "backend": backend,
        "compiled_core": compiled,
        "openmp": _backend.openmp_enabled(),
        "threads": fastopt.get_num_threads(),
        "omp_max_threads": omp_max,
        "simd": simd,
        "cpu_avx2_fma": avx2,
        "kernel_variants": variants,
        "numpy_version": np.__version__,
        "blas": _numpy_blas(np),
        "threadpools": _threadpools(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "env": {name: os.environ.get(name) for name in ENV_VARS},
    }


def format_text(record):
    """The record as aligned `key: value` lines."""
    blas = record["blas"]
    blas_text = " ".join(str(v) for v in (blas.get("name"), blas.get("version")) if v) or "unknown"
    lines = [
        ("fastopt", f"{record['fastopt_version']} ({record['fastopt_path']})"),
        ("backend", record["backend"] + ("" if record["compiled_core"] else " (compiled core not built)")),
        ("OpenMP", "on" if record["openmp"] else "off"),
        ("threads", f"{record['threads']} (OpenMP default {record['omp_max_threads']})"
                    if record["omp_max_threads"] is not None else str(record["threads"])),
        ("instruction sets", (" ".join(record["simd"]) or "n/a") + " (baseline build)"),
        ("CPU AVX2+FMA", "yes" if record["cpu_avx2_fma"] else "no"),
        ("kernel variants", " ".join(f"{f}={v}" for f, v in record["kernel_variants"].items()) or "n/a"),
        ("NumPy", record["numpy_version"]),
        ("NumPy BLAS", blas_text),
    ]
    for pool in record["threadpools"] or ():
        name = " ".join(str(pool[k]) for k in ("internal_api", "version") if pool.get(k))
        lines.append(("threadpool", f"{name} num_threads={pool.get('num_threads')}"))
    lines += [
        ("Python", f"{record['python']} ({record['python_implementation']})"),
        ("platform", record["platform"]),
        ("CPU", f"{record['cpu_model'] or 'unknown'} ({record['usable_cpus'] or record['cpu_count']} usable)"),
    ]
    lines += [(name, value) for name, value in record["env"].items() if value is not None]
    width = max(len(key) for key, _ in lines)
    return "\n".join(f"{key + ':':<{width + 1}} {value}" for key, value in lines)


def _numpy_blas(np):
    """NumPy's BLAS as recorded in its build config (name, version, configuration)."""
    try:
        config = np.show_config(mode="dicts")
        blas = config["Build Dependencies"]["blas"]
    except Exception:  # older NumPy or an unusual build: the record just says unknown
        return {}
    return {key: blas.get(key) for key in ("name", "version", "openblas configuration") if blas.get(key)}


def _threadpools():
    """threadpoolctl's view of the native thread pools, only when it is installed (never required)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    return [{key: pool.get(key) for key in ("user_api", "internal_api", "version", "num_threads")}
            for pool in threadpool_info()]


def _cpu_model():
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("model name", "Model", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None
