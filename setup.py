"""Build the compiled core: every src/*.pyx becomes the extension module fastopt.<name>.

Compiler directives are set once, here. OpenMP is used when the compiler accepts -fopenmp and
can be turned off with FASTOPT_NO_OPENMP=1; the kernels then build and run serially.
FASTOPT_DEBUG=1 turns bounds and wraparound checks back on for debugging.

SIMD variants: a module src/<name>_avx2.pyx (which `include`s the same .pxi kernel code as its
baseline <name>.pyx) is compiled with -mavx2 -mfma, and src/<name>_avx512.pyx with the AVX-512
F/BW/DQ/VL flags (512-bit vectors preferred), only on x86-64 with a gcc/clang-style compiler that
accepts those flags; fastopt._backend.kernels picks the widest one the CPU runs. Every variant is
compiled with -ffp-contract=off (no FMA contraction) and without -ffast-math, so it performs the
same roundings in the same order as the baseline: the results are bitwise equal across variants.
Everything else is the portable baseline (SSE2 on x86-64), which is always built.
FASTOPT_NO_AVX2=1 skips every variant, FASTOPT_NO_AVX512=1 the AVX-512 ones.
"""
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from glob import glob
from pathlib import Path

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).parent
DEBUG = os.environ.get("FASTOPT_DEBUG") == "1"

DIRECTIVES = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": True,
    "nonecheck": False,
    "embedsignature": True,
}


def compiler_accepts_openmp(cc):
    """Compile and link a tiny OpenMP program with the compiler setuptools will use."""
    if os.environ.get("FASTOPT_NO_OPENMP") == "1":
        return False
    code = "#include <omp.h>\nint main(void){\n#pragma omp parallel\n{}\nreturn omp_get_max_threads() > 0 ? 0 : 1;}\n"
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "check_openmp.c"
        source.write_text(code)
        try:
            result = subprocess.run([cc, "-fopenmp", str(source), "-o", str(Path(tmp) / "a.out")],
                                    capture_output=True)
        except OSError:
            return False
        return result.returncode == 0


# Variant suffix -> its flags and a probe program using those instructions.
SIMD_VARIANTS = {
    "_avx2": (["-mavx2", "-mfma", "-ffp-contract=off"],
              "__m256 a = _mm256_set1_ps(1.f); a = _mm256_fmadd_ps(a, a, a);"
              " return (int)_mm256_cvtss_f32(a) == 2 ? 0 : 1;"),
    "_avx512": (["-mavx512f", "-mavx512bw", "-mavx512dq", "-mavx512vl", "-mavx2", "-mfma",
                 "-mprefer-vector-width=512", "-ffp-contract=off"],
                "__m512 a = _mm512_set1_ps(1.f); a = _mm512_add_ps(a, a);"
                " return (int)_mm512_reduce_add_ps(a) == 32 ? 0 : 1;"),
}


def compiler_accepts(cc, suffix):
    """Whether this is an x86-64 build whose compiler takes the flags of SIMD variant `suffix`
    (and the user did not opt out)."""
    if os.environ.get("FASTOPT_NO_AVX2") == "1":
        return False
    if suffix == "_avx512" and os.environ.get("FASTOPT_NO_AVX512") == "1":
        return False
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    flags, body = SIMD_VARIANTS[suffix]
    code = f"#include <immintrin.h>\nint main(void){{ {body} }}\n"
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "check_simd.c"
        source.write_text(code)
        try:
            result = subprocess.run([cc, *flags, "-c", str(source), "-o", str(Path(tmp) / "a.o")],
                                    capture_output=True)
        except OSError:
            return False
        return result.returncode == 0


def variant_suffix(name):
    """"_avx512" for fastopt._norm_kernels_avx512, None for a baseline module."""
    return next((s for s in SIMD_VARIANTS if name.endswith(s)), None)


class BuildExt(build_ext):
    """Adds OpenMP and optimisation flags once the actual compiler is known."""

    def build_extensions(self):
        cc = self.compiler.compiler_so[0] if getattr(self.compiler, "compiler_so", None) else "cc"
        use_openmp = self.compiler.compiler_type == "unix" and compiler_accepts_openmp(cc)
        # -fno-math-errno lets sqrtf/sqrt inline to one instruction and vectorize;
        # no -ffast-math: results must match the NumPy twins and stay reproducible.
        # No -march=native: the wheel must run on any x86-64.
        compile_args = ["-O3", "-fno-math-errno"] if self.compiler.compiler_type == "unix" else []
        link_args = []
        if use_openmp:
            compile_args.append("-fopenmp")
            link_args.append("-fopenmp")
        print(f"fastopt: OpenMP {'enabled' if use_openmp else 'disabled'}", file=sys.stderr)
        built = {s for s in SIMD_VARIANTS if self.compiler.compiler_type == "unix" and compiler_accepts(cc, s)}
        for suffix in SIMD_VARIANTS:
            print(f"fastopt: {suffix[1:].upper()} kernel variants {'built' if suffix in built else 'skipped'}",
                  file=sys.stderr)
        self.extensions = [ext for ext in self.extensions if variant_suffix(ext.name) in built | {None}]
        for ext in self.extensions:
            suffix = variant_suffix(ext.name)
            simd = SIMD_VARIANTS[suffix][0] if suffix else []
            ext.extra_compile_args = compile_args + simd + list(ext.extra_compile_args)
            ext.extra_link_args = link_args + list(ext.extra_link_args)
        super().build_extensions()


def extensions():
    exts = []
    for pyx in sorted(glob("src/*.pyx")):
        name = Path(pyx).stem
        exts.append(Extension(
            f"fastopt.{name}", [pyx],
            # the C helpers that the .pyx files include verbatim: a change recompiles (Cython tracks
            # its own .pxi/.pxd includes, not headers)
            depends=sorted(glob("src/*.h")),
            include_dirs=[np.get_include(), "src"],
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        ))
    return cythonize(exts, compiler_directives=DIRECTIVES, include_path=["src"],
                     annotate=os.environ.get("FASTOPT_ANNOTATE") == "1")


setup(ext_modules=extensions(), cmdclass={"build_ext": BuildExt})
