"""The Optimizer base class: param groups, per-parameter state, step() and state_dict().

Semantics follow torch.optim, adapted to NumPy:

* Gradients are passed to ``step(grads)`` (NumPy arrays have no ``.grad``), so there is no
  ``zero_grad``: nothing is accumulated between steps.
* Parameters are identified by their position in the flattened param groups (group order, then
  order within the group), which is also how ``state_dict()`` refers to them, as torch does.
  ``opt.state[i]`` is the state dict of parameter ``i``.
* Every call validates everything first and then updates; a call that raises changed nothing.

A subclass is made from one declaration (``_RULE``, a fastopt.optim._declarations.Rule): its
hyperparameters, state arrays, per-parameter scalars, per-step scalars and kernel. Per parameter
the optimizer keeps a `_ParamRecord` (the array, its name, a 1-D view, the 1-D views of its state
arrays), per group a `_GroupRecord` (the group dict, its members, the buffer its parameters tile,
the group-wide state buffers, the validated hyperparameters, the gradients' span last seen).

Flat fast path (fastopt.flat): when a group's parameters tile one buffer in order
(``tiles_one_buffer``, checked once per group), each of its state kinds is allocated as ONE buffer
of which ``state[i][key]`` are views (the record keeps that buffer: nothing has to rediscover it),
so ``state[i]`` and ``state_dict()`` stay per parameter. A step whose gradients also tile one
buffer in the same order (an address check, cached while the same gradient arrays come back) then
makes ONE kernel call over the whole group. Otherwise -- other gradients, state rebuilt per
parameter by load_state_dict, unequal step counts -- the group takes the per-parameter loop, which
computes the same bits (the kernels are elementwise).

Options of every optimizer (keyword-only, not per group):
* ``max_grad_norm``: clip the gradients by their global 2-norm inside the step (torch's
  clip_grad_norm_ semantics): one read pass computes the norm, and the kernels read
  ``scale * grad`` -- no extra write pass. ``opt.last_grad_norm`` holds the norm seen.
* ``skip_nonfinite``: a step whose gradients hold an inf or NaN changes nothing (no parameter, no
  state, no step count) and counts ``opt.skipped_steps``; the check is that same read pass.
* ``ema``: a decay in [0, 1) keeps an exponential moving average of every parameter, or "polyak"
  the running mean of all iterates; updated inside the step's kernel pass (``state[i]
  ["param_avg"]``). ``with opt.averaged(): ...`` swaps the averages into the parameters and back.
* ``track_update_ratio``: each step also computes, per parameter, ||p_new - p_old|| / ||p_old||
  (0 when p_old is all zeros) in the same kernel pass (the multi-tensor kernels, see below);
  ``opt.update_ratios()`` returns {name, or index when unnamed: ratio} of the last step.

Cached steps (issue 11): after a step that ran through the validated path, the optimizer prepares
per group a compiled StepPlan (pointers and sizes of every parameter, gradient and state array)
and a StepGuard (what must hold for the plan to be valid), gathered in the kernel module's
CachedStep. A later step whose guard passes -- the same gradient objects, each with its
parameter's dtype and shape, C-contiguous; every parameter and state array writeable and still
bound; equal step counts as the plan left them; hyperparameters not rebound; no clipping /
skip_nonfinite; the same layout and the same kernel module (backend and SIMD variant) -- is ONE
compiled call, run_cached: every guard, then per group the rule's per-step scalars (per_step's
formulas in C, compared bit for bit with it in tests/test_cached_step.py), one pass of the
rule's multi-tensor kernel over all its tensors (a flat group without ratio tracking as one
tensor, its buffer) and the new step counts written to the state dicts. No Python runs between
the checks and the kernel: a 1k-element Adam step takes ~1.3 us instead of the ~3.3 us of the
Python loop it replaced (BENCHMARKS.md). Anything else takes the validated path, which computes
the same bits (the kernels are elementwise).

Aliasing: parameters may not overlap each other (check_distinct at add time); a gradient may not
overlap a parameter or a state array. Every array involved is C-contiguous, so its memory is exactly
the interval [data, data + nbytes) and overlap of intervals is np.shares_memory's answer without
scanning anything; the intervals of everything a step writes are kept sorted (rebuilt when a state
array is allocated) and each gradient -- a flat group's gradient span once -- is bisected into them,
and the answer is cached while the same gradient objects come back.

Threads: ``step``, ``load_state_dict``, ``add_param_group``, ``state_dict`` and ``averaged`` hold
a per-optimizer lock, so two threads stepping one optimizer serialize; different optimizers never
share anything. Hooks: ``register_step_pre_hook`` / ``register_step_post_hook`` as torch's.

The state arrays in ``opt.state[i]`` are updated in place. Edit them in place if you must;
rebinding an entry to another array is refused at the next step (use ``load_state_dict``).
"""
import bisect
import contextlib
import copy
import numbers
import operator
import sys
import threading
from collections import OrderedDict
from collections.abc import Mapping

import numpy as np

from .. import _backend
from ..flat import tiles_one_buffer
from .._validation import check_array, check_bool, check_distinct, check_like
from ._declarations import AVG, AVG_COUNT, StateScalar, avg_weight, real

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


def step_types(k):
    """(StepPlan, StepGuard, CachedStep) of kernel module `k`. They are not kernels: taken from the
    module itself (by its name), so a wrapper that records kernel calls does not see them as calls."""
    module = sys.modules[k.__name__]
    return module.StepPlan, module.StepGuard, module.CachedStep


