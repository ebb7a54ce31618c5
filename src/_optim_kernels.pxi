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
# fastopt._backend.threads_for(n, GRAIN)). Elementwise updates: results do not depend on it.
#
# Flags are tested inside the loop; they are loop invariant, and GCC -O3 unswitches the loop into
# one branch-free copy per flag combination before vectorizing it (checked with -fopt-info-vec).
# `maximize` is a multiply by -1 (bitwise the same as negation) rather than one more branch: with
# four flags GCC stopped unswitching RMSprop's loop and left it scalar.
#
# Layout: NumPy places big arrays at the same offset within a 4 KiB page, so element i of every
# array shares its low 12 address bits, and a load that follows a store with the same low bits
# closely waits for it (4K aliasing). With one 16-byte SSE vector per array per iteration, float32
# Adam at 16M elements ran ~1.3-2x slower on such arrays than on arrays staggered by a few hundred
# bytes (torch's fused AVX2 kernel suffers less). Float32 Adam therefore works in blocks of 8
# (_adam_block8): 32 bytes of every array are loaded before any is stored, which recovers most of
# the loss; measured 18-20 ms vs 23-27 ms for the per-element loop on same-offset arrays, equal on
# staggered ones. Blocks of 4 doubles compiled to slow code (2x slower), so float64 keeps the
# per-element loop. Blocks of 16 floats in the AVX2 build measured 2-3x slower than 8 (37 vs
# 12 ms at 16M, same run; not investigated further), so 8 it is for both builds. The optimizer API
# also places its state arrays at distinct page offsets (fastopt/optim/_base.py, placed_array):
# AVX2 16M float32 12-16 ms there vs 19-23 ms with m, v at NumPy's offset. Every loop body also
# reads element i of every array before writing any of it.
#
# Options shared by every torch-style rule (fastopt/optim/_base.py computes them once per step):
#   grad_scale  the gradient is read as grad_scale * grad (global-norm clipping's factor, and -1
#               for `maximize`, folded into one multiply: 1 and -1 are exact, so without clipping
#               the bits are those of plain (negated) gradients);
#   param_avg   the parameter's running average (EMA / Polyak), updated from the NEW parameter in
#               the same pass: avg += avg_weight * (p_new - avg); empty (never touched) when off.
# Every loop reads element i of every array before writing any of it.
from cython cimport floating
from cython.parallel cimport prange
from libc.stdlib cimport malloc, free
from libc.math cimport pow as c_pow, fabs as c_fabs, INFINITY

from _fastmath cimport f_sqrt, f_max, f_abs
from _contract cimport threads

# Elements per thread below which a second thread costs more than it saves; the caller passes
# n_threads = fastopt._backend.threads_for(n, GRAIN), i.e. two threads from n >= 2*GRAIN.
# Measured (benchmarks/optim_kernels_roofline.py --grain; 2-core Zen 1, shared, min of 9), float32,
# 1 thread vs 2 threads:  n=32k Adam 1.03x SGD 0.69x;  n=64k Adam 1.20x SGD 0.90x;
# n=128k Adam 1.28x SGD 1.60x;  n=256k Adam 1.78x SGD 1.71x;  n=1M Adam 1.90x SGD 1.68x.
# 64k per thread is where the lightest kernel (SGD) starts to gain as well.
GRAIN = 65536

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


cdef inline void _put(floating* param, floating* avg, Py_ssize_t i, floating p, floating w,
                      bint use_avg) noexcept nogil:
    # Store the new parameter and move its running average toward it (loaded before the store).
    cdef floating a
    if use_avg:
        a = avg[i]
        avg[i] = a + w * (p - a)
    param[i] = p


cdef inline void _sgd_at(floating* param, const floating* grad, floating* buf, floating* avg,
                         Py_ssize_t i, floating gs, floating lr_, floating wd, floating mom,
                         floating damp1, floating aw, bint use_wd, bint use_mom, bint first_step,
                         bint nesterov, bint use_avg) noexcept nogil:
    # One element of SGD. use_avg is a literal at both call sites, so GCC specializes each copy and
    # still unswitches the other four flags (with a fifth flag in the loop it left SGD scalar: 2x).
    cdef floating g = gs * grad[i], p = param[i], b
    if use_wd:
        g = g + wd * p
    if use_mom:
        if first_step:
            b = g
        else:
            b = mom * buf[i] + damp1 * g
        buf[i] = b
        if nesterov:
            g = g + mom * b
        else:
            g = b
    _put(param, avg, i, p - lr_ * g, aw, use_avg)


