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
from cython cimport floating
from cython.parallel cimport prange

from _fastmath cimport f_sqrt, f_max

# Elements per thread below which a second thread costs more than it saves; the caller passes
# n_threads = fastopt._backend.threads_for(n, GRAIN), i.e. two threads from n >= 2*GRAIN.
# Measured (benchmarks/optim_kernels_roofline.py --grain; 2-core Zen 1, shared, min of 9), float32,
# 1 thread vs 2 threads:  n=32k Adam 1.03x SGD 0.69x;  n=64k Adam 1.20x SGD 0.90x;
# n=128k Adam 1.28x SGD 1.60x;  n=256k Adam 1.78x SGD 1.71x;  n=1M Adam 1.90x SGD 1.68x.
# 64k per thread is where the lightest kernel (SGD) starts to gain as well.
GRAIN = 65536


cdef int _check_sizes(Py_ssize_t n, str what, Py_ssize_t got, bint used) except -1:
    # A wrong length would read or write out of bounds: refuse it even though the API checks too.
    if used and got != n:
        raise ValueError(f"{what} must have {n} elements (the size of param), got {got}")
    if not used and got != 0 and got != n:
        raise ValueError(f"{what} is unused here and must be empty (or of size {n}), got {got} elements")
    return 0


def sgd_step(floating[::1] param, const floating[::1] grad, floating[::1] momentum_buffer,
             double lr, double weight_decay, double momentum, double dampening,
             bint nesterov, bint maximize, bint first_step, int n_threads):
    """torch.optim.SGD step, in place. momentum_buffer is empty when momentum == 0."""
    cdef Py_ssize_t i, n = param.shape[0]
    _check_sizes(n, "grad", grad.shape[0], True)
    _check_sizes(n, "momentum_buffer", momentum_buffer.shape[0], momentum != 0)
    cdef floating sign = -1 if maximize else 1  # exact: sign * x == -x bit for bit
    cdef floating lr_ = <floating>lr, wd = <floating>weight_decay, mom = <floating>momentum
    cdef floating damp1 = <floating>(1.0 - dampening)
    cdef bint use_wd = weight_decay != 0, use_mom = momentum != 0
    cdef floating g, p, b
    for i in prange(n, schedule='static', num_threads=n_threads, nogil=True):
        g = sign * grad[i]
        p = param[i]
        if use_wd:
            g = g + wd * p
        if use_mom:
            if first_step:
                b = g
            else:
                b = mom * momentum_buffer[i] + damp1 * g
            momentum_buffer[i] = b
            if nesterov:
                g = g + mom * b
            else:
                g = b
        param[i] = p - lr_ * g

def velocity_step(floating[::1] param, const floating[::1] grad, floating[::1] velocity,
                  double lr, double mu, bint nesterov, int n_threads):
    """CS231n momentum (sgd_momentum) step, in place; nesterov uses the lecture-notes form."""
    cdef Py_ssize_t i, n = param.shape[0]
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


def adagrad_step(floating[::1] param, const floating[::1] grad, floating[::1] state_sum,
                 double clr, double weight_decay, double eps, bint maximize, int n_threads):
    """torch.optim.Adagrad step, in place; clr = lr / (1 + (step - 1) * lr_decay) from the caller."""
    cdef Py_ssize_t i, n = param.shape[0]
    _check_sizes(n, "grad", grad.shape[0], True)
    _check_sizes(n, "state_sum", state_sum.shape[0], True)
    cdef floating sign = -1 if maximize else 1  # exact: sign * x == -x bit for bit
    cdef floating clr_ = <floating>clr, wd = <floating>weight_decay, eps_ = <floating>eps
    cdef bint use_wd = weight_decay != 0
    cdef floating g, p, s
    for i in prange(n, schedule='static', num_threads=n_threads, nogil=True):
        g = sign * grad[i]
        p = param[i]
        s = state_sum[i]
        if use_wd:
            g = g + wd * p
        s = s + g * g
        state_sum[i] = s
        param[i] = p - clr_ * g / (f_sqrt(s) + eps_)


cdef inline floating _rmsprop_direction(floating* buf, Py_ssize_t i, floating g, floating avg,
                                        floating mom, bint use_mom) noexcept nogil:
    # RMSprop's descent direction: g / avg, or through the momentum buffer (load, then store).
    cdef floating b
    if use_mom:
        b = mom * buf[i] + g / avg
        buf[i] = b
        return b
    return g / avg


