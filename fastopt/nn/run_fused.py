"""The fused execution of a FullyConnectedNet description: workspaces and fused kernels.

The same blocks and the same mathematics as fastopt.nn.run_layers, but every intermediate goes
into preallocated buffers (fastopt.nn.workspace), matmuls write with ``out=`` through transposed
views, no gradient is computed for the input X, bias+norm+ReLU and softmax-loss+gradient are single
fused kernels (fastopt._mlp_kernels), the other activations run their compiled kernels
(fastopt._activation_kernels, in place where their backward allows) after the bias add and the
norm kernel, and the gradients are written straight into ``call.grads``.
Dropout is the layer function itself (its mask is drawn inside its kernel; nothing to fuse).
The caller runs it inside ``fastopt.beside_blas()`` (one kernel thread while NumPy's BLAS runs
several). Tests check both executions agree to ~1e-12 in float64.

``FUSED`` holds, per (normalization, activation) of a hidden block, the forward (train and eval)
and backward kernels; ``supports(blocks)`` says whether every block has an entry.
"""
import numpy as np

from .. import _backend, layers
from ..layers.activations import ACTIVATIONS, FAMILY
from .blocks import Hidden

__all__ = ["FUSED", "supports", "loss"]


# ---------------------------------------------------------------- per (norm, activation) kernels
# forward(K, blk, call, ws, z, r, nt): z = x @ W (already there) -> r = relu(norm(z + b)).
# backward(K, blk, call, ws, dr, nt) -> grad wrt z (may be dr itself), param grads into call.grads.


def _plain_forward(K, blk, call, ws, z, r, nt):
    K.bias_relu_forward(z, call.params[f"b{blk.k}"], r, nt)


def _plain_backward(K, blk, call, ws, dr, nt):
    K.relu_bias_backward(dr, ws.r[blk.index], call.grads[f"b{blk.k}"], nt)
    return dr


def _bn_forward(K, blk, call, ws, z, r, nt):
    p, i, k = call.params, blk.index, blk.k
    eps, momentum, rm, rv = call.norm_state[i]
    if call.train:
        K.batchnorm_relu_forward(z, p[f"b{k}"], p[f"gamma{k}"], p[f"beta{k}"], eps, momentum, rm, rv,
                                 r, ws.mean[i], ws.inv_std[i], nt)
    else:
        K.batchnorm_relu_eval(z, p[f"b{k}"], p[f"gamma{k}"], p[f"beta{k}"], rm, rv, eps, r, nt)


def _bn_backward(K, blk, call, ws, dr, nt):
    p, g, i, k = call.params, call.grads, blk.index, blk.k
    dz = ws.dh[i]                  # the kernel may write in place (dr is dh without dropout)
    K.relu_batchnorm_backward(dr, ws.r[i], ws.z[i], p[f"b{k}"], p[f"gamma{k}"], ws.mean[i],
                              ws.inv_std[i], dz, g[f"gamma{k}"], g[f"beta{k}"], g[f"b{k}"], nt)
    return dz


def _ln_forward(K, blk, call, ws, z, r, nt):
    p, i, k = call.params, blk.index, blk.k
    N = _backend.kernels("norm")
    np.add(z, p[f"b{k}"], out=z)               # the layernorm input, kept for backward
    N.layernorm_forward(z, p[f"gamma{k}"], p[f"beta{k}"], call.norm_state[i][0], r, ws.mean[i],
                        ws.inv_std[i], _backend.threads_for(z.size, N.GRAIN))
    np.maximum(r, 0, out=r)


def _ln_backward(K, blk, call, ws, dr, nt):
    p, g, i, k = call.params, call.grads, blk.index, blk.k
    N = _backend.kernels("norm")
    K.relu_backward_inplace(dr, ws.r[i], nt)
    dz = ws.tmp[i] if dr is ws.dh[i] else ws.dh[i]   # layernorm backward cannot write in place
    N.layernorm_backward(dr, ws.z[i], ws.mean[i], ws.inv_std[i], p[f"gamma{k}"], dz,
                         g[f"gamma{k}"], g[f"beta{k}"], _backend.threads_for(dz.size, N.GRAIN))
    K.bias_grad(dz, g[f"b{k}"], nt)
    return dz


def _act_forward(K, blk, call, ws, z, r, nt):
    """z += b (kept: the pre-activation), then r = f(z) by the activation's compiled kernel."""
    A, act = _backend.kernels(FAMILY), blk.activation
    np.add(z, call.params[f"b{blk.k}"], out=z)
    getattr(A, act.spec.forward_kernel)(z.reshape(-1), act.value, r.reshape(-1), _backend.threads_for(z.size, A.GRAIN))


