"""The optimizer interface around a CS231n update rule ``rule(w, dw, config) -> (next_w, config)``.

The Solver drives every update rule through this interface (``param_groups`` with ``'lr'``,
``step(grads)``, ``state_dict()`` / ``load_state_dict()``), so its loop has one path for
``fastopt.optim.Adam`` and for ``"adam"``:

    opt = RuleOptimizer(fastopt.optim.adam, model.params, {"learning_rate": 1e-3})
    opt.step(grads)              # every parameter, all or nothing
    opt.param_groups[0]["lr"]    # the learning rate; schedules edit it in place, as in torch
    opt.configs["W1"]            # CS231n's per-parameter config: hyperparameters and state

The one param group holds the learning rate: setting its ``'lr'`` writes every config's
``learning_rate``; ``configs`` hold the rest, as CS231n's Solver keeps them (``optim_configs``). A rate
written into the configs by hand, as CS231n's own code decays it, is the one the next step uses (last
write wins; see RuleOptimizer._config_rates).

All or nothing. step() first checks every gradient (present, a float ndarray of the parameter's
shape, sharing no memory with the parameter or its state; another float dtype or a non-contiguous
gradient is converted: gradients are only read), every parameter (still writeable), the learning
rate, and every config whose scalars changed since they were last checked (one call of the rule on
a 1-element probe, so the rule's own checks decide). fastopt's own rules (``fastopt.optim.RULES``)
then update in place: with every input checked they cannot fail part-way. Any other rule runs on
copies of each parameter and its state, and the results are committed once every parameter's
update has returned.
"""
import copy
import operator
import threading
from itertools import repeat
from collections.abc import Mapping

import numpy as np

from .. import _backend
from ..flat import FlatArrays, tiles_one_buffer
from .._validation import check_array, check_bool, check_distinct, check_scalar
from .functional import FORMS, begin_update, config_values, kernel_hypers, kernel_scalars, state_arrays

_PROBE_SIZE = 1


def _in_place_rules():
    from . import RULES  # fastopt's own rules (imported late: fastopt.optim may import this module)
    return set(RULES.values())


def _is_number(v):
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def _unchanged(cfg, checked):
    """Whether `cfg` still holds the values last validated (`checked`, a shallow copy). dict ==
    compares identical objects as equal without calling them, so the state arrays cost nothing;
    a rebound array compares elementwise, which is no plain bool: counted as a change."""
    try:
        return checked is not None and bool(cfg == checked)
    except ValueError:
        return False


_SHAPE, _DTYPE = operator.attrgetter("shape"), operator.attrgetter("dtype")
_CONTIGUOUS, _WRITEABLE = operator.attrgetter("flags.c_contiguous"), operator.attrgetter("flags.writeable")


def _layout(grads, params):
    """What the per-gradient checks of a step read (shapes and dtypes of gradients and parameters,
    gradients contiguous, parameters writeable), in a few C-level passes: equal to the layout of a
    step that took every gradient as it was, the same gradient objects pass the same checks."""
    return (tuple(map(_SHAPE, grads)), tuple(map(_SHAPE, params)), tuple(map(_DTYPE, grads)),
            tuple(map(_DTYPE, params)), all(map(_CONTIGUOUS, grads)), all(map(_WRITEABLE, params)))


def _with_lr(cfg, lr, in_place=False):
    """`cfg` with the group's learning rate (unchanged when the rule has none)."""
    if lr is None:
        return cfg
    if in_place:
        cfg["learning_rate"] = lr
        return cfg
    return dict(cfg, learning_rate=lr)


class _Watch:
    """Whether the configs are as the optimizer's own last flat step left them (`clean`): anything
    else that changes them -- a user's ``cfg['learning_rate'] = ...``, a replaced config dict or state
    array, load_state_dict, a per-parameter step -- clears it, and the next step re-checks them."""

    __slots__ = ("clean",)

    def __init__(self):
        self.clean = False


class _Watched(dict):
    """A dict whose every mutating method first clears its _Watch: the configs and their container,
    so a step learns that nothing changed from one flag instead of re-reading every value. The
    optimizer's own flat step writes through dict's methods (dict.update), which do not clear it."""

    __slots__ = ("_watch",)

    def __init__(self, watch, *args, **kw):
        dict.__init__(self, *args, **kw)
        self._watch = watch


