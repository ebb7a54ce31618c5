"""Compatibility layer: stateless ``schedule(t, base_lr) -> lr`` callables for the current Solver.

The schedules live in :mod:`fastopt.optim.lr_scheduler` (torch's names and semantics, stateful,
``state_dict``); this module only keeps the Solver's older calling convention working until the
Solver drives those schedulers itself, and is to be removed then. Its formulas are the closed forms
of those classes (StepLR, ExponentialLR, CosineAnnealingLR), not a second copy; and
:class:`SpecSchedule` exposes any spec of :func:`fastopt.optim.lr_scheduler.parse` in this form.

``t`` is a step counter starting at 0 (the Solver passes the epoch index or the iteration index,
see its ``lr_schedule_unit``). A schedule holds only its hyperparameters, so the learning rate at any
``t`` is recomputed from scratch: resuming from a checkpoint needs no schedule state, and the same
``t`` always gives the same value.

    StepLR(step_size, gamma=0.1)       base_lr * gamma ** (t // step_size)
    ExponentialLR(gamma)               base_lr * gamma ** t
    CosineLR(T_max, eta_min=0.0)       eta_min + (base_lr - eta_min) * (1 + cos(pi * t / T_max)) / 2
                                       for t <= T_max, then eta_min (no restart, unlike torch's
                                       CosineAnnealingLR which keeps oscillating past T_max)
    LinearWarmup(warmup_steps, after=None)
                                       base_lr * (t + 1) / warmup_steps for t < warmup_steps, then
                                       after(t - warmup_steps, base_lr) (or base_lr when after is None)
"""
from ._validation import check_scalar
from .optim import lr_scheduler as _lrs

__all__ = ["Schedule", "StepLR", "ExponentialLR", "CosineLR", "LinearWarmup", "SpecSchedule"]


class Schedule:
    """Base class: subclasses implement ``_lr(t, base_lr)``; ``__call__`` validates the arguments."""

    def __call__(self, t, base_lr):
        t = check_scalar("t", t, low=0, integer=True)
        base_lr = check_scalar("base_lr", base_lr, low=0)
        return float(self._lr(t, base_lr))

    def _lr(self, t, base_lr):
        raise NotImplementedError

    def __eq__(self, other):
        return type(self) is type(other) and vars(self) == vars(other)

    def __hash__(self):
        return hash((type(self).__name__, tuple(sorted(vars(self).items(), key=lambda kv: kv[0]))))

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class StepLR(Schedule):
    """Multiply the rate by `gamma` every `step_size` steps."""

    def __init__(self, step_size, gamma=0.1):
        self.step_size = check_scalar("step_size", step_size, low=1, integer=True)
        self.gamma = check_scalar("gamma", gamma, low=0, low_open=True, high=1)

    def _lr(self, t, base_lr):
        return _lrs.StepLR.closed_form(base_lr, t, self.step_size, self.gamma)


class ExponentialLR(Schedule):
    """Multiply the rate by `gamma` every step."""

    def __init__(self, gamma):
        self.gamma = check_scalar("gamma", gamma, low=0, low_open=True, high=1)

    def _lr(self, t, base_lr):
        return _lrs.ExponentialLR.closed_form(base_lr, t, self.gamma)


class CosineLR(Schedule):
    """Half a cosine from base_lr down to eta_min over T_max steps, then eta_min."""

    def __init__(self, T_max, eta_min=0.0):
        self.T_max = check_scalar("T_max", T_max, low=1, integer=True)
        self.eta_min = check_scalar("eta_min", eta_min, low=0)

    def _lr(self, t, base_lr):
        if t >= self.T_max:
            return self.eta_min
        return _lrs.CosineAnnealingLR.closed_form(base_lr, t, self.T_max, self.eta_min)


class LinearWarmup(Schedule):
    """Ramp linearly to base_lr over `warmup_steps` steps, then hand over to `after` (or stay constant).

    Step t < warmup_steps gets base_lr * (t + 1) / warmup_steps, so the first step already learns and
    step warmup_steps - 1 reaches base_lr. `after` sees its own counter, starting at 0 after warm-up.
    """

    def __init__(self, warmup_steps, after=None):
        self.warmup_steps = check_scalar("warmup_steps", warmup_steps, low=1, integer=True)
        if after is not None and not callable(after):
            raise TypeError(f"after must be a schedule (callable (t, base_lr) -> lr) or None, "
                            f"got {type(after).__name__}")
        self.after = after

    def _lr(self, t, base_lr):
        if t < self.warmup_steps:
            return base_lr * (t + 1) / self.warmup_steps
        if self.after is None:
            return base_lr
        return self.after(t - self.warmup_steps, base_lr)


class _LR:
    """The one-group stand-in optimizer a SpecSchedule replays its scheduler on."""

    def __init__(self, lr):
        self.param_groups = [{"lr": lr}]
        self.defaults = {"lr": lr}


class SpecSchedule(Schedule):
    """A spec of fastopt.optim.lr_scheduler (dict or text, e.g. "cosine:T_max=20") as a stateless
    ``schedule(t, base_lr)``: the lr after `t` scheduler steps from `base_lr`, exactly what the
    stateful scheduler sets (it is replayed on a stand-in optimizer; moving forward costs one step,
    going back replays from 0). ``unit`` is the spec's ("epoch" or "iteration"); pass it to the
    Solver as lr_schedule_unit. Only the learning rate is scheduled (OneCycleLR's momentum cycling
    is off here). ReduceLROnPlateau needs a metric, so it cannot be expressed this way.
    """

    def __init__(self, spec, iterations_per_epoch=1, epochs=None):
        spec = _lrs.parse(spec) if isinstance(spec, str) else dict(spec)
        if spec.get("name") == "plateau":
            raise ValueError("schedule 'plateau' (ReduceLROnPlateau) needs a metric at every epoch; "
                             "it cannot run as a stateless (t, base_lr) schedule")
        if spec.get("name") == "onecycle":
            spec.setdefault("cycle_momentum", False)
        self.spec = spec
        self.iterations_per_epoch = iterations_per_epoch
        self.epochs = epochs
        self.unit = self._runner(1.0).unit        # builds once: every argument is checked here
        self._replay = None

    def _runner(self, base_lr):
        return _lrs.build(self.spec, _LR(base_lr), iterations_per_epoch=self.iterations_per_epoch,
                          epochs=self.epochs)

    def _lr(self, t, base_lr):
        replay = self._replay
        if replay is None or replay[0] != base_lr or replay[1] > t:
            replay = self._replay = [base_lr, 0, self._runner(base_lr).scheduler]
        while replay[1] < t:
            replay[2].step()
            replay[1] += 1
        return replay[2].get_last_lr()[0]

    def __eq__(self, other):
        return type(self) is type(other) and (self.spec, self.iterations_per_epoch, self.epochs) == \
            (other.spec, other.iterations_per_epoch, other.epochs)

    def __hash__(self):
        return hash(repr(self))

    def __repr__(self):
        return f"SpecSchedule({self.spec!r}, iterations_per_epoch={self.iterations_per_epoch}, epochs={self.epochs})"
