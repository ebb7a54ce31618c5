"""The Optimizer base class: param groups, per-parameter state, step() and state_dict().

Semantics follow torch.optim, adapted to NumPy:

* Gradients are passed to ``step(grads)`` (NumPy arrays have no ``.grad``), so there is no
  ``zero_grad``: nothing is accumulated between steps.
* Parameters are identified by their position in the flattened param groups (group order, then
  order within the group), which is also how ``state_dict()`` refers to them, as torch does.
  ``opt.state[i]`` is the state dict of parameter ``i``.
* Every call validates everything first and then updates; a call that raises changed nothing.

Layout: per parameter ``i`` the optimizer keeps ``_flat[i]`` (a 1-D view of the parameter, made
once) and ``_views[i]`` (1-D views of its state arrays, in the order of ``_STATE``). ``step``
validates, then calls ``_step_group`` per group, which hands 1-D arrays to the subclass's
``_kernel`` (one kernel call).

Flat fast path (fastopt.flat): when a group's parameters tile one buffer in order
(``tiles_one_buffer``, checked once per group), each of its state kinds is allocated as ONE buffer
of which ``state[i][key]`` are views, so ``state[i]`` and ``state_dict()`` stay per parameter. A
step whose gradients also tile one buffer in the same order (an address check, cached while the
same gradient arrays come back) then makes ONE kernel call over the whole group. Otherwise -- other
gradients, state rebuilt per parameter by load_state_dict, unequal step counts -- the group takes
the per-parameter loop, which computes the same bits (the kernels are elementwise).

The state arrays in ``opt.state[i]`` are updated in place. Edit them in place if you must;
rebinding an entry to a new array is not seen by the cached views (use ``load_state_dict``).
"""
import copy
import numbers
import operator
from collections.abc import Mapping

import numpy as np

from .. import _backend
from ..flat import tiles_one_buffer
from .._validation import check_array, check_bool, check_distinct, check_like, check_scalar

_EMPTY = {np.dtype(np.float32): np.empty(0, np.float32), np.dtype(np.float64): np.empty(0, np.float64)}

# State placement. NumPy (glibc malloc -> mmap) starts every big array 16 bytes into a 4 KiB page,
# so element i of a parameter, its gradient and state arrays allocated the same way share their low
# 12 address bits, and the kernels' loads wait on earlier stores to other arrays (4K aliasing).
# Measured (16M float32 Adam kernel, AVX2, 1 thread, 2-core Zen 1, min of 9): 20-23 ms with m, v
# at NumPy's offset, 13-16 ms with m, v at 1024 / 2048 bytes into the page. So every state array of
# at least _PLACE_MIN_BYTES starts at _PLACE_STRIDE * (slot + 1) bytes into a page: kinds differ
# from each other and from NumPy's offset 16 (cache-line aligned; 4 KiB extra per array, <= 1/16).
_PLACE_MIN_BYTES = 1 << 16
_PLACE_STRIDE = 1024
_PAGE = 4096


