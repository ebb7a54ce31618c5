"""The readable execution of a FullyConnectedNet description: one layer-function call per layer.

This is the definition of the model's mathematics, in CS231n's words (``affine_forward``,
``batchnorm_forward``, ``relu_forward``, ``dropout_forward``, ``softmax_loss`` and their backwards),
and the path for blocks the fused execution has no kernels for. It reads the validated call
(fastopt.nn.fully_connected._Call) and writes the gradients into ``call.grads``. A frozen batchnorm
layer runs in inference mode (fastopt.nn.frozen_norm).
"""
from .. import layers
from .frozen_norm import inference_backward, runs_inference

__all__ = ["loss"]


def _hidden_forward(blk, call, h, frozen):
    p = call.params
    k = blk.k
    a, fc_cache = layers.affine_forward(h, p[f"W{k}"], p[f"b{k}"])
    norm_cache = None
    if blk.norm is not None:
        param = call.norm_params[blk.index]
        if call.train and runs_inference(blk, frozen):    # the test-mode forward: statistics untouched
            param = {**param, "mode": "test"}
        a, norm_cache = blk.norm.forward(a, p[f"gamma{k}"], p[f"beta{k}"], param)
    out, act_cache = blk.activation.forward(a)
    drop_cache = None
    if blk.dropout and call.train:
        out, drop_cache = layers.dropout_forward(out, call.dropout_param)
    return out, (fc_cache, norm_cache, act_cache, drop_cache)


def _put(grads, **named):
    """Write gradients into the caller's arrays (never rebind a name: out= may be a plain dict)."""
    for name, value in named.items():
        grads[name][...] = value


def _affine_backward(dout, fc_cache, want_dx, want_params):
    """affine_backward's (dx, dw, db), each None when not wanted (a frozen layer: no dw, db; the
    lowest trainable layer: no dx), by the same operations as layers.affine_backward."""
    if want_dx and want_params:
        return layers.affine_backward(dout, fc_cache)
    x, w, _ = fc_cache
    dx = (dout @ w.T).reshape(x.shape) if want_dx else None
    if not want_params:
        return dx, None, None
    return dx, x.reshape(x.shape[0], w.shape[0]).T @ dout, dout.sum(axis=0)


def _hidden_backward(blk, dout, cache, call, frozen, want_dx):
    k, grads, trains = blk.k, call.grads, blk.index not in frozen
    fc_cache, norm_cache, act_cache, drop_cache = cache
    if drop_cache is not None:
        dout = layers.dropout_backward(dout, drop_cache)
    da = blk.activation.backward(dout, act_cache)
    if runs_inference(blk, frozen):                      # frozen batchnorm: a fixed affine map
        eps, _, _, running_var = call.norm_state[blk.index]
        da = inference_backward(da, call.params[f"gamma{k}"], running_var, eps)
    elif norm_cache is not None:
        da, dgamma, dbeta = blk.norm.backward(da, norm_cache)
        if trains:
            _put(grads, **{f"gamma{k}": dgamma, f"beta{k}": dbeta})
    dx, dw, db = _affine_backward(da, fc_cache, want_dx, trains)
    if trains:
        _put(grads, **{f"W{k}": dw, f"b{k}": db})
    return dx


def loss(blocks, call, frozen=frozenset()):
    """Scores (test mode), or the data loss with the trainable layers' gradients written into
    call.grads; `frozen` layers (affine-layer indices) get none (their batchnorm in inference mode),
    and the backward pass stops at the lowest trainable layer."""
    *hidden, out = blocks
    caches = []
    h = call.X
    for blk in hidden:
        h, cache = _hidden_forward(blk, call, h, frozen)
        caches.append(cache)
    scores, out_cache = layers.affine_forward(h, call.params[f"W{out.k}"], call.params[f"b{out.k}"])
    if not call.train:
        return scores
    data_loss, dscores = layers.softmax_loss(scores, call.y)
    trainable = [blk.k - 1 for blk in blocks if blk.k - 1 not in frozen]
    lowest = min(trainable) if trainable else len(blocks)
    trains = out.k - 1 not in frozen
    dh, dw, db = _affine_backward(dscores, out_cache, out.k - 1 > lowest, trains)
    if trains:
        _put(call.grads, **{f"W{out.k}": dw, f"b{out.k}": db})
    for blk, cache in zip(reversed(hidden), reversed(caches)):
        if blk.index < lowest:
            break
        dh = _hidden_backward(blk, dh, cache, call, frozen, blk.index > lowest)
    return data_loss