def rmsprop_step(floating[::1] param, const floating[::1] grad, floating[::1] square_avg,
                 floating[::1] grad_avg, floating[::1] momentum_buffer,
                 double lr, double alpha, double eps, double weight_decay, double momentum,
                 bint centered, bint maximize, int n_threads):
    """torch.optim.RMSprop step, in place. grad_avg is empty unless centered, momentum_buffer
    empty unless momentum > 0."""
    cdef Py_ssize_t i, n = param.shape[0]
    _check_sizes(n, "grad", grad.shape[0], True)
    _check_sizes(n, "square_avg", square_avg.shape[0], True)
    _check_sizes(n, "grad_avg", grad_avg.shape[0], centered)
    _check_sizes(n, "momentum_buffer", momentum_buffer.shape[0], momentum > 0)
    cdef floating sign = -1 if maximize else 1  # exact: sign * x == -x bit for bit
    cdef floating lr_ = <floating>lr, alpha_ = <floating>alpha, eps_ = <floating>eps
    cdef floating alpha1 = <floating>(1.0 - alpha), wd = <floating>weight_decay
    cdef floating mom = <floating>momentum
    cdef bint use_wd = weight_decay != 0, use_mom = momentum > 0
    # NULL when unused: &buf[0] of an empty view is out of bounds (and raises in FASTOPT_DEBUG builds).
    cdef floating* buf = &momentum_buffer[0] if use_mom and n else NULL
    cdef floating g, p, sq, ga, d
    # Two loops, one per `centered`: with that branch inside, the body was too big for GCC to
    # unswitch and the loop stayed scalar. The shared tail is _rmsprop_direction.
    if centered:
        for i in prange(n, schedule='static', num_threads=n_threads, nogil=True):
            g = sign * grad[i]
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
            param[i] = p - lr_ * d
    else:
        for i in prange(n, schedule='static', num_threads=n_threads, nogil=True):
            g = sign * grad[i]
            p = param[i]
            sq = square_avg[i]
            if use_wd:
                g = g + wd * p
            sq = alpha_ * sq + alpha1 * g * g
            d = _rmsprop_direction(buf, i, g, f_sqrt(sq) + eps_, mom, use_mom)
            square_avg[i] = sq
            param[i] = p - lr_ * d

cdef inline void _adam_block8(floating* param, const floating* grad, floating* exp_avg,
                        floating* exp_avg_sq, floating* max_exp_avg_sq, Py_ssize_t i,
                        floating sign, floating beta1c, floating beta2_, floating beta2c,
                        floating eps_, floating wd, floating decay, floating step,
                        floating inv_bc2, bint l2, bint amsgrad) noexcept nogil:
    # Adam on elements i..i+7: every array's 32 bytes are loaded before any is stored, so GCC
    # emits two SSE vectors per array, loads first (see "Layout" above). Same formula and order as
    # the per-element loop in adam_step, except that AdamW's decay is always applied: decay is 1
    # unless decoupled, and p * 1 == p exactly. l2 and amsgrad are literals at every call site, so
    # each inlined copy is branch-free.
    cdef floating G[8]
    cdef floating P[8]
    cdef floating M[8]
    cdef floating V[8]
    cdef floating X[8]
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
        P[j] = p - step * m / (f_sqrt(v) * inv_bc2 + eps_)
    for j in range(8):
        exp_avg[i + j] = M[j]
        exp_avg_sq[i + j] = V[j]
        param[i + j] = P[j]
    if amsgrad:
        for j in range(8):
            max_exp_avg_sq[i + j] = X[j]



cdef inline void _adam_tail8(floating* param, const floating* grad, floating* exp_avg,
                             floating* exp_avg_sq, floating* max_exp_avg_sq, Py_ssize_t i,
                             Py_ssize_t k, floating sign, floating beta1c, floating beta2_,
                             floating beta2c, floating eps_, floating wd, floating decay,
                             floating step, floating inv_bc2, bint l2, bint amsgrad) noexcept nogil:
    # The last k < 8 elements: through _adam_block8 on a padded copy, so there is one formula.
    cdef floating P[8]
    cdef floating G[8]
    cdef floating M[8]
    cdef floating V[8]
    cdef floating X[8]
    cdef Py_ssize_t j
    for j in range(8):  # harmless padding: g = 0, v = 1 keeps every operation finite
        P[j], G[j], M[j], V[j], X[j] = 0, 0, 0, 1, 1
    for j in range(k):
        P[j], G[j], M[j], V[j] = param[i + j], grad[i + j], exp_avg[i + j], exp_avg_sq[i + j]
        if amsgrad:
            X[j] = max_exp_avg_sq[i + j]
    _adam_block8(P, G, M, V, X, 0, sign, beta1c, beta2_, beta2c, eps_, wd, decay, step, inv_bc2,
                 l2, amsgrad)
    for j in range(k):
        param[i + j], exp_avg[i + j], exp_avg_sq[i + j] = P[j], M[j], V[j]
        if amsgrad:
            max_exp_avg_sq[i + j] = X[j]