def sgd_step(floating[::1] param not None, const floating[::1] grad not None, floating[::1] momentum_buffer not None,
             floating[::1] param_avg not None, double lr, double weight_decay, double momentum,
             double dampening, bint nesterov, bint maximize, bint first_step,
             double grad_scale, double avg_weight, int n_threads):
    """torch.optim.SGD step, in place. momentum_buffer is empty when momentum == 0."""
    cdef Py_ssize_t i, n = param.shape[0]
    n_threads = threads(n_threads)
    _check_sizes(n, "grad", grad.shape[0], True)
    _check_sizes(n, "momentum_buffer", momentum_buffer.shape[0], momentum != 0)
    cdef bint use_avg = param_avg.shape[0] != 0
    _check_sizes(n, "param_avg", param_avg.shape[0], use_avg)
    cdef floating gs = <floating>(-grad_scale if maximize else grad_scale)
    cdef floating lr_ = <floating>lr, wd = <floating>weight_decay, mom = <floating>momentum
    cdef floating damp1 = <floating>(1.0 - dampening), aw = <floating>avg_weight
    cdef bint use_wd = weight_decay != 0, use_mom = momentum != 0
    cdef floating* pp = _ptr(param, True)
    cdef const floating* gp = &grad[0] if n else NULL
    cdef floating* bp = _ptr(momentum_buffer, use_mom)
    cdef floating* ap = _ptr(param_avg, use_avg)
    if use_avg:
        for i in prange(n, schedule='static', num_threads=n_threads, nogil=True):
            _sgd_at(pp, gp, bp, ap, i, gs, lr_, wd, mom, damp1, aw, use_wd, use_mom, first_step,
                    nesterov, True)
    else:
        for i in prange(n, schedule='static', num_threads=n_threads, nogil=True):
            _sgd_at(pp, gp, bp, ap, i, gs, lr_, wd, mom, damp1, aw, use_wd, use_mom, first_step,
                    nesterov, False)


def velocity_step(floating[::1] param not None, const floating[::1] grad not None, floating[::1] velocity not None,
                  double lr, double mu, bint nesterov, int n_threads):
    """CS231n momentum (sgd_momentum) step, in place; nesterov uses the lecture-notes form."""
    cdef Py_ssize_t i, n = param.shape[0]
    n_threads = threads(n_threads)
    _check_sizes(n, "grad", grad.shape[0], True)
    _check_sizes(n, "velocity", velocity.shape[0], True)
    cdef floating lr_ = <floating>lr, mu_ = <floating>mu, mu1 = <floating>(1.0 + mu)
    cdef floating g, p, v_prev, v
    for i in prange(n, schedule='static', num_threads=n_threads, nogil=True):
        g = grad[i]
        p = param[i]
        v_prev = velocity[i]
        v = mu_ * v_prev - lr_ * g
        velocity[i] = v
        if nesterov:
            param[i] = p - mu_ * v_prev + mu1 * v
        else:
            param[i] = p + v


def adagrad_step(floating[::1] param not None, const floating[::1] grad not None, floating[::1] state_sum not None,
                 floating[::1] param_avg not None, double clr, double weight_decay, double eps,
                 bint maximize, double grad_scale, double avg_weight, int n_threads):
    """torch.optim.Adagrad step, in place; clr = lr / (1 + (step - 1) * lr_decay) from the caller."""
    cdef Py_ssize_t i, n = param.shape[0]
    n_threads = threads(n_threads)
    _check_sizes(n, "grad", grad.shape[0], True)
    _check_sizes(n, "state_sum", state_sum.shape[0], True)
    cdef bint use_avg = param_avg.shape[0] != 0
    _check_sizes(n, "param_avg", param_avg.shape[0], use_avg)
    cdef floating gs = <floating>(-grad_scale if maximize else grad_scale)
    cdef floating clr_ = <floating>clr, wd = <floating>weight_decay, eps_ = <floating>eps
    cdef floating aw = <floating>avg_weight
    cdef bint use_wd = weight_decay != 0
    cdef floating* pp = _ptr(param, True)
    cdef floating* ap = _ptr(param_avg, use_avg)
    cdef floating g, p, s
    for i in prange(n, schedule='static', num_threads=n_threads, nogil=True):
        g = gs * grad[i]
        p = param[i]
        s = state_sum[i]
        if use_wd:
            g = g + wd * p
        s = s + g * g
        state_sum[i] = s
        _put(pp, ap, i, p - clr_ * g / (f_sqrt(s) + eps_), aw, use_avg)


