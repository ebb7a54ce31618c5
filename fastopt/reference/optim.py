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

from ._contract import threads

# Elements per thread below which a second thread costs more than it saves; the compiled module's
# value (measured there), mirrored so that both backends expose the same constant.
GRAIN = 10240
STEP_GRAIN = {"sgd_step": (12288, 6144), "velocity_step": (12288, 6144), "adagrad_step": (6144, 1536),
              "rmsprop_step": (6656, 1536), "adam_step": (6656, 2048), "nadam_step": (3072, 1024),
              "radam_step": (8192, 5632), "adamax_step": (8704, 4608), "adadelta_step": (6144, 2048),
              "lion_step": (6656, 1024)}


def _check_sizes(n, what, buf, used):
    # Mirrors the compiled module: a used buffer matches param, an unused one is empty (or matches).
    if used and buf.shape[0] != n:
        raise ValueError(f"{what} must have {n} elements (the size of param), got {buf.shape[0]}")
    if not used and buf.shape[0] not in (0, n):
        raise ValueError(f"{what} is unused here and must be empty (or of size {n}), "
                         f"got {buf.shape[0]} elements")


def _signed(grad, maximize, grad_scale=1.0):
    # The gradient as the kernels read it: grad_scale (clipping's factor) and -1 for `maximize`
    # (torch.optim's ascent) folded into one factor in the array's precision; 1 and -1 are exact.
    factor = -grad_scale if maximize else grad_scale
    if factor == 1.0:
        return grad
    if factor == -1.0:
        return -grad
    return grad.dtype.type(factor) * grad


def _check_step(n_threads, param, param_avg=None, **buffers):
    # A step's checks, all before anything is written (the kernels do the same): n_threads, then
    # every buffer against param's size. A buffer given as (array, used) may be empty when unused;
    # param_avg empty means no average.
    threads(n_threads)
    n = param.shape[0]
    if param_avg is not None:
        buffers["param_avg"] = (param_avg, param_avg.shape[0] != 0)
    for what, buf in buffers.items():
        buf, used = buf if isinstance(buf, tuple) else (buf, True)
        _check_sizes(n, what, buf, used)


def _put(param, param_avg, new, avg_weight):
    # The new parameter, and its running average moved toward it (param_avg empty: no average).
    if param_avg.shape[0]:
        param_avg[...] = param_avg + param.dtype.type(avg_weight) * (new - param_avg)
    param[...] = new


def sgd_step(param, grad, momentum_buffer, param_avg, lr, weight_decay, momentum, dampening,
             nesterov, maximize, first_step, grad_scale, avg_weight, n_threads):
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
    _check_step(n_threads, param, param_avg, grad=grad, momentum_buffer=(momentum_buffer, momentum != 0))
    t = param.dtype.type
    g = _signed(grad, maximize, grad_scale)
    if weight_decay != 0:
        g = g + t(weight_decay) * param
    if momentum != 0:
        mom = t(momentum)
        if first_step:
            momentum_buffer[...] = g
        else:
            momentum_buffer[...] = mom * momentum_buffer + t(1.0 - dampening) * g
        g = g + mom * momentum_buffer if nesterov else momentum_buffer
    _put(param, param_avg, param - t(lr) * g, avg_weight)


def velocity_step(param, grad, velocity, lr, mu, nesterov, n_threads):
    """CS231n momentum, one step in place (assignment 2 ``sgd_momentum``; lecture-notes Nesterov).

    plain:     v = mu * v - lr * grad;  param = param + v
    nesterov:  v_prev = v;  v = mu * v - lr * grad;  param = param - mu * v_prev + (1 + mu) * v

    Unlike torch's SGD, the learning rate sits inside the velocity.
    """
    _check_step(n_threads, param, grad=grad, velocity=velocity)
    t = param.dtype.type
    mu_ = t(mu)
    v_prev = velocity.copy()
    velocity[...] = mu_ * v_prev - t(lr) * grad
    if nesterov:
        param[...] = param - mu_ * v_prev + t(1.0 + mu) * velocity
    else:
        param[...] = param + velocity


