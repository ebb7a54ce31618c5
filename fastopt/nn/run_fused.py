"""The fused execution of a FullyConnectedNet description: workspaces and fused kernels.

The same blocks and the same mathematics as fastopt.nn.run_layers, but every intermediate goes
into preallocated buffers (fastopt.nn.workspace), matmuls write with ``out=`` through transposed
views, no gradient is computed for the input X, bias+norm+ReLU and the output layer (bias, softmax
loss, its gradient and the bias gradient) are single fused kernels (fastopt._mlp_kernels), the other
activations run their compiled kernels (fastopt._activation_kernels, in place where their backward
allows) after the bias add and the norm kernel, and the gradients are written straight into
``call.grads``. Dropout is the layer function itself (its mask is drawn inside its kernel).
The caller runs it inside ``fastopt.beside_blas()`` (one kernel thread while NumPy's BLAS runs
several). Tests check both executions agree to ~1e-12 in float64.

A step is a :class:`Plan`: every kernel call with its arrays bound once (the workspace's buffers,
the parameters, the gradient arrays, the running statistics, each kernel's dtype specialization),
kept on the workspace (one per mode, train or test) and reused while the call binds the same
objects (``Plan.key``). A small
network's step is then the matmuls and one call per kernel, with no argument lookups in between.

Frozen layers (``frozen``: indices of the affine layers, as ``model.frozen``): no parameter gradient
is computed for them (no dW matmul; a layernorm's internal sums go to scratch) and the backward pass
stops at the lowest trainable layer (no gradient below it). A frozen batchnorm layer runs in
inference mode (fastopt.nn.frozen_norm): the test-mode forward kernel in training calls too, and,
above a trainable layer, the activation's backward then ``inference_backward``.

``FUSED`` holds, per (normalization, activation) of a hidden block, builders of the forward (train
and eval) and backward calls; ``supports(blocks)`` says whether every block has an entry.
"""
import operator

import numpy as np

from .. import _backend, layers
from ..flat import FlatArrays
from ..layers.activations import ACTIVATIONS, FAMILY
from .blocks import Hidden
from .frozen_norm import inference_backward, runs_inference

__all__ = ["FUSED", "Plan", "supports", "loss"]


def _specialized(fn, *types):
    """The compiled fused function's specialization for `types` (Cython's ``__signatures__``):
    skips the per-call dispatch on the arguments' dtypes. The twins (plain functions) as they are."""
    sigs = getattr(fn, "__signatures__", None)
    return sigs.get("|".join(types), fn) if sigs else fn


def _ctype(a):
    return "float" if a.dtype == np.float32 else "double"


def _bound(K, a):
    """`a` as kernel module K takes it fastest: its Cython memoryview (K._view / K._view2d), which a
    kernel acquires without the buffer protocol (~1.5 us less per call of ~11 buffers); the twins
    take the array itself. The view keeps `a` alive and cannot outlive a resize (NumPy refuses one
    while a view exists)."""
    view = getattr(K, "_view2d" if a.ndim == 2 else "_view", None)
    return a if view is None else view(a)


# ---------------------------------------------------------------- per (norm, activation) builders
# forward(K, blk, call, ws, batch) -> f(nt): z = x @ W (already there) -> r = act(norm(z + b)); batch:
# batchnorm normalizes with the batch's statistics and updates the running ones (a training call, the
# block not frozen), else with the running statistics.
# backward(K, blk, call, ws, g) -> f(dr, nt) -> grad wrt z (may be dr itself); the block's param grads
# go into the mapping g (call.grads, or the plan's scratch for a frozen block).


def _plain_forward(K, blk, call, ws, batch):
    z, r = ws.z[blk.index], ws.r[blk.index]
    f = _specialized(K.bias_relu_forward, _ctype(z))
    args = tuple(_bound(K, a) for a in (z, call.params[f"b{blk.k}"], r))
    return lambda nt: f(*args, nt)


