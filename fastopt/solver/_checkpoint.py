"""The Solver's checkpoint: what is saved, the schema a loaded one must pass, and the restore.

The saved object (plain data and arrays; fastopt.checkpoint writes it atomically, checksummed) holds
CS231n's keys -- ``model`` (the model state, its ``params`` among it), ``update_rule`` (a name),
``lr_decay``, ``optim_config``, ``batch_size``, ``num_train_samples``, ``num_val_samples``,
``epoch``, ``loss_history``, ``train_acc_history``, ``val_acc_history`` -- beside the Solver's other
keyword arguments (a schedule as its fastopt.optim.lr_scheduler spec, a plain dict) and what an
exact resume needs: ``iteration``, ``optimizer`` (its state_dict), ``schedule`` (the scheduler's
state_dict, plain data, or None), ``rng`` (the draws' state), ``best_val_acc``, ``best_params``,
``best_model_state``; and, since version 5, the monitoring (``monitor``: its plain spec,
``monitor_history``, ``diagnoses``, ``stopped``), ``early_stopping`` and ``best_epoch``, ``augment``
(an Augment's plain spec: options string, image shape, seed).

A loaded checkpoint never chooses code: names are looked up in fastopt's own tables (_registry),
a user's own rule/class/schedule must be passed in by the caller. restore_plan() validates every
field before anything is assigned and returns the commit; the model validates its own state, and
the optimizer and its scheduler are new ones that have loaded their states (each through its
validating load_state_dict) before they replace the Solver's.
"""
import copy
import math
import numbers

import numpy as np

from . import _evaluation, _monitor, _options, _registry
from ._sampling import draws_from_state

FORMAT = "fastopt.Solver"
VERSION = 5   # 3: lr_schedule is a fastopt.optim.lr_scheduler spec, the scheduler's state is stored;
# 4: evaluate_averaged is stored; 5: monitor, early_stopping, augment and their state
# Constructor arguments stored as they are (update_rule by name, lr_schedule as its spec).
_STORED_KWARGS = ("optim_config", "lr_decay", "lr_schedule_unit", "batch_size", "num_epochs",
                  "num_train_samples", "num_val_samples", "checkpoint_name", "print_every", "verbose", "seed",
                  "evaluate_averaged", "monitor", "early_stopping")
_STATE_KEYS = ("format", "version", "update_rule", "lr_schedule", "lr_schedule_custom", "model", "epoch",
               "iteration", "optimizer", "schedule", "rng", "loss_history", "train_acc_history", "val_acc_history",
               "best_val_acc", "best_params", "best_model_state", "augment", "monitor_history", "diagnoses",
               "stopped", "best_epoch") + _STORED_KWARGS


def build(solver):
    """The checkpoint object of `solver`'s complete training state."""
    spec = solver._schedule_kind == "spec"  # a user's factory or rate function is not stored
    state = {"format": FORMAT, "version": VERSION, "update_rule": _registry.rule_name(solver._rule),
             "lr_schedule": copy.deepcopy(solver.lr_schedule) if spec else None,
             "lr_schedule_custom": solver.lr_schedule is not None and not spec,
             "schedule": None if solver._schedule is None else solver._schedule.state_dict()}
    for key in _STORED_KWARGS:
        state[key] = copy.deepcopy(getattr(solver, key))
    state.update({
        "model": _evaluation.model_state(solver.model), "epoch": solver.epoch, "iteration": solver.iteration,
        "optimizer": solver.optimizer.state_dict(), "rng": solver._draws.state(),
        "loss_history": list(solver.loss_history), "train_acc_history": list(solver.train_acc_history),
        "val_acc_history": list(solver.val_acc_history), "best_val_acc": solver.best_val_acc,
        "best_params": solver.best_params, "best_model_state": solver._best_model_state,
        "augment": _options.augment_spec(solver.augment), "monitor_history": copy.deepcopy(solver.monitor_history),
        "diagnoses": copy.deepcopy(solver.diagnoses), "stopped": copy.deepcopy(solver.stopped),
        "best_epoch": solver._best_epoch,
    })
    return state


def _require(condition, message):
    if not condition:
        raise ValueError(message)


def check_header(state, source):
    _require(isinstance(state, dict) and state.get("format") == FORMAT,
             f"{source} is not a fastopt Solver checkpoint")
    _require(state.get("version") == VERSION,
             f"{source} has version {state.get('version')!r:.40}; this fastopt reads version {VERSION}")
    keys = set(state)
    _require(keys == set(_STATE_KEYS), f"{source} does not have the Solver checkpoint's fields: missing "
             f"{sorted(set(_STATE_KEYS) - keys)}, unexpected {sorted(map(repr, keys - set(_STATE_KEYS)))[:10]}")


