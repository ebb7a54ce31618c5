"""The Solver: construction, the training loop, evaluation; checkpoints are in _checkpoint."""
import contextlib
import inspect
import math
import os
import threading

from .. import _backend
from .. import checkpoint as _ckpt
from .._validation import check_scalar
from . import _checkpoint, _evaluation, _monitor, _options, _registry, _schedule
from ._sampling import make_draws
from ._trainable import Trainable


# ---------------------------------------------------------------- THE choice of the loss function
def _distributed(model, comm, seed):
    """None without comm; else fastopt.distributed.for_solver(model, comm) (imported only then):
    .loss(X, y) the global batch's loss and gradient, .broadcast(optimizer) run when train() starts,
    .is_root the one rank that writes checkpoints. Every rank must draw the same minibatches, so a
    seed is required (without one each rank would draw from its own global RNG)."""
    if comm is None:
        return None
    if seed is None:
        raise ValueError("comm= needs seed= (an int): every rank must draw the same minibatches")
    from .. import distributed
    return distributed.for_solver(model, comm, seed=seed)


def _loss_function(model, helper=None):
    """The one place the training loss is chosen: the distributed helper's loss when there is one
    (_distributed), else model.loss, or its zero-copy form ``loss(X, y, out=model.grads)`` when the
    model offers one (a `grads` attribute and an `out` parameter; detected once). The data-parallel
    trainer (fastopt.distributed) takes its per-shard loss from here too."""
    if helper is not None:
        return helper.loss
    try:
        takes_out = "out" in inspect.signature(model.loss).parameters
    except (TypeError, ValueError):  # a builtin or C callable without a signature
        takes_out = False
    if takes_out and getattr(model, "grads", None) is not None:
        return lambda X, y: model.loss(X, y, out=model.grads)
    return model.loss


