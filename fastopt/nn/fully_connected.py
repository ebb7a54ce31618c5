"""CS231n's FullyConnectedNet on fastopt's layer functions.

Architecture: {affine -> [batch/layer norm] -> relu -> [dropout]} x (L - 1) -> affine -> softmax.

Parameters live in ``self.params`` (W1, b1, gamma1, beta1, ..., WL, bL), C-contiguous arrays of the
model's dtype. They are only ever updated IN PLACE (by optimizers, checkpoint loading, best-params
restore): nothing in fastopt rebinds an entry of ``params``, so the arrays may be views into one flat
buffer. Forward and backward passes are small per-block methods (``_hidden_forward``,
``_hidden_backward``, ``_output_forward``, ...) so that fused kernels can replace a block.

Regularisation (weights only, never biases or gamma/beta), CS231n convention:
    reg_type="l2":  loss += 0.5 * reg * sum(W**2),   dW += reg * W
    reg_type="l1":  loss += reg * sum(|W|),          dW += reg * sign(W)

Randomness: weights come from a Generator seeded by ``seed`` (one child stream of
``SeedSequence(seed)``) and dropout masks from a second child stream, ``self.rng``: every training
forward pass draws one integer seed per dropout layer from ``self.rng`` and hands it to
``dropout_forward`` in ``dropout_param["seed"]``. Training is therefore deterministic given ``seed``,
and ``state_dict()`` captures ``self.rng`` so that a resumed run draws the same masks.

Storage and the fast path: ``self.params`` is a :class:`fastopt.flat.FlatArrays` (every parameter a
view into one buffer, in the order W1, b1, gamma1, beta1, ..., WL, bL) and ``loss(X, y)`` returns
the gradients as a new dict of the views of a second buffer with the same layout. Those gradient arrays are
REUSED: the next ``loss(X, y)`` overwrites them (as ``.grad`` in PyTorch); copy them to keep them.
Because params and grads each tile one buffer, fastopt's optimizers can step a whole group in one
kernel call (``fastopt.flat.tiles_one_buffer``).

``loss`` runs the fast path (``_fast_loss``) unless ``self.fast_path`` is False or a subclass
overrides one of the block methods: the same mathematics as the block methods, but every
intermediate goes into preallocated buffers (``fastopt.nn.workspace``), matmuls write with ``out=``
through transposed views, no gradient is computed for the input, bias+batchnorm+ReLU and
softmax-loss+gradient are single fused kernels (``fastopt._mlp_kernels``), dropout masks are drawn
inside the dropout kernel, and the kernels between matmuls run
inside ``fastopt.beside_blas()`` (one thread while NumPy's BLAS runs several).
The block methods stay as the readable definition (and the path for what subclasses change);
tests check both paths agree to ~1e-12 in float64.
"""
import numpy as np

from .. import _backend, layers
from .._validation import check_array, check_choice, check_rng_state, check_scalar
from ..flat import FlatParams
from ..layers import dropout as _dropout
from ..layers.normalization import _eps
from .init import WEIGHT_INITS, init_weight
from .workspace import WorkspaceCache

NORMALIZATIONS = (None, "batchnorm", "layernorm")
REG_TYPES = ("l2", "l1")
_SEED_HIGH = 2**31 - 1  # dropout seeds handed to the layer stay within a C int


def _check_seed(name, seed):
    if seed is None:
        return None
    return check_scalar(name, seed, low=0, integer=True)


def _check_dtype(dtype):
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"dtype must be np.float32 or np.float64, got {dtype!r}") from exc
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"dtype must be np.float32 or np.float64, got {dt}")
    return dt


