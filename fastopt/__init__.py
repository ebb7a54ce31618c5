"""fastopt: fused, in-place optimizer and normalization kernels for training neural networks with NumPy."""
from ._backend import backend, get_num_threads, set_backend, set_num_threads

__version__ = "0.1.0"

__all__ = ["backend", "set_backend", "get_num_threads", "set_num_threads", "__version__"]
