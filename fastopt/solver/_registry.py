"""Names -> fastopt's own update rules and optimizer classes, and back.

A checkpoint names its update rule (its schedule is a plain-data spec of fastopt.optim.lr_scheduler). These functions are the only way such a name
becomes code, and they only look it up in fastopt's own tables: nothing is imported or called
because a file named it. A user's own rule or class is not in the tables; the caller passes it
again when loading (``Solver.from_checkpoint(path, model, data, update_rule=MyRule)``).
"""
import inspect
import numbers

from .. import optim
from ..optim.rule_adapter import RuleOptimizer
from ..optim._declarations import class_rules, cs231n_to_torch_keys

CUSTOM = "custom:"  # prefix of the stored name of a user's own rule or class

# CS231n config names -> torch-style constructor names, for optimizer classes (from the declarations).
_CLASS_KEYS = cs231n_to_torch_keys()


def update_rules():
    """Every update rule a name can select: the CS231n functions ("adam") and fastopt's optimizer
    classes ("Adam"), derived from fastopt.optim's exports. The one name -> rule table."""
    table = dict(optim.RULES)
    for name in optim.__all__:
        obj = getattr(optim, name)
        if isinstance(obj, type) and issubclass(obj, optim.Optimizer) and obj is not optim.Optimizer:
            table[name] = obj
    # The lower-case key of a rule that exists only as a class ("nadam", "lion"), as `fastopt train
    # --optimizer` names it; after the class names, so rule_name() keeps storing "NAdam".
    for rule in class_rules():
        table.setdefault(rule.key, getattr(optim, rule.class_name))
    return table


def resolve_rule(name):
    """The rule or class for a name in update_rules(); ValueError naming the choices otherwise."""
    table = update_rules()
    if not isinstance(name, str) or name not in table:
        raise ValueError(f'Invalid update_rule "{name}": expected one of {sorted(table)}, '
                         f"or a rule function / optimizer class passed in by the caller")
    return table[name]


def rule_name(rule):
    """The name stored for `rule`: its table name, or "custom:<module>.<qualname>" (informative only)."""
    for name, obj in update_rules().items():
        if obj is rule:
            return name
    return f"{CUSTOM}{getattr(rule, '__module__', '?')}.{getattr(rule, '__qualname__', type(rule).__name__)}"


def _declared_betas(cls):
    """The default betas the declaration of `cls` (or of the fastopt class it derives from) gives;
    (0.9, 0.999), Adam's, for a user's class without a declaration."""
    rule = next((c._RULE for c in getattr(cls, "__mro__", ()) if getattr(c, "_RULE", None) is not None), None)
    betas = rule.defaults.get("betas") if rule is not None else None
    return tuple(betas) if betas is not None else (0.9, 0.999)


def class_kwargs(optim_config, cls=None):
    """optim_config (CS231n names or torch names) -> keyword arguments of the torch-style class `cls`;
    a beta not given is the class's own default (Lion's beta2 is 0.99)."""
    kw = {}
    cfg = dict(optim_config)
    if "learning_rate" in cfg and "lr" in cfg:
        raise ValueError("optim_config gives both 'learning_rate' and 'lr'; give one")
    if "beta1" in cfg or "beta2" in cfg:
        if "betas" in cfg:
            raise ValueError("optim_config gives both 'betas' and 'beta1'/'beta2'; give one form")
        b1, b2 = _declared_betas(cls)
        kw["betas"] = (cfg.pop("beta1", b1), cfg.pop("beta2", b2))
    for key, value in cfg.items():
        kw[_CLASS_KEYS.get(key, key)] = value
    return kw


def tracks_update_ratio(rule):
    """Whether the optimizer of `rule` (its class, or RuleOptimizer for a function) takes
    ``track_update_ratio=``: its kernels then compute each step's update/weight ratios in the step's
    pass over memory (``optimizer.update_ratios()``). A constructor that passes ``**kwargs`` on is
    followed to its base class's."""
    for cls in (rule if isinstance(rule, type) else RuleOptimizer).__mro__:
        if "__init__" not in vars(cls):
            continue
        try:
            params = inspect.signature(vars(cls)["__init__"]).parameters
        except (TypeError, ValueError):
            return False
        if "track_update_ratio" in params:
            return True
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            return False
    return False


def make_optimizer(rule, params, optim_config, track_update_ratio=False):
    """The one place where a rule function and an optimizer class differ: both become an optimizer
    over `params` (updated in place; a read-only Mapping of views into one flat buffer is fine):
    a class built once with class_kwargs(optim_config), a function run per parameter by
    RuleOptimizer. The Solver and the data-parallel trainer build theirs here.
    track_update_ratio=True is passed on when tracks_update_ratio(rule)."""
    extra = {"track_update_ratio": True} if track_update_ratio and tracks_update_ratio(rule) else {}
    if isinstance(rule, type):
        try:
            # A list is param groups (Solver(layer_lr=...): model.param_groups), else name -> array.
            return rule(params if isinstance(params, list) else dict(params), **class_kwargs(optim_config, rule),
                        **extra)
        except TypeError as exc:
            raise TypeError(f"optim_config does not fit {rule.__name__}: {exc}") from exc
    return RuleOptimizer(rule, params, optim_config, **extra)
