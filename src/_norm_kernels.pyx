# The norm kernels, portable baseline build (SSE2 on x86-64; what a wheel may assume).
# The kernel code lives in _norm_kernels.pxi, shared with _norm_kernels_avx2.pyx and
# _norm_kernels_avx512.pyx; setup.py compiles those with their instruction sets and
# fastopt._backend.kernels("norm") picks the widest one the CPU runs.
SIMD_VARIANT = "sse2"
include "_norm_kernels.pxi"
include "_groupnorm_kernels.pxi"

cdef extern from *:
    """
    /* Run-time CPU check for the AVX-512 kernel variants (fastopt._backend), in baseline code so it
       is safe to call on any CPU. GCC's __builtin_cpu_supports also checks that the OS saves the
       opmask/ZMM state (XCR0), so a "yes" means the instructions can run. */
    static int fo_cpu_has_avx512(void) {
    #if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
            && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl")
            && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    #else
        return 0;
    #endif
    }
    """
    int fo_cpu_has_avx512() nogil


def _cpu_has_avx512():
    """True when this CPU (and OS) can run the AVX-512 F/BW/DQ/VL kernel variants. Private: a build
    fact, not a kernel (fastopt._openmp is the home of such facts; it is baseline code too)."""
    return bool(fo_cpu_has_avx512())