def adagrad_step(param, grad, state_sum, param_avg, clr, weight_decay, eps, maximize, grad_scale,
                 avg_weight, n_threads):
    """torch.optim.Adagrad, one step in place.

    clr = lr / (1 + (step - 1) * lr_decay), computed by the caller.
    g = -grad if maximize else grad
    g = g + weight_decay * param                          (if weight_decay != 0)
    state_sum = state_sum + g * g
    param = param - clr * g / (sqrt(state_sum) + eps)

    CS231n's adagrad (lecture notes) is this with lr_decay = weight_decay = 0 and state_sum = cache.
    """
    _check_step(n_threads, param, param_avg, grad=grad, state_sum=state_sum)
    t = param.dtype.type
    g = _signed(grad, maximize, grad_scale)
    if weight_decay != 0:
        g = g + t(weight_decay) * param
    state_sum[...] = state_sum + g * g
    _put(param, param_avg, param - t(clr) * g / (np.sqrt(state_sum) + t(eps)), avg_weight)


def rmsprop_step(param, grad, square_avg, grad_avg, momentum_buffer, param_avg, lr, alpha, eps,
                 weight_decay, momentum, centered, maximize, grad_scale, avg_weight, n_threads):
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
    _check_step(n_threads, param, param_avg, grad=grad, square_avg=square_avg, grad_avg=(grad_avg, centered),
                momentum_buffer=(momentum_buffer, momentum > 0))
    t = param.dtype.type
    lr_, alpha1 = t(lr), t(1.0 - alpha)
    g = _signed(grad, maximize, grad_scale)
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
        _put(param, param_avg, param - lr_ * momentum_buffer, avg_weight)
    else:
        _put(param, param_avg, param - lr_ * (g / avg), avg_weight)


def adam_step(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, param_avg, lr, beta1, beta2, eps,
              weight_decay, step_size, bias_correction2_sqrt, decoupled, amsgrad, maximize,
              grad_scale, avg_weight, n_threads):
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
    _check_step(n_threads, param, param_avg, grad=grad, exp_avg=exp_avg, exp_avg_sq=exp_avg_sq,
                max_exp_avg_sq=(max_exp_avg_sq, amsgrad))
    t = param.dtype.type
    g = _signed(grad, maximize, grad_scale)
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
    _put(param, param_avg, p - t(step_size) * exp_avg / denom, avg_weight)


def _decay_or_l2(param, g, lr, weight_decay, decoupled):
    # (param, g) after weight decay: decoupled p * (1 - lr*wd) (AdamW), else L2 g + wd * p.
    t = param.dtype.type
    if weight_decay == 0:
        return param, g
    if decoupled:
        return param * t(1.0 - lr * weight_decay), g
    return param, g + t(weight_decay) * param


def _adam_moments(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, weight_decay, decoupled,
                  maximize, grad_scale):
    # NAdam's and RAdam's shared first half (sizes checked by the caller): the gradient read, weight
    # decay (L2 or decoupled) and the Adam moments m, v (updated in place). Returns (param after decay, g).
    t = param.dtype.type
    p, g = _decay_or_l2(param, _signed(grad, maximize, grad_scale), lr, weight_decay, decoupled)
    exp_avg[...] = exp_avg + t(1.0 - beta1) * (g - exp_avg)
    exp_avg_sq[...] = t(beta2) * exp_avg_sq + t(1.0 - beta2) * g * g
    return p, g