def placed_array(shape, dtype, slot, fill=None):
    """A new C-contiguous array of `shape`/`dtype` starting _PLACE_STRIDE*(slot+1) bytes into a page
    (when large; else a plain allocation), filled with `fill` unless None (then uninitialized)."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if nbytes < _PLACE_MIN_BYTES:
        a = np.empty(shape, dtype)
    else:
        raw = np.empty(nbytes + 2 * _PAGE, np.uint8)
        start = -raw.ctypes.data % _PAGE + (_PLACE_STRIDE * (slot + 1)) % _PAGE
        a = raw[start:start + nbytes].view(dtype).reshape(shape)
    if fill is not None:
        a.fill(fill)
    return a


def is_placed(a, slot):
    """Whether `a` sits where placed_array(..., slot) would put it (small arrays: always)."""
    return a.nbytes < _PLACE_MIN_BYTES or a.ctypes.data % _PAGE == (_PLACE_STRIDE * (slot + 1)) % _PAGE


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
    ``_uses(hyper)``: per _STATE slot, whether the kernel gets that array under `hyper` (else the
    empty array); a used optional array is allocated (zeros) the first time it is needed;
    ``_kernel(k, p, grad, views, step, fresh, hyper)``: one call of kernel module ``k`` on 1-D
    arrays (one parameter, or a whole flat group): ``views`` per _STATE slot, ``step`` the new step
    count (None without _HAS_STEP), ``fresh`` whether the used optional arrays were just allocated.
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
        self._group_span = []   # per group: 1-D view of the buffer its params tile in order, or None
        self._group_state = []  # per group: per _STATE slot, the span its state arrays tile, or None
        self._allocated = []    # per group: per _STATE slot, whether every param has that array
        self._grad_cache = []   # per group: (grad arrays last seen, their span) or None

        if isinstance(params, np.ndarray):
            raise TypeError("params must be a list or dict of arrays (or of param-group dicts), "
                            "got a single ndarray; pass [array]")
        if isinstance(params, Mapping):            # a dict name -> array, or FlatArrays
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
        if isinstance(raw, Mapping):
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
        span = tiles_one_buffer(list(arrays))
        h = dict(zip((k for k, _ in self._HYPER), hyper))
        new["params"] = stored
        if names[0] is not None:
            new["param_names"] = tuple(names)
        for key, value in zip((k for k, _ in self._HYPER), hyper):
            new[key] = value
        for n, a in zip(names, arrays):
            self._params.append(a)
            self._names.append(n)
            self._flat.append(a.reshape(-1))
            # A flat group's arrays are views of group buffers, set just below.
            self.state.append(self._init_state(a, h, allocate=span is None))
            self._views.append(None)
            self._refresh_views(len(self._params) - 1)
        self.param_groups.append(new)
        self._group_params.append(stored)
        self._group_slices.append(range(start, len(self._params)))
        self._hyper_cache.append(None)
        self._group_span.append(span)
        self._group_state.append(None)
        self._allocated.append(None)
        self._grad_cache.append(None)
        gi = len(self._group_params) - 1
        if span is not None:
            for slot, (key, required) in enumerate(self._STATE):
                if required or self._wants(key, h):
                    self._set_group_state(gi, slot, self._placed_initial(slot, span, h))
        self._relayout(gi)

    def _init_state(self, param, h, allocate=True):
        """Parameter's initial state; with allocate=False the arrays a group buffer will hold are None."""
        state = {"step": 0} if self._HAS_STEP else {}
        for slot, (key, required) in enumerate(self._STATE):
            if required or self._wants(key, h):
                state[key] = self._placed_initial(slot, param, h) if allocate else None
            else:
                state[key] = empty_like_dtype(param.dtype)
        return state

    def _initial_buffer(self, key, param, hyper):
        """A new state array for `key`: zeros unless a subclass says otherwise."""
        return self._zeros(key, param)

    def _zeros(self, key, like, fill=0):
        """`fill` (zeros by default) shaped like `like`, placed within its page for state kind `key`
        (see placed_array)."""
        slot = [k for k, _ in self._STATE].index(key)
        return placed_array(like.shape, like.dtype, slot, fill=fill)

    def _placed_initial(self, slot, param, hyper):
        """_initial_buffer's array, moved into a placed one if a subclass allocated it elsewhere."""
        a = self._initial_buffer(self._STATE[slot][0], param, hyper)
        if is_placed(a, slot):
            return a
        b = placed_array(a.shape, a.dtype, slot)
        b[...] = a
        return b

    def _wants(self, key, hyper):
        """Whether optional state array `key` is used under hyperparameters `hyper` (a dict)."""
        return False

    def _refresh_views(self, i):
        self._views[i] = [None if self.state[i][key] is None else self.state[i][key].reshape(-1)
                          for key, _ in self._STATE]

    # ------------------------------------------------------------ flat groups
    def _set_group_state(self, gi, slot, buffer):
        """Make `buffer` (1-D, the group's total size) hold state `slot` of every param of group gi."""
        key = self._STATE[slot][0]
        offset = 0
        for i in self._group_slices[gi]:
            p = self._params[i]
            self.state[i][key] = buffer[offset:offset + p.size].reshape(p.shape)
            offset += p.size
            self._refresh_views(i)

    def _relayout(self, gi):
        """Recompute, after state arrays changed, which of group gi's state kinds tile one buffer."""
        rng = self._group_slices[gi]
        span = self._group_span[gi]
        tiled, allocated = [], []
        for key, _ in self._STATE:
            arrays = [self.state[i][key] for i in rng]
            allocated.append(all(a.size == self._params[i].size for i, a in zip(rng, arrays)))
            s = tiles_one_buffer(arrays) if span is not None and allocated[-1] else None
            tiled.append(s if s is not None and s.size == span.size else None)
        self._group_state[gi] = tiled
        self._allocated[gi] = allocated

    def _allocate_used(self, gi, uses):
        """Allocate (zeros) the used optional state arrays group gi lacks; the set of params that got one.

        A flat group missing a kind for every parameter gets one buffer for it; otherwise each
        parameter that lacks it gets its own array (and the group steps per parameter).
        """
        allocated = self._allocated[gi]
        fresh = set()
        for slot, used in enumerate(uses):
            if not used or allocated[slot]:
                continue
            key = self._STATE[slot][0]
            rng = self._group_slices[gi]
            missing = [i for i in rng if self.state[i][key].size != self._params[i].size]
            span = self._group_span[gi]
            if span is not None and len(missing) == len(rng):
                self._set_group_state(gi, slot, self._zeros(key, span))
            else:
                for i in missing:
                    self.state[i][key] = self._zeros(key, self._params[i])
                    self._refresh_views(i)
            fresh.update(missing)
            self._relayout(gi)
        return fresh

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
        """Validate `grads` against the parameters; return (the arrays, their 1-D views) in parameter order."""
        n = len(self._params)
        by_name = isinstance(grads, Mapping)   # a dict, or FlatArrays (fastopt.flat)
        if by_name:
            if any(name is None for name in self._names):
                raise TypeError("grads is a mapping but the parameters were not all given by name; "
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
        return seq, flat

    # ------------------------------------------------------------ the step
    def step(self, grads):
        """One update of every parameter from `grads` (a list in parameter order, or a dict by name).

        Everything (grads and every group's hyperparameters) is checked before any array changes.
        """
        n_groups = len(self._group_params)
        if len(self.param_groups) != n_groups:
            raise ValueError("param_groups was changed by adding or removing a group; use add_param_group")
        seq, flat = self._collect_grads(grads)
        hypers = [self._group_hyper(gi) for gi in range(n_groups)]
        k = _backend.kernels("optim")
        for gi in range(n_groups):
            self._step_group(k, gi, seq, flat, hypers[gi])

    def _step_group(self, k, gi, grads, flat_grads, hyper):
        """One kernel call over the group's buffers when it is flat (see the module doc), else one per param."""
        uses = self._uses(hyper)
        fresh = self._allocate_used(gi, uses)
        rng = self._group_slices[gi]
        state = self.state
        if self._group_span[gi] is not None:
            views = self._flat_views(gi, uses)
            gspan = self._grad_span(gi, grads) if views is not None else None
            if gspan is not None:
                step = None
                if self._HAS_STEP:
                    step = state[rng.start]["step"] + 1
                    if any(state[i]["step"] != step - 1 for i in rng):
                        step = None                    # unequal step counts: per parameter
                if step is not None or not self._HAS_STEP:
                    for i in rng if step is not None else ():
                        state[i]["step"] = step
                    # fresh is all of the group or nobody here: a kind is flat only when allocated at once.
                    self._kernel(k, self._group_span[gi], gspan, views, step, bool(fresh), hyper)
                    return
        params = self._params
        for i in rng:
            empty = _EMPTY[params[i].dtype]
            step = None
            if self._HAS_STEP:
                step = state[i]["step"] + 1
                state[i]["step"] = step
            pviews = self._views[i]
            self._kernel(k, self._flat[i], flat_grads[i],
                         [v if used else empty for v, used in zip(pviews, uses)], step, i in fresh, hyper)

    def _flat_views(self, gi, uses):
        """Per _STATE slot the group buffer (used) or the empty array, or None if a used kind is not flat."""
        tiled = self._group_state[gi]
        empty = _EMPTY[self._group_span[gi].dtype]
        views = []
        for s, used in zip(tiled, uses):
            if not used:
                views.append(empty)
            elif s is None:
                return None
            else:
                views.append(s)
        return views

    def _grad_span(self, gi, grads):
        """The span group gi's gradients tile in parameter order, or None (cached per gradient arrays)."""
        rng = self._group_slices[gi]
        mine = grads[rng.start:rng.stop]
        cached = self._grad_cache[gi]
        # An ndarray's memory, shape and dtype are fixed for its lifetime: same objects, same answer.
        if cached is not None and len(cached[0]) == len(mine) and all(map(operator.is_, mine, cached[0])):
            return cached[1]
        span = tiles_one_buffer(list(mine))
        self._grad_cache[gi] = (tuple(mine), span) if span is not None else None
        return span

    def _uses(self, hyper):
        raise NotImplementedError

    def _kernel(self, k, p, grad, views, step, fresh, hyper):
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
                st[key] = a          # copied below, once everything is validated
            new_state.append(st)

        # Validated: now change things. Group dicts are updated in place (schedules may hold them).
        for gi, new in enumerate(new_groups):
            group = self.param_groups[gi]
            kept = {k: group[k] for k in ("params", "param_names") if k in group}
            group.clear()
            group.update(new)
            group.update(kept)
            self._hyper_cache[gi] = None
        # Arrays are copied in: a flat group's kind that every parameter has goes into one new
        # buffer (views per parameter), anything else into a per-parameter copy.
        for gi, rng in enumerate(self._group_slices):
            span = self._group_span[gi]
            for slot, (key, _) in enumerate(self._STATE):
                arrays = [new_state[i][key] for i in rng]
                if span is not None and all(a.size == self._params[i].size for i, a in zip(rng, arrays)):
                    buffer = placed_array(span.shape, span.dtype, slot)
                    offset = 0
                    for i, a in zip(rng, arrays):
                        view = buffer[offset:offset + a.size].reshape(self._params[i].shape)
                        view[...] = a
                        new_state[i][key] = view
                        offset += a.size
                else:
                    for i, a in zip(rng, arrays):
                        if a is not _EMPTY[a.dtype]:
                            copied = placed_array(a.shape, a.dtype, slot)
                            copied[...] = a
                            new_state[i][key] = copied
        self.state[:] = new_state
        for i in range(n):
            self._refresh_views(i)
        for gi in range(len(self._group_slices)):
            self._grad_cache[gi] = None
            self._relayout(gi)

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for gi, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {gi}")
            for key in sorted(k for k in group if k not in ("params", "param_names")):
                lines.append(f"    {key}: {group[key]}")
        lines.append(")")
        return "\n".join(lines)