cdef inline floating _rmsprop_direction(floating* buf, Py_ssize_t i, floating g, floating avg,
                                        floating mom, bint use_mom) noexcept nogil:
    # RMSprop's descent direction: g / avg, or through the momentum buffer (load, then store).
    cdef floating b
    if use_mom:
        b = mom * buf[i] + g / avg
        buf[i] = b
        return b
    return g / avg


def rmsprop_step(floating[::1] param not None, const floating[::1] grad not None, floating[::1] square_avg not None,
                 floating[::1] grad_avg not None, floating[::1] momentum_buffer not None, floating[::1] param_avg not None,
                 double lr, double alpha, double eps, double weight_decay, double momentum,
                 bint centered, bint maximize, double grad_scale, double avg_weight, int n_threads):
    """torch.optim.RMSprop step, in place. grad_avg is empty unless centered, momentum_buffer
    empty unless momentum > 0."""
    cdef Py_ssize_t i, n = param.shape[0]
    n_threads = threads(n_threads)
    _check_sizes(n, "grad", grad.shape[0], True)
    _check_sizes(n, "square_avg", square_avg.shape[0], True)
    _check_sizes(n, "grad_avg", grad_avg.shape[0], centered)
    _check_sizes(n, "momentum_buffer", momentum_buffer.shape[0], momentum > 0)
    cdef bint use_avg = param_avg.shape[0] != 0
    _check_sizes(n, "param_avg", param_avg.shape[0], use_avg)
    cdef floating gs = <floating>(-grad_scale if maximize else grad_scale)
    cdef floating lr_ = <floating>lr, alpha_ = <floating>alpha, eps_ = <floating>eps
    cdef floating alpha1 = <floating>(1.0 - alpha), wd = <floating>weight_decay
    cdef floating mom = <floating>momentum, aw = <floating>avg_weight
    cdef bint use_wd = weight_decay != 0, use_mom = momentum > 0
    cdef floating* buf = _ptr(momentum_buffer, use_mom)
    cdef floating* pp = _ptr(param, True)
    cdef floating* ap = _ptr(param_avg, use_avg)
    cdef floating g, p, sq, ga, d
    # Two loops, one per `centered`: with that branch inside, the body was too big for GCC to
    # unswitch and the loop stayed scalar. The shared tail is _rmsprop_direction.
    if centered:
        for i in prange(n, schedule='static', num_threads=n_threads, nogil=True):
            g = gs * grad[i]
            p = param[i]
            sq = square_avg[i]
            ga = grad_avg[i]
            if use_wd:
                g = g + wd * p
            sq = alpha_ * sq + alpha1 * g * g
            ga = ga + alpha1 * (g - ga)
            d = _rmsprop_direction(buf, i, g, f_sqrt(sq - ga * ga) + eps_, mom, use_mom)
            square_avg[i] = sq
            grad_avg[i] = ga
            _put(pp, ap, i, p - lr_ * d, aw, use_avg)
    else:
        for i in prange(n, schedule='static', num_threads=n_threads, nogil=True):
            g = gs * grad[i]
            p = param[i]
            sq = square_avg[i]
            if use_wd:
                g = g + wd * p
            sq = alpha_ * sq + alpha1 * g * g
            d = _rmsprop_direction(buf, i, g, f_sqrt(sq) + eps_, mom, use_mom)
            square_avg[i] = sq
            _put(pp, ap, i, p - lr_ * d, aw, use_avg)