def nadam_step(param, grad, exp_avg, exp_avg_sq, param_avg, lr, beta1, beta2, eps, weight_decay,
               bias_correction2, grad_coef, exp_avg_coef, decoupled, maximize, grad_scale,
               avg_weight, n_threads):
    """torch.optim.NAdam, one step in place (torch 2.13's single-tensor formula).

    The caller computes at step t, in double: mu_t = beta1 * (1 - 0.5 * 0.96**(t * momentum_decay)),
    mu_product_t = mu_product_{t-1} * mu_t, bias_correction2 = 1 - beta2**t,
    grad_coef = -lr * (1 - mu_t) / (1 - mu_product_t), exp_avg_coef = -lr * mu_{t+1} / (1 - mu_product_t * mu_{t+1}).
    g = grad_scale * grad (negated if maximize); weight decay as Adam / AdamW (decoupled)
    m = m + (1 - beta1) * (g - m);  v = beta2 * v + (1 - beta2) * g * g
    denom = sqrt(v / bias_correction2) + eps
    param = param + grad_coef * g / denom;  param = param + exp_avg_coef * m / denom
    """
    _check_step(n_threads, param, param_avg, grad=grad, exp_avg=exp_avg, exp_avg_sq=exp_avg_sq)
    p, g = _adam_moments(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, weight_decay, decoupled,
                         maximize, grad_scale)
    t = param.dtype.type
    denom = np.sqrt(exp_avg_sq / t(bias_correction2)) + t(eps)
    p = p + t(grad_coef) * g / denom
    _put(param, param_avg, p + t(exp_avg_coef) * exp_avg / denom, avg_weight)


def radam_step(param, grad, exp_avg, exp_avg_sq, param_avg, lr, beta1, beta2, eps, weight_decay,
               bias_correction1, bias_correction2_sqrt, rect, rectified, decoupled, maximize,
               grad_scale, avg_weight, n_threads):
    """torch.optim.RAdam, one step in place (torch 2.13's single-tensor formula).

    The caller computes at step t, in double: bias_correction1 = 1 - beta1**t,
    bias_correction2_sqrt = sqrt(1 - beta2**t), rho_inf = 2 / (1 - beta2) - 1,
    rho_t = rho_inf - 2 t beta2**t / (1 - beta2**t), rectified = rho_t > 5 and
    rect = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t)).
    m, v as Adam (weight decay as Adam / AdamW);  u = m * (lr / bias_correction1)
    rectified: u = u * (bias_correction2_sqrt * rect) / (sqrt(v) + eps);  param = param - u
    (torch: m / bias_correction1 * lr * (bias_correction2_sqrt / (sqrt(v) + eps)) * rect; the
    constants folded in double leave one divide per element, a rounding or two apart in float32)
    """
    _check_step(n_threads, param, param_avg, grad=grad, exp_avg=exp_avg, exp_avg_sq=exp_avg_sq)
    p, g = _adam_moments(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, weight_decay, decoupled,
                         maximize, grad_scale)
    t = param.dtype.type
    u = exp_avg * t(lr / bias_correction1)
    if rectified:
        u = u * t(bias_correction2_sqrt * rect) / (np.sqrt(exp_avg_sq) + t(eps))
    _put(param, param_avg, p - u, avg_weight)


def adamax_step(param, grad, exp_avg, exp_inf, param_avg, clr, beta1, beta2, eps, weight_decay,
                maximize, grad_scale, avg_weight, n_threads):
    """torch.optim.Adamax, one step in place; clr = lr / (1 - beta1**t) from the caller.

    g (+ weight_decay * param);  m = m + (1 - beta1) * (g - m);
    u = max(beta2 * u, |g| + eps);  param = param - clr * m / u
    """
    _check_step(n_threads, param, param_avg, grad=grad, exp_avg=exp_avg, exp_inf=exp_inf)
    t = param.dtype.type
    _, g = _decay_or_l2(param, _signed(grad, maximize, grad_scale), 0.0, weight_decay, False)
    exp_avg[...] = exp_avg + t(1.0 - beta1) * (g - exp_avg)
    np.maximum(t(beta2) * exp_inf, np.abs(g) + t(eps), out=exp_inf)
    _put(param, param_avg, param - t(clr) * exp_avg / exp_inf, avg_weight)


