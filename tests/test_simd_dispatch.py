"""Run-time choice of the SIMD kernel variant (fastopt._backend.kernels / FASTOPT_SIMD)."""
import os
import subprocess
import sys

import numpy as np
import pytest

import fastopt
from fastopt import _backend, _openmp

HAS_AVX2 = _openmp.cpu_has_avx2_fma()


# The child runs where this process's fastopt lives (site-packages, or the in-place build), so that
# `python -c` imports that package and not a `fastopt/` source folder in the working directory.
PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(fastopt.__file__)))


def _run(code, **env):
    return subprocess.run([sys.executable, "-c", code], env=dict(os.environ, **env), cwd=PACKAGE_PARENT,
                          capture_output=True, text=True)


def in_subprocess(code, **env):
    result = _run(code, **env)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_env_sse2_gives_the_baseline_module():
    out = in_subprocess("from fastopt import _backend as b; print(b.kernels('optim').__name__, "
                        "b.kernels('norm').__name__)", FASTOPT_SIMD="sse2")
    assert out.split() == ["fastopt._optim_kernels", "fastopt._norm_kernels"]


@pytest.mark.skipif(not HAS_AVX2, reason="CPU without AVX2/FMA")
def test_default_picks_avx2_on_this_cpu():
    out = in_subprocess("from fastopt import _backend as b; print(b.simd_variant('optim'), "
                        "b.simd_variant('norm'), b.simd_variant('dropout'))", FASTOPT_SIMD="")
    assert out.split() == ["avx2", "avx2", "sse2"]      # dropout has no AVX2 variant: the baseline


def test_set_simd_switches_at_once():
    _backend.set_simd("sse2")
    assert _backend.kernels("optim").SIMD_VARIANT == "sse2"
    _backend.set_simd("auto")
    assert _backend.simd_variant("optim") == ("avx2" if HAS_AVX2 else "sse2")


def test_bad_simd_names_are_refused():
    with pytest.raises(ValueError, match="simd must be one of"):
        _backend.set_simd("avx512")
    with pytest.raises(TypeError, match="simd must be a str"):
        _backend.set_simd(2)
    result = _run("import fastopt._backend as b; b.kernels('optim')", FASTOPT_SIMD="neon")
    assert result.returncode != 0 and "FASTOPT_SIMD must be one of" in result.stderr


@pytest.mark.skipif(HAS_AVX2, reason="this CPU has AVX2")
def test_avx2_request_without_support_is_refused():
    with pytest.raises(ImportError, match="AVX2"):
        _backend.set_simd("avx2")


@pytest.mark.skipif(not HAS_AVX2, reason="CPU without AVX2/FMA")
def test_variants_round_identically():
    # The AVX2 build is compiled with -ffp-contract=off: wider vectors, same operations, same bits.
    from fastopt import _norm_kernels, _norm_kernels_avx2, _optim_kernels, _optim_kernels_avx2
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        base = [rng.standard_normal(10007).astype(dtype) for _ in range(2)] + \
               [(0.1 * rng.standard_normal(10007)).astype(dtype), rng.random(10007).astype(dtype),
                rng.random(10007).astype(dtype)]
        results = []
        for mod in (_optim_kernels, _optim_kernels_avx2):
            arrays = [a.copy() for a in base]
            p, g, m, v, vmax = arrays
            mod.adam_step(param=p, grad=g, exp_avg=m, exp_avg_sq=v, max_exp_avg_sq=vmax,
                          param_avg=np.empty(0, dtype), lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8,
                          weight_decay=0.01, step_size=1e-2, bias_correction2_sqrt=0.03, decoupled=True,
                          amsgrad=True, maximize=False, grad_scale=1.0, avg_weight=0.0, n_threads=1)
            results.append(arrays)
        for a, b in zip(*results):
            np.testing.assert_array_equal(a, b)
        x = (3 + rng.standard_normal((67, 1031))).astype(dtype)
        gamma, beta = rng.standard_normal(1031).astype(dtype), rng.standard_normal(1031).astype(dtype)
        outs = []
        for mod in (_norm_kernels, _norm_kernels_avx2):
            out, mean, inv = np.empty_like(x), np.empty(67, dtype), np.empty(67, dtype)
            mod.layernorm_forward(x, gamma, beta, 1e-5, out, mean, inv, 1)
            outs.append((out, mean, inv))
        for a, b in zip(*outs):
            np.testing.assert_array_equal(a, b)


def test_info_reports_the_active_variants():
    from fastopt import info
    record = info.collect()
    assert record["kernel_variants"]["optim"] == _backend.simd_variant("optim")
    assert record["cpu_avx2_fma"] == HAS_AVX2
    assert "kernel variants" in info.format_text(record)