cdef inline void _adam_block8(floating* param, const floating* grad, floating* exp_avg,
                        floating* exp_avg_sq, floating* max_exp_avg_sq, floating* param_avg,
                        Py_ssize_t i, floating sign, floating beta1c, floating beta2_,
                        floating beta2c, floating eps_, floating wd, floating decay, floating step,
                        floating inv_bc2, floating aw, bint l2, bint amsgrad,
                        bint use_avg) noexcept nogil:
    # Adam on elements i..i+7: every array's 32 bytes are loaded before any is stored, so GCC
    # emits two SSE vectors per array, loads first (see "Layout" above). Same formula and order as
    # the per-element loop in adam_step, except that AdamW's decay is always applied: decay is 1
    # unless decoupled, and p * 1 == p exactly. l2, amsgrad and use_avg are literals at every call
    # site, so each inlined copy is branch-free. `sign` is the gradient factor (grad_scale).
    cdef floating G[8]
    cdef floating P[8]
    cdef floating M[8]
    cdef floating V[8]
    cdef floating X[8]
    cdef floating A[8]
    cdef floating g, p, m, v
    cdef int j
    for j in range(8):
        G[j] = grad[i + j]
        P[j] = param[i + j]
        M[j] = exp_avg[i + j]
        V[j] = exp_avg_sq[i + j]
    if amsgrad:
        for j in range(8):
            X[j] = max_exp_avg_sq[i + j]
    if use_avg:
        for j in range(8):
            A[j] = param_avg[i + j]
    for j in range(8):
        g = sign * G[j]
        p = P[j] * decay
        if l2:
            g = g + wd * p
        m = M[j]
        m = m + beta1c * (g - m)
        v = beta2_ * V[j] + beta2c * g * g
        M[j] = m
        V[j] = v
        if amsgrad:
            v = f_max(X[j], v)
            X[j] = v
        p = p - step * m / (f_sqrt(v) * inv_bc2 + eps_)
        P[j] = p
        if use_avg:
            A[j] = A[j] + aw * (p - A[j])
    for j in range(8):
        exp_avg[i + j] = M[j]
        exp_avg_sq[i + j] = V[j]
        param[i + j] = P[j]
    if amsgrad:
        for j in range(8):
            max_exp_avg_sq[i + j] = X[j]
    if use_avg:
        for j in range(8):
            param_avg[i + j] = A[j]


