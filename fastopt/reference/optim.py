"""Pure-NumPy twins of the fused optimizer kernels in ``src/_optim_kernels.pyx``.

Same function names and signatures as the compiled module (``n_threads`` is accepted and ignored).
Each function updates ``param`` and its state arrays in place (``arr[...] = expr``); temporaries are
allowed here, which makes this module the "NumPy baseline" of the benchmarks as well as the test
oracle and the fallback backend.

Precision and order follow the kernels exactly: every Python-float hyperparameter is converted once
to the array's dtype, derived constants (``1 - beta``, ``1 - lr*wd``, ``1/sqrt(bc2)``, ...) are
computed in double first and then converted, and each expression keeps the kernel's operation order
(``a - b * c / d`` is ``a - ((b * c) / d)`` in both). On x86-64 without FMA the two backends agree
bit for bit; a compiler that contracts ``a*b + c`` into an FMA differs by an ulp or so.

Arrays are 1-D and C-contiguous (callers pass ``a.reshape(-1)``). A state buffer that the
configuration does not use (momentum buffer when momentum == 0, ...) is passed empty and untouched.
Per-step scalars (Adam's bias corrections, Adagrad's decayed lr) come from the caller, computed once
per step in double.
"""
import numpy as np

# Elements per thread below which a second thread costs more than it saves; the compiled module's
# value (measured there), mirrored so that both backends expose the same constant.
GRAIN = 65536


def _check_sizes(n, what, buf, used):
    # Mirrors the compiled module: a used buffer matches param, an unused one is empty (or matches).
    if used and buf.shape[0] != n:
        raise ValueError(f"{what} must have {n} elements (the size of param), got {buf.shape[0]}")
    if not used and buf.shape[0] not in (0, n):
        raise ValueError(f"{what} is unused here and must be empty (or of size {n}), "
                         f"got {buf.shape[0]} elements")


def _signed(grad, maximize):
    # maximize: ascend, i.e. descend on -grad (torch.optim's `maximize`).
    return -grad if maximize else grad


def sgd_step(param, grad, momentum_buffer, lr, weight_decay, momentum, dampening,
             nesterov, maximize, first_step, n_threads):
    """torch.optim.SGD, one step in place.

    g = -grad if maximize else grad
    g = g + weight_decay * param                          (if weight_decay != 0)
    buf = g                                               (first step, momentum != 0)
    buf = momentum * buf + (1 - dampening) * g            (later steps)
    g = g + momentum * buf if nesterov else buf           (if momentum != 0)
    param = param - lr * g

    momentum == 0: plain SGD, momentum_buffer is empty and untouched. CS231n's ``sgd`` is this with
    weight_decay = momentum = 0.
    """
    n = param.shape[0]
    _check_sizes(n, "grad", grad, True)
    _check_sizes(n, "momentum_buffer", momentum_buffer, momentum != 0)
    t = param.dtype.type
    g = _signed(grad, maximize)
    if weight_decay != 0:
        g = g + t(weight_decay) * param
    if momentum != 0:
        mom = t(momentum)
        if first_step:
            momentum_buffer[...] = g
        else:
            momentum_buffer[...] = mom * momentum_buffer + t(1.0 - dampening) * g
        g = g + mom * momentum_buffer if nesterov else momentum_buffer
    param[...] = param - t(lr) * g


def velocity_step(param, grad, velocity, lr, mu, nesterov, n_threads):
    """CS231n momentum, one step in place (assignment 2 ``sgd_momentum``; lecture-notes Nesterov).

    plain:     v = mu * v - lr * grad;  param = param + v
    nesterov:  v_prev = v;  v = mu * v - lr * grad;  param = param - mu * v_prev + (1 + mu) * v

    Unlike torch's SGD, the learning rate sits inside the velocity.
    """
    n = param.shape[0]
    _check_sizes(n, "grad", grad, True)
    _check_sizes(n, "velocity", velocity, True)
    t = param.dtype.type
    mu_ = t(mu)
    v_prev = velocity.copy()
    velocity[...] = mu_ * v_prev - t(lr) * grad
    if nesterov:
        param[...] = param - mu_ * v_prev + t(1.0 + mu) * velocity
    else:
        param[...] = param + velocity


def adagrad_step(param, grad, state_sum, clr, weight_decay, eps, maximize, n_threads):
    """torch.optim.Adagrad, one step in place.

    clr = lr / (1 + (step - 1) * lr_decay), computed by the caller.
    g = -grad if maximize else grad
    g = g + weight_decay * param                          (if weight_decay != 0)
    state_sum = state_sum + g * g
    param = param - clr * g / (sqrt(state_sum) + eps)

    CS231n's adagrad (lecture notes) is this with lr_decay = weight_decay = 0 and state_sum = cache.
    """
    n = param.shape[0]
    _check_sizes(n, "grad", grad, True)
    _check_sizes(n, "state_sum", state_sum, True)
    t = param.dtype.type
    g = _signed(grad, maximize)
    if weight_decay != 0:
        g = g + t(weight_decay) * param
    state_sum[...] = state_sum + g * g
    param[...] = param - t(clr) * g / (np.sqrt(state_sum) + t(eps))