def _plain_backward(K, blk, call, ws, g):
    i = blk.index
    dh, dhv, r = ws.dh[i], _bound(K, ws.dh[i]), _bound(K, ws.r[i])
    db = g.get(f"b{blk.k}")
    if db is None:                 # frozen: the ReLU mask only
        f, tail = _specialized(K.relu_backward_inplace, _ctype(dh)), (r,)
    else:
        f, tail = _specialized(K.relu_bias_backward, _ctype(dh)), (r, _bound(K, db))

    def backward(dr, nt):
        f(dhv if dr is dh else dr, *tail, nt)
        return dr
    return backward


def _bn_forward(K, blk, call, ws, batch):
    p, i, k = call.params, blk.index, blk.k
    eps, momentum, rm, rv = call.norm_state[i]
    z, r = ws.z[i], ws.r[i]
    if batch:
        f = _specialized(K.batchnorm_relu_forward, _ctype(z))
        args = (z, p[f"b{k}"], p[f"gamma{k}"], p[f"beta{k}"], eps, momentum, rm, rv, r, ws.mean[i], ws.inv_std[i])
    else:
        f = _specialized(K.batchnorm_relu_eval, _ctype(z))
        args = (z, p[f"b{k}"], p[f"gamma{k}"], p[f"beta{k}"], rm, rv, eps, r)
    args = tuple(_bound(K, a) if isinstance(a, np.ndarray) else a for a in args)
    return lambda nt: f(*args, nt)


def _bn_backward(K, blk, call, ws, g):
    p, i, k = call.params, blk.index, blk.k
    dz = ws.dh[i]                  # the kernel may write in place (dr is dh without dropout)
    f = _specialized(K.relu_batchnorm_backward, _ctype(dz))
    args = tuple(_bound(K, a) for a in (ws.r[i], ws.z[i], p[f"b{k}"], p[f"gamma{k}"], ws.mean[i], ws.inv_std[i],
                                        dz, g[f"gamma{k}"], g[f"beta{k}"], g[f"b{k}"]))
    dzv = args[6]

    def backward(dr, nt):
        f(dzv if dr is dz else dr, *args, nt)
        return dz
    return backward


def _ln_forward(K, blk, call, ws, batch):
    p, i, k = call.params, blk.index, blk.k
    N = _backend.kernels("norm")
    z, r = ws.z[i], ws.r[i]
    b, gamma, beta, eps = p[f"b{k}"], p[f"gamma{k}"], p[f"beta{k}"], call.norm_state[i][0]

    def forward(nt):
        np.add(z, b, out=z)                    # the layernorm input, kept for backward
        N.layernorm_forward(z, gamma, beta, eps, r, ws.mean[i], ws.inv_std[i],
                            _backend.threads_for(z.size, N.GRAIN))
        np.maximum(r, 0, out=r)
    return forward


def _ln_backward(K, blk, call, ws, g):
    p, i, k = call.params, blk.index, blk.k
    N = _backend.kernels("norm")
    gamma, dgamma, dbeta, db = p[f"gamma{k}"], g[f"gamma{k}"], g[f"beta{k}"], g[f"b{k}"]

    def backward(dr, nt):
        K.relu_backward_inplace(dr, ws.r[i], nt)
        dz = ws.tmp[i] if dr is ws.dh[i] else ws.dh[i]   # layernorm backward cannot write in place
        N.layernorm_backward(dr, ws.z[i], ws.mean[i], ws.inv_std[i], gamma, dz, dgamma, dbeta,
                             _backend.threads_for(dz.size, N.GRAIN))
        K.bias_grad(dz, db, nt)
        return dz
    return backward


def _act_forward(K, blk, call, ws, batch):
    """z += b (kept: the pre-activation), then r = f(z) by the activation's compiled kernel."""
    A, act = _backend.kernels(FAMILY), blk.activation
    z, r, b = ws.z[blk.index], ws.r[blk.index], call.params[f"b{blk.k}"]
    f, value = getattr(A, act.spec.forward_kernel), act.value

    def forward(nt):
        np.add(z, b, out=z)
        f(z.reshape(-1), value, r.reshape(-1), _backend.threads_for(z.size, A.GRAIN))
    return forward