def _clearing(name):
    method = getattr(dict, name)

    def call(self, *args, **kw):
        watch = getattr(self, "_watch", None)   # unset while copy/pickle rebuild a _Watched
        if watch is not None:
            watch.clean = False
        return method(self, *args, **kw)
    call.__name__ = call.__qualname__ = name
    return call


for _name in ("__setitem__", "__delitem__", "__ior__", "update", "setdefault", "pop", "popitem", "clear"):
    setattr(_Watched, _name, _clearing(_name))


class _Group(dict):
    """The param group: setting 'lr' (as a schedule does) also sets every config's learning_rate,
    so CS231n's view (configs) and torch's view (param_groups) agree (a rate written into the
    configs instead reaches the group at the next step: RuleOptimizer._config_rates)."""

    def __init__(self, on_lr, lr):
        super().__init__(lr=lr)
        self._on_lr = on_lr

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        if key == "lr":
            self._on_lr(value)

    def update(self, *args, **kw):
        for k, v in dict(*args, **kw).items():
            self[k] = v


def _interval(a):
    start = a.__array_interface__["data"][0]
    return start, start + a.nbytes


def _overlaps(a, b):
    (a0, a1), (b0, b1) = _interval(a), _interval(b)
    return a0 < b1 and b0 < a1 and a.nbytes and b.nbytes