def adadelta_step(param, grad, square_avg, acc_delta, param_avg, lr, rho, eps, weight_decay,
                  maximize, grad_scale, avg_weight, n_threads):
    """torch.optim.Adadelta, one step in place.

    g (+ weight_decay * param);  square_avg = square_avg * rho + (1 - rho) * g * g
    delta = sqrt((acc_delta + eps) / (square_avg + eps)) * g   (torch: sqrt(a) / sqrt(b) * g)
    acc_delta = acc_delta * rho + (1 - rho) * delta * delta;  param = param - lr * delta
    """
    _check_step(n_threads, param, param_avg, grad=grad, square_avg=square_avg, acc_delta=acc_delta)
    t = param.dtype.type
    _, g = _decay_or_l2(param, _signed(grad, maximize, grad_scale), 0.0, weight_decay, False)
    rho_, rho1, eps_ = t(rho), t(1.0 - rho), t(eps)
    square_avg[...] = square_avg * rho_ + rho1 * g * g
    delta = np.sqrt((acc_delta + eps_) / (square_avg + eps_)) * g
    acc_delta[...] = acc_delta * rho_ + rho1 * delta * delta
    _put(param, param_avg, param - t(lr) * delta, avg_weight)


def lion_step(param, grad, exp_avg, param_avg, lr, beta1, beta2, weight_decay, maximize,
              grad_scale, avg_weight, n_threads):
    """Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms", Algorithm 2), in place.

    c = beta1 * m + (1 - beta1) * g;  param = param * (1 - lr * weight_decay) - lr * sign(c)
    m = beta2 * m + (1 - beta2) * g
    """
    _check_step(n_threads, param, param_avg, grad=grad, exp_avg=exp_avg)
    t = param.dtype.type
    g = _signed(grad, maximize, grad_scale)
    c = t(beta1) * exp_avg + t(1.0 - beta1) * g
    exp_avg[...] = t(beta2) * exp_avg + t(1.0 - beta2) * g
    _put(param, param_avg, param * t(1.0 - lr * weight_decay) - t(lr) * np.sign(c), avg_weight)


NORM_BLOCK = 16384


def norm_partial(x, norm_type, n_threads):
    """(accumulated norm, all finite) as the compiled kernel: sum x**2 (norm_type 2), sum |x|
    (1), max |x| (inf) or sum |x|**p, in double; the order of additions differs from the
    kernel's fixed lanes, so sums agree to rounding, not bitwise."""
    threads(n_threads)
    if not norm_type > 0:
        raise ValueError(f"norm_type must be > 0 (or inf), got {norm_type}")
    if x.shape[0] == 0:
        return 0.0, True
    a = np.abs(x.astype(np.float64))
    finite = bool(np.isfinite(a).all())
    if norm_type == np.inf:
        return float(a.max()), finite
    if norm_type == 2.0:
        return float(np.dot(a, a)), finite
    if norm_type == 1.0:
        return float(a.sum()), finite
    return float((a ** norm_type).sum()), finite


def scale_(x, factor, n_threads):
    """x *= factor in place (factor converted to x's precision)."""
    threads(n_threads)
    x *= x.dtype.type(factor)


# ---------------------------------------------------------------- multi-tensor kernels (issue 11, 12)
# The compiled module's StepPlan / StepGuard / <rule>_multi, as plain Python over the single-tensor
# twins above. The update/weight ratio sums the compiled kernel's chunks of NORM_BLOCK elements
# in chunk order, in double; within a chunk NumPy's pairwise sum differs from the kernel's 8 lanes,
# so ratios agree to rounding, not bitwise.
_STATE_ARGS = {"adam_step": ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"), "sgd_step": ("momentum_buffer",),
               "velocity_step": ("velocity",), "adagrad_step": ("state_sum",),
               "rmsprop_step": ("square_avg", "grad_avg", "momentum_buffer"), "nadam_step": ("exp_avg", "exp_avg_sq"),
               "radam_step": ("exp_avg", "exp_avg_sq"), "adamax_step": ("exp_avg", "exp_inf"),
               "adadelta_step": ("square_avg", "acc_delta"), "lion_step": ("exp_avg",)}