cdef inline void _adam_tail8(floating* param, const floating* grad, floating* exp_avg,
                             floating* exp_avg_sq, floating* max_exp_avg_sq, floating* param_avg,
                             Py_ssize_t i, Py_ssize_t k, floating sign, floating beta1c,
                             floating beta2_, floating beta2c, floating eps_, floating wd,
                             floating decay, floating step, floating inv_bc2, floating aw,
                             bint l2, bint amsgrad, bint use_avg) noexcept nogil:
    # The last k < 8 elements: through _adam_block8 on a padded copy, so there is one formula.
    cdef floating P[8]
    cdef floating G[8]
    cdef floating M[8]
    cdef floating V[8]
    cdef floating X[8]
    cdef floating A[8]
    cdef Py_ssize_t j
    for j in range(8):  # harmless padding: g = 0, v = 1 keeps every operation finite
        P[j], G[j], M[j], V[j], X[j], A[j] = 0, 0, 0, 1, 1, 0
    for j in range(k):
        P[j], G[j], M[j], V[j] = param[i + j], grad[i + j], exp_avg[i + j], exp_avg_sq[i + j]
        if amsgrad:
            X[j] = max_exp_avg_sq[i + j]
        if use_avg:
            A[j] = param_avg[i + j]
    _adam_block8(P, G, M, V, X, A, 0, sign, beta1c, beta2_, beta2c, eps_, wd, decay, step, inv_bc2,
                 aw, l2, amsgrad, use_avg)
    for j in range(k):
        param[i + j], exp_avg[i + j], exp_avg_sq[i + j] = P[j], M[j], V[j]
        if amsgrad:
            max_exp_avg_sq[i + j] = X[j]
        if use_avg:
            param_avg[i + j] = A[j]


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
    cdef Py_ssize_t i, n = param.shape[0]
    n_threads = threads(n_threads)
    _check_sizes(n, "grad", grad.shape[0], True)
    _check_sizes(n, "exp_avg", exp_avg.shape[0], True)
    _check_sizes(n, "exp_avg_sq", exp_avg_sq.shape[0], True)
    _check_sizes(n, "max_exp_avg_sq", max_exp_avg_sq.shape[0], amsgrad)
    cdef bint use_avg = param_avg.shape[0] != 0
    _check_sizes(n, "param_avg", param_avg.shape[0], use_avg)
    cdef floating sign = <floating>(-grad_scale if maximize else grad_scale)
    cdef floating beta1c = <floating>(1.0 - beta1), beta2_ = <floating>beta2
    cdef floating beta2c = <floating>(1.0 - beta2), eps_ = <floating>eps
    cdef floating wd = <floating>weight_decay, decay = <floating>(1.0 - lr * weight_decay)
    cdef floating step = <floating>step_size, aw = <floating>avg_weight
    # sqrt(v) / bc2_sqrt as sqrt(v) * (1 / bc2_sqrt): a multiply instead of a divide per element.
    cdef floating inv_bc2 = <floating>(1.0 / bias_correction2_sqrt)
    cdef bint l2 = weight_decay != 0 and not decoupled
    cdef bint decay_param = weight_decay != 0 and decoupled
    cdef Py_ssize_t b, nb = n // 8
    cdef floating decay_all = decay if decay_param else 1
    cdef floating* pp = _ptr(param, True)
    cdef const floating* gp = &grad[0] if n else NULL
    cdef floating* mp = _ptr(exp_avg, True)
    cdef floating* vp = _ptr(exp_avg_sq, True)
    cdef floating* xp = _ptr(max_exp_avg_sq, amsgrad)
    cdef floating* ap = _ptr(param_avg, use_avg)
    cdef floating g, p, m, v, vmax
    if floating is float:
        # Whole blocks of 8 (see "Layout" above), then the < 8 remaining elements. The averaged
        # variant is one generic copy (flags as variables): the option costs its own traffic.
        if use_avg:
            for b in prange(nb, schedule='static', num_threads=n_threads, nogil=True):
                _adam_block8(pp, gp, mp, vp, xp, ap, 8 * b, sign, beta1c, beta2_, beta2c, eps_, wd,
                             decay_all, step, inv_bc2, aw, l2, amsgrad, True)
        elif amsgrad and l2:
            for b in prange(nb, schedule='static', num_threads=n_threads, nogil=True):
                _adam_block8(pp, gp, mp, vp, xp, ap, 8 * b, sign, beta1c, beta2_, beta2c, eps_, wd,
                             decay_all, step, inv_bc2, aw, True, True, False)
        elif amsgrad:
            for b in prange(nb, schedule='static', num_threads=n_threads, nogil=True):
                _adam_block8(pp, gp, mp, vp, xp, ap, 8 * b, sign, beta1c, beta2_, beta2c, eps_, wd,
                             decay_all, step, inv_bc2, aw, False, True, False)
        elif l2:
            for b in prange(nb, schedule='static', num_threads=n_threads, nogil=True):
                _adam_block8(pp, gp, mp, vp, xp, ap, 8 * b, sign, beta1c, beta2_, beta2c, eps_, wd,
                             decay_all, step, inv_bc2, aw, True, False, False)
        else:
            for b in prange(nb, schedule='static', num_threads=n_threads, nogil=True):
                _adam_block8(pp, gp, mp, vp, xp, ap, 8 * b, sign, beta1c, beta2_, beta2c, eps_, wd,
                             decay_all, step, inv_bc2, aw, False, False, False)
        if n > 8 * nb:
            _adam_tail8(pp, gp, mp, vp, xp, ap, 8 * nb, n - 8 * nb, sign, beta1c, beta2_, beta2c,
                        eps_, wd, decay_all, step, inv_bc2, aw, l2, amsgrad, use_avg)
    else:
        # float64: per element (blocks of 4 doubles compiled to 2x slower code).
        for i in prange(n, schedule='static', num_threads=n_threads, nogil=True):
            g = sign * grad[i]
            p = param[i]
            m = exp_avg[i]
            v = exp_avg_sq[i]
            if amsgrad:
                vmax = max_exp_avg_sq[i]
            if decay_param:
                p = p * decay
            elif l2:
                g = g + wd * p
            m = m + beta1c * (g - m)
            v = beta2_ * v + beta2c * g * g
            exp_avg[i] = m
            exp_avg_sq[i] = v
            if amsgrad:
                v = f_max(vmax, v)
                max_exp_avg_sq[i] = v
            _put(pp, ap, i, p - step * m / (f_sqrt(v) * inv_bc2 + eps_), aw, use_avg)