class _FlatRule:
    """fastopt's own rule over parameters that tile one buffer: ONE kernel call per step.

    The state arrays (CS231n's m, v, cache, velocity) live in one buffer per kind, and every
    config holds views of it, so the configs look exactly as the per-parameter rule leaves them.
    A step takes this path when the gradients tile one buffer in parameter order, every config
    still holds those views (or, before the first step, none of the state keys) and all configs
    hold equal values (same hyperparameters, same t). Otherwise the per-parameter calls run, which
    compute the same bits (the kernels are elementwise)."""

    def __init__(self, rule, form, span, params):
        self.rule, self.form, self.span = rule, form, span
        self.params = params               # name -> parameter, in buffer order
        self.keys = tuple(key for key, _ in form.state)
        # The config entries every config must agree on (its hyperparameters and step counter).
        self.scalar_keys = tuple(k.name for k in form.config) + ((form.step,) if form.step else ())
        self.kernel = None                 # (kernels module, state-array keywords, multi kernel, its call order, grain)
        self.values = None                 # (lr and config values, their checked form) of the last step
        self.buffers = None                # state name (rule's) -> 1-D buffer, once allocated
        self.views = None                  # parameter name -> {config key: view}
        self.state_views = ()              # every view of `views`, in one tuple
        self.grads = None                  # (gradient arrays last seen, their span or None)
        self.plan = None                   # (kernel module, gradient span, StepPlan) of the tracked multi call
        self.one = None                    # (kernel module, gradient span, StepPlan): the buffer as one tensor

    def adopt(self, configs, fill=None):
        """New state buffers (zeros, or the configs' arrays copied in) whose views the configs get."""
        from ._base import placed_array
        buffers, views = {}, {name: {} for name in self.params}
        for slot, (key, target) in enumerate(self.form.state):
            buf = placed_array(self.span.shape, self.span.dtype, slot, fill=0 if fill is None else None)
            offset = 0
            for name, w in self.params.items():
                view = buf[offset:offset + w.size].reshape(w.shape)
                if fill is not None:
                    view[...] = fill[name][key]
                views[name][key] = view
                offset += w.size
            buffers[target] = buf
        for name, cfg in configs.items():
            dict.update(cfg, views[name])
        self.buffers, self.views, self.plan, self.kernel, self.one = buffers, views, None, None, None
        self.state_views = tuple(a for v in views.values() for a in v.values())

    def grad_span(self, grads):
        """The 1-D span the gradients (in parameter order) tile, or None; checked against the
        parameters' and the state's memory. Cached while the same gradient objects come back."""
        mine = list(map(grads.__getitem__, self.params))
        cached = self.grads
        if cached is not None and len(cached[0]) == len(mine) and all(map(operator.is_, mine, cached[0])):
            return cached[1]
        span = tiles_one_buffer(mine)
        if span is not None and span.dtype != self.span.dtype:
            span = None
        if span is not None:
            written = [self.span] + list((self.buffers or {}).values())
            if any(_overlaps(span, a) for a in written):
                raise ValueError("the gradients share memory with the parameters or their state")
        self.grads = (tuple(mine), span)
        return span

    def ready(self, configs):
        """Whether the configs allow the one-call step: (ok, fresh)."""
        # Called every step: plain loops over what was precomputed (this is the Solver's hot path).
        keys = self.keys
        if self.views is None:
            if any(key in configs[n] for n in self.params for key in keys):
                return False, False
            fresh = bool(keys)
        else:
            for n, views in self.views.items():
                get = configs[n].get
                for key in keys:
                    if get(key) is not views[key]:
                        return False, False
            fresh = False
        scalar_keys = self.scalar_keys
        ref = None
        for n in self.params:
            get = configs[n].get
            values = [get(k) for k in scalar_keys]
            if ref is None:
                ref = values
            elif any(v != r for v, r in zip(values, ref)):
                return False, False
        return True, fresh

    def _plan(self, k, gspan):
        """A StepPlan over every parameter (the ratio is per parameter), cached per gradient span."""
        from ._base import step_types
        # Keyed by the kernel module too: a plan is that module's type (set_backend / set_simd switch it)
        if self.plan is not None and self.plan[0] is k and self.plan[1] is gspan:
            return self.plan[2]
        empty = np.empty(0, self.span.dtype)
        by_target = {target: key for key, target in self.form.state}
        params, grads, states = [], [], []
        offset = 0
        for name, w in self.params.items():
            params.append(w.reshape(-1))
            grads.append(gspan[offset:offset + w.size])
            states.append([self.views[name][by_target[st.name]].reshape(-1) if st.name in by_target else empty
                           for st in self.rule.state])
            offset += w.size
        plan = step_types(k)[0](params, grads, states, [empty] * len(params))
        self.plan = (k, gspan, plan)
        return plan

    def _one(self, k, gspan, arrays):
        """A StepPlan holding the buffer as one tensor (the untracked call) with the rule kernel's
        state `arrays` (self.kernel's), cached per gradient span: the multi kernel on it spares the
        rule kernel's six buffer conversions per call."""
        from ._base import step_types
        if self.one is not None and self.one[0] is k and self.one[1] is gspan:
            return self.one[2]
        plan = step_types(k)[0]([self.span], [gspan], [[arrays[st.kernel_arg] for st in self.rule.state]],
                                [np.empty(0, self.span.dtype)])
        self.one = (k, gspan, plan)
        return plan

    def guard(self, k, grads, gspan):
        """(seq, StepGuard) of what a repeat of this step with the same FlatArrays of gradients must
        still find (RuleOptimizer.step; guard.check(seq)): the buffer and every parameter writeable,
        the span and every gradient view with its parameter's dtype and shape, C-contiguous, every
        config's state view writeable -- what _prepare's per-step checks read (a config that is
        rebound clears the watch, and an unclean step never repeats)."""
        from ._base import step_types
        seq = [gspan, *map(grads.__getitem__, self.params)]
        owned = [(views, key, a) for views in (self.views or {}).values() for key, a in views.items()]
        return seq, step_types(k)[1]([self.span, *self.params.values()], seq, 0, owned, [], ())

    def step(self, configs, lr, gspan, fresh, ratios=None, clean=False):
        rule, form = self.rule, self.form
        first = configs[next(iter(self.params))]
        # The configs were checked at the boundary (RuleOptimizer._prepare re-checks a changed one),
        # so the hyperparameters' checked values (and the rule's hyperparameters made of them) are
        # reused while they and lr stay the same; only the step counter moves every step.
        # Clean configs (RuleOptimizer.step) hold the hyperparameters of the last step's key.
        cached = self.values
        if clean and cached is not None and cached[0][0] == lr:
            key = cached[0]
        else:
            key = (lr,) + tuple(first.get(k.name) for k in form.config)
        same = cached is not None and cached[0] == key
        if same:
            _, values, h = cached
            if form.step is not None:
                values = dict(values)
                values[form.step] = first.get(form.step, 0)
        else:
            values = config_values(form, _with_lr(first, lr))
            h = kernel_hypers(rule, form, values)
            self.values = (key, {k: v for k, v in values.items() if k != form.step}, h)
        scalars, after = kernel_scalars(rule, form, values, fresh, h)
        # Validated: now change things.
        if fresh:
            self.adopt(configs)
        k = _backend.kernels("optim")
        cached = self.kernel
        if cached is None or cached[0] is not k:   # built once per backend / SIMD choice and buffers
            empty = np.empty(0, self.span.dtype)
            arrays = {st.kernel_arg: self.buffers[st.name] if self.buffers and st.name in self.buffers else empty
                      for st in rule.state}
            from ._base import positional_scalars, update_grain
            multi = getattr(k, rule.multi_kernel)
            # The scalars' names come in per_step's order (+ grad_scale, avg_weight): where the
            # kernel takes exactly them, in that order, it is called positionally (a Cython def
            # parses keywords in ~0.65 us, positional arguments in ~0.05).
            names = tuple(scalars)
            pick = positional_scalars(multi, names, ("track_ratio", "n_threads"))
            cached = self.kernel = (k, arrays, multi, names, pick, update_grain(k, rule.kernel, self.span.dtype))
        _, arrays, multi, names, pick, grain = cached
        threads = _backend.threads_for(self.span.size, grain)
        if ratios is not None:
            plan = self._plan(k, gspan)
            multi(plan=plan, **scalars, track_ratio=True, n_threads=threads)
            ratios.update(zip(self.params, plan.ratios()))
        elif pick is not None and len(scalars) == len(names):
            multi(self._one(k, gspan, arrays), *pick(scalars), False, threads)
        else:
            multi(plan=self._one(k, gspan, arrays), **scalars, track_ratio=False, n_threads=threads)
        # The optimizer's own write: the configs stay clean. Clean configs stepped with the same
        # key already hold every other entry of `after` (a step wrote them): only the counter moves.
        if clean and same:
            if form.step is not None:
                t = after[form.step]
                for cfg in configs.values():
                    dict.__setitem__(cfg, form.step, t)
        else:
            for cfg in configs.values():
                dict.update(cfg, after)


