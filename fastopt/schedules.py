"""Learning-rate schedules: stateless callables ``schedule(t, base_lr) -> lr``.

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
import math

from ._validation import check_scalar

__all__ = ["Schedule", "StepLR", "ExponentialLR", "CosineLR", "LinearWarmup"]


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
        return base_lr * self.gamma ** (t // self.step_size)


class ExponentialLR(Schedule):
    """Multiply the rate by `gamma` every step."""

    def __init__(self, gamma):
        self.gamma = check_scalar("gamma", gamma, low=0, low_open=True, high=1)

    def _lr(self, t, base_lr):
        return base_lr * self.gamma ** t


class CosineLR(Schedule):
    """Half a cosine from base_lr down to eta_min over T_max steps, then eta_min."""

    def __init__(self, T_max, eta_min=0.0):
        self.T_max = check_scalar("T_max", T_max, low=1, integer=True)
        self.eta_min = check_scalar("eta_min", eta_min, low=0)

    def _lr(self, t, base_lr):
        if t >= self.T_max:
            return self.eta_min
        return self.eta_min + (base_lr - self.eta_min) * (1 + math.cos(math.pi * t / self.T_max)) / 2


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
