"""CS231n's Solver: minibatch training of a model with an update rule, with exact checkpoint/resume.

    solver = Solver(model, data, update_rule="adam", optim_config={"learning_rate": 1e-3},
                    lr_decay=0.95, num_epochs=10, batch_size=100, seed=0)
    solver.train()

`model` needs ``params`` (a dict or any Mapping name -> array, e.g. fastopt.flat's views into one
buffer; updated IN PLACE: the Solver never rebinds an entry)
and ``loss(X, y=None)`` (scores without y; ``(loss, grads)`` with y). When the model also has
``state_dict()`` / ``load_state_dict()`` (fastopt.nn.FullyConnectedNet does: params, batchnorm
running statistics, dropout RNG) checkpoints and the best-model snapshot use them.

`data`: dict with X_train, y_train, X_val, y_val (X: arrays with N rows, y: N integer labels).

Keyword arguments (anything else raises ValueError, as in CS231n):
    update_rule      name of a rule in fastopt.optim.RULES ("sgd", "sgd_momentum", "nesterov_momentum",
                     "adagrad", "rmsprop", "adam"; default "sgd"), each parameter getting its own deep
                     copy of optim_config; OR an optimizer class (fastopt.optim.Adam, SGD, ...) built
                     once over model.params, its keyword arguments mapped from optim_config
                     (learning_rate -> lr, epsilon -> eps, beta1/beta2 -> betas, decay_rate -> alpha;
                     other keys passed as they are).
    optim_config     dict of hyperparameters (default {}).
    lr_decay         float in (0, 1]: the learning rate is multiplied by it after each epoch (default 1).
    lr_schedule      a fastopt.schedules schedule (or any callable (t, base_lr) -> lr), applied before
                     every step with base_lr = optim_config["learning_rate"] (or "lr"); exclusive
                     with lr_decay != 1.
    lr_schedule_unit "epoch" (default: t = completed epochs) or "iteration" (t = completed iterations).
    batch_size=100, num_epochs=10, num_train_samples=1000, num_val_samples=None (None: all),
    checkpoint_name  None, or a path prefix: after every epoch the Solver writes
                     "{checkpoint_name}_epoch_{epoch}.pkl" (one file per epoch, as CS231n).
    print_every=10, verbose=True,
    seed             None or int >= 0: seeds minibatch sampling and accuracy subsampling (two
                     independent streams). Dropout masks come from the model's own seeded Generator.
    callback         None or callable(solver, event, info) -- see below.

Minibatches are drawn WITH replacement (CS231n: ``np.random.choice(num_train, batch_size)``);
there are max(num_train // batch_size, 1) iterations per epoch. Accuracy is checked after the first
iteration and at the end of every epoch; the best validation accuracy keeps copies of the params
(``best_params``) and of the model's normalization statistics, and ``train()`` copies them back into
the model (in place) when it returns.

Callback contract: ``callback(solver, event, info)`` with `info` a dict:
    "begin"      before the first step:  iteration (steps already done, > 0 after a resume),
                 num_iterations, iterations_per_epoch, epoch, num_epochs
    "iteration"  after every step:       iteration (1-based count of steps done), num_iterations,
                 epoch (epochs completed before this step), loss, lr
    "eval"       after each accuracy check (after iteration 1 and at each epoch end):
                 iteration, num_iterations, epoch, num_epochs, epoch_end (bool), train_acc, val_acc,
                 best_val_acc, lr, checkpoint (path written at this epoch end, or None)
    "end"        when train() returns:   iteration, num_iterations, epoch, best_val_acc
An exception raised by the callback propagates out of train(); the per-epoch checkpoint is written
before the "eval" event, so stopping there loses nothing.

Checkpoints (see fastopt.checkpoint for the file format; atomic and checksummed) hold the model
state, optimizer state (the per-parameter configs, or optimizer.state_dict() plus the current lrs),
epoch and iteration, the RNG states, the histories, best_val_acc, best_params and the kwargs.
``solver.load_checkpoint(path)`` restores one into a Solver built like the original;
``Solver.from_checkpoint(path, model, data, **overrides)`` builds that Solver from the stored kwargs.
A resumed run reproduces the uninterrupted run bit for bit.
"""
import copy
import importlib
import os
from collections.abc import Mapping

