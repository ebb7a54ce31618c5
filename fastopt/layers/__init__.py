"""CS231n-compatible layer functions: forward(...) -> (out, cache), backward(dout, cache) -> grads."""
from .core import *  # noqa: F401,F403
from .dropout import *  # noqa: F401,F403
from .losses import *  # noqa: F401,F403
from .normalization import *  # noqa: F401,F403
from .activations import (elu_backward, elu_forward, leaky_relu_backward,  # noqa: F401
                          leaky_relu_forward, sigmoid_backward, sigmoid_forward, tanh_backward,
                          tanh_forward)
from . import activations, core, dropout, losses, normalization

# The activation layer functions (relu's are core's: one implementation, fastopt.layers.activations);
# the table itself stays in fastopt.layers.activations.
__all__ = list(dict.fromkeys(core.__all__ + activations.LAYER_FUNCTIONS + dropout.__all__ + losses.__all__
                             + normalization.__all__))
