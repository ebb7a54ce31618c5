"""CS231n's Solver: minibatch training of a model with an update rule, with exact checkpoint/resume.

    solver = Solver(model, data, update_rule="adam", optim_config={"learning_rate": 1e-3},
                    lr_decay=0.95, num_epochs=10, batch_size=100, seed=0)
    solver.train()

`model` needs ``params`` (a dict or any Mapping name -> array, e.g. fastopt.flat's views into one
buffer; updated IN PLACE: the Solver never rebinds an entry)
and ``loss(X, y=None)`` (scores without y; ``(loss, grads)`` with y). When the model also has
``state_dict()`` / ``load_state_dict()`` (fastopt.nn.FullyConnectedNet does: params, batchnorm
running statistics, dropout RNG) checkpoints and the best-model snapshot use them.

`data`: dict with X_train, y_train, X_val, y_val (X: numeric arrays with N rows, X_val's rows shaped
like X_train's; y: N integer labels in [0, C), C being the number of classes the model scores, read
from one test-mode forward pass of one row at construction). Everything is checked at construction.

Keyword arguments (anything else raises ValueError, as in CS231n):
    update_rule      name of a rule in fastopt.optim.RULES ("sgd", "sgd_momentum", "nesterov_momentum",
                     "adagrad", "rmsprop", "adam"; default "sgd"), each parameter getting its own deep
                     copy of optim_config (fastopt.optim.rule_adapter.RuleOptimizer runs it); or the
                     name of a fastopt optimizer class ("Adam", "AdamW", "SGD", ...; a rule that
                     exists only as a class also by its lower-case name: "nadam", "radam",
                     "adamax", "adadelta", "lion", as `fastopt train --optimizer`) or the class
                     itself, built once over model.params, its keyword arguments mapped from
                     optim_config by fastopt.optim._declarations.cs231n_to_torch_keys()
                     (learning_rate -> lr, epsilon -> eps, decay_rate -> alpha; beta1/beta2 ->
                     betas, a missing one the class's own default: Lion's beta2 is 0.99; other
                     keys, e.g. ema= or max_grad_norm=, passed as they are); or a user's own update
                     function ``rule(w, dw, config) -> (next_w, config)`` or optimizer class.
    optim_config     dict of hyperparameters (default {}), validated at construction (a key the
                     rule does not use, or a value out of range, raises).
    lr_decay         float in (0, 1]: the learning rate is multiplied by it after each epoch (default 1);
                     it runs as fastopt.optim.lr_scheduler.ExponentialLR(gamma=lr_decay).
    lr_schedule      a fastopt.optim.lr_scheduler schedule driving the optimizer's param_groups
                     (exclusive with lr_decay != 1; needs optim_config["learning_rate"] or "lr"):
                     a spec, "cosine:T_max=20" or {"name": "cosine", "T_max": 20} (its "unit" --
                     "epoch" or "iteration" -- says when it steps; "plateau" is ReduceLROnPlateau on
                     the epoch's validation accuracy, monitor=loss on its mean training loss;
                     "onecycle" defaults to the run's length); or a factory(optimizer) returning a
                     scheduler or ScheduleRunner; or a rate(t, base_lr) -> lr function.
    lr_schedule_unit None, "epoch" or "iteration": when a factory's scheduler or a rate function
                     steps (default "epoch"); a spec carries its own unit.
                     The current scheduler is ``solver.scheduler``; its state is in the checkpoint.
    batch_size=100, num_epochs=10, num_train_samples=1000, num_val_samples=None (None: all),
    checkpoint_name  None, or a path prefix: at every accuracy check (after the first iteration and
                     at every epoch end, as CS231n) the Solver writes "{checkpoint_name}_epoch_{epoch}.pkl"
                     (so "..._epoch_0.pkl" too) and, when verbose, prints 'Saving checkpoint to "..."'.
    print_every=10, verbose=True,
    seed             None (default): minibatches and accuracy subsamples are drawn as CS231n draws
                     them, np.random.choice on NumPy's global state, so np.random.seed(231) reproduces
                     a notebook. An int >= 0: two private Generators from SeedSequence(seed)
                     (reproducible, independent of anything else in the process). Dropout masks
                     come from the model.
    callback         None or callable(solver, event, info) -- see below.
    evaluate_averaged None (default: True exactly when the optimizer keeps parameter averages,
                     optim_config ema=...), True or False: the accuracy checks and the best snapshot
                     use the averaged weights (``with optimizer.averaged():``), so after train() the
                     model holds the best AVERAGED weights; training steps always use the trained
                     weights. Batchnorm's running statistics are not averaged. True without averages
                     raises ValueError.
    monitor          None (default: off; the loop then does exactly what it did without it), an int
                     N, a dict or a fastopt.babysit.Monitor: every N steps (steps 1, 1 + N, ...) record
                     in ``solver.monitor_history`` the update/weight ratio ||dW|| / ||W|| of every
                     trained parameter -- from the optimizer's kernels (built with
                     ``track_update_ratio=True``; ``optimizer.update_ratios()``) when it offers them,
                     else from a copy of the params taken before that step --, the gradient norms, and
                     per hidden layer the activations' mean, std, dead/saturated fraction on a fixed
                     probe batch (the Monitor's X, default the first 256 training rows); and watch the
                     loss: non-finite or above `explode` (3) x the first loss stops training
                     ("loss exploded at iteration N: learning rate too high?"), one that did not move by
                     `flat_tol` (1e-2, relative) over `flat_window` (200) steps is a warning ("loss not
                     moving over iterations a..b: learning rate too low?"). Both in ``solver.diagnoses``;
                     the one that stopped training is ``solver.stopped``. The record's shape and the
                     rules: fastopt.solver._monitor. A Monitor's patience is early_stopping.
    early_stopping   None or K >= 1: stop at the end of an epoch when the validation accuracy has not
                     improved for K epochs; train() then restores the best snapshot (params and
                     normalization statistics) as always. A stopped Solver (``solver.stopped``, kept in
                     checkpoints) trains no more.
    augment          None or a fastopt.augment.Augment: each training minibatch X is replaced by
                     ``augment(X, y, step, indices=idx).X`` (step: the steps taken before it; idx: the
                     rows' indices in X_train), so augmentation is reproducible from the Augment's seed
                     and resumes bitwise. Shift, crop, flip, noise, mixup: with mixup the loss gets
                     ``batch.soft_labels(C)``, an (N, C) float64 array of target probabilities (lam at
                     y, 1 - lam at the partner's label), as ``model.loss(X, y_soft)``; a model whose
                     loss takes only integer labels raises at the first step, before it changes anything.
    comm             None (default), or a communicator for fastopt.distributed.for_solver(model, comm)
                     (imported only then): its .loss is the training loss (_solver._loss_function, the
                     one place it is chosen), .broadcast(optimizer) runs when train() starts, and only
                     its .is_root writes checkpoints. Not stored in checkpoints: pass it again.
    layer_lr         None or {layer index: learning rate}: per-layer rates through the model's
                     ``param_groups(lr=layer_lr)`` (fastopt.nn.FullyConnectedNet has it; the other
                     layers at optim_config's learning_rate); needs an optimizer class (update_rule=
                     fastopt.optim.Adam, "Adam", ...). Not stored in checkpoints: pass it again.
    regularizers     None or a fastopt.regularizers.Regularizers: its elastic-net penalty (of the
                     trained weights) is added to each minibatch's loss and gradient, its max-norm
                     constraint applied to the trained weights after each update. Not stored in
                     checkpoints: pass it again.

The optimizer is built over ``model.trainable_params`` when the model has that attribute (frozen
layers left out; gradients of other params are not passed to the optimizer), else ``model.params``.

Minibatches are drawn WITH replacement (CS231n: ``np.random.choice(num_train, batch_size)``);
there are max(num_train // batch_size, 1) iterations per epoch. Accuracy is checked after the first
iteration and at the end of every epoch; the best validation accuracy keeps copies of the params
(``best_params``) and of the model's normalization statistics, and ``train()`` copies them back into
the model when it returns: afterwards ``model.params`` holds the best values under the same keys
(in the same arrays; CS231n swaps in ``best_params`` itself).

Callback contract: ``callback(solver, event, info)`` with `info` a dict:
    "begin"      before the first step:  iteration (steps already done, > 0 after a resume),
                 num_iterations, iterations_per_epoch, epoch, num_epochs
    "iteration"  after every step:       iteration (1-based count of steps done), num_iterations,
                 epoch (epochs completed before this step), loss, lr (a monitored step's
                 measurement is solver.monitor_history[-1] by then)
    "eval"       after each accuracy check (after iteration 1 and at each epoch end):
                 iteration, num_iterations, epoch, num_epochs, epoch_end (bool), train_acc, val_acc,
                 best_val_acc, lr, checkpoint (the path written at this check, or None)
    "end"        when train() returns:   iteration, num_iterations, epoch, best_val_acc (a stop's
                 diagnosis is solver.stopped)
An exception raised by the callback propagates out of train(); the checkpoint is written
before the "eval" event, so stopping there loses nothing.

Checkpoints (fastopt.checkpoint's format: atomic, checksummed, plain data only) hold CS231n's keys
(model -- the model state with its params --, update_rule, lr_decay, optim_config, batch_size,
num_train_samples, num_val_samples, epoch, loss_history, train_acc_history, val_acc_history: read
them with ``fastopt.checkpoint.load(path)``) and everything an exact resume needs (iteration, the
optimizer's and the scheduler's state_dicts, the draws' RNG state, best_val_acc, best_params, the
other kwargs -- monitor and augment as plain specs --, monitor_history, diagnoses, stopped and early
stopping's best epoch). Schema version 5 (fastopt.solver.CHECKPOINT_VERSION).
``solver.load_checkpoint(path)`` restores one into a Solver built like the original;
``Solver.from_checkpoint(path, model, data, **overrides)`` builds that Solver from the stored kwargs.
A resumed run reproduces the uninterrupted run bit for bit (without a seed, loading restores
NumPy's global RNG state, which the run draws from).

A checkpoint never chooses code: the update rule is stored by name and looked up in fastopt's own
tables, the schedule as its spec (plain data); a user's own rule, class or schedule factory is passed
again by the caller
(``Solver.from_checkpoint(path, model, data, update_rule=MyRule)``). Every field is validated
before anything is assigned; a refused checkpoint changes nothing.

Threads: a Solver is used from one thread at a time; a second thread's train(), check_accuracy(),
save_checkpoint() or load_checkpoint() while one trains raises RuntimeError (the callback, running
in the training thread, may call check_accuracy and save_checkpoint).
"""
from ._checkpoint import FORMAT as CHECKPOINT_FORMAT
from ._checkpoint import VERSION as CHECKPOINT_VERSION
from ._solver import Solver

__all__ = ["Solver", "CHECKPOINT_FORMAT", "CHECKPOINT_VERSION"]