class StepPlan:
    """Every tensor of one step of one rule (see the compiled module's StepPlan for the contract)."""

    def __init__(self, params, grads, states, avgs):
        for name, seq in (("params", params), ("grads", grads), ("states", states), ("avgs", avgs)):
            if not isinstance(seq, list):
                raise TypeError(f"{name} must be a list, got {type(seq).__name__}")
        nseg = len(params)
        if nseg == 0 or not len(grads) == len(states) == len(avgs) == nseg:
            raise ValueError(f"params, grads, states and avgs must have one entry per tensor (>= 1), got "
                             f"{len(params)}, {len(grads)}, {len(states)}, {len(avgs)}")
        first = params[0]
        if not isinstance(first, np.ndarray) or first.dtype not in (np.float32, np.float64):
            raise TypeError(f"params[0] must be a float32 or float64 ndarray, got {type(first).__name__}")
        dtype = first.dtype
        nstate = len(states[0]) if isinstance(states[0], list) else -1
        if not 0 <= nstate <= 3:
            raise TypeError("states[0] must be a list of at most 3 arrays")
        for k, st in enumerate(states):
            if not isinstance(st, list) or len(st) != nstate:
                raise ValueError(f"states[{k}] must be a list of {nstate} arrays (as states[0])")
        used = tuple(any(getattr(st[j], "size", 0) != 0 for st in states) for j in range(nstate)) + (
            any(getattr(a, "size", 0) != 0 for a in avgs),)
        for k in range(nseg):
            n = params[k].size if isinstance(params[k], np.ndarray) else -1
            arrays = [(f"params[{k}]", params[k], True, True), (f"grads[{k}]", grads[k], True, False)]
            arrays += [(f"states[{k}][{j}]", states[k][j], used[j] and n != 0, True) for j in range(nstate)]
            arrays.append((f"avgs[{k}]", avgs[k], used[nstate] and n != 0, True))
            for what, a, use, write in arrays:
                if type(a) is not np.ndarray:
                    raise TypeError(f"{what} must be an ndarray, got {type(a).__name__}")
                if a.dtype != dtype:
                    raise TypeError(f"{what} must be {dtype}, got {a.dtype}")
                if a.ndim != 1 or not a.flags.c_contiguous:
                    raise ValueError(f"{what} must be 1-D and C-contiguous, got shape {a.shape}")
                if write and a.size and not a.flags.writeable:
                    raise ValueError(f"{what} must be writeable")
                _check_sizes(n, what, a, use)
        self.params, self.grads, self.states, self.avgs = params, grads, states, avgs
        self.n_segments, self.used, self.dtype = nseg, used, dtype
        self.size = sum(p.size for p in params)
        self.n_chunks = sum(-(-p.size // NORM_BLOCK) for p in params)
        self.is_double = dtype == np.float64
        self._ratios = []

    def ratios(self):
        return list(self._ratios)

    def run(self, kernel, scalars, track_ratio, n_threads):
        threads(n_threads)
        names = _STATE_ARGS[kernel.__name__]
        if len(self.used) != len(names) + 1:
            raise ValueError(f"this plan holds {len(self.used) - 1} state arrays per tensor, the kernel "
                             f"takes {len(names)}")
        old = [p.copy() for p in self.params] if track_ratio else None
        for k, p in enumerate(self.params):
            avg = {} if kernel is velocity_step else {"param_avg": self.avgs[k]}
            kernel(param=p, grad=self.grads[k], **dict(zip(names, self.states[k])), **avg, **scalars, n_threads=1)
        if track_ratio:
            self._ratios = [ratio_of(o, p) for o, p in zip(old, self.params)]


def _chunk_sums(x):
    # sum of x**2 (x in double) per chunk of NORM_BLOCK, added in chunk order.
    total = 0.0
    for lo in range(0, x.size, NORM_BLOCK):
        c = x[lo:lo + NORM_BLOCK]
        total += float(np.dot(c, c))
    return total


def ratio_of(old, new):
    """||new - old|| / ||old|| (0 when old is all zeros) in double, summed per NORM_BLOCK chunk."""
    o = old.astype(np.float64)
    p2 = _chunk_sums(o)
    d2 = _chunk_sums(new.astype(np.float64) - o)
    return 0.0 if p2 == 0 else float(np.sqrt(d2) / np.sqrt(p2))


def _check_used(plan, want):
    if plan.used != want:
        raise ValueError(f"plan's used state arrays (and average) are {plan.used}; these "
                         f"hyperparameters need {want}")


def _multi(kernel, plan, used, scalars, track_ratio, n_threads):
    # <rule>_multi: the state arrays (and average) the hyperparameters need, then every tensor.
    if not isinstance(plan, StepPlan):
        raise TypeError(f"plan must be a StepPlan, got {type(plan).__name__}")
    _check_used(plan, used + ((plan.used[-1],) if kernel is not velocity_step else (False,)))
    plan.run(kernel, scalars, track_ratio, n_threads)


def adam_multi(plan, lr, beta1, beta2, eps, weight_decay, step_size, bias_correction2_sqrt, decoupled,
               amsgrad, maximize, grad_scale, avg_weight, track_ratio, n_threads):
    """adam_step on every tensor of `plan` (states exp_avg, exp_avg_sq, max_exp_avg_sq)."""
    _multi(adam_step, plan, (True, True, bool(amsgrad)),
           dict(lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay, step_size=step_size,
                bias_correction2_sqrt=bias_correction2_sqrt, decoupled=decoupled, amsgrad=amsgrad,
                maximize=maximize, grad_scale=grad_scale, avg_weight=avg_weight), track_ratio, n_threads)


def sgd_multi(plan, lr, weight_decay, momentum, dampening, nesterov, maximize, first_step, grad_scale,
              avg_weight, track_ratio, n_threads):
    """sgd_step on every tensor of `plan` (state momentum_buffer)."""
    _multi(sgd_step, plan, (momentum != 0,),
           dict(lr=lr, weight_decay=weight_decay, momentum=momentum, dampening=dampening, nesterov=nesterov,
                maximize=maximize, first_step=first_step, grad_scale=grad_scale, avg_weight=avg_weight),
           track_ratio, n_threads)


def velocity_multi(plan, lr, mu, nesterov, track_ratio, n_threads):
    """velocity_step on every tensor of `plan` (state velocity; no average)."""
    _multi(velocity_step, plan, (True,), dict(lr=lr, mu=mu, nesterov=nesterov), track_ratio, n_threads)


def adagrad_multi(plan, clr, weight_decay, eps, maximize, grad_scale, avg_weight, track_ratio, n_threads):
    """adagrad_step on every tensor of `plan` (state state_sum)."""
    _multi(adagrad_step, plan, (True,), dict(clr=clr, weight_decay=weight_decay, eps=eps, maximize=maximize,
                                             grad_scale=grad_scale, avg_weight=avg_weight), track_ratio, n_threads)


def rmsprop_multi(plan, lr, alpha, eps, weight_decay, momentum, centered, maximize, grad_scale, avg_weight,
                  track_ratio, n_threads):
    """rmsprop_step on every tensor of `plan` (states square_avg, grad_avg, momentum_buffer)."""
    _multi(rmsprop_step, plan, (True, bool(centered), momentum > 0),
           dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum, centered=centered,
                maximize=maximize, grad_scale=grad_scale, avg_weight=avg_weight), track_ratio, n_threads)


def nadam_multi(plan, lr, beta1, beta2, eps, weight_decay, bias_correction2, grad_coef, exp_avg_coef, decoupled,
                maximize, grad_scale, avg_weight, track_ratio, n_threads):
    """nadam_step on every tensor of `plan` (states exp_avg, exp_avg_sq)."""
    _multi(nadam_step, plan, (True, True),
           dict(lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay,
                bias_correction2=bias_correction2, grad_coef=grad_coef, exp_avg_coef=exp_avg_coef,
                decoupled=decoupled, maximize=maximize, grad_scale=grad_scale, avg_weight=avg_weight),
           track_ratio, n_threads)


def radam_multi(plan, lr, beta1, beta2, eps, weight_decay, bias_correction1, bias_correction2_sqrt, rect,
                rectified, decoupled, maximize, grad_scale, avg_weight, track_ratio, n_threads):
    """radam_step on every tensor of `plan` (states exp_avg, exp_avg_sq)."""
    _multi(radam_step, plan, (True, True),
           dict(lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay,
                bias_correction1=bias_correction1, bias_correction2_sqrt=bias_correction2_sqrt, rect=rect,
                rectified=rectified, decoupled=decoupled, maximize=maximize, grad_scale=grad_scale,
                avg_weight=avg_weight), track_ratio, n_threads)


def adamax_multi(plan, clr, beta1, beta2, eps, weight_decay, maximize, grad_scale, avg_weight, track_ratio,
                 n_threads):
    """adamax_step on every tensor of `plan` (states exp_avg, exp_inf)."""
    _multi(adamax_step, plan, (True, True),
           dict(clr=clr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay, maximize=maximize,
                grad_scale=grad_scale, avg_weight=avg_weight), track_ratio, n_threads)


def adadelta_multi(plan, lr, rho, eps, weight_decay, maximize, grad_scale, avg_weight, track_ratio, n_threads):
    """adadelta_step on every tensor of `plan` (states square_avg, acc_delta)."""
    _multi(adadelta_step, plan, (True, True),
           dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, maximize=maximize, grad_scale=grad_scale,
                avg_weight=avg_weight), track_ratio, n_threads)


