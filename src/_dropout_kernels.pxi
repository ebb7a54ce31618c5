# Inverted-dropout kernels: draw a keep-mask from a NumPy bit generator (CS231n's stream, the
# default) or from the counter-based Philox4x32-10 generator (opt-in), and scale by the mask.
# Shared by _dropout_kernels.pyx (baseline) and its _avx2/_avx512 variants (setup.py).
#
# NumPy bit generator (dropout_train):
# The mask is drawn with one `next_double` per element, compared with p (u < p keeps the unit):
# exactly the stream `numpy.random.Generator(bit_generator).random(n) < p` consumes, and for a
# legacy-seeded MT19937 exactly `np.random.RandomState(seed).rand(n) < p` (CS231n's mask). So the
# mask is the same for float32 and float64 inputs, and the NumPy twin reproduces it bit for bit.
# Drawing is sequential by nature and dominates the cost (a call through the bit generator's
# function pointer per element), so the forward pass is one serial loop; the backward pass is a
# cheap elementwise product that may run in parallel. Both check every buffer's size first
# (src/_contract.pxd) and take n_threads last.
from cython cimport floating
from cython.parallel cimport prange
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from cpython.pycapsule cimport PyCapsule_GetPointer, PyCapsule_IsValid
from numpy.random cimport bitgen_t
from numpy.random import BitGenerator as _BitGenerator

from _contract cimport check_1d, threads