def solver_kwargs(state, source, overrides):
    """Constructor kwargs for Solver.from_checkpoint: the stored ones, rule and schedule resolved by
    name in fastopt's tables, then `overrides` (which must supply a user's own rule or schedule)."""
    check_header(state, source)
    _check_optim_config(state["optim_config"], source)
    kw = {key: copy.deepcopy(state[key]) for key in _STORED_KWARGS}
    kw["augment"] = copy.deepcopy(state["augment"])   # plain data: check_options rebuilds the Augment
    if "update_rule" not in overrides:
        name = state["update_rule"]
        if isinstance(name, str) and name.startswith(_registry.CUSTOM):
            raise ValueError(f"{source} was trained with the user's own update rule {name[len(_registry.CUSTOM):]!r:.200}, "
                             f"which a checkpoint never stores: pass update_rule=<it> to from_checkpoint")
        try:
            kw["update_rule"] = _registry.resolve_rule(name)
        except ValueError as exc:
            raise ValueError(f"{source}: update_rule: {exc}") from None
    _require(type(state["lr_schedule_custom"]) is bool, f"{source}: lr_schedule_custom must be a bool")
    if "lr_schedule" not in overrides:
        _require(state["lr_schedule_custom"] is False,
                 f"{source} was trained with a custom lr_schedule callable, which is not stored: "
                 f"pass lr_schedule=... to from_checkpoint")
        kw["lr_schedule"] = copy.deepcopy(state["lr_schedule"])  # a spec: check_options checks it
    kw.update(overrides)
    try:
        _options.check_options(kw)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{source}: {exc}") from None
    return kw


# ---------------------------------------------------------------- the schema
def _int(source, key, value):
    _require(isinstance(value, int) and not isinstance(value, bool) and value >= 0,
             f"{source}: {key} must be an int >= 0, got {value!r:.60}")
    return value


def _floats(source, key, values, unit=False):
    _require(isinstance(values, list) and all(type(v) is float for v in values),
             f"{source}: {key} must be a list of floats")
    if unit:
        _require(all(0.0 <= v <= 1.0 for v in values), f"{source}: {key} must hold accuracies in [0, 1]")
    return values


def _check_params_like(what, saved, params):
    _require(isinstance(saved, dict) and set(saved) == set(params),
             f"{what} have keys {sorted(map(repr, saved)) if isinstance(saved, dict) else type(saved).__name__}, "
             f"the model has {sorted(params)}")
    for k, v in saved.items():
        ref = params[k]
        _require(isinstance(v, np.ndarray) and v.shape == ref.shape and v.dtype == ref.dtype,
                 f"{what}[{k!r}] is {getattr(v, 'dtype', type(v).__name__)} {getattr(v, 'shape', '')}, "
                 f"the model's is {ref.dtype} {ref.shape}")


def _check_same_structure(what, saved, ref):
    """`saved` shaped like `ref`: same dict keys and list lengths, arrays of the same dtype and shape,
    the other values equal (the best snapshot's hyperparameters are the model state's)."""
    if isinstance(ref, dict):
        _require(isinstance(saved, dict) and set(saved) == set(ref), f"{what} must have the keys {sorted(map(repr, ref))}")
        for k in ref:
            _check_same_structure(f"{what}[{k!r}]", saved[k], ref[k])
    elif isinstance(ref, list):
        _require(isinstance(saved, list) and len(saved) == len(ref), f"{what} must be a list of {len(ref)}")
        for i, (s, r) in enumerate(zip(saved, ref)):
            _check_same_structure(f"{what}[{i}]", s, r)
    elif isinstance(ref, np.ndarray):
        _require(isinstance(saved, np.ndarray) and saved.dtype == ref.dtype and saved.shape == ref.shape,
                 f"{what} must be {ref.dtype} {ref.shape}")
    else:
        _require(type(saved) is type(ref) and saved == ref, f"{what} must be {ref!r:.60}")


def _hyperparameter(v):
    if isinstance(v, str):            # the one word an option takes: ema="polyak"
        return v == "polyak"
    if isinstance(v, (list, tuple)):  # betas
        return all(_hyperparameter(x) and not isinstance(x, (list, tuple)) for x in v)
    return isinstance(v, numbers.Real) and (isinstance(v, bool) or math.isfinite(v))


def _check_optim_config(cfg, source):
    """Stored hyperparameters are plain values (finite numbers, flags, pairs, "polyak"); the rule or class
    they are handed to checks their ranges."""
    _require(isinstance(cfg, dict) and all(isinstance(k, str) and _hyperparameter(v) for k, v in cfg.items()),
             f"{source}: optim_config must map names to finite numbers, flags, pairs of numbers or 'polyak'")