def lion_multi(plan, lr, beta1, beta2, weight_decay, maximize, grad_scale, avg_weight, track_ratio, n_threads):
    """lion_step on every tensor of `plan` (state exp_avg)."""
    _multi(lion_step, plan, (True,),
           dict(lr=lr, beta1=beta1, beta2=beta2, weight_decay=weight_decay, maximize=maximize,
                grad_scale=grad_scale, avg_weight=avg_weight), track_ratio, n_threads)


class StepGuard:
    """The compiled StepGuard's checks in Python (see there)."""

    def __init__(self, params, grads, start, owned, dicts, keys, bound=None):
        if len(grads) != len(params):
            raise ValueError(f"grads must have one entry per param, got {len(grads)} for {len(params)}")
        self._bound = tuple(bound or ())
        self._params, self._grads, self._owned = tuple(params), tuple(grads), tuple(owned)
        self._dicts, self._keys, self.start = tuple(dicts), tuple(keys), start
        self._values = [dicts[0].get(k) for k in keys] if dicts else []

    def check(self, seq):
        n = len(self._params)
        if type(seq) not in (list, tuple) or len(seq) < self.start + n:
            return False
        if any(key not in d or d[key] is not obj for d, key, obj in self._bound):
            return False
        for p, g0, g in zip(self._params, self._grads, seq[self.start:self.start + n]):
            if g is not g0 or not p.flags.writeable or not g.flags.c_contiguous or g.dtype is not p.dtype \
                    or g.shape != p.shape:
                return False
        for d, key, a in self._owned:
            if d.get(key) is not a or (a.size and not a.flags.writeable):
                return False
        return all(d.get(k) is v for d in self._dicts for k, v in zip(self._keys, self._values))

    def commit(self, values):
        for d in self._dicts:
            d.update(values)
        self._values = [self._dicts[0].get(k) for k in self._keys] if self._dicts else []


