"""CS231n's FullyConnectedNet on fastopt's layers, with a fused execution of the same description.

Architecture: {affine -> [batch/layer norm] -> activation -> [dropout]} x (L - 1) -> affine -> softmax,
the activation one of fastopt.layers.activations.ACTIVATIONS (relu, leaky_relu, elu, tanh, sigmoid;
``activation_param`` its hyperparameter: leaky_relu's negative_slope, elu's alpha),
described once as a list of blocks (fastopt.nn.blocks). ``loss`` validates the whole call first
(``_Call``), then runs one of two executions of the blocks: the fused one (fastopt.nn.run_fused:
workspaces, fused kernels) whenever it has kernels for every block and ``fast_path`` is True, else
the readable layer-by-layer one (fastopt.nn.run_layers). Both agree to ~1e-12 in float64.

Regularisation (weights only, never biases or gamma/beta), CS231n convention:
    reg_type="l2":  loss += 0.5 * reg * sum(W**2),   dW += reg * W
    reg_type="l1":  loss += reg * sum(|W|),          dW += reg * sign(W)
``reg`` may be changed between calls (``model.reg = 1.0``, as CS231n's notebooks do).

Randomness, as CS231n (a notebook's ``np.random.seed(231)`` reproduces its outputs):
  * weights come from ``np.random.randn`` (NumPy's global state) unless ``rng`` is given;
  * ``seed=s`` makes dropout deterministic: the SAME mask on every call (CS231n's
    ``dropout_param['seed']``, which the dropout gradient check relies on), and a training call
    leaves NumPy's global state where CS231n's reseeding leaves it; without seed or rng the masks
    come from NumPy's global state, as CS231n's ``np.random.rand``.
  * ``rng=`` (int or np.random.Generator) is fastopt's reproducible stream instead: the weights AND a
    fresh dropout mask on every training call come from it (an int seeds SeedSequence(rng), whose two
    children draw the weights and the masks); ``state_dict()`` saves it, so a resumed run draws the
    same masks. fastopt's Solver and CLI use it. ``seed`` and ``rng`` exclude each other.

Parameters and gradients: ``model.params`` is a :class:`fastopt.flat.FlatArrays` (every parameter a
view into one buffer, order W1, b1, gamma1, beta1, ..., WL, bL), updated IN PLACE only (assigning
``model.params[k] = a`` or ``model.params = {...}`` copies into the views). ``model.grads`` is the
same layout in a second buffer, holding the last training call's gradients. ``loss(X, y)`` returns
gradients the caller owns (fresh copies, as CS231n); ``loss(X, y, out=model.grads)`` returns
``model.grads`` itself (no copy: the next call overwrites it; fastopt's Solver steps the whole buffer
in one kernel call); ``out=`` may also be the caller's mapping of arrays like the params.

Threads: one model's ``loss``/``state_dict``/``load_state_dict`` serialize on a per-model lock;
different models in different threads run independently and give bitwise the results of a
sequential run (with ``rng`` or ``seed``; NumPy's global state is shared by definition).
"""
import math
import operator
import threading
from collections.abc import Mapping

import numpy as np

from .. import _backend, layers
from .._validation import _describe, check_array, check_choice, check_distinct, check_rng_state, check_scalar
from ..flat import FlatParams
from ..layers.losses import check_soft_targets, is_soft
from ..layers.normalization import bn_settings, norm_eps
from . import run_fused, run_layers
from .blocks import Hidden, activation as _activation, describe, param_specs
from .frozen_norm import initial_statistics
from .init import WEIGHT_INITS, init_weight
from .workspace import WorkspaceCache

NORMALIZATIONS = (None, "batchnorm", "layernorm")
REG_TYPES = ("l2", "l1")
_NOTHING_FROZEN = frozenset()
_UNSIGNED = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}
_NORM_KEYS = {"batchnorm": ("eps", "momentum", "running_mean", "running_var"), "layernorm": ("eps",)}
_INTP, _UINTP = np.dtype(np.intp), np.dtype(_UNSIGNED[np.dtype(np.intp).itemsize])
# What _memo compares of an array besides its identity (a shape, dtype or flag can change in place).
_ARRAY_FACTS = operator.attrgetter("shape", "dtype", "flags.num")


def _check_dtype(dtype):
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"dtype must be np.float32 or np.float64, got {dtype!r}") from exc
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"dtype must be np.float32 or np.float64, got {dt}")
    return dt


def _check_normalization(normalization):
    if normalization is not None and not isinstance(normalization, str):
        raise TypeError(f"normalization must be None, 'batchnorm' or 'layernorm', got {_describe(normalization)}")
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    return normalization


def _check_keep(dropout_keep_ratio, dropout):
    """dropout_keep_ratio, or the pre-2019 alias `dropout` (also the probability of KEEPING a unit)."""
    if dropout is None:
        return check_scalar("dropout_keep_ratio", dropout_keep_ratio, low=0, low_open=True, high=1)
    if dropout_keep_ratio != 1:
        raise ValueError("give dropout_keep_ratio or its pre-2019 alias dropout, not both")
    if isinstance(dropout, (int, float)) and not isinstance(dropout, bool) and dropout == 0:
        raise ValueError("dropout (alias of dropout_keep_ratio: the probability of KEEPING a unit) must be "
                         "in (0, 1], got 0; CS231n before 2018 meant 'no dropout' by 0: pass 1")
    return check_scalar("dropout (alias of dropout_keep_ratio)", dropout, low=0, low_open=True, high=1)


