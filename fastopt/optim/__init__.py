"""Optimizers over NumPy arrays, updated in place by fused kernels.

Two APIs on the same kernels:

* torch.optim-style classes: ``SGD``, ``Adagrad``, ``RMSprop``, ``Adam``, ``AdamW`` with param
  groups, ``step(grads)``, ``state_dict()`` / ``load_state_dict()``; ``save_state`` /
  ``load_state`` store that state in an ``.npz`` file.
* CS231n-style functions ``update(w, dw, config=None) -> (next_w, config)``: ``sgd``,
  ``sgd_momentum``, ``nesterov_momentum``, ``adagrad``, ``rmsprop``, ``adam``; ``RULES`` maps names
  to them and ``get_rule("adam")`` looks one up.
"""
from ._adagrad import Adagrad
from ._adam import Adam, AdamW
from ._base import Optimizer
from ._rmsprop import RMSprop
from ._serialize import load_state, save_state, state_from_arrays, state_to_arrays
from ._sgd import SGD
from .functional import RULES, adagrad, adam, get_rule, nesterov_momentum, rmsprop, sgd, sgd_momentum

__all__ = ["Optimizer", "SGD", "Adagrad", "RMSprop", "Adam", "AdamW",
           "save_state", "load_state", "state_to_arrays", "state_from_arrays",
           "sgd", "sgd_momentum", "nesterov_momentum", "adagrad", "rmsprop", "adam", "RULES", "get_rule"]
