"""The NumPy MLP (CS231n's FullyConnectedNet on fastopt's layers) and its weight initialisation."""
from .fully_connected import FullyConnectedNet
from .init import WEIGHT_INITS, init_weight, weight_std

__all__ = ["FullyConnectedNet", "init_weight", "weight_std", "WEIGHT_INITS"]