def _act_mask(blk, ws, x):
    """mask(dr): dr *= f' in place by the activation's compiled kernel, from its input `x` or its
    output r, as the activation saves."""
    A, act = _backend.kernels(FAMILY), blk.activation
    saved = (x if act.spec.saves == "x" else ws.r[blk.index]).reshape(-1)
    f, value, grain = getattr(A, act.spec.backward_kernel), act.value, A.GRAIN

    def mask(dr):
        flat = dr.reshape(-1)
        f(flat, saved, value, flat, _backend.threads_for(dr.size, grain))
        return dr
    return mask


def _act_backward(K, blk, call, ws, g):
    """dr *= f' in place (from z or r, as the activation saves), then the bias gradient."""
    mask, db = _act_mask(blk, ws, ws.z[blk.index]), g.get(f"b{blk.k}")

    def backward(dr, nt):
        mask(dr)
        if db is not None:
            K.bias_grad(dr, db, nt)
        return dr
    return backward


def _norm_act_forward(K, blk, call, ws, batch):
    """z += b (kept: the norm's input), y = norm(z) by the norm kernel, r = f(y) by the activation's
    kernel; y is ws.tmp when the activation's backward needs its input, else r itself (in place)."""
    p, i, k = call.params, blk.index, blk.k
    N, A, act = _backend.kernels("norm"), _backend.kernels(FAMILY), blk.activation
    z, r = ws.z[i], ws.r[i]
    y = ws.tmp[i] if act.spec.saves == "x" else r
    b, gamma, beta = p[f"b{k}"], p[f"gamma{k}"], p[f"beta{k}"]
    eps, momentum, rm, rv = call.norm_state[i]
    f, value = getattr(A, act.spec.forward_kernel), act.value
    if blk.norm.name == "layernorm":
        def norm(nn):
            N.layernorm_forward(z, gamma, beta, eps, y, ws.mean[i], ws.inv_std[i], nn)
    elif batch:
        def norm(nn):
            N.batchnorm_train_forward(z, gamma, beta, eps, momentum, y, ws.mean[i], ws.inv_std[i], rm, rv, nn)
    else:
        def norm(nn):
            N.batchnorm_test_forward(z, gamma, beta, rm, rv, eps, y, nn)

    def forward(nt):
        np.add(z, b, out=z)
        norm(_backend.threads_for(z.size, N.GRAIN))
        f(y.reshape(-1), value, r.reshape(-1), _backend.threads_for(y.size, A.GRAIN))
    return forward


def _norm_act_backward(K, blk, call, ws, g):
    """dr *= f' in place, then the norm's backward into a buffer other than dr, then the bias gradient."""
    p, i, k = call.params, blk.index, blk.k
    N, mask = _backend.kernels("norm"), _act_mask(blk, ws, ws.tmp[i])
    norm_backward = N.layernorm_backward if blk.norm.name == "layernorm" else N.batchnorm_backward
    gamma, dgamma, dbeta, db = p[f"gamma{k}"], g[f"gamma{k}"], g[f"beta{k}"], g[f"b{k}"]

    def backward(dr, nt):
        mask(dr)
        dz = ws.tmp[i] if dr is ws.dh[i] else ws.dh[i]   # tmp is free again: f' has read it
        norm_backward(dr, ws.z[i], ws.mean[i], ws.inv_std[i], gamma, dz, dgamma, dbeta,
                      _backend.threads_for(dz.size, N.GRAIN))
        K.bias_grad(dz, db, nt)
        return dz
    return backward