import numpy as np

from . import _backend
from . import checkpoint as _ckpt
from . import optim
from . import schedules as _schedules
from ._validation import check_bool, check_choice, check_rng_state, check_scalar

CHECKPOINT_FORMAT = "fastopt.Solver"
CHECKPOINT_VERSION = 1

_DEFAULTS = {
    "update_rule": "sgd", "optim_config": None, "lr_decay": 1.0, "lr_schedule": None,
    "lr_schedule_unit": "epoch", "batch_size": 100, "num_epochs": 10, "num_train_samples": 1000,
    "num_val_samples": None, "checkpoint_name": None, "print_every": 10, "verbose": True,
    "seed": None, "callback": None,
}
_DATA_KEYS = ("X_train", "y_train", "X_val", "y_val")
# CS231n config names -> torch-style constructor names, for optimizer classes.
_CLASS_KEYS = {"learning_rate": "lr", "epsilon": "eps", "decay_rate": "alpha"}
_SCHEDULE_CLASSES = (_schedules.StepLR, _schedules.ExponentialLR, _schedules.CosineLR,
                     _schedules.LinearWarmup)


def _check_optional(name, value, **kw):
    return None if value is None else check_scalar(name, value, **kw)


def _check_data(data):
    if not isinstance(data, Mapping):
        raise TypeError(f"data must be a dict with keys {_DATA_KEYS}, got {type(data).__name__}")
    missing = [k for k in _DATA_KEYS if k not in data]
    if missing:
        raise ValueError(f"data is missing {missing}; it needs {list(_DATA_KEYS)}")
    for split in ("train", "val"):
        X, y = data[f"X_{split}"], data[f"y_{split}"]
        if not isinstance(X, np.ndarray) or X.ndim < 2:
            raise TypeError(f"data['X_{split}'] must be an ndarray of shape (N, ...), got "
                            f"{type(X).__name__}{getattr(X, 'shape', '')}")
        if not isinstance(y, np.ndarray) or y.dtype.kind not in "iu" or y.ndim != 1:
            raise TypeError(f"data['y_{split}'] must be a 1-D ndarray of integer labels, got "
                            f"{type(y).__name__} {getattr(y, 'dtype', '')}{getattr(y, 'shape', '')}")
        if X.shape[0] != y.shape[0]:
            raise ValueError(f"data['X_{split}'] has {X.shape[0]} rows but data['y_{split}'] has "
                             f"{y.shape[0]} labels")
        if X.shape[0] == 0:
            raise ValueError(f"data['X_{split}'] is empty")
    return {k: data[k] for k in _DATA_KEYS}


def _class_path(cls):
    return f"{cls.__module__}:{cls.__qualname__}"


def _is_builtin_schedule(s):
    if type(s) not in _SCHEDULE_CLASSES:
        return False
    return not isinstance(s, _schedules.LinearWarmup) or s.after is None or _is_builtin_schedule(s.after)


def _class_kwargs(optim_config):
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


