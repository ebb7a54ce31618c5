"""A frozen batchnorm layer runs in inference mode, in training calls too.

As Keras's ``BatchNormalization(trainable=False)`` (TF >= 2.0) and torchvision's FrozenBatchNorm2d:
a frozen hidden layer (``model.frozen``) whose norm keeps running statistics (batchnorm) normalizes
with them in every call, never updates them, and its backward is that of a fixed affine map,

    y = gamma * (x - running_mean) / sqrt(running_var + eps) + beta,   dx = dy * gamma / sqrt(running_var + eps),

so the layers above it train on the statistics they are tested with. Layernorm has no running
statistics and is unaffected (a frozen layernorm layer normalizes each row as before). A frozen
layer that has no running statistics yet gets mean 0 and variance 1 (torch's and Keras's initial
values; CS231n's zero variance would scale by 1 / sqrt(eps)): fastopt.nn.fully_connected creates them.
Both executions (fastopt.nn.run_layers, fastopt.nn.run_fused) take these two functions from here.
"""
import numpy as np

__all__ = ["runs_inference", "inference_backward", "initial_statistics"]


def runs_inference(blk, frozen):
    """Whether hidden block `blk` normalizes with its running statistics in a training call."""
    return blk.norm is not None and blk.norm.running and blk.index in frozen


def inference_backward(dout, gamma, running_var, eps, out=None):
    """dx = dout * gamma / sqrt(running_var + eps) per feature (into `out`, which may be dout).
    inv_std in float64, then the model's dtype, as the test-mode kernels compute it."""
    scale = gamma * (1.0 / np.sqrt(running_var.astype(np.float64) + eps)).astype(gamma.dtype)
    return np.multiply(dout, scale, out=out)


def initial_statistics(d, dtype, frozen):
    """(running_mean, running_var) of a batchnorm layer that has none yet: CS231n's zeros, except a
    frozen layer's variance, ones (it normalizes with them at once)."""
    return np.zeros(d, dtype), (np.ones if frozen else np.zeros)(d, dtype)
