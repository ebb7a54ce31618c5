"""Learning-rate schedulers with torch.optim.lr_scheduler's names and semantics, for any fastopt optimizer.

A scheduler edits ``optimizer.param_groups[i]["lr"]`` (every fastopt optimizer reads it at each
step); it works with anything whose ``param_groups`` is a list of dicts holding ``"lr"``. As in torch,
construction records ``"initial_lr"`` in each group (``base_lrs``) and makes the initial step, so the
first epoch already runs at the schedule's first value; call ``step()`` once per epoch (OneCycleLR:
once per batch), after the optimizer's step::

    opt = fastopt.SGD(params, lr=0.1, momentum=0.9)
    sched = CosineAnnealingLR(opt, T_max=50)
    for epoch in range(50):
        train_one_epoch(opt)
        sched.step()

The learning rates follow torch 2.13's sequences value for value (the same recursive "chainable"
formulas in the same order, so the floats are the same), including ``SequentialLR``'s milestones
(closed form at the switch) and ``ReduceLROnPlateau`` (``step(metric)``).

``state_dict()`` is plain numbers, strings, bools and lists of them (``SequentialLR`` nests its
children's). ``load_state_dict`` validates before it changes anything: the hyperparameters are
passed through the class's own validating constructor (on a stand-in optimizer), so a tampered
state such as ``step_size=0`` is refused with the constructor's error. ``LambdaLR`` cannot store its
functions: build it with the same ``lr_lambda`` again, then load the state.

For training loops that name a schedule by text or data (``fastopt train --lr-schedule``, the
Solver), :func:`parse` turns ``"cosine:T_max=20"`` into a spec dict and :func:`build` turns a spec
into a :class:`ScheduleRunner`, which knows whether to step per iteration or per epoch and which
metric ReduceLROnPlateau watches. The Solver's ``lr_decay=g`` is ``{"name": "exponential", "gamma": g}``.
"""
import bisect
import math
import numbers
from collections import Counter
from collections.abc import Mapping

from .._validation import _describe, check_bool, check_choice, check_scalar

__all__ = ["LRScheduler", "LambdaLR", "StepLR", "MultiStepLR", "ExponentialLR", "LinearLR",
           "CosineAnnealingLR", "CosineAnnealingWarmRestarts", "OneCycleLR", "ReduceLROnPlateau",
           "SequentialLR", "SCHEDULES", "parse", "build", "ScheduleRunner"]


# ---------------------------------------------------------------- argument checks
def _int(name, value, low):
    return check_scalar(name, value, low=low, integer=True)


def _positive(name, value):
    return check_scalar(name, value, low=0, low_open=True)


def _nonneg(name, value):
    return check_scalar(name, value, low=0)


def _per_group(name, value, optimizer, check):
    """A scalar for every group, or a list with one value per group (torch's _format_param)."""
    n = len(optimizer.param_groups)
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(f"{name} must have one value per param group ({n}), got {len(value)}")
        return [check(f"{name}[{i}]", v) for i, v in enumerate(value)]
    return [check(name, value)] * n


def _check_optimizer(optimizer):
    groups = getattr(optimizer, "param_groups", None)
    if not isinstance(groups, list) or not groups or not all(isinstance(g, dict) for g in groups):
        raise TypeError(f"optimizer must have param_groups, a non-empty list of dicts (a fastopt optimizer), "
                        f"got {type(optimizer).__name__}")
    for i, g in enumerate(groups):
        if "lr" not in g:
            raise ValueError(f"optimizer.param_groups[{i}] has no 'lr' entry")
        check_scalar(f"optimizer.param_groups[{i}]['lr']", g["lr"], low=0)
    return optimizer


class _Probe:
    """A stand-in optimizer: lets load_state_dict run a constructor's checks without touching anything."""

    def __init__(self, optimizer, lrs=None):
        self.param_groups = [dict(g) for g in optimizer.param_groups]
        if lrs is not None:
            for g, lr in zip(self.param_groups, lrs):
                g["lr"] = g["initial_lr"] = lr
        self.defaults = dict(getattr(optimizer, "defaults", {}))


def _number_list(label, value, n=None, low=None):
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"{label} must be a list of numbers, got {_describe(value)}")
    if n is not None and len(value) != n:
        raise ValueError(f"{label} must have {n} entries (one per param group), got {len(value)}")
    return [check_scalar(f"{label}[{i}]", v, low=low) for i, v in enumerate(value)]


