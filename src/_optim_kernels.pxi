# Fused, in-place optimizer updates: one pass over memory, no temporaries.
#
# Every function updates `param` and its state arrays in place, for float32 and float64 (one fused
# `floating` type), on 1-D C-contiguous memoryviews (callers pass `a.reshape(-1)`). Gradients are
# `const` so read-only gradients work. Python-float hyperparameters are converted ONCE to the array's
# precision before the loop, and derived constants (1 - beta, 1 - lr*wd, ...) are computed in double
# first, then converted: the NumPy twins in fastopt/reference/optim.py do exactly the same, in the
# same operation order, so float64 results agree to rounding and float32 to a few ulps.
# Per-step scalars (Adam's bias corrections, Adagrad's decayed lr) are computed by the caller, once
# per step, in double. A state buffer that the configuration does not use is passed EMPTY and never
# touched. The last argument is always n_threads (the caller picks it with
# fastopt._backend.threads_for(n, the rule's STEP_GRAIN)). Elementwise updates: results do not depend on it.
#
# The rule cores are C (src/_rule_cores.h): each rule's formula once, in explicit vectors of the
# build's width (GCC vector extensions: 16 floats / 8 doubles with AVX-512, 8 / 4 with AVX, 4 / 2 in
# SSE2), blocks of 16 floats / 8 doubles with every array's block loaded before any is stored, the
# block loop unrolled by 8 blocks. The tracked step (update/weight ratio, below) and the untracked
# step are the same loop, with and without the lane adds: the same parameters and state by
# construction. The rule's default options run through a branch-free copy; other flag words
# through a generic copy whose loop-invariant tests GCC unswitches. `maximize` is a multiply by -1
# (bitwise the same as negation except for a NaN's sign bit, which the multiply keeps and the NumPy
# twin's negation flips: NaN either way). These cores replaced the Cython per-element loops (2026-12-03):
# the untracked step at 16M, 1 thread, kernel alone, one run: float32 -10% to +4% of the old time
# per rule (AVX-512; SSE2 -9% to 0), float64 -7% to 0 (BENCHMARKS.md, "One core per rule").
#
# Layout: NumPy places big arrays at the same offset within a 4 KiB page, so element i of every
# array shares its low 12 address bits, and a load that follows a store with the same low bits
# closely waits for it (4K aliasing). The block loads above recover most of that loss, and the
# optimizer API also places its state arrays at distinct page offsets (fastopt/optim/_base.py,
# placed_array). Every block reads every array before writing any of it.
#
# Options shared by every torch-style rule (fastopt/optim/_base.py computes them once per step):
#   grad_scale  the gradient is read as grad_scale * grad (global-norm clipping's factor, and -1
#               for `maximize`, folded into one multiply: 1 and -1 are exact, so without clipping
#               the bits are those of plain (negated) gradients);
#   param_avg   the parameter's running average (EMA / Polyak), updated from the NEW parameter in
#               the same pass: avg += avg_weight * (p_new - avg); empty (never touched) when off.
# Every loop reads element i of every array before writing any of it.
from cython cimport floating
from cython.parallel cimport prange, parallel, threadid
from libc.stdlib cimport malloc, calloc, free
from libc.math cimport pow as c_pow, fabs as c_fabs, sqrt as c_sqrt, INFINITY

from _contract cimport threads

# Elements per thread below which a second thread costs more than it saves; the caller passes
# n_threads = fastopt._backend.threads_for(n, GRAIN), i.e. two threads from n >= 2*GRAIN.
# Measured (benchmarks/optim_kernels_roofline.py --grain, float32, 2 threads over 1 thread):
#   2-core Zen 1, shared, min of 9:  n=32k Adam 1.03x SGD 0.69x;  n=64k Adam 1.20x SGD 0.90x;
#     n=128k Adam 1.28x SGD 1.60x;  n=256k Adam 1.78x SGD 1.71x;  n=1M Adam 1.90x SGD 1.68x.
#   2-core EPYC family 26 (Zen 5, AVX-512; the avx2 kernels), other jobs paused, min of 7: n=16k Adam 0.84x SGD 0.78x;
#     n=32k 1.07x / 1.06x;  n=64k 1.15x / 1.18x;  n=128k 1.74x / 1.23x;  n=256k 1.83x / 1.24x.
# Those splits were by whole 16384-element chunks: below 32k there was ONE chunk, so "2 threads"
# could not help there. With the even split (_drive), 2-core Intel Xeon under KVM (AVX-512 build),
# loaded (load 5), wall clock, min of 41 (benchmarks/results/2026-12-02d-step/grain.txt):
#   Adam f32 n=10k 1.16x, 20k 1.38x, 40k 1.59x, 65k 1.91x;  Adam f64 10k 1.69x, 20k 1.76x;
#   SGD momentum f32 10k 0.85x, 20k 1.12x, 40k 1.38x;  SGD f64 10k 1.12x, 20k 1.35x.
# 10240 per thread (two threads from 20480 elements): every rule measured gains from there. Not
# re-measured on the EPYCs. GRAIN stays the grain of norm_partial and scale_.
GRAIN = 10240

# The update kernels' grains, per rule (its <rule>_step name) and dtype: (float32, float64) elements
# per thread. A second thread costs a fixed ~0.8-2 us here (fork and join), so it pays from a
# size inversely proportional to the rule's cost per element: SGD's few flops need ~20k float32
# elements, NAdam's ~4k, and float64 (half the lanes) about a third of float32's. Measured on the
# 2-core Xeon (KVM), multi kernel alone, 1 thread over 2, min of 9 (benchmarks/optim_grain.py;
# benchmarks/results/2026-12-04b-intel/grain.txt and grain_run2.txt): each grain is half the size
# from which the ratio was >= 1 in both runs (they differ by up to ~0.1 near the crossing), so that
# no rule splits where it is slower. At 10k float64 elements Adam ran 1.5x faster on two threads;
# the single GRAIN of before kept it on one (and split float32 SGD at 20k: 0.86x). Other machines
# will want other numbers; the rule of a fixed launch cost over a per-element cost holds.
STEP_GRAIN = {"sgd_step": (12288, 6144), "velocity_step": (12288, 6144), "adagrad_step": (6144, 1536),
              "rmsprop_step": (6656, 1536), "adam_step": (6656, 2048), "nadam_step": (3072, 1024),
              "radam_step": (8192, 5632), "adamax_step": (8704, 4608), "adadelta_step": (6144, 2048),
              "lion_step": (6656, 1024)}

# The norm pass sums fixed blocks of NORM_BLOCK elements (each in order, in double) and then adds
# the block sums in order: the partition depends on n only, so the result is bitwise the same for
# any thread count.
cdef enum:
    _NORM_BLOCK = 16384
NORM_BLOCK = _NORM_BLOCK


cdef int _check_sizes(Py_ssize_t n, str what, Py_ssize_t got, bint used) except -1:
    # A wrong length would read or write out of bounds: refuse it even though the API checks too.
    if used and got != n:
        raise ValueError(f"{what} must have {n} elements (the size of param), got {got}")
    if not used and got != 0 and got != n:
        raise ValueError(f"{what} is unused here and must be empty (or of size {n}), got {got} elements")
    return 0


cdef inline floating* _ptr(floating[::1] a, bint used) noexcept:
    # NULL when unused or empty: &a[0] of an empty view is out of bounds (raises in FASTOPT_DEBUG builds).
    return &a[0] if used and a.shape[0] else NULL


# ------------------------------------------------------------------------------ one pass over many tensors
# A step runs as chunks: every tensor ("segment": a parameter and its gradient and state) is cut
# into fixed chunks of NORM_BLOCK elements, and one parallel region over the chunks of all
# segments (_drive) runs each through the rule's core (_rule_range: fo_<rule>_range_f / _d). The single-tensor
# kernels (adam_step, sgd_step) are one segment; the multi-tensor kernels (adam_multi, sgd_multi)
# run every segment of a StepPlan in ONE call: no per-tensor Python, no per-tensor dispatch.
# Chunk boundaries depend on the sizes only, so per-chunk reductions (the update/weight ratio,
# below) are bitwise independent of the thread count.
#
# Update/weight ratio (issue 12), when tracked: the chunk's p_old and p_new, already in registers
# in the rule's core, go into 8 double lanes of sum p_old^2 and 8 of sum (p_new - p_old)^2 in the
# same loop (src/_ratio_lanes.h; float32 first through float partial sums over 8 blocks of 16
# elements: relative error of the ratio <= 9 * 2^-24 + n * 2^-53). Element k of a chunk feeds lane
# k % 8, each lane in element order, and the lanes are added in lane order at the chunk's end: the
# same bits in the SSE2, AVX2 and AVX-512 builds and for any thread count (-ffp-contract=off).
# One pass over memory. Per segment the chunk sums are added in chunk order:
# ratio = sqrt(sum d^2) / sqrt(sum p_old^2), 0 when p_old is all zeros.
# Before (branch ratio, third pass): tiles of 128 elements, p_old copied to L1 and summed, the
# untracked core, then d^2 from L1: +25% to +78% at 16M. Inside the Cython cores (branch optim2)
# or the same C helper called from Adam's float32 blocks: GCC scalarized the block (+120% to +250%).
cdef struct _Seg:
    char* p            # param (written)
    const char* g      # grad (read)
    char* s0           # the rule's state arrays in kernel-argument order, NULL when unused
    char* s1
    char* s2
    char* avg          # param_avg, NULL when off
    Py_ssize_t n

cdef struct _Chunk:
    Py_ssize_t seg
    Py_ssize_t lo
    Py_ssize_t hi

cdef enum:
    _MAX_CONSTS = 16
    _RULE_SGD = 0
    _RULE_ADAM = 1
    _RULE_VELOCITY = 2
    _RULE_ADAGRAD = 3
    _RULE_RMSPROP = 4
    _RULE_NADAM = 5
    _RULE_RADAM = 6
    _RULE_ADAMAX = 7
    _RULE_ADADELTA = 8
    _RULE_LION = 9


cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    static inline int fo_team_size(void) { return omp_get_num_threads(); }
    #else
    static inline int fo_team_size(void) { return 1; }
    #endif
    """
    int fo_team_size() noexcept nogil    # threads in the current parallel region (1 outside one)


cdef extern from "_rule_cores.h" nogil:
    # fo_<rule>_range_f / _d: the rule on elements lo..hi-1 of one tensor; with acc (not NULL) also
    # the ratio's two sums of that chunk (acc[0] = sum p_old^2, acc[1] = sum (p_new - p_old)^2).
    void fo_sgd_range_f(float* p, const float* g, float* s0, float* s1, float* s2, float* avg,
                       long lo, long hi, const double* c, int flags, double* acc)
    void fo_sgd_range_d(double* p, const double* g, double* s0, double* s1, double* s2, double* avg,
                       long lo, long hi, const double* c, int flags, double* acc)
    void fo_velocity_range_f(float* p, const float* g, float* s0, float* s1, float* s2, float* avg,
                       long lo, long hi, const double* c, int flags, double* acc)
    void fo_velocity_range_d(double* p, const double* g, double* s0, double* s1, double* s2, double* avg,
                       long lo, long hi, const double* c, int flags, double* acc)
    void fo_adagrad_range_f(float* p, const float* g, float* s0, float* s1, float* s2, float* avg,
                       long lo, long hi, const double* c, int flags, double* acc)
    void fo_adagrad_range_d(double* p, const double* g, double* s0, double* s1, double* s2, double* avg,
                       long lo, long hi, const double* c, int flags, double* acc)
    void fo_rmsprop_range_f(float* p, const float* g, float* s0, float* s1, float* s2, float* avg,
                       long lo, long hi, const double* c, int flags, double* acc)
    void fo_rmsprop_range_d(double* p, const double* g, double* s0, double* s1, double* s2, double* avg,
                       long lo, long hi, const double* c, int flags, double* acc)
    void fo_adam_range_f(float* p, const float* g, float* s0, float* s1, float* s2, float* avg,
                       long lo, long hi, const double* c, int flags, double* acc)
    void fo_adam_range_d(double* p, const double* g, double* s0, double* s1, double* s2, double* avg,
                       long lo, long hi, const double* c, int flags, double* acc)
    void fo_nadam_range_f(float* p, const float* g, float* s0, float* s1, float* s2, float* avg,
                       long lo, long hi, const double* c, int flags, double* acc)
    void fo_nadam_range_d(double* p, const double* g, double* s0, double* s1, double* s2, double* avg,
                       long lo, long hi, const double* c, int flags, double* acc)
    void fo_radam_range_f(float* p, const float* g, float* s0, float* s1, float* s2, float* avg,
                       long lo, long hi, const double* c, int flags, double* acc)
    void fo_radam_range_d(double* p, const double* g, double* s0, double* s1, double* s2, double* avg,
                       long lo, long hi, const double* c, int flags, double* acc)
    void fo_adamax_range_f(float* p, const float* g, float* s0, float* s1, float* s2, float* avg,
                       long lo, long hi, const double* c, int flags, double* acc)
    void fo_adamax_range_d(double* p, const double* g, double* s0, double* s1, double* s2, double* avg,
                       long lo, long hi, const double* c, int flags, double* acc)
    void fo_adadelta_range_f(float* p, const float* g, float* s0, float* s1, float* s2, float* avg,
                       long lo, long hi, const double* c, int flags, double* acc)
    void fo_adadelta_range_d(double* p, const double* g, double* s0, double* s1, double* s2, double* avg,
                       long lo, long hi, const double* c, int flags, double* acc)
    void fo_lion_range_f(float* p, const float* g, float* s0, float* s1, float* s2, float* avg,
                       long lo, long hi, const double* c, int flags, double* acc)
    void fo_lion_range_d(double* p, const double* g, double* s0, double* s1, double* s2, double* avg,
                       long lo, long hi, const double* c, int flags, double* acc)

# The rule cores in C take the chunk's pointers and bounds (the float or double ones).
ctypedef void (*_range_f_t)(float*, const float*, float*, float*, float*, float*, long, long, const double*,
                            int, double*) noexcept nogil
ctypedef void (*_range_d_t)(double*, const double*, double*, double*, double*, double*, long, long,
                            const double*, int, double*) noexcept nogil


cdef inline void _rule_range(floating* dummy, const _Seg* s, Py_ssize_t lo, Py_ssize_t hi, int rule,
                             const double* c, int flags, double* acc) noexcept nogil:
    # The rule's core on elements lo..hi-1 of one segment (dummy only selects the precision); with
    # acc, also acc[0] = sum p_old^2, acc[1] = sum (p_new - p_old)^2 (lo then a chunk's start).
    cdef _range_f_t f = NULL
    cdef _range_d_t d = NULL
    if rule == _RULE_ADAM:
        f, d = fo_adam_range_f, fo_adam_range_d
    elif rule == _RULE_SGD:
        f, d = fo_sgd_range_f, fo_sgd_range_d
    elif rule == _RULE_VELOCITY:
        f, d = fo_velocity_range_f, fo_velocity_range_d
    elif rule == _RULE_ADAGRAD:
        f, d = fo_adagrad_range_f, fo_adagrad_range_d
    elif rule == _RULE_RMSPROP:
        f, d = fo_rmsprop_range_f, fo_rmsprop_range_d
    elif rule == _RULE_NADAM:
        f, d = fo_nadam_range_f, fo_nadam_range_d
    elif rule == _RULE_RADAM:
        f, d = fo_radam_range_f, fo_radam_range_d
    elif rule == _RULE_ADAMAX:
        f, d = fo_adamax_range_f, fo_adamax_range_d
    elif rule == _RULE_ADADELTA:
        f, d = fo_adadelta_range_f, fo_adadelta_range_d
    else:
        f, d = fo_lion_range_f, fo_lion_range_d
    if floating is float:
        f(<float*>s.p, <const float*>s.g, <float*>s.s0, <float*>s.s1, <float*>s.s2, <float*>s.avg, lo, hi, c,
          flags, acc)
    else:
        d(<double*>s.p, <const double*>s.g, <double*>s.s0, <double*>s.s1, <double*>s.s2, <double*>s.avg, lo, hi,
          c, flags, acc)


cdef inline void _seg(_Seg* s, floating[::1] param, const floating[::1] grad, floating[::1] s0,
                      floating[::1] s1, floating[::1] s2, floating[::1] avg, bint u0, bint u1, bint u2,
                      bint ua) noexcept:
    # A single-tensor kernel's segment from its (size-checked) buffers; unused ones become NULL.
    cdef Py_ssize_t n = param.shape[0]
    s.p = <char*>_ptr(param, True)
    s.g = <const char*>(&grad[0] if n else NULL)
    s.s0, s.s1, s.s2 = <char*>_ptr(s0, u0), <char*>_ptr(s1, u1), <char*>_ptr(s2, u2)
    s.avg = <char*>_ptr(avg, ua)
    s.n = n


cdef inline void _run_chunk(floating* dummy, const _Seg* segs, const _Chunk* ch, int rule, const double* c,
                            int flags, double* acc) noexcept nogil:
    # One chunk through the rule; with acc (its 2 slots of the sums), the ratio's two sums too.
    _rule_range(dummy, &segs[ch.seg], ch.lo, ch.hi, rule, c, flags, acc)


cdef inline Py_ssize_t _boundary(const _Chunk* chunks, Py_ssize_t nchunk, Py_ssize_t target) noexcept nogil:
    # Where a thread's share starts: element `target` of the step (chunks in order) rounded down
    # to a multiple of 16 elements into its chunk (chunks start at multiples of NORM_BLOCK, so that
    # is a multiple of 16 into its tensor too: whole float32 blocks); the total past the end.
    cdef Py_ssize_t b, off = 0, size
    for b in range(nchunk):
        size = chunks[b].hi - chunks[b].lo
        if target < off + size:
            return off + ((target - off) & ~(<Py_ssize_t>15))
        off += size
    return off


cdef void _run_share(floating* dummy, const _Seg* segs, const _Chunk* chunks, Py_ssize_t nchunk, int rule,
                     const double* c, int flags, Py_ssize_t begin, Py_ssize_t end) noexcept nogil:
    # Elements begin..end-1 of the step (chunks in order) through the rule, piece by piece.
    cdef Py_ssize_t b, off = 0, size, lo, hi
    for b in range(nchunk):
        if off >= end:
            break
        size = chunks[b].hi - chunks[b].lo
        lo = max(begin, off)
        hi = min(end, off + size)
        if lo < hi:
            _rule_range(dummy, &segs[chunks[b].seg], chunks[b].lo + lo - off, chunks[b].lo + hi - off, rule, c,
                        flags, NULL)
        off += size


cdef void _drive(floating* dummy, const _Seg* segs, const _Chunk* chunks, Py_ssize_t nchunk, int rule,
                 const double* c, int flags, double* sums, int n_threads) noexcept nogil:
    # Every chunk through the rule; with sums (2 per chunk), the ratio's two sums per chunk.
    # At one thread no parallel region: even then prange enters one, and libgomp builds and frees a
    # team per call (malloc/free and futex; perf of an 8-element adam_multi loop put ~25% of the call
    # there). Same chunks, same order, every chunk independent: the same bits either way.
    # Untracked, several threads: each takes an equal share of the elements (boundaries at whole
    # blocks), not whole chunks: a prange over 7 chunks (1e5 elements) gave one thread 4 of them
    # and the other 3 (one short), so two threads were at best 1.5x one. The rules are elementwise:
    # any split gives the same bits. Tracked, the chunks stay the unit (their sums are the result).
    # One parallel region, each thread its share by thread number, not a prange: the prange's
    # worksharing loop adds a barrier of its own before the region's, and on the 2-vCPU Xeon a
    # region over 64 elements cost 1.28 us over one thread as a prange, 0.78 us so (the size-1e4
    # float64 Adam step: 9.1 -> 8.3 us at 2 threads).
    cdef Py_ssize_t b, t = 0, nt = 1, total = 0
    if n_threads <= 1:
        for b in range(nchunk):
            _run_chunk(dummy, segs, &chunks[b], rule, c, flags, &sums[2 * b] if sums != NULL else NULL)
        return
    if sums == NULL:
        for b in range(nchunk):
            total += chunks[b].hi - chunks[b].lo
        with parallel(num_threads=n_threads):
            t = threadid()
            nt = fo_team_size()
            _run_share(dummy, segs, chunks, nchunk, rule, c, flags,
                       _boundary(chunks, nchunk, total * t // nt),
                       _boundary(chunks, nchunk, total * (t + 1) // nt))
        return
    with parallel(num_threads=n_threads):
        t = threadid()
        nt = fo_team_size()
        _run_chunks(dummy, segs, chunks, nchunk * t // nt, nchunk * (t + 1) // nt, rule, c, flags, sums)


cdef inline void _run_chunks(floating* dummy, const _Seg* segs, const _Chunk* chunks, Py_ssize_t lo, Py_ssize_t hi,
                             int rule, const double* c, int flags, double* sums) noexcept nogil:
    # chunks lo..hi-1 in order, each with its two ratio sums
    cdef Py_ssize_t b
    for b in range(lo, hi):
        _run_chunk(dummy, segs, &chunks[b], rule, c, flags, &sums[2 * b])


cdef int _chunk_table(const _Seg* segs, Py_ssize_t nseg, _Chunk** out) except -1:
    # The chunks of every segment, in order; returns their count (*out is malloc'ed, or NULL).
    cdef Py_ssize_t k, lo, count = 0
    for k in range(nseg):
        count += (segs[k].n + _NORM_BLOCK - 1) // _NORM_BLOCK
    out[0] = <_Chunk*>malloc(max(count, 1) * sizeof(_Chunk))
    if out[0] == NULL:
        raise MemoryError()
    count = 0
    for k in range(nseg):
        lo = 0
        while lo < segs[k].n:
            out[0][count].seg, out[0][count].lo, out[0][count].hi = k, lo, min(lo + _NORM_BLOCK, segs[k].n)
            lo += _NORM_BLOCK
            count += 1
    return count


cdef int _run_one(_Seg* seg, floating* dummy, int rule, const double* c, int flags, int n_threads) except -1:
    # A single-tensor kernel: its one segment's chunks, no ratio.
    cdef _Chunk* chunks = NULL
    cdef Py_ssize_t nchunk = _chunk_table(seg, 1, &chunks)
    with nogil:
        _drive(dummy, seg, chunks, nchunk, rule, c, flags, NULL, n_threads)
    free(chunks)
    return 0


cdef enum:
    _SGD_WD = 1
    _SGD_MOM = 2
    _SGD_FIRST = 4
    _SGD_NESTEROV = 16


cdef int _sgd_consts(double* c, double lr, double weight_decay, double momentum, double dampening,
                     bint nesterov, bint maximize, bint first_step, double grad_scale, double avg_weight,
                     bint use_avg) noexcept:
    c[0] = -grad_scale if maximize else grad_scale
    c[1] = lr
    c[2] = weight_decay
    c[3] = momentum
    c[4] = 1.0 - dampening
    c[5] = avg_weight
    return ((_SGD_WD if weight_decay != 0 else 0) | (_SGD_MOM if momentum != 0 else 0)
            | (_SGD_FIRST if first_step else 0) | (_SGD_NESTEROV if nesterov else 0) | (_AVG if use_avg else 0))


def sgd_step(floating[::1] param not None, const floating[::1] grad not None, floating[::1] momentum_buffer not None,
             floating[::1] param_avg not None, double lr, double weight_decay, double momentum,
             double dampening, bint nesterov, bint maximize, bint first_step,
             double grad_scale, double avg_weight, int n_threads):
    """torch.optim.SGD step, in place. momentum_buffer is empty when momentum == 0."""
    cdef Py_ssize_t n = param.shape[0]
    n_threads = threads(n_threads)
    _check_sizes(n, "grad", grad.shape[0], True)
    _check_sizes(n, "momentum_buffer", momentum_buffer.shape[0], momentum != 0)
    cdef bint use_avg = param_avg.shape[0] != 0
    _check_sizes(n, "param_avg", param_avg.shape[0], use_avg)
    cdef double c[_MAX_CONSTS]
    cdef int flags = _sgd_consts(c, lr, weight_decay, momentum, dampening, nesterov, maximize, first_step,
                                 grad_scale, avg_weight, use_avg)
    cdef _Seg seg
    _seg(&seg, param, grad, momentum_buffer, param, param, param_avg, momentum != 0, False, False, use_avg)
    _run_one(&seg, &param[0] if n else NULL, _RULE_SGD, c, flags, n_threads)


# A rule's per-tensor kernel (<rule>_step) and its multi-tensor kernel (<rule>_multi, at the end
# of this file) share three pieces: _<rule>_consts (its constants in double, in the order its
# core reads them, and its flags), the core _<rule>_range (elements lo..hi-1 of one tensor; the
# constants converted once to the precision) and the sizes its state arrays must have.

cdef int _velocity_consts(double* c, double lr, double mu, bint nesterov) noexcept:
    c[0] = lr
    c[1] = mu
    c[2] = 1.0 + mu
    return 1 if nesterov else 0


def velocity_step(floating[::1] param not None, const floating[::1] grad not None, floating[::1] velocity not None,
                  double lr, double mu, bint nesterov, int n_threads):
    """CS231n momentum (sgd_momentum) step, in place; nesterov uses the lecture-notes form."""
    cdef Py_ssize_t n = param.shape[0]
    n_threads = threads(n_threads)
    _check_sizes(n, "grad", grad.shape[0], True)
    _check_sizes(n, "velocity", velocity.shape[0], True)
    cdef double c[_MAX_CONSTS]
    cdef int flags = _velocity_consts(c, lr, mu, nesterov)
    cdef _Seg seg
    _seg(&seg, param, grad, velocity, param, param, param, True, False, False, False)
    _run_one(&seg, &param[0] if n else NULL, _RULE_VELOCITY, c, flags, n_threads)


cdef int _adagrad_consts(double* c, double clr, double weight_decay, double eps, bint maximize,
                         double grad_scale, double avg_weight, bint use_avg) noexcept:
    c[0] = -grad_scale if maximize else grad_scale
    c[1] = clr
    c[2] = weight_decay
    c[3] = eps
    c[4] = avg_weight
    return (1 if weight_decay != 0 else 0) | (_AVG if use_avg else 0)


def adagrad_step(floating[::1] param not None, const floating[::1] grad not None, floating[::1] state_sum not None,
                 floating[::1] param_avg not None, double clr, double weight_decay, double eps,
                 bint maximize, double grad_scale, double avg_weight, int n_threads):
    """torch.optim.Adagrad step, in place; clr = lr / (1 + (step - 1) * lr_decay) from the caller."""
    cdef Py_ssize_t n = param.shape[0]
    n_threads = threads(n_threads)
    _check_sizes(n, "grad", grad.shape[0], True)
    _check_sizes(n, "state_sum", state_sum.shape[0], True)
    cdef bint use_avg = param_avg.shape[0] != 0
    _check_sizes(n, "param_avg", param_avg.shape[0], use_avg)
    cdef double c[_MAX_CONSTS]
    cdef int flags = _adagrad_consts(c, clr, weight_decay, eps, maximize, grad_scale, avg_weight, use_avg)
    cdef _Seg seg
    _seg(&seg, param, grad, state_sum, param, param, param_avg, True, False, False, use_avg)
    _run_one(&seg, &param[0] if n else NULL, _RULE_ADAGRAD, c, flags, n_threads)


cdef int _rmsprop_consts(double* c, double lr, double alpha, double eps, double weight_decay, double momentum,
                         bint centered, bint maximize, double grad_scale, double avg_weight,
                         bint use_avg) noexcept:
    c[0] = -grad_scale if maximize else grad_scale
    c[1] = lr
    c[2] = alpha
    c[3] = 1.0 - alpha
    c[4] = eps
    c[5] = weight_decay
    c[6] = momentum
    c[7] = avg_weight
    return ((1 if weight_decay != 0 else 0) | (2 if centered else 0) | (4 if momentum > 0 else 0)
            | (_AVG if use_avg else 0))


def rmsprop_step(floating[::1] param not None, const floating[::1] grad not None, floating[::1] square_avg not None,
                 floating[::1] grad_avg not None, floating[::1] momentum_buffer not None, floating[::1] param_avg not None,
                 double lr, double alpha, double eps, double weight_decay, double momentum,
                 bint centered, bint maximize, double grad_scale, double avg_weight, int n_threads):
    """torch.optim.RMSprop step, in place. grad_avg is empty unless centered, momentum_buffer
    empty unless momentum > 0."""
    cdef Py_ssize_t n = param.shape[0]
    n_threads = threads(n_threads)
    _check_sizes(n, "grad", grad.shape[0], True)
    _check_sizes(n, "square_avg", square_avg.shape[0], True)
    _check_sizes(n, "grad_avg", grad_avg.shape[0], centered)
    _check_sizes(n, "momentum_buffer", momentum_buffer.shape[0], momentum > 0)
    cdef bint use_avg = param_avg.shape[0] != 0
    _check_sizes(n, "param_avg", param_avg.shape[0], use_avg)
    cdef double c[_MAX_CONSTS]
    cdef int flags = _rmsprop_consts(c, lr, alpha, eps, weight_decay, momentum, centered, maximize, grad_scale,
                                     avg_weight, use_avg)
    cdef _Seg seg
    _seg(&seg, param, grad, square_avg, grad_avg, momentum_buffer, param_avg, True, centered, momentum > 0,
         use_avg)
    _run_one(&seg, &param[0] if n else NULL, _RULE_RMSPROP, c, flags, n_threads)


# Adam's constants, in double, in the order its core reads them (FO_ADAM_CONSTS: c[...]), and its flags.
cdef enum:
    _ADAM_L2 = 1
    _ADAM_DECAY = 2
    _ADAM_AMSGRAD = 4
    _AVG = 8          # every rule: param_avg is updated


cdef int _adam_consts(double* c, double lr, double beta1, double beta2, double eps, double weight_decay,
                      double step_size, double bias_correction2_sqrt, bint decoupled, bint amsgrad,
                      bint maximize, double grad_scale, double avg_weight, bint use_avg) noexcept:
    cdef bint decay_param = weight_decay != 0 and decoupled
    c[0] = -grad_scale if maximize else grad_scale
    c[1] = 1.0 - beta1
    c[2] = beta2
    c[3] = 1.0 - beta2
    c[4] = eps
    c[5] = weight_decay
    c[6] = (1.0 - lr * weight_decay) if decay_param else 1.0
    c[7] = step_size
    # sqrt(v) / bc2_sqrt as sqrt(v) * (1 / bc2_sqrt): a multiply instead of a divide per element.
    c[8] = 1.0 / bias_correction2_sqrt
    c[9] = avg_weight
    return ((_ADAM_L2 if weight_decay != 0 and not decoupled else 0) | (_ADAM_DECAY if decay_param else 0)
            | (_ADAM_AMSGRAD if amsgrad else 0) | (_AVG if use_avg else 0))


def adam_step(floating[::1] param not None, const floating[::1] grad not None, floating[::1] exp_avg not None,
              floating[::1] exp_avg_sq not None, floating[::1] max_exp_avg_sq not None, floating[::1] param_avg not None,
              double lr, double beta1, double beta2, double eps, double weight_decay,
              double step_size, double bias_correction2_sqrt,
              bint decoupled, bint amsgrad, bint maximize, double grad_scale, double avg_weight,
              int n_threads):
    """torch.optim.Adam / AdamW step (decoupled: AdamW's weight decay, torch 2.13's
    Adam(decoupled_weight_decay=True)), in place.

    The caller passes step_size = lr / (1 - beta1**t) and bias_correction2_sqrt = sqrt(1 - beta2**t)
    (double, once per step). max_exp_avg_sq is empty unless amsgrad. CS231n's adam is this with
    weight_decay = 0.
    """
    cdef Py_ssize_t n = param.shape[0]
    n_threads = threads(n_threads)
    _check_sizes(n, "grad", grad.shape[0], True)
    _check_sizes(n, "exp_avg", exp_avg.shape[0], True)
    _check_sizes(n, "exp_avg_sq", exp_avg_sq.shape[0], True)
    _check_sizes(n, "max_exp_avg_sq", max_exp_avg_sq.shape[0], amsgrad)
    cdef bint use_avg = param_avg.shape[0] != 0
    _check_sizes(n, "param_avg", param_avg.shape[0], use_avg)
    cdef double c[_MAX_CONSTS]
    cdef int flags = _adam_consts(c, lr, beta1, beta2, eps, weight_decay, step_size, bias_correction2_sqrt,
                                  decoupled, amsgrad, maximize, grad_scale, avg_weight, use_avg)
    cdef _Seg seg
    _seg(&seg, param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, param_avg, True, True, amsgrad, use_avg)
    _run_one(&seg, &param[0] if n else NULL, _RULE_ADAM, c, flags, n_threads)


# ------------------------------------------------------------------------------ rules added in issue 10
# torch 2.13's single-tensor formulas, in torch's operation order (see fastopt/reference/optim.py);
# scalars that torch computes per step in Python are computed by the caller in double.
cdef enum:
    _WD_L2 = 1         # weight decay as L2 (g += wd * p)
    _WD_DECAY = 2      # decoupled weight decay (p *= 1 - lr * wd)


cdef inline int _wd_flags(double weight_decay, bint decoupled) noexcept:
    if weight_decay == 0:
        return 0
    return _WD_DECAY if decoupled else _WD_L2


cdef int _nadam_consts(double* c, double lr, double beta1, double beta2, double eps, double weight_decay,
                       double bias_correction2, double grad_coef, double exp_avg_coef, bint decoupled,
                       bint maximize, double grad_scale, double avg_weight, bint use_avg) noexcept:
    c[0] = -grad_scale if maximize else grad_scale
    c[1] = 1.0 - beta1
    c[2] = beta2
    c[3] = 1.0 - beta2
    c[4] = eps
    c[5] = weight_decay
    c[6] = 1.0 - lr * weight_decay
    c[7] = bias_correction2
    c[8] = grad_coef
    c[9] = exp_avg_coef
    c[10] = avg_weight
    return _wd_flags(weight_decay, decoupled) | (_AVG if use_avg else 0)


def nadam_step(floating[::1] param not None, const floating[::1] grad not None, floating[::1] exp_avg not None,
               floating[::1] exp_avg_sq not None, floating[::1] param_avg not None,
               double lr, double beta1, double beta2, double eps, double weight_decay,
               double bias_correction2, double grad_coef, double exp_avg_coef,
               bint decoupled, bint maximize, double grad_scale, double avg_weight, int n_threads):
    """torch.optim.NAdam step, in place. Per step the caller passes bias_correction2 = 1 - beta2**t,
    grad_coef = -lr * (1 - mu_t) / (1 - mu_product_t) and
    exp_avg_coef = -lr * mu_{t+1} / (1 - mu_product_t * mu_{t+1})."""
    cdef Py_ssize_t n = param.shape[0]
    n_threads = threads(n_threads)
    _check_sizes(n, "grad", grad.shape[0], True)
    _check_sizes(n, "exp_avg", exp_avg.shape[0], True)
    _check_sizes(n, "exp_avg_sq", exp_avg_sq.shape[0], True)
    cdef bint use_avg = param_avg.shape[0] != 0
    _check_sizes(n, "param_avg", param_avg.shape[0], use_avg)
    cdef double c[_MAX_CONSTS]
    cdef int flags = _nadam_consts(c, lr, beta1, beta2, eps, weight_decay, bias_correction2, grad_coef,
                                   exp_avg_coef, decoupled, maximize, grad_scale, avg_weight, use_avg)
    cdef _Seg seg
    _seg(&seg, param, grad, exp_avg, exp_avg_sq, param, param_avg, True, True, False, use_avg)
    _run_one(&seg, &param[0] if n else NULL, _RULE_NADAM, c, flags, n_threads)


cdef int _radam_consts(double* c, double lr, double beta1, double beta2, double eps, double weight_decay,
                       double bias_correction1, double bias_correction2_sqrt, double rect, bint rectified,
                       bint decoupled, bint maximize, double grad_scale, double avg_weight, bint use_avg) noexcept:
    c[0] = -grad_scale if maximize else grad_scale
    c[1] = 1.0 - beta1
    c[2] = beta2
    c[3] = 1.0 - beta2
    c[4] = eps
    c[5] = weight_decay
    c[6] = 1.0 - lr * weight_decay
    # m / bc1 * lr as m * (lr / bc1), and sqrt(bc2) * rect folded: one divide per element, not three.
    c[7] = lr / bias_correction1
    c[8] = bias_correction2_sqrt * rect
    c[9] = avg_weight
    return _wd_flags(weight_decay, decoupled) | (4 if rectified else 0) | (_AVG if use_avg else 0)


def radam_step(floating[::1] param not None, const floating[::1] grad not None, floating[::1] exp_avg not None,
               floating[::1] exp_avg_sq not None, floating[::1] param_avg not None,
               double lr, double beta1, double beta2, double eps, double weight_decay,
               double bias_correction1, double bias_correction2_sqrt, double rect,
               bint rectified, bint decoupled, bint maximize, double grad_scale, double avg_weight,
               int n_threads):
    """torch.optim.RAdam step, in place. Per step the caller passes bias_correction1 = 1 - beta1**t,
    bias_correction2_sqrt = sqrt(1 - beta2**t), rectified = (rho_t > 5) and rect, the variance
    rectification term (used only when rectified)."""
    cdef Py_ssize_t n = param.shape[0]
    n_threads = threads(n_threads)
    _check_sizes(n, "grad", grad.shape[0], True)
    _check_sizes(n, "exp_avg", exp_avg.shape[0], True)
    _check_sizes(n, "exp_avg_sq", exp_avg_sq.shape[0], True)
    cdef bint use_avg = param_avg.shape[0] != 0
    _check_sizes(n, "param_avg", param_avg.shape[0], use_avg)
    cdef double c[_MAX_CONSTS]
    cdef int flags = _radam_consts(c, lr, beta1, beta2, eps, weight_decay, bias_correction1, bias_correction2_sqrt,
                                   rect, rectified, decoupled, maximize, grad_scale, avg_weight, use_avg)
    cdef _Seg seg
    _seg(&seg, param, grad, exp_avg, exp_avg_sq, param, param_avg, True, True, False, use_avg)
    _run_one(&seg, &param[0] if n else NULL, _RULE_RADAM, c, flags, n_threads)


cdef int _adamax_consts(double* c, double clr, double beta1, double beta2, double eps, double weight_decay,
                        bint maximize, double grad_scale, double avg_weight, bint use_avg) noexcept:
    c[0] = -grad_scale if maximize else grad_scale
    c[1] = 1.0 - beta1
    c[2] = beta2
    c[3] = eps
    c[4] = clr
    c[5] = weight_decay
    c[6] = avg_weight
    return (1 if weight_decay != 0 else 0) | (_AVG if use_avg else 0)


def adamax_step(floating[::1] param not None, const floating[::1] grad not None, floating[::1] exp_avg not None,
                floating[::1] exp_inf not None, floating[::1] param_avg not None,
                double clr, double beta1, double beta2, double eps, double weight_decay,
                bint maximize, double grad_scale, double avg_weight, int n_threads):
    """torch.optim.Adamax step, in place; clr = lr / (1 - beta1**t) from the caller."""
    cdef Py_ssize_t n = param.shape[0]
    n_threads = threads(n_threads)
    _check_sizes(n, "grad", grad.shape[0], True)
    _check_sizes(n, "exp_avg", exp_avg.shape[0], True)
    _check_sizes(n, "exp_inf", exp_inf.shape[0], True)
    cdef bint use_avg = param_avg.shape[0] != 0
    _check_sizes(n, "param_avg", param_avg.shape[0], use_avg)
    cdef double c[_MAX_CONSTS]
    cdef int flags = _adamax_consts(c, clr, beta1, beta2, eps, weight_decay, maximize, grad_scale, avg_weight,
                                    use_avg)
    cdef _Seg seg
    _seg(&seg, param, grad, exp_avg, exp_inf, param, param_avg, True, True, False, use_avg)
    _run_one(&seg, &param[0] if n else NULL, _RULE_ADAMAX, c, flags, n_threads)


cdef int _adadelta_consts(double* c, double lr, double rho, double eps, double weight_decay, bint maximize,
                          double grad_scale, double avg_weight, bint use_avg) noexcept:
    c[0] = -grad_scale if maximize else grad_scale
    c[1] = rho
    c[2] = 1.0 - rho
    c[3] = eps
    c[4] = lr
    c[5] = weight_decay
    c[6] = avg_weight
    return (1 if weight_decay != 0 else 0) | (_AVG if use_avg else 0)


def adadelta_step(floating[::1] param not None, const floating[::1] grad not None, floating[::1] square_avg not None,
                  floating[::1] acc_delta not None, floating[::1] param_avg not None,
                  double lr, double rho, double eps, double weight_decay,
                  bint maximize, double grad_scale, double avg_weight, int n_threads):
    """torch.optim.Adadelta step, in place."""
    cdef Py_ssize_t n = param.shape[0]
    n_threads = threads(n_threads)
    _check_sizes(n, "grad", grad.shape[0], True)
    _check_sizes(n, "square_avg", square_avg.shape[0], True)
    _check_sizes(n, "acc_delta", acc_delta.shape[0], True)
    cdef bint use_avg = param_avg.shape[0] != 0
    _check_sizes(n, "param_avg", param_avg.shape[0], use_avg)
    cdef double c[_MAX_CONSTS]
    cdef int flags = _adadelta_consts(c, lr, rho, eps, weight_decay, maximize, grad_scale, avg_weight, use_avg)
    cdef _Seg seg
    _seg(&seg, param, grad, square_avg, acc_delta, param, param_avg, True, True, False, use_avg)
    _run_one(&seg, &param[0] if n else NULL, _RULE_ADADELTA, c, flags, n_threads)


cdef int _lion_consts(double* c, double lr, double beta1, double beta2, double weight_decay, bint maximize,
                      double grad_scale, double avg_weight, bint use_avg) noexcept:
    c[0] = -grad_scale if maximize else grad_scale
    c[1] = beta1
    c[2] = 1.0 - beta1
    c[3] = beta2
    c[4] = 1.0 - beta2
    c[5] = lr
    c[6] = 1.0 - lr * weight_decay
    c[7] = avg_weight
    return _AVG if use_avg else 0


def lion_step(floating[::1] param not None, const floating[::1] grad not None, floating[::1] exp_avg not None,
              floating[::1] param_avg not None, double lr, double beta1, double beta2, double weight_decay,
              bint maximize, double grad_scale, double avg_weight, int n_threads):
    """Lion (Chen et al. 2023, Algorithm 2), in place:
    c = beta1 * m + (1 - beta1) * g;  p = p * (1 - lr * wd) - lr * sign(c);
    m = beta2 * m + (1 - beta2) * g."""
    cdef Py_ssize_t n = param.shape[0]
    n_threads = threads(n_threads)
    _check_sizes(n, "grad", grad.shape[0], True)
    _check_sizes(n, "exp_avg", exp_avg.shape[0], True)
    cdef bint use_avg = param_avg.shape[0] != 0
    _check_sizes(n, "param_avg", param_avg.shape[0], use_avg)
    cdef double c[_MAX_CONSTS]
    cdef int flags = _lion_consts(c, lr, beta1, beta2, weight_decay, maximize, grad_scale, avg_weight, use_avg)
    cdef _Seg seg
    _seg(&seg, param, grad, exp_avg, param, param, param_avg, True, False, False, use_avg)
    _run_one(&seg, &param[0] if n else NULL, _RULE_LION, c, flags, n_threads)


# ------------------------------------------------------------------------------ norms for clipping

cdef inline double _block_norm(const floating* x, Py_ssize_t lo, Py_ssize_t hi, int kind,
                               double p, double* bad) noexcept nogil:
    # One block in double. kind 2: sum x^2; 1: sum |x|; 0: max |x|; 3: sum |x|^p. Sums run in 8
    # interleaved lanes (element i into lane i % 8), added in lane order at the end: a fixed order,
    # and 8 independent chains instead of one add latency per element. bad accumulates x * 0,
    # which is NaN exactly when some x is infinite or NaN.
    cdef Py_ssize_t i, j, m = lo + (hi - lo) // 8 * 8
    cdef double S[8]
    cdef double Z[8]
    cdef double s = 0, z = 0, a
    for j in range(8):
        S[j] = 0
        Z[j] = 0
    if kind == 2:
        for i in range(lo, m, 8):
            for j in range(8):
                a = <double>x[i + j]
                Z[j] = Z[j] + a * 0.0
                S[j] = S[j] + a * a
    elif kind == 1:
        for i in range(lo, m, 8):
            for j in range(8):
                a = <double>x[i + j]
                Z[j] = Z[j] + a * 0.0
                S[j] = S[j] + c_fabs(a)
    else:
        m = lo
    for j in range(8):
        s = s + S[j]
        z = z + Z[j]
    for i in range(m, hi):
        a = <double>x[i]
        z = z + a * 0.0
        if kind == 2:
            s = s + a * a
        elif kind == 1:
            s = s + c_fabs(a)
        elif kind == 0:
            a = c_fabs(a)
            s = a if a > s or a != a else s
        else:
            s = s + c_pow(c_fabs(a), p)
    bad[0] = z
    return s


def norm_partial(const floating[::1] x not None, double norm_type, int n_threads):
    """(accumulated norm, all finite) of x for fastopt.clip_grad_norm_: sum of x**2 for norm_type 2
    (sum |x|**p for other finite p, max |x| for inf), in double over fixed blocks of NORM_BLOCK
    added in order (bitwise independent of n_threads), and whether every element is finite."""
    cdef Py_ssize_t n = x.shape[0], nb = (n + _NORM_BLOCK - 1) // _NORM_BLOCK, b
    n_threads = threads(n_threads)
    cdef int kind
    if norm_type == INFINITY:
        kind = 0
    elif norm_type == 1.0:
        kind = 1
    elif norm_type == 2.0:
        kind = 2
    elif norm_type > 0 and norm_type == norm_type:
        kind = 3
    else:
        raise ValueError(f"norm_type must be > 0 (or inf), got {norm_type}")
    if n == 0:
        return 0.0, True
    cdef double* part = <double*>malloc(2 * nb * sizeof(double))
    if part == NULL:
        raise MemoryError()
    cdef const floating* xp = &x[0]
    cdef double total = 0, bad = 0, s
    try:
        for b in prange(nb, schedule='static', num_threads=n_threads, nogil=True):
            part[b] = _block_norm(xp, b * _NORM_BLOCK, min((b + 1) * _NORM_BLOCK, n), kind, norm_type,
                                  &part[nb + b])
        for b in range(nb):
            s = part[b]
            bad = bad + part[nb + b]
            if kind == 0:
                total = s if s > total or s != s else total
            else:
                total = total + s
    finally:
        free(part)
    return total, bad == 0


def scale_(floating[::1] x not None, double factor, int n_threads):
    """x *= factor in place (factor converted once to x's precision)."""
    cdef Py_ssize_t i, n = x.shape[0]
    n_threads = threads(n_threads)
    cdef floating f = <floating>factor
    for i in prange(n, schedule='static', num_threads=n_threads, nogil=True):
        x[i] = x[i] * f


# ------------------------------------------------------------------------------ multi-tensor kernels
cimport numpy as cnp
from cpython.object cimport PyObject
from cpython.dict cimport PyDict_GetItem
from libc.string cimport memcmp
import numpy as _np

cnp.import_array()

# state arrays per segment, in the kernel's argument order
cdef dict _RULE_STATE = {_RULE_SGD: 1, _RULE_ADAM: 3, _RULE_VELOCITY: 1, _RULE_ADAGRAD: 1, _RULE_RMSPROP: 3,
                         _RULE_NADAM: 2, _RULE_RADAM: 2, _RULE_ADAMAX: 2, _RULE_ADADELTA: 2, _RULE_LION: 1}


cdef char* _array_ptr(str what, object a, object dtype, Py_ssize_t n, bint used, bint write) except? NULL:
    # A checked pointer into `a` (1-D C-contiguous ndarray of `dtype`, n elements when used, else
    # empty or n); NULL when unused or empty.
    if type(a) is not _np.ndarray:
        raise TypeError(f"{what} must be an ndarray, got {type(a).__name__}")
    cdef cnp.ndarray arr = <cnp.ndarray>a
    if arr.dtype != dtype:
        raise TypeError(f"{what} must be {dtype}, got {arr.dtype}")
    if cnp.PyArray_NDIM(arr) != 1 or not cnp.PyArray_IS_C_CONTIGUOUS(arr):
        raise ValueError(f"{what} must be 1-D and C-contiguous, got shape {a.shape}")
    if write and not cnp.PyArray_ISWRITEABLE(arr) and arr.size:
        raise ValueError(f"{what} must be writeable")
    _check_sizes(n, what, arr.shape[0], used)
    return <char*>cnp.PyArray_DATA(arr) if used and n else NULL


cdef class StepPlan:
    """Every tensor of one step of one rule, for its multi-tensor kernel (adam_multi, sgd_multi).

    StepPlan(params, grads, states, avgs): one entry per tensor, 1-D C-contiguous arrays of one
    float dtype: the parameter, its gradient, the list of its state arrays in the kernel's argument
    order (an unused one empty) and its running average (empty: none). Every used array has the
    parameter's size; params, state and averages are writeable (gradients may be read-only);
    tensors agree on which state arrays are used. Checked here, once: the plan keeps a reference
    to every array, so the pointers it holds stay valid for its lifetime (a referenced ndarray
    cannot be resized). ratios() gives the update/weight ratio per tensor of the last call that
    tracked it (an empty list before one)."""
    cdef _Seg* segs
    cdef _Chunk* chunks
    cdef double* sums
    cdef readonly Py_ssize_t n_segments, n_chunks, size
    cdef readonly bint is_double
    cdef readonly tuple used
    cdef readonly object dtype
    cdef list _keep
    cdef list _ratios

    def __cinit__(self):
        self.segs, self.chunks, self.sums = NULL, NULL, NULL

    def __dealloc__(self):
        free(self.segs)
        free(self.chunks)
        free(self.sums)

    def __init__(self, list params not None, list grads not None, list states not None, list avgs not None):
        cdef Py_ssize_t k, j, n, nseg = len(params)
        if nseg == 0 or len(grads) != nseg or len(states) != nseg or len(avgs) != nseg:
            raise ValueError(f"params, grads, states and avgs must have one entry per tensor (>= 1), got "
                             f"{len(params)}, {len(grads)}, {len(states)}, {len(avgs)}")
        first = params[0]
        if type(first) is not _np.ndarray or first.dtype not in (_np.float32, _np.float64):
            raise TypeError(f"params[0] must be a float32 or float64 ndarray, got {type(first).__name__}")
        dtype = first.dtype
        nstate = len(states[0]) if isinstance(states[0], list) else -1
        if not 0 <= nstate <= 3:
            raise TypeError("states[0] must be a list of at most 3 arrays")
        for k in range(nseg):
            if not isinstance(states[k], list) or len(states[k]) != nstate:
                raise ValueError(f"states[{k}] must be a list of {nstate} arrays (as states[0])")
        # A kind is used when any tensor has it (the others then must have it too, or be empty).
        used = tuple(any(getattr(st[j], "size", 0) != 0 for st in states) for j in range(nstate)) + (
            any(getattr(a, "size", 0) != 0 for a in avgs),)
        cdef _Seg* segs = <_Seg*>malloc(nseg * sizeof(_Seg))
        if segs == NULL:
            raise MemoryError()
        self.segs = segs
        cdef char** slots
        total = 0
        for k in range(nseg):
            p = params[k]
            if type(p) is not _np.ndarray:
                raise TypeError(f"params[{k}] must be an ndarray, got {type(p).__name__}")
            n = p.size
            segs[k].p = _array_ptr(f"params[{k}]", p, dtype, n, True, True)
            segs[k].g = _array_ptr(f"grads[{k}]", grads[k], dtype, n, True, False)
            st = states[k]
            segs[k].s0 = segs[k].s1 = segs[k].s2 = NULL
            for j in range(nstate):
                ptr = _array_ptr(f"states[{k}][{j}]", st[j], dtype, n, used[j] and n != 0, True)
                if j == 0:
                    segs[k].s0 = ptr
                elif j == 1:
                    segs[k].s1 = ptr
                else:
                    segs[k].s2 = ptr
            segs[k].avg = _array_ptr(f"avgs[{k}]", avgs[k], dtype, n, used[nstate] and n != 0, True)
            segs[k].n = n
            total += n
        self.n_segments, self.size, self.dtype, self.used = nseg, total, dtype, used
        self.is_double = dtype == _np.float64
        self.n_chunks = _chunk_table(segs, nseg, &self.chunks)
        self.sums = <double*>malloc(max(2 * self.n_chunks, 1) * sizeof(double))
        if self.sums == NULL:
            raise MemoryError()
        self._keep = [params, grads, states, avgs]
        self._ratios = []

    def ratios(self):
        """The update/weight ratio ||p_new - p_old|| / ||p_old|| per tensor (0 when p_old is 0) of
        the last call that tracked it."""
        return list(self._ratios)

    cdef int run(self, int rule, const double* c, int flags, bint track, int n_threads) except -1:
        cdef int nstate = _RULE_STATE[rule]
        if len(self.used) != nstate + 1:
            raise ValueError(f"this plan holds {len(self.used) - 1} state arrays per tensor, the kernel "
                             f"takes {nstate}")
        n_threads = threads(n_threads)
        cdef double* sums = self.sums if track else NULL
        with nogil:
            if self.is_double:
                _drive(<double*>NULL, self.segs, self.chunks, self.n_chunks, rule, c, flags, sums, n_threads)
            else:
                _drive(<float*>NULL, self.segs, self.chunks, self.n_chunks, rule, c, flags, sums, n_threads)
        if track:
            self._ratios = self._collect()
        return 0

    cdef list _collect(self):
        # Per segment, its chunks' sums in chunk order, then the ratio.
        cdef Py_ssize_t b = 0, k
        cdef double p2, d2
        out = []
        for k in range(self.n_segments):
            p2 = d2 = 0
            while b < self.n_chunks and self.chunks[b].seg == k:
                p2 += self.sums[2 * b]
                d2 += self.sums[2 * b + 1]
                b += 1
            out.append(0.0 if p2 == 0 else c_sqrt(d2) / c_sqrt(p2))
        return out


cdef tuple _needs(int rule, double momentum, bint amsgrad, bint centered, bint use_avg):
    # The state arrays (and average) <rule>_multi reads and writes with these options, in the form
    # of plan.used: the compiled form of the declaration's Rule.used_state (+ the average).
    if rule == _RULE_SGD:
        return (momentum != 0, use_avg)
    if rule == _RULE_ADAM:
        return (True, True, amsgrad, use_avg)
    if rule == _RULE_RMSPROP:
        return (True, centered, momentum > 0, use_avg)
    if rule == _RULE_VELOCITY:
        return (True, False)
    return (True,) * _RULE_STATE[rule] + (use_avg,)


cdef int _check_used(StepPlan plan, tuple want) except -1:
    if plan.used != want:
        raise ValueError(f"plan's used state arrays (and average) are {plan.used}; these "
                         f"hyperparameters need {want}")
    return 0


def adam_multi(StepPlan plan not None, double lr, double beta1, double beta2, double eps, double weight_decay,
               double step_size, double bias_correction2_sqrt, bint decoupled, bint amsgrad, bint maximize,
               double grad_scale, double avg_weight, bint track_ratio, int n_threads):
    """adam_step on every tensor of `plan` in one call (its states: exp_avg, exp_avg_sq,
    max_exp_avg_sq); with track_ratio the update/weight ratios (plan.ratios()) in the same pass."""
    cdef bint use_avg = plan.used[3]
    _check_used(plan, _needs(_RULE_ADAM, 0, amsgrad, False, use_avg))
    cdef double c[_MAX_CONSTS]
    cdef int flags = _adam_consts(c, lr, beta1, beta2, eps, weight_decay, step_size, bias_correction2_sqrt,
                                  decoupled, amsgrad, maximize, grad_scale, avg_weight, use_avg)
    plan.run(_RULE_ADAM, c, flags, track_ratio, n_threads)


def sgd_multi(StepPlan plan not None, double lr, double weight_decay, double momentum, double dampening,
              bint nesterov, bint maximize, bint first_step, double grad_scale, double avg_weight,
              bint track_ratio, int n_threads):
    """sgd_step on every tensor of `plan` in one call (its state: momentum_buffer); with
    track_ratio the update/weight ratios (plan.ratios()) in the same pass."""
    cdef bint use_avg = plan.used[1]
    _check_used(plan, _needs(_RULE_SGD, momentum, False, False, use_avg))
    cdef double c[_MAX_CONSTS]
    cdef int flags = _sgd_consts(c, lr, weight_decay, momentum, dampening, nesterov, maximize, first_step,
                                 grad_scale, avg_weight, use_avg)
    plan.run(_RULE_SGD, c, flags, track_ratio, n_threads)


def velocity_multi(StepPlan plan not None, double lr, double mu, bint nesterov, bint track_ratio, int n_threads):
    """velocity_step on every tensor of `plan` (state: velocity; no average)."""
    _check_used(plan, _needs(_RULE_VELOCITY, 0, False, False, False))
    cdef double c[_MAX_CONSTS]
    cdef int flags = _velocity_consts(c, lr, mu, nesterov)
    plan.run(_RULE_VELOCITY, c, flags, track_ratio, n_threads)


def adagrad_multi(StepPlan plan not None, double clr, double weight_decay, double eps, bint maximize,
                  double grad_scale, double avg_weight, bint track_ratio, int n_threads):
    """adagrad_step on every tensor of `plan` (state: state_sum)."""
    cdef bint use_avg = plan.used[len(plan.used) - 1]
    _check_used(plan, _needs(_RULE_ADAGRAD, 0, False, False, use_avg))
    cdef double c[_MAX_CONSTS]
    cdef int flags = _adagrad_consts(c, clr, weight_decay, eps, maximize, grad_scale, avg_weight, use_avg)
    plan.run(_RULE_ADAGRAD, c, flags, track_ratio, n_threads)


def rmsprop_multi(StepPlan plan not None, double lr, double alpha, double eps, double weight_decay,
                  double momentum, bint centered, bint maximize, double grad_scale, double avg_weight,
                  bint track_ratio, int n_threads):
    """rmsprop_step on every tensor of `plan` (states: square_avg, grad_avg, momentum_buffer)."""
    cdef bint use_avg = plan.used[len(plan.used) - 1]
    _check_used(plan, _needs(_RULE_RMSPROP, momentum, False, centered, use_avg))
    cdef double c[_MAX_CONSTS]
    cdef int flags = _rmsprop_consts(c, lr, alpha, eps, weight_decay, momentum, centered, maximize, grad_scale,
                                     avg_weight, use_avg)
    plan.run(_RULE_RMSPROP, c, flags, track_ratio, n_threads)


def nadam_multi(StepPlan plan not None, double lr, double beta1, double beta2, double eps, double weight_decay,
                double bias_correction2, double grad_coef, double exp_avg_coef, bint decoupled, bint maximize,
                double grad_scale, double avg_weight, bint track_ratio, int n_threads):
    """nadam_step on every tensor of `plan` (states: exp_avg, exp_avg_sq)."""
    cdef bint use_avg = plan.used[len(plan.used) - 1]
    _check_used(plan, _needs(_RULE_NADAM, 0, False, False, use_avg))
    cdef double c[_MAX_CONSTS]
    cdef int flags = _nadam_consts(c, lr, beta1, beta2, eps, weight_decay, bias_correction2, grad_coef,
                                   exp_avg_coef, decoupled, maximize, grad_scale, avg_weight, use_avg)
    plan.run(_RULE_NADAM, c, flags, track_ratio, n_threads)


def radam_multi(StepPlan plan not None, double lr, double beta1, double beta2, double eps, double weight_decay,
                double bias_correction1, double bias_correction2_sqrt, double rect, bint rectified,
                bint decoupled, bint maximize, double grad_scale, double avg_weight, bint track_ratio,
                int n_threads):
    """radam_step on every tensor of `plan` (states: exp_avg, exp_avg_sq)."""
    cdef bint use_avg = plan.used[len(plan.used) - 1]
    _check_used(plan, _needs(_RULE_RADAM, 0, False, False, use_avg))
    cdef double c[_MAX_CONSTS]
    cdef int flags = _radam_consts(c, lr, beta1, beta2, eps, weight_decay, bias_correction1,
                                   bias_correction2_sqrt, rect, rectified, decoupled, maximize, grad_scale,
                                   avg_weight, use_avg)
    plan.run(_RULE_RADAM, c, flags, track_ratio, n_threads)


def adamax_multi(StepPlan plan not None, double clr, double beta1, double beta2, double eps, double weight_decay,
                 bint maximize, double grad_scale, double avg_weight, bint track_ratio, int n_threads):
    """adamax_step on every tensor of `plan` (states: exp_avg, exp_inf)."""
    cdef bint use_avg = plan.used[len(plan.used) - 1]
    _check_used(plan, _needs(_RULE_ADAMAX, 0, False, False, use_avg))
    cdef double c[_MAX_CONSTS]
    cdef int flags = _adamax_consts(c, clr, beta1, beta2, eps, weight_decay, maximize, grad_scale, avg_weight,
                                    use_avg)
    plan.run(_RULE_ADAMAX, c, flags, track_ratio, n_threads)


def adadelta_multi(StepPlan plan not None, double lr, double rho, double eps, double weight_decay, bint maximize,
                   double grad_scale, double avg_weight, bint track_ratio, int n_threads):
    """adadelta_step on every tensor of `plan` (states: square_avg, acc_delta)."""
    cdef bint use_avg = plan.used[len(plan.used) - 1]
    _check_used(plan, _needs(_RULE_ADADELTA, 0, False, False, use_avg))
    cdef double c[_MAX_CONSTS]
    cdef int flags = _adadelta_consts(c, lr, rho, eps, weight_decay, maximize, grad_scale, avg_weight, use_avg)
    plan.run(_RULE_ADADELTA, c, flags, track_ratio, n_threads)


def lion_multi(StepPlan plan not None, double lr, double beta1, double beta2, double weight_decay, bint maximize,
               double grad_scale, double avg_weight, bint track_ratio, int n_threads):
    """lion_step on every tensor of `plan` (state: exp_avg)."""
    cdef bint use_avg = plan.used[len(plan.used) - 1]
    _check_used(plan, _needs(_RULE_LION, 0, False, False, use_avg))
    cdef double c[_MAX_CONSTS]
    cdef int flags = _lion_consts(c, lr, beta1, beta2, weight_decay, maximize, grad_scale, avg_weight, use_avg)
    plan.run(_RULE_LION, c, flags, track_ratio, n_threads)


cdef class StepGuard:
    """What a cached optimizer step re-checks on every call, in C (a few ns per tensor).

    StepGuard(params, grads, start, owned, dicts, keys, bound=None): the parameter arrays; the
    gradient objects the step was prepared for (they are seq[start:start + len(params)] of check's
    argument); owned, (dict, key, array) triples: dict[key] must still be that array, and it
    writeable; dicts, the per-parameter state dicts whose entries `keys` (step counts) must still
    be the objects commit() last wrote (the values at construction before that); bound, (dict,
    key, object) triples: dict[key] must still be that very object (a param group's "params" and
    hyperparameters as last validated: a rebound entry, even to an equal value, fails the check).
    check(seq) -> whether all of it holds (and every param is writeable, every gradient still the
    same object with the param's dtype object, shape, C-contiguous, at the same address)."""
    cdef tuple _params, _grads, _owned, _dicts, _keys, _bound
    cdef list _values
    cdef Py_ssize_t start

    def __init__(self, list params not None, list grads not None, Py_ssize_t start, list owned not None,
                 list dicts not None, tuple keys not None, list bound=None):
        if len(grads) != len(params):
            raise ValueError(f"grads must have one entry per param, got {len(grads)} for {len(params)}")
        for a in params + grads:
            if type(a) is not _np.ndarray:
                raise TypeError(f"params and grads must be ndarrays, got {type(a).__name__}")
        for t in owned:
            if not (isinstance(t, tuple) and len(t) == 3 and type(t[0]) is dict and type(t[2]) is _np.ndarray):
                raise TypeError("owned must hold (dict, key, ndarray) triples")
        for d in dicts:
            if type(d) is not dict:
                raise TypeError(f"dicts must hold dicts, got {type(d).__name__}")
        for t in bound or ():
            if not (isinstance(t, tuple) and len(t) == 3 and type(t[0]) is dict):
                raise TypeError("bound must hold (dict, key, object) triples")
        self._bound = tuple(bound or ())
        self._params, self._grads, self._owned = tuple(params), tuple(grads), tuple(owned)
        self._dicts, self._keys, self.start = tuple(dicts), keys, start
        self._values = [dicts[0].get(k) for k in keys] if dicts else []

    def check(self, seq):
        return self._ok(seq)

    cdef bint _ok(self, object seq) except -1:
        cdef Py_ssize_t j, n = len(self._params)
        cdef cnp.ndarray p, g
        cdef object d, key
        if not (type(seq) is list or type(seq) is tuple) or len(seq) < self.start + n:
            return False
        for t in self._bound:
            if PyDict_GetItem((<tuple>t)[0], (<tuple>t)[1]) != <PyObject*>(<tuple>t)[2]:
                return False
        for j in range(n):
            obj = seq[self.start + j]
            if obj is not self._grads[j]:
                return False
            p = <cnp.ndarray>self._params[j]
            g = <cnp.ndarray>obj
            if not cnp.PyArray_ISWRITEABLE(p) or not cnp.PyArray_IS_C_CONTIGUOUS(g):
                return False
            if <PyObject*>cnp.PyArray_DESCR(g) != <PyObject*>cnp.PyArray_DESCR(p):
                return False
            if cnp.PyArray_NDIM(g) != cnp.PyArray_NDIM(p) or memcmp(
                    cnp.PyArray_DIMS(g), cnp.PyArray_DIMS(p), cnp.PyArray_NDIM(p) * sizeof(cnp.npy_intp)):
                return False
        for t in self._owned:
            d, key = (<tuple>t)[0], (<tuple>t)[1]
            if PyDict_GetItem(d, key) != <PyObject*>(<tuple>t)[2]:
                return False
            g = <cnp.ndarray>(<tuple>t)[2]
            if cnp.PyArray_SIZE(g) and not cnp.PyArray_ISWRITEABLE(g):
                return False
        n = len(self._keys)
        for d in self._dicts:
            for j in range(n):
                if PyDict_GetItem(d, self._keys[j]) != <PyObject*>self._values[j]:
                    return False
        return True

    def commit(self, dict values not None):
        """Write `values` (the scalar entries after a step) into every state dict and remember them."""
        cdef list items = list(values.items())
        for d in self._dicts:
            for key, value in items:
                (<dict>d)[key] = value
        self._values = [self._dicts[0].get(k) for k in self._keys] if self._dicts else []

    cdef int _commit_keys(self, list values) except -1:
        # commit() for values of exactly self._keys, in that order (the cached step's form).
        cdef Py_ssize_t j, n = len(self._keys)
        for d in self._dicts:
            for j in range(n):
                (<dict>d)[self._keys[j]] = values[j]
        self._values = values
        return 0


# ------------------------------------------------------------------------------ the cached step in C
# A cached optimizer step (fastopt/optim/_base.py, Optimizer._fast_step) is ONE call of
# run_cached: the guards of every group, each group's per-step scalars, its multi-tensor pass and
# the new step counts written back, without Python in between (the Python loop cost ~2.5 us a step:
# issue 11's numba comparison at 1e3..1e5 elements). The per-step scalars are each rule's per_step
# of fastopt/optim/_declarations.py (the twin) in C, the same double operations in the same order:
# Python's float ** is C pow for the finite positive bases here, math.sqrt is sqrt, x ** 0.5 stays
# pow. tests/test_cached_step.py compares the constants both ways bit for bit.
cdef struct _Hyp:
    # One group's validated hyperparameters (an absent one is 0 / False: the rule does not read it).
    double lr, beta1, beta2, eps, weight_decay, momentum, dampening, lr_decay, alpha, rho, momentum_decay
    bint nesterov, maximize, amsgrad, decoupled, centered

cdef dict _MULTI_RULE = {"sgd_multi": _RULE_SGD, "adam_multi": _RULE_ADAM, "adagrad_multi": _RULE_ADAGRAD,
                         "rmsprop_multi": _RULE_RMSPROP, "nadam_multi": _RULE_NADAM,
                         "radam_multi": _RULE_RADAM, "adamax_multi": _RULE_ADAMAX,
                         "adadelta_multi": _RULE_ADADELTA, "lion_multi": _RULE_LION}
# The rules whose step counts steps (their per_step returns {"step": t}); NAdam also mu_product.
cdef frozenset _COUNTS_STEPS = frozenset([_RULE_ADAM, _RULE_ADAGRAD, _RULE_RMSPROP, _RULE_NADAM, _RULE_RADAM,
                                          _RULE_ADAMAX, _RULE_ADADELTA])


cdef int _hyp_from(_Hyp* h, dict d) except -1:
    h.lr = d.get("lr", 0.0)
    h.beta1, h.beta2 = d.get("betas", (0.0, 0.0))
    h.eps = d.get("eps", 0.0)
    h.weight_decay = d.get("weight_decay", 0.0)
    h.momentum = d.get("momentum", 0.0)
    h.dampening = d.get("dampening", 0.0)
    h.lr_decay = d.get("lr_decay", 0.0)
    h.alpha = d.get("alpha", 0.0)
    h.rho = d.get("rho", 0.0)
    h.momentum_decay = d.get("momentum_decay", 0.0)
    h.nesterov = d.get("nesterov", False)
    h.maximize = d.get("maximize", False)
    h.amsgrad = d.get("amsgrad", False)
    h.decoupled = d.get("decoupled_weight_decay", False)
    h.centered = d.get("centered", False)
    return 0


cdef inline double _nadam_mu(double beta1, double momentum_decay, double t) noexcept nogil:
    return beta1 * (1.0 - 0.5 * c_pow(0.96, t * momentum_decay))


# The scalars per_step derives from the step count, by rule, in the order _derive fills them.
cdef dict _DERIVED = {_RULE_ADAM: ("step_size", "bias_correction2_sqrt"), _RULE_ADAGRAD: ("clr",),
                      _RULE_NADAM: ("bias_correction2", "grad_coef", "exp_avg_coef"),
                      _RULE_RADAM: ("bias_correction1", "bias_correction2_sqrt", "rect", "rectified"),
                      _RULE_ADAMAX: ("clr",)}


cdef void _derive(int rule, const _Hyp* h, double t, double* mu_product, double* d) noexcept:
    # per_step's step-dependent scalars of step t (t already incremented, as per_step's t) into d;
    # NAdam's mu_product is updated in place.
    cdef double b2t, bc2, rho_inf, rho_t, mu, mu_next
    if rule == _RULE_ADAM:
        d[0] = h.lr / (1 - c_pow(h.beta1, t))
        d[1] = c_sqrt(1 - c_pow(h.beta2, t))
    elif rule == _RULE_ADAGRAD:
        d[0] = h.lr / (1 + (t - 1) * h.lr_decay)
    elif rule == _RULE_NADAM:
        mu = _nadam_mu(h.beta1, h.momentum_decay, t)
        mu_next = _nadam_mu(h.beta1, h.momentum_decay, t + 1)
        mu_product[0] = mu_product[0] * mu
        d[0] = 1 - c_pow(h.beta2, t)
        d[1] = -h.lr * (1.0 - mu) / (1.0 - mu_product[0])
        d[2] = (-h.lr * mu_next) / (1.0 - mu_product[0] * mu_next)
    elif rule == _RULE_RADAM:
        d[0] = 1 - c_pow(h.beta1, t)
        b2t = c_pow(h.beta2, t)
        bc2 = 1 - b2t
        rho_inf = 2 / (1 - h.beta2) - 1
        rho_t = rho_inf - 2 * t * b2t / bc2
        d[1] = c_pow(bc2, 0.5)
        d[3] = rho_t > 5.0
        d[2] = c_pow((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t), 0.5) \
            if d[3] else 1.0
    elif rule == _RULE_ADAMAX:
        d[0] = h.lr / (1 - c_pow(h.beta1, t))


cdef int _step_consts(int rule, const _Hyp* h, double t, double* mu_product, double avg_weight, bint use_avg,
                      double* c) noexcept:
    # Step t's kernel constants with grad_scale 1 (a cached step never clips); returns the flags.
    cdef double d[4]
    d[0] = d[1] = d[2] = d[3] = 0      # the rules without step-dependent scalars leave them
    _derive(rule, h, t, mu_product, d)
    if rule == _RULE_SGD:
        return _sgd_consts(c, h.lr, h.weight_decay, h.momentum, h.dampening, h.nesterov, h.maximize, False,
                           1.0, avg_weight, use_avg)
    if rule == _RULE_ADAM:
        return _adam_consts(c, h.lr, h.beta1, h.beta2, h.eps, h.weight_decay, d[0], d[1], h.decoupled, h.amsgrad,
                            h.maximize, 1.0, avg_weight, use_avg)
    if rule == _RULE_ADAGRAD:
        return _adagrad_consts(c, d[0], h.weight_decay, h.eps, h.maximize, 1.0, avg_weight, use_avg)
    if rule == _RULE_RMSPROP:
        return _rmsprop_consts(c, h.lr, h.alpha, h.eps, h.weight_decay, h.momentum, h.centered, h.maximize, 1.0,
                               avg_weight, use_avg)
    if rule == _RULE_NADAM:
        return _nadam_consts(c, h.lr, h.beta1, h.beta2, h.eps, h.weight_decay, d[0], d[1], d[2], h.decoupled,
                             h.maximize, 1.0, avg_weight, use_avg)
    if rule == _RULE_RADAM:
        return _radam_consts(c, h.lr, h.beta1, h.beta2, h.eps, h.weight_decay, d[0], d[1], d[2], d[3] != 0,
                             h.decoupled, h.maximize, 1.0, avg_weight, use_avg)
    if rule == _RULE_ADAMAX:
        return _adamax_consts(c, d[0], h.beta1, h.beta2, h.eps, h.weight_decay, h.maximize, 1.0, avg_weight,
                              use_avg)
    if rule == _RULE_ADADELTA:
        return _adadelta_consts(c, h.lr, h.rho, h.eps, h.weight_decay, h.maximize, 1.0, avg_weight, use_avg)
    return _lion_consts(c, h.lr, h.beta1, h.beta2, h.weight_decay, h.maximize, 1.0, avg_weight, use_avg)


cdef class CachedStep:
    """The prepared form of an optimizer's cached step (see run_cached).

    CachedStep(kernel, groups, entries, keys, ema, per_step): kernel, the rule's multi-tensor kernel
    name (adam_multi, ...); groups, the param_groups (a tuple) the step was prepared for;
    entries, per group (StepPlan, StepGuard, validated hyperparameters with the class's fixed ones);
    keys, the per-parameter scalar entries each step advances, in the guards' order: "step" for
    the rules that count steps, NAdam's "mu_product", "avg_count" with an average; ema, None, a
    decay in [0, 1) or "polyak"; per_step, the rule's declaration (the NumPy backend's twin calls
    it; here it is computed in C)."""
    cdef readonly str kernel
    cdef readonly tuple groups, entries
    cdef readonly Py_ssize_t n_params
    cdef int rule, n_keys, mu_key, avg_key
    cdef bint counts, averaging
    cdef double ema
    cdef _Hyp* hyps
    cdef int* threads_used
    cdef Py_ssize_t* grains

    def __cinit__(self):
        self.hyps, self.threads_used, self.grains = NULL, NULL, NULL

    def __dealloc__(self):
        free(self.hyps)
        free(self.threads_used)
        free(self.grains)

    @property
    def last_threads(self):
        """The thread count of each group's pass in the last step that ran (0: none yet)."""
        return tuple(self.threads_used[i] for i in range(len(self.entries)))

    def __init__(self, str kernel not None, tuple groups not None, list entries not None, tuple keys not None,
                 ema, per_step):
        if kernel not in _MULTI_RULE:
            raise ValueError(f"kernel must be one of {sorted(_MULTI_RULE)}, got {kernel!r}")
        self.rule = _MULTI_RULE[kernel]
        self.kernel, self.groups = kernel, groups
        self.counts = self.rule in _COUNTS_STEPS
        want = (("step",) if self.counts else ()) + (("mu_product",) if self.rule == _RULE_NADAM else ())
        self.averaging = ema is not None
        if keys != want + (("avg_count",) if self.averaging else ()):
            raise ValueError(f"keys must be {want + (('avg_count',) if self.averaging else ())}, got {keys}")
        self.n_keys, self.mu_key, self.avg_key = len(keys), len(want) - 1, len(want)
        if not (ema is None or ema == "polyak" or isinstance(ema, float) and 0.0 <= ema < 1.0):
            raise ValueError(f"ema must be None, 'polyak' or a decay in [0, 1), got {ema!r}")
        self.ema = -1.0 if ema == "polyak" else (0.0 if ema is None else ema)
        self.entries = ()
        self.hyps = <_Hyp*>malloc(max(len(entries), 1) * sizeof(_Hyp))
        self.threads_used = <int*>calloc(max(len(entries), 1), sizeof(int))
        self.grains = <Py_ssize_t*>malloc(max(len(entries), 1) * sizeof(Py_ssize_t))
        if self.hyps == NULL or self.threads_used == NULL or self.grains == NULL:
            raise MemoryError()
        grain = STEP_GRAIN[kernel.replace("_multi", "_step")]
        n = 0
        for i, entry in enumerate(entries):
            if not (isinstance(entry, tuple) and len(entry) == 3 and isinstance(entry[0], StepPlan)
                    and isinstance(entry[1], StepGuard) and type(entry[2]) is dict):
                raise TypeError("entries must hold (StepPlan, StepGuard, dict) triples")
            if not (<StepGuard>entry[1])._dicts:
                raise ValueError(f"entries[{i}] has no parameters")
            _hyp_from(&self.hyps[i], entry[2])
            # the arrays the pass will touch: checked here, so that no group's pass can fail (or
            # read an array the plan does not hold) after an earlier group's has run
            _check_used(<StepPlan>entry[0], _needs(self.rule, self.hyps[i].momentum, self.hyps[i].amsgrad,
                                                   self.hyps[i].centered, self.averaging))
            if (<StepGuard>entry[1])._keys != keys:
                raise ValueError(f"entries[{i}]'s guard advances {(<StepGuard>entry[1])._keys}, not {keys}")
            self.grains[i] = grain[1] if (<StepPlan>entry[0]).is_double else grain[0]
            n += len((<StepGuard>entry[1])._params)
        self.entries, self.n_params = tuple(entries), n

    cdef bint _run(self, object seq, object groups, int budget, bint track) except -1:
        cdef Py_ssize_t i, j, ng = len(self.entries)
        cdef StepPlan plan
        cdef StepGuard guard
        cdef double c[_MAX_CONSTS]
        cdef double t = 0, mu = 0, avg_weight = 0
        cdef int flags, n_threads
        cdef Py_ssize_t grain
        cdef list values
        if not (type(groups) is list or type(groups) is tuple) or len(groups) != len(self.groups):
            return False
        for i in range(len(self.groups)):
            if groups[i] is not self.groups[i]:
                return False
        if len(seq) != self.n_params:
            return False
        for i in range(ng):
            if not (<StepGuard>(<tuple>self.entries[i])[1])._ok(seq):
                return False
        # Checked: now change things.
        for i in range(ng):
            plan = <StepPlan>(<tuple>self.entries[i])[0]
            guard = <StepGuard>(<tuple>self.entries[i])[1]
            values = list(guard._values)
            if self.counts:
                values[0] = values[0] + 1           # per_step's t = s["step"] + 1, of the same type
                t = values[0]
            if self.rule == _RULE_NADAM:
                mu = values[self.mu_key]
            if self.averaging:
                count = values[self.avg_key]
                avg_weight = 1.0 / (count + 2) if self.ema < 0 else 1.0 - self.ema
                values[self.avg_key] = count + 1
            flags = _step_consts(self.rule, &self.hyps[i], t, &mu, avg_weight, self.averaging, c)
            if self.rule == _RULE_NADAM:
                values[self.mu_key] = mu
            grain = self.grains[i]
            n_threads = 1 if budget <= 1 or plan.size < 2 * grain else <int>min(<Py_ssize_t>budget, plan.size // grain)
            plan.run(self.rule, c, flags, track, n_threads)
            self.threads_used[i] = n_threads
            guard._commit_keys(values)
        return True


def run_cached(CachedStep step not None, seq, groups, int budget, bint track):
    """One cached optimizer step: False, with nothing changed, unless `seq` (the gradients, a list
    or tuple in parameter order) and `groups` (the optimizer's param_groups) pass every check the
    step was prepared with (StepGuard.check per group); else every group's step -- per-step
    scalars, one multi-tensor pass over its plan (threads: fastopt._backend.threads_for's rule
    with the rule's STEP_GRAIN for the plan's dtype, at most `budget`; with `track` the
    update/weight ratios, plan.ratios()), the new step counts written to its state dicts -- and
    True."""
    if not (type(seq) is list or type(seq) is tuple):
        return False
    return step._run(seq, groups, budget, track)


def step_scalars(str kernel not None, dict hyper not None, t, double mu_product=1.0):
    """{name: value} of the step-dependent scalars run_cached derives for `kernel`'s step t from the
    validated hyperparameters (and NAdam's mu_product before the step, returned after it): the
    names and values of the rule's per_step, which tests/test_cached_step.py compares bit for bit."""
    cdef _Hyp h
    cdef double d[4]
    d[0] = d[1] = d[2] = d[3] = 0
    if kernel not in _MULTI_RULE:
        raise ValueError(f"kernel must be one of {sorted(_MULTI_RULE)}, got {kernel!r}")
    rule = _MULTI_RULE[kernel]
    _hyp_from(&h, hyper)
    _derive(rule, &h, t, &mu_product, d)
    names = _DERIVED.get(rule, ())
    out = {name: d[j] for j, name in enumerate(names)}
    if "rectified" in out:
        out["rectified"] = out["rectified"] != 0
    if rule == _RULE_NADAM:
        out["mu_product"] = mu_product
    return out