cdef extern from *:
    """
    /* Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC11; the
       Random123 constants), 16 counters at a time: lane l of a group of 16 has the counter
       base + l (64 bits: words 0 and 1; words 2 and 3 zero) and the key (k0, k1). Word j of its
       output goes to w[16 * j + l]. AVX-512: two groups per call (fo_philox_groups2), four 8-lane
       chains in 64-bit containers; AVX2: two 8-lane vectors per word; else a loop over the 16 lanes.
       Intrinsics because GCC's own vectorization of the loop kept the lanes in memory between
       rounds (measured: 5.2 ms per 4M words with -mavx512f, loop form; 1.45 ms with these). */
    #include <stdint.h>
    #define FO_PHILOX_M0 0xD2511F53u
    #define FO_PHILOX_M1 0xCD9E8D57u
    #define FO_PHILOX_W0 0x9E3779B9u
    #define FO_PHILOX_W1 0xBB67AE85u
    /* base must be a multiple of 16 (a group's first counter), so the 16 counters share their high
       word and their low words base + l never carry. Integer arithmetic only: the intrinsic paths
       and the portable loop compute the same bits. */
    #if defined(__AVX512F__)
    #include <immintrin.h>
    /* Each 32-bit word of 8 lanes lives in the low half of a 64-bit element: mul_epu32 reads only
       the low halves, so whatever the high halves hold never matters; lo = the product itself,
       hi = product >> 32; the low halves are packed back at the end. 12 instructions a round per
       16 lanes instead of 16 with blends. */
    static inline void fo_philox_groups2(uint64_t group, uint32_t k0, uint32_t k1, uint32_t *w) {
        /* Groups `group` and `group + 1` (counters 16 g + l): w[0..63] and w[64..127], each laid
           out as fo_philox4x32_10_x16's. Four independent 8-lane chains per round (measured in a C
           harness: 1.86 -> 1.38 ms per 4M words against two chains). Each group's 16 counters
           share their high word (16 g + l never carries out of the low word). */
        const __m512i m0 = _mm512_set1_epi64(FO_PHILOX_M0), m1 = _mm512_set1_epi64(FO_PHILOX_M1);
        const __m512i lanes = _mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7), eight = _mm512_set1_epi64(8);
        __m512i c0[4], c1[4], c2[4], c3[4], p0, p1, kk0, kk1;
        int h, r;
        for (h = 0; h < 4; h++) {
            uint64_t base = (group + (uint64_t)(h >> 1)) * 16;
            c0[h] = _mm512_add_epi64(_mm512_set1_epi64((uint32_t)base), (h & 1) ? _mm512_add_epi64(lanes, eight) : lanes);
            c1[h] = _mm512_set1_epi64((uint32_t)(base >> 32));
            c2[h] = c3[h] = _mm512_setzero_si512();
        }
        for (r = 0; r < 10; r++) {
            kk0 = _mm512_set1_epi64(k0); kk1 = _mm512_set1_epi64(k1);
            for (h = 0; h < 4; h++) {
                p0 = _mm512_mul_epu32(c0[h], m0);
                p1 = _mm512_mul_epu32(c2[h], m1);
                /* ternary logic 0x96: x ^ y ^ z in one instruction */
                c0[h] = _mm512_ternarylogic_epi64(_mm512_srli_epi64(p1, 32), c1[h], kk0, 0x96);
                c2[h] = _mm512_ternarylogic_epi64(_mm512_srli_epi64(p0, 32), c3[h], kk1, 0x96);
                c1[h] = p1; c3[h] = p0;
            }
            k0 += FO_PHILOX_W0; k1 += FO_PHILOX_W1;
        }
        for (h = 0; h < 4; h++) {   /* chain h: group h >> 1, lanes 8 (h & 1) .. + 7 */
            uint32_t *g = w + 64 * (h >> 1) + 8 * (h & 1);
            _mm256_storeu_si256((__m256i *)g, _mm512_cvtepi64_epi32(c0[h]));
            _mm256_storeu_si256((__m256i *)(g + 16), _mm512_cvtepi64_epi32(c1[h]));
            _mm256_storeu_si256((__m256i *)(g + 32), _mm512_cvtepi64_epi32(c2[h]));
            _mm256_storeu_si256((__m256i *)(g + 48), _mm512_cvtepi64_epi32(c3[h]));
        }
    }
    static inline void fo_philox4x32_10_x16(uint64_t base, uint32_t k0, uint32_t k1, uint32_t *w) {
        uint32_t both[128];
        int l;
        fo_philox_groups2(base / 16, k0, k1, both);
        for (l = 0; l < 64; l++) w[l] = both[l];
    }
    #define FO_HAVE_GROUPS2 1
    #elif defined(__AVX2__)
    #include <immintrin.h>
    static inline __m256i fo_mulhilo8(__m256i c, __m256i m, __m256i *hi) {
        __m256i pe = _mm256_mul_epu32(c, m), po = _mm256_mul_epu32(_mm256_srli_epi64(c, 32), m);
        *hi = _mm256_blend_epi32(_mm256_srli_epi64(pe, 32), po, 0xAA);
        return _mm256_blend_epi32(pe, _mm256_slli_epi64(po, 32), 0xAA);
    }
    static inline void fo_philox4x32_10_x16(uint64_t base, uint32_t k0, uint32_t k1, uint32_t *w) {
        const __m256i m0 = _mm256_set1_epi64x(FO_PHILOX_M0), m1 = _mm256_set1_epi64x(FO_PHILOX_M1);
        const __m256i b = _mm256_set1_epi32((int)(uint32_t)base);
        __m256i c0[2], c1[2], c2[2], c3[2], hi0, hi1, lo0, lo1, kk0, kk1;
        int r, h;
        c0[0] = _mm256_add_epi32(b, _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        c0[1] = _mm256_add_epi32(b, _mm256_setr_epi32(8, 9, 10, 11, 12, 13, 14, 15));
        c1[0] = c1[1] = _mm256_set1_epi32((int)(uint32_t)(base >> 32));
        c2[0] = c2[1] = c3[0] = c3[1] = _mm256_setzero_si256();
        for (r = 0; r < 10; r++) {
            kk0 = _mm256_set1_epi32((int)k0); kk1 = _mm256_set1_epi32((int)k1);
            for (h = 0; h < 2; h++) {
                lo0 = fo_mulhilo8(c0[h], m0, &hi0);
                lo1 = fo_mulhilo8(c2[h], m1, &hi1);
                c0[h] = _mm256_xor_si256(_mm256_xor_si256(hi1, c1[h]), kk0);
                c2[h] = _mm256_xor_si256(_mm256_xor_si256(hi0, c3[h]), kk1);
                c1[h] = lo1; c3[h] = lo0;
            }
            k0 += FO_PHILOX_W0; k1 += FO_PHILOX_W1;
        }
        for (h = 0; h < 2; h++) {
            _mm256_storeu_si256((__m256i *)(w + 8 * h), c0[h]); _mm256_storeu_si256((__m256i *)(w + 16 + 8 * h), c1[h]);
            _mm256_storeu_si256((__m256i *)(w + 32 + 8 * h), c2[h]); _mm256_storeu_si256((__m256i *)(w + 48 + 8 * h), c3[h]);
        }
    }
    #else
    static inline void fo_philox4x32_10_x16(uint64_t base, uint32_t k0, uint32_t k1, uint32_t *w) {
        uint32_t c0[16], c1[16], c2[16], c3[16];
        int l, r;
        for (l = 0; l < 16; l++) {
            c0[l] = (uint32_t)base + (uint32_t)l; c1[l] = (uint32_t)(base >> 32); c2[l] = 0; c3[l] = 0;
        }
        for (r = 0; r < 10; r++) {
            #pragma omp simd
            for (l = 0; l < 16; l++) {
                uint64_t p0 = (uint64_t)FO_PHILOX_M0 * c0[l];
                uint64_t p1 = (uint64_t)FO_PHILOX_M1 * c2[l];
                uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1[l] ^ k0;
                uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3[l] ^ k1;
                c1[l] = (uint32_t)p1; c3[l] = (uint32_t)p0; c0[l] = n0; c2[l] = n2;
            }
            k0 += FO_PHILOX_W0; k1 += FO_PHILOX_W1;
        }
        for (l = 0; l < 16; l++) {
            w[l] = c0[l]; w[16 + l] = c1[l]; w[32 + l] = c2[l]; w[48 + l] = c3[l];
        }
    }
    #endif
    #ifndef FO_HAVE_GROUPS2
    static inline void fo_philox_groups2(uint64_t group, uint32_t k0, uint32_t k1, uint32_t *w) {
        fo_philox4x32_10_x16(group * 16, k0, k1, w);
        fo_philox4x32_10_x16((group + 1) * 16, k0, k1, w + 64);
    }
    #endif
    /* One block: the output of the KAT vectors (Random123 kat_vectors), for tests. */
    static inline void fo_philox4x32_10(const uint32_t *ctr, const uint32_t *key, uint32_t *out) {
        uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3], k0 = key[0], k1 = key[1];
        int r;
        for (r = 0; r < 10; r++) {
            uint64_t p0 = (uint64_t)FO_PHILOX_M0 * c0, p1 = (uint64_t)FO_PHILOX_M1 * c2;
            uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0, n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
            c1 = (uint32_t)p1; c3 = (uint32_t)p0; c0 = n0; c2 = n2;
            k0 += FO_PHILOX_W0; k1 += FO_PHILOX_W1;
        }
        out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
    }
    """
    void fo_philox4x32_10_x16(uint64_t base, uint32_t k0, uint32_t k1, uint32_t *w) noexcept nogil
    void fo_philox_groups2(uint64_t group, uint32_t k0, uint32_t k1, uint32_t *w) noexcept nogil
    void fo_philox4x32_10(const uint32_t *ctr, const uint32_t *key, uint32_t *out) noexcept nogil