class Solver:
    """Train `model` on `data` (see fastopt.solver's docstring for every keyword argument)."""

    def __init__(self, model, data, **kwargs):
        _options.check_model(model)
        opts = _options.check_options(kwargs)
        self.model = model
        self._rule = opts.pop("rule")
        self._schedule_kind = opts.pop("schedule_kind")
        for key, value in opts.items():
            setattr(self, key, value)
        _options.check_layer_lr_fits(self.layer_lr, model, self._rule)
        self._trainable = Trainable(model, self.regularizers)
        self.optimizer = self._make_optimizer()  # optim_config is validated here
        self.evaluate_averaged = self._check_evaluate_averaged(self.evaluate_averaged)
        # Then the data, as it may run the model once (test mode, one row) to learn its number of
        # classes; the schedule last, as it counts iterations per epoch.
        data, self._num_classes = _options.check_data(data, model)
        self.X_train, self.y_train = data["X_train"], data["y_train"]
        self.X_val, self.y_val = data["X_val"], data["y_val"]
        _options.check_augment_fits(self.augment, model, self.X_train, self.y_train)
        self._mixup = self.augment is not None and self.augment.options["mixup"] > 0
        self._recorder = None if self.monitor is None else _monitor.Recorder(
            self.monitor, _monitor.probe_rows(self.monitor, self.X_train), model, self._trainable.params)
        self._schedule = self._make_schedule(self.optimizer)
        self._reset()
        self._dist = _distributed(model, self.comm, self.seed)
        self._loss = self._trainable.loss(_loss_function(model, self._dist))
        self._lock = threading.RLock()   # held by the thread inside train() / a checkpoint call
        self._training = False

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
        self._draws = make_draws(self.seed)
        self.monitor_history = []   # fastopt.solver._monitor: one measurement per monitored step
        self.diagnoses = []         # exploded / not moving / early stopping, in order
        self.stopped = None         # the diagnosis that ended training early (train() then does nothing)
        self._best_epoch = 0        # the epoch of the best validation accuracy (early stopping)

    def _make_optimizer(self):
        """A new optimizer over the model's trained params (model.trainable_params when it has
        them; with layer_lr, the model's param_groups at those rates), tracking the update/weight
        ratios in its kernels when monitoring and it can."""
        track = self.monitor is not None and _registry.tracks_update_ratio(self._rule)
        params = self._trainable.params
        if self.layer_lr:
            params = self.model.param_groups(lr=self.layer_lr)
        return _registry.make_optimizer(self._rule, params, self.optim_config, track_update_ratio=track)

    def _check_evaluate_averaged(self, value):
        """None -> whether the optimizer keeps parameter averages (optim_config ema=...)."""
        keeps = getattr(self.optimizer, "ema", None) is not None
        if value is None:
            return keeps
        if value and not keeps:
            raise ValueError("evaluate_averaged=True needs an optimizer that keeps parameter averages: "
                             "give optim_config={'ema': decay or 'polyak', ...} with an optimizer class")
        return value

    def _evaluation_weights(self):
        """The weights accuracy checks and the best snapshot see: the optimizer's averages when
        evaluate_averaged (swapped in and back by optimizer.averaged()), else the trained ones."""
        return self.optimizer.averaged() if self.evaluate_averaged else contextlib.nullcontext()

    def _make_schedule(self, optimizer):
        """The fastopt.optim.lr_scheduler runner that sets `optimizer`'s lr (None: constant)."""
        return _schedule.make_runner(self._schedule_kind, self.lr_schedule, self.lr_schedule_unit,
                                     self.lr_decay, optimizer, self.iterations_per_epoch, self.num_epochs)

    @property
    def trained_names(self):
        """The names of the params the optimizer updates (model.trainable_params' when it has them)."""
        return tuple(self._trainable.params)

    @property
    def iteration(self):
        """Steps taken so far (survives checkpoint/resume)."""
        return self._t

    @property
    def iterations_per_epoch(self):
        return max(self.X_train.shape[0] // self.batch_size, 1)

    @property
    def lr(self):
        """The current learning rate (of the first param group)."""
        return self.optimizer.param_groups[0]["lr"]

    @property
    def optim_configs(self):
        """CS231n's per-parameter configs (hyperparameters and state) of a rule; None for a class."""
        return getattr(self.optimizer, "configs", None)

    @property
    def rng(self):
        """The minibatch Generator (None without a seed: draws then come from np.random), where one
        draw per step taken leaves it (the Solver draws minibatches ahead: read this property again
        rather than drawing from a Generator kept from an earlier read)."""
        return self._draws.batch_rng

    @property
    def eval_rng(self):
        return self._draws.eval_rng

    @contextlib.contextmanager
    def _exclusive(self, what, reentrant):
        """One thread at a time; `reentrant` calls (check_accuracy, save_checkpoint) may also come
        from the training thread's callback."""
        if not self._lock.acquire(blocking=False):
            raise RuntimeError(f"Solver.{what}: this Solver is busy in another thread; "
                               f"a Solver is used from one thread at a time")
        try:
            if self._training and not reentrant:
                raise RuntimeError(f"Solver.{what} cannot be called while this Solver is training")
            yield
        finally:
            self._lock.release()

    def _emit(self, event, info):
        if self.callback is not None:
            self.callback(self, event, info)

    @property
    def scheduler(self):
        """The fastopt.optim.lr_scheduler scheduler setting the learning rate (None: constant)."""
        return None if self._schedule is None else self._schedule.scheduler

    # ---------------------------------------------------------------- training
    def _step(self):
        """One minibatch update; returns the loss."""
        idx = self._draws.batch(self.X_train.shape[0], self.batch_size)
        # take: the rows X_train[idx] gives, with less of fancy indexing's setup (~1 us of ~2 per step)
        X_batch, y_batch = self.X_train.take(idx, axis=0), self.y_train.take(idx, axis=0)
        if self.augment is not None:   # keyed by the step count: the same on resume, any thread count
            batch = self.augment(X_batch, y_batch, self._t, indices=idx)
            X_batch = batch.X
            if self._mixup:            # the (N, C) target probabilities of the mixed examples
                y_batch = batch.soft_labels(self._num_classes)
        step = self._t + 1
        recorder = self._recorder if self._recorder is not None and self._recorder.due(step) else None
        if recorder is not None:
            recorder.before_step(self.optimizer)
            lr = self.lr
        # The update runs between the model's matmuls: kernels yield the cores to NumPy's BLAS.
        with _backend.beside_blas():
            loss, grads = self._update(X_batch, y_batch)
        loss = float(loss)
        self.loss_history.append(loss)
        if recorder is not None:
            self.monitor_history.append(recorder.after_step(step, self.epoch, loss, lr, grads, self.optimizer))
        if self._schedule is not None:
            self._schedule.after_iteration()
        return loss

    def _update(self, X_batch, y_batch):
        """The minibatch's loss and gradients, the optimizer's step; returns (loss, the gradients stepped)."""
        trainable = self._trainable
        loss, grads = self._loss(X_batch, y_batch)
        grads = trainable.gradients(grads)
        self.optimizer.step(grads)
        if trainable.after_update is not None:   # the max-norm constraint
            trainable.after_update()
        return loss, grads

    def _diagnose(self, step):
        """The loss diagnoses of the monitor after step `step` (module fastopt.solver._monitor)."""
        if self.monitor is None:
            return
        found = _monitor.exploded(self.monitor, self.loss_history, step, self.epoch)
        if found is not None:
            self.stopped = found
        else:
            found = _monitor.not_moving(self.monitor, self.loss_history, step, self.epoch)
        if found is not None:
            self.diagnoses.append(found)
            if self.verbose:
                print(found["message"])

    def train(self):
        """Run until num_epochs epochs are done (continuing from where a checkpoint left off) or a
        diagnosis stops it (``solver.stopped``; a stopped Solver's train() trains no more), then
        copy the best params (and normalization statistics) back into the model, in place."""
        with self._exclusive("train", reentrant=False):
            self._training = True
            try:
                self._train()
            finally:
                self._training = False

    def _train(self):
        ipe = self.iterations_per_epoch
        num_iterations = self.num_epochs * ipe
        if self._dist is not None:
            self._dist.broadcast(self.optimizer)   # rank 0's params and optimizer state everywhere
            self._dist.steps = self._t             # keys the dropout masks: a resumed run goes on with its own
        self._emit("begin", {"iteration": self._t, "num_iterations": num_iterations,
                             "iterations_per_epoch": ipe, "epoch": self.epoch, "num_epochs": self.num_epochs})
        for t in range(self._t, num_iterations):
            if self.stopped is not None:
                break
            # The rate of this step (the schedule may move it after the step), for the callback.
            lr = self.lr if self.callback is not None else None
            loss = self._step()
            self._t = t + 1
            if self.verbose and t % self.print_every == 0:
                print(f"(Iteration {t + 1} / {num_iterations}) loss: {loss:f}")
            # Only what is asked for runs (the diagnosis, the callback's info dict).
            if self.monitor is not None:
                self._diagnose(t + 1)
            if self.callback is not None:
                self._emit("iteration", {"iteration": t + 1, "num_iterations": num_iterations,
                                         "epoch": self.epoch, "loss": loss, "lr": lr})
            if self.stopped is not None:
                break
            epoch_end = (t + 1) % ipe == 0
            if epoch_end:
                self.epoch += 1
            if t == 0 or t == num_iterations - 1 or epoch_end:
                self._evaluate(epoch_end, num_iterations)
        self._restore_best()
        self._emit("end", {"iteration": self._t, "num_iterations": num_iterations,
                           "epoch": self.epoch, "best_val_acc": self.best_val_acc})

    # ---------------------------------------------------------------- evaluation
    def _evaluate(self, epoch_end, num_iterations):
        """CS231n's check after the first iteration and at every epoch end: accuracies, the best
        snapshot, the checkpoint (its message before the accuracy line, as CS231n prints them)."""
        with self._evaluation_weights():
            train_acc = _evaluation.accuracy(self.model, self.X_train, self.y_train, self._draws,
                                             self.num_train_samples, 100)
            val_acc = _evaluation.accuracy(self.model, self.X_val, self.y_val, self._draws,
                                           self.num_val_samples, 100)
            if val_acc > self.best_val_acc:
                self.best_val_acc, self._best_epoch = val_acc, self.epoch
                self.best_params = {k: v.copy() for k, v in self.model.params.items()}
                self._best_model_state = _evaluation.model_state(self.model, rng=False)
        self.train_acc_history.append(train_acc)
        self.val_acc_history.append(val_acc)
        if epoch_end and self._schedule is not None:  # before the checkpoint, which holds its state
            epoch_losses = self.loss_history[-self.iterations_per_epoch:]
            self._schedule.after_epoch(val_acc=val_acc, loss=math.fsum(epoch_losses) / len(epoch_losses))
        if epoch_end:
            self._check_early_stopping()   # before the checkpoint, which records the stop
        path = self._save_epoch_checkpoint()
        if self.verbose:
            print(f"(Epoch {self.epoch} / {self.num_epochs}) train acc: {train_acc:f}; val_acc: {val_acc:f}")
        self._emit("eval", {"iteration": self._t, "num_iterations": num_iterations, "epoch": self.epoch,
                            "num_epochs": self.num_epochs, "epoch_end": epoch_end, "train_acc": train_acc,
                            "val_acc": val_acc, "best_val_acc": self.best_val_acc, "lr": self.lr,
                            "checkpoint": path})

    def _check_early_stopping(self):
        """early_stopping=K: stop when K epochs passed since the best validation accuracy; train()
        then restores the best snapshot (params and normalization statistics)."""
        if self.early_stopping is None or self.epoch - self._best_epoch < self.early_stopping:
            return
        self.stopped = _monitor.diagnosis(
            self._t, self.epoch, "early_stopping",
            f"early stopping at epoch {self.epoch}: no better validation accuracy for {self.early_stopping} "
            f"epochs (best {self.best_val_acc:.4f} at epoch {self._best_epoch}; its parameters restored)")
        self.diagnoses.append(self.stopped)
        if self.verbose:
            print(self.stopped["message"])

    def check_accuracy(self, X, y, num_samples=None, batch_size=100):
        """Fraction of `y` the model predicts on `X` (test mode), on a random subsample of
        `num_samples` rows (drawn with replacement, as CS231n's) when X has more."""
        X = _options.check_X("X", X, self.X_train.shape[1:])
        y = _options.check_y("y", y, X.shape[0], self._num_classes)
        num_samples = None if num_samples is None else check_scalar("num_samples", num_samples, low=1, integer=True)
        batch_size = check_scalar("batch_size", batch_size, low=1, integer=True)
        with self._exclusive("check_accuracy", reentrant=True):
            return _evaluation.accuracy(self.model, X, y, self._draws, num_samples, batch_size)

    def _restore_best(self):
        """model.params hold the best values (same keys, same arrays), as CS231n's swap-in does;
        unchanged when no check beat accuracy 0 (CS231n would then swap in an empty dict)."""
        if self._best_model_state is not None:
            _evaluation.load_model_state(self.model, self._best_model_state)

    # ---------------------------------------------------------------- checkpoints
    def _save_epoch_checkpoint(self):
        """CS231n's "{checkpoint_name}_epoch_{epoch}.pkl" at every accuracy check; the path or None."""
        if self.checkpoint_name is None or not self._writes_checkpoints:
            return None
        path = f"{self.checkpoint_name}_epoch_{self.epoch}.pkl"
        if self.verbose:
            print(f'Saving checkpoint to "{path}"')
        self.save_checkpoint(path)
        return path

    def save_checkpoint(self, path):
        """Atomically write the complete training state to `path` (fastopt's safe format); returns
        the path. ``fastopt.checkpoint.load(path)`` gives CS231n's checkpoint keys among others.
        With comm=, only the root rank writes (the others return None)."""
        if not self._writes_checkpoints:
            return None
        with self._exclusive("save_checkpoint", reentrant=True):
            _ckpt.save(path, _checkpoint.build(self))
        return path

    @property
    def _writes_checkpoints(self):
        return self._dist is None or bool(self._dist.is_root)

    def load_checkpoint(self, path):
        """Restore the training state saved by save_checkpoint into this Solver and its model.

        The Solver must use the same update rule and the model the same parameter names, shapes and
        dtypes. Raises ValueError (fastopt.checkpoint.CheckpointError for a damaged file) on any
        mismatch, in which case nothing has changed. Kwargs such as num_epochs stay this Solver's own.
        """
        source = f"checkpoint {os.fspath(path)!r}"
        state = _ckpt.load(path)
        with self._exclusive("load_checkpoint", reentrant=False):
            _checkpoint.restore_plan(self, state, source)()

    @classmethod
    def from_checkpoint(cls, path, model, data, **overrides):
        """A Solver built from the kwargs stored in the checkpoint at `path` (with `overrides`,
        e.g. num_epochs=20 or callback=...), holding the saved state. `model` must be built like the
        original model (its params are overwritten in place).

        The update rule and schedule are found by name among fastopt's own; a user's own rule,
        optimizer class or schedule is never stored: pass it again (update_rule=..., lr_schedule=...).
        """
        source = f"checkpoint {os.fspath(path)!r}"
        state = _ckpt.load(path)
        kwargs = _checkpoint.solver_kwargs(state, source, overrides)
        try:
            solver = cls(model, data, **kwargs)
        except (TypeError, ValueError) as exc:  # e.g. an optim_config the rule refuses
            raise ValueError(f"cannot build the Solver of {source}: {exc}") from exc
        _checkpoint.restore_plan(solver, state, source)()
        return solver