def update_grain(k, kernel, dtype):
    """The grain of module k's update kernel `kernel` (<rule>_step) over arrays of `dtype`: its
    STEP_GRAIN entry (src/_optim_kernels.pxi says why; the cached step applies the same in C)."""
    return k.STEP_GRAIN[kernel][dtype == np.float64]


def empty_like_dtype(dtype):
    """The shared size-0 array the kernels take in place of a buffer an option does not use."""
    return _EMPTY[np.dtype(dtype)]


def _label(key):
    return f"[{key!r}]" if isinstance(key, str) else f"[{key}]"


def _span(a):
    start = a.__array_interface__["data"][0]
    return start, start + a.nbytes


class _Handle:
    """What register_step_*_hook returns: ``.remove()`` unregisters the hook (idempotent)."""

    def __init__(self, hooks, key):
        self._hooks, self.id = hooks, key

    def remove(self):
        self._hooks.pop(self.id, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()


class _ParamRecord:
    __slots__ = ("index", "group", "array", "name", "flat", "state", "owned", "args")

    def __init__(self, index, group, array, name):
        self.index, self.group, self.array, self.name = index, group, array, name
        self.flat = array.reshape(-1)
        self.state = {}
        self.owned = {}        # state key -> (the array the optimizer put there, its 1-D view)
        self.args = None       # (layout version, uses, the kernel's array keywords) last built

    def set(self, key, a):
        """Put state array `a` under `key` (the only way the optimizer rebinds a state array)."""
        self.state[key] = a
        self.owned[key] = (a, a.reshape(-1))

    def view(self, key):
        return self.owned[key][1]


class _GroupRecord:
    __slots__ = ("dict", "params", "members", "span", "buffers", "raw", "hyper", "grads", "checked")

    def __init__(self, group, params, members, span):
        self.dict, self.params, self.members, self.span = group, params, members, span
        self.buffers = {}      # state key -> 1-D buffer all members' state[key] are views of, in order
        self.raw = None        # the group's hyperparameter objects last validated (identity cache)
        self.hyper = None      # their validated values, a dict
        self.grads = None      # (gradient arrays last seen, the span they tile or None)
        self.checked = None    # (gradient arrays last checked for overlaps, the layout version then)


class _Fast:
    """The cached step (Optimizer._prepare_fast): valid while the layout version and the kernel
    module (by name: backend and SIMD variant) are the ones it was made for. `program` is that
    module's CachedStep (everything run_cached needs); `entries` per group its record, StepPlan
    and StepGuard."""
    __slots__ = ("version", "module", "program", "entries")

    def __init__(self, version, module, program, entries):
        self.version, self.module, self.program, self.entries = version, module, program, entries


def positional_scalars(fn, scalar_names, tail):
    """An itemgetter of scalar_names (their values in order, from the step's scalar dict) when the
    multi kernel fn takes (plan, *scalar_names, *tail) positionally, else None: keywords only."""
    if _positional(fn, {"plan": None}, scalar_names, tail) is None:
        return None
    return operator.itemgetter(*scalar_names)


def _positional(fn, arrays, scalar_names, tail):
    """`arrays`' values in fn's argument order when fn's parameters are exactly (those arrays'
    names in some order, scalar_names, tail) -- read from its code object --, else None (also
    below two scalars: itemgetter of one key gives no tuple)."""
    code = getattr(fn, "__code__", None)
    if code is None or len(scalar_names) < 2:
        return None
    names = code.co_varnames[:code.co_argcount]
    k = len(arrays)
    if sorted(names[:k]) != sorted(arrays) or tuple(names[k:]) != (*scalar_names, *tail):
        return None
    return tuple(arrays[n] for n in names[:k])


def state_dict_parts(state_dict, label="state_dict"):
    """(param_groups, state) of an optimizer's state_dict, checked to be a dict holding both."""
    if not isinstance(state_dict, dict):
        raise TypeError(f"{label} must be a dict, got {type(state_dict).__name__}")
    for key in ("state", "param_groups"):
        if key not in state_dict:
            raise ValueError(f"{label} has no {key!r} entry")
    return state_dict["param_groups"], state_dict["state"]


class Optimizer:
    """Base class of the optimizers made from a declaration (``_RULE``, see the module doc)."""

    _RULE = None

    def __init__(self, params, defaults, *, max_grad_norm=None, skip_nonfinite=False, ema=None,
                 track_update_ratio=False):
        rule = self._RULE
        self._keys = tuple(h.name for h in rule.hypers)
        self._hyper_getter = operator.itemgetter(*self._keys)
        self._state_keys = [s.name for s in rule.state]
        self.max_grad_norm = None if max_grad_norm is None else real(
            "max_grad_norm", max_grad_norm, low=0.0, low_open=True)
        self.skip_nonfinite = check_bool("skip_nonfinite", skip_nonfinite)
        self.ema = self._check_ema(ema)
        if self.ema is not None and not rule.averaging:
            raise ValueError(f"{type(self).__name__} has no averaging kernel; ema must be None")
        self._track = check_bool("track_update_ratio", track_update_ratio)
        self.skipped_steps = 0
        self.last_grad_norm = None
        self._ratios = {}       # label -> update/weight ratio of the last step
        self._fast = None       # _Fast: the cached step
        self.defaults = self._validate_hyper("", defaults)
        self.param_groups = []
        self.state = []
        self._params = []       # _ParamRecord per parameter, flattened over groups
        self._groups = []       # _GroupRecord per group
        self._written = None    # sorted (start, end, label) of every array a step writes (lazy)
        self._version = 0       # bumped whenever a parameter or state array is (re)allocated
        self._lock = threading.RLock()
        self._pre_hooks, self._post_hooks = OrderedDict(), OrderedDict()
        self._hook_ids = 0
        self._swapped = False

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

    @staticmethod
    def _check_ema(ema):
        if ema is None or (isinstance(ema, str) and ema == "polyak"):
            return ema
        if isinstance(ema, str):
            raise ValueError(f"ema must be None, a decay in [0, 1) or 'polyak', got {ema!r}")
        return real("ema", ema, low=0.0, high=1.0, high_open=True)

    @property
    def track_update_ratio(self):
        """Whether each step computes the update/weight ratios (fixed at construction)."""
        return self._track

    def update_ratios(self):
        """{parameter name (index when unnamed): ||p_new - p_old|| / ||p_old||} of the last step
        (0 where p_old was all zeros; every 0.0 after a skipped step); empty before the first step.
        Needs track_update_ratio=True."""
        if not self.track_update_ratio:
            raise RuntimeError(f"{type(self).__name__} tracks no update ratios: construct it with "
                               f"track_update_ratio=True")
        with self._lock:
            return dict(self._ratios)

    def _ratio_key(self, rec):
        return rec.name if rec.name is not None else rec.index

    # ------------------------------------------------------------ hooks
    def _register(self, hooks, hook):
        if not callable(hook):
            raise TypeError(f"hook must be callable, got {type(hook).__name__}")
        self._hook_ids += 1
        hooks[self._hook_ids] = hook
        return _Handle(hooks, self._hook_ids)

    def register_step_pre_hook(self, hook):
        """hook(optimizer, args, kwargs) -> None or (new_args, new_kwargs), run before each step."""
        return self._register(self._pre_hooks, hook)

    def register_step_post_hook(self, hook):
        """hook(optimizer, args, kwargs) -> None, run after each step (also a skipped one)."""
        return self._register(self._post_hooks, hook)

    # ------------------------------------------------------------ groups and parameters
    def add_param_group(self, param_group):
        """Add a group {"params": [...] or {name: array}, hyperparameter: value, ...}.

        Missing hyperparameters take the constructor's values. Validated before anything changes.
        """
        with self._lock:
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
        taken = {r.name for r in self._params if r.name is not None}
        for n, lab in zip(names, labels):
            if n in taken:
                raise ValueError(f"{lab}: the name {n!r} is already used by another parameter")
        check_distinct([(self._param_label(r.index), r.array) for r in self._params]
                       + list(zip(labels, arrays)))
        new = {k: v for k, v in group.items() if k not in ("params", "param_names")}
        for key in self._keys:
            new.setdefault(key, self.defaults[key])
        h = self._validate_hyper(label, new)

        # Validated: now change things.
        stored = tuple(arrays)
        span = tiles_one_buffer(list(arrays))
        new["params"] = stored
        if names[0] is not None:
            new["param_names"] = tuple(names)
        new.update(h)       # normalized: pairs become tuples (an in-place edit of a list is no cache hazard)
        members = []
        for n, a in zip(names, arrays):
            rec = _ParamRecord(len(self._params), len(self._groups), a, n)
            self._initial_state(rec, h, allocate=span is None)
            self._params.append(rec)
            self.state.append(rec.state)
            members.append(rec)
        g = _GroupRecord(new, stored, members, span)
        self.param_groups.append(new)
        self._groups.append(g)
        if span is not None:
            for slot, s in enumerate(self._RULE.state):
                if s.used(h) and not s.lazy:
                    self._set_group_buffer(g, s.name, self._new_array(slot, span, s.initial(h)))
            if self.ema is not None:
                self._set_group_buffer(g, AVG, self._avg_copy(span))
        self._layout_changed()

    def _initial_state(self, rec, h, allocate=True):
        """The record's initial state; with allocate=False the arrays a group buffer will hold are
        set later (_set_group_buffer)."""
        param = rec.array
        for s in self._RULE.scalars:
            rec.state[s.name] = s.initial
        for slot, s in enumerate(self._RULE.state):
            if not s.used(h) or s.lazy:
                rec.set(s.name, _EMPTY[param.dtype])
            elif allocate:
                rec.set(s.name, self._new_array(slot, param, s.initial(h)))
        if self.ema is not None:
            if allocate:
                rec.set(AVG, self._avg_copy(param))
            rec.state[AVG_COUNT] = 0

    def _new_array(self, slot, like, fill):
        return placed_array(like.shape, like.dtype, slot, fill=fill)

    def _avg_copy(self, like):
        a = placed_array(like.shape, like.dtype, len(self._RULE.state))
        a[...] = like
        return a

    def _set_group_buffer(self, g, key, buffer):
        """Make `buffer` (1-D, the group's total size) hold state `key` of every member, in order."""
        offset = 0
        for rec in g.members:
            p = rec.array
            rec.set(key, buffer[offset:offset + p.size].reshape(p.shape))
            offset += p.size
        g.buffers[key] = buffer

    # ------------------------------------------------------------ validation
    def _validate_hyper(self, label, group):
        """The hyperparameters of `group` (a dict) checked and normalized, as a dict in declaration order."""
        h = {}
        for hyper in self._RULE.hypers:
            if hyper.name not in group:
                raise ValueError(f"{label} has no {hyper.name!r} entry")
            h[hyper.name] = hyper.check(f"{label}[{hyper.name!r}]" if label else hyper.name, group[hyper.name])
        check = self._RULE.check
        message = check(h) if check is not None else None
        if message is not None:
            raise ValueError(f"{label}: {message}" if label else message)
        return h

    def _group_hyper(self, gi):
        """Group gi's validated hyperparameters; revalidated when an entry was rebound (identity)."""
        g = self._groups[gi]
        group = g.dict
        if group.get("params") is not g.params:
            raise ValueError(f"param_groups[{gi}]['params'] was replaced; parameters are fixed at "
                             f"construction (use add_param_group to add some)")
        try:
            raw = self._raw_hyper(group)
        except KeyError as exc:
            raise ValueError(f"param_groups[{gi}] has no {exc.args[0]!r} entry") from None
        # Identity, not equality: an entry rebound to an equal value of another type (True for 1.0)
        # is still revalidated. Values are written back normalized (tuples), see _commit_hyper.
        if g.raw is not None and all(map(operator.is_, raw, g.raw)):
            return g.hyper, None
        return self._validate_hyper(f"param_groups[{gi}]", group), raw

    def _raw_hyper(self, group):
        """The group's hyperparameter objects, a tuple in declaration order (KeyError if one is missing)."""
        raw = self._hyper_getter(group)
        return raw if len(self._keys) > 1 else (raw,)

    def _commit_hyper(self, gi, h):
        # After a step validated everything: store the normalized values, so that the cached
        # objects are immutable (a list edited in place would otherwise go unseen).
        g = self._groups[gi]
        g.dict.update(h)
        g.raw = self._raw_hyper(g.dict)
        g.hyper = h

    def _param_label(self, i):
        name = self._params[i].name
        return f"params[{name!r}]" if name is not None else f"params[{i}]"

    def _grad_label(self, i, by_name):
        return f"grads[{self._params[i].name!r}]" if by_name else f"grads[{i}]"

    def _collect_grads(self, grads):
        """Validate `grads` against the parameters; return them in parameter order (and by_name)."""
        recs = self._params
        n = len(recs)
        by_name = isinstance(grads, Mapping)   # a dict, or FlatArrays (fastopt.flat)
        if by_name:
            names = [r.name for r in recs]
            if any(name is None for name in names):
                raise TypeError("grads is a mapping but the parameters were not all given by name; "
                                "pass a list aligned with the parameters in param_groups order")
            missing = [name for name in names if name not in grads]
            if missing or len(grads) != n:
                extra = sorted(map(repr, set(grads) - set(names)))
                raise ValueError(f"grads must have exactly the parameter names; missing {missing}, "
                                 f"unexpected [{', '.join(extra)}]")
            seq = [grads[name] for name in names]
        elif isinstance(grads, (list, tuple)):
            if len(grads) != n:
                raise ValueError(f"grads has {len(grads)} entries, expected {n} "
                                 f"(one per parameter, in param_groups order)")
            seq = list(grads)
        else:
            named = None not in (r.name for r in recs)
            raise TypeError(f"grads must be a list of arrays aligned with the parameters"
                            f"{' or a dict by name' if named else ''}, got {type(grads).__name__}")
        ndarray = np.ndarray
        for rec, g in zip(recs, seq):
            p = rec.array
            if not (type(g) is ndarray and g.dtype == p.dtype and g.shape == p.shape
                    and g.flags.c_contiguous):
                check_like(self._grad_label(rec.index, by_name), g, self._param_label(rec.index), p)
        return seq, by_name

    def _check_written(self):
        """Every parameter and state array the step writes: still writeable, state not rebound."""
        for rec in self._params:
            if not rec.array.flags.writeable:
                raise ValueError(f"{self._param_label(rec.index)} is read-only now: the optimizer "
                                 f"updates it in place")
            for key, (a, _) in rec.owned.items():
                current = rec.state.get(key)
                if current is not a:
                    raise ValueError(f"state[{rec.index}][{key!r}] was rebound to another object; "
                                     f"edit state arrays in place or use load_state_dict")
                if a.size and not a.flags.writeable:
                    raise ValueError(f"state[{rec.index}][{key!r}] is read-only: the optimizer "
                                     f"updates it in place")

    def _layout_changed(self):
        self._written = None
        self._version += 1

    def _written_spans(self):
        """Sorted (start, end, label) of the memory of every parameter and state array (cached)."""
        if self._written is None:
            spans = []
            for rec in self._params:
                if rec.array.nbytes:
                    spans.append((*_span(rec.array), self._param_label(rec.index)))
                for key, (a, _) in rec.owned.items():
                    if a.nbytes:
                        spans.append((*_span(a), f"state[{rec.index}][{key!r}]"))
            spans.sort()
            self._written = ([s[0] for s in spans], spans)
        return self._written

    def _check_grad_memory(self, label, g):
        """A gradient may not overlap a parameter or a state array (it is read while they are written)."""
        if not g.nbytes:
            return
        starts, spans = self._written_spans()
        lo, hi = _span(g)
        k = bisect.bisect_left(starts, hi)     # spans starting before the grad ends
        # Written arrays never overlap each other (checked at add time / allocated by us), so the
        # candidates are the one starting last before `hi` and any that start inside the grad.
        for j in range(k - 1, -1, -1):
            s0, s1, what = spans[j]
            if s1 > lo:
                raise ValueError(f"{label} shares memory with {what}; a gradient must not be a view "
                                 f"of a parameter or of optimizer state")
            if s0 < lo:
                break

    # ------------------------------------------------------------ the step
    def step(self, grads=None, *args, **kwargs):
        """One update of every parameter from `grads` (a list in parameter order, or a dict by name).

        Everything (grads, hyperparameters, memory overlaps, writeability) is checked before any
        array changes. Pre-hooks may replace the arguments; post-hooks run after the update.
        """
        with self._lock:
            if self._fast is not None and not (args or kwargs or self._pre_hooks or self._post_hooks
                                               or self._swapped):
                if self._fast_step(grads):      # the cached step, without the general path's glue
                    return
                self._fast = None
            args = (grads,) + args
            for hook in list(self._pre_hooks.values()) if self._pre_hooks else ():
                result = hook(self, args, kwargs)
                if result is not None:
                    if not (isinstance(result, tuple) and len(result) == 2):
                        raise RuntimeError(f"a step pre-hook must return None or (args, kwargs), "
                                           f"got {result!r}")
                    args, kwargs = result
            if kwargs or len(args) != 1:
                raise TypeError(f"step() takes one argument, grads; got {len(args)} positional "
                                f"and {sorted(kwargs)} keyword arguments")
            self._step(args[0])
            for hook in list(self._post_hooks.values()) if self._post_hooks else ():
                hook(self, args, kwargs)

    def _step(self, grads):
        if self._swapped:
            raise RuntimeError("step() inside `with optimizer.averaged()`: the parameters hold "
                               "the averages now; step after the block")
        if self._fast is not None and self._fast_step(grads):
            return
        self._fast = None
        if len(self.param_groups) != len(self._groups) or any(
                a is not g.dict for a, g in zip(self.param_groups, self._groups)):
            raise ValueError("param_groups was changed by adding, removing or replacing a group; "
                             "use add_param_group")
        seq, by_name = self._collect_grads(grads)
        validated = [self._group_hyper(gi) for gi in range(len(self._groups))]
        self._check_written()
        plans = [self._plan(g, seq, h) for g, (h, _) in zip(self._groups, validated)]
        for gi, (g, plan) in enumerate(zip(self._groups, plans)):
            # The same gradient objects against the same layout: the same answer (cached).
            mine = seq[g.members[0].index:g.members[-1].index + 1]
            if (g.checked is not None and g.checked[1] == self._version and len(g.checked[0]) == len(mine)
                    and all(map(operator.is_, mine, g.checked[0]))):
                continue
            if plan is not None:           # a flat group's gradients: one span, checked once
                self._check_grad_memory(f"the gradients of param_groups[{gi}]", plan)
            else:
                for rec, grad in zip(g.members, mine):
                    if grad is rec.array:
                        raise ValueError(f"{self._grad_label(rec.index, by_name)} is the parameter array itself")
                    self._check_grad_memory(self._grad_label(rec.index, by_name), grad)
            g.checked = (tuple(mine), self._version)

        scale = 1.0
        if self.max_grad_norm is not None or self.skip_nonfinite:
            k = _backend.kernels("optim")
            total, finite = 0.0, True
            for g, plan in zip(self._groups, plans):
                parts = [plan] if plan is not None else [seq[r.index].reshape(-1) for r in g.members]
                for part in parts:
                    s, ok = k.norm_partial(x=part, norm_type=2.0, n_threads=_backend.threads_for(part.size, k.GRAIN))
                    total += s
                    finite = finite and ok
            norm = total ** 0.5
            self.last_grad_norm = norm
            if self.skip_nonfinite and not finite:
                self.skipped_steps += 1
                for gi, (h, raw) in enumerate(validated):
                    if raw is not None:
                        self._commit_hyper(gi, h)
                if self.track_update_ratio:
                    self._ratios = {self._ratio_key(rec): 0.0 for rec in self._params}
                return
            if self.max_grad_norm is not None:
                scale = min(self.max_grad_norm / (norm + 1e-6), 1.0)   # torch's clip_coef, clamped

        # Validated: now change things.
        for gi, (h, raw) in enumerate(validated):
            if raw is not None:
                self._commit_hyper(gi, h)
        k = _backend.kernels("optim")
        ratios = {} if self.track_update_ratio else None
        for g, plan in zip(self._groups, plans):
            self._step_group(k, g, seq, plan, g.hyper, scale, ratios)
        if ratios is not None:
            self._ratios = ratios
        if self.max_grad_norm is None and not self.skip_nonfinite:
            self._fast = self._prepare_fast(k, seq, plans)

    # ------------------------------------------------------------ the cached step
    def _multi(self, k):
        """The rule's multi-tensor kernel in module k (every rule has one, on every backend:
        tests/test_optim_declarations.py)."""
        return getattr(k, self._RULE.multi_kernel)

    def _step_plan(self, k, members, seq):
        """A StepPlan over `members` (their 1-D params, gradients, state views and averages)."""
        rule = self._RULE
        h = self._groups[members[0].group].hyper
        uses = rule.used_state(h)
        empty = _EMPTY[members[0].array.dtype]
        params, grads, states, avgs = [], [], [], []
        for rec in members:
            grad = seq[rec.index]
            params.append(rec.flat)
            grads.append(grad.reshape(-1) if grad.ndim != 1 else grad)
            states.append([rec.view(s.name) if used else empty for s, used in zip(rule.state, uses)])
            avgs.append(rec.view(AVG) if self.ema is not None else empty)
        return step_types(k)[0](params, grads, states, avgs)

    def _flat_plan(self, k, g, span):
        """A one-tensor StepPlan over flat group g's buffers and its gradient span."""
        rule = self._RULE
        empty = _EMPTY[g.span.dtype]
        states = [g.buffers[s.name] if used else empty for s, used in zip(rule.state, rule.used_state(g.hyper))]
        avg = g.buffers[AVG] if self.ema is not None else empty
        return step_types(k)[0]([g.span], [span], [states], [avg])

    def _scalar_keys(self):
        return tuple(s.name for s in self._RULE.scalars) + ((AVG_COUNT,) if self.ema is not None else ())

    def _prepare_fast(self, k, seq, spans):
        """The cached step for the next calls (see the module doc), or None where one group cannot
        have one (members at different steps, mixed dtypes)."""
        rule = self._RULE
        keys = self._scalar_keys()
        entries, programs = [], []
        for g, span in zip(self._groups, spans):
            if g.raw is None:
                return None
            first = g.members[0].state
            for rec in g.members:
                for key in keys:
                    v = rec.state[key]
                    if type(v) is not type(first[key]) or v != first[key]:
                        return None
            for rec in g.members:        # equal values: one object, so that the guard compares identity
                for key in keys:
                    rec.state[key] = first[key]
            lo, hi = g.members[0].index, g.members[-1].index + 1
            if span is not None and not self.track_update_ratio:
                plan = self._flat_plan(k, g, span)
            elif len({rec.array.dtype for rec in g.members}) != 1:
                return None           # a plan holds one dtype: mixed groups keep per-parameter calls
            else:
                plan = self._step_plan(k, g.members, seq)
            owned = [(rec.state, key, a) for rec in g.members for key, (a, _) in rec.owned.items()]
            # the group's parameters and hyperparameters as last validated (identity, as _group_hyper)
            bound = [(g.dict, "params", g.params)] + [(g.dict, key, v) for key, v in zip(self._keys, g.raw)]
            guard = step_types(k)[1]([rec.array for rec in g.members], list(seq[lo:hi]), lo, owned,
                                     [rec.state for rec in g.members], keys, bound)
            entries.append((g, plan, guard))
            programs.append((plan, guard, {**g.hyper, **rule.fixed}))
        program = step_types(k)[2](rule.multi_kernel, tuple(self.param_groups), programs, keys, self.ema,
                                   rule.per_step)
        return _Fast(self._version, k.__name__, program, tuple(entries))

    def _fast_step(self, grads):
        """The cached step when every guard passes (True), else False with nothing changed."""
        fast = self._fast
        if fast.version != self._version or self.max_grad_norm is not None or self.skip_nonfinite:
            return False
        if type(grads) is list or type(grads) is tuple:
            seq = grads
        elif isinstance(grads, Mapping):
            recs = self._params
            if len(grads) != len(recs):
                return False
            try:
                seq = [grads[rec.name] for rec in recs]
            except (KeyError, TypeError):
                return False
        else:
            return False
        k = _backend.kernels("optim")      # fetched once per step, as on the validated path
        if fast.module != k.__name__:      # the plans belong to that module (backend, SIMD variant)
            return False
        if not k.run_cached(fast.program, seq, self.param_groups, _backend.thread_budget(), self._track):
            return False
        if self._track:
            self._ratios = {self._ratio_key(rec): r for g, plan, _ in fast.entries
                            for rec, r in zip(g.members, plan.ratios())}
        return True

    def _plan(self, g, seq, h):
        """The gradient span for one kernel call over group g, or None (per-parameter calls)."""
        if g.span is None:
            return None
        mine = seq[g.members[0].index:g.members[-1].index + 1]
        cached = g.grads
        # An ndarray's memory, shape and dtype are fixed for its lifetime: same objects, same answer.
        if cached is not None and len(cached[0]) == len(mine) and all(map(operator.is_, mine, cached[0])):
            span = cached[1]
        else:
            span = tiles_one_buffer(mine)
            g.grads = (tuple(mine), span)
        if span is None:
            return None
        for s in self._RULE.state:
            if s.used(h) and s.name not in g.buffers and not self._all_missing(g, s.name):
                return None           # a used kind is per parameter (e.g. after load_state_dict)
        if self.ema is not None and AVG not in g.buffers:
            return None
        scalars = [s.name for s in self._RULE.scalars] + ([AVG_COUNT] if self.ema is not None else [])
        first = g.members[0].state
        if any(rec.state[k] != first[k] for rec in g.members for k in scalars):
            return None               # unequal step counts: per parameter
        return span

    @staticmethod
    def _all_missing(g, key):
        return all(rec.state[key].size == 0 for rec in g.members)

    def _allocate(self, g, h):
        """Allocate (fill) the used optional state arrays group g lacks; the indices that got one.

        A flat group missing a kind for every parameter gets one buffer for it; otherwise each
        parameter that lacks it gets its own array (and the group steps per parameter).
        """
        fresh = set()
        for slot, s in enumerate(self._RULE.state):
            if not s.used(h) or s.name in g.buffers:
                continue
            missing = [rec for rec in g.members if rec.state[s.name].size != rec.array.size]
            if not missing:
                continue
            if g.span is not None and len(missing) == len(g.members):
                self._set_group_buffer(g, s.name, self._new_array(slot, g.span, s.initial(h)))
            else:
                for rec in missing:
                    rec.set(s.name, self._new_array(slot, rec.array, s.initial(h)))
            fresh.update(rec.index for rec in missing)
            self._layout_changed()
        return fresh

    def _avg_weight(self, count):
        return avg_weight(self.ema, count)

    def _step_group(self, k, g, seq, plan, h, scale, ratios=None):
        """One kernel call over the group's buffers when planned flat, else one per parameter.
        With `ratios` (a dict) the update/weight ratios go there: the flat group is then one
        multi-tensor call over its parameters, each parameter otherwise one of its own."""
        rule = self._RULE
        fresh = self._allocate(g, h)
        uses = rule.used_state(h)
        kernel = getattr(k, rule.kernel)
        averaging = self.ema is not None
        extra = {}
        if rule.averaging:
            extra = dict(grad_scale=scale, avg_weight=0.0)
        if plan is not None:
            first = g.members[0].state
            scalars, new = rule.per_step(h, first, bool(fresh))
            arrays = {}
            for s, used in zip(rule.state, uses):
                arrays[s.kernel_arg] = g.buffers[s.name] if used else _EMPTY[g.span.dtype]
            if rule.averaging:
                arrays[AVG] = g.buffers[AVG] if averaging else _EMPTY[g.span.dtype]
                if averaging:
                    extra["avg_weight"] = self._avg_weight(first[AVG_COUNT])
            self._run(k, kernel, g.members, seq, dict(param=g.span, grad=plan, **arrays, **scalars, **extra),
                      ratios)
            for rec in g.members:
                rec.state.update(new)
                if averaging:
                    rec.state[AVG_COUNT] += 1
            return
        names = [s.name for s in rule.scalars]
        last = None
        for rec in g.members:
            st = rec.state
            key = (rec.index in fresh, *(st[n] for n in names))
            if key != last:               # members at the same step share their per-step scalars
                scalars, new = rule.per_step(h, st, rec.index in fresh)
                last = key
            if rec.args is None or rec.args[0] != self._version or rec.args[1] != uses:
                empty = _EMPTY[rec.array.dtype]
                arrays = {s.kernel_arg: rec.view(s.name) if used else empty for s, used in zip(rule.state, uses)}
                if rule.averaging:
                    arrays[AVG] = rec.view(AVG) if averaging else empty
                rec.args = (self._version, uses, arrays)
            arrays = rec.args[2]
            if averaging:
                extra["avg_weight"] = self._avg_weight(st[AVG_COUNT])
            grad = seq[rec.index]
            self._run(k, kernel, [rec], seq, dict(param=rec.flat, grad=grad.reshape(-1) if grad.ndim != 1 else grad,
                                                  **arrays, **scalars, **extra), ratios)
            st.update(new)
            if averaging:
                st[AVG_COUNT] += 1

    def _run(self, k, kernel, members, seq, kwargs, ratios):
        """kernel(**kwargs) over `members`; with `ratios`, through the multi-tensor kernel instead,
        which also gives each member's update/weight ratio in the same pass."""
        param = kwargs["param"]
        threads = _backend.threads_for(param.size, update_grain(k, self._RULE.kernel, param.dtype))
        if ratios is None:
            kernel(**kwargs, n_threads=threads)
            return
        plan = self._step_plan(k, members, seq)
        scalars = {key: v for key, v in kwargs.items() if not isinstance(v, np.ndarray)}
        self._multi(k)(plan=plan, **scalars, track_ratio=True, n_threads=threads)
        for rec, r in zip(members, plan.ratios()):
            ratios[self._ratio_key(rec)] = r

    # ------------------------------------------------------------ averaging
    @contextlib.contextmanager
    def averaged(self):
        """Within the block the parameters hold their running averages (option `ema`); on exit
        (also on an exception) they get their trained values back. step() inside is refused."""
        if self.ema is None:
            raise RuntimeError(f"{type(self).__name__} keeps no averages: construct it with ema=")
        with self._lock:
            if self._swapped:
                raise RuntimeError("averaged() blocks do not nest")
            self._swap()
            self._swapped = True
            try:
                yield self
            finally:
                self._swap()
                self._swapped = False

    def _swap(self):
        for rec in self._params:
            avg = rec.state[AVG]
            tmp = rec.array.copy()
            rec.array[...] = avg
            avg[...] = tmp

    def averages(self):
        """The running averages, one array per parameter in parameter order (views: do not write)."""
        if self.ema is None:
            raise RuntimeError(f"{type(self).__name__} keeps no averages: construct it with ema=")
        return [rec.state[AVG] for rec in self._params]

    # ------------------------------------------------------------ state_dict
    def state_dict(self):
        """Plain data: {"state": {index: {"step": int, name: ndarray copy}}, "param_groups": [...]}.

        Groups hold their hyperparameters and "params" as a list of indices (and "param_names"
        when named), as torch's do. Arrays are copies: later steps do not change a saved dict.
        Round-trips through pickle; for np.savez use fastopt.optim.save_state / state_to_arrays.
        """
        with self._lock:
            groups = []
            for gi, g in enumerate(self._groups):
                h = self._validate_hyper(f"param_groups[{gi}]", g.dict)
                saved = {k: copy.deepcopy(v) for k, v in g.dict.items() if k not in ("params", "param_names")}
                saved.update(h)
                saved["params"] = [rec.index for rec in g.members]
                if "param_names" in g.dict:
                    saved["param_names"] = list(g.dict["param_names"])
                groups.append(saved)
            state = {i: {key: (v.copy() if isinstance(v, np.ndarray) else v) for key, v in st.items()}
                     for i, st in enumerate(self.state)}
            return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Restore from `state_dict()` output. Everything is validated first; arrays are copied in."""
        with self._lock:
            self._load_state_dict(state_dict)

    def _load_state_dict(self, state_dict):
        label = "state_dict"
        rule = self._RULE
        groups, state = state_dict_parts(state_dict, label)
        if not isinstance(groups, (list, tuple)):
            raise TypeError(f"{label}['param_groups'] must be a list, got {type(groups).__name__}")
        if len(groups) != len(self._groups):
            raise ValueError(f"{label} has {len(groups)} param groups, this optimizer has "
                             f"{len(self._groups)}")
        new_groups = []
        for gi, group in enumerate(groups):
            glabel = f"{label}['param_groups'][{gi}]"
            if not isinstance(group, dict):
                raise TypeError(f"{glabel} must be a dict, got {type(group).__name__}")
            expected = [rec.index for rec in self._groups[gi].members]
            got = group.get("params")
            if not isinstance(got, (list, tuple)) or len(got) != len(expected):
                count = len(got) if isinstance(got, (list, tuple)) else type(got).__name__
                raise ValueError(f"{glabel}['params'] must list {len(expected)} parameter indices, got {count}")
            if [int(j) if isinstance(j, numbers.Integral) else j for j in got] != expected:
                raise ValueError(f"{glabel}['params'] must be {expected}, got {list(got)}")
            mine = self._groups[gi].dict.get("param_names")
            if "param_names" in group and mine is not None and list(group["param_names"]) != list(mine):
                raise ValueError(f"{glabel}['param_names'] {list(group['param_names'])} do not match "
                                 f"this optimizer's {list(mine)}")
            h = self._validate_hyper(glabel, group)
            new = {k: copy.deepcopy(v) for k, v in group.items() if k not in ("params", "param_names")}
            new.update(h)
            new_groups.append(new)

        if not isinstance(state, dict):
            raise TypeError(f"{label}['state'] must be a dict, got {type(state).__name__}")
        n = len(self._params)
        if set(state) != set(range(n)):
            raise ValueError(f"{label}['state'] must have an entry for each parameter index 0..{n - 1}, "
                             f"got keys {sorted(state, key=repr)}")
        scalars = list(rule.scalars)
        arrays = [(s.name, s.when is None) for s in rule.state]
        if self.ema is not None:
            scalars.append(StateScalar(AVG_COUNT, 0, integer=True, low=0))
            arrays.append((AVG, True))
        allowed = {s.name for s in scalars} | {key for key, _ in arrays}
        new_state = []
        for i in range(n):
            slabel = f"{label}['state'][{i}]"
            entry, p = state[i], self._params[i].array
            if not isinstance(entry, dict):
                raise TypeError(f"{slabel} must be a dict, got {type(entry).__name__}")
            unknown = set(entry) - allowed
            if unknown:
                raise ValueError(f"{slabel} has unexpected entries {sorted(map(repr, unknown))}; "
                                 f"expected {sorted(allowed)}")
            st = {}
            for s in scalars:
                if s.name not in entry:
                    raise ValueError(f"{slabel} has no {s.name!r} entry")
                st[s.name] = s.check(f"{slabel}[{s.name!r}]", entry[s.name])
            for key, required in arrays:
                alabel = f"{slabel}[{key!r}]"
                if key not in entry:
                    if required:
                        raise ValueError(f"{slabel} has no {key!r} entry")
                    st[key] = _EMPTY[p.dtype]
                    continue
                a = entry[key]
                if not isinstance(a, np.ndarray):
                    raise TypeError(f"{alabel} must be an ndarray, got {type(a).__name__}")
                if a.dtype != p.dtype:
                    raise TypeError(f"{alabel} must have the dtype of {self._param_label(i)} "
                                    f"({p.dtype}), got {a.dtype}")
                if not required and a.size == 0:
                    st[key] = _EMPTY[p.dtype]
                    continue
                if a.shape != p.shape:
                    raise ValueError(f"{alabel} must have the shape of {self._param_label(i)} "
                                     f"{p.shape}, got {a.shape}")
                st[key] = a          # copied below, once everything is validated
            new_state.append(st)

        # Validated: now change things. Group dicts are updated in place (schedules may hold them).
        for g, new in zip(self._groups, new_groups):
            kept = {k: g.dict[k] for k in ("params", "param_names") if k in g.dict}
            g.dict.clear()
            g.dict.update(new)
            g.dict.update(kept)
            g.raw = g.hyper = g.grads = None
        # Arrays are copied in: a flat group's kind that every parameter has goes into one new
        # buffer (views per parameter), anything else into a per-parameter copy.
        for g in self._groups:
            g.buffers = {}
            for slot, (key, _) in enumerate(arrays):
                got = [new_state[rec.index][key] for rec in g.members]
                if g.span is not None and all(a.size == rec.array.size for rec, a in zip(g.members, got)):
                    buffer = placed_array(g.span.shape, g.span.dtype, slot)
                    offset = 0
                    for rec, a in zip(g.members, got):
                        buffer[offset:offset + a.size] = a.reshape(-1)
                        offset += a.size
                    g.buffers[key] = buffer
                    for rec in g.members:
                        new_state[rec.index][key] = None     # set from the buffer below
                else:
                    for rec, a in zip(g.members, got):
                        if a is not _EMPTY[a.dtype]:
                            copied = placed_array(a.shape, a.dtype, slot)
                            copied[...] = a
                            new_state[rec.index][key] = copied
        for rec, st in zip(self._params, new_state):
            rec.state.clear()
            rec.owned = {}
            for key, v in st.items():
                if isinstance(v, np.ndarray):
                    rec.set(key, v)
                elif v is not None:
                    rec.state[key] = v
        for g in self._groups:
            for key, buffer in g.buffers.items():
                self._set_group_buffer(g, key, buffer)
        self._layout_changed()

    def __reduce_ex__(self, protocol):
        # A pickled (or deep-copied) optimizer would lose which state arrays are views of its group
        # buffers, and the flat path would then update buffers nobody sees: refuse, and say how.
        raise TypeError(f"{type(self).__name__} objects are not pickled or copied; save "
                        f"opt.state_dict() (or fastopt.optim.save_state) and restore it into a new "
                        f"optimizer with load_state_dict")

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for gi, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {gi}")
            for key in sorted(k for k in group if k not in ("params", "param_names")):
                lines.append(f"    {key}: {group[key]}")
        lines.append(")")
        return "\n".join(lines)