# Elements per thread below which the backward scaling pass (dropout_apply) stays serial. Measured
# (min of 15, 2 cores, float32): 65536 elements took 0.023 ms on 1 thread and 0.016 ms on 2; 1M
# 0.28 vs 0.18 ms. The NumPy-stream forward pass is serial (see dropout_train); dropout_train_philox
# splits its groups of 64 elements among threads with the same grain.
GRAIN = 32768

cdef enum:
    # Philox layout: element g (= offset + i) is word (g % 64) // 16 of the Philox4x32-10 block with
    # counter (g // 64) * 16 + g % 16: each group of 64 consecutive elements is one call of
    # fo_philox4x32_10_x16, whose four output words are each 16 contiguous elements. Fixed by g alone.
    PHILOX_GROUP = 64


cdef bitgen_t *_bitgen_of(bit_generator) except NULL:
    """The C state behind a numpy.random.BitGenerator (its capsule, see numpy's Cython docs)."""
    cdef const char *name = "BitGenerator"
    if not isinstance(bit_generator, _BitGenerator):
        raise TypeError(f"bit_generator must be a numpy.random.BitGenerator, got {type(bit_generator).__name__}")
    capsule = bit_generator.capsule
    if not PyCapsule_IsValid(capsule, name):
        raise TypeError("bit_generator must be a numpy.random.BitGenerator (invalid capsule)")
    return <bitgen_t *> PyCapsule_GetPointer(capsule, name)


