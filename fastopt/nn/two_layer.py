"""CS231n's 2019+ ``TwoLayerNet``: affine - relu - affine - softmax, as a FullyConnectedNet."""
import numpy as np

from .._validation import check_scalar
from .fully_connected import FullyConnectedNet

__all__ = ["TwoLayerNet"]


class TwoLayerNet(FullyConnectedNet):
    """TwoLayerNet(input_dim=3072, hidden_dim=100, num_classes=10, weight_scale=1e-3, reg=0.0).

    CS231n's signature and defaults; float64 like CS231n's (dtype= and rng= are fastopt's keyword
    options). Weights W1 (input_dim, hidden_dim), W2 (hidden_dim, num_classes) from np.random.randn
    (NumPy's global state) times weight_scale, biases zero; ``model.reg`` may be changed between calls.
    Everything else (params, grads, loss(X, y=None, *, out=None), state_dict) is FullyConnectedNet's.
    """

    def __init__(self, input_dim=3 * 32 * 32, hidden_dim=100, num_classes=10, weight_scale=1e-3, reg=0.0,
                 *, dtype=np.float64, rng=None):
        hidden_dim = check_scalar("hidden_dim", hidden_dim, low=1, integer=True)
        super().__init__([hidden_dim], input_dim=input_dim, num_classes=num_classes, reg=reg,
                         weight_scale=weight_scale, dtype=dtype, rng=rng)

    def __repr__(self):
        return (f"TwoLayerNet(input_dim={self.input_dim}, hidden_dim={self.hidden_dims[0]}, "
                f"num_classes={self.num_classes}, weight_scale={self.weight_scale}, reg={self.reg})")