class Solver:
    """Train `model` on `data` (see the module docstring for every keyword argument)."""

    def __init__(self, model, data, **kwargs):
        if not isinstance(getattr(model, "params", None), Mapping) or not callable(getattr(model, "loss", None)):
            raise TypeError(f"model must have a mapping `params` (name -> array) and a method `loss(X, y=None)`, "
                            f"got {type(model).__name__}")
        self.model = model
        data = _check_data(data)
        unknown = sorted(set(kwargs) - set(_DEFAULTS))
        if unknown:
            raise ValueError(f"Unrecognized arguments {', '.join(unknown)}; "
                             f"accepted: {', '.join(sorted(_DEFAULTS))}")
        kw = {**_DEFAULTS, **kwargs}

        rule = kw["update_rule"]
        if isinstance(rule, str):
            if rule not in optim.RULES:
                raise ValueError(f'Invalid update_rule "{rule}": expected one of {sorted(optim.RULES)} '
                                 f"or an optimizer class such as fastopt.optim.Adam")
        elif not isinstance(rule, type):
            raise TypeError(f"update_rule must be a rule name (str) or an optimizer class, "
                            f"got {type(rule).__name__}")
        optim_config = {} if kw["optim_config"] is None else kw["optim_config"]
        if not isinstance(optim_config, dict):
            raise TypeError(f"optim_config must be a dict, got {type(optim_config).__name__}")
        lr_decay = check_scalar("lr_decay", kw["lr_decay"], low=0, low_open=True, high=1)
        schedule = kw["lr_schedule"]
        if schedule is not None:
            if not callable(schedule):
                raise TypeError(f"lr_schedule must be callable (t, base_lr) -> lr, got {type(schedule).__name__}")
            if lr_decay != 1:
                raise ValueError("give lr_schedule or lr_decay, not both (lr_decay must be 1 with a schedule)")
        check_choice("lr_schedule_unit", kw["lr_schedule_unit"], ("epoch", "iteration"))
        batch_size = check_scalar("batch_size", kw["batch_size"], low=1, integer=True)
        num_epochs = check_scalar("num_epochs", kw["num_epochs"], low=0, integer=True)
        num_train_samples = _check_optional("num_train_samples", kw["num_train_samples"], low=1, integer=True)
        num_val_samples = _check_optional("num_val_samples", kw["num_val_samples"], low=1, integer=True)
        name = kw["checkpoint_name"]
        if name is not None and not isinstance(name, (str, os.PathLike)):
            raise TypeError(f"checkpoint_name must be a str path prefix or None, got {type(name).__name__}")
        print_every = check_scalar("print_every", kw["print_every"], low=1, integer=True)
        verbose = check_bool("verbose", kw["verbose"])
        seed = _check_optional("seed", kw["seed"], low=0, integer=True)
        callback = kw["callback"]
        if callback is not None and not callable(callback):
            raise TypeError(f"callback must be callable(solver, event, info) or None, got {type(callback).__name__}")

        base_lr = optim_config.get("learning_rate", optim_config.get("lr"))
        if schedule is not None and base_lr is None:
            raise ValueError("lr_schedule needs the base rate in optim_config['learning_rate']")

        self.X_train, self.y_train = data["X_train"], data["y_train"]
        self.X_val, self.y_val = data["X_val"], data["y_val"]
        self.update_rule = rule
        self.optim_config = optim_config
        self.lr_decay = lr_decay
        self.lr_schedule = schedule
        self.lr_schedule_unit = kw["lr_schedule_unit"]
        self.batch_size = batch_size
        self.num_epochs = num_epochs
        self.num_train_samples = num_train_samples
        self.num_val_samples = num_val_samples
        self.checkpoint_name = None if name is None else os.fspath(name)
        self.print_every = print_every
        self.verbose = verbose
        self.seed = seed
        self.callback = callback
        self._base_lr = base_lr
        self._reset()

    # ---------------------------------------------------------------- state
    def _reset(self):
        self.epoch = 0
        self.best_val_acc = 0.0
        self.best_params = {}
        self._best_model_state = None
        self.loss_history = []
        self.train_acc_history = []
        self.val_acc_history = []
        self._t = 0  # steps taken
        batch_ss, eval_ss = np.random.SeedSequence(self.seed).spawn(2)
        self.rng = np.random.default_rng(batch_ss)        # minibatch sampling
        self.eval_rng = np.random.default_rng(eval_ss)    # accuracy subsampling
        if isinstance(self.update_rule, str):
            self._rule = optim.RULES[self.update_rule]
            self.optim_configs = {p: copy.deepcopy(self.optim_config) for p in self.model.params}
            self.optimizer = None
        else:
            self._rule = None
            self.optim_configs = None
            self.optimizer = self._make_optimizer()
            if self._base_lr is None:
                self._base_lr = self.optimizer.param_groups[0]["lr"]

    def _make_optimizer(self):
        # A plain dict of the model's own arrays (params may be a read-only Mapping of views into
        # one flat buffer, fastopt.flat): the optimizer updates exactly those arrays in place.
        return self.update_rule(dict(self.model.params), **_class_kwargs(self.optim_config))

    @property
    def iteration(self):
        """Steps taken so far (survives checkpoint/resume)."""
        return self._t

    @property
    def iterations_per_epoch(self):
        return max(self.X_train.shape[0] // self.batch_size, 1)

    @property
    def lr(self):
        """The current learning rate (None before a functional rule has set its default)."""
        if self.optimizer is not None:
            return self.optimizer.param_groups[0]["lr"]
        first = next(iter(self.optim_configs.values()), {})
        return first.get("learning_rate")

    def _set_lr(self, lr):
        if self.optimizer is not None:
            for group in self.optimizer.param_groups:
                group["lr"] = lr
        else:
            for cfg in self.optim_configs.values():
                cfg["learning_rate"] = lr

    def _decay_lr(self):
        if self.optimizer is not None:
            for group in self.optimizer.param_groups:
                group["lr"] *= self.lr_decay
        else:
            for cfg in self.optim_configs.values():
                cfg["learning_rate"] *= self.lr_decay

    def _emit(self, event, info):
        if self.callback is not None:
            self.callback(self, event, info)

    # ---------------------------------------------------------------- training
    def _step(self):
        """One minibatch update; returns the loss."""
        num_train = self.X_train.shape[0]
        idx = self.rng.integers(0, num_train, size=self.batch_size)
        X_batch, y_batch = self.X_train[idx], self.y_train[idx]
        if self.lr_schedule is not None:
            t = self._t if self.lr_schedule_unit == "iteration" else self._t // self.iterations_per_epoch
            self._set_lr(self.lr_schedule(t, self._base_lr))

        # The update runs between the model's matmuls: kernels yield the cores to NumPy's BLAS.
        with _backend.beside_blas():
            loss, grads = self.model.loss(X_batch, y_batch)
            self.loss_history.append(float(loss))
            if self.optimizer is not None:
                self.optimizer.step(grads)
            else:
                params = self.model.params
                for p, w in params.items():
                    next_w, cfg = self._rule(w, grads[p], self.optim_configs[p])
                    if next_w is not w:  # a rule that returned a new array: keep the param's identity
                        np.copyto(w, next_w)
                    self.optim_configs[p] = cfg
        return float(loss)

    def check_accuracy(self, X, y, num_samples=None, batch_size=100):
        """Fraction of `y` the model predicts on `X` (test mode), on a random subsample of
        `num_samples` rows (drawn with replacement from the Solver's eval Generator) when X has more."""
        if not isinstance(X, np.ndarray) or X.ndim < 2:
            raise TypeError(f"X must be an ndarray of shape (N, ...), got {type(X).__name__}")
        if not isinstance(y, np.ndarray) or y.shape != (X.shape[0],):
            raise ValueError(f"y must be an ndarray of shape ({X.shape[0]},), got {getattr(y, 'shape', type(y).__name__)}")
        num_samples = _check_optional("num_samples", num_samples, low=1, integer=True)
        batch_size = check_scalar("batch_size", batch_size, low=1, integer=True)
        N = X.shape[0]
        if num_samples is not None and N > num_samples:
            idx = self.eval_rng.integers(0, N, size=num_samples)
            X, y = X[idx], y[idx]
            N = num_samples
        preds = []
        for start in range(0, N, batch_size):
            scores = self.model.loss(X[start:start + batch_size])
            preds.append(np.argmax(scores, axis=1))
        return float(np.mean(np.concatenate(preds) == y))

    def train(self):
        """Run until num_epochs epochs are done (continuing from where a checkpoint left off), then
        copy the best params (and normalization statistics) back into the model."""
        ipe = self.iterations_per_epoch
        num_iterations = self.num_epochs * ipe
        self._emit("begin", {"iteration": self._t, "num_iterations": num_iterations,
                             "iterations_per_epoch": ipe, "epoch": self.epoch,
                             "num_epochs": self.num_epochs})
        for t in range(self._t, num_iterations):
            loss = self._step()
            self._t = t + 1
            if self.verbose and t % self.print_every == 0:
                print(f"(Iteration {t + 1} / {num_iterations}) loss: {loss:f}")
            self._emit("iteration", {"iteration": t + 1, "num_iterations": num_iterations,
                                     "epoch": self.epoch, "loss": loss, "lr": self.lr})
            epoch_end = (t + 1) % ipe == 0
            if epoch_end:
                self.epoch += 1
                if self.lr_decay != 1:
                    self._decay_lr()
            if t == 0 or t == num_iterations - 1 or epoch_end:
                self._evaluate(epoch_end, num_iterations)
        self._restore_best()
        self._emit("end", {"iteration": self._t, "num_iterations": num_iterations,
                           "epoch": self.epoch, "best_val_acc": self.best_val_acc})

    def _evaluate(self, epoch_end, num_iterations):
        train_acc = self.check_accuracy(self.X_train, self.y_train, num_samples=self.num_train_samples)
        val_acc = self.check_accuracy(self.X_val, self.y_val, num_samples=self.num_val_samples)
        self.train_acc_history.append(train_acc)
        self.val_acc_history.append(val_acc)
        if self.verbose:
            print(f"(Epoch {self.epoch} / {self.num_epochs}) train acc: {train_acc:f}; val_acc: {val_acc:f}")
        if val_acc > self.best_val_acc:
            self.best_val_acc = val_acc
            self.best_params = {k: v.copy() for k, v in self.model.params.items()}
            self._best_model_state = self._model_state(rng=False)
        path = None
        if epoch_end and self.checkpoint_name is not None:
            path = f"{self.checkpoint_name}_epoch_{self.epoch}.pkl"
            self.save_checkpoint(path)
        self._emit("eval", {"iteration": self._t, "num_iterations": num_iterations, "epoch": self.epoch,
                            "num_epochs": self.num_epochs, "epoch_end": epoch_end, "train_acc": train_acc,
                            "val_acc": val_acc, "best_val_acc": self.best_val_acc, "lr": self.lr,
                            "checkpoint": path})

    def _model_state(self, rng=True):
        if hasattr(self.model, "state_dict") and hasattr(self.model, "load_state_dict"):
            state = self.model.state_dict()
            if not rng:
                state.pop("rng", None)
            return state
        return {"params": {k: v.copy() for k, v in self.model.params.items()}}

    def _load_model_state(self, state):
        if hasattr(self.model, "state_dict") and hasattr(self.model, "load_state_dict"):
            self.model.load_state_dict(state)
        else:
            for k, v in state["params"].items():
                np.copyto(self.model.params[k], v)

    def _restore_best(self):
        if self._best_model_state is not None:
            self._load_model_state(self._best_model_state)
        elif self.best_params:
            for k, v in self.best_params.items():
                np.copyto(self.model.params[k], v)

    # ---------------------------------------------------------------- checkpoints
    def _kwargs_for_checkpoint(self):
        rule = self.update_rule if isinstance(self.update_rule, str) else _class_path(self.update_rule)
        custom = self.lr_schedule is not None and not _is_builtin_schedule(self.lr_schedule)
        return {"update_rule": rule, "optim_config": copy.deepcopy(self.optim_config),
                "lr_decay": self.lr_decay, "lr_schedule": None if custom else self.lr_schedule,
                "lr_schedule_custom": custom, "lr_schedule_unit": self.lr_schedule_unit,
                "batch_size": self.batch_size, "num_epochs": self.num_epochs,
                "num_train_samples": self.num_train_samples, "num_val_samples": self.num_val_samples,
                "checkpoint_name": self.checkpoint_name, "print_every": self.print_every,
                "verbose": self.verbose, "seed": self.seed}

    def _optimizer_state(self):
        if self.optimizer is None:
            return {"kind": "rule", "rule": self.update_rule, "configs": self.optim_configs}
        return {"kind": "class", "class": _class_path(self.update_rule),
                "state_dict": self.optimizer.state_dict(),
                "lrs": [g["lr"] for g in self.optimizer.param_groups]}

    def save_checkpoint(self, path):
        """Atomically write the complete training state to `path`; returns the path."""
        state = {
            "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
            "kwargs": self._kwargs_for_checkpoint(),
            "epoch": self.epoch, "iteration": self._t,
            "model": self._model_state(),
            "optimizer": self._optimizer_state(),
            "rng": {"batch": self.rng.bit_generator.state, "eval": self.eval_rng.bit_generator.state},
            "loss_history": self.loss_history, "train_acc_history": self.train_acc_history,
            "val_acc_history": self.val_acc_history, "best_val_acc": self.best_val_acc,
            "best_params": self.best_params, "best_model_state": self._best_model_state,
        }
        _ckpt.save(path, state)
        return path

    def load_checkpoint(self, path):
        """Restore the training state saved by save_checkpoint into this Solver and its model.

        The Solver must use the same update rule and the model the same parameter names, shapes and
        dtypes. Raises ValueError (fastopt.checkpoint.CheckpointError for a damaged file) on any
        mismatch, in which case nothing has changed. Kwargs such as num_epochs stay this Solver's own.
        """
        self._restore(_ckpt.load(path), source=f"checkpoint {os.fspath(path)!r}")

    @classmethod
    def from_checkpoint(cls, path, model, data, **overrides):
        """A Solver built from the kwargs stored in the checkpoint at `path` (with `overrides`,
        e.g. num_epochs=20 or callback=...), holding the saved state. `model` must be built like the
        original model (its params are overwritten in place).

        An optimizer class is re-imported from its stored name when it lives in fastopt; a custom
        class or a custom schedule callable must be passed again (update_rule=..., lr_schedule=...).
        """
        source = f"checkpoint {os.fspath(path)!r}"
        state = _ckpt.load(path)
        _require(isinstance(state, dict) and isinstance(state.get("kwargs"), dict),
                 f"{source} is not a fastopt Solver checkpoint (no kwargs)")
        kw = dict(state["kwargs"])
        custom = kw.pop("lr_schedule_custom", False)
        if custom and "lr_schedule" not in overrides:
            raise ValueError(f"{source} was trained with a custom lr_schedule callable, which is not "
                             f"stored: pass lr_schedule=... to from_checkpoint")
        rule = kw.get("update_rule")
        if isinstance(rule, str) and ":" in rule and "update_rule" not in overrides:
            module, _, qualname = rule.partition(":")
            if module != "fastopt" and not module.startswith("fastopt."):
                raise ValueError(f"{source} was trained with optimizer class {rule}: pass "
                                 f"update_rule=<that class> to from_checkpoint")
            obj = importlib.import_module(module)
            for part in qualname.split("."):
                obj = getattr(obj, part)
            kw["update_rule"] = obj
        kw.update(overrides)
        solver = cls(model, data, **kw)
        solver._restore(state, source=source)
        return solver

    def _restore(self, state, source):
        """Validate everything in `state`, then restore it (all or nothing)."""
        _require(isinstance(state, dict) and state.get("format") == CHECKPOINT_FORMAT,
                 f"{source} is not a fastopt Solver checkpoint")
        _require(state.get("version") == CHECKPOINT_VERSION,
                 f"{source} has version {state.get('version')!r}; this fastopt reads version {CHECKPOINT_VERSION}")
        required = ("epoch", "iteration", "model", "optimizer", "rng", "loss_history", "train_acc_history",
                    "val_acc_history", "best_val_acc", "best_params", "best_model_state")
        missing = [k for k in required if k not in state]
        _require(not missing, f"{source} is missing {missing}")
        params = self.model.params
        for key in ("epoch", "iteration"):
            v = state[key]
            _require(isinstance(v, int) and not isinstance(v, bool) and v >= 0,
                     f"{source}: {key} must be an int >= 0, got {v!r}")
        for key in ("loss_history", "train_acc_history", "val_acc_history"):
            _require(isinstance(state[key], list) and all(isinstance(v, float) for v in state[key]),
                     f"{source}: {key} must be a list of floats")
        _require(len(state["loss_history"]) == state["iteration"],
                 f"{source}: loss_history has {len(state['loss_history'])} entries for "
                 f"{state['iteration']} iterations")
        _require(len(state["train_acc_history"]) == len(state["val_acc_history"]),
                 f"{source}: train and val accuracy histories differ in length")
        _require(isinstance(state["best_val_acc"], float), f"{source}: best_val_acc must be a float")

        model_state = state["model"]
        _require(isinstance(model_state, dict) and isinstance(model_state.get("params"), dict),
                 f"{source}: model state has no params")
        _check_params_like(f"{source}: model params", model_state["params"], params)
        best = state["best_params"]
        _require(isinstance(best, dict), f"{source}: best_params must be a dict")
        if best:
            _check_params_like(f"{source}: best_params", best, params)
        best_state = state["best_model_state"]
        if best_state is not None:
            _require(isinstance(best_state, dict) and isinstance(best_state.get("params"), dict),
                     f"{source}: best_model_state has no params")
            _check_params_like(f"{source}: best_model_state params", best_state["params"], params)
        rngs = state["rng"]
        _require(isinstance(rngs, dict) and set(rngs) == {"batch", "eval"}, f"{source}: rng must hold batch and eval")
        check_rng_state(f"checkpoint {source} rng['batch']", rngs["batch"])
        check_rng_state(f"checkpoint {source} rng['eval']", rngs["eval"])

        opt = state["optimizer"]
        _require(isinstance(opt, dict), f"{source}: optimizer state must be a dict")
        new_optimizer = None
        if self.optimizer is None:
            _require(opt.get("kind") == "rule" and opt.get("rule") == self.update_rule,
                     f"{source} was written with update_rule {opt.get('rule') or opt.get('class')!r}; "
                     f"this Solver uses {self.update_rule!r}")
            configs = opt.get("configs")
            _require(isinstance(configs, dict) and set(configs) == set(params)
                     and all(isinstance(c, dict) for c in configs.values()),
                     f"{source}: optimizer configs must be one dict per parameter {sorted(params)}")
            for p, cfg in configs.items():
                for name, v in cfg.items():
                    if isinstance(v, np.ndarray):
                        _require(v.shape == params[p].shape and v.dtype == params[p].dtype,
                                 f"{source}: optimizer state {p}[{name!r}] is {v.dtype} {v.shape}, "
                                 f"the parameter is {params[p].dtype} {params[p].shape}")
        else:
            _require(opt.get("kind") == "class" and opt.get("class") == _class_path(self.update_rule),
                     f"{source} was written with update_rule {opt.get('class') or opt.get('rule')!r}; "
                     f"this Solver uses {_class_path(self.update_rule)!r}")
            _require(isinstance(opt.get("lrs"), list), f"{source}: optimizer lrs missing")
            new_optimizer = self._make_optimizer()
            try:
                new_optimizer.load_state_dict(opt["state_dict"])
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"{source}: optimizer state does not fit {self.update_rule.__name__}: {exc}") from exc
            _require(len(opt["lrs"]) == len(new_optimizer.param_groups),
                     f"{source}: optimizer has {len(opt['lrs'])} learning rates for "
                     f"{len(new_optimizer.param_groups)} param groups")

        # Everything checked; the model validates its own extras before it copies anything.
        self._load_model_state(model_state)
        if new_optimizer is not None:
            for group, lr in zip(new_optimizer.param_groups, opt["lrs"]):
                group["lr"] = lr
            self.optimizer = new_optimizer
        else:
            self.optim_configs = copy.deepcopy(opt["configs"])
        self.rng.bit_generator.state = rngs["batch"]
        self.eval_rng.bit_generator.state = rngs["eval"]
        self.epoch = state["epoch"]
        self._t = state["iteration"]
        self.loss_history = list(state["loss_history"])
        self.train_acc_history = list(state["train_acc_history"])
        self.val_acc_history = list(state["val_acc_history"])
        self.best_val_acc = state["best_val_acc"]
        self.best_params = {k: v.copy() for k, v in best.items()}
        self._best_model_state = copy.deepcopy(best_state)


def _require(condition, message):
    if not condition:
        raise ValueError(message)


def _check_params_like(what, saved, params):
    _require(set(saved) == set(params), f"{what} have keys {sorted(saved)}, the model has {sorted(params)}")
    for k, v in saved.items():
        ref = params[k]
        _require(isinstance(v, np.ndarray) and v.shape == ref.shape and v.dtype == ref.dtype,
                 f"{what}[{k!r}] is {getattr(v, 'dtype', type(v).__name__)} {getattr(v, 'shape', '')}, "
                 f"the model's is {ref.dtype} {ref.shape}")


__all__ = ["Solver", "CHECKPOINT_FORMAT", "CHECKPOINT_VERSION"]