cdef void _train(bitgen_t *rng, const floating[::1] x, double p, floating s,
                 uint8_t[::1] mask, floating[::1] out) noexcept nogil:
    cdef Py_ssize_t i
    cdef uint8_t keep
    for i in range(x.shape[0]):
        keep = rng.next_double(rng.state) < p
        mask[i] = keep
        out[i] = x[i] * (keep * s)


def dropout_train(const floating[::1] x, double p, double scale, bit_generator,
                  uint8_t[::1] mask, floating[::1] out, int n_threads=1):
    """Draw the keep-mask and apply it in one serial pass: mask = (u < p), out = x * (mask * scale).

    x (IN), mask (OUT, uint8 0/1), out (OUT, may not alias x); scale is rounded to x's precision.
    Consumes x.size doubles from `bit_generator`, holding its lock like NumPy's own samplers.
    Serial on purpose: the draws must be sequential and cost ~10x the multiply. Measured on the
    shared, loaded 2-core machine (1M float32, PCG64, min of 41, interleaved): this fused loop
    3.6 ms; the same draws followed by a 2-thread scaling pass 19 ms (OpenMP's spinning workers
    compete with the serial draws). n_threads (>= 1) is checked like every kernel's and otherwise
    unused: the one contract for all kernels, and room for a parallel pass should one pay.
    """
    check_1d("mask", mask.shape[0], x.shape[0])
    check_1d("out", out.shape[0], x.shape[0])
    threads(n_threads)
    cdef bitgen_t *rng = _bitgen_of(bit_generator)
    with bit_generator.lock, nogil:
        _train(rng, x, p, <floating> scale, mask, out)


def dropout_apply(const floating[::1] x, const uint8_t[::1] mask, double scale,
                  floating[::1] out, int n_threads=1):
    """out = x * (mask * scale) elementwise, in x's precision (scale rounded to it first).

    x (IN), mask (IN, 0/1), out (OUT, may not alias x). The backward pass: dx = dout * mask / p.
    A dropped unit gives x * 0: +-0, or NaN when x is NaN/inf (as x * mask does in CS231n).
    """
    cdef floating s = <floating> scale
    cdef Py_ssize_t i, n = x.shape[0]
    check_1d("mask", mask.shape[0], n)
    check_1d("out", out.shape[0], n)
    n_threads = threads(n_threads)
    with nogil:
        for i in prange(n, schedule='static', num_threads=n_threads):
            out[i] = x[i] * (mask[i] * s)


cdef inline void _philox_apply(const uint32_t* w, Py_ssize_t lo, Py_ssize_t hi, Py_ssize_t at,
                               uint32_t lim, uint8_t none, const floating* x, floating s, uint8_t* mask,
                               floating* out) noexcept nogil:
    # Elements [lo, hi) of a group whose words are w[0..63] (0 <= lo < hi <= 64); element lo is x[at].
    cdef Py_ssize_t j
    cdef uint8_t keep
    for j in range(lo, hi):
        keep = (w[j] <= lim) & (none ^ 1)
        mask[at + j - lo] = keep
        out[at + j - lo] = x[at + j - lo] * (keep * s)


