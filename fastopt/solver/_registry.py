"""Names -> fastopt's own update rules, optimizer classes and schedules, and back.

A checkpoint names its update rule and its schedule. These functions are the only way such a name
becomes code, and they only look it up in fastopt's own tables: nothing is imported or called
because a file named it. A user's own rule or class is not in the tables; the caller passes it
again when loading (``Solver.from_checkpoint(path, model, data, update_rule=MyRule)``).
"""
import numbers

from .. import optim
from .. import schedules as _schedules

CUSTOM = "custom:"  # prefix of the stored name of a user's own rule, class or schedule

# CS231n config names -> torch-style constructor names, for optimizer classes.
_CLASS_KEYS = {"learning_rate": "lr", "epsilon": "eps", "decay_rate": "alpha"}


def update_rules():
    """Every update rule a name can select: the CS231n functions ("adam") and fastopt's optimizer
    classes ("Adam"), derived from fastopt.optim's exports. The one name -> rule table."""
    table = dict(optim.RULES)
    for name in optim.__all__:
        obj = getattr(optim, name)
        if isinstance(obj, type) and issubclass(obj, optim.Optimizer) and obj is not optim.Optimizer:
            table[name] = obj
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


def class_kwargs(optim_config):
    """optim_config (CS231n names or torch names) -> keyword arguments of a torch-style class."""
    kw = {}
    cfg = dict(optim_config)
    if "learning_rate" in cfg and "lr" in cfg:
        raise ValueError("optim_config gives both 'learning_rate' and 'lr'; give one")
    if "beta1" in cfg or "beta2" in cfg:
        if "betas" in cfg:
            raise ValueError("optim_config gives both 'betas' and 'beta1'/'beta2'; give one form")
        kw["betas"] = (cfg.pop("beta1", 0.9), cfg.pop("beta2", 0.999))
    for key, value in cfg.items():
        kw[_CLASS_KEYS.get(key, key)] = value
    return kw


# ---------------------------------------------------------------- schedules
def _schedule_classes():
    return {name: getattr(_schedules, name) for name in _schedules.__all__
            if name != "Schedule" and isinstance(getattr(_schedules, name), type)}


def schedule_spec(schedule):
    """Plain data for a fastopt schedule: {"name": class name, "args": constructor arguments}
    (``after`` nested the same way); None for any other callable (a user's own, not stored)."""
    if schedule is None:
        return None
    cls = _schedule_classes().get(type(schedule).__name__)
    if cls is not type(schedule):
        return None
    args = {}
    for key, value in vars(schedule).items():
        if isinstance(value, _schedules.Schedule) or callable(value):
            value = schedule_spec(value)
            if value is None:
                return None
        args[key] = value
    return {"name": type(schedule).__name__, "args": args}


def schedule_from_spec(spec, where):
    """The schedule `spec` describes, built through its validating constructor; ValueError naming
    `where` for anything else (an unknown name, a non-number argument, step_size=0, ...)."""
    table = _schedule_classes()
    if not isinstance(spec, dict) or set(spec) != {"name", "args"} or not isinstance(spec["args"], dict):
        raise ValueError(f"{where} must be {{'name': schedule class, 'args': {{...}}}}, got {spec!r:.200}")
    name = spec["name"]
    if not isinstance(name, str) or name not in table:
        raise ValueError(f"{where}['name'] must be one of {sorted(table)}, got {name!r:.200}")
    args = {}
    for key, value in spec["args"].items():
        if not isinstance(key, str):
            raise ValueError(f"{where}['args'] keys must be str, got {type(key).__name__}")
        if isinstance(value, dict):
            value = schedule_from_spec(value, f"{where}['args'][{key!r}]")
        elif value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
            raise ValueError(f"{where}['args'][{key!r}] must be a number, got {type(value).__name__}")
        args[key] = value
    try:
        return table[name](**args)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where} ({name}): {exc}") from exc
