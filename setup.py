"""Build the compiled core: every src/*.pyx becomes the extension module fastopt.<name>.

Compiler directives are set once, here. OpenMP is used when the compiler accepts -fopenmp and
can be turned off with FASTOPT_NO_OPENMP=1; the kernels then build and run serially.
FASTOPT_DEBUG=1 turns bounds and wraparound checks back on for debugging.

SIMD variants: a module src/<name>_avx2.pyx (which `include`s the same .pxi kernel code as its
baseline <name>.pyx) is compiled with -mavx2 -mfma, only on x86-64 with a gcc/clang-style compiler
that accepts those flags; fastopt._backend.kernels picks it at run time when the CPU has AVX2 and
FMA. Everything else is the portable baseline (SSE2 on x86-64), which is always built.
FASTOPT_NO_AVX2=1 skips the variants.
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


AVX2_FLAGS = ["-mavx2", "-mfma", "-ffp-contract=off"]


def compiler_accepts_avx2(cc):
    """Whether this is an x86-64 build whose compiler takes -mavx2 -mfma (and the user did not opt out)."""
    if os.environ.get("FASTOPT_NO_AVX2") == "1":
        return False
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    code = "#include <immintrin.h>\nint main(void){ __m256 a = _mm256_set1_ps(1.f);\n" \
           "a = _mm256_fmadd_ps(a, a, a); return (int)_mm256_cvtss_f32(a) == 2 ? 0 : 1; }\n"
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "check_avx2.c"
        source.write_text(code)
        try:
            result = subprocess.run([cc, *AVX2_FLAGS, "-c", str(source), "-o", str(Path(tmp) / "a.o")],
                                    capture_output=True)
        except OSError:
            return False
        return result.returncode == 0


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
        use_avx2 = self.compiler.compiler_type == "unix" and compiler_accepts_avx2(cc)
        print(f"fastopt: AVX2+FMA kernel variants {'built' if use_avx2 else 'skipped'}", file=sys.stderr)
        if not use_avx2:
            self.extensions = [ext for ext in self.extensions if not ext.name.endswith("_avx2")]
        for ext in self.extensions:
            simd = AVX2_FLAGS if ext.name.endswith("_avx2") else []
            ext.extra_compile_args = compile_args + simd + list(ext.extra_compile_args)
            ext.extra_link_args = link_args + list(ext.extra_link_args)
        super().build_extensions()


def extensions():
    exts = []
    for pyx in sorted(glob("src/*.pyx")):
        name = Path(pyx).stem
        exts.append(Extension(
            f"fastopt.{name}", [pyx],
            include_dirs=[np.get_include(), "src"],
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        ))
    return cythonize(exts, compiler_directives=DIRECTIVES, include_path=["src"],
                     annotate=os.environ.get("FASTOPT_ANNOTATE") == "1")


setup(ext_modules=extensions(), cmdclass={"build_ext": BuildExt})
