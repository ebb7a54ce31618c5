"""The Optimizer base class: param groups, per-parameter state, step() and state_dict().

Semantics follow torch.optim, adapted to NumPy:

* Gradients are passed to ``step(grads)`` (NumPy arrays have no ``.grad``), so there is no
  ``zero_grad``: nothing is accumulated between steps.
* Parameters are identified by their position in the flattened param groups (group order, then
  order within the group), which is also how ``state_dict()`` refers to them, as torch does.
  ``opt.state[i]`` is the state dict of parameter ``i``.
* Every call validates everything first and then updates; a call that raises changed nothing.

Layout (chosen so a "flat storage" fast path can be added later): per parameter ``i`` the
optimizer keeps ``_flat[i]`` (a 1-D view of the parameter, made once) and ``_views[i]`` (1-D
views of its state arrays, in the order of ``_STATE``). ``step`` validates, then calls
``_step_group`` per group, which loops ``_update`` over the group's parameters; a flat-storage
subclass only needs to override ``_step_group`` to make one kernel call per group.

The state arrays in ``opt.state[i]`` are updated in place. Edit them in place if you must;
rebinding an entry to a new array is not seen by the cached views (use ``load_state_dict``).
"""
import copy
import numbers
import operator

import numpy as np

from .. import _backend
from .._validation import check_array, check_bool, check_distinct, check_like, check_scalar

_EMPTY = {np.dtype(np.float32): np.empty(0, np.float32), np.dtype(np.float64): np.empty(0, np.float64)}


def empty_like_dtype(dtype):
    """The shared size-0 array the kernels take in place of a buffer an option does not use."""
    return _EMPTY[dtype]


# ---------------------------------------------------------------- hyperparameter checkers
# Each takes (name, value) and returns the normalized value (Python float / bool) or raises.

def nonneg(name, value):
    return check_scalar(name, value, low=0.0)


def unit_open(name, value):
    """[0, 1): momentum and betas (1 would never forget, and bias corrections divide by 1 - beta**t)."""
    return check_scalar(name, value, low=0.0, high=1.0, high_open=True)


def unit_closed(name, value):
    return check_scalar(name, value, low=0.0, high=1.0)


def boolean(name, value):
    return check_bool(name, value)


def betas(name, value):
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        got = f"{type(value).__name__} of length {len(value)}" if isinstance(value, (tuple, list)) \
            else type(value).__name__
        raise TypeError(f"{name} must be a pair (beta1, beta2), got {got}")
    return (unit_open(f"{name}[0]", value[0]), unit_open(f"{name}[1]", value[1]))


def _label(key):
    return f"[{key!r}]" if isinstance(key, str) else f"[{key}]"


