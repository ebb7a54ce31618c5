"""fastopt: fused, in-place optimizer and normalization kernels for training neural networks with NumPy.

Two API families on the same compiled kernels: torch.optim-style classes (``fastopt.Adam``, ...) and
CS231n-style functions (``fastopt.optim.adam(w, dw, config)``, ``fastopt.layers.batchnorm_forward``),
plus a NumPy MLP (``fastopt.nn``), a ``Solver``, gradient checking and data loaders.
"""
from ._backend import backend, beside_blas, get_num_threads, set_backend, set_num_threads
from ._version import __version__
from .layers._operands import output_cache_stats, set_output_cache_limit
from .nn import FullyConnectedNet, TwoLayerNet
from .optim import SGD, Adadelta, Adagrad, Adam, Adamax, AdamW, LBFGS, Lion, NAdam, RAdam, RMSprop, clip_grad_norm_
from .solver import Solver

__all__ = [
    "backend", "set_backend", "get_num_threads", "set_num_threads", "beside_blas", "__version__",
    "SGD", "Adagrad", "RMSprop", "Adam", "AdamW", "NAdam", "RAdam", "Adamax", "Adadelta", "Lion", "LBFGS",
    "clip_grad_norm_", "FullyConnectedNet", "TwoLayerNet", "Solver",
    "set_output_cache_limit", "output_cache_stats",
]