# ------------------------------------------------------------------------------ rules added in issue 10
# torch 2.13's single-tensor formulas, in torch's operation order (see fastopt/reference/optim.py);
# scalars that torch computes per step in Python are computed by the caller in double.

def nadam_step(floating[::1] param not None, const floating[::1] grad not None, floating[::1] exp_avg not None,
               floating[::1] exp_avg_sq not None, floating[::1] param_avg not None,
               double lr, double beta1, double beta2, double eps, double weight_decay,
               double bias_correction2, double grad_coef, double exp_avg_coef,
               bint decoupled, bint maximize, double grad_scale, double avg_weight, int n_threads):
    """torch.optim.NAdam step, in place. Per step the caller passes bias_correction2 = 1 - beta2**t,
    grad_coef = -lr * (1 - mu_t) / (1 - mu_product_t) and
    exp_avg_coef = -lr * mu_{t+1} / (1 - mu_product_t * mu_{t+1})."""
    cdef Py_ssize_t i, n = param.shape[0]
    n_threads = threads(n_threads)
    _check_sizes(n, "grad", grad.shape[0], True)
    _check_sizes(n, "exp_avg", exp_avg.shape[0], True)
    _check_sizes(n, "exp_avg_sq", exp_avg_sq.shape[0], True)
    cdef bint use_avg = param_avg.shape[0] != 0
    _check_sizes(n, "param_avg", param_avg.shape[0], use_avg)
    cdef floating gs = <floating>(-grad_scale if maximize else grad_scale)
    cdef floating beta1c = <floating>(1.0 - beta1), beta2_ = <floating>beta2
    cdef floating beta2c = <floating>(1.0 - beta2), eps_ = <floating>eps
    cdef floating wd = <floating>weight_decay, decay = <floating>(1.0 - lr * weight_decay)
    cdef floating bc2 = <floating>bias_correction2, cg = <floating>grad_coef
    cdef floating cm = <floating>exp_avg_coef, aw = <floating>avg_weight
    cdef bint l2 = weight_decay != 0 and not decoupled
    cdef bint decay_param = weight_decay != 0 and decoupled
    cdef floating* pp = _ptr(param, True)
    cdef floating* ap = _ptr(param_avg, use_avg)
    cdef floating g, p, m, v, d
    for i in prange(n, schedule='static', num_threads=n_threads, nogil=True):
        g = gs * grad[i]
        p = param[i]
        m = exp_avg[i]
        v = exp_avg_sq[i]
        if decay_param:
            p = p * decay
        elif l2:
            g = g + wd * p
        m = m + beta1c * (g - m)
        v = beta2_ * v + beta2c * g * g
        exp_avg[i] = m
        exp_avg_sq[i] = v
        # torch's order. One reciprocal times two products measured 6x slower here (not understood).
        d = f_sqrt(v / bc2) + eps_
        p = p + cg * g / d
        _put(pp, ap, i, p + cm * m / d, aw, use_avg)


