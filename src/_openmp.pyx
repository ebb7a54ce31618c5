# Build facts of the compiled core: whether OpenMP is on, how many threads it offers, and which
# instruction sets the C compiler targeted. fastopt._backend reads these; kernels never do.
cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    static int fo_openmp_enabled(void) { return 1; }
    static int fo_omp_max_threads(void) { return omp_get_max_threads(); }
    #else
    static int fo_openmp_enabled(void) { return 0; }
    static int fo_omp_max_threads(void) { return 1; }
    #endif
    static const char *fo_simd_flags(void) {
        return ""
    #ifdef __SSE2__
        " SSE2"
    #endif
    #ifdef __SSE4_2__
        " SSE4.2"
    #endif
    #ifdef __AVX__
        " AVX"
    #endif
    #ifdef __AVX2__
        " AVX2"
    #endif
    #ifdef __FMA__
        " FMA"
    #endif
    #ifdef __AVX512F__
        " AVX512F"
    #endif
    #ifdef __ARM_NEON
        " NEON"
    #endif
        ;
    }
    /* Run-time CPU check for the -mavx2 -mfma kernel variants. This module itself is baseline code,
       so it is safe to import anywhere. __builtin_cpu_supports also checks that the OS saves the
       AVX state (OSXSAVE), so a "yes" means the instructions can run. */
    static int fo_cpu_has_avx2_fma(void) {
    #if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    #else
        return 0;
    #endif
    }
    /* Whether the CPU is Intel's (fastopt._backend's "auto" choice of vector width per family). */
    static int fo_cpu_is_intel(void) {
    #if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
        __builtin_cpu_init();
        return __builtin_cpu_is("intel");
    #else
        return 0;
    #endif
    }
    """
    int fo_openmp_enabled() nogil
    int fo_cpu_has_avx2_fma() nogil
    int fo_cpu_is_intel() nogil
    int fo_omp_max_threads() nogil
    const char *fo_simd_flags() nogil


def openmp_enabled():
    """True when the core was compiled with OpenMP."""
    return bool(fo_openmp_enabled())


def omp_max_threads():
    """OpenMP's own default thread count (1 without OpenMP)."""
    return fo_omp_max_threads()


def cpu_has_avx2_fma():
    """True when this CPU (and OS) can run AVX2 and FMA instructions."""
    return bool(fo_cpu_has_avx2_fma())


def cpu_is_intel():
    """True when this is an Intel x86 CPU (CPUID vendor GenuineIntel)."""
    return bool(fo_cpu_is_intel())


def simd_flags():
    """The instruction sets the compiler was allowed to use for the baseline build of the kernels.

    The AVX2 variants add AVX, AVX2 and FMA; fastopt._backend.simd_variant(family) says which runs.
    """
    return fo_simd_flags().decode().split()
