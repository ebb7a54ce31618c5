"""CS231n-compatible layer functions: forward(...) -> (out, cache), backward(dout, cache) -> grads."""
from .core import *  # noqa: F401,F403
from .dropout import *  # noqa: F401,F403
from .losses import *  # noqa: F401,F403
from .normalization import *  # noqa: F401,F403
from . import core, dropout, losses, normalization

__all__ = core.__all__ + dropout.__all__ + losses.__all__ + normalization.__all__