def radam_step(floating[::1] param not None, const floating[::1] grad not None, floating[::1] exp_avg not None,
               floating[::1] exp_avg_sq not None, floating[::1] param_avg not None,
               double lr, double beta1, double beta2, double eps, double weight_decay,
               double bias_correction1, double bias_correction2_sqrt, double rect,
               bint rectified, bint decoupled, bint maximize, double grad_scale, double avg_weight,
               int n_threads):
    """torch.optim.RAdam step, in place. Per step the caller passes bias_correction1 = 1 - beta1**t,
    bias_correction2_sqrt = sqrt(1 - beta2**t), rectified = (rho_t > 5) and rect, the variance
    rectification term (used only when rectified)."""
    cdef Py_ssize_t i, n = param.shape[0]
    n_threads = threads(n_threads)
    _check_sizes(n, "grad", grad.shape[0], True)
    _check_sizes(n, "exp_avg", exp_avg.shape[0], True)
    _check_sizes(n, "exp_avg_sq", exp_avg_sq.shape[0], True)
    cdef bint use_avg = param_avg.shape[0] != 0
    _check_sizes(n, "param_avg", param_avg.shape[0], use_avg)
    cdef floating gs = <floating>(-grad_scale if maximize else grad_scale)
    cdef floating beta1c = <floating>(1.0 - beta1), beta2_ = <floating>beta2
    cdef floating beta2c = <floating>(1.0 - beta2), eps_ = <floating>eps, lr_ = <floating>lr
    cdef floating wd = <floating>weight_decay, decay = <floating>(1.0 - lr * weight_decay)
    # m / bc1 * lr as m * (lr / bc1), and sqrt(bc2) * rect folded: one divide per element, not three.
    cdef floating step = <floating>(lr / bias_correction1)
    cdef floating rc = <floating>(bias_correction2_sqrt * rect), aw = <floating>avg_weight
    cdef bint l2 = weight_decay != 0 and not decoupled
    cdef bint decay_param = weight_decay != 0 and decoupled
    cdef floating* pp = _ptr(param, True)
    cdef floating* ap = _ptr(param_avg, use_avg)
    cdef floating g, p, m, v, u
    for i in prange(n, schedule='static', num_threads=n_threads, nogil=True):
        g = gs * grad[i]
        p = param[i]
        m = exp_avg[i]
        v = exp_avg_sq[i]
        if decay_param:
            p = p * decay
        elif l2:
            g = g + wd * p
        m = m + beta1c * (g - m)
        v = beta2_ * v + beta2c * g * g
        exp_avg[i] = m
        exp_avg_sq[i] = v
        u = m * step
        if rectified:
            u = u * rc / (f_sqrt(v) + eps_)
        _put(pp, ap, i, p - u, aw, use_avg)


def adamax_step(floating[::1] param not None, const floating[::1] grad not None, floating[::1] exp_avg not None,
                floating[::1] exp_inf not None, floating[::1] param_avg not None,
                double clr, double beta1, double beta2, double eps, double weight_decay,
                bint maximize, double grad_scale, double avg_weight, int n_threads):
    """torch.optim.Adamax step, in place; clr = lr / (1 - beta1**t) from the caller."""
    cdef Py_ssize_t i, n = param.shape[0]
    n_threads = threads(n_threads)
    _check_sizes(n, "grad", grad.shape[0], True)
    _check_sizes(n, "exp_avg", exp_avg.shape[0], True)
    _check_sizes(n, "exp_inf", exp_inf.shape[0], True)
    cdef bint use_avg = param_avg.shape[0] != 0
    _check_sizes(n, "param_avg", param_avg.shape[0], use_avg)
    cdef floating gs = <floating>(-grad_scale if maximize else grad_scale)
    cdef floating beta1c = <floating>(1.0 - beta1), beta2_ = <floating>beta2
    cdef floating eps_ = <floating>eps, clr_ = <floating>clr
    cdef floating wd = <floating>weight_decay, aw = <floating>avg_weight
    cdef bint use_wd = weight_decay != 0
    cdef floating* pp = _ptr(param, True)
    cdef floating* ap = _ptr(param_avg, use_avg)
    cdef floating g, p, m, u
    for i in prange(n, schedule='static', num_threads=n_threads, nogil=True):
        g = gs * grad[i]
        p = param[i]
        m = exp_avg[i]
        u = exp_inf[i]
        if use_wd:
            g = g + wd * p
        m = m + beta1c * (g - m)
        u = f_max(beta2_ * u, f_abs(g) + eps_)
        exp_avg[i] = m
        exp_inf[i] = u
        _put(pp, ap, i, p - clr_ * m / u, aw, use_avg)