class Optimizer:
    """Base class. Subclasses set:

    ``_HYPER``: ((key, checker), ...) in the order ``_update`` receives the values;
    ``_STATE``: ((key, required), ...) state arrays shaped like the parameter; a required array
    exists from construction, an optional one is a size-0 array until an option needs it;
    ``_HAS_STEP``: whether the state holds a per-parameter int ``step`` (as torch's does);
    ``_update(k, i, grad, hyper)``: the per-parameter update on kernel module ``k``.
    """

    _HYPER = ()
    _STATE = ()
    _HAS_STEP = True

    def __init__(self, params, defaults):
        self._hyper_getter = operator.itemgetter(*(key for key, _ in self._HYPER))
        self.defaults = {}
        for key, check in self._HYPER:
            self.defaults[key] = check(key, defaults[key])
        self._check_hyper("", tuple(self.defaults[k] for k, _ in self._HYPER))
        self.param_groups = []
        self.state = []
        self._params = []       # the user's arrays, flattened over groups
        self._names = []        # a name per parameter, or None when it was given unnamed
        self._flat = []         # 1-D views of the parameters
        self._views = []        # per parameter: 1-D views of its state arrays, in _STATE order
        self._group_params = []  # per group: the tuple stored in group["params"]
        self._group_slices = []  # per group: range of flat indices
        self._hyper_cache = []  # per group: (raw values, validated values)

        if isinstance(params, np.ndarray):
            raise TypeError("params must be a list or dict of arrays (or of param-group dicts), "
                            "got a single ndarray; pass [array]")
        if isinstance(params, dict):
            groups = [{"params": params}]
            plain = True
        else:
            try:
                groups = list(params)
            except TypeError:
                raise TypeError(f"params must be a list or dict of arrays or a list of param-group "
                                f"dicts, got {type(params).__name__}") from None
            if not groups:
                raise ValueError("params is empty: the optimizer has nothing to update")
            plain = not all(isinstance(g, dict) for g in groups)
            if plain:
                groups = [{"params": groups}]
        for gi, group in enumerate(groups):
            self._add_group(group, "params" if plain else f"param_groups[{gi}]", plain)

    # ------------------------------------------------------------ groups and parameters
    def add_param_group(self, param_group):
        """Add a group {"params": [...] or {name: array}, hyperparameter: value, ...}.

        Missing hyperparameters take the constructor's values. Validated before anything changes.
        """
        self._add_group(param_group, "param_group", False)

    def _add_group(self, group, label, plain):
        if not isinstance(group, dict):
            raise TypeError(f"{label} must be a dict with a 'params' entry, got {type(group).__name__}")
        if "params" not in group:
            raise ValueError(f"{label} has no 'params' entry")
        raw = group["params"]
        where = label if plain else f"{label}['params']"
        if isinstance(raw, np.ndarray):
            raise TypeError(f"{where} must be a list or dict of arrays, got a single ndarray; pass [array]")
        if isinstance(raw, dict):
            names, arrays = list(raw.keys()), list(raw.values())
            for name in names:
                if not isinstance(name, str):
                    raise TypeError(f"{where} keys must be str names, got {type(name).__name__}")
        elif isinstance(raw, (list, tuple)):
            names, arrays = [None] * len(raw), list(raw)
        else:
            raise TypeError(f"{where} must be a list or dict of arrays, got {type(raw).__name__}")
        if not arrays:
            raise ValueError(f"{where} is empty")
        labels = [f"{where}{_label(n if n is not None else j)}" for j, n in enumerate(names)]
        for lab, a in zip(labels, arrays):
            check_array(lab, a, writeable=True)
        taken = {n for n in self._names if n is not None}
        for n, lab in zip(names, labels):
            if n in taken:
                raise ValueError(f"{lab}: the name {n!r} is already used by another parameter")
        check_distinct([(f"parameter {i}", p) for i, p in enumerate(self._params)] + list(zip(labels, arrays)))

        new = {k: v for k, v in group.items() if k not in ("params", "param_names")}
        for key, _ in self._HYPER:
            new.setdefault(key, self.defaults[key])
        hyper = self._validate_group(label, new)

        # Validated: now change things.
        start = len(self._params)
        stored = tuple(arrays)
        new["params"] = stored
        if names[0] is not None:
            new["param_names"] = tuple(names)
        for key, value in zip((k for k, _ in self._HYPER), hyper):
            new[key] = value
        for n, a in zip(names, arrays):
            self._params.append(a)
            self._names.append(n)
            self._flat.append(a.reshape(-1))
            self.state.append(self._init_state(a, hyper))
            self._views.append(None)
            self._refresh_views(len(self._params) - 1)
        self.param_groups.append(new)
        self._group_params.append(stored)
        self._group_slices.append(range(start, len(self._params)))
        self._hyper_cache.append(None)

    def _init_state(self, param, hyper):
        h = dict(zip((k for k, _ in self._HYPER), hyper))
        state = {"step": 0} if self._HAS_STEP else {}
        for key, required in self._STATE:
            state[key] = self._initial_buffer(key, param, h) if required or self._wants(key, h) \
                else empty_like_dtype(param.dtype)
        return state

    def _initial_buffer(self, key, param, hyper):
        """A new state array for `key`: zeros unless a subclass says otherwise."""
        return np.zeros_like(param)

    def _wants(self, key, hyper):
        """Whether optional state array `key` is used under hyperparameters `hyper` (a dict)."""
        return False

    def _refresh_views(self, i):
        self._views[i] = [self.state[i][key].reshape(-1) for key, _ in self._STATE]

    def _buffer(self, i, key, slot):
        """Allocate optional state array `key` (zeros) of parameter i when an option first needs it."""
        self.state[i][key] = np.zeros_like(self._params[i])
        self._refresh_views(i)
        return self._views[i][slot]

    # ------------------------------------------------------------ validation
    def _validate_group(self, label, group):
        """The group's hyperparameters checked and normalized, as a tuple in _HYPER order."""
        values = []
        for key, check in self._HYPER:
            if key not in group:
                raise ValueError(f"{label} has no {key!r} entry")
            values.append(check(f"{label}[{key!r}]", group[key]))
        values = tuple(values)
        self._check_hyper(label, values)
        return values

    def _check_hyper(self, label, values):
        """Checks across hyperparameters (e.g. nesterov needs momentum); label '' = constructor."""

    def _group_hyper(self, gi):
        """Group gi's validated hyperparameters; revalidated only when an entry was rebound."""
        group = self.param_groups[gi]
        cached = self._hyper_cache[gi]
        if group.get("params") is not self._group_params[gi]:
            raise ValueError(f"param_groups[{gi}]['params'] was replaced; parameters are fixed at "
                             f"construction (use add_param_group to add some)")
        try:
            raw = self._hyper_getter(group)
        except KeyError as exc:
            raise ValueError(f"param_groups[{gi}] has no {exc.args[0]!r} entry") from None
        # Identity, not equality: an entry rebound to an equal value of another type (True for 1.0)
        # is still revalidated.
        if cached is not None and all(map(operator.is_, raw, cached[0])):
            return cached[1]
        values = self._validate_group(f"param_groups[{gi}]", group)
        self._hyper_cache[gi] = (raw, values)
        return values

    def _grad_label(self, i, by_name):
        return f"grads[{self._names[i]!r}]" if by_name else f"grads[{i}]"

    def _param_label(self, i):
        return f"params[{self._names[i]!r}]" if self._names[i] is not None else f"params[{i}]"

    def _collect_grads(self, grads):
        """Validate `grads` against the parameters; return their 1-D views in parameter order."""
        n = len(self._params)
        by_name = isinstance(grads, dict)
        if by_name:
            if any(name is None for name in self._names):
                raise TypeError("grads is a dict but the parameters were not all given by name; "
                                "pass a list aligned with the parameters in param_groups order")
            missing = [name for name in self._names if name not in grads]
            if missing or len(grads) != n:
                extra = sorted(map(repr, set(grads) - set(self._names)))
                raise ValueError(f"grads must have exactly the parameter names; missing {missing}, "
                                 f"unexpected [{', '.join(extra)}]")
            seq = [grads[name] for name in self._names]
        elif isinstance(grads, (list, tuple)):
            if len(grads) != n:
                raise ValueError(f"grads has {len(grads)} entries, expected {n} "
                                 f"(one per parameter, in param_groups order)")
            seq = grads
        else:
            raise TypeError(f"grads must be a list of arrays aligned with the parameters"
                            f"{' or a dict by name' if None not in self._names else ''}, "
                            f"got {type(grads).__name__}")
        flat = []
        params = self._params
        ndarray = np.ndarray
        for i, g in enumerate(seq):
            p = params[i]
            if not (type(g) is ndarray and g.dtype == p.dtype and g.shape == p.shape
                    and g.flags.c_contiguous):
                check_like(self._grad_label(i, by_name), g, self._param_label(i), p)
            if g is p:
                raise ValueError(f"{self._grad_label(i, by_name)} is the parameter array itself")
            flat.append(g.reshape(-1) if g.ndim != 1 else g)
        return flat

    # ------------------------------------------------------------ the step
    def step(self, grads):
        """One update of every parameter from `grads` (a list in parameter order, or a dict by name).

        Everything (grads and every group's hyperparameters) is checked before any array changes.
        """
        n_groups = len(self._group_params)
        if len(self.param_groups) != n_groups:
            raise ValueError("param_groups was changed by adding or removing a group; use add_param_group")
        flat = self._collect_grads(grads)
        hypers = [self._group_hyper(gi) for gi in range(n_groups)]
        k = _backend.kernels("optim")
        for gi in range(n_groups):
            self._step_group(k, gi, flat, hypers[gi])

    def _step_group(self, k, gi, flat_grads, hyper):
        update = self._update
        for i in self._group_slices[gi]:
            update(k, i, flat_grads[i], hyper)

    def _update(self, k, i, grad, hyper):
        raise NotImplementedError

    # ------------------------------------------------------------ state_dict
    def state_dict(self):
        """Plain data: {"state": {index: {"step": int, name: ndarray copy}}, "param_groups": [...]}.

        Groups hold their hyperparameters and "params" as a list of indices (and "param_names"
        when named), as torch's do. Arrays are copies: later steps do not change a saved dict.
        Round-trips through pickle; for np.savez use fastopt.optim.save_state / state_to_arrays.
        """
        groups = []
        for gi, group in enumerate(self.param_groups):
            values = self._validate_group(f"param_groups[{gi}]", group)
            saved = {k: copy.deepcopy(v) for k, v in group.items() if k not in ("params", "param_names")}
            saved.update(zip((k for k, _ in self._HYPER), values))
            saved["params"] = list(self._group_slices[gi])
            if "param_names" in group:
                saved["param_names"] = list(group["param_names"])
            groups.append(saved)
        state = {i: {key: (v.copy() if isinstance(v, np.ndarray) else v) for key, v in st.items()}
                 for i, st in enumerate(self.state)}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Restore from `state_dict()` output. Everything is validated first; arrays are copied in."""
        label = "state_dict"
        if not isinstance(state_dict, dict):
            raise TypeError(f"{label} must be a dict, got {type(state_dict).__name__}")
        for key in ("state", "param_groups"):
            if key not in state_dict:
                raise ValueError(f"{label} has no {key!r} entry")
        groups, state = state_dict["param_groups"], state_dict["state"]
        if not isinstance(groups, (list, tuple)):
            raise TypeError(f"{label}['param_groups'] must be a list, got {type(groups).__name__}")
        if len(groups) != len(self.param_groups):
            raise ValueError(f"{label} has {len(groups)} param groups, this optimizer has "
                             f"{len(self.param_groups)}")
        new_groups = []
        for gi, group in enumerate(groups):
            glabel = f"{label}['param_groups'][{gi}]"
            if not isinstance(group, dict):
                raise TypeError(f"{glabel} must be a dict, got {type(group).__name__}")
            expected = list(self._group_slices[gi])
            got = group.get("params")
            if not isinstance(got, (list, tuple)) or len(got) != len(expected):
                count = len(got) if isinstance(got, (list, tuple)) else type(got).__name__
                raise ValueError(f"{glabel}['params'] must list {len(expected)} parameter indices, got {count}")
            if [int(j) if isinstance(j, numbers.Integral) else j for j in got] != expected:
                raise ValueError(f"{glabel}['params'] must be {expected}, got {list(got)}")
            mine = self.param_groups[gi].get("param_names")
            if "param_names" in group and mine is not None and list(group["param_names"]) != list(mine):
                raise ValueError(f"{glabel}['param_names'] {list(group['param_names'])} do not match "
                                 f"this optimizer's {list(mine)}")
            values = self._validate_group(glabel, group)
            new = {k: copy.deepcopy(v) for k, v in group.items() if k not in ("params", "param_names")}
            new.update(zip((k for k, _ in self._HYPER), values))
            new_groups.append(new)

        if not isinstance(state, dict):
            raise TypeError(f"{label}['state'] must be a dict, got {type(state).__name__}")
        n = len(self._params)
        if set(state) != set(range(n)):
            raise ValueError(f"{label}['state'] must have an entry for each parameter index 0..{n - 1}, "
                             f"got keys {sorted(state, key=repr)}")
        allowed = {key for key, _ in self._STATE} | ({"step"} if self._HAS_STEP else set())
        new_state = []
        for i in range(n):
            slabel = f"{label}['state'][{i}]"
            entry, p = state[i], self._params[i]
            if not isinstance(entry, dict):
                raise TypeError(f"{slabel} must be a dict, got {type(entry).__name__}")
            unknown = set(entry) - allowed
            if unknown:
                raise ValueError(f"{slabel} has unexpected entries {sorted(map(repr, unknown))}; "
                                 f"expected {sorted(allowed)}")
            st = {}
            if self._HAS_STEP:
                if "step" not in entry:
                    raise ValueError(f"{slabel} has no 'step' entry")
                st["step"] = check_scalar(f"{slabel}['step']", entry["step"], low=0, integer=True)
            for key, required in self._STATE:
                alabel = f"{slabel}[{key!r}]"
                if key not in entry:
                    if required:
                        raise ValueError(f"{slabel} has no {key!r} entry")
                    st[key] = empty_like_dtype(p.dtype)
                    continue
                a = entry[key]
                if not isinstance(a, np.ndarray):
                    raise TypeError(f"{alabel} must be an ndarray, got {type(a).__name__}")
                if a.dtype != p.dtype:
                    raise TypeError(f"{alabel} must have the dtype of {self._param_label(i)} "
                                    f"({p.dtype}), got {a.dtype}")
                if not required and a.size == 0:
                    st[key] = empty_like_dtype(p.dtype)
                    continue
                if a.shape != p.shape:
                    raise ValueError(f"{alabel} must have the shape of {self._param_label(i)} "
                                     f"{p.shape}, got {a.shape}")
                st[key] = np.array(a, dtype=p.dtype, order="C", copy=True)
            new_state.append(st)

        # Validated: now change things. Group dicts are updated in place (schedules may hold them).
        for gi, new in enumerate(new_groups):
            group = self.param_groups[gi]
            kept = {k: group[k] for k in ("params", "param_names") if k in group}
            group.clear()
            group.update(new)
            group.update(kept)
            self._hyper_cache[gi] = None
        self.state[:] = new_state
        for i in range(n):
            self._refresh_views(i)

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for gi, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {gi}")
            for key in sorted(k for k in group if k not in ("params", "param_names")):
                lines.append(f"    {key}: {group[key]}")
        lines.append(")")
        return "\n".join(lines)