# ------------------------------------------------------------------ the cached step
class CachedStep:
    """The compiled CachedStep's contents (see there for the contract); here the per-step scalars
    are the rule's per_step itself."""

    def __init__(self, kernel, groups, entries, keys, ema, per_step):
        if kernel not in _MULTI:
            raise ValueError(f"kernel must be one of {sorted(_MULTI)}, got {kernel!r}")
        want = _MULTI[kernel] + (("avg_count",) if ema is not None else ())
        if tuple(keys) != want:
            raise ValueError(f"keys must be {want}, got {keys}")
        if not (ema is None or ema == "polyak" or isinstance(ema, float) and 0.0 <= ema < 1.0):
            raise ValueError(f"ema must be None, 'polyak' or a decay in [0, 1), got {ema!r}")
        for i, entry in enumerate(entries):
            if not (isinstance(entry, tuple) and len(entry) == 3 and isinstance(entry[0], StepPlan)
                    and isinstance(entry[1], StepGuard) and type(entry[2]) is dict):
                raise TypeError("entries must hold (StepPlan, StepGuard, dict) triples")
            if not entry[1]._dicts:
                raise ValueError(f"entries[{i}] has no parameters")
            _check_used(entry[0], _used_state(kernel, entry[2]) + (ema is not None,))
            if entry[1]._keys != tuple(keys):
                raise ValueError(f"entries[{i}]'s guard advances {entry[1]._keys}, not {keys}")
        self.kernel, self.groups, self.entries = kernel, tuple(groups), tuple(entries)
        self.keys, self.ema, self.per_step = tuple(keys), ema, per_step
        self.n_params = sum(len(guard._params) for _, guard, _ in self.entries)
        self.last_threads = (0,) * len(self.entries)


