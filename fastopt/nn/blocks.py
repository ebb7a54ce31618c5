"""FullyConnectedNet as data: one description (a list of blocks), read by both executions.

    {affine -> [batch/layer norm] -> activation -> [dropout]} x (L - 1) -> affine -> softmax

``describe(...)`` returns the blocks; everything else is derived from them: the parameter names,
shapes and initial values (``param_specs``), the readable layer-by-layer execution
(fastopt.nn.run_layers) and the fused one (fastopt.nn.run_fused). A normalization or an activation
is one entry of ``NORMS`` / fastopt.layers.activations.ACTIVATIONS (read here, once, into an
:class:`Activation`: its layer functions, kernels and hyperparameter value); the fused execution keeps
its kernels for the same names in ``run_fused.FUSED`` and runs only when every block has an entry
there (``run_fused.supports``), so a new entry with layer functions alone works at once through the
readable execution.
"""
from dataclasses import dataclass
from typing import Callable, Optional

from .. import layers
from ..layers import activations as _act

__all__ = ["Norm", "Activation", "Hidden", "Output", "NORMS", "activation", "describe", "param_specs"]


@dataclass(frozen=True)
class Norm:
    """A normalization layer: its layer functions and what its param dict (model.bn_params[i]) holds."""
    name: str
    forward: Callable        # (x, gamma, beta, param) -> (out, cache)
    backward: Callable       # (dout, cache) -> (dx, dgamma, dbeta)
    running: bool            # running statistics in its param dict (batchnorm) or none (layernorm)


@dataclass(frozen=True)
class Activation:
    """A hidden block's activation: its entry of the activation table and its checked hyperparameter."""
    spec: object             # the fastopt.layers.activations.ACTIVATIONS entry
    param: Optional[float]   # the hyperparameter as given (None: the default, or the activation has none)

    @property
    def name(self):
        return self.spec.name

    @property
    def value(self):
        """The hyperparameter value the kernels take (0.0 for an activation without one)."""
        return self.spec.check_param(self.param)

    def forward(self, x):
        """(out, cache): the table's layer function."""
        return _act.activation_forward(self.spec.name, x, self.param)

    def backward(self, dout, cache):
        return _act.activation_backward(self.spec.name, dout, cache)


def activation(name, param=None):
    """The Activation for `name` (one of fastopt.layers.activations.ACTIVATIONS) and its
    hyperparameter (None: the default); ValueError / TypeError naming the argument otherwise."""
    spec = _act.get(name)
    if spec.param is None:
        if param is not None:
            raise TypeError(f"activation_param: {name} takes no hyperparameter, got {param!r}")
        return Activation(spec, None)
    try:
        return Activation(spec, spec.check_param(param))
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"activation_param ({spec.param} of {name}): {exc}") from None


NORMS = {
    "batchnorm": Norm("batchnorm", layers.batchnorm_forward, layers.batchnorm_backward, running=True),
    "layernorm": Norm("layernorm", layers.layernorm_forward, layers.layernorm_backward, running=False),
}


@dataclass(frozen=True)
class Hidden:
    """Hidden block `index` (0-based; its parameters are numbered k = index + 1)."""
    index: int
    fan_in: int
    width: int
    norm: Optional[Norm]
    activation: Activation
    dropout: bool

    @property
    def k(self):
        return self.index + 1


@dataclass(frozen=True)
class Output:
    """The last affine layer (parameters W{k}, b{k} with k = L), followed by the softmax loss."""
    k: int
    fan_in: int
    width: int


def describe(input_dim, hidden_dims, num_classes, normalization, dropout, act):
    """The blocks of the network: [Hidden, ..., Hidden, Output]; `act` an Activation (activation())."""
    dims = [input_dim] + list(hidden_dims)
    norm = None if normalization is None else NORMS[normalization]
    hidden = [Hidden(i, dims[i], dims[i + 1], norm, act, dropout)
              for i in range(len(hidden_dims))]
    return hidden + [Output(len(hidden_dims) + 1, dims[-1], num_classes)]


def param_specs(blocks):
    """[(name, shape, init)] in storage order W1, b1, gamma1, beta1, ..., WL, bL.

    init is "weight" (drawn by the model's weight initialisation), "zeros" or "ones".
    """
    specs = []
    for blk in blocks:
        specs += [(f"W{blk.k}", (blk.fan_in, blk.width), "weight"), (f"b{blk.k}", (blk.width,), "zeros")]
        if isinstance(blk, Hidden) and blk.norm is not None:
            specs += [(f"gamma{blk.k}", (blk.width,), "ones"), (f"beta{blk.k}", (blk.width,), "zeros")]
    return specs