# ---------------------------------------------------------------- the base class
class LRScheduler:
    """torch's LRScheduler: ``step()``, ``get_last_lr()``, ``last_epoch``, ``base_lrs``, state_dict.

    Subclasses implement ``get_lr()`` (the chainable form, reading ``self.last_epoch`` and the
    groups' current lrs) and, where torch has one, ``_get_closed_form_lr()``. ``_HYPER`` names the
    constructor arguments that state_dict stores and load_state_dict re-validates.
    """

    _HYPER = ()
    _STATE = ()       # further plain attributes a subclass keeps between steps
    _is_initial = False

    def __init__(self, optimizer, last_epoch=-1):
        self.optimizer = optimizer
        last_epoch = check_scalar("last_epoch", last_epoch, low=-1, integer=True)
        if last_epoch == -1:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
        else:
            for i, group in enumerate(optimizer.param_groups):
                if "initial_lr" not in group:
                    raise KeyError(f"param 'initial_lr' is not specified in param_groups[{i}] "
                                   f"when resuming an optimizer")
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = last_epoch
        self._initial_step()

    def _initial_step(self):
        self._step_count = 0
        self._is_initial = True
        try:
            self.step()
        finally:
            self._is_initial = False

    def get_lr(self):
        raise NotImplementedError

    def get_last_lr(self):
        """The learning rates the last step set, one per param group."""
        return list(self._last_lr)

    def step(self):
        """Advance one epoch (or one batch, for per-iteration schedules) and set every group's lr."""
        self._step_count += 1
        self._update_lr(None)

    def _update_lr(self, epoch):
        if epoch is None:
            self.last_epoch += 1
            values = self.get_lr()
        else:
            self.last_epoch = epoch
            values = self._get_closed_form_lr() if hasattr(self, "_get_closed_form_lr") else self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, values):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    # ------------------------------------------------------------ state
    def _hyper(self):
        return {key: getattr(self, key) for key in self._HYPER}

    def state_dict(self):
        """Plain data: the hyperparameters, last_epoch, base_lrs, the step count, the last lrs and
        the subclass's own counters."""
        out = {"type": type(self).__name__, **_plain(self._hyper())}
        out.update(last_epoch=self.last_epoch, base_lrs=list(self.base_lrs),
                   _step_count=self._step_count, _last_lr=list(self._last_lr))
        for key in self._STATE:
            out[key] = _plain(getattr(self, key))
        return out

    def _rebuild(self, hyper, base_lrs):
        """Run the constructor's validation on `hyper` (stand-in optimizer); returns the checked object."""
        return type(self)(_Probe(self.optimizer, base_lrs), **hyper)

    def load_state_dict(self, state_dict):
        """Restore from state_dict(); validated through the constructor first, then applied."""
        label = "state_dict"
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"{label} must be a dict, got {_describe(state_dict)}")
        expected = {"type", *self._HYPER, "last_epoch", "base_lrs", "_step_count", "_last_lr", *self._STATE}
        if set(state_dict) != expected:
            missing = sorted(expected - set(state_dict))
            extra = sorted(map(str, set(state_dict) - expected))
            raise ValueError(f"{label} must have the entries of a {type(self).__name__} state; "
                             f"missing {missing}, unexpected {extra}")
        if state_dict["type"] != type(self).__name__:
            raise ValueError(f"{label} is a {state_dict['type']!r} state; this scheduler is {type(self).__name__}")
        n = len(self.optimizer.param_groups)
        base_lrs = _number_list(f"{label}['base_lrs']", state_dict["base_lrs"], n, low=0)
        last_lr = _number_list(f"{label}['_last_lr']", state_dict["_last_lr"], n, low=0)
        last_epoch = check_scalar(f"{label}['last_epoch']", state_dict["last_epoch"], low=-1, integer=True)
        step_count = check_scalar(f"{label}['_step_count']", state_dict["_step_count"], low=0, integer=True)
        hyper = {key: _unplain(state_dict[key]) for key in self._HYPER}
        try:
            checked = self._rebuild(hyper, base_lrs)
        except (TypeError, ValueError, KeyError) as exc:
            raise type(exc)(f"{label} holds invalid hyperparameters for {type(self).__name__}: {exc}") from None
        extra = self._check_state(label, state_dict, checked)
        # Validated: now change things.
        for key in self._HYPER:
            setattr(self, key, getattr(checked, key))
        self._adopt(checked)
        self.base_lrs, self._last_lr = base_lrs, last_lr
        self.last_epoch, self._step_count = last_epoch, step_count
        for key, value in extra.items():
            setattr(self, key, value)

    def _check_state(self, label, state_dict, checked):
        """Validate the subclass's _STATE entries; return them as attributes to set."""
        return {}

    def _adopt(self, checked):
        """Copy derived attributes from the validated rebuild (subclasses with some)."""


def _plain(value):
    if isinstance(value, Counter):
        return sorted(value.elements())
    if isinstance(value, tuple):
        return list(value)
    return value


def _unplain(value):
    return value


# ---------------------------------------------------------------- the schedules
class LambdaLR(LRScheduler):
    """lr = initial_lr * lr_lambda(epoch). The function is not stored in state_dict: pass it again."""

    def __init__(self, optimizer, lr_lambda, last_epoch=-1):
        _check_optimizer(optimizer)
        n = len(optimizer.param_groups)
        if isinstance(lr_lambda, (list, tuple)):
            if len(lr_lambda) != n:
                raise ValueError(f"Expected {n} lr_lambdas, but got {len(lr_lambda)}")
            lambdas = list(lr_lambda)
        else:
            lambdas = [lr_lambda] * n
        for i, fn in enumerate(lambdas):
            if not callable(fn):
                raise TypeError(f"lr_lambda[{i}] must be callable epoch -> factor, got {_describe(fn)}")
        self.lr_lambdas = lambdas
        super().__init__(optimizer, last_epoch)

    def _rebuild(self, hyper, base_lrs):
        return LambdaLR(_Probe(self.optimizer, base_lrs), self.lr_lambdas)

    def get_lr(self):
        return [base_lr * lmbda(self.last_epoch) for lmbda, base_lr in zip(self.lr_lambdas, self.base_lrs)]


