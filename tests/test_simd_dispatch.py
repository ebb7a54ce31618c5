"""Run-time choice of the SIMD kernel variant (fastopt._backend.kernels / FASTOPT_SIMD)."""
import os
import subprocess
import sys

import numpy as np
import pytest

import fastopt
from fastopt import _backend, _openmp

HAS_AVX2 = _openmp.cpu_has_avx2_fma()
HAS_AVX512 = _backend.variant_supported("avx512")
# "auto" gives the optimizer family its AVX2 variant on Intel CPUs (fastopt._backend._AVX2_ON_INTEL)
OPTIM_AUTO = "avx2" if HAS_AVX512 and _openmp.cpu_is_intel() else "avx512" if HAS_AVX512 else "avx2"


# The child runs where this process's fastopt lives (site-packages, or the in-place build), so that
# `python -c` imports that package and not a `fastopt/` source folder in the working directory.
PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(fastopt.__file__)))


def _run(code, **env):
    # The child decides its backend and variant from what this test gives it alone: a
    # FASTOPT_BACKEND=numpy (or FASTOPT_SIMD) set for the whole test session must not leak in.
    child = {k: v for k, v in os.environ.items() if k not in ("FASTOPT_BACKEND", "FASTOPT_SIMD")}
    return subprocess.run([sys.executable, "-c", code], env=dict(child, **env), cwd=PACKAGE_PARENT,
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
def test_default_picks_the_widest_variant_on_this_cpu():
    code = ("from fastopt import _backend as b; print(b.simd_variant('optim'), b.simd_variant('norm'), "
            "b.simd_variant('dropout'), b.simd_variant('mlp'))")
    widest = "avx512" if HAS_AVX512 else "avx2"
    assert in_subprocess(code, FASTOPT_SIMD="").split() == [OPTIM_AUTO] + [widest] * 3
    assert in_subprocess(code, FASTOPT_SIMD="avx2").split() == ["avx2", "avx2", "avx2", "avx2"]


@pytest.mark.skipif(not HAS_AVX512, reason="CPU without AVX-512")
def test_env_avx512_asks_for_at_most_avx512():
    out = in_subprocess("from fastopt import _backend as b; print(b.simd_variant('optim'), "
                        "b.kernels('norm').__name__)", FASTOPT_SIMD="avx512")
    assert out.split() == ["avx512", "fastopt._norm_kernels_avx512"]


@pytest.mark.skipif(HAS_AVX512, reason="this CPU has AVX-512")
def test_avx512_request_without_support_is_refused():
    with pytest.raises(ImportError, match="AVX-512"):
        _backend.set_simd("avx512")


@pytest.mark.skipif(HAS_AVX512, reason="this CPU has AVX-512: nothing to refuse")
@pytest.mark.parametrize("family", ["optim", "mlp", "norm", "dropout"])
def test_importing_a_variant_this_cpu_cannot_run_raises_instead_of_crashing(family):
    # The module is compiled with AVX-512 throughout, its initialization included: before the guard,
    # this import killed the interpreter with SIGILL on an AVX2-only Zen 3 (tests/test_stubs.py did).
    result = _run(f"import fastopt._{family}_kernels_avx512")
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert f"ImportError: fastopt._{family}_kernels_avx512 needs a CPU with AVX-512" in result.stderr


def test_the_import_guard_refuses_exactly_the_variants_this_cpu_lacks(monkeypatch):
    # Pretend this CPU runs no variant: every variant name is refused before any file is looked up,
    # anything else (the baseline, other packages, unrelated "_avx2" names) is left to the normal finders.
    monkeypatch.setattr(_backend, "variant_supported", lambda name: False)
    guard = _backend._VariantGuard()
    for name in ("fastopt._optim_kernels_avx2", "fastopt._norm_kernels_avx512"):
        with pytest.raises(ImportError, match="needs a CPU with") as info:
            guard.find_spec(name)
        assert info.value.name == name
    for name in ("fastopt._optim_kernels", "numpy", "fastopt.layers_avx2", "other._norm_kernels_avx2"):
        assert guard.find_spec(name) is None
    assert sum(isinstance(f, _backend._VariantGuard) for f in sys.meta_path) == 1


def test_set_simd_switches_at_once():
    _backend.set_backend("cython")     # the compiled variants, also in a FASTOPT_BACKEND=numpy session
    _backend.set_simd("sse2")
    assert _backend.kernels("optim").SIMD_VARIANT == "sse2"
    _backend.set_simd("auto")
    assert _backend.simd_variant("optim") == (OPTIM_AUTO if HAS_AVX2 else "sse2")


@pytest.mark.skipif(not HAS_AVX512, reason="CPU without AVX-512")
@pytest.mark.parametrize("intel", [True, False], ids=["intel", "other"])
def test_auto_gives_the_optimizer_family_avx2_on_intel_only(monkeypatch, intel):
    monkeypatch.setattr(_openmp, "cpu_is_intel", lambda: intel)
    monkeypatch.setattr(_backend, "_modules", {})       # forget the modules resolved for this CPU
    with _backend.preserved():
        _backend.set_backend("cython")
        _backend.set_simd("auto")
        assert _backend.auto_variants("optim") == (("avx2", "avx512") if intel else ("avx512", "avx2"))
        assert _backend.simd_variant("optim") == ("avx2" if intel else "avx512")
        assert [_backend.simd_variant(f) for f in ("norm", "dropout", "mlp")] == ["avx512"] * 3
        _backend.set_simd("avx512")                      # asked for by name: the wide one everywhere
        assert _backend.simd_variant("optim") == "avx512"


def test_bad_simd_names_are_refused():
    with pytest.raises(ValueError, match="simd must be one of"):
        _backend.set_simd("avx1024")
    with pytest.raises(TypeError, match="simd must be a str"):
        _backend.set_simd(2)
    result = _run("import fastopt._backend as b; b.kernels('optim')", FASTOPT_SIMD="neon")
    assert result.returncode != 0 and "FASTOPT_SIMD must be one of" in result.stderr


@pytest.mark.skipif(HAS_AVX2, reason="this CPU has AVX2")
def test_avx2_request_without_support_is_refused():
    with pytest.raises(ImportError, match="AVX2"):
        _backend.set_simd("avx2")


def _optim_calls(rng, n, dtype):
    """(function name, arrays, scalars) covering every optimizer kernel and its option branches."""
    def normal(scale=1.0):
        return (scale * rng.standard_normal(n)).astype(dtype)

    def positive():
        return (rng.random(n) + 1e-3).astype(dtype)
    e = np.empty(0, dtype)
    off, clip = [1.0, 0.0], [0.5, 0.1]   # (grad_scale, avg_weight): no clipping/averaging; both on
    return [
        ("sgd_step", [normal(), normal(), e, e], [0.1, 0.0, 0.0, 0.0, False, False, False, *off]),
        ("sgd_step", [normal(), normal(), normal(), normal()], [0.1, 0.01, 0.9, 0.2, False, True, False, *clip]),
        ("sgd_step", [normal(), normal(), normal(), e], [0.1, 0.01, 0.9, 0.0, True, False, True, *off]),
        ("velocity_step", [normal(), normal(), normal()], [0.1, 0.9, False]),
        ("velocity_step", [normal(), normal(), normal()], [0.1, 0.9, True]),
        ("adagrad_step", [normal(), normal(), positive(), e], [0.1, 0.01, 1e-10, True, *off]),
        ("adagrad_step", [normal(), normal(), positive(), normal()], [0.1, 0.0, 1e-10, False, *clip]),
        ("rmsprop_step", [normal(), normal(), positive(), e, e, e],
         [0.01, 0.99, 1e-8, 0.0, 0.0, False, False, *off]),
        ("rmsprop_step", [normal(), normal(), positive() + 1, normal(0.1), normal(), normal()],
         [0.01, 0.9, 1e-8, 0.01, 0.9, True, True, *clip]),
        ("adam_step", [normal(), normal(), normal(0.1), positive(), e, e],
         [1e-3, 0.9, 0.999, 1e-8, 0.0, 1e-2, 0.03, False, False, False, *off]),
        ("adam_step", [normal(), normal(), normal(0.1), positive(), positive(), normal()],
         [1e-3, 0.9, 0.999, 1e-8, 0.01, 1e-2, 0.03, True, True, True, *clip]),
        ("nadam_step", [normal(), normal(), normal(0.1), positive(), e],
         [1e-3, 0.9, 0.999, 1e-8, 0.01, 0.002, -1e-3, -2e-3, False, False, *off]),
        ("nadam_step", [normal(), normal(), normal(0.1), positive(), normal()],
         [1e-3, 0.9, 0.999, 1e-8, 0.01, 0.002, -1e-3, -2e-3, True, True, *clip]),
        ("radam_step", [normal(), normal(), normal(0.1), positive(), e],
         [1e-3, 0.9, 0.999, 1e-8, 0.01, 0.5, 0.2, 0.7, True, False, False, *off]),
        ("radam_step", [normal(), normal(), normal(0.1), positive(), normal()],
         [1e-3, 0.9, 0.999, 1e-8, 0.01, 0.5, 0.2, 0.7, False, True, True, *clip]),
        ("adamax_step", [normal(), normal(), normal(0.1), positive(), e],
         [1e-2, 0.9, 0.999, 1e-8, 0.01, False, *off]),
        ("adamax_step", [normal(), normal(), normal(0.1), positive(), normal()],
         [1e-2, 0.9, 0.999, 1e-8, 0.0, True, *clip]),
        ("adadelta_step", [normal(), normal(), positive(), positive(), e], [1.0, 0.9, 1e-6, 0.01, False, *off]),
        ("adadelta_step", [normal(), normal(), positive(), positive(), normal()],
         [1.0, 0.9, 1e-6, 0.0, True, *clip]),
        ("lion_step", [normal(), normal(), normal(0.1), e], [1e-4, 0.9, 0.99, 0.01, False, *off]),
        ("lion_step", [normal(), normal(), normal(0.1), normal()], [1e-4, 0.9, 0.99, 0.0, True, *clip]),
    ]


def _norm_calls(rng, dtype):
    """(function name, arrays in call order, scalars, index where the scalars go) for every
    normalization kernel; outputs are fresh arrays."""
    n, d = 67, 1031
    x = (3 + rng.standard_normal((n, d))).astype(dtype)
    dout = rng.standard_normal((n, d)).astype(dtype)
    g, b = rng.standard_normal(d).astype(dtype), rng.standard_normal(d).astype(dtype)
    rm, rv = rng.standard_normal(d).astype(dtype), rng.uniform(0.5, 2, d).astype(dtype)
    mean, inv = x.mean(0).astype(dtype), (1 / x.std(0)).astype(dtype)
    x3, dout3 = x.reshape(n, 1, d)[:, :, :1024].copy().reshape(n, 4, 256), dout[:, :1024].reshape(n, 4, 256).copy()
    g4, b4, rm4, rv4 = g[:4].copy(), b[:4].copy(), rm[:4].copy(), rv[:4].copy()
    m4, i4 = x3.mean((0, 2)).astype(dtype), (1 / x3.std((0, 2))).astype(dtype)
    lm, li = x.mean(1).astype(dtype), (1 / x.std(1)).astype(dtype)
    groups = x3.reshape(n * 2, -1)                 # 2 groups of 2 channels: each row one group
    gm, gi = groups.mean(1).astype(dtype), (1 / groups.std(1)).astype(dtype)
    z = np.empty_like
    return [
        ("batchnorm_train_forward", lambda: [x, g, b, 1e-5, 0.9, z(x), z(g), z(g), rm.copy(), rv.copy()]),
        ("batchnorm_test_forward", lambda: [x, g, b, rm, rv, 1e-5, z(x)]),
        ("batchnorm_backward", lambda: [dout, x, mean, inv, g, z(x), z(g), z(g)]),
        ("spatial_batchnorm_train_forward", lambda: [x3, g4, b4, 1e-5, 0.9, z(x3), z(g4), z(g4), rm4.copy(),
                                                     rv4.copy()]),
        ("spatial_batchnorm_test_forward", lambda: [x3, g4, b4, rm4, rv4, 1e-5, z(x3)]),
        ("spatial_batchnorm_backward", lambda: [dout3, x3, m4, i4, g4, z(x3), z(g4), z(g4)]),
        ("layernorm_forward", lambda: [x, g, b, 1e-5, z(x), z(lm), z(lm)]),
        ("layernorm_backward", lambda: [dout, x, lm, li, g, z(x), z(g), z(g)]),
        ("spatial_groupnorm_forward", lambda: [x3, g4, b4, 2, 1e-5, z(x3), z(gm), z(gm)]),
        ("spatial_groupnorm_backward", lambda: [dout3, x3, gm, gi, g4, 2, z(x3), z(g4), z(g4)]),
    ]


@pytest.mark.skipif(not HAS_AVX2, reason="CPU without AVX2/FMA")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_threads", [1, 2])
def test_every_kernel_rounds_identically_in_every_variant(dtype, n_threads):
    # The variants are compiled with -ffp-contract=off: wider vectors, same operations, same bits.
    from fastopt import _norm_kernels, _optim_kernels
    rng = np.random.default_rng(0)
    names = set()
    optim_variants = _backend.compiled_variants("optim")
    assert len(optim_variants) >= 2                  # the baseline and at least the AVX2 build
    for name, arrays, scalars in _optim_calls(rng, 10007 if n_threads == 1 else 140001, dtype):
        results = []
        for mod in optim_variants.values():
            copies = [a.copy() for a in arrays]
            getattr(mod, name)(*copies, *scalars, n_threads)
            results.append(copies)
        for other in results[1:]:
            for k, (a, b) in enumerate(zip(results[0], other)):
                assert a.tobytes() == b.tobytes(), f"{name} array {k}"
        names.add(name)
    assert names == {n for n in dir(_optim_kernels) if n.endswith("_step")}       # every kernel
    names = set()
    for name, make in _norm_calls(rng, dtype):
        results = []
        for mod in _backend.compiled_variants("norm").values():
            args = make()
            getattr(mod, name)(*args, n_threads)
            results.append([a for a in args if isinstance(a, np.ndarray)])
        for other in results[1:]:
            for k, (a, b) in enumerate(zip(results[0], other)):
                assert a.tobytes() == b.tobytes(), f"{name} array {k}"
        names.add(name)
    assert names == {n for n in dir(_norm_kernels) if n.endswith(("_forward", "_backward"))}


# Every norm kernel and the Philox dropout, realistic sizes, 1 and 2 threads, both dtypes: a digest of
# every output. Run in one child process per variant (FASTOPT_SIMD), so each child's dispatch is the
# one under test end to end (the public layer functions, then the kernel module they picked).
_DIGEST = r"""
import hashlib, numpy as np, fastopt
from fastopt import _backend
from fastopt.layers import normalization as L, dropout as D
h = hashlib.sha256()
rng = np.random.default_rng(0)
for dtype in (np.float32, np.float64):
    for t in (1, 2):
        fastopt.set_num_threads(t)
        for shape in ((1024, 1031), (67, 4099)):
            x = (3 + rng.standard_normal(shape)).astype(dtype)
            dout = rng.standard_normal(shape).astype(dtype)
            g, b = rng.standard_normal(shape[1]).astype(dtype), rng.standard_normal(shape[1]).astype(dtype)
            for fwd, bwd, p in ((L.batchnorm_forward, L.batchnorm_backward, {"mode": "train"}),
                                (L.layernorm_forward, L.layernorm_backward, {})):
                out, cache = fwd(x, g, b, p)
                for a in (out, cache.mean, cache.inv_std, *bwd(dout, cache)):
                    h.update(a.tobytes())
        x4 = (3 + rng.standard_normal((16, 24, 17, 19))).astype(dtype)
        d4 = rng.standard_normal(x4.shape).astype(dtype)
        g4, b4 = rng.standard_normal(24).astype(dtype), rng.standard_normal(24).astype(dtype)
        out, cache = L.spatial_batchnorm_forward(x4, g4, b4, {"mode": "train"})
        for a in (out, cache.mean, cache.inv_std, *L.spatial_batchnorm_backward(d4, cache)):
            h.update(a.tobytes())
        out, cache = L.spatial_groupnorm_forward(x4, g4, b4, 6, {})
        for a in (out, cache.mean, cache.inv_std, *L.spatial_groupnorm_backward(d4, cache)):
            h.update(a.tobytes())
        xd = rng.standard_normal(1_000_003).astype(dtype)
        out, cache = D.dropout_forward(xd, {"mode": "train", "p": 0.7, "seed": 5, "generator": "philox", "offset": 3})
        h.update(out.tobytes() + cache[1].tobytes())
print(_backend.simd_variant("norm"), _backend.simd_variant("dropout"), h.hexdigest())
"""


@pytest.mark.parametrize("variant", ["sse2", "avx2", "avx512"])
def test_every_variant_gives_the_same_bits_end_to_end(variant):
    if variant != "sse2" and not _backend.variant_supported(variant):
        pytest.skip(f"CPU without {variant}")
    baseline = in_subprocess(_DIGEST, FASTOPT_SIMD="sse2").split()
    got = in_subprocess(_DIGEST, FASTOPT_SIMD=variant).split()
    assert got[:2] == [variant, variant]
    assert got[2] == baseline[2]


def test_info_reports_the_active_variants():
    from fastopt import info
    record = info.collect()
    assert record["kernel_variants"]["optim"] == _backend.simd_variant("optim")
    assert record["cpu_avx2_fma"] == HAS_AVX2
    assert "kernel variants" in info.format_text(record)


def test_kernels_follow_every_change_of_backend_and_variant():
    # kernels() keeps its answer per family: set_backend, set_simd and preserved() must each drop it.
    import fastopt.reference.optim as twins
    with _backend.preserved():
        _backend.set_backend("cython")
        _backend.set_simd("sse2")
        baseline = _backend.kernels("optim")
        assert baseline.SIMD_VARIANT == "sse2"
        with _backend.preserved():
            _backend.set_backend("numpy")
            assert _backend.kernels("optim") is twins
            _backend.set_backend("cython")
            assert _backend.kernels("optim") is baseline
            _backend.set_backend("numpy")
            assert _backend.kernels("optim") is twins
        assert _backend.kernels("optim") is baseline      # preserved() put cython/sse2 back
        if HAS_AVX2:
            _backend.set_simd("avx2")
            assert _backend.kernels("optim").SIMD_VARIANT == "avx2"