def rmsprop_step(param, grad, square_avg, grad_avg, momentum_buffer, lr, alpha, eps,
                 weight_decay, momentum, centered, maximize, n_threads):
    """torch.optim.RMSprop, one step in place.

    g = -grad if maximize else grad
    g = g + weight_decay * param                          (if weight_decay != 0)
    square_avg = alpha * square_avg + (1 - alpha) * g * g
    centered:  grad_avg = grad_avg + (1 - alpha) * (g - grad_avg)
               avg = sqrt(square_avg - grad_avg * grad_avg) + eps
    else:      avg = sqrt(square_avg) + eps
    momentum > 0:  buf = momentum * buf + g / avg;  param = param - lr * buf
    else:          param = param - lr * (g / avg)          (torch: addcdiv, lr * (g/avg))

    grad_avg is empty unless centered, momentum_buffer empty unless momentum > 0. CS231n's rmsprop is
    this with alpha = decay_rate, square_avg = cache, not centered, no momentum and no weight decay.
    """
    n = param.shape[0]
    _check_sizes(n, "grad", grad, True)
    _check_sizes(n, "square_avg", square_avg, True)
    _check_sizes(n, "grad_avg", grad_avg, centered)
    _check_sizes(n, "momentum_buffer", momentum_buffer, momentum > 0)
    t = param.dtype.type
    lr_, alpha1 = t(lr), t(1.0 - alpha)
    g = _signed(grad, maximize)
    if weight_decay != 0:
        g = g + t(weight_decay) * param
    square_avg[...] = t(alpha) * square_avg + alpha1 * g * g
    if centered:
        grad_avg[...] = grad_avg + alpha1 * (g - grad_avg)
        avg = np.sqrt(square_avg - grad_avg * grad_avg) + t(eps)
    else:
        avg = np.sqrt(square_avg) + t(eps)
    if momentum > 0:
        momentum_buffer[...] = t(momentum) * momentum_buffer + g / avg
        param[...] = param - lr_ * momentum_buffer
    else:
        param[...] = param - lr_ * (g / avg)


def adam_step(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, lr, beta1, beta2, eps,
              weight_decay, step_size, bias_correction2_sqrt, decoupled, amsgrad, maximize,
              n_threads):
    """torch.optim.Adam (decoupled=False) and AdamW (decoupled=True), one step in place.

    The caller computes, in double, at step t (1-based): bc1 = 1 - beta1**t, bc2 = 1 - beta2**t,
    step_size = lr / bc1, bias_correction2_sqrt = sqrt(bc2).
    g = -grad if maximize else grad
    AdamW: param = param * (1 - lr * weight_decay);  Adam: g = g + weight_decay * param  (wd != 0)
    m = m + (1 - beta1) * (g - m)                         (torch's lerp form of beta1*m + (1-beta1)*g)
    v = beta2 * v + (1 - beta2) * g * g
    amsgrad: vmax = max(vmax, v) and vmax replaces v below (max_exp_avg_sq is empty otherwise)
    denom = sqrt(v) * (1 / bias_correction2_sqrt) + eps
    param = param - step_size * m / denom

    CS231n's adam (assignment 2: m, v, t in the config, bias-corrected mt/vt) is this function with
    weight_decay = 0, decoupled = amsgrad = maximize = False; there is no separate kernel for it.
    """
    n = param.shape[0]
    _check_sizes(n, "grad", grad, True)
    _check_sizes(n, "exp_avg", exp_avg, True)
    _check_sizes(n, "exp_avg_sq", exp_avg_sq, True)
    _check_sizes(n, "max_exp_avg_sq", max_exp_avg_sq, amsgrad)
    t = param.dtype.type
    g = _signed(grad, maximize)
    p = param
    if weight_decay != 0:
        if decoupled:
            p = p * t(1.0 - lr * weight_decay)
        else:
            g = g + t(weight_decay) * p
    exp_avg[...] = exp_avg + t(1.0 - beta1) * (g - exp_avg)
    exp_avg_sq[...] = t(beta2) * exp_avg_sq + t(1.0 - beta2) * g * g
    v = exp_avg_sq
    if amsgrad:
        np.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
        v = max_exp_avg_sq
    denom = np.sqrt(v) * t(1.0 / bias_correction2_sqrt) + t(eps)
    param[...] = p - t(step_size) * exp_avg / denom
