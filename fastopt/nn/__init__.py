"""The NumPy MLP (CS231n's FullyConnectedNet and TwoLayerNet on fastopt's layers) and its weight init."""
from .fully_connected import FullyConnectedNet
from .init import WEIGHT_INITS, init_weight, weight_std
from .two_layer import TwoLayerNet

__all__ = ["FullyConnectedNet", "TwoLayerNet", "init_weight", "weight_std", "WEIGHT_INITS"]
