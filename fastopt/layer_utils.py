"""CS231n's "sandwich" layers (cs231n/layer_utils.py): common layer sequences as one forward/backward.

    out, cache = affine_relu_forward(x, w, b)
    dx, dw, db = affine_relu_backward(dout, cache)

    out, cache = affine_bn_relu_forward(x, w, b, gamma, beta, bn_param)
    dx, dw, db, dgamma, dbeta = affine_bn_relu_backward(dout, cache)

    affine_ln_relu_forward / affine_ln_relu_backward: the same with layernorm (ln_param).

They compose the layer functions of fastopt.layers (which validate their arguments and convert
read-only operands as NumPy would). CS231n's conv sandwiches need conv layers, which fastopt has not.
"""
from .layers import (affine_backward, affine_forward, affine_relu_backward, affine_relu_forward,
                     batchnorm_backward, batchnorm_forward, layernorm_backward, layernorm_forward,
                     relu_backward, relu_forward)

__all__ = ["affine_relu_forward", "affine_relu_backward", "affine_bn_relu_forward",
           "affine_bn_relu_backward", "affine_ln_relu_forward", "affine_ln_relu_backward"]


def _affine_norm_relu_forward(norm_forward, x, w, b, gamma, beta, param):
    a, fc_cache = affine_forward(x, w, b)
    an, norm_cache = norm_forward(a, gamma, beta, param)
    out, relu_cache = relu_forward(an)
    return out, (fc_cache, norm_cache, relu_cache)


def _affine_norm_relu_backward(norm_backward, dout, cache):
    fc_cache, norm_cache, relu_cache = cache
    dan = relu_backward(dout, relu_cache)
    da, dgamma, dbeta = norm_backward(dan, norm_cache)
    dx, dw, db = affine_backward(da, fc_cache)
    return dx, dw, db, dgamma, dbeta


def affine_bn_relu_forward(x, w, b, gamma, beta, bn_param):
    """relu(batchnorm(affine(x, w, b), gamma, beta, bn_param)). Returns (out, cache)."""
    return _affine_norm_relu_forward(batchnorm_forward, x, w, b, gamma, beta, bn_param)


def affine_bn_relu_backward(dout, cache):
    """Returns (dx, dw, db, dgamma, dbeta) of affine_bn_relu_forward (training mode)."""
    return _affine_norm_relu_backward(batchnorm_backward, dout, cache)


def affine_ln_relu_forward(x, w, b, gamma, beta, ln_param):
    """relu(layernorm(affine(x, w, b), gamma, beta, ln_param)). Returns (out, cache)."""
    return _affine_norm_relu_forward(layernorm_forward, x, w, b, gamma, beta, ln_param)


def affine_ln_relu_backward(dout, cache):
    """Returns (dx, dw, db, dgamma, dbeta) of affine_ln_relu_forward."""
    return _affine_norm_relu_backward(layernorm_backward, dout, cache)
