"""The optimizer family as a table: one declaration per update rule.

Each `Rule` says everything fastopt needs to know about one rule, and nothing else restates it:
its hyperparameters (`Hyper`: name, default, range, keyword-only or not), its state arrays
(`StateArray`: the kernel argument each one is, and under which hyperparameters it exists), its
per-parameter scalar state (`StateScalar`: torch's "step", NAdam's "mu_product"), its per-step
scalars (`per_step`: the numbers computed once per step in double and handed to the kernel), its
compiled kernel, and its CS231n forms (`Cs231n`: the config names and defaults of
``update(w, dw, config)`` where CS231n has the rule).

Derived from RULES: the torch-style classes (fastopt/optim/_classes.py), the CS231n functions and
their registry (functional.py), hyperparameter validation and state_dict keys (_base.py), the
`fastopt train` optimizer options (train_cli.py), the `fastopt bench` optimizer cases
(bench/suites.py) and the parametrized tests. Adding a rule = one entry here + its kernel and twin.
"""
import math
import numbers
from dataclasses import dataclass, field
from typing import Callable, Optional

from .._validation import check_bool, check_scalar


# ---------------------------------------------------------------- hyperparameters
@dataclass(frozen=True)
class Hyper:
    """One hyperparameter: a real number in [low, high] (`*_open` excludes a bound), a bool, or a
    pair of such reals (betas). `keyword_only` as in torch's signature."""
    name: str
    default: object
    kind: str = "real"               # "real" | "bool" | "pair"
    low: Optional[float] = 0.0
    high: Optional[float] = None
    low_open: bool = False
    high_open: bool = False
    keyword_only: bool = False
    cli_positive: bool = False       # `fastopt train` asks for > low (e.g. eps: 0 would divide by 0)

    def check(self, label, value):
        """The normalized value (float, bool or tuple of two floats), or TypeError/ValueError."""
        if self.kind == "bool":
            return check_bool(label, value)
        if self.kind == "pair":
            if not isinstance(value, (tuple, list)) or len(value) != 2:
                got = (f"{type(value).__name__} of length {len(value)}" if isinstance(value, (tuple, list))
                       else type(value).__name__)
                raise TypeError(f"{label} must be a pair ({self.name[:-1]}1, {self.name[:-1]}2), got {got}")
            return (self.check_real(f"{label}[0]", value[0]), self.check_real(f"{label}[1]", value[1]))
        return self.check_real(label, value)

    def check_real(self, label, value):
        return real(label, value, low=self.low, high=self.high, low_open=self.low_open,
                    high_open=self.high_open)

    def bounds(self):
        """The range as keyword arguments of check_scalar (the CLI's _number takes the same)."""
        return dict(low=self.low, high=self.high, low_open=self.low_open or self.cli_positive,
                    high_open=self.high_open)