def adam_step(floating[::1] param, const floating[::1] grad, floating[::1] exp_avg,
              floating[::1] exp_avg_sq, floating[::1] max_exp_avg_sq,
              double lr, double beta1, double beta2, double eps, double weight_decay,
              double step_size, double bias_correction2_sqrt,
              bint decoupled, bint amsgrad, bint maximize, int n_threads):
    """torch.optim.Adam (decoupled=False) / AdamW (decoupled=True) step, in place.

    The caller passes step_size = lr / (1 - beta1**t) and bias_correction2_sqrt = sqrt(1 - beta2**t)
    (double, once per step). max_exp_avg_sq is empty unless amsgrad. CS231n's adam is this with
    weight_decay = 0.
    """
    cdef Py_ssize_t i, n = param.shape[0]
    _check_sizes(n, "grad", grad.shape[0], True)
    _check_sizes(n, "exp_avg", exp_avg.shape[0], True)
    _check_sizes(n, "exp_avg_sq", exp_avg_sq.shape[0], True)
    _check_sizes(n, "max_exp_avg_sq", max_exp_avg_sq.shape[0], amsgrad)
    cdef floating sign = -1 if maximize else 1  # exact: sign * x == -x bit for bit
    cdef floating beta1c = <floating>(1.0 - beta1), beta2_ = <floating>beta2
    cdef floating beta2c = <floating>(1.0 - beta2), eps_ = <floating>eps
    cdef floating wd = <floating>weight_decay, decay = <floating>(1.0 - lr * weight_decay)
    cdef floating step = <floating>step_size
    # sqrt(v) / bc2_sqrt as sqrt(v) * (1 / bc2_sqrt): a multiply instead of a divide per element.
    cdef floating inv_bc2 = <floating>(1.0 / bias_correction2_sqrt)
    cdef bint l2 = weight_decay != 0 and not decoupled
    cdef bint decay_param = weight_decay != 0 and decoupled
    cdef Py_ssize_t b, nb = n // 8
    cdef floating decay_all = decay if decay_param else 1
    cdef floating* pp = &param[0] if n else NULL
    cdef const floating* gp = &grad[0] if n else NULL
    cdef floating* mp = &exp_avg[0] if n else NULL
    cdef floating* vp = &exp_avg_sq[0] if n else NULL
    cdef floating* xp = &max_exp_avg_sq[0] if amsgrad and n else NULL
    cdef floating g, p, m, v, vmax
    if floating is float:
        # Whole blocks of 8 (see "Layout" above), then the < 8 remaining elements.
        if amsgrad and l2:
            for b in prange(nb, schedule='static', num_threads=n_threads, nogil=True):
                _adam_block8(pp, gp, mp, vp, xp, 8 * b, sign, beta1c, beta2_, beta2c, eps_, wd,
                             decay_all, step, inv_bc2, True, True)
        elif amsgrad:
            for b in prange(nb, schedule='static', num_threads=n_threads, nogil=True):
                _adam_block8(pp, gp, mp, vp, xp, 8 * b, sign, beta1c, beta2_, beta2c, eps_, wd,
                             decay_all, step, inv_bc2, False, True)
        elif l2:
            for b in prange(nb, schedule='static', num_threads=n_threads, nogil=True):
                _adam_block8(pp, gp, mp, vp, xp, 8 * b, sign, beta1c, beta2_, beta2c, eps_, wd,
                             decay_all, step, inv_bc2, True, False)
        else:
            for b in prange(nb, schedule='static', num_threads=n_threads, nogil=True):
                _adam_block8(pp, gp, mp, vp, xp, 8 * b, sign, beta1c, beta2_, beta2c, eps_, wd,
                             decay_all, step, inv_bc2, False, False)
        if n > 8 * nb:
            _adam_tail8(pp, gp, mp, vp, xp, 8 * nb, n - 8 * nb, sign, beta1c, beta2_, beta2c, eps_,
                        wd, decay_all, step, inv_bc2, l2, amsgrad)
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
            param[i] = p - step * m / (f_sqrt(v) * inv_bc2 + eps_)


