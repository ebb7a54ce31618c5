"""The Solver's learning-rate schedule: what ``lr_schedule=`` / ``lr_decay=`` may be, and the one
fastopt.optim.lr_scheduler runner that drives the optimizer's param_groups from them.

    lr_schedule = None               lr_decay != 1 -> ExponentialLR(gamma=lr_decay) per epoch
                  "cosine:T_max=20"  a spec of lr_scheduler.parse / build (its "unit" says when it steps)
                  {"name": ..., ...} the same as a dict (stored in checkpoints as it is: plain data)
                  factory(optimizer) -> an LRScheduler (stepped per lr_schedule_unit, default "epoch";
                                     ReduceLROnPlateau watches val_acc in mode "max", the epoch's mean
                                     training loss in mode "min") or a ScheduleRunner
                  rate(t, base_lr)   -> lr, a plain function of the step count (what fastopt.babysit's
                                     lr_find passes): it runs as a RateLR scheduler

A factory or rate function is the user's code: a checkpoint stores only the scheduler's state
(plain data) and the caller passes the callable again when resuming.
"""
import inspect
import numbers
from collections.abc import Mapping

from .._validation import check_choice
from ..optim import lr_scheduler

UNITS = ("epoch", "iteration")


class RateLR(lr_scheduler.LRScheduler):
    """lr = rate(last_epoch, base_lr) for every group: a plain (t, base_lr) -> lr function as a scheduler."""

    def __init__(self, optimizer, rate, last_epoch=-1):
        if not callable(rate):
            raise TypeError(f"rate must be callable (t, base_lr) -> lr, got {type(rate).__name__}")
        self.rate = rate
        super().__init__(optimizer, last_epoch)

    def _rebuild(self, hyper, base_lrs):
        return RateLR(lr_scheduler._Probe(self.optimizer, base_lrs), self.rate)

    def get_lr(self):
        return [float(self.rate(self.last_epoch, base)) for base in self.base_lrs]


def _positional_arity(fn):
    """The number of positional parameters `fn` requires; None when it cannot be told."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    return sum(1 for p in params if p.default is p.empty
               and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))


def _plain(value):
    if isinstance(value, list):
        return all(isinstance(v, (numbers.Real, str)) and not isinstance(v, list) for v in value)
    return value is None or isinstance(value, (numbers.Real, str))


class _StandIn:
    """The one-group optimizer a spec is test-built on (validation without touching a real one)."""

    def __init__(self, lr):
        self.param_groups = [{"lr": lr}]
        self.defaults = {}


def check_spec(spec, epochs=None, lr=1.0, where="lr_schedule"):
    """A schedule spec (str or dict) as a plain dict, every value checked by building it once on a
    stand-in optimizer. TypeError / ValueError naming `where`."""
    try:
        if isinstance(spec, str):
            out = lr_scheduler.parse(spec)
        elif not isinstance(spec, Mapping) or not all(isinstance(k, str) for k in spec):
            raise TypeError(f"a schedule spec must be a dict with str keys, got {type(spec).__name__}")
        elif not all(_plain(v) for v in spec.values()):
            raise TypeError("a schedule spec holds numbers, words, flags and lists of numbers only")
        else:
            out = dict(spec)
        lr_scheduler.build(out, _StandIn(lr), epochs=None if epochs is None else max(epochs, 1))
        return out
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{where}: {exc}") from None


def check(schedule, unit, lr_decay, epochs):
    """Validated (kind, value) for lr_schedule: kind None, "spec" (value a plain dict), "factory" or
    "rate"; `unit` (lr_schedule_unit) is only for a factory's bare LRScheduler and a rate function."""
    if unit is not None:
        unit = check_choice("lr_schedule_unit", unit, UNITS)
    if schedule is None:
        if unit is not None:
            raise ValueError("lr_schedule_unit is for a lr_schedule factory or rate function; there is no lr_schedule")
        return None, None
    if lr_decay != 1:
        raise ValueError("give lr_schedule or lr_decay, not both (lr_decay must be 1 with a schedule)")
    if isinstance(schedule, (str, Mapping)):
        if unit is not None:
            raise ValueError("a schedule spec gives its own unit (e.g. 'cosine:T_max=20,unit=iteration'); "
                             "lr_schedule_unit is for a factory or rate function")
        return "spec", check_spec(schedule, epochs)
    if not callable(schedule):
        raise TypeError(f"lr_schedule must be a schedule spec (str or dict), a factory(optimizer) or a "
                        f"rate(t, base_lr) function, got {type(schedule).__name__}")
    arity = _positional_arity(schedule)
    if arity == 1:
        return "factory", schedule
    if arity == 2:
        return "rate", schedule
    raise TypeError(f"lr_schedule {getattr(schedule, '__name__', schedule)!r:.80} must take (optimizer) -- a "
                    f"factory -- or (t, base_lr) -- a rate function; it requires {arity} positional arguments")


def _runner(scheduler, unit):
    if isinstance(scheduler, lr_scheduler.ScheduleRunner):
        if unit is not None and unit != scheduler.unit:
            raise ValueError(f"lr_schedule's runner steps per {scheduler.unit}, lr_schedule_unit says {unit}")
        return scheduler
    if not isinstance(scheduler, lr_scheduler.LRScheduler):
        raise TypeError(f"lr_schedule(optimizer) must return a fastopt.optim.lr_scheduler scheduler or "
                        f"ScheduleRunner, got {type(scheduler).__name__}")
    monitor = None
    if isinstance(scheduler, lr_scheduler.ReduceLROnPlateau):
        monitor = "val_acc" if scheduler.mode == "max" else "loss"
    return lr_scheduler.ScheduleRunner(scheduler, unit or "epoch", monitor)


def make_runner(kind, schedule, unit, lr_decay, optimizer, iterations_per_epoch, epochs):
    """The ScheduleRunner over `optimizer` (None: the rate stays as it is). Builds change only
    `optimizer`'s param_groups (initial_lr, the first lr)."""
    if kind == "spec":
        return lr_scheduler.build(schedule, optimizer, iterations_per_epoch=iterations_per_epoch,
                                  epochs=max(epochs, 1))
    if kind == "factory":
        return _runner(schedule(optimizer), unit)
    if kind == "rate":
        return lr_scheduler.ScheduleRunner(RateLR(optimizer, schedule), unit or "epoch")
    if lr_decay != 1:
        return lr_scheduler.build({"name": "exponential", "gamma": lr_decay}, optimizer)
    return None
