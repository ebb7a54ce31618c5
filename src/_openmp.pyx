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
    """
    int fo_openmp_enabled() nogil
    int fo_omp_max_threads() nogil
    const char *fo_simd_flags() nogil


def openmp_enabled():
    """True when the core was compiled with OpenMP."""
    return bool(fo_openmp_enabled())


def omp_max_threads():
    """OpenMP's own default thread count (1 without OpenMP)."""
    return fo_omp_max_threads()


def simd_flags():
    """The instruction sets the compiler was allowed to use for the kernels."""
    return fo_simd_flags().decode().split()