def adadelta_step(floating[::1] param not None, const floating[::1] grad not None, floating[::1] square_avg not None,
                  floating[::1] acc_delta not None, floating[::1] param_avg not None,
                  double lr, double rho, double eps, double weight_decay,
                  bint maximize, double grad_scale, double avg_weight, int n_threads):
    """torch.optim.Adadelta step, in place."""
    cdef Py_ssize_t i, n = param.shape[0]
    n_threads = threads(n_threads)
    _check_sizes(n, "grad", grad.shape[0], True)
    _check_sizes(n, "square_avg", square_avg.shape[0], True)
    _check_sizes(n, "acc_delta", acc_delta.shape[0], True)
    cdef bint use_avg = param_avg.shape[0] != 0
    _check_sizes(n, "param_avg", param_avg.shape[0], use_avg)
    cdef floating gs = <floating>(-grad_scale if maximize else grad_scale)
    cdef floating rho_ = <floating>rho, rho1 = <floating>(1.0 - rho), eps_ = <floating>eps
    cdef floating lr_ = <floating>lr, wd = <floating>weight_decay, aw = <floating>avg_weight
    cdef bint use_wd = weight_decay != 0
    cdef floating* pp = _ptr(param, True)
    cdef floating* ap = _ptr(param_avg, use_avg)
    cdef floating g, p, sq, acc, d
    for i in prange(n, schedule='static', num_threads=n_threads, nogil=True):
        g = gs * grad[i]
        p = param[i]
        sq = square_avg[i]
        acc = acc_delta[i]
        if use_wd:
            g = g + wd * p
        sq = sq * rho_ + rho1 * g * g
        d = f_sqrt((acc + eps_) / (sq + eps_)) * g   # one root: sqrt(a) / sqrt(b) = sqrt(a / b)
        acc = acc * rho_ + rho1 * d * d
        square_avg[i] = sq
        acc_delta[i] = acc
        _put(pp, ap, i, p - lr_ * d, aw, use_avg)


cdef inline floating _sign(floating c) noexcept nogil:
    # sign(c) as torch.sign: 1, -1, 0, NaN for NaN. Compare-and-subtract plus one select, so the
    # loop vectorizes (two early returns made it a branchy scalar loop, 10x slower at 16M).
    cdef floating s = <floating>(c > 0) - <floating>(c < 0)
    return c if c != c else s


def lion_step(floating[::1] param not None, const floating[::1] grad not None, floating[::1] exp_avg not None,
              floating[::1] param_avg not None, double lr, double beta1, double beta2, double weight_decay,
              bint maximize, double grad_scale, double avg_weight, int n_threads):
    """Lion (Chen et al. 2023, Algorithm 2), in place:
    c = beta1 * m + (1 - beta1) * g;  p = p * (1 - lr * wd) - lr * sign(c);
    m = beta2 * m + (1 - beta2) * g."""
    cdef Py_ssize_t i, n = param.shape[0]
    n_threads = threads(n_threads)
    _check_sizes(n, "grad", grad.shape[0], True)
    _check_sizes(n, "exp_avg", exp_avg.shape[0], True)
    cdef bint use_avg = param_avg.shape[0] != 0
    _check_sizes(n, "param_avg", param_avg.shape[0], use_avg)
    cdef floating gs = <floating>(-grad_scale if maximize else grad_scale)
    cdef floating b1 = <floating>beta1, b1c = <floating>(1.0 - beta1)
    cdef floating b2 = <floating>beta2, b2c = <floating>(1.0 - beta2)
    cdef floating lr_ = <floating>lr, decay = <floating>(1.0 - lr * weight_decay)
    cdef floating aw = <floating>avg_weight
    cdef floating* pp = _ptr(param, True)
    cdef floating* ap = _ptr(param_avg, use_avg)
    cdef floating g, p, m, c
    for i in prange(n, schedule='static', num_threads=n_threads, nogil=True):
        g = gs * grad[i]
        p = param[i]
        m = exp_avg[i]
        c = b1 * m + b1c * g
        exp_avg[i] = b2 * m + b2c * g
        _put(pp, ap, i, p * decay - lr_ * _sign(c), aw, use_avg)


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