def _frozen_bn_backward(K, blk, call, ws):
    """A frozen batchnorm block below which a layer trains: dr *= f' in place (ReLU: its mask), then
    dr *= gamma / sqrt(running_var + eps) in place; no parameter gradient (fastopt.nn.frozen_norm)."""
    p, i, k = call.params, blk.index, blk.k
    eps, _, _, rv = call.norm_state[i]
    gamma = p[f"gamma{k}"]
    if blk.activation.name == "relu":
        relu = _plain_backward(K, blk, call, ws, {})            # no bias gradient: the mask only

        def backward(dr, nt):
            return inference_backward(relu(dr, nt), gamma, rv, eps, out=dr)
        return backward
    mask = _act_mask(blk, ws, ws.tmp[i])                         # the norm's output: tmp (_norm_act_forward)

    def backward(dr, nt):
        return inference_backward(mask(dr), gamma, rv, eps, out=dr)
    return backward


# ReLU keeps the fused bias+relu / batchnorm+relu kernels of _mlp_kernels; the other activations
# run their own compiled kernels after the bias add (and the norm kernel).
FUSED = {
    (None, "relu"): (_plain_forward, _plain_backward),
    ("batchnorm", "relu"): (_bn_forward, _bn_backward),
    ("layernorm", "relu"): (_ln_forward, _ln_backward),
    **{(None, name): (_act_forward, _act_backward) for name in ACTIVATIONS if name != "relu"},
    **{(norm, name): (_norm_act_forward, _norm_act_backward)
       for norm in ("batchnorm", "layernorm") for name in ACTIVATIONS if name != "relu"},
}


def needs_scratch(normalization, activation):
    """Whether the workspace needs its `tmp` buffers for this (normalization, activation)."""
    return normalization == "layernorm" or (normalization is not None and activation != "relu")


def _key(blk):
    return (None if blk.norm is None else blk.norm.name, blk.activation.name)


def supports(blocks):
    """Whether every hidden block has fused kernels (else the model runs fastopt.nn.run_layers)."""
    return all(_key(blk) in FUSED for blk in blocks if isinstance(blk, Hidden))


# ---------------------------------------------------------------- the plan of a step


def plan_key(call, frozen):
    """Everything a Plan binds besides the workspace, as objects compared by identity."""
    grads = call.grads
    bound = (grads,) if grads is None or type(grads) is FlatArrays else (grads, *grads.values())
    return (_backend.kernels("mlp"), call.train, frozen, call.params, *bound,
            *[v for state in call.norm_state for v in state])


def _scratch_grads(blk, params):
    """Where a frozen layernorm block's kernels put the sums they need internally (never returned); a
    block without a norm needs none (its backward then skips the bias gradient)."""
    if blk.norm is None:
        return {}
    return {name: np.empty_like(params[name]) for name in (f"gamma{blk.k}", f"beta{blk.k}", f"b{blk.k}")}


class _Layer:
    __slots__ = ("index", "W", "z", "r", "size", "dropout", "forward", "backward", "dW", "dh", "below")