def _tracked_update(fn, w, dw, config):
    """(config, update/weight ratio) of fastopt's own rule `fn` applied to one standalone parameter:
    the same step as fn(w, dw, config) (checks, state creation, scalars: functional.begin_update),
    run through the rule's multi-tensor kernel on a one-tensor StepPlan so that the ratio comes from
    the step's own pass (a copy and a NumPy pass cost ~10x the 16M step)."""
    from ._base import empty_like_dtype, update_grain
    rule, form = FORMS[fn]
    config, scalars = begin_update(w, dw, config, form, rule)
    k = _backend.kernels("optim")
    arrays = state_arrays(rule, form, config, w)
    plan = k.StepPlan([w.reshape(-1)], [dw.reshape(-1)], [[arrays[st.kernel_arg] for st in rule.state]],
                      [arrays.get("param_avg", empty_like_dtype(w.dtype))])
    threads = _backend.threads_for(w.size, update_grain(k, rule.kernel, w.dtype))
    getattr(k, rule.multi_kernel)(plan=plan, **scalars, track_ratio=True, n_threads=threads)
    return config, plan.ratios()[0]


def _ratios_by_name(params, old, new):
    """{name: update/weight ratio} of parameters laid out in order in the 1-D `old` / `new`."""
    from ..reference.optim import ratio_of
    out, offset = {}, 0
    for name, w in params.items():
        out[name] = ratio_of(old[offset:offset + w.size], new[offset:offset + w.size])
        offset += w.size
    return out


