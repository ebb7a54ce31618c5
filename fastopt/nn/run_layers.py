"""The readable execution of a FullyConnectedNet description: one layer-function call per layer.

This is the definition of the model's mathematics, in CS231n's words (``affine_forward``,
``batchnorm_forward``, ``relu_forward``, ``dropout_forward``, ``softmax_loss`` and their backwards),
and the path for blocks the fused execution has no kernels for. It reads the validated call
(fastopt.nn.fully_connected._Call) and writes the gradients into ``call.grads``.
"""
from .. import layers

__all__ = ["loss"]


def _hidden_forward(blk, call, h):
    p = call.params
    k = blk.k
    a, fc_cache = layers.affine_forward(h, p[f"W{k}"], p[f"b{k}"])
    norm_cache = None
    if blk.norm is not None:
        a, norm_cache = blk.norm.forward(a, p[f"gamma{k}"], p[f"beta{k}"], call.norm_params[blk.index])
    out, act_cache = blk.activation.forward(a)
    drop_cache = None
    if blk.dropout and call.train:
        out, drop_cache = layers.dropout_forward(out, call.dropout_param)
    return out, (fc_cache, norm_cache, act_cache, drop_cache)


def _put(grads, **named):
    """Write gradients into the caller's arrays (never rebind a name: out= may be a plain dict)."""
    for name, value in named.items():
        grads[name][...] = value


def _hidden_backward(blk, dout, cache, grads):
    k = blk.k
    fc_cache, norm_cache, act_cache, drop_cache = cache
    if drop_cache is not None:
        dout = layers.dropout_backward(dout, drop_cache)
    da = blk.activation.backward(dout, act_cache)
    if norm_cache is not None:
        da, dgamma, dbeta = blk.norm.backward(da, norm_cache)
        _put(grads, **{f"gamma{k}": dgamma, f"beta{k}": dbeta})
    dx, dw, db = layers.affine_backward(da, fc_cache)
    _put(grads, **{f"W{k}": dw, f"b{k}": db})
    return dx


def loss(blocks, call):
    """Scores (test mode), or the data loss with every gradient written into call.grads."""
    *hidden, out = blocks
    caches = []
    h = call.X
    for blk in hidden:
        h, cache = _hidden_forward(blk, call, h)
        caches.append(cache)
    scores, out_cache = layers.affine_forward(h, call.params[f"W{out.k}"], call.params[f"b{out.k}"])
    if not call.train:
        return scores
    data_loss, dscores = layers.softmax_loss(scores, call.y)
    dh, dw, db = layers.affine_backward(dscores, out_cache)
    _put(call.grads, **{f"W{out.k}": dw, f"b{out.k}": db})
    for blk, cache in zip(reversed(hidden), reversed(caches)):
        dh = _hidden_backward(blk, dh, cache, call.grads)
    return data_loss