def _check_kwargs(solver, state, source):
    """The stored constructor arguments must be valid ones (the same checks as the constructor)
    and name this Solver's update rule."""
    mine = _registry.rule_name(solver._rule)
    _require(state["update_rule"] == mine, f"{source} was written with update_rule {state['update_rule']!r:.200}; "
             f"this Solver uses {mine!r}")
    stored = {key: state[key] for key in _STORED_KWARGS}
    stored["augment"] = state["augment"]
    _require(type(state["lr_schedule_custom"]) is bool, f"{source}: lr_schedule_custom must be a bool")
    # A user's own schedule is not stored: this Solver's stands in for it.
    stored["lr_schedule"] = solver.lr_schedule if state["lr_schedule_custom"] else state["lr_schedule"]
    try:
        _options.check_options(stored)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{source}: {exc}") from None
    _check_optim_config(state["optim_config"], source)


def _restore_schedule(schedule, saved, source):
    """Load the saved scheduler state into the new runner `schedule` (its own validation)."""
    if schedule is None or saved is None:
        _require(schedule is None and saved is None,
                 f"{source} was written {'with' if saved is not None else 'without'} a learning-rate "
                 f"schedule; this Solver has {'one' if schedule is not None else 'none'}")
        return
    _require(isinstance(saved, dict), f"{source}: schedule must be a scheduler state (a dict), "
             f"got {type(saved).__name__}")
    try:
        schedule.load_state_dict(saved)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{source}: schedule state does not fit {type(schedule.scheduler).__name__}: {exc}") from None


def restore_plan(solver, state, source):
    """Validate `state` completely against `solver`; return commit(), which applies it."""
    check_header(state, source)
    _check_kwargs(solver, state, source)
    params = solver.model.params
    iteration = _int(source, "iteration", state["iteration"])
    epoch = _int(source, "epoch", state["epoch"])
    _require(epoch <= iteration, f"{source}: epoch {epoch} is more than the {iteration} iterations done")
    losses = _floats(source, "loss_history", state["loss_history"])
    train_acc = _floats(source, "train_acc_history", state["train_acc_history"], unit=True)
    val_acc = _floats(source, "val_acc_history", state["val_acc_history"], unit=True)
    _require(len(losses) == iteration,
             f"{source}: loss_history has {len(losses)} entries for {iteration} iterations")
    _require(len(train_acc) == len(val_acc), f"{source}: train and val accuracy histories differ in length")
    best_acc = state["best_val_acc"]
    _require(type(best_acc) is float and best_acc == max([0.0] + val_acc),
             f"{source}: best_val_acc must be the best of val_acc_history (a float), got {best_acc!r:.60}")

    model_state = state["model"]
    _require(isinstance(model_state, dict) and "params" in model_state, f"{source}: model state has no params")
    _check_params_like(f"{source}: model params", model_state["params"], params)
    best = state["best_params"]
    _require(isinstance(best, dict), f"{source}: best_params must be a dict")
    if best:
        _check_params_like(f"{source}: best_params", best, params)
    best_state = state["best_model_state"]
    if best_state is not None:
        ref = {k: v for k, v in model_state.items() if k != "rng"}
        _check_same_structure(f"{source}: best_model_state", best_state, ref)
    draws = draws_from_state(state["rng"], f"{source}: rng")
    _monitor.check_history(state["monitor_history"], state["diagnoses"], state["stopped"], iteration, source)
    best_epoch = _int(source, "best_epoch", state["best_epoch"])
    _require(best_epoch <= epoch, f"{source}: best_epoch {best_epoch} is after epoch {epoch}")

    optimizer = solver._make_optimizer()
    schedule = solver._make_schedule(optimizer)  # first: building sets the new optimizer's first lr
    try:
        optimizer.load_state_dict(state["optimizer"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{source}: optimizer state does not fit {_registry.rule_name(solver._rule)}: {exc}") from exc
    _restore_schedule(schedule, state["schedule"], source)

    def commit():
        try:  # the model validates its own extras (statistics, RNG) before it copies anything
            _evaluation.load_model_state(solver.model, model_state)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{source}: model state: {exc}") from exc
        solver.optimizer, solver._schedule = optimizer, schedule
        draws.set_state(state["rng"])
        solver._draws = draws
        solver.epoch, solver._t = epoch, iteration
        solver.loss_history, solver.train_acc_history = list(losses), list(train_acc)
        solver.val_acc_history, solver.best_val_acc = list(val_acc), best_acc
        solver.best_params = {k: v.copy() for k, v in best.items()}
        solver._best_model_state = copy.deepcopy(best_state)
        solver.monitor_history = copy.deepcopy(state["monitor_history"])
        solver.diagnoses = copy.deepcopy(state["diagnoses"])
        solver.stopped = copy.deepcopy(state["stopped"])
        solver._best_epoch = best_epoch
    return commit
