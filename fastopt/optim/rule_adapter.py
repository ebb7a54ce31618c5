"""The optimizer interface around a CS231n update rule ``rule(w, dw, config) -> (next_w, config)``.

The Solver drives every update rule through this interface (``param_groups`` with ``'lr'``,
``step(grads)``, ``state_dict()`` / ``load_state_dict()``), so its loop has one path for
``fastopt.optim.Adam`` and for ``"adam"``:

    opt = RuleOptimizer(fastopt.optim.adam, model.params, {"learning_rate": 1e-3})
    opt.step(grads)              # every parameter, all or nothing
    opt.param_groups[0]["lr"]    # the learning rate; schedules edit it in place, as in torch
    opt.configs["W1"]            # CS231n's per-parameter config: hyperparameters and state

The one param group holds the learning rate (written into every config's ``learning_rate`` before
each step); ``configs`` hold the rest, as CS231n's Solver keeps them (``optim_configs``).

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
import threading
from collections.abc import Mapping

import numpy as np

from .._validation import check_array, check_distinct, check_scalar

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


def _with_lr(cfg, lr, in_place=False):
    """`cfg` with the group's learning rate (unchanged when the rule has none)."""
    if lr is None:
        return cfg
    if in_place:
        cfg["learning_rate"] = lr
        return cfg
    return dict(cfg, learning_rate=lr)


class _Group(dict):
    """The param group: setting 'lr' (as a schedule does) also sets every config's learning_rate,
    so CS231n's view (configs) and torch's view (param_groups) agree at all times."""

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


class RuleOptimizer:
    """`rule` applied to every array of `params` (a Mapping name -> array, updated in place), each
    with its own copy of `config` (hyperparameters only: the rule creates the state arrays)."""

    def __init__(self, rule, params, config=None):
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
        self.configs = {name: copy.deepcopy(config) for name in self.params}
        self._checked = {name: None for name in self.params}  # a config as last validated (shallow copy)
        self.param_groups = [_Group(self._set_lr, lr)]
        self._lock = threading.Lock()

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
        self._probe(label, cfg)

    def _prepare(self, grads):
        """Check everything step() reads; return the gradients to use, in parameter order."""
        if not isinstance(grads, Mapping):
            raise TypeError(f"grads must be a Mapping name -> array, got {type(grads).__name__}")
        names = self.params
        if len(grads) != len(names) or any(n not in grads for n in names):
            missing = [n for n in names if n not in grads]
            extra = sorted(map(repr, set(grads) - set(names)))
            raise ValueError(f"grads must have exactly the parameter names; missing {missing}, "
                             f"unexpected [{', '.join(extra)}]")
        lr = self.param_groups[0]["lr"]
        if lr is not None:  # None: a user's rule without a learning rate
            lr = check_scalar("param_groups[0]['lr']", lr, low=0)
        out = {}
        for name, w in names.items():
            g = grads[name]
            if not isinstance(g, np.ndarray) or g.dtype.kind != "f":
                got = f"{g.dtype} array" if isinstance(g, np.ndarray) else type(g).__name__
                raise TypeError(f"grads[{name!r}] must be a float ndarray, got {got}")
            if g.shape != w.shape:
                raise ValueError(f"grads[{name!r}] must have the shape of params[{name!r}] {w.shape}, got {g.shape}")
            if not w.flags.writeable:
                raise ValueError(f"params[{name!r}] must be writeable: it is updated in place")
            state = [a for a in self.configs[name].values() if isinstance(a, np.ndarray)]
            for other in [w] + state:
                if np.may_share_memory(g, other) and np.shares_memory(g, other):
                    raise ValueError(f"grads[{name!r}] shares memory with params[{name!r}] or its state")
            if g.dtype != w.dtype or not g.flags.c_contiguous:
                g = np.ascontiguousarray(g, dtype=w.dtype)  # a read-only operand: converted as NumPy does
            out[name] = g
        for name, cfg in self.configs.items():
            if not _unchanged(cfg, self._checked[name]):
                self._check_config(f"configs[{name!r}]", _with_lr(cfg, lr), names[name])
        return lr, out

    # ------------------------------------------------------------ the step
    def step(self, grads):
        """One update of every parameter from `grads` (a Mapping by name); all or nothing."""
        if not self._lock.acquire(blocking=False):
            raise RuntimeError("RuleOptimizer.step is running in another thread; one optimizer "
                               "steps from one thread at a time")
        try:
            lr, grads = self._prepare(grads)
            if self._in_place:
                for name, w in self.params.items():
                    next_w, cfg = self.rule(w, grads[name], _with_lr(self.configs[name], lr, in_place=True))
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
                    np.copyto(self.params[name], next_w, casting="same_kind")
                    self.configs[name] = cfg
            for name, cfg in self.configs.items():
                self._checked[name] = dict(cfg)
        finally:
            self._lock.release()

    # ------------------------------------------------------------ state
    def state_dict(self):
        """Plain data: {"configs": {name: CS231n config (arrays copied)}, "param_groups": [{"lr": ...}]}."""
        lr = self.param_groups[0]["lr"]
        configs = {}
        for name, cfg in self.configs.items():
            configs[name] = {k: (v.copy() if isinstance(v, np.ndarray) else v)
                             for k, v in _with_lr(cfg, lr).items()}
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
        self.configs.update({name: {k: (np.array(v, order="C") if isinstance(v, np.ndarray) else v)
                                    for k, v in cfg.items()} for name, cfg in configs.items()})
        self._checked = {name: None for name in self.params}
        self.param_groups[0]["lr"] = lr

    def __repr__(self):
        return f"RuleOptimizer({getattr(self.rule, '__name__', self.rule)}, lr={self.param_groups[0]['lr']})"


__all__ = ["RuleOptimizer"]