class Plan:
    """One step's kernel calls with their arrays bound (module docstring). Built by ``loss`` for a
    workspace and the objects of ``plan_key``; ``run(call)`` reads only X, y and the dropout dict."""

    def __init__(self, blocks, call, ws, frozen, key):
        self.key = key
        K = self.K = _backend.kernels("mlp")
        p, g = call.params, call.grads
        *hidden, out = blocks
        trainable = [blk.k - 1 for blk in blocks if blk.k - 1 not in frozen]   # affine-layer indices
        # The backward runs from the output down to the lowest trainable layer, and stops there.
        self.lowest = min(trainable) if trainable else len(blocks)
        self.hidden = []
        for blk in hidden:
            layer = _Layer()
            i = layer.index = blk.index
            layer.W, layer.z, layer.r, layer.size = p[f"W{blk.k}"], ws.z[i], ws.r[i], ws.z[i].size
            layer.dropout = blk.dropout and call.train
            build_forward, build_backward = FUSED[_key(blk)]
            inference = runs_inference(blk, frozen)
            layer.forward = build_forward(K, blk, call, ws, call.train and not inference)
            layer.backward = layer.dW = None
            layer.dh = ws.dh[i]
            if call.train and i >= self.lowest:
                trains = i not in frozen
                if inference:
                    layer.backward = _frozen_bn_backward(K, blk, call, ws)
                else:
                    layer.backward = build_backward(K, blk, call, ws, g if trains else _scratch_grads(blk, p))
                layer.dW = g[f"W{blk.k}"] if trains else None
            layer.below = i > self.lowest             # the gradient goes on to the layer below
            self.hidden.append(layer)
        self.W_out, self.scores, self.dscores = p[f"W{out.k}"], ws.scores, ws.dscores
        self.b_out = p[f"b{out.k}"]
        trains_out = out.k - 1 not in frozen
        if call.train:
            self.dW_out = g[f"W{out.k}"] if trains_out else None
            self.db_out = g[f"b{out.k}"] if trains_out else np.empty_like(self.b_out)
            ct = _ctype(self.scores)
            hard = _specialized(K.bias_softmax_loss_grad, ct, "int64_t" if np.dtype(np.intp).itemsize == 8
                                else "int32_t")
            soft = _specialized(K.bias_softmax_soft_loss_grad, ct)
            scores, b, dscores, db = (_bound(K, a) for a in (self.scores, self.b_out, self.dscores, self.db_out))
            # y: labels (1-D) or soft targets (2-D, the model's dtype: _Call checked and cast them)
            self.softmax = lambda y, nt: (hard if y.ndim == 1 else soft)(scores, b, y, dscores, db, nt)
        self.out_below = bool(self.hidden) and len(blocks) - 1 > self.lowest

    def run(self, call):
        """Scores (test mode: a copy), or the data loss with the gradients written (see the class)."""
        threads_for, grain = _backend.threads_for, self.K.GRAIN
        if _backend.get_num_threads() == 1:     # every kernel on one thread: no count to derive
            threads_for = _one_thread
        x, inputs, drop_caches = call.X, [], []
        for layer in self.hidden:
            inputs.append(x)
            np.matmul(x, layer.W, out=layer.z)
            layer.forward(threads_for(layer.size, grain))
            x = layer.r
            if layer.dropout:
                x, cache = layers.dropout_forward(x, call.dropout_param)
                drop_caches.append(cache)
            else:
                drop_caches.append(None)
        scores = self.scores
        np.matmul(x, self.W_out, out=scores)
        if not call.train:
            np.add(scores, self.b_out, out=scores)
            return scores.copy()       # the workspace is overwritten by the next call

        dz = self.dscores              # grad wrt the output layer's pre-activation
        data_loss = self.softmax(call.y, threads_for(scores.size, grain))
        if self.dW_out is not None:
            np.matmul(x.T, dz, out=self.dW_out)
        if not self.out_below:
            return float(data_loss)
        upper_W = self.W_out
        for layer in reversed(self.hidden):
            dh = layer.dh              # grad wrt the block's output
            np.matmul(dz, upper_W.T, out=dh)
            cache = drop_caches[layer.index]
            if cache is not None:
                dh = layers.dropout_backward(dh, cache)
            dz = layer.backward(dh, threads_for(dh.size, grain))
            if layer.dW is not None:
                np.matmul(inputs[layer.index].T, dz, out=layer.dW)
            if not layer.below:
                break
            upper_W = layer.W
        return float(data_loss)


def _one_thread(work, grain):
    return 1


def loss(blocks, call, ws, frozen=frozenset()):
    """Scores (test mode: a copy), or the data loss with the trainable layers' gradients written
    into call.grads (frozen layers: none; see the module docstring)."""
    key = plan_key(call, frozen)
    plan = ws.plans.get(call.train)       # one per mode: training and test calls may alternate
    if plan is None or len(plan.key) != len(key) or not all(map(operator.is_, plan.key, key)):
        plan = ws.plans[call.train] = Plan(blocks, call, ws, frozen, key)
    return plan.run(call)