cdef inline void _philox_pair(uint64_t first, Py_ssize_t ngroups, Py_ssize_t k, uint64_t offset,
                              Py_ssize_t n, uint32_t k0, uint32_t k1, uint32_t lim, uint8_t none,
                              const floating* x, floating s, uint8_t* mask, floating* out) noexcept nogil:
    # Groups first + 2k and first + 2k + 1 (the second only if it exists): their elements in x run
    # from max(offset, 64 g) to min(offset + n, 64 g + 64).
    cdef uint32_t w[2 * PHILOX_GROUP]
    cdef Py_ssize_t q, t, lo, hi, at
    cdef uint64_t g
    fo_philox_groups2(first + <uint64_t>(2 * k), k0, k1, w)
    for q in range(2):
        t = 2 * k + q
        if t >= ngroups:
            break
        g = first + <uint64_t>t
        lo = <Py_ssize_t>(offset - g * PHILOX_GROUP) if t == 0 else 0
        hi = PHILOX_GROUP
        if t == ngroups - 1:
            hi = <Py_ssize_t>(offset + <uint64_t>(n - 1) - g * PHILOX_GROUP) + 1
        at = <Py_ssize_t>(g * PHILOX_GROUP + <uint64_t>lo - offset)
        _philox_apply(w + q * PHILOX_GROUP, lo, hi, at, lim, none, x, s, mask, out)


cdef inline uint64_t _threshold(double p) noexcept nogil:
    # T of the Philox mask rule "keep element g iff its 32-bit word < T": floor(p * 2**32) (exact:
    # a double times a power of two), 0 for p <= 0 or NaN, 2**32 for p >= 1. The twin's rule too.
    if not p > 0.0:
        return 0
    if p >= 1.0:
        return (<uint64_t>1) << 32
    return <uint64_t>(p * 4294967296.0)


def dropout_train_philox(const floating[::1] x, double p, double scale, uint64_t seed, uint64_t offset,
                         uint8_t[::1] mask, floating[::1] out, int n_threads):
    """Counter-based dropout: mask[i] = (word(seed, offset + i) < T), out = x * (mask * scale).

    word(seed, g) is word (g % 64) // 16 of Philox4x32-10 with key (seed mod 2**32, seed >> 32) and
    counter ((g // 64) * 16 + g % 16, 0, 0) (64-bit counter in the first two words, low word first);
    T = floor(p * 2**32) (0 for p <= 0, 2**32 for p >= 1), so P(keep) = T / 2**32 = p to within 2**-32. The mask of element g
    depends on (seed, g) only: the same for any thread count and SIMD variant, and a call with
    offset = a on x[a:b] reproduces elements [a, b) of a call with offset 0 on the whole x. Consumes
    no generator state. x (IN), mask (OUT, uint8 0/1), out (OUT, may not alias x); scale is rounded
    to x's precision. Parallel over pairs of 64-element groups (fixed by g, not by the thread count).
    """
    cdef Py_ssize_t n = x.shape[0]
    check_1d("mask", mask.shape[0], n)
    check_1d("out", out.shape[0], n)
    n_threads = threads(n_threads)
    if n and offset > ~(<uint64_t>0) - <uint64_t>(n - 1):
        raise ValueError(f"offset + x.size must be at most 2**64, got offset {offset} and {n} elements")
    if n == 0:
        return
    cdef uint64_t t = _threshold(p)
    cdef uint8_t none = t == 0
    cdef uint32_t lim = <uint32_t>(t - 1) if t else 0
    cdef uint32_t k0 = <uint32_t>seed, k1 = <uint32_t>(seed >> 32)
    cdef floating s = <floating>scale
    cdef uint64_t first = offset // PHILOX_GROUP, last = (offset + <uint64_t>(n - 1)) // PHILOX_GROUP
    cdef Py_ssize_t ngroups = <Py_ssize_t>(last - first) + 1, k
    for k in prange((ngroups + 1) // 2, nogil=True, schedule='static', num_threads=n_threads):
        _philox_pair(first, ngroups, k, offset, n, k0, k1, lim, none, &x[0], s, &mask[0], &out[0])


def _philox4x32_10(const uint32_t[::1] counter, const uint32_t[::1] key, uint32_t[::1] out):
    """One Philox4x32-10 block: out (4,) = Philox(counter (4,), key (2,)), Random123's function.
    Private: for the known-answer tests of the generator behind dropout_train_philox."""
    check_1d("counter", counter.shape[0], 4)
    check_1d("key", key.shape[0], 2)
    check_1d("out", out.shape[0], 4)
    fo_philox4x32_10(&counter[0], &key[0], &out[0])