class RuleOptimizer:
    """`rule` applied to every array of `params` (a Mapping name -> array, updated in place), each
    with its own copy of `config` (hyperparameters only: the rule creates the state arrays)."""

    def __init__(self, rule, params, config=None, *, track_update_ratio=False):
        if not callable(rule):
            raise TypeError(f"rule must be a callable update(w, dw, config) -> (next_w, config), "
                            f"got {type(rule).__name__}")
        if not isinstance(params, Mapping) or not params:
            raise TypeError(f"params must be a non-empty Mapping name -> array, got {type(params).__name__}")
        config = {} if config is None else config
        if not isinstance(config, dict):
            raise TypeError(f"optim_config must be a dict, got {type(config).__name__}")
        self.rule = rule
        self._in_place = rule in _in_place_rules()
        self.params = dict(params)
        for name, w in self.params.items():
            if not isinstance(name, str):
                raise TypeError(f"params keys must be str names, got {type(name).__name__}")
            check_array(f"params[{name!r}]", w, writeable=True)
        check_distinct([(f"params[{n!r}]", w) for n, w in self.params.items()])
        for key, value in config.items():
            if not isinstance(key, str):
                raise TypeError(f"optim_config keys must be str, got {type(key).__name__}")
            if isinstance(value, np.ndarray):
                raise ValueError(f"optim_config[{key!r}] is an array: optim_config holds hyperparameters, "
                                 f"the rule creates each parameter's state")
            if not _is_number(value):
                raise TypeError(f"optim_config[{key!r}] must be a number, got {type(value).__name__}")
        self._known = None
        if self._in_place:
            # fastopt's rules fill in every key they read: a key they do not return is a typo.
            self._known = set(self._probe("optim_config", {}))
            unknown = sorted(set(config) - self._known)
            if unknown:
                raise ValueError(f"optim_config has {unknown}, which update rule {rule.__name__} does not "
                                 f"use; it takes {sorted(self._known)}")
        probed = self._probe("optim_config", copy.deepcopy(config))
        lr = probed.get("learning_rate", config.get("learning_rate"))
        lr = check_scalar("optim_config['learning_rate']", lr, low=0) if lr is not None else None
        self._watch = _Watch()
        self.configs = _Watched(self._watch, {name: _Watched(self._watch, copy.deepcopy(config))
                                              for name in self.params})
        self._watched = self.configs      # the container whose mutations clear the watch
        self._checked = {name: None for name in self.params}  # a config as last validated (shallow copy)
        self.param_groups = [_Group(self._set_lr, lr)]
        self._lock = threading.Lock()
        self.track_update_ratio = check_bool("track_update_ratio", track_update_ratio)
        self._ratios = {}
        self._lr_checked = None      # the group's rate as last checked by _prepare
        self._overlap_ok = None      # (gradients, state arrays) last found not to overlap
        self._grads_as_is = None     # _layout of the last gradients that all passed as they were
        self._flat = None
        self._repeat = None          # (FlatArrays, seq, StepGuard) of the last flat step: see step()
        if self._in_place:
            span = tiles_one_buffer(list(self.params.values()))
            if span is not None and span.flags.writeable:
                self._flat = _FlatRule(*FORMS[rule], span, self.params)

    def _set_lr(self, lr):
        """The group's new rate into every config (checked at the next step, like any rate)."""
        if lr is None:
            return
        for name, cfg in self.configs.items():
            cfg["learning_rate"] = lr
            if self._checked[name] is not None:
                self._checked[name]["learning_rate"] = lr

    # ------------------------------------------------------------ validation
    def _probe(self, label, cfg):
        """Run the rule on 1-element arrays with `cfg` (arrays in it replaced by 1-element zeros);
        return the config it gives back. Re-raises the rule's TypeError/ValueError under `label`."""
        dtype = next(iter(self.params.values())).dtype
        probe = {k: (np.zeros(_PROBE_SIZE, dtype) if isinstance(v, np.ndarray) else v) for k, v in cfg.items()}
        try:
            out = self.rule(np.zeros(_PROBE_SIZE, dtype), np.zeros(_PROBE_SIZE, dtype), probe)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{label}: {exc}") from exc
        if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], dict)):
            raise TypeError(f"update rule {getattr(self.rule, '__name__', self.rule)!r} must return "
                            f"(next_w, config), got {type(out).__name__}")
        return out[1]

    def _check_config(self, label, cfg, w):
        """A per-parameter config: str keys, numbers or arrays like `w`, scalars accepted by the rule."""
        if not isinstance(cfg, dict):
            raise TypeError(f"{label} must be a dict, got {type(cfg).__name__}")
        for key, v in cfg.items():
            if not isinstance(key, str):
                raise TypeError(f"{label} keys must be str, got {type(key).__name__}")
            if self._known is not None and key not in self._known:
                raise ValueError(f"{label} has {key!r}, which update rule {self.rule.__name__} does not use")
            if isinstance(v, np.ndarray):
                if v.dtype != w.dtype or v.shape != w.shape:
                    raise ValueError(f"{label}[{key!r}] is {v.dtype} {v.shape}, the parameter is "
                                     f"{w.dtype} {w.shape}")
            elif not _is_number(v):
                raise TypeError(f"{label}[{key!r}] must be a number or an array, got {type(v).__name__}")
        if self._flat is None:
            self._probe(label, cfg)
            return
        # fastopt's own rule (the flat path exists only for those): its checks without a kernel
        # call -- the config's values, and state arrays the kernel can update in place.
        try:
            config_values(self._flat.form, cfg)
            for key in self._flat.keys:
                if key in cfg:
                    check_array(f"[{key!r}]", cfg[key], writeable=True)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{label}: {exc}") from exc

    def _prepare(self, grads, clean):
        """Check everything step() reads; return the gradients to use, in parameter order. `clean`:
        the configs are as the last (flat) step left them, validated then (see _Watch)."""
        if not isinstance(grads, Mapping):
            raise TypeError(f"grads must be a Mapping name -> array, got {type(grads).__name__}")
        names = self.params
        # One lookup per name (a Mapping's may be Python code); .get never inserts (a defaultdict).
        seen = tuple(map(grads.get, names))
        if len(grads) != len(names) or not (all(map(operator.is_not, seen, repeat(None)))
                                            or all(n in grads for n in names)):
            missing = [n for n in names if n not in grads]
            extra = sorted(map(repr, set(grads) - set(names)))
            raise ValueError(f"grads must have exactly the parameter names; missing {missing}, "
                             f"unexpected [{', '.join(extra)}]")
        lr = self.param_groups[0]["lr"]
        # None: a user's rule without a learning rate. The float checked last step is not checked
        # again (a float is immutable; the check returns a float as it is).
        if lr is not None and not (lr is self._lr_checked and type(lr) is float):
            lr = self._lr_checked = check_scalar("param_groups[0]['lr']", lr, low=0)
        cached = self._overlap_ok
        # Clean configs hold the state arrays last checked: only the gradients need comparing.
        state = cached[1] if clean and cached is not None else tuple(
            a for cfg in self.configs.values() for a in cfg.values() if isinstance(a, np.ndarray))
        # The same gradient and state objects as last checked: the same overlap answer (an ndarray's
        # memory is fixed for its lifetime). Shapes, dtypes and writeability are re-checked always.
        known = (cached is not None and len(cached[0]) == len(seen) and len(cached[1]) == len(state)
                 and all(map(operator.is_, seen, cached[0])) and all(map(operator.is_, state, cached[1])))
        # fastopt's rules update their state arrays in place: a config array made read-only in place
        # (no config write, so no watch sees it) is refused here, before any parameter moves.
        # (Clean configs hold the flat buffers' views, made after the last full check.)
        if self._in_place and not all(map(_WRITEABLE, self._flat.state_views if clean else state)):
            self._refuse_read_only_state()
        if known and self._grads_as_is is not None and self._grads_as_is == _layout(seen, names.values()):
            out = dict(zip(names, seen))    # the loop below would find the same: every gradient fits as is
        else:
            out = self._check_grads(seen, known)
            if not known:
                self._overlap_ok = (seen, state)
        if not clean:
            lr, adopt = self._config_rates(lr)
            for name, cfg in self.configs.items():
                if not _unchanged(cfg, self._checked[name]):
                    self._check_config(f"configs[{name!r}]", _with_lr(cfg, lr), names[name])
            if adopt:       # every check passed: the configs' one rate becomes the group's
                dict.__setitem__(self.param_groups[0], "lr", lr)
                self._lr_checked = lr
        return lr, out

    def _refuse_read_only_state(self):
        for name, cfg in self.configs.items():
            for key, a in cfg.items():
                if isinstance(a, np.ndarray) and not a.flags.writeable:
                    raise ValueError(f"configs[{name!r}][{key!r}] must be writeable: the update rule "
                                     f"updates it in place")

    def _config_rates(self, lr):
        """(rate of this step, whether the group adopts it). CS231n code sets the rate in the configs
        (``optim_configs[p]['learning_rate'] *= decay``), the group's setter writes it into every
        config: so a config whose rate differs from the group's was written there, and wins. One rate
        in every config becomes the group's; different ones (None here: each config keeps its own)
        are each parameter's until the group's rate is set again."""
        if lr is None:
            return None, False
        rates = [cfg.get("learning_rate", lr) for cfg in self.configs.values()]
        rate = rates[0]
        # Anything but a number (refused by the configs' checks) counts as a rate of its own.
        if _is_number(rate) and all(_is_number(r) and r == rate for r in rates):
            return (lr, False) if rate == lr else (rate, True)
        return None, False

    def _check_grads(self, seen, known):
        """The gradients (`seen`, in parameter order) checked against the parameters: the ones to use
        (converted when of another dtype or not contiguous). `known`: their memory was checked."""
        names, out = self.params, {}
        for (name, w), g in zip(names.items(), seen):
            if not isinstance(g, np.ndarray) or g.dtype.kind != "f":
                got = f"{g.dtype} array" if isinstance(g, np.ndarray) else type(g).__name__
                raise TypeError(f"grads[{name!r}] must be a float ndarray, got {got}")
            if g.shape != w.shape:
                raise ValueError(f"grads[{name!r}] must have the shape of params[{name!r}] {w.shape}, got {g.shape}")
            if not w.flags.writeable:
                raise ValueError(f"params[{name!r}] must be writeable: it is updated in place")
            if not known:
                own = [a for a in self.configs[name].values() if isinstance(a, np.ndarray)]
                for other in [w] + own:
                    if np.may_share_memory(g, other) and np.shares_memory(g, other):
                        raise ValueError(f"grads[{name!r}] shares memory with params[{name!r}] or its state")
            if g.dtype != w.dtype or not g.flags.c_contiguous:
                g = np.ascontiguousarray(g, dtype=w.dtype)  # a read-only operand: converted as NumPy does
            out[name] = g
        # Every gradient used as it is: remember the layout that allowed it (see _layout).
        self._grads_as_is = _layout(seen, names.values()) if all(map(operator.is_, out.values(), seen)) else None
        return out

    # ------------------------------------------------------------ the step
    def step(self, grads):
        """One update of every parameter from `grads` (a Mapping by name); all or nothing."""
        if not self._lock.acquire(blocking=False):
            raise RuntimeError("RuleOptimizer.step is running in another thread; one optimizer "
                               "steps from one thread at a time")
        try:
            watch = self._watch
            # Nothing but the last flat step touched the configs (nor rebound self.configs): they
            # are valid, agree and hold the flat buffers' views, so nothing of them is re-read.
            clean = watch.clean and self.configs is self._watched
            given, repeat_of, self._repeat = grads, self._repeat, None
            lr = self.param_groups[0]["lr"]
            if (clean and repeat_of is not None and grads is repeat_of[0] and lr is self._lr_checked
                    and type(lr) is float and not self.track_update_ratio and repeat_of[2].check(repeat_of[1])):
                # The same FlatArrays as the last flat step (its views cannot be rebound), the rate
                # checked then, and what the checks of _prepare read unchanged (the guard, in C).
                flat, gspan, ready, fresh = self._flat, repeat_of[1][0], True, False
            else:
                repeat_of = None
                lr, grads = self._prepare(grads, clean)
                flat = self._flat
                gspan = flat.grad_span(grads) if flat is not None else None
                if gspan is not None and lr is not None:   # None: per-parameter rates (_config_rates)
                    ready, fresh = (True, False) if clean else flat.ready(self.configs)
                else:
                    ready = fresh = False
            ratios = {} if self.track_update_ratio else None
            watch.clean = False          # until this step has completed on the flat path
            if ready:
                flat.step(self.configs, lr, gspan, fresh, ratios, clean)
            elif self._in_place:
                for name, w in self.params.items():
                    cfg = _with_lr(self.configs[name], lr, in_place=True)
                    if ratios is not None:
                        cfg, ratios[name] = _tracked_update(self.rule, w, grads[name], cfg)
                    else:
                        next_w, cfg = self.rule(w, grads[name], cfg)
                        if next_w is not w:
                            np.copyto(w, next_w)
                    self.configs[name] = cfg
            else:
                results = {}
                for name, w in self.params.items():
                    cfg = copy.deepcopy(_with_lr(self.configs[name], lr))
                    next_w, cfg = self.rule(w.copy(), grads[name], cfg)
                    if not isinstance(next_w, np.ndarray) or next_w.shape != w.shape or not isinstance(cfg, dict):
                        raise ValueError(f"update rule {getattr(self.rule, '__name__', self.rule)!r} returned "
                                         f"{type(next_w).__name__} for params[{name!r}] {w.shape}")
                    results[name] = (next_w, cfg)
                for name, (next_w, cfg) in results.items():
                    old = self.params[name].copy() if ratios is not None else None
                    np.copyto(self.params[name], next_w, casting="same_kind")
                    self.configs[name] = cfg
                    if ratios is not None:
                        ratios.update(_ratios_by_name({name: old}, old.reshape(-1), self.params[name].reshape(-1)))
            if not (clean and ready):    # a clean flat step changed only the step counters
                for name, cfg in self.configs.items():
                    self._checked[name] = dict(cfg)
            # Clean from here on when this step was the flat one and every config (and their
            # container) is one whose changes clear the watch (a user's own dict is not).
            watch.clean = ready and (clean or self.configs is self._watched and all(
                type(cfg) is _Watched and cfg._watch is watch for cfg in self.configs.values()))
            if watch.clean and ratios is None:
                if repeat_of is None and type(given) is FlatArrays and flat.one is not None \
                        and flat.one[1] is gspan:
                    repeat_of = (given, *flat.guard(flat.one[0], given, gspan))
                self._repeat = repeat_of
            if ratios is not None:
                self._ratios = ratios
        finally:
            self._lock.release()

    def update_ratios(self):
        """{parameter name: ||p_new - p_old|| / ||p_old||} of the last step (0 where p_old was all
        zeros); empty before the first. Needs track_update_ratio=True. With fastopt's own rules it
        comes from the step's own kernel pass (one call for a model whose params and grads tile
        one buffer each, else one per parameter); with any other rule from a copy of the
        parameters taken before the update."""
        if not self.track_update_ratio:
            raise RuntimeError("this RuleOptimizer tracks no update ratios: construct it with "
                               "track_update_ratio=True")
        return dict(self._ratios)

    # ------------------------------------------------------------ state
    def state_dict(self):
        """Plain data: {"configs": {name: CS231n config (arrays copied)}, "param_groups": [{"lr": ...}]}."""
        lr = self.param_groups[0]["lr"]
        configs = {}
        for name, cfg in self.configs.items():
            # A config's own rate (per-parameter rates: _config_rates), the group's where it has none.
            full = cfg if lr is None or "learning_rate" in cfg else _with_lr(cfg, lr)
            configs[name] = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in full.items()}
        return {"configs": configs, "param_groups": [{"lr": lr}]}

    def load_state_dict(self, state_dict, label="state_dict"):
        """Restore a state_dict(): everything is validated first, then the arrays are copied in."""
        if not isinstance(state_dict, dict) or set(state_dict) != {"configs", "param_groups"}:
            got = sorted(map(repr, state_dict)) if isinstance(state_dict, dict) else type(state_dict).__name__
            raise ValueError(f"{label} must be a dict with 'configs' and 'param_groups', got {got}")
        groups, configs = state_dict["param_groups"], state_dict["configs"]
        if not isinstance(groups, list) or len(groups) != 1 or not isinstance(groups[0], dict) \
                or set(groups[0]) != {"lr"}:
            raise ValueError(f"{label}['param_groups'] must be [{{'lr': learning rate}}]")
        lr = groups[0]["lr"]
        if lr is not None:
            lr = check_scalar(f"{label}['param_groups'][0]['lr']", lr, low=0)
        if not isinstance(configs, dict) or set(configs) != set(self.params):
            got = sorted(map(repr, configs)) if isinstance(configs, dict) else type(configs).__name__
            raise ValueError(f"{label}['configs'] must have one config per parameter "
                             f"{sorted(self.params)}, got {got}")
        for name, cfg in configs.items():
            self._check_config(f"{label}['configs'][{name!r}]", cfg, self.params[name])
        # Validated: now change things (the group dict is kept: a schedule may hold it).
        self.configs.clear()  # the group holds this dict
        self.configs.update({name: _Watched(self._watch, {k: (np.array(v, order="C") if isinstance(v, np.ndarray)
                                                              else v) for k, v in cfg.items()})
                             for name, cfg in configs.items()})
        self._checked = {name: None for name in self.params}
        self._watch.clean = False
        if self._flat is not None:
            keys = self._flat.keys
            if keys and all(key in cfg for cfg in self.configs.values() for key in keys):
                self._flat.adopt(self.configs, fill={n: dict(cfg) for n, cfg in self.configs.items()})
            else:
                self._flat.views = self._flat.buffers = self._flat.plan = self._flat.kernel = None
        # Not through the group's setter: the configs keep the rates they were saved with.
        dict.__setitem__(self.param_groups[0], "lr", lr)
        self._lr_checked = None

    def __repr__(self):
        return f"RuleOptimizer({getattr(self.rule, '__name__', self.rule)}, lr={self.param_groups[0]['lr']})"


__all__ = ["RuleOptimizer"]