def _check_rng(seed, rng):
    seed = None if seed is None else check_scalar("seed", seed, low=0, high=2**32 - 1, integer=True)
    if rng is not None:
        if seed is not None:
            raise ValueError("give seed (CS231n: the same dropout mask on every call) or rng (fastopt: "
                             "a reproducible fresh-mask stream), not both")
        if not isinstance(rng, np.random.Generator):
            rng = check_scalar("rng (an int seed or a numpy.random.Generator)", rng, low=0, integer=True)
    return seed, rng


def _copy_state(value):
    """A deep copy of plain data (dicts, lists, arrays, scalars) with fresh arrays."""
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, dict):
        return {k: _copy_state(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_copy_state(v) for v in value)
    return value


class _Call:
    """One validated loss() call: everything the executions read, checked before anything runs."""

    __slots__ = ("X", "train", "y", "params", "reg", "reg_type", "frozen", "out", "grads", "norm_params",
                 "norm_state", "dropout_param")

    def __init__(self, model, X, y, out):
        self.X = model._check_X(X)
        self.train = y is not None
        self.y = model._check_y(y, self.X.shape[0]) if self.train else None
        self.params = model.params
        self.reg, self.reg_type = model._check_reg()
        if out is not None and not self.train:
            raise ValueError("out= receives gradients: it needs labels y (a training call)")
        self.frozen = model._check_frozen()
        self.out = out
        self.grads = model._check_out(out, self.frozen) if self.train else None
        self.norm_params = model._check_bn_params()
        self.norm_state = model._check_norm_state()
        self.dropout_param = model._check_dropout_param() if model.use_dropout else None

    def create_running_statistics(self, model):
        """Batchnorm's absent running statistics become zeros (CS231n), now that nothing can fail; a
        frozen layer's variance ones: it normalizes with them at once (fastopt.nn.frozen_norm)."""
        for i, (eps, momentum, rm, rv) in enumerate(self.norm_state):
            if model.normalization == "batchnorm" and (rm is None or rv is None):
                p = model.bn_params[i]
                mean0, var0 = initial_statistics(model.hidden_dims[i], model.dtype, i in self.frozen)
                rm = p["running_mean"] = mean0 if rm is None else rm
                rv = p["running_var"] = var0 if rv is None else rv
                self.norm_state[i] = (eps, momentum, rm, rv)

    def returned_grads(self, model):
        """The gradients loss() returns: the trainable params' (all when nothing is frozen), as the
        arrays written (out=: that mapping itself when it holds just them) or fresh copies (CS231n)."""
        if self.out is not None and not self.frozen:
            return self.grads
        keys = model._grad_keys(self.frozen)
        if self.out is None:
            return {k: self.grads[k].copy() for k in keys}
        if len(self.grads) == len(keys):      # nothing frozen, or the caller's trainable-keys mapping
            return self.grads
        return {k: self.grads[k] for k in keys}


class FullyConnectedNet:
    """A fully connected ReLU network with optional batchnorm/layernorm and dropout (CS231n API).

    Parameters (CS231n's, in CS231n's order)
    ----------
    hidden_dims : sequence of int > 0 (may be empty: a softmax classifier)
    input_dim, num_classes : int (num_classes >= 2)
    dropout_keep_ratio : float in (0, 1]; 1 disables dropout
    normalization : None, "batchnorm" or "layernorm"
    reg : float >= 0
    weight_scale : float > 0, std of the weights when weight_init is None
    dtype : np.float32 or np.float64
    seed : None or int in [0, 2**32): the same dropout mask on every call (CS231n)

    fastopt's (keyword only)
    ----------
    rng : None, int >= 0 or np.random.Generator: weights and a fresh mask stream (module docstring)
    reg_type : "l2" (0.5 * reg * sum W^2) or "l1" (reg * sum |W|)
    weight_init : None, "auto", "xavier", "glorot" or "he" (see fastopt.nn.init); "auto" is the
        activation's recommended one (He for the ReLU family, Xavier for tanh/sigmoid); None is
        CS231n's N(0, weight_scale**2)
    activation : "relu" (default), "leaky_relu", "elu", "tanh" or "sigmoid"
    activation_param : None (the default) or leaky_relu's negative_slope / elu's alpha
    dropout : the pre-2019 name of dropout_keep_ratio (probability of keeping a unit)
    """

    def __init__(self, hidden_dims, input_dim=3 * 32 * 32, num_classes=10, dropout_keep_ratio=1,
                 normalization=None, reg=0.0, weight_scale=1e-2, dtype=np.float32, seed=None, *,
                 rng=None, reg_type="l2", weight_init=None, dropout=None, activation="relu",
                 activation_param=None):
        if isinstance(hidden_dims, (str, bytes)) or not hasattr(hidden_dims, "__iter__"):
            raise TypeError(f"hidden_dims must be a sequence of ints, got {type(hidden_dims).__name__}")
        hidden_dims = [check_scalar(f"hidden_dims[{i}]", h, low=1, integer=True)
                       for i, h in enumerate(hidden_dims)]
        input_dim = check_scalar("input_dim", input_dim, low=1, integer=True)
        num_classes = check_scalar("num_classes", num_classes, low=2, integer=True)
        keep = _check_keep(dropout_keep_ratio, dropout)
        normalization = _check_normalization(normalization)
        reg = check_scalar("reg", reg, low=0)
        check_choice("reg_type", reg_type, REG_TYPES)
        weight_scale = check_scalar("weight_scale", weight_scale, low=0, low_open=True)
        if not (weight_init is None or isinstance(weight_init, str)):
            raise TypeError(f"weight_init must be None or one of {WEIGHT_INITS[1:]}, got {_describe(weight_init)}")
        if weight_init not in WEIGHT_INITS + ("auto",):
            raise ValueError(f"weight_init must be one of {WEIGHT_INITS + ('auto',)}, got {weight_init!r}")
        dt = _check_dtype(dtype)
        seed, rng = _check_rng(seed, rng)
        act = _activation(activation, activation_param)

        self.hidden_dims = hidden_dims
        self.input_dim = input_dim
        self.num_classes = num_classes
        self.dropout_keep_ratio = keep
        self.use_dropout = keep != 1
        self.normalization = normalization
        self.reg = reg
        self.reg_type = reg_type
        self.weight_scale = weight_scale
        self.weight_init = weight_init
        self.dtype = dt
        self.seed = seed
        self.num_layers = len(hidden_dims) + 1
        self.activation = act.name
        self.activation_param = act.param
        self.blocks = describe(input_dim, hidden_dims, num_classes, normalization, self.use_dropout, act)
        init_scheme = act.spec.init if weight_init == "auto" else weight_init

        # Weights: NumPy's global state (np.random.standard_normal = np.random.randn), or the rng stream.
        if rng is None:
            init_rng, self.rng = np.random, None
        elif isinstance(rng, np.random.Generator):
            init_rng = self.rng = rng
        else:
            init_ss, dropout_ss = np.random.SeedSequence(rng).spawn(2)
            init_rng, self.rng = np.random.default_rng(init_ss), np.random.default_rng(dropout_ss)
        params = {}
        for name, shape, init in param_specs(self.blocks):
            if init == "weight":
                params[name] = init_weight(init_rng, *shape, weight_init=init_scheme,
                                           weight_scale=weight_scale, dtype=dt)
            else:
                params[name] = (np.ones if init == "ones" else np.zeros)(shape, dtype=dt)
        flat = FlatParams(params)
        self._params = flat.params     # FlatArrays: views into one buffer (module docstring)
        self.grads = flat.grads        # the zero-copy gradient buffer of loss(..., out=model.grads)
        self.fast_path = True          # False: always run the readable layer-by-layer execution

        # CS231n's per-layer dicts: bn_params holds batchnorm's (mode, running statistics) or
        # layernorm's settings; one dropout_param dict serves every dropout layer.
        n_hidden = len(hidden_dims)
        self.bn_params = ([{"mode": "train"} for _ in range(n_hidden)] if normalization == "batchnorm" else
                          [{} for _ in range(n_hidden)] if normalization == "layernorm" else [])
        self.dropout_param = {}
        if self.use_dropout:
            self.dropout_param = {"mode": "train", "p": keep}
            if seed is not None:
                self.dropout_param["seed"] = seed
            elif self.rng is not None:
                self.dropout_param["rng"] = self.rng
        self._init_buffers()

    # ---------------------------------------------------------------- fastopt's views of CS231n's state
    @property
    def params(self):
        return self._params

    @params.setter
    def params(self, values):
        """``model.params = {...}`` (CS231n's Solver restoring its best params) copies into the views."""
        if not isinstance(values, Mapping):
            raise TypeError(f"params must be a mapping name -> array, got {_describe(values)}")
        if set(values) != set(self._params):
            raise ValueError(f"params must have the keys {sorted(self._params)}, got {sorted(map(str, values))}")
        for k, v in values.items():
            ref = self._params[k]
            if not isinstance(v, np.ndarray) or v.dtype.kind not in "fiu":
                raise TypeError(f"params[{k!r}] must be a real NumPy array, got {_describe(v)}")
            if v.shape != ref.shape:
                raise ValueError(f"params[{k!r}] must have shape {ref.shape}, got {v.shape}")
        with self._lock:
            for k, v in values.items():
                if v is not self._params[k]:
                    np.copyto(self._params[k], v, casting="unsafe")

    @property
    def ln_params(self):
        """Layernorm's settings (the same dicts as bn_params, as CS231n keeps them)."""
        return self.bn_params if self.normalization == "layernorm" else []

    @property
    def dropout_params(self):
        """One entry per dropout layer: the single CS231n dict ``dropout_param`` that all of them use."""
        return [self.dropout_param] * (len(self.hidden_dims) if self.use_dropout else 0)

    @property
    def fused(self):
        """Whether loss() runs the fused execution (fast_path and kernels for every block)."""
        return self.fast_path and run_fused.supports(self.blocks)

    def _init_buffers(self):
        self._workspaces = WorkspaceCache(self.hidden_dims, self.num_classes, self.dtype, self.normalization,
                                          run_fused.needs_scratch(self.normalization, self.activation))
        self._reg_scratch = None       # one weight-sized array for the regularisation terms
        self._lock = threading.Lock()
        self._validated = {}           # _memo: the last validated settings, by slot
        self._grad_views = list(self.grads.items())     # (name, view) of model.grads, listed once
        self._normed = [blk for blk in self.blocks if isinstance(blk, Hidden) and blk.norm is not None]
        self._own_ranges = [(b.__array_interface__["data"][0], b.__array_interface__["data"][0] + b.nbytes)
                            for flat in (self._params, self.grads) for b in flat.buffers.values()]

    def __getstate__(self):
        # Workspaces are scratch memory (tens of MB): rebuilt on first use, never pickled; nor the lock.
        state = self.__dict__.copy()
        for key in ("_workspaces", "_reg_scratch", "_lock", "_own_ranges", "_validated", "_grad_views",
                    "_normed"):
            del state[key]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._init_buffers()

    def __repr__(self):
        return (f"FullyConnectedNet(hidden_dims={self.hidden_dims}, input_dim={self.input_dim}, "
                f"num_classes={self.num_classes}, normalization={self.normalization!r}, "
                f"activation={self.activation!r}, activation_param={self.activation_param!r}, "
                f"dropout_keep_ratio={self.dropout_keep_ratio}, reg={self.reg}, reg_type={self.reg_type!r}, "
                f"dtype={self.dtype.name})")

    # ---------------------------------------------------------------- input checks (the boundary)
    def _check_X(self, X):
        if not isinstance(X, np.ndarray):
            raise TypeError(f"X must be a NumPy array, got {type(X).__name__}")
        seen = self._validated.get("X")   # (shape, dtype, features) of the last X: nothing re-derived
        if seen is not None and X.shape == seen[0] and X.dtype == seen[1]:
            features = seen[2]
        else:
            if X.dtype.kind not in "fiu":
                raise TypeError(f"X must have a real numeric dtype (it is cast to {self.dtype}), got {X.dtype}")
            if X.ndim < 2 or X.shape[0] == 0:
                raise ValueError(f"X must have shape (N, d1, ...) with N >= 1, got {X.shape}")
            features = math.prod(X.shape[1:])
            if features != self.input_dim:
                raise ValueError(f"X must have {self.input_dim} features per sample (input_dim), "
                                 f"got shape {X.shape} ({features} features)")
            self._validated["X"] = (X.shape, X.dtype, features)
        if X.ndim == 2 and X.dtype == self.dtype and X.flags.c_contiguous:
            return X
        # The data (never a parameter) is cast to the model's dtype, as CS231n does.
        return np.ascontiguousarray(X.reshape(X.shape[0], features), dtype=self.dtype)

    def _check_y(self, y, n):
        """N integer labels (as intp), or soft targets (N, C) as a C-contiguous array of the model's
        dtype (fastopt.layers.losses.check_soft_targets: float, finite, >= 0, rows summing to 1)."""
        if type(y) is np.ndarray and y.ndim == 1 and y.dtype == _INTP and y.shape[0] == n:
            # The Solver's labels (intp, the right length): the one bounds check of the general path.
            if np.maximum.reduce(y.view(_UINTP)) >= self.num_classes:
                self._refuse_labels(y)
            return y
        if is_soft(y):
            check_soft_targets(y, n, self.num_classes)
            return np.ascontiguousarray(y, dtype=self.dtype)   # the data (never a parameter) may be cast
        if not isinstance(y, np.ndarray):
            raise TypeError(f"y must be a NumPy array of integer labels, got {type(y).__name__}")
        if y.dtype.kind not in "iu":
            raise TypeError(f"y must have an integer dtype, got {y.dtype}")
        if y.shape != (n,):
            raise ValueError(f"y must have shape ({n},) to match X, got {y.shape}")
        # One reduction checks both bounds: seen as unsigned, a negative label is a huge one.
        unsigned = y.view(_UNSIGNED[y.dtype.itemsize]) if y.dtype.kind == "i" else y
        if np.maximum.reduce(unsigned) >= self.num_classes:      # the ufunc: no Python wrapper
            self._refuse_labels(y)
        return y.astype(np.intp, copy=False)

    def _refuse_labels(self, y):
        """The ValueError of labels outside [0, num_classes) (both paths of _check_y)."""
        raise ValueError(f"y must hold labels in [0, {self.num_classes - 1}], "
                         f"got values in [{y.min()}, {y.max()}]")

    def _check_reg(self):
        """(reg, reg_type), validated once per pair of objects (model.reg may change between calls)."""
        seen = self._validated.get("reg")
        if seen is not None and seen[0] is self.reg and seen[1] is self.reg_type:
            return seen[2]
        result = check_scalar("reg", self.reg, low=0), check_choice("reg_type", self.reg_type, REG_TYPES)
        self._validated["reg"] = (self.reg, self.reg_type, result)
        return result

    def _check_frozen(self):
        """model.frozen (engineer transfer's freeze(): a frozenset of affine-layer indices), or none."""
        frozen = getattr(self, "frozen", None)
        if frozen is None or not frozen:
            return _NOTHING_FROZEN
        if self._validated.get("frozen") is frozen:
            return frozen
        n = len(self.blocks)
        if not isinstance(frozen, frozenset) or not all(
                isinstance(i, int) and not isinstance(i, bool) and 0 <= i < n for i in frozen):
            raise ValueError(f"model.frozen must be a frozenset of affine-layer indices in [0, {n}), "
                             f"got {_describe(frozen)}")
        self._validated["frozen"] = frozen
        return frozen

    def _grad_keys(self, frozen):
        """The parameter names loss() computes gradients for: those of the layers not frozen."""
        if not frozen:
            return list(self._params)
        return [name for blk in self.blocks if blk.k - 1 not in frozen
                for name, _, _ in param_specs([blk])]

    def _check_out(self, out, frozen=_NOTHING_FROZEN):
        """The mapping the gradients are written into: model.grads, or the caller's like it (all the
        params' keys, or with frozen layers exactly the trainable params' keys)."""
        if out is None or out is self.grads:
            for k, g in self._grad_views:
                if not g.flags.writeable:
                    raise ValueError(f"model.grads[{k!r}] must be writeable: loss() writes the gradients there")
            return self.grads
        keys = self._grad_keys(frozen)
        if not isinstance(out, Mapping) or (set(out) != set(self._params) and set(out) != set(keys)):
            got = sorted(out) if isinstance(out, Mapping) else _describe(out)
            want = sorted(self._params) if not frozen else f"{sorted(self._params)} or {sorted(keys)}"
            raise ValueError(f"out must be model.grads or a mapping with keys {want}, got {got}")
        named = []
        for k in keys:
            p = self._params[k]
            check_array(f"out[{k!r}]", out[k], writeable=True, dtype=p.dtype, shape=p.shape)
            named.append((f"out[{k!r}]", out[k]))
        check_distinct(named + [(f"params[{k!r}]", v) for k, v in self._params.items()])
        return out

    def _check_bn_params(self):
        n = len(self.hidden_dims) if self.normalization is not None else 0
        if not isinstance(self.bn_params, list) or len(self.bn_params) != n:
            raise ValueError(f"bn_params must be a list of {n} dicts (one per hidden layer), "
                             f"got {_describe(self.bn_params)}")
        return self.bn_params

    def _check_norm_state(self):
        """[(eps, momentum, running_mean, running_var)] of every normalized hidden block's bn_params
        entry (a fresh list: create_running_statistics fills it in), validated once per set of objects."""
        normed = self._normed
        if not normed:
            return []
        bn_params = self.bn_params
        if not all(type(p) is dict for p in bn_params):
            for blk in normed:
                p = bn_params[blk.index]
                if not isinstance(p, dict):
                    raise TypeError(f"bn_params[{blk.index}] must be a dict, got {_describe(p)}")
        keys = _NORM_KEYS[normed[0].norm.name]
        values = [p.get(k) for p in bn_params for k in keys]
        return list(self._memo("norm", values, lambda: [
            self._validate_norm_param(f"bn_params[{blk.index}]", self.bn_params[blk.index], blk)
            for blk in normed]))

    def _validate_norm_param(self, name, p, blk):
        if not blk.norm.running:
            return norm_eps(name, p), None, None, None
        eps, momentum, rm, rv = bn_settings(name, p, blk.width)
        for key, v in (("running_mean", rm), ("running_var", rv)):
            if v is not None and v.dtype != self.dtype:
                raise TypeError(f"{name}[{key!r}] must have the model's dtype {self.dtype}, got {v.dtype}")
            if v is not None and self._overlaps_own_buffers(v):
                raise ValueError(f"{name}[{key!r}] overlaps the model's params or grads; it is written in place")
        return eps, momentum, rm, rv

    def _memo(self, slot, values, validate):
        """validate(), or its result from the last call when `values` are the same objects (and the
        arrays among them the same shape, dtype and flags): a training step re-checks nothing that did
        not change. The memo holds the objects, so an identity cannot be reused by a new object."""
        seen = self._validated.get(slot)
        # The same objects: the same positions hold the arrays (seen[3]), whose facts are compared.
        if seen is not None and len(seen[0]) == len(values) and all(map(operator.is_, seen[0], values)) \
                and list(map(_ARRAY_FACTS, seen[3])) == seen[1]:
            return seen[2]
        result = validate()
        arrays = [v for v in values if isinstance(v, np.ndarray)]
        self._validated[slot] = (values, list(map(_ARRAY_FACTS, arrays)), result, arrays)
        return result

    def _overlaps_own_buffers(self, a):
        """Whether contiguous `a` lies in the params or grads buffers (address ranges, no data read)."""
        start = a.__array_interface__["data"][0]
        return any(start < end and begin < start + a.nbytes for begin, end in self._own_ranges)

    def _check_dropout_param(self):
        p = self.dropout_param
        if not isinstance(p, dict):
            raise TypeError(f"dropout_param must be a dict, got {_describe(p)}")
        # The dropout layer's own validation, run in test mode: it checks p, generator, seed, rng and
        # offset and returns at once, drawing nothing. Keyed by every entry, so that no setting the
        # layer reads (an offset or generator set after a step) skips this up-front check.
        self._memo("dropout", [x for item in p.items() if item[0] != "mode" for x in item],
                   lambda: layers.dropout_forward(np.zeros((1, 1), self.dtype), {**p, "mode": "test"}))
        return p

    # ---------------------------------------------------------------- public
    def loss(self, X, y=None, *, out=None):
        """Scores (N, C) when y is None (test mode), else (loss: float, grads).

        X has shape (N, d1, ...) with prod(d_i) == input_dim (cast to the model's dtype); y holds
        N integer labels in [0, num_classes), or soft targets: a float32/float64 array
        (N, num_classes) of target probabilities (rows >= 0 summing to 1 within 1e-6; mixup's),
        cast to the model's dtype; the data loss is then the mean over rows of
        -sum_c y[n, c] log softmax(scores)[n, c], its gradient (softmax - y) / N. Test mode uses batchnorm's running statistics and no
        dropout; train mode updates the running statistics (a frozen layer's batchnorm runs as in test
        mode: fastopt.nn.frozen_norm) and draws dropout masks.
        grads: a dict of new arrays (the caller's), or with ``out=model.grads`` that FlatArrays,
        written in place and returned (module docstring). All or nothing: the whole call is
        validated before anything (RNG, running statistics, grads) changes.
        """
        with self._lock:
            call = _Call(self, X, y, out)
            mode = "train" if call.train else "test"
            for p in self.bn_params:
                p["mode"] = mode
            if self.use_dropout:
                self.dropout_param["mode"] = mode
            call.create_running_statistics(self)
            if self.fast_path and self._fusable():
                ws = self._workspaces.get(call.X.shape[0])
                with _backend.beside_blas():
                    result = run_fused.loss(self.blocks, call, ws, call.frozen)
            else:
                result = run_layers.loss(self.blocks, call, call.frozen)
            if self.use_dropout and self.seed is not None and self.hidden_dims:
                self._leave_global_state_as_cs231n(call)
            if not call.train:
                return result
            loss = float(result) + self._regularize(call)
            return loss, call.returned_grads(self)

    def _fusable(self):
        """run_fused.supports(self.blocks), derived once (the blocks never change)."""
        fusable = self._validated.get("fusable")
        if fusable is None:
            fusable = self._validated["fusable"] = run_fused.supports(self.blocks)
        return fusable

    def _leave_global_state_as_cs231n(self, call):
        """CS231n's dropout_forward calls np.random.seed(seed) in every layer (test mode too) and, in
        train mode, then np.random.rand(*x.shape); a call leaves NumPy's global state there, and a
        notebook that builds its next model after such calls (the Dropout notebook's keep 0.5 check)
        draws its weights from that state. fastopt's masks never touch the global state, so the seed
        mode sets it the same way here."""
        np.random.seed(self.seed)
        if call.train:
            np.random.random_sample((call.X.shape[0], self.hidden_dims[-1]))

    def _weights(self):
        return [self._params[f"W{blk.k}"] for blk in self.blocks]

    def _scratch(self, w):
        """A weight-shaped scratch array (allocated once, sized for the largest weight)."""
        if self._reg_scratch is None:
            self._reg_scratch = np.empty(max(w.size for w in self._weights()), self.dtype)
        return self._reg_scratch[:w.size].reshape(w.shape)

    def _regularize(self, call):
        """Adds the penalty's gradient to call.grads; returns the penalty (float32 squares summed in
        float64). Shared by both executions: no temporaries beyond one scratch array."""
        if call.reg == 0:
            return 0.0
        total = 0.0
        for blk in self.blocks:
            w, s = self._params[f"W{blk.k}"], self._scratch(self._params[f"W{blk.k}"])
            if call.reg_type == "l2":
                if w.dtype == np.float64:
                    total += 0.5 * call.reg * float(np.dot(w.ravel(), w.ravel()))
                else:
                    np.multiply(w, w, out=s)
                    total += 0.5 * call.reg * float(s.sum(dtype=np.float64))
            else:
                np.abs(w, out=s)
                total += call.reg * float(s.sum(dtype=np.float64))
            if blk.k - 1 in call.frozen:     # a frozen weight's penalty is a constant of the loss
                continue
            if call.reg_type == "l2":
                np.multiply(w, call.reg, out=s)
            else:
                np.sign(w, out=s)
                s *= call.reg
            call.grads[f"W{blk.k}"] += s
        return total

    # ---------------------------------------------------------------- state
    def state_dict(self, rng=True):
        """Copies of everything training changes: params, bn_params (running statistics, eps,
        momentum; not the mode), and the rng stream's state when the model has one."""
        with self._lock:
            state = {"architecture": self._architecture(),
                     "params": {k: v.copy() for k, v in self._params.items()},
                     "bn_params": [{k: _copy_state(v) for k, v in p.items() if k != "mode"}
                                   for p in self.bn_params]}
            if rng and self.rng is not None:
                state["rng"] = _copy_state(self.rng.bit_generator.state)
            return state

    def _architecture(self):
        """What of the architecture the parameters' shapes do not show: the activation."""
        return {"activation": self.activation, "activation_param": self.activation_param}

    def _check_state(self, state):
        """Validate a state_dict() against this model; returns (params, bn_params, rng state)."""
        if not isinstance(state, dict) or "params" not in state or "bn_params" not in state:
            raise ValueError("model state must be a dict with 'params' and 'bn_params' "
                             "(from FullyConnectedNet.state_dict())")
        unknown = set(state) - {"architecture", "params", "bn_params", "rng"}
        if unknown:
            raise ValueError(f"model state has unknown keys {sorted(map(str, unknown))}")
        # A state without one was written before the activation was an option: ReLU.
        arch, mine = state.get("architecture", {"activation": "relu", "activation_param": None}), self._architecture()
        if type(arch) is not dict or set(arch) != set(mine) or not all(
                type(arch[k]) is type(mine[k]) and arch[k] == mine[k] for k in mine):
            raise ValueError(f"model state architecture {arch!r:.200} does not match this model's "
                             f"{self._architecture()!r}")
        params = state["params"]
        if not isinstance(params, dict) or set(params) != set(self._params):
            got = sorted(map(str, params)) if isinstance(params, dict) else type(params).__name__
            raise ValueError(f"model state params must have keys {sorted(self._params)}, got {got}")
        for k, v in params.items():
            ref = self._params[k]
            if not isinstance(v, np.ndarray) or v.shape != ref.shape or v.dtype != ref.dtype:
                raise ValueError(f"model state param {k} must be {ref.dtype} {ref.shape}, got {_describe(v)}")
        bn = state["bn_params"]
        if not isinstance(bn, list) or len(bn) != len(self.bn_params):
            raise ValueError(f"model state bn_params must be a list of {len(self.bn_params)} dicts")
        for blk, p in zip([b for b in self.blocks if isinstance(b, Hidden)], bn):
            name = f"model state bn_params[{blk.index}]"
            if not isinstance(p, dict):
                raise ValueError(f"{name} must be a dict, got {type(p).__name__}")
            allowed = _NORM_KEYS[self.normalization]
            extra = set(p) - set(allowed)
            if extra:
                raise ValueError(f"{name} has unknown keys {sorted(map(str, extra))}; allowed {list(allowed)}")
            if blk.norm.running:
                eps, momentum, rm, rv = bn_settings(name, p, blk.width)
                for key, v in (("running_mean", rm), ("running_var", rv)):
                    if v is not None and v.dtype != self.dtype:
                        raise ValueError(f"{name}[{key!r}] must have the model's dtype {self.dtype}, "
                                         f"got {v.dtype}")
            else:
                norm_eps(name, p)
        rng_state = state.get("rng")
        if rng_state is not None:
            if self.rng is None:
                raise ValueError("model state holds an rng stream, but this model draws from NumPy's "
                                 "global state or a fixed seed (build it with rng=... to restore one)")
            check_rng_state("model state rng", rng_state, like=self.rng.bit_generator)
        return params, bn, rng_state

    def load_state_dict(self, state):
        """Restore a state_dict() IN PLACE (params and running statistics keep their identity).

        Everything (keys, shapes, dtypes, eps, momentum, running statistics, the rng state) is
        validated first: ValueError (TypeError for wrongly typed values) and nothing changed.
        """
        with self._lock:
            params, bn, rng_state = self._check_state(state)
            for k, v in params.items():
                np.copyto(self._params[k], v)
            for mine, saved in zip(self.bn_params, bn):
                for key, v in saved.items():
                    cur = mine.get(key)
                    if isinstance(v, np.ndarray) and isinstance(cur, np.ndarray) and cur.shape == v.shape \
                            and cur.dtype == v.dtype and cur.flags.writeable and not np.shares_memory(cur, v):
                        np.copyto(cur, v)  # the layer may hold this buffer: keep its identity
                    else:
                        mine[key] = _copy_state(v)
            if rng_state is not None:
                self.rng.bit_generator.state = _copy_state(rng_state)


    # ---------------------------------------------------------------- transfer learning (lecture 7)
    # Layers are the affine layers by 0-based index: the hidden layers 0..L-2, then the classifier L-1.
    # A layer's params are its W, b and (with a normalization) gamma, beta.

    @property
    def frozen(self):
        """The frozen layers' indices (a frozenset); the executions and optimizers leave them alone."""
        return getattr(self, "_frozen", frozenset())

    @frozen.setter
    def frozen(self, layers):
        """``model.frozen = {0, 1}``: exactly these layers frozen (checked as freeze() checks them)."""
        self._frozen = self._checked_frozen(self._layer_set(layers))

    def _checked_frozen(self, new):
        if len(new) == self.num_layers:
            raise ValueError(f"freezing layers {sorted(new)} would freeze all {self.num_layers} layers; "
                             f"at least one must stay trainable")
        return new

    def _layer_index(self, name, value):
        index = check_scalar(name, value, low=0, integer=True)
        if index >= self.num_layers:
            raise ValueError(f"{name} must be a layer index in [0, {self.num_layers - 1}] (the model has "
                             f"{len(self.hidden_dims)} hidden layers and the classifier {self.num_layers - 1}), "
                             f"got {index}")
        return index

    def _layer_set(self, layers):
        if isinstance(layers, (int, np.integer)) and not isinstance(layers, bool):
            layers = [layers]
        if isinstance(layers, (str, bytes)) or not hasattr(layers, "__iter__"):
            raise TypeError(f"layers must be a layer index or a sequence of them, got {_describe(layers)}")
        return frozenset(self._layer_index(f"layers[{i}]", v) for i, v in enumerate(layers))

    def layer_param_names(self, layer):
        """The names of layer `layer`'s params, in storage order (W, b[, gamma, beta])."""
        blk = self.blocks[self._layer_index("layer", layer)]
        return [name for name, _, _ in param_specs([blk])]

    def freeze(self, layers):
        """Freeze the layers (an index or indices, see `frozen`); returns the model. At least one layer
        stays trainable; a bad index raises and nothing changes. A frozen layer's batchnorm runs in
        inference mode (its running statistics, never updated: fastopt.nn.frozen_norm)."""
        self._frozen = self._checked_frozen(self.frozen | self._layer_set(layers))
        return self

    def unfreeze(self, layers=None):
        """Unfreeze the layers given (None: all); returns the model."""
        self._frozen = frozenset() if layers is None else self.frozen - self._layer_set(layers)
        return self

    @property
    def trainable_params(self):
        """{name: param view} of the layers not frozen, in storage order (the optimizer's parameters)."""
        keep = {name for i in range(self.num_layers) if i not in self.frozen for name in self.layer_param_names(i)}
        return {k: v for k, v in self._params.items() if k in keep}

    def param_groups(self, lr=None, default_lr=None):
        """torch-style param groups over the trainable layers, for fastopt.optim classes:

            Adam(model.param_groups(lr={0: 1e-4, 1: 1e-4}, default_lr=1e-3))

        lr: {layer index: learning rate > 0} (None: none); default_lr: the rate of every other trainable
        layer (None: the optimizer's default). One group per layer named in lr (in layer order), then one
        for the rest (omitted when empty). Params are given by name (the optimizer's state keys).
        """
        lr = {} if lr is None else lr
        if not isinstance(lr, Mapping):
            raise TypeError(f"lr must be a mapping layer index -> learning rate, got {_describe(lr)}")
        rates = {}
        for layer, value in lr.items():
            index = self._layer_index(f"lr key {layer!r}", layer)
            if index in self.frozen:
                raise ValueError(f"lr names layer {index}, which is frozen (unfreeze it to train it)")
            rates[index] = check_scalar(f"lr[{layer!r}]", value, low=0, low_open=True)
        if default_lr is not None:
            default_lr = check_scalar("default_lr", default_lr, low=0, low_open=True)
        trainable = self.trainable_params
        groups = [{"params": {k: trainable[k] for k in self.layer_param_names(i)}, "lr": rates[i]}
                  for i in sorted(rates)]
        named = {k for g in groups for k in g["params"]}
        rest = {k: v for k, v in trainable.items() if k not in named}
        if rest:
            groups.append({"params": rest} if default_lr is None else {"params": rest, "lr": default_lr})
        return groups

    def replace_head(self, num_classes, *, rng=None, fresh=False):
        """A fresh classifier layer for `num_classes` classes, drawn with the model's weight init from `rng`
        (an int or a Generator; None: NumPy's global state) -- or, when num_classes is already the model's
        and not `fresh` (True: other classes of the same count, e.g. digits 5-9 after 0-4), the head is
        kept as it is. Returns the model.

        A new head rebuilds the parameter and gradient buffers: every param is a new array (the body's
        values copied bitwise), so build the optimizer after this call. The new head is not frozen.
        """
        num_classes = check_scalar("num_classes", num_classes, low=2, integer=True)
        if rng is not None and not isinstance(rng, np.random.Generator):
            rng = np.random.default_rng(check_scalar("rng (an int seed or a numpy.random.Generator)", rng,
                                                     low=0, integer=True))
        if num_classes == self.num_classes and not fresh:
            return self
        act = _activation(self.activation, self.activation_param)
        blocks = describe(self.input_dim, self.hidden_dims, num_classes, self.normalization, self.use_dropout, act)
        head = blocks[-1]
        scheme = act.spec.init if self.weight_init == "auto" else self.weight_init
        with self._lock:
            params = {k: v.copy() for k, v in self._params.items()}
            params[f"W{head.k}"] = init_weight(np.random if rng is None else rng, head.fan_in, num_classes,
                                               weight_init=scheme, weight_scale=self.weight_scale, dtype=self.dtype)
            params[f"b{head.k}"] = np.zeros(num_classes, dtype=self.dtype)
            flat = FlatParams(params)
            self.num_classes, self.blocks = num_classes, blocks
            self._params, self.grads = flat.params, flat.grads
            self._frozen = self.frozen - {self.num_layers - 1}
        self._init_buffers()
        return self

    # ---------------------------------------------------------------- model files (fastopt.model_io)
    def save(self, path, *, preprocess=None, meta=None):
        """Write this model (and the preprocessing fitted to its data, and plain `meta` data) to `path`
        in fastopt's safe model format (fastopt.model_io.save_model)."""
        from ..model_io import save_model
        save_model(path, self, preprocess=preprocess, meta=meta)

    @classmethod
    def load(cls, path):
        """The model saved at `path` (fastopt.model_io.load_model(path).model); ValueError for a bad file."""
        from ..model_io import load_model
        return load_model(path).model

    def load_weights(self, path):
        """Load the weights and normalization statistics of the model file at `path` INTO this model.

        The file's architecture must be this model's (widths, normalization, activation, dtype):
        ValueError naming the difference, and nothing changed. Returns the model."""
        from ..model_io import load_model, structure_of
        saved = load_model(path).model
        mine, theirs = structure_of(self), structure_of(saved)
        diff = [f"{k}: file {theirs[k]!r}, model {mine[k]!r}" for k in mine if mine[k] != theirs[k]]
        if diff:
            raise ValueError(f"model file {str(path)!r} holds another architecture ({'; '.join(diff)}); "
                             f"nothing was loaded")
        self.load_state_dict(saved.state_dict(rng=False))
        return self