class StepLR(LRScheduler):
    """Multiply the lr by gamma every step_size epochs."""

    _HYPER = ("step_size", "gamma")

    def __init__(self, optimizer, step_size, gamma=0.1, last_epoch=-1):
        _check_optimizer(optimizer)
        self.step_size = _int("step_size", step_size, 1)
        self.gamma = _positive("gamma", gamma)
        super().__init__(optimizer, last_epoch)

    @staticmethod
    def closed_form(base_lr, epoch, step_size, gamma):
        return base_lr * gamma ** (epoch // step_size)

    def get_lr(self):
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return [group["lr"] for group in self.optimizer.param_groups]
        return [group["lr"] * self.gamma for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self):
        return [self.closed_form(b, self.last_epoch, self.step_size, self.gamma) for b in self.base_lrs]


class MultiStepLR(LRScheduler):
    """Multiply the lr by gamma at each milestone epoch (a list of increasing ints)."""

    _HYPER = ("milestones", "gamma")

    def __init__(self, optimizer, milestones, gamma=0.1, last_epoch=-1):
        _check_optimizer(optimizer)
        if not isinstance(milestones, (list, tuple)):
            raise TypeError(f"milestones must be a list of increasing ints, got {_describe(milestones)}")
        checked = [_int(f"milestones[{i}]", m, 0) for i, m in enumerate(milestones)]
        if any(b <= a for a, b in zip(checked, checked[1:])):
            raise ValueError(f"milestones must be increasing, got {list(milestones)}")
        self.milestones = Counter(checked)
        self.gamma = _positive("gamma", gamma)
        super().__init__(optimizer, last_epoch)

    def _hyper(self):
        return {"milestones": sorted(self.milestones.elements()), "gamma": self.gamma}

    def get_lr(self):
        if self.last_epoch not in self.milestones:
            return [group["lr"] for group in self.optimizer.param_groups]
        return [group["lr"] * self.gamma ** self.milestones[self.last_epoch]
                for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self):
        milestones = sorted(self.milestones.elements())
        return [b * self.gamma ** bisect.bisect_right(milestones, self.last_epoch) for b in self.base_lrs]


class ExponentialLR(LRScheduler):
    """Multiply the lr by gamma every epoch (the Solver's lr_decay)."""

    _HYPER = ("gamma",)

    def __init__(self, optimizer, gamma, last_epoch=-1):
        _check_optimizer(optimizer)
        self.gamma = _positive("gamma", gamma)
        super().__init__(optimizer, last_epoch)

    @staticmethod
    def closed_form(base_lr, epoch, gamma):
        return base_lr * gamma ** epoch

    def get_lr(self):
        if self._is_initial:
            return [group["lr"] for group in self.optimizer.param_groups]
        return [group["lr"] * self.gamma for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self):
        return [self.closed_form(b, self.last_epoch, self.gamma) for b in self.base_lrs]


class LinearLR(LRScheduler):
    """Scale the lr by a factor going linearly from start_factor to end_factor over total_iters epochs."""

    _HYPER = ("start_factor", "end_factor", "total_iters")

    def __init__(self, optimizer, start_factor=1.0 / 3, end_factor=1.0, total_iters=5, last_epoch=-1):
        _check_optimizer(optimizer)
        self.start_factor = check_scalar("start_factor", start_factor, low=0, low_open=True, high=1)
        self.end_factor = check_scalar("end_factor", end_factor, low=0, high=1)
        self.total_iters = _int("total_iters", total_iters, 1)
        super().__init__(optimizer, last_epoch)

    @staticmethod
    def closed_form(base_lr, epoch, start_factor, end_factor, total_iters):
        return base_lr * (start_factor + (end_factor - start_factor) * min(total_iters, epoch) / total_iters)

    def get_lr(self):
        if self.last_epoch == 0:
            return [group["lr"] * self.start_factor for group in self.optimizer.param_groups]
        if self._is_initial or self.last_epoch > self.total_iters:
            return [group["lr"] for group in self.optimizer.param_groups]
        return [group["lr"] * (1.0 + (self.end_factor - self.start_factor)
                               / (self.total_iters * self.start_factor
                                  + (self.last_epoch - 1) * (self.end_factor - self.start_factor)))
                for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self):
        return [self.closed_form(b, self.last_epoch, self.start_factor, self.end_factor, self.total_iters)
                for b in self.base_lrs]


class CosineAnnealingLR(LRScheduler):
    """Cosine from initial_lr down to eta_min over T_max epochs (and, as torch's, back up after)."""

    _HYPER = ("T_max", "eta_min")

    def __init__(self, optimizer, T_max, eta_min=0.0, last_epoch=-1):
        _check_optimizer(optimizer)
        self.T_max = _int("T_max", T_max, 1)
        self.eta_min = _nonneg("eta_min", eta_min)
        super().__init__(optimizer, last_epoch)

    @staticmethod
    def closed_form(base_lr, epoch, T_max, eta_min):
        return eta_min + (base_lr - eta_min) * (1 + math.cos(math.pi * epoch / T_max)) / 2

    def get_lr(self):
        groups = self.optimizer.param_groups
        if self._is_initial:
            return [group["lr"] for group in groups]
        if self._step_count == 1 and self.last_epoch > 0:
            return [self.eta_min + (b - self.eta_min) * (1 + math.cos(self.last_epoch * math.pi / self.T_max)) / 2
                    for b in self.base_lrs]
        if (self.last_epoch - 1 - self.T_max) % (2 * self.T_max) == 0:
            return [group["lr"] + (b - self.eta_min) * (1 - math.cos(math.pi / self.T_max)) / 2
                    for b, group in zip(self.base_lrs, groups)]
        return [(1 + math.cos(math.pi * self.last_epoch / self.T_max))
                / (1 + math.cos(math.pi * (self.last_epoch - 1) / self.T_max))
                * (group["lr"] - self.eta_min) + self.eta_min for group in groups]

    def _get_closed_form_lr(self):
        return [self.closed_form(b, self.last_epoch, self.T_max, self.eta_min) for b in self.base_lrs]


class CosineAnnealingWarmRestarts(LRScheduler):
    """SGDR: cosine from initial_lr to eta_min over T_0 epochs, restarting; each period T_mult times longer."""

    _HYPER = ("T_0", "T_mult", "eta_min")
    _STATE = ("T_i", "T_cur")

    def __init__(self, optimizer, T_0, T_mult=1, eta_min=0.0, last_epoch=-1):
        _check_optimizer(optimizer)
        self.T_0 = _int("T_0", T_0, 1)
        self.T_i = self.T_0
        self.T_mult = _int("T_mult", T_mult, 1)
        self.eta_min = _nonneg("eta_min", eta_min)
        self.T_cur = check_scalar("last_epoch", last_epoch, low=-1, integer=True)
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        return [self.eta_min + (b - self.eta_min) * (1 + math.cos(math.pi * self.T_cur / self.T_i)) / 2
                for b in self.base_lrs]

    def step(self):
        """One epoch (or batch) on: T_cur + 1, restarting the period when it reaches T_i."""
        if self.last_epoch < 0:
            epoch = 0
        else:
            epoch = self.last_epoch + 1
            self.T_cur = self.T_cur + 1
            if self.T_cur >= self.T_i:
                self.T_cur = self.T_cur % self.T_i
                self.T_i = self.T_i * self.T_mult
        if self.last_epoch < 0:
            # torch's step(epoch=0) branch: epoch < T_0.
            self.T_i = self.T_0
            self.T_cur = epoch
        self.last_epoch = math.floor(epoch)
        self._step_count += 1
        for group, lr in zip(self.optimizer.param_groups, self.get_lr()):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def _check_state(self, label, state_dict, checked):
        T_i = _int(f"{label}['T_i']", state_dict["T_i"], 1)
        T_cur = check_scalar(f"{label}['T_cur']", state_dict["T_cur"], low=0)
        if T_cur > T_i:
            raise ValueError(f"{label}: T_cur={T_cur} exceeds the period T_i={T_i}")
        return {"T_i": T_i, "T_cur": T_cur}


class OneCycleLR(LRScheduler):
    """The 1cycle policy (stepped per batch): warm up to max_lr, anneal to max_lr/div/final_div.

    cycle_momentum also cycles the groups' "momentum" (SGD-style) or betas[0] (Adam-style) inversely.
    """

    _HYPER = ("max_lr", "total_steps", "pct_start", "anneal_strategy", "cycle_momentum", "base_momentum",
              "max_momentum", "div_factor", "final_div_factor", "three_phase")

    def __init__(self, optimizer, max_lr, total_steps=None, epochs=None, steps_per_epoch=None,
                 pct_start=0.3, anneal_strategy="cos", cycle_momentum=True, base_momentum=0.85,
                 max_momentum=0.95, div_factor=25.0, final_div_factor=1e4, three_phase=False,
                 last_epoch=-1):
        _check_optimizer(optimizer)
        if total_steps is not None:
            self.total_steps = _int("total_steps", total_steps, 1)
        elif epochs is not None and steps_per_epoch is not None:
            self.total_steps = _int("epochs", epochs, 1) * _int("steps_per_epoch", steps_per_epoch, 1)
        else:
            raise ValueError("You must define either total_steps OR (epochs AND steps_per_epoch)")
        self.pct_start = check_scalar("pct_start", pct_start, low=0, high=1)
        self.anneal_strategy = check_choice("anneal_strategy", anneal_strategy, ("cos", "linear"))
        self.cycle_momentum = check_bool("cycle_momentum", cycle_momentum)
        self.three_phase = check_bool("three_phase", three_phase)
        self.div_factor = _positive("div_factor", div_factor)
        self.final_div_factor = _positive("final_div_factor", final_div_factor)
        max_lrs = _per_group("max_lr", max_lr, optimizer, _positive)
        self.max_lr = max_lrs if isinstance(max_lr, (list, tuple)) else max_lrs[0]
        unit = lambda n, v: check_scalar(n, v, low=0, high=1)  # noqa: E731
        max_moms = _per_group("max_momentum", max_momentum, optimizer, unit)
        base_moms = _per_group("base_momentum", base_momentum, optimizer, unit)
        self.max_momentum = max_moms if isinstance(max_momentum, (list, tuple)) else max_moms[0]
        self.base_momentum = base_moms if isinstance(base_momentum, (list, tuple)) else base_moms[0]
        defaults = getattr(optimizer, "defaults", {}) or {}
        if self.cycle_momentum and "momentum" not in defaults and "betas" not in defaults:
            raise ValueError("optimizer must support momentum or beta1 with `cycle_momentum` option enabled")
        self.use_beta1 = "betas" in defaults
        p = float(self.pct_start * self.total_steps)
        if self.three_phase:
            self._schedule_phases = [
                (p - 1, "initial_lr", "max_lr", "max_momentum", "base_momentum"),
                (float(2 * self.pct_start * self.total_steps) - 2, "max_lr", "initial_lr",
                 "base_momentum", "max_momentum"),
                (self.total_steps - 1, "initial_lr", "min_lr", "max_momentum", "max_momentum"),
            ]
        else:
            self._schedule_phases = [
                (p - 1, "initial_lr", "max_lr", "max_momentum", "base_momentum"),
                (self.total_steps - 1, "max_lr", "min_lr", "base_momentum", "max_momentum"),
            ]
        # get_lr divides by each phase's length: one of zero steps (torch raises ZeroDivisionError
        # when a step reaches it) is refused here, naming the two settings that make it.
        ends = [0.0] + [phase[0] for phase in self._schedule_phases]
        if any(b - a == 0 for a, b in zip(ends, ends[1:])):
            raise ValueError(f"pct_start={self.pct_start} with total_steps={self.total_steps} gives a phase of "
                             f"the cycle zero steps long (phases end at steps {ends[1:]}): choose them so that "
                             f"every phase has a length")
        last_epoch = check_scalar("last_epoch", last_epoch, low=-1, integer=True)
        if last_epoch == -1:
            for lr, group in zip(max_lrs, optimizer.param_groups):
                group["initial_lr"] = lr / self.div_factor
                group["max_lr"] = lr
                group["min_lr"] = group["initial_lr"] / self.final_div_factor
            if self.cycle_momentum:
                for m, b, group in zip(max_moms, base_moms, optimizer.param_groups):
                    if self.use_beta1:
                        group["betas"] = (m, *group["betas"][1:])
                    else:
                        group["momentum"] = m
                    group["max_momentum"] = m
                    group["base_momentum"] = b
        super().__init__(optimizer, last_epoch)

    def _rebuild(self, hyper, base_lrs):
        return OneCycleLR(_Probe(self.optimizer, base_lrs), **hyper)

    def _adopt(self, checked):
        self._schedule_phases = checked._schedule_phases
        self.use_beta1 = checked.use_beta1

    def _anneal(self, start, end, pct):
        if self.anneal_strategy == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def get_lr(self):
        step_num = self.last_epoch
        if step_num > self.total_steps:
            raise ValueError(f"Tried to step {step_num} times. The specified number of total steps is "
                             f"{self.total_steps}")
        lrs = []
        for group in self.optimizer.param_groups:
            start_step = 0.0
            for i, (end_step, lr0, lr1, m0, m1) in enumerate(self._schedule_phases):
                if step_num <= end_step or i == len(self._schedule_phases) - 1:
                    pct = (step_num - start_step) / (end_step - start_step)
                    computed_lr = self._anneal(group[lr0], group[lr1], pct)
                    if self.cycle_momentum:
                        computed_momentum = self._anneal(group[m0], group[m1], pct)
                    break
                start_step = end_step
            lrs.append(computed_lr)
            if self.cycle_momentum:
                if self.use_beta1:
                    group["betas"] = (computed_momentum, *group["betas"][1:])
                else:
                    group["momentum"] = computed_momentum
        return lrs


class ReduceLROnPlateau(LRScheduler):
    """Multiply the lr by factor when `metric` (``step(metric)``) has not improved for patience epochs."""

    _HYPER = ("mode", "factor", "patience", "threshold", "threshold_mode", "cooldown", "min_lr", "eps")
    _STATE = ("best", "num_bad_epochs", "cooldown_counter")

    def __init__(self, optimizer, mode="min", factor=0.1, patience=10, threshold=1e-4, threshold_mode="rel",
                 cooldown=0, min_lr=0, eps=1e-8):
        _check_optimizer(optimizer)
        self.optimizer = optimizer
        self.factor = check_scalar("factor", factor, low=0, high=1, high_open=True)
        self.mode = check_choice("mode", mode, ("min", "max"))
        self.threshold_mode = check_choice("threshold_mode", threshold_mode, ("rel", "abs"))
        self.threshold = _nonneg("threshold", threshold)
        self.patience = _int("patience", patience, 0)
        self.cooldown = _int("cooldown", cooldown, 0)
        self.eps = _nonneg("eps", eps)
        min_lrs = _per_group("min_lr", min_lr, optimizer, _nonneg)
        self.min_lr = min_lrs if isinstance(min_lr, (list, tuple)) else min_lrs[0]
        self.min_lrs = min_lrs
        self.mode_worse = math.inf if self.mode == "min" else -math.inf
        self.last_epoch = 0
        self._step_count = 0
        self.base_lrs = [group["lr"] for group in optimizer.param_groups]
        self._last_lr = [group["lr"] for group in optimizer.param_groups]
        self.best = self.mode_worse
        self.cooldown_counter = 0
        self.num_bad_epochs = 0

    def _rebuild(self, hyper, base_lrs):
        return ReduceLROnPlateau(_Probe(self.optimizer, base_lrs), **hyper)

    def _adopt(self, checked):
        self.min_lrs, self.mode_worse = checked.min_lrs, checked.mode_worse

    @property
    def in_cooldown(self):
        return self.cooldown_counter > 0

    def _is_better(self, a, best):
        if self.mode == "min" and self.threshold_mode == "rel":
            return a < best * (1.0 - self.threshold)
        if self.mode == "min":
            return a < best - self.threshold
        if self.threshold_mode == "rel":
            return a > best * (self.threshold + 1.0)
        return a > best + self.threshold

    def step(self, metrics):
        """Record one epoch's metric (a real number; NaN counts as no improvement, as in torch)."""
        if isinstance(metrics, (bool,)) or not isinstance(metrics, numbers.Real):
            raise TypeError(f"metrics must be a real number, got {_describe(metrics)}")
        current = float(metrics)
        self._step_count += 1
        self.last_epoch += 1
        if self._is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.in_cooldown:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            for i, group in enumerate(self.optimizer.param_groups):
                old_lr = float(group["lr"])
                new_lr = max(old_lr * self.factor, self.min_lrs[i])
                if old_lr - new_lr > self.eps:
                    group["lr"] = new_lr
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def _check_state(self, label, state_dict, checked):
        best = state_dict["best"]
        if isinstance(best, bool) or not isinstance(best, numbers.Real) or math.isnan(best):
            raise ValueError(f"{label}['best'] must be a number (inf before the first step), got {best!r}")
        return {"best": float(best),
                "num_bad_epochs": _int(f"{label}['num_bad_epochs']", state_dict["num_bad_epochs"], 0),
                "cooldown_counter": _int(f"{label}['cooldown_counter']", state_dict["cooldown_counter"], 0)}


class SequentialLR(LRScheduler):
    """Run schedulers one after another, switching at the milestone epochs (torch's SequentialLR).

    state_dict nests the children's states; load_state_dict needs this SequentialLR built with
    children of the same types (they hold no code in the state either).
    """

    _HYPER = ("milestones",)

    def __init__(self, optimizer, schedulers, milestones, last_epoch=-1):
        _check_optimizer(optimizer)
        if not isinstance(schedulers, (list, tuple)) or len(schedulers) < 1:
            raise ValueError("SequentialLR expects at least one scheduler, but got no scheduler.")
        for i, s in enumerate(schedulers):
            if not isinstance(s, LRScheduler):
                raise TypeError(f"schedulers[{i}] must be a fastopt LRScheduler, got {_describe(s)}")
            if isinstance(s, ReduceLROnPlateau):
                raise ValueError(f"SequentialLR does not support ReduceLROnPlateau (schedulers[{i}]): "
                                 f"it needs a metric at each step")
            if s.optimizer is not optimizer:
                raise ValueError(f"schedulers[{i}] belongs to another optimizer; all must share this one")
        if not isinstance(milestones, (list, tuple)):
            raise TypeError(f"milestones must be a list of ints, got {_describe(milestones)}")
        ms = [_int(f"milestones[{i}]", m, 1) for i, m in enumerate(milestones)]
        if len(ms) != len(schedulers) - 1:
            raise ValueError(f"SequentialLR expects one milestone fewer than schedulers, got "
                             f"{len(schedulers)} schedulers and {len(ms)} milestones")
        if any(b <= a for a, b in zip(ms, ms[1:])):
            raise ValueError(f"milestones must be increasing, got {list(milestones)}")
        self._schedulers = list(schedulers)
        self.milestones = ms
        self.last_epoch = check_scalar("last_epoch", last_epoch, low=-1, integer=True) + 1
        self.optimizer = optimizer
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"]
        for s in self._schedulers:          # undo each child's initial step
            s.last_epoch -= 1
        self._schedulers[0]._initial_step()
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self._step_count = 0
        self._last_lr = self._schedulers[0].get_last_lr()

    def step(self):
        self._step_count += 1
        self.last_epoch += 1
        idx = bisect.bisect_right(self.milestones, self.last_epoch)
        scheduler = self._schedulers[idx]
        if idx > 0 and self.milestones[idx - 1] == self.last_epoch:
            scheduler._update_lr(0)
        else:
            scheduler.step()
        self._last_lr = scheduler.get_last_lr()

    def state_dict(self):
        out = super().state_dict()
        out["_schedulers"] = [s.state_dict() for s in self._schedulers]
        return out

    def load_state_dict(self, state_dict):
        if not isinstance(state_dict, Mapping) or "_schedulers" not in state_dict:
            raise ValueError("state_dict must be a SequentialLR state with a '_schedulers' list")
        children = state_dict["_schedulers"]
        if not isinstance(children, (list, tuple)) or len(children) != len(self._schedulers):
            raise ValueError(f"state_dict['_schedulers'] must hold {len(self._schedulers)} scheduler states")
        own = {k: v for k, v in state_dict.items() if k != "_schedulers"}
        # Validate everything on copies first (children via their own validating load), then apply.
        trial = [_shadow(s) for s in self._schedulers]
        for i, (s, sd) in enumerate(zip(trial, children)):
            try:
                s.load_state_dict(sd)
            except (TypeError, ValueError, KeyError) as exc:
                raise type(exc)(f"state_dict['_schedulers'][{i}]: {exc}") from None
        shell = _shadow(self)
        LRScheduler.load_state_dict(shell, own)
        for s, sd in zip(self._schedulers, children):
            s.load_state_dict(sd)
        LRScheduler.load_state_dict(self, own)

    def _rebuild(self, hyper, base_lrs):
        ms = hyper["milestones"]
        if not isinstance(ms, (list, tuple)) or len(ms) != len(self._schedulers) - 1:
            raise ValueError(f"milestones must list {len(self._schedulers) - 1} epochs, got {ms!r}")
        checked = [_int(f"milestones[{i}]", m, 1) for i, m in enumerate(ms)]
        if any(b <= a for a, b in zip(checked, checked[1:])):
            raise ValueError(f"milestones must be increasing, got {list(ms)}")
        shell = _shadow(self)
        shell.milestones = checked
        return shell


def _shadow(scheduler):
    """A copy of `scheduler` on a stand-in optimizer (for validation that must not touch the real one)."""
    clone = object.__new__(type(scheduler))
    clone.__dict__.update(scheduler.__dict__)
    clone.optimizer = _Probe(scheduler.optimizer)
    if isinstance(scheduler, SequentialLR):
        clone._schedulers = [_shadow(s) for s in scheduler._schedulers]
    return clone


# ---------------------------------------------------------------- specs: schedules named by data
# name -> (class, its arguments a spec may give, default unit). A spec is plain data:
# {"name": "cosine", "T_max": 20, "unit": "epoch"}; "unit" says whether the runner steps the
# scheduler after every iteration or after every epoch (the other arguments count in that unit).
SCHEDULES = {
    "step": (StepLR, ("step_size", "gamma"), "epoch"),
    "multistep": (MultiStepLR, ("milestones", "gamma"), "epoch"),
    "exponential": (ExponentialLR, ("gamma",), "epoch"),
    "linear": (LinearLR, ("start_factor", "end_factor", "total_iters"), "epoch"),
    "cosine": (CosineAnnealingLR, ("T_max", "eta_min"), "epoch"),
    "cosine_restarts": (CosineAnnealingWarmRestarts, ("T_0", "T_mult", "eta_min"), "epoch"),
    "onecycle": (OneCycleLR, ("max_lr", "total_steps", "pct_start", "anneal_strategy", "cycle_momentum",
                              "base_momentum", "max_momentum", "div_factor", "final_div_factor",
                              "three_phase"), "iteration"),
    "plateau": (ReduceLROnPlateau, ("factor", "patience", "threshold", "threshold_mode", "cooldown",
                                    "min_lr", "eps", "monitor"), "epoch"),
}
_UNITS = ("epoch", "iteration")
_MONITORS = {"val_acc": "max", "loss": "min"}   # what ReduceLROnPlateau watches in a runner


def _parse_value(text):
    if text.startswith("[") and text.endswith("]"):
        inner = text[1:-1].strip()
        return [_parse_value(p.strip()) for p in _split_top(inner)] if inner else []
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _split_top(text):
    """Split at commas that are not inside [...]."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise ValueError(f"unbalanced ']' in {text!r}")
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth != 0:
        raise ValueError(f"unbalanced '[' in {text!r}")
    parts.append(text[start:])
    return parts


def parse(text):
    """``"name"`` or ``"name:key=value,key=value"`` -> a spec dict, checked against the name's arguments.

    Values are ints, floats, true/false, words (``anneal_strategy=linear``) or bracketed lists
    (``milestones=[5,10]``). ValueError (naming the problem) for anything malformed; the values
    themselves are checked when the spec is built.
    """
    if not isinstance(text, str):
        raise TypeError(f"a schedule spec must be a str such as 'cosine:T_max=20', got {_describe(text)}")
    name, sep, rest = text.strip().partition(":")
    name = name.strip()
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; expected one of {', '.join(SCHEDULES)} "
                         f"(e.g. 'cosine:T_max=20', 'step:step_size=5,gamma=0.5')")
    spec = {"name": name}
    if sep and not rest.strip():
        raise ValueError(f"schedule {text!r} has ':' but no key=value arguments after it")
    for part in (_split_top(rest) if rest.strip() else []):
        key, eq, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not eq or not key or not value:
            raise ValueError(f"schedule argument {part.strip()!r} in {text!r} must be key=value")
        if key in spec:
            raise ValueError(f"schedule argument {key!r} is given twice in {text!r}")
        spec[key] = _parse_value(value)
    _check_spec_keys(spec)
    return spec


def _check_spec_keys(spec):
    if not isinstance(spec, Mapping) or "name" not in spec:
        raise TypeError(f"a schedule spec must be a dict with a 'name', got {_describe(spec)}")
    name = spec["name"]
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; expected one of {', '.join(SCHEDULES)}")
    accepted = SCHEDULES[name][1] + ("unit",)
    unknown = [k for k in spec if k != "name" and k not in accepted]
    if unknown:
        raise ValueError(f"schedule {name!r} does not take {', '.join(map(repr, unknown))}; "
                         f"it takes {', '.join(accepted)}")


def build(spec, optimizer, *, iterations_per_epoch=1, epochs=None):
    """A :class:`ScheduleRunner` for `spec` (a dict from :func:`parse`, or its text) on `optimizer`.

    iterations_per_epoch / epochs: OneCycleLR's default total_steps (epochs * iterations_per_epoch
    when its unit is "iteration", else epochs); its cycle_momentum defaults to whether the optimizer
    has a momentum or betas. ReduceLROnPlateau's "monitor" is "val_acc" (mode max, the default) or
    "loss" (mode min). Errors: TypeError / ValueError naming the argument.
    """
    if isinstance(spec, str):
        spec = parse(spec)
    _check_spec_keys(spec)
    iterations_per_epoch = _int("iterations_per_epoch", iterations_per_epoch, 1)
    if epochs is not None:
        epochs = _int("epochs", epochs, 1)
    cls, _, default_unit = SCHEDULES[spec["name"]]
    unit = check_choice("unit", spec.get("unit", default_unit), _UNITS)
    kwargs = {k: v for k, v in spec.items() if k not in ("name", "unit")}
    monitor = None
    if cls is OneCycleLR:
        if "total_steps" not in kwargs:
            if epochs is None:
                raise ValueError("schedule 'onecycle' needs total_steps (or the number of epochs from the caller)")
            kwargs["total_steps"] = epochs * (iterations_per_epoch if unit == "iteration" else 1)
        if "cycle_momentum" not in kwargs:
            defaults = getattr(optimizer, "defaults", {}) or {}
            kwargs["cycle_momentum"] = "momentum" in defaults or "betas" in defaults
    if cls is ReduceLROnPlateau:
        monitor = check_choice("monitor", kwargs.pop("monitor", "val_acc"), tuple(_MONITORS))
        kwargs["mode"] = _MONITORS[monitor]
    return ScheduleRunner(cls(optimizer, **kwargs), unit, monitor)


class ScheduleRunner:
    """A scheduler and when to step it, for training loops that drive it from events.

    Call ``after_iteration()`` after every optimizer step and ``after_epoch(val_acc=..., loss=...)``
    at the end of every epoch; the runner steps its scheduler in the one that matches its unit
    (ReduceLROnPlateau: at epoch ends only, with the monitored metric).
    """

    def __init__(self, scheduler, unit, monitor=None):
        if not isinstance(scheduler, LRScheduler):
            raise TypeError(f"scheduler must be a fastopt LRScheduler, got {_describe(scheduler)}")
        self.scheduler = scheduler
        self.unit = check_choice("unit", unit, _UNITS)
        self.monitor = None
        if isinstance(scheduler, ReduceLROnPlateau):
            self.monitor = check_choice("monitor", monitor, tuple(_MONITORS))
            self.unit = "epoch"
        elif monitor is not None:     # a monitor would route every step through the plateau branch
            raise ValueError(f"monitor is for ReduceLROnPlateau only; {type(scheduler).__name__} steps per "
                             f"{self.unit} without a metric: pass monitor=None")

    def after_iteration(self):
        if self.unit == "iteration" and self.monitor is None:
            self.scheduler.step()

    def after_epoch(self, val_acc=None, loss=None):
        if self.monitor is not None:
            metric = {"val_acc": val_acc, "loss": loss}[self.monitor]
            if metric is None:
                raise ValueError(f"ReduceLROnPlateau watches {self.monitor}; pass after_epoch({self.monitor}=...)")
            self.scheduler.step(metric)
        elif self.unit == "epoch":
            self.scheduler.step()

    def get_last_lr(self):
        return self.scheduler.get_last_lr()

    def state_dict(self):
        return {"unit": self.unit, "monitor": self.monitor, "scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state_dict):
        if not isinstance(state_dict, Mapping) or set(state_dict) != {"unit", "monitor", "scheduler"}:
            raise ValueError("state_dict must be a ScheduleRunner state {unit, monitor, scheduler}")
        if state_dict["unit"] != self.unit or state_dict["monitor"] != self.monitor:
            raise ValueError(f"state_dict steps per {state_dict['unit']} watching {state_dict['monitor']}; "
                             f"this runner steps per {self.unit} watching {self.monitor}")
        self.scheduler.load_state_dict(state_dict["scheduler"])
