"""Optimizers over NumPy arrays, updated in place by fused kernels.

Every rule is declared once in ``_declarations.RULES``; from that table come:

* torch.optim-style classes: ``SGD``, ``Adagrad``, ``RMSprop``, ``Adam``, ``AdamW``, ``NAdam``,
  ``RAdam``, ``Adamax``, ``Adadelta``, ``Lion`` with param groups, ``step(grads)``, step hooks,
  ``state_dict()`` / ``load_state_dict()``, and the options ``max_grad_norm`` (clipping inside the
  step), ``skip_nonfinite`` and ``ema`` (parameter averaging, ``with opt.averaged(): ...``);
  ``save_state`` / ``load_state`` store that state in an ``.npz`` file.
* CS231n-style functions ``update(w, dw, config=None) -> (next_w, config)``: ``sgd``,
  ``sgd_momentum``, ``nesterov_momentum``, ``adagrad``, ``rmsprop``, ``adam``; ``RULES`` maps names
  to them and ``get_rule("adam")`` looks one up.

``clip_grad_norm_(grads, max_norm)`` clips a list of gradients by their global norm. ``LBFGS``
(full batch, ``step(closure)``) and the torch-style schedulers of ``lr_scheduler`` act on the same
``param_groups``.
"""
from ._base import Optimizer
from ._classes import CLASSES
from ._clip import clip_grad_norm_
from .lbfgs import LBFGS
from ._serialize import load_state, save_state, state_from_arrays, state_to_arrays
from . import lr_scheduler
from .functional import RULES, adagrad, adam, get_rule, nesterov_momentum, rmsprop, sgd, sgd_momentum

# SGD, Adagrad, RMSprop, Adam, AdamW, NAdam, RAdam, Adamax, Adadelta, Lion: made from the table.
globals().update(CLASSES)

__all__ = ["Optimizer", *CLASSES, "LBFGS", "lr_scheduler", "clip_grad_norm_",
           "save_state", "load_state", "state_to_arrays", "state_from_arrays",
           "sgd", "sgd_momentum", "nesterov_momentum", "adagrad", "rmsprop", "adam", "RULES", "get_rule"]
