"""The torch-style optimizer classes, made from the declarations (fastopt/optim/_declarations.py).

Each class is ``type(rule.class_name, (Optimizer,), ...)`` with an ``__init__`` whose signature is
torch's for that rule: the hyperparameters in declaration order (keyword-only where torch has them
so), then the options every fastopt optimizer takes (see fastopt/optim/_base.py).
"""
import inspect

from ._base import Optimizer
from ._declarations import RULES, class_rules

# Options of every optimizer: (name, default). Keyword-only, whole-optimizer (not per group).
OPTIONS = (("max_grad_norm", None), ("skip_nonfinite", False), ("ema", None), ("track_update_ratio", False))

_P = inspect.Parameter


def _signature(rule):
    positional = [h for h in rule.hypers if not h.keyword_only]
    keyword = [h for h in rule.hypers if h.keyword_only]
    params = [_P("self", _P.POSITIONAL_OR_KEYWORD), _P("params", _P.POSITIONAL_OR_KEYWORD)]
    params += [_P(h.name, _P.POSITIONAL_OR_KEYWORD, default=h.default) for h in positional]
    params += [_P(h.name, _P.KEYWORD_ONLY, default=h.default) for h in keyword]
    params += [_P(name, _P.KEYWORD_ONLY, default=default) for name, default in OPTIONS]
    return inspect.Signature(params)


def _doc(rule):
    lines = [f"{rule.torch_name and f'torch.optim.{rule.torch_name}' or rule.class_name} over NumPy "
             f"arrays, updated in place by one fused kernel pass.", "", rule.doc, "",
             "Hyperparameters (per group): " + ", ".join(f"{h.name}={h.default!r}" for h in rule.hypers) + ".",
             "State per parameter: " + ", ".join(
                 [s.name for s in rule.scalars] + [s.name + ("" if s.when is None else " (size 0 until used)")
                                                   for s in rule.state]) + ".",
             "Options: max_grad_norm, skip_nonfinite, ema, track_update_ratio (see fastopt.optim.Optimizer)."]
    return "\n".join(lines)


def make_class(rule, base=Optimizer):
    sig = _signature(rule)
    names = [h.name for h in rule.hypers]

    def __init__(self, *args, **kwargs):
        bound = sig.bind(self, *args, **kwargs)
        bound.apply_defaults()
        a = bound.arguments
        Optimizer.__init__(self, a["params"], {k: a[k] for k in names},
                           **{name: a[name] for name, _ in OPTIONS})

    __init__.__signature__ = sig
    return type(rule.class_name, (base,), {"_RULE": rule, "__init__": __init__, "__doc__": _doc(rule),
                                           "__module__": "fastopt.optim"})


def _make_all():
    classes = {}
    for rule in class_rules():
        base = classes[RULES[rule.base].class_name] if rule.base else Optimizer
        classes[rule.class_name] = make_class(rule, base)
    return classes


CLASSES = _make_all()