def _act_backward(K, blk, call, ws, dr, nt):
    """dr *= f' in place (from z or r, as the activation saves), then the bias gradient."""
    A, act, i = _backend.kernels(FAMILY), blk.activation, blk.index
    saved = ws.z[i] if act.spec.saves == "x" else ws.r[i]
    getattr(A, act.spec.backward_kernel)(dr.reshape(-1), saved.reshape(-1), act.value, dr.reshape(-1),
                                         _backend.threads_for(dr.size, A.GRAIN))
    K.bias_grad(dr, call.grads[f"b{blk.k}"], nt)
    return dr


def _norm_act_forward(K, blk, call, ws, z, r, nt):
    """z += b (kept: the norm's input), y = norm(z) by the norm kernel, r = f(y) by the activation's
    kernel; y is ws.tmp when the activation's backward needs its input, else r itself (in place)."""
    p, i, k = call.params, blk.index, blk.k
    N, A, act = _backend.kernels("norm"), _backend.kernels(FAMILY), blk.activation
    np.add(z, p[f"b{k}"], out=z)
    y = ws.tmp[i] if act.spec.saves == "x" else r
    nn = _backend.threads_for(z.size, N.GRAIN)
    eps, momentum, rm, rv = call.norm_state[i]
    if blk.norm.name == "layernorm":
        N.layernorm_forward(z, p[f"gamma{k}"], p[f"beta{k}"], eps, y, ws.mean[i], ws.inv_std[i], nn)
    elif call.train:
        N.batchnorm_train_forward(z, p[f"gamma{k}"], p[f"beta{k}"], eps, momentum, y, ws.mean[i], ws.inv_std[i],
                                  rm, rv, nn)
    else:
        N.batchnorm_test_forward(z, p[f"gamma{k}"], p[f"beta{k}"], rm, rv, eps, y, nn)
    getattr(A, act.spec.forward_kernel)(y.reshape(-1), act.value, r.reshape(-1), _backend.threads_for(y.size, A.GRAIN))


def _norm_act_backward(K, blk, call, ws, dr, nt):
    """dr *= f' in place, then the norm's backward into a buffer other than dr, then the bias gradient."""
    p, g, i, k = call.params, call.grads, blk.index, blk.k
    N, A, act = _backend.kernels("norm"), _backend.kernels(FAMILY), blk.activation
    saved = ws.tmp[i] if act.spec.saves == "x" else ws.r[i]
    getattr(A, act.spec.backward_kernel)(dr.reshape(-1), saved.reshape(-1), act.value, dr.reshape(-1),
                                         _backend.threads_for(dr.size, A.GRAIN))
    dz = ws.tmp[i] if dr is ws.dh[i] else ws.dh[i]   # tmp is free again: f' has read it
    backward = N.layernorm_backward if blk.norm.name == "layernorm" else N.batchnorm_backward
    backward(dr, ws.z[i], ws.mean[i], ws.inv_std[i], p[f"gamma{k}"], dz, g[f"gamma{k}"], g[f"beta{k}"],
             _backend.threads_for(dz.size, N.GRAIN))
    K.bias_grad(dz, g[f"b{k}"], nt)
    return dz


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


# ---------------------------------------------------------------- the execution


def loss(blocks, call, ws):
    """Scores (test mode: a copy), or the data loss with every gradient written into call.grads."""
    K = _backend.kernels("mlp")
    p, g = call.params, call.grads
    *hidden, out = blocks
    inputs, drop_caches = [], []   # each block's input (for dW), dropout caches
    x = call.X
    for blk in hidden:
        inputs.append(x)
        z, r = ws.z[blk.index], ws.r[blk.index]
        np.matmul(x, p[f"W{blk.k}"], out=z)
        FUSED[_key(blk)][0](K, blk, call, ws, z, r, _backend.threads_for(z.size, K.GRAIN))
        drop_cache = None
        if blk.dropout and call.train:
            r, drop_cache = layers.dropout_forward(r, call.dropout_param)
        drop_caches.append(drop_cache)
        x = r
    inputs.append(x)
    scores = ws.scores
    np.matmul(x, p[f"W{out.k}"], out=scores)
    np.add(scores, p[f"b{out.k}"], out=scores)
    if not call.train:
        return scores.copy()       # the workspace is overwritten by the next call

    dz = ws.dscores                # grad wrt the output layer's pre-activation
    nt = _backend.threads_for(scores.size, K.GRAIN)
    data_loss = K.softmax_loss_grad(scores, call.y, dz, nt)
    K.bias_grad(dz, g[f"b{out.k}"], nt)
    np.matmul(inputs[-1].T, dz, out=g[f"W{out.k}"])
    upper = out
    for blk in reversed(hidden):
        dh = ws.dh[blk.index]      # grad wrt the block's output
        np.matmul(dz, p[f"W{upper.k}"].T, out=dh)
        if drop_caches[blk.index] is not None:
            dh = layers.dropout_backward(dh, drop_caches[blk.index])
        dz = FUSED[_key(blk)][1](K, blk, call, ws, dh, _backend.threads_for(dh.size, K.GRAIN))
        np.matmul(inputs[blk.index].T, dz, out=g[f"W{blk.k}"])
        upper = blk
    return float(data_loss)