def real(label, value, **bounds):
    """check_scalar, with an int too large for a float (10**400) a ValueError, not OverflowError."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        try:
            float(value)
        except OverflowError:
            raise ValueError(f"{label} must be a finite real number, got an int too large for a "
                             f"float ({len(str(abs(int(value))))} digits)") from None
    return check_scalar(label, value, **bounds)


def _lr(default):
    return Hyper("lr", default)


def _eps(default):
    return Hyper("eps", default, cli_positive=True)


def _betas(b1=0.9, b2=0.999):
    return Hyper("betas", (b1, b2), kind="pair", high=1.0, high_open=True)


_WD = Hyper("weight_decay", 0.0)
_MAXIMIZE = Hyper("maximize", False, kind="bool", keyword_only=True)


# ---------------------------------------------------------------- state
@dataclass(frozen=True)
class StateArray:
    """A state array shaped like the parameter, the kernel's keyword `arg` (default: `name`).

    `when` None: it exists from construction; else a function of the hyperparameter dict, and the
    array is a size-0 array until a step first needs it (then `fill`, zeros by default, as torch).
    `fill` is a number or a function of the hyperparameter dict (Adagrad's initial accumulator).
    `lazy`: allocated at the first step that uses it even when used from construction (SGD's
    momentum buffer: torch's "None until the first momentum step", which then sets buf = g).
    """
    name: str
    arg: Optional[str] = None
    when: Optional[Callable] = None
    fill: object = 0.0
    lazy: bool = False

    @property
    def kernel_arg(self):
        return self.arg or self.name

    def used(self, h):
        return self.when is None or bool(self.when(h))

    def initial(self, h):
        return self.fill(h) if callable(self.fill) else self.fill


@dataclass(frozen=True)
class StateScalar:
    """A per-parameter number in the state (torch keeps these per parameter too)."""
    name: str
    initial: object
    integer: bool = False
    low: Optional[float] = None
    high: Optional[float] = None

    def check(self, label, value):
        if self.integer:
            return check_scalar(label, value, low=self.low, integer=True)
        return real(label, value, low=self.low, high=self.high)


STEP = StateScalar("step", 0, integer=True, low=0)


# ---------------------------------------------------------------- CS231n forms
@dataclass(frozen=True)
class CsKey:
    """A CS231n config key: its name, the rule hyperparameter it sets (`index` into a pair), its
    CS231n default, and its range (CS231n's own, which may be narrower than torch's)."""
    name: str
    target: str
    default: object
    index: Optional[int] = None
    low: float = 0.0
    high: Optional[float] = None
    high_open: bool = False

    def check(self, label, value):
        return real(label, value, low=self.low, high=self.high, high_open=self.high_open)


@dataclass(frozen=True)
class Cs231n:
    """A CS231n-style function ``update(w, dw, config) -> (next_w, config)`` on a rule's kernel:
    config keys, state arrays (CS231n name -> rule state name), the step counter key (Adam's "t")
    and hyperparameters fixed to other values than the rule's defaults."""
    name: str
    config: tuple
    state: tuple = ()
    step: Optional[str] = None
    fixed: dict = field(default_factory=dict)
    doc: str = ""


# ---------------------------------------------------------------- the rule
@dataclass(frozen=True)
class Rule:
    key: str                          # lower-case name: bench case, `fastopt train --optimizer`
    class_name: Optional[str]         # fastopt.optim.<class_name>; None: CS231n function only
    kernel: str                       # function name in the compiled module and its twin
    hypers: tuple
    state: tuple
    per_step: Callable                # (h, s, fresh) -> (kernel scalar kwargs, new per-param scalars)
    scalars: tuple = (STEP,)
    check: Optional[Callable] = None  # (h) -> error message or None (checks across hyperparameters)
    torch_name: Optional[str] = None  # torch.optim class with the same update, where one exists
    base: Optional[str] = None        # key of the rule whose class this one's subclasses (AdamW: Adam)
    fixed: dict = field(default_factory=dict)   # hyperparameters the class sets and does not take
    cs231n: tuple = ()
    bench: dict = field(default_factory=dict)   # constructor kwargs of the `fastopt bench` case
    bench_name: Optional[str] = None  # its row name (default: key)
    averaging: bool = True            # kernel takes grad_scale, param_avg, avg_weight
    doc: str = ""

    @property
    def defaults(self):
        return {h.name: h.default for h in self.hypers}

    @property
    def multi_kernel(self):
        """The name of the kernel stepping many tensors (a StepPlan) in one call: <rule>_multi."""
        return self.kernel.replace("_step", "_multi")

    @property
    def bench_case(self):
        return self.bench_name or self.key

    def used_state(self, h):
        return tuple(s.used(h) for s in self.state)

    def arrays_moved(self, h):
        """Arrays one step must read or write once per element: p (r+w), g (r), each used state (r+w)."""
        return 3 + 2 * sum(self.used_state(h))


def _h(h, fixed):
    # The hyperparameters with the class's fixed ones (AdamW's decoupled weight decay) in place.
    return {**h, **fixed} if fixed else h


# ---------------------------------------------------------------- per-step scalars (double precision)
def _sgd_step(h, s, fresh):
    # fresh: torch's "momentum buffer is None": the first momentum step sets buf = g.
    return dict(lr=h["lr"], weight_decay=h["weight_decay"], momentum=h["momentum"],
                dampening=h["dampening"], nesterov=h["nesterov"], maximize=h["maximize"],
                first_step=bool(fresh)), {}


def _velocity_step(h, s, fresh):
    return dict(lr=h["lr"], mu=h["momentum"], nesterov=h["nesterov"]), {}


def _adagrad_step(h, s, fresh):
    t = s["step"] + 1
    return dict(clr=h["lr"] / (1 + (t - 1) * h["lr_decay"]), weight_decay=h["weight_decay"], eps=h["eps"],
                maximize=h["maximize"]), {"step": t}


def _rmsprop_step(h, s, fresh):
    return dict(lr=h["lr"], alpha=h["alpha"], eps=h["eps"], weight_decay=h["weight_decay"],
                momentum=h["momentum"], centered=h["centered"], maximize=h["maximize"]), \
        {"step": s["step"] + 1}


def _adam_step(h, s, fresh):
    t = s["step"] + 1
    b1, b2 = h["betas"]
    return dict(lr=h["lr"], beta1=b1, beta2=b2, eps=h["eps"], weight_decay=h["weight_decay"],
                step_size=h["lr"] / (1 - b1 ** t), bias_correction2_sqrt=math.sqrt(1 - b2 ** t),
                decoupled=h["decoupled_weight_decay"], amsgrad=h["amsgrad"], maximize=h["maximize"]), \
        {"step": t}


def _nadam_mu(beta1, momentum_decay, t):
    return beta1 * (1.0 - 0.5 * 0.96 ** (t * momentum_decay))


def _nadam_step(h, s, fresh):
    # torch.optim.NAdam's scalars; mu_product is kept in double here (torch keeps it in its
    # default scalar dtype, float32 unless torch.set_default_dtype(torch.float64)).
    t = s["step"] + 1
    b1, b2 = h["betas"]
    lr = h["lr"]
    mu = _nadam_mu(b1, h["momentum_decay"], t)
    mu_next = _nadam_mu(b1, h["momentum_decay"], t + 1)
    mu_product = s["mu_product"] * mu
    return dict(lr=lr, beta1=b1, beta2=b2, eps=h["eps"], weight_decay=h["weight_decay"],
                bias_correction2=1 - b2 ** t, grad_coef=-lr * (1.0 - mu) / (1.0 - mu_product),
                exp_avg_coef=(-lr * mu_next) / (1.0 - mu_product * mu_next),
                decoupled=h["decoupled_weight_decay"], maximize=h["maximize"]), \
        {"step": t, "mu_product": mu_product}


def _radam_step(h, s, fresh):
    t = s["step"] + 1
    b1, b2 = h["betas"]
    bc1, bc2 = 1 - b1 ** t, 1 - b2 ** t
    rho_inf = 2 / (1 - b2) - 1
    rho_t = rho_inf - 2 * t * (b2 ** t) / bc2
    rectified = rho_t > 5.0
    rect = (((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5
            if rectified else 1.0)
    return dict(lr=h["lr"], beta1=b1, beta2=b2, eps=h["eps"], weight_decay=h["weight_decay"],
                bias_correction1=bc1, bias_correction2_sqrt=bc2 ** 0.5, rect=rect, rectified=rectified,
                decoupled=h["decoupled_weight_decay"], maximize=h["maximize"]), {"step": t}


def _adamax_step(h, s, fresh):
    t = s["step"] + 1
    b1, b2 = h["betas"]
    return dict(clr=h["lr"] / (1 - b1 ** t), beta1=b1, beta2=b2, eps=h["eps"],
                weight_decay=h["weight_decay"], maximize=h["maximize"]), {"step": t}


def _adadelta_step(h, s, fresh):
    return dict(lr=h["lr"], rho=h["rho"], eps=h["eps"], weight_decay=h["weight_decay"],
                maximize=h["maximize"]), {"step": s["step"] + 1}


def _lion_step(h, s, fresh):
    b1, b2 = h["betas"]
    return dict(lr=h["lr"], beta1=b1, beta2=b2, weight_decay=h["weight_decay"], maximize=h["maximize"]), {}


AVG = "param_avg"          # the state key of the running average (option `ema`)
AVG_COUNT = "avg_count"    # steps averaged so far (its weight at the next step: avg_weight)


def avg_weight(ema, count):
    """The running average's weight at the next step after `count` averaged steps (option `ema`):
    Polyak's 1 / (count + 2) -- the mean of p_0 (the average starts as a copy of it) .. p_t --,
    else 1 - decay."""
    return 1.0 / (count + 2) if ema == "polyak" else 1.0 - ema


def _nesterov_check(h):
    if h["nesterov"] and (h["momentum"] <= 0 or h["dampening"] != 0):
        return (f"nesterov momentum requires momentum > 0 and dampening == 0, "
                f"got momentum={h['momentum']}, dampening={h['dampening']}")
    return None


_CS_LR = CsKey("learning_rate", "lr", 1e-2)
_CS_RATE = dict(high=1.0, high_open=True)
_CS_MOMENTUM = CsKey("momentum", "momentum", 0.9, **_CS_RATE)
_ADAM_HYPERS = (_lr(1e-3), _betas(), _eps(1e-8), _WD,
                Hyper("amsgrad", False, kind="bool"), _MAXIMIZE,
                Hyper("decoupled_weight_decay", False, kind="bool", keyword_only=True))
_ADAM_STATE = (StateArray("exp_avg"), StateArray("exp_avg_sq"),
               StateArray("max_exp_avg_sq", when=lambda h: h["amsgrad"]))

RULES = {rule.key: rule for rule in (
    Rule("sgd", "SGD", "sgd_step",
         (_lr(1e-3), Hyper("momentum", 0.0, high=1.0, high_open=True), Hyper("dampening", 0.0, high=1.0),
          _WD, Hyper("nesterov", False, kind="bool"), _MAXIMIZE),
         (StateArray("momentum_buffer", when=lambda h: h["momentum"] != 0, lazy=True),),
         _sgd_step, scalars=(), check=_nesterov_check, torch_name="SGD",
         cs231n=(Cs231n("sgd", (_CS_LR,), doc="Vanilla SGD: w -= learning_rate * dw."),),
         bench=dict(lr=1e-2, momentum=0.9), bench_name="sgd-momentum",
         doc="g = -grad if maximize; g += weight_decay * p; with momentum: buf = g on the first "
             "momentum step, else buf = momentum * buf + (1 - dampening) * g; g = g + momentum * buf "
             "(nesterov) or buf; p -= lr * g."),
    Rule("sgd_velocity", None, "velocity_step",
         (_lr(1e-2), Hyper("momentum", 0.9, high=1.0, high_open=True), Hyper("nesterov", False, kind="bool")),
         (StateArray("velocity"),), _velocity_step, scalars=(), averaging=False,
         cs231n=(Cs231n("sgd_momentum", (_CS_LR, _CS_MOMENTUM), (("velocity", "velocity"),),
                        fixed=dict(nesterov=False),
                        doc="SGD with momentum: v = momentum * v - learning_rate * dw; w += v."),
                 Cs231n("nesterov_momentum", (_CS_LR, _CS_MOMENTUM), (("velocity", "velocity"),),
                        fixed=dict(nesterov=True),
                        doc="Nesterov momentum (CS231n lecture form): v_prev = v; v = momentum * v - "
                            "learning_rate * dw; w += -momentum * v_prev + (1 + momentum) * v.")),
         doc="CS231n's momentum, the learning rate inside the velocity."),
    Rule("adagrad", "Adagrad", "adagrad_step",
         (_lr(1e-2), Hyper("lr_decay", 0.0), _WD, Hyper("initial_accumulator_value", 0.0),
          Hyper("eps", 1e-10, cli_positive=True), _MAXIMIZE),
         (StateArray("sum", arg="state_sum", fill=lambda h: h["initial_accumulator_value"]),),
         _adagrad_step, torch_name="Adagrad", bench=dict(lr=1e-2),
         cs231n=(Cs231n("adagrad", (_CS_LR, CsKey("epsilon", "eps", 1e-8)), (("cache", "sum"),),
                        doc="Adagrad: cache += dw**2; w -= learning_rate * dw / (sqrt(cache) + epsilon)."),),
         doc="step += 1; clr = lr / (1 + (step - 1) * lr_decay); g += weight_decay * p; sum += g * g; "
             "p -= clr * g / (sqrt(sum) + eps)."),
    Rule("rmsprop", "RMSprop", "rmsprop_step",
         (_lr(1e-2), Hyper("alpha", 0.99, high=1.0), _eps(1e-8), _WD,
          Hyper("momentum", 0.0, high=1.0, high_open=True), Hyper("centered", False, kind="bool"), _MAXIMIZE),
         (StateArray("square_avg"), StateArray("grad_avg", when=lambda h: h["centered"]),
          StateArray("momentum_buffer", when=lambda h: h["momentum"] > 0)),
         _rmsprop_step, torch_name="RMSprop", bench=dict(lr=1e-2),
         cs231n=(Cs231n("rmsprop", (_CS_LR, CsKey("decay_rate", "alpha", 0.99, **_CS_RATE),
                                    CsKey("epsilon", "eps", 1e-8)), (("cache", "square_avg"),),
                        doc="RMSprop: cache = decay_rate * cache + (1 - decay_rate) * dw**2; "
                            "w -= learning_rate * dw / (sqrt(cache) + epsilon)."),),
         doc="square_avg = alpha * square_avg + (1 - alpha) * g*g; centered: grad_avg = lerp(grad_avg, g, "
             "1 - alpha), avg = sqrt(square_avg - grad_avg**2) + eps, else sqrt(square_avg) + eps; "
             "momentum > 0: buf = momentum * buf + g / avg, p -= lr * buf; else p -= lr * g / avg."),
    Rule("adam", "Adam", "adam_step", _ADAM_HYPERS, _ADAM_STATE, _adam_step, torch_name="Adam",
         bench=dict(lr=1e-3),
         cs231n=(Cs231n("adam", (CsKey("learning_rate", "lr", 1e-3),
                                 CsKey("beta1", "betas", 0.9, index=0, **_CS_RATE),
                                 CsKey("beta2", "betas", 0.999, index=1, **_CS_RATE),
                                 CsKey("epsilon", "eps", 1e-8)),
                        (("m", "exp_avg"), ("v", "exp_avg_sq")), step="t",
                        doc="Adam with bias correction; t is incremented before use: t += 1; "
                            "m = beta1 * m + (1 - beta1) * dw; v = beta2 * v + (1 - beta2) * dw**2; "
                            "w -= learning_rate * (m / (1 - beta1**t)) / (sqrt(v / (1 - beta2**t)) + epsilon)."),),
         doc="step += 1; weight decay: g += wd * p, or p *= 1 - lr * wd with decoupled_weight_decay "
             "(AdamW); m = lerp(m, g, 1 - beta1); v = beta2 * v + (1 - beta2) * g*g; amsgrad: "
             "vmax = max(vmax, v) replaces v; p -= (lr / (1 - beta1**step)) * m / "
             "(sqrt(v) / sqrt(1 - beta2**step) + eps)."),
    Rule("adamw", "AdamW", "adam_step",
         tuple(Hyper("weight_decay", 1e-2) if h.name == "weight_decay" else h
               for h in _ADAM_HYPERS if h.name != "decoupled_weight_decay"),
         _ADAM_STATE, lambda h, s, fresh: _adam_step(_h(h, {"decoupled_weight_decay": True}), s, fresh),
         torch_name="AdamW", base="adam", fixed={"decoupled_weight_decay": True},
         bench=dict(lr=1e-3, weight_decay=1e-2),
         doc="Adam with decoupled weight decay: p *= 1 - lr * weight_decay first."),
    Rule("nadam", "NAdam", "nadam_step",
         (_lr(2e-3), _betas(), _eps(1e-8), _WD, Hyper("momentum_decay", 4e-3),
          Hyper("decoupled_weight_decay", False, kind="bool"), _MAXIMIZE),
         (StateArray("exp_avg"), StateArray("exp_avg_sq")), _nadam_step,
         scalars=(STEP, StateScalar("mu_product", 1.0, low=0.0, high=1.0)), torch_name="NAdam",
         bench=dict(lr=2e-3),
         doc="mu_t = beta1 (1 - 0.5 * 0.96**(t * momentum_decay)); mu_product *= mu_t; m, v as Adam; "
             "denom = sqrt(v / (1 - beta2**t)) + eps; p -= lr (1 - mu_t) / (1 - mu_product) * g / denom "
             "+ lr mu_{t+1} / (1 - mu_product mu_{t+1}) * m / denom."),
    Rule("radam", "RAdam", "radam_step",
         (_lr(1e-3), _betas(), _eps(1e-8), _WD, Hyper("decoupled_weight_decay", False, kind="bool"), _MAXIMIZE),
         (StateArray("exp_avg"), StateArray("exp_avg_sq")), _radam_step, torch_name="RAdam",
         bench=dict(lr=1e-3),
         doc="m, v as Adam; rho_t = rho_inf - 2 t beta2**t / (1 - beta2**t); while rho_t <= 5 "
             "p -= lr * m / (1 - beta1**t), after it the update is scaled by the adaptive rate "
             "sqrt(1 - beta2**t) / (sqrt(v) + eps) and the rectification term."),
    Rule("adamax", "Adamax", "adamax_step",
         (_lr(2e-3), _betas(), _eps(1e-8), _WD, _MAXIMIZE),
         (StateArray("exp_avg"), StateArray("exp_inf")), _adamax_step, torch_name="Adamax",
         bench=dict(lr=2e-3),
         doc="m = lerp(m, g, 1 - beta1); u = max(beta2 * u, |g| + eps); p -= lr / (1 - beta1**t) * m / u."),
    Rule("adadelta", "Adadelta", "adadelta_step",
         (_lr(1.0), Hyper("rho", 0.9, high=1.0), Hyper("eps", 1e-6, cli_positive=True), _WD, _MAXIMIZE),
         (StateArray("square_avg"), StateArray("acc_delta")), _adadelta_step, torch_name="Adadelta",
         bench=dict(lr=1.0),
         doc="square_avg = rho * square_avg + (1 - rho) g*g; delta = sqrt(acc_delta + eps) / "
             "sqrt(square_avg + eps) * g; acc_delta = rho * acc_delta + (1 - rho) delta**2; p -= lr * delta."),
    Rule("lion", "Lion", "lion_step",
         (_lr(1e-4), _betas(0.9, 0.99), _WD, _MAXIMIZE),
         (StateArray("exp_avg"),), _lion_step, scalars=(), bench=dict(lr=1e-4),
         doc="Lion (Chen et al. 2023): c = beta1 m + (1 - beta1) g; p = p (1 - lr wd) - lr sign(c); "
             "m = beta2 m + (1 - beta2) g."),
)}


def class_rules():
    """The rules that have a torch-style class, in table order."""
    return [r for r in RULES.values() if r.class_name is not None]


def cs231n_forms():
    """{CS231n function name: (rule, form)} in table order."""
    return {form.name: (rule, form) for rule in RULES.values() for form in rule.cs231n}


def cs231n_to_torch_keys():
    """CS231n config names -> torch constructor names over every form (epsilon -> eps, ...); the
    Solver maps an optim_config for an optimizer class with it. beta1/beta2 map into "betas"."""
    keys = {}
    for rule, form in cs231n_forms().values():
        for k in form.config:
            if k.index is None:
                keys[k.name] = k.target
    return keys
