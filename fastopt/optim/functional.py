"""CS231n-style update rules: ``update(w, dw, config=None) -> (next_w, config)``.

Made from the CS231n forms of the declarations (fastopt/optim/_declarations.py): same keys and
defaults as CS231n's ``optim.py``, on the same kernels as the classes. Unlike CS231n, ``w`` is
updated in place and returned (``next_w is w``), and the state arrays in ``config`` (velocity,
cache, m, v) are updated in place too. Absent state arrays are created with w's dtype and shape;
present ones must match w (dtype, shape, C-contiguous, writeable). A call that raises has changed
neither ``w`` nor ``config``.
"""
import numpy as np

from .. import _backend
from .._validation import check_array, check_distinct, check_like, check_scalar
from ._base import empty_like_dtype, update_grain
from ._declarations import cs231n_forms


def _prepare(w, dw, config, form):
    """Validate w, dw and config; return (config, {key: checked value}, [state keys to create]).

    Nothing is written to config here; the caller commits after validation.
    """
    if config is None:
        config = {}
    elif not isinstance(config, dict):
        raise TypeError(f"config must be a dict or None, got {type(config).__name__}")
    check_array("w", w, writeable=True)
    check_like("dw", dw, "w", w)
    values = config_values(form, config)
    new = []
    for key, _ in form.state:
        if key in config:
            check_like(f"config[{key!r}]", config[key], "w", w, writeable=True)
        else:
            new.append(key)
    named = [("w", w), ("dw", dw)] + [(f"config[{k!r}]", config[k]) for k, _ in form.state if k not in new]
    check_distinct(named)
    return config, values, new


def config_values(form, config):
    """The checked values of `form`'s config keys (and its step counter) in `config` (defaults filled)."""
    values = {k.name: k.check(f"config[{k.name!r}]", config.get(k.name, k.default)) for k in form.config}
    if form.step is not None:
        values[form.step] = check_scalar(f"config[{form.step!r}]", config.get(form.step, 0), low=0, integer=True)
    return values


def kernel_hypers(rule, form, values):
    """The rule's hyperparameters (the declaration's names) for checked config `values`: its
    defaults, the form's fixed ones, then the config's (a CS231n key may set one of a pair)."""
    h = dict(rule.defaults)
    h.update(form.fixed)
    for k in form.config:
        if k.index is None:
            h[k.target] = values[k.name]
        else:
            pair = list(h[k.target])
            pair[k.index] = values[k.name]
            h[k.target] = tuple(pair)
    return h


def kernel_scalars(rule, form, values, fresh, h=None):
    """(the kernel's scalar keywords, the config entries after the step) for checked `values`;
    `fresh`: the state arrays were just created (SGD's first momentum step); `h`: the
    kernel_hypers of `values` when the caller kept them (they change only with the config)."""
    if h is None:
        h = kernel_hypers(rule, form, values)
    s = {sc.name: sc.initial for sc in rule.scalars}
    if form.step is not None:
        s["step"] = values[form.step]
    scalars, s_new = rule.per_step(h, s, fresh)
    after = dict(values)
    if form.step is not None:
        after[form.step] = s_new["step"]
    if rule.averaging:
        scalars = dict(scalars, grad_scale=1.0, avg_weight=0.0)
    return scalars, after


def state_arrays(rule, form, config, like):
    """The kernel's state-array keywords: config's arrays (1-D) for the form's state, empty otherwise;
    `like` (the parameter, or the flat buffer) gives the dtype of the empty ones."""
    state_of = dict((target, key) for key, target in form.state)
    empty = empty_like_dtype(like.dtype)
    arrays = {st.kernel_arg: config[state_of[st.name]].reshape(-1) if st.name in state_of else empty
              for st in rule.state}
    if rule.averaging:
        arrays["param_avg"] = empty
    return arrays


def begin_update(w, dw, config, form, rule):
    """(config, kernel scalars) of one CS231n step: everything checked first, then the config's
    scalar entries written and its missing state arrays created; the caller runs the kernel."""
    config, values, new = _prepare(w, dw, config, form)
    scalars, after = kernel_scalars(rule, form, values, bool(new))
    # Validated: now change things.
    config.update(after)
    for key in new:
        config[key] = np.zeros_like(w)
    return config, scalars


def make_function(rule, form):
    """The CS231n function of `form` on `rule`'s kernel."""

    def update(w, dw, config=None):
        config, scalars = begin_update(w, dw, config, form, rule)
        k = _backend.kernels("optim")
        getattr(k, rule.kernel)(param=w.reshape(-1), grad=dw.reshape(-1), **state_arrays(rule, form, config, w),
                                **scalars, n_threads=_backend.threads_for(w.size, update_grain(k, rule.kernel, w.dtype)))
        return w, config

    keys = ", ".join(f"{k.name} ({k.default:g})" for k in form.config)
    if form.state:
        keys += ", " + ", ".join(key for key, _ in form.state) + " (zeros like w)"
    if form.step:
        keys += f", {form.step} (0)"
    update.__name__ = update.__qualname__ = form.name
    update.__module__ = __name__
    update.__doc__ = f"{form.doc}\n\nconfig: {keys}."
    return update


# sgd, sgd_momentum, nesterov_momentum, adagrad, rmsprop, adam: made from the table.
RULES = {name: make_function(rule, form) for name, (rule, form) in cs231n_forms().items()}
globals().update(RULES)
# function -> (rule, form): how RuleOptimizer recognizes fastopt's own rules and runs them flat.
FORMS = {RULES[name]: pair for name, pair in cs231n_forms().items()}


def get_rule(rule):
    """The update function for `rule`: a name in RULES (e.g. "adam"), or a callable returned as is."""
    if callable(rule):
        return rule
    if not isinstance(rule, str):
        raise TypeError(f"update rule must be a name (str) or a callable, got {type(rule).__name__}")
    try:
        return RULES[rule]
    except KeyError:
        raise ValueError(f"unknown update rule {rule!r}; expected one of {sorted(RULES)}") from None