def _copy_state(value):
    """A deep copy of plain data (dicts, lists, arrays, scalars) with fresh arrays."""
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, dict):
        return {k: _copy_state(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_copy_state(v) for v in value)
    return value


class FullyConnectedNet:
    """A fully connected ReLU network with optional batchnorm/layernorm and dropout (CS231n API).

    Parameters
    ----------
    hidden_dims : sequence of int > 0 (may be empty: a softmax classifier)
    input_dim, num_classes : int (num_classes >= 2)
    dropout_keep_ratio : float in (0, 1]; 1 disables dropout
    normalization : None, "batchnorm" or "layernorm"
    reg : float >= 0; reg_type : "l2" (0.5 * reg * sum W^2) or "l1" (reg * sum |W|)
    weight_scale : float > 0, std of the weights when weight_init is None
    weight_init : None, "xavier", "glorot" or "he" (see fastopt.nn.init)
    dtype : np.float32 or np.float64
    seed : None or int >= 0; seeds the weights and the dropout masks
    """

    def __init__(self, hidden_dims, input_dim=3 * 32 * 32, num_classes=10, dropout_keep_ratio=1,
                 normalization=None, reg=0.0, weight_scale=1e-2, weight_init=None, dtype=np.float32,
                 seed=None, reg_type="l2"):
        if isinstance(hidden_dims, (str, bytes)) or not hasattr(hidden_dims, "__iter__"):
            raise TypeError(f"hidden_dims must be a sequence of ints, got {type(hidden_dims).__name__}")
        hidden_dims = [check_scalar(f"hidden_dims[{i}]", h, low=1, integer=True)
                       for i, h in enumerate(hidden_dims)]
        input_dim = check_scalar("input_dim", input_dim, low=1, integer=True)
        num_classes = check_scalar("num_classes", num_classes, low=2, integer=True)
        keep = check_scalar("dropout_keep_ratio", dropout_keep_ratio, low=0, low_open=True, high=1)
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
        reg = check_scalar("reg", reg, low=0)
        check_choice("reg_type", reg_type, REG_TYPES)
        weight_scale = check_scalar("weight_scale", weight_scale, low=0, low_open=True)
        if weight_init not in WEIGHT_INITS:
            raise ValueError(f"weight_init must be one of {WEIGHT_INITS}, got {weight_init!r}")
        dt = _check_dtype(dtype)
        seed = _check_seed("seed", seed)

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

        init_ss, dropout_ss = np.random.SeedSequence(seed).spawn(2)
        init_rng = np.random.default_rng(init_ss)
        self.rng = np.random.default_rng(dropout_ss)  # dropout seeds; saved by state_dict()

        params = {}
        dims = [input_dim] + hidden_dims + [num_classes]
        for i in range(self.num_layers):
            k = i + 1
            params[f"W{k}"] = init_weight(init_rng, dims[i], dims[i + 1], weight_init=weight_init,
                                          weight_scale=weight_scale, dtype=dt)
            params[f"b{k}"] = np.zeros(dims[i + 1], dtype=dt)
            if normalization is not None and k < self.num_layers:
                params[f"gamma{k}"] = np.ones(dims[i + 1], dtype=dt)
                params[f"beta{k}"] = np.zeros(dims[i + 1], dtype=dt)
        flat = FlatParams(params)
        self.params = flat.params      # FlatArrays: views into one buffer (module docstring)
        self._grads = flat.grads       # returned by loss(); overwritten by the next call
        self.fast_path = True          # False: always run the layer-by-layer block methods
        self._init_buffers()

        n_hidden = len(hidden_dims)
        # Per-layer parameter dicts of the layer functions; batchnorm keeps its running statistics here.
        self.bn_params = [{"mode": "train"} for _ in range(n_hidden)] if normalization == "batchnorm" else []
        self.ln_params = [{} for _ in range(n_hidden)] if normalization == "layernorm" else []
        self.dropout_params = ([{"mode": "train", "p": keep} for _ in range(n_hidden)]
                               if self.use_dropout else [])

    def _init_buffers(self):
        self._workspaces = WorkspaceCache(self.hidden_dims, self.num_classes, self.dtype,
                                          self.normalization, self.use_dropout)
        self._reg_scratch = None       # one weight-sized array for the regularisation terms

    def __getstate__(self):
        # Workspaces are scratch memory (tens of MB): rebuilt on first use, never pickled.
        state = self.__dict__.copy()
        del state["_workspaces"], state["_reg_scratch"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._init_buffers()

    def __repr__(self):
        return (f"FullyConnectedNet(hidden_dims={self.hidden_dims}, input_dim={self.input_dim}, "
                f"num_classes={self.num_classes}, normalization={self.normalization!r}, "
                f"dropout_keep_ratio={self.dropout_keep_ratio}, reg={self.reg}, reg_type={self.reg_type!r}, "
                f"dtype={self.dtype.name})")

    # ---------------------------------------------------------------- input checks
    def _check_X(self, X):
        if not isinstance(X, np.ndarray):
            raise TypeError(f"X must be a NumPy array, got {type(X).__name__}")
        if X.dtype.kind not in "fiu":
            raise TypeError(f"X must have a real numeric dtype (it is cast to {self.dtype}), got {X.dtype}")
        if X.ndim < 2 or X.shape[0] == 0:
            raise ValueError(f"X must have shape (N, d1, ...) with N >= 1, got {X.shape}")
        features = int(np.prod(X.shape[1:]))
        if features != self.input_dim:
            raise ValueError(f"X must have {self.input_dim} features per sample (input_dim), "
                             f"got shape {X.shape} ({features} features)")
        # The data (never a parameter) is cast to the model's dtype, as CS231n does.
        return np.ascontiguousarray(X.reshape(X.shape[0], features), dtype=self.dtype)

    def _check_y(self, y, n):
        if not isinstance(y, np.ndarray):
            raise TypeError(f"y must be a NumPy array of integer labels, got {type(y).__name__}")
        if y.dtype.kind not in "iu":
            raise TypeError(f"y must have an integer dtype, got {y.dtype}")
        if y.shape != (n,):
            raise ValueError(f"y must have shape ({n},) to match X, got {y.shape}")
        if y.min() < 0 or y.max() >= self.num_classes:
            raise ValueError(f"y must hold labels in [0, {self.num_classes - 1}], "
                             f"got values in [{y.min()}, {y.max()}]")
        return y.astype(np.intp, copy=False)

    # ---------------------------------------------------------------- blocks
    def _set_mode(self, mode):
        for p in self.bn_params:
            p["mode"] = mode
        for p in self.dropout_params:
            p["mode"] = mode
        if mode == "train" and self.dropout_params:
            seeds = self.rng.integers(0, _SEED_HIGH, size=len(self.dropout_params))
            for p, s in zip(self.dropout_params, seeds):
                p["seed"] = int(s)

    def _hidden_forward(self, i, x):
        """Block i (0-based): affine -> [norm] -> relu -> [dropout]. Returns (out, cache)."""
        k = i + 1
        p = self.params
        a, fc_cache = layers.affine_forward(x, p[f"W{k}"], p[f"b{k}"])
        norm_cache = None
        if self.normalization == "batchnorm":
            a, norm_cache = layers.batchnorm_forward(a, p[f"gamma{k}"], p[f"beta{k}"], self.bn_params[i])
        elif self.normalization == "layernorm":
            a, norm_cache = layers.layernorm_forward(a, p[f"gamma{k}"], p[f"beta{k}"], self.ln_params[i])
        out, relu_cache = layers.relu_forward(a)
        drop_cache = None
        if self.use_dropout:
            out, drop_cache = layers.dropout_forward(out, self.dropout_params[i])
        return out, (fc_cache, norm_cache, relu_cache, drop_cache)

    def _hidden_backward(self, i, dout, cache, grads):
        """Backward through block i; stores its parameter gradients in `grads`, returns dx."""
        k = i + 1
        fc_cache, norm_cache, relu_cache, drop_cache = cache
        if self.use_dropout:
            dout = layers.dropout_backward(dout, drop_cache)
        da = layers.relu_backward(dout, relu_cache)
        if self.normalization == "batchnorm":
            da, grads[f"gamma{k}"], grads[f"beta{k}"] = layers.batchnorm_backward(da, norm_cache)
        elif self.normalization == "layernorm":
            da, grads[f"gamma{k}"], grads[f"beta{k}"] = layers.layernorm_backward(da, norm_cache)
        dx, grads[f"W{k}"], grads[f"b{k}"] = layers.affine_backward(da, fc_cache)
        return dx

    def _output_forward(self, x):
        k = self.num_layers
        return layers.affine_forward(x, self.params[f"W{k}"], self.params[f"b{k}"])

    def _output_backward(self, dscores, cache, grads):
        k = self.num_layers
        dx, grads[f"W{k}"], grads[f"b{k}"] = layers.affine_backward(dscores, cache)
        return dx

    def _data_loss(self, scores, y):
        return layers.softmax_loss(scores, y)

    def _weight_keys(self):
        return [f"W{k}" for k in range(1, self.num_layers + 1)]

    def _reg_loss(self):
        if self.reg == 0:
            return 0.0
        total = 0.0
        for key in self._weight_keys():
            w = self.params[key].ravel()
            if self.reg_type == "l2":
                w64 = w.astype(np.float64, copy=False)
                total += 0.5 * self.reg * float(np.dot(w64, w64))
            else:
                total += self.reg * float(np.abs(w).sum(dtype=np.float64))
        return total

    def _add_reg_grads(self, grads):
        if self.reg == 0:
            return
        for key in self._weight_keys():
            w = self.params[key]
            grads[key] += self.reg * (w if self.reg_type == "l2" else np.sign(w))

    # ---------------------------------------------------------------- public
    def loss(self, X, y=None):
        """Scores (N, C) when y is None (test mode), else (loss: float, grads: dict like params).

        X has shape (N, d1, ...) with prod(d_i) == input_dim (cast to the model's dtype); y holds
        N integer labels in [0, num_classes). Test mode uses batchnorm's running statistics and no
        dropout; train mode updates the running statistics and draws dropout masks from self.rng.
        """
        X = self._check_X(X)
        if y is not None:
            y = self._check_y(y, X.shape[0])
        mode = "test" if y is None else "train"
        self._set_mode(mode)
        if self._uses_fast_path():
            with _backend.beside_blas():
                return self._fast_loss(X, y)

        caches = []
        h = X
        for i in range(self.num_layers - 1):
            h, cache = self._hidden_forward(i, h)
            caches.append(cache)
        scores, out_cache = self._output_forward(h)
        if y is None:
            return scores

        data_loss, dscores = self._data_loss(scores, y)
        loss = float(data_loss) + self._reg_loss()
        grads = {}
        dh = self._output_backward(dscores, out_cache, grads)
        for i in reversed(range(self.num_layers - 1)):
            dh = self._hidden_backward(i, dh, caches[i], grads)
        self._add_reg_grads(grads)
        for key, g in grads.items():
            self._grads[key] = g       # copied into the flat gradient buffer (same as the fast path)
        return loss, dict(self._grads)

    # ---------------------------------------------------------------- fast path
    _BLOCK_METHODS = ("_hidden_forward", "_hidden_backward", "_output_forward", "_output_backward",
                      "_data_loss", "_weight_keys", "_reg_loss", "_add_reg_grads")

    def _uses_fast_path(self):
        cls = type(self)
        return self.fast_path and all(getattr(cls, m) is getattr(FullyConnectedNet, m)
                                      for m in self._BLOCK_METHODS)

    def _fast_loss(self, X, y):
        """loss() on preallocated workspaces and fused kernels (module docstring)."""
        K = _backend.kernels("mlp")
        p, g = self.params, self._grads
        ws = self._workspaces.get(X.shape[0])
        train = y is not None
        x = X
        for i in range(self.num_layers - 1):
            x = self._fast_hidden_forward(K, i, x, ws, train)
        k = self.num_layers
        scores = ws.scores
        np.matmul(x, p[f"W{k}"], out=scores)
        np.add(scores, p[f"b{k}"], out=scores)
        if not train:
            return scores.copy()       # the workspace is overwritten by the next call

        dz = ws.dscores                # grad wrt the output layer's pre-activation
        nt = _backend.threads_for(scores.size, K.GRAIN)
        loss = K.softmax_loss_grad(scores, y, dz, nt) + self._fast_reg_loss()
        K.bias_grad(dz, g[f"b{k}"], nt)
        for i in reversed(range(self.num_layers)):
            k = i + 1
            np.matmul(X.T if i == 0 else ws.h[i - 1].T, dz, out=g[f"W{k}"])
            if i > 0:                  # no gradient for the input X
                np.matmul(dz, p[f"W{k}"].T, out=ws.dh[i - 1])
                dz = self._fast_hidden_backward(K, i - 1, ws)
        self._fast_reg_grads()
        return float(loss), dict(g)    # a dict (what the optimizers accept) of the flat grad views

    def _bn_state(self, i, d):
        """(eps, momentum, running_mean, running_var) of batchnorm layer i, validated as the layer does."""
        bp = self.bn_params[i]
        eps = _eps("bn_param", bp)
        momentum = check_scalar("bn_param['momentum']", bp.get("momentum", 0.9), low=0.0, high=1.0)
        running = []
        for key in ("running_mean", "running_var"):
            v = bp.get(key)
            if v is None:
                v = bp[key] = np.zeros(d, self.dtype)   # CS231n: both start at zero
            else:
                check_array(f"bn_param[{key!r}]", v, writeable=True, dtype=self.dtype, shape=(d,))
            running.append(v)
        return eps, momentum, running[0], running[1]

    def _fast_hidden_forward(self, K, i, x, ws, train):
        """Block i into ws: z = x @ W, r = relu(norm(z + b)), h = dropout(r) (train). Returns h."""
        k = i + 1
        p = self.params
        z, r = ws.z[i], ws.r[i]
        np.matmul(x, p[f"W{k}"], out=z)
        nt = _backend.threads_for(z.size, K.GRAIN)
        if self.normalization == "batchnorm":
            eps, momentum, rm, rv = self._bn_state(i, z.shape[1])
            if train:
                K.batchnorm_relu_forward(z, p[f"b{k}"], p[f"gamma{k}"], p[f"beta{k}"], eps, momentum,
                                         rm, rv, r, ws.mean[i], ws.inv_std[i], nt)
            else:
                K.batchnorm_relu_eval(z, p[f"b{k}"], p[f"gamma{k}"], p[f"beta{k}"], rm, rv, eps, r, nt)
        elif self.normalization == "layernorm":
            N = _backend.kernels("norm")
            np.add(z, p[f"b{k}"], out=z)           # the layernorm input, kept for backward
            N.layernorm_forward(z, p[f"gamma{k}"], p[f"beta{k}"], _eps("ln_param", self.ln_params[i]),
                                r, ws.mean[i], ws.inv_std[i], _backend.threads_for(z.size, N.GRAIN))
            np.maximum(r, 0, out=r)
        else:
            K.bias_relu_forward(z, p[f"b{k}"], r, nt)
        if not (train and self.use_dropout):
            return r
        dp = self.dropout_params[i]
        keep, _ = _dropout._check_param(dp)
        _backend.kernels("dropout").dropout_train(r.reshape(-1), keep, 1.0 / keep, _dropout._bit_generator(dp),
                                                  ws.mask[i], ws.h[i].reshape(-1))
        return ws.h[i]

    def _fast_hidden_backward(self, K, i, ws):
        """From ws.dh[i] (grad wrt block i's output) to the grad wrt z[i]; stores the param grads."""
        k = i + 1
        p, g = self.params, self._grads
        dh, r = ws.dh[i], ws.r[i]
        nt = _backend.threads_for(dh.size, K.GRAIN)
        if self.use_dropout:
            keep = self.dropout_params[i]["p"]
            D = _backend.kernels("dropout")
            D.dropout_apply(dh.reshape(-1), ws.mask[i], 1.0 / keep, ws.tmp[i].reshape(-1),
                            n_threads=_backend.threads_for(dh.size, D.GRAIN))
            dr = ws.tmp[i]
        else:
            dr = dh
        if self.normalization == "batchnorm":
            K.relu_batchnorm_backward(dr, r, ws.z[i], p[f"b{k}"], p[f"gamma{k}"], ws.mean[i],
                                      ws.inv_std[i], dh, g[f"gamma{k}"], g[f"beta{k}"], g[f"b{k}"], nt)
            return dh
        if self.normalization == "layernorm":
            N = _backend.kernels("norm")
            K.relu_backward_inplace(dr, r, nt)
            dz = ws.tmp[i] if dr is dh else dh     # layernorm backward cannot write in place
            N.layernorm_backward(dr, ws.z[i], ws.mean[i], ws.inv_std[i], p[f"gamma{k}"], dz,
                                 g[f"gamma{k}"], g[f"beta{k}"], _backend.threads_for(dh.size, N.GRAIN))
            K.bias_grad(dz, g[f"b{k}"], nt)
            return dz
        K.relu_bias_backward(dr, r, g[f"b{k}"], nt)
        return dr

    def _scratch(self, w):
        """A weight-shaped scratch array (allocated once, sized for the largest weight)."""
        if self._reg_scratch is None:
            size = max(self.params[key].size for key in self._weight_keys())
            self._reg_scratch = np.empty(size, self.dtype)
        return self._reg_scratch[:w.size].reshape(w.shape)

    def _fast_reg_loss(self):
        """_reg_loss without temporaries (float32 squares are summed in float64)."""
        if self.reg == 0:
            return 0.0
        total = 0.0
        for key in self._weight_keys():
            w = self.params[key]
            if self.reg_type == "l2" and w.dtype == np.float64:
                total += 0.5 * self.reg * float(np.dot(w.ravel(), w.ravel()))
                continue
            s = self._scratch(w)
            if self.reg_type == "l2":
                np.multiply(w, w, out=s)
                total += 0.5 * self.reg * float(s.sum(dtype=np.float64))
            else:
                np.abs(w, out=s)
                total += self.reg * float(s.sum(dtype=np.float64))
        return total

    def _fast_reg_grads(self):
        """_add_reg_grads through the scratch array: dW += reg * W (l2) or reg * sign(W) (l1)."""
        if self.reg == 0:
            return
        for key in self._weight_keys():
            w = self.params[key]
            s = self._scratch(w)
            if self.reg_type == "l2":
                np.multiply(w, self.reg, out=s)
            else:
                np.sign(w, out=s)
                s *= self.reg
            self._grads[key] += s

    def state_dict(self, rng=True):
        """Copies of everything training changes: params, batchnorm running statistics, dropout RNG."""
        state = {"params": {k: v.copy() for k, v in self.params.items()},
                 "bn_params": [{k: _copy_state(v) for k, v in p.items() if k != "mode"}
                               for p in self.bn_params]}
        if rng:
            state["rng"] = _copy_state(self.rng.bit_generator.state)
        return state

    def load_state_dict(self, state):
        """Restore a state_dict() IN PLACE (params keep their identity). Validates everything first.

        Raises ValueError (TypeError for a non-dict) when keys, shapes or dtypes do not match;
        nothing is changed then.
        """
        if not isinstance(state, dict) or "params" not in state or "bn_params" not in state:
            raise ValueError("model state must be a dict with 'params' and 'bn_params' "
                             "(from FullyConnectedNet.state_dict())")
        params = state["params"]
        if not isinstance(params, dict) or set(params) != set(self.params):
            got = sorted(params) if isinstance(params, dict) else type(params).__name__
            raise ValueError(f"model state params must have keys {sorted(self.params)}, got {got}")
        for k, v in params.items():
            ref = self.params[k]
            if not isinstance(v, np.ndarray) or v.shape != ref.shape or v.dtype != ref.dtype:
                got = f"{v.dtype} {v.shape}" if isinstance(v, np.ndarray) else type(v).__name__
                raise ValueError(f"model state param {k} must be {ref.dtype} {ref.shape}, got {got}")
        bn = state["bn_params"]
        if not isinstance(bn, list) or len(bn) != len(self.bn_params):
            raise ValueError(f"model state bn_params must be a list of {len(self.bn_params)} dicts")
        for i, p in enumerate(bn):
            if not isinstance(p, dict):
                raise ValueError(f"model state bn_params[{i}] must be a dict, got {type(p).__name__}")
            dim = self.hidden_dims[i]
            for key in ("running_mean", "running_var"):
                v = p.get(key)
                if v is not None and (not isinstance(v, np.ndarray) or v.shape != (dim,)):
                    raise ValueError(f"model state bn_params[{i}][{key!r}] must be an array of shape "
                                     f"({dim},)")
        rng_state = state.get("rng")
        if rng_state is not None:
            check_rng_state("model state rng", rng_state)

        for k, v in params.items():
            np.copyto(self.params[k], v)
        for mine, saved in zip(self.bn_params, bn):
            for key, v in saved.items():
                cur = mine.get(key)
                if (isinstance(v, np.ndarray) and isinstance(cur, np.ndarray) and cur.shape == v.shape
                        and cur.dtype == v.dtype and cur.flags.writeable):
                    np.copyto(cur, v)  # the layer may hold this buffer: keep its identity
                else:
                    mine[key] = _copy_state(v)
        if rng_state is not None:
            self.rng.bit_generator.state = _copy_state(rng_state)