# The multi kernels a cached step runs, each with the per-parameter scalars its step advances.
_MULTI = {"sgd_multi": (), "adam_multi": ("step",), "adagrad_multi": ("step",), "rmsprop_multi": ("step",),
          "nadam_multi": ("step", "mu_product"), "radam_multi": ("step",), "adamax_multi": ("step",),
          "adadelta_multi": ("step",), "lion_multi": ()}


def _used_state(kernel, hyper):
    # the declaration's Rule.used_state of the rule whose multi kernel this is
    from ..optim._declarations import RULES
    return next(r for r in RULES.values() if r.multi_kernel == kernel).used_state(hyper)


def run_cached(step, seq, groups, budget, track):
    """The compiled run_cached in Python (see there): the guards, then per group its per_step,
    its multi kernel and the new step counts."""
    from ..optim._declarations import AVG_COUNT, avg_weight

    if type(seq) not in (list, tuple) or type(groups) not in (list, tuple) or len(seq) != step.n_params:
        return False
    if len(groups) != len(step.groups) or any(a is not b for a, b in zip(groups, step.groups)):
        return False
    if not all(guard.check(seq) for _, guard, _ in step.entries):
        return False
    kernel = globals()[step.kernel]
    used = []
    for plan, guard, hyper in step.entries:
        first = guard._dicts[0]
        scalars, new = step.per_step(hyper, first, False)
        weight = 0.0
        if step.ema is not None:
            weight = avg_weight(step.ema, first[AVG_COUNT])
            new[AVG_COUNT] = first[AVG_COUNT] + 1
        grain = STEP_GRAIN[step.kernel.replace("_multi", "_step")][plan.is_double]
        n = 1 if budget <= 1 or plan.size < 2 * grain else min(budget, plan.size // grain)
        kernel(plan, **scalars, grad_scale=1.0, avg_weight=weight, track_ratio=track, n_threads=n)
        guard.commit(new)
        used.append(n)
    step.last_threads = tuple(used)
    return True
