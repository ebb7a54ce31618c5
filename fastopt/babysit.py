"""Babysitting the learning process (CS231n lecture 6): sanity checks, the learning-rate range test,
and a monitor of a training run, all on the public API of a model and the Solver.

- ``sanity_check(model_factory_or_options, data)``: before training, the lecture's four checks
  (initial loss ~ ln(C) with small weights; the loss rises with regularization; a numerical gradient
  check of a small copy of the model; 20 examples overfit to 100% training accuracy). Also the
  command ``fastopt check``.
- ``lr_find(model, data)``: raise the learning rate exponentially over a number of steps, smooth the
  loss, stop when it diverges, restore the weights, suggest the rate of steepest descent (fastai's
  lr_find). The command is ``fastopt lr-find`` (fastopt/lr_find.py).
- ``Monitor``: the settings of ``Solver(monitor=...)``, or a Solver callback that watches the loss (non-finite / exploding: "learning rate too
  high?"; flat: "too low?") and, from snapshots of the parameters around a step, the update/weight
  ratio of each parameter (~1e-3 is healthy); ``activation_stats(model, X)`` gives per-layer
  activation statistics from the model's public parameters.

A model is built from a *factory or options*: a dict of FullyConnectedNet keyword arguments, or a
callable taking FullyConnectedNet keyword arguments as overrides (reg, weight_init, weight_scale,
dropout_keep_ratio, hidden_dims, input_dim, dtype, seed) and returning a model with ``params`` and
``loss(X, y)``. The checks build the variants they need (small weights, no regularization, a small
float64 copy) from it.
"""
import copy
import json
import math
import os
import sys
from collections.abc import Mapping

import numpy as np

from .cli import UsageError

# ----------------------------------------------------------------------------------------------
# models from options
# ----------------------------------------------------------------------------------------------

def model_factory(model_factory_or_options):
    """A callable(**overrides) -> model, from FullyConnectedNet options (a dict) or a factory."""
    if isinstance(model_factory_or_options, Mapping):
        options = dict(model_factory_or_options)

        def build(**overrides):
            from .nn import FullyConnectedNet
            return FullyConnectedNet(**{**options, **overrides})
        build.options = options
        return build
    if callable(model_factory_or_options):
        return model_factory_or_options
    raise TypeError(f"model_factory_or_options must be a dict of FullyConnectedNet options or a "
                    f"callable(**overrides) -> model, got {type(model_factory_or_options).__name__}")


def _num_classes(data):
    return int(max(int(np.max(data[k])) for k in data if k.startswith("y_"))) + 1


def _snapshot(model):
    """Everything needed to put the model back bit for bit: params (copies) and, when the model has
    one, its state_dict (batchnorm running statistics, dropout RNG)."""
    state = copy.deepcopy(model.state_dict()) if callable(getattr(model, "state_dict", None)) else None
    return {k: np.array(v, copy=True) for k, v in model.params.items()}, state


def _restore(model, snapshot):
    params, state = snapshot
    if state is not None and callable(getattr(model, "load_state_dict", None)):
        model.load_state_dict(copy.deepcopy(state))
    for k, v in params.items():
        model.params[k][...] = v        # in place: params may be views into one flat buffer


# ----------------------------------------------------------------------------------------------
# sanity checks
# ----------------------------------------------------------------------------------------------

SMALL_WEIGHT_STD = 1e-3      # "small weights": the softmax of ~0 scores is uniform
REG_PROBE = 1e3              # the lecture's "crank up regularization"
GRAD_TOLERANCE = 1e-6        # float64 centered differences on a small copy; typical errors 1e-9..1e-11
OVERFIT_EXAMPLES = 20


def _result(name, passed, value, expected, reading, **extra):
    return {"check": name, "passed": bool(passed), "value": value, "expected": expected,
            "reading": None if passed else reading, **extra}


def check_initial_loss(build, data, batch=200):
    """Loss of a small-weight model without regularization on `batch` training rows, against ln(C)."""
    C = _num_classes(data)
    model = build(reg=0.0, weight_init=None, weight_scale=SMALL_WEIGHT_STD, dropout_keep_ratio=1)
    loss, _ = model.loss(data["X_train"][:batch], data["y_train"][:batch])
    expected = math.log(C)
    passed = math.isfinite(loss) and abs(loss - expected) <= 0.02 * expected
    return _result("initial loss", passed, float(loss), expected,
                   f"initial loss {loss:.4f} is not ln({C}) = {expected:.4f}: with small weights the "
                   f"scores are ~0 and the softmax is uniform over the {C} classes; look for a bug in the "
                   f"loss, labels outside 0..{C - 1}, unscaled data, or weights that are not small",
                   classes=C)


def check_regularization(build, data, batch=200, reg=REG_PROBE):
    """The same small-weight model with reg 0 and with a large reg: the loss must go up."""
    X, y = data["X_train"][:batch], data["y_train"][:batch]
    small = dict(weight_init=None, weight_scale=SMALL_WEIGHT_STD, dropout_keep_ratio=1)
    loss0 = float(build(reg=0.0, **small).loss(X, y)[0])
    loss1 = float(build(reg=reg, **small).loss(X, y)[0])
    passed = math.isfinite(loss1) and loss1 > loss0 * (1 + 1e-3)
    return _result("loss rises with regularization", passed, loss1, f"> {loss0:.4f}",
                   f"loss {loss1:.4f} with reg={reg:g} is not above {loss0:.4f} with reg=0: the "
                   f"regularization term is missing from the loss (or has the wrong sign)",
                   loss_without_reg=loss0, reg=reg)


def _gradient_error(analytic, numeric, floor):
    """max|a - n| / max(max|a| + max|n|, floor): the elementwise form of CS231n's rel_error divides
    ~0 by ~0 for a gradient that is zero (the bias before a batchnorm), so each parameter is
    compared at its own scale, with `floor` (a fraction of the whole gradient's scale) below it."""
    diff = float(np.max(np.abs(analytic - numeric)))
    scale = float(np.max(np.abs(analytic)) + np.max(np.abs(numeric)))
    return diff / max(scale, floor) if diff else 0.0


def check_gradients(build, data, *, hidden=8, features=6, examples=5, seed=0, h=1e-5):
    """Numerical gradient check (float64, centered differences) of every parameter of a small copy.

    The copy keeps the depth, normalization and regularization and shrinks every layer to at most
    `hidden` units and the input to `features`. Dropout is switched off (each loss call draws a new
    mask). Regularization is set to 0.1 when the options have none, so its gradient is checked too.
    """
    from .gradcheck import eval_numerical_gradient

    C = _num_classes(data)
    options = getattr(build, "options", {})
    hidden_dims = [min(int(d), hidden) for d in options.get("hidden_dims", [hidden, hidden])]
    reg = float(options.get("reg", 0.0)) or 0.1
    model = build(hidden_dims=hidden_dims, input_dim=features, dtype=np.float64, reg=reg,
                  dropout_keep_ratio=1)
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((examples, features))
    y = np.arange(examples) % C
    _, grads = model.loss(X, y)
    analytic = {k: np.array(g, copy=True) for k, g in grads.items()}   # the next loss() reuses grads
    numeric = {k: eval_numerical_gradient(lambda _: model.loss(X, y)[0], model.params[k], verbose=False, h=h)
               for k in analytic}
    floor = 1e-3 * max(float(np.max(np.abs(g))) for g in (*analytic.values(), *numeric.values()))
    errors = {k: _gradient_error(analytic[k], numeric[k], floor) for k in analytic}
    worst = max(errors, key=errors.get)
    passed = all(math.isfinite(e) and e < GRAD_TOLERANCE for e in errors.values())
    return _result("gradient check", passed, errors[worst], f"< {GRAD_TOLERANCE:g}",
                   f"gradient check failed: {worst} has relative error {errors[worst]:.2e}: the analytic "
                   f"gradient of the backward pass disagrees with the numerical one (a bug in a backward "
                   f"function or in the regularization gradient)",
                   errors=errors, hidden_dims=hidden_dims, features=features)


def check_overfit(build, data, *, update_rule="adam", optim_config=None, examples=OVERFIT_EXAMPLES,
                  iterations=200, seed=0):
    """Train on `examples` rows without regularization or dropout: they must reach 100% accuracy."""
    from .solver import Solver

    X, y = data["X_train"][:examples], data["y_train"][:examples]
    model = build(reg=0.0, dropout_keep_ratio=1)
    solver = Solver(model, {"X_train": X, "y_train": y, "X_val": X, "y_val": y},
                    update_rule=update_rule, optim_config=dict(optim_config or {"learning_rate": 1e-3}),
                    batch_size=len(X), num_epochs=iterations, num_train_samples=len(X),
                    verbose=False, seed=seed)
    solver.train()
    acc = float(solver.check_accuracy(X, y))
    loss = solver.loss_history[-1] if solver.loss_history else math.nan
    return _result("overfit 20 examples", acc == 1.0, acc, 1.0,
                   f"training accuracy {acc:.2f} on {len(X)} examples after {iterations} steps (last loss "
                   f"{loss:.3g}): a working model and update memorize tiny data; look for a bug in the "
                   f"forward/backward pass or the update, or a learning rate far off (try fastopt lr-find)",
                   final_loss=float(loss), iterations=iterations)


def sanity_check(model_factory_or_options, data, *, update_rule="adam", optim_config=None,
                 overfit_iterations=200, seed=0):
    """The lecture's four checks. Returns {"passed": bool, "checks": [one dict per check]}; each check
    dict has check, passed, value, expected and `reading` (the lecture's reading of a failure)."""
    build = model_factory(model_factory_or_options)
    if not isinstance(data, Mapping) or "X_train" not in data or "y_train" not in data:
        raise TypeError("data must be a dict with at least X_train and y_train")
    checks = [check_initial_loss(build, data), check_regularization(build, data),
              check_gradients(build, data, seed=seed),
              check_overfit(build, data, update_rule=update_rule, optim_config=optim_config,
                            iterations=overfit_iterations, seed=seed)]
    return {"passed": all(c["passed"] for c in checks), "checks": checks}


# ----------------------------------------------------------------------------------------------
# learning-rate range test
# ----------------------------------------------------------------------------------------------

class _Stop(Exception):
    """Raised by lr_find's Solver callback to end the ramp."""


def smooth(losses, beta=0.98):
    """Exponential moving average with bias correction: avg_i / (1 - beta**(i+1)) (fastai)."""
    avg, out = 0.0, []
    for i, loss in enumerate(losses):
        avg = beta * avg + (1 - beta) * loss
        out.append(avg / (1 - beta ** (i + 1)))
    return out


def suggest_lr(lrs, smoothed, skip_start=3):
    """The rate where the smoothed loss falls fastest against log(lr), before its minimum
    (None when the curve is too short or never falls)."""
    lrs, smoothed = np.asarray(lrs, float), np.asarray(smoothed, float)
    end = int(np.argmin(smoothed)) + 1
    if end - skip_start < 3:
        return None
    slope = np.gradient(smoothed[skip_start:end], np.log(lrs[skip_start:end]))
    k = int(np.argmin(slope))
    return float(lrs[skip_start + k]) if slope[k] < 0 else None


def lr_find(model, data, *, update_rule="adam", optim_config=None, start_lr=1e-7, end_lr=10.0,
            num_iter=100, batch_size=64, beta=0.98, diverge=4.0, seed=0):
    """Learning-rate range test: train `model` for up to `num_iter` steps with the rate raised
    exponentially from start_lr to end_lr (the Solver's lr_schedule sets it in the optimizer's
    param_groups / the rule's learning_rate before every step), smooth the loss (smooth()), and stop
    when the smoothed loss exceeds `diverge` x its minimum or a loss is not finite. The model's
    parameters and state are then put back exactly as they were.

    Returns a dict: lrs, losses, smoothed (one per step taken), suggestion (suggest_lr; None if the
    loss never fell), min_lr (the rate at the smoothed minimum), stopped ("diverged", "non-finite" or
    "end"), iterations.
    """
    from ._validation import check_scalar
    from .solver import Solver

    start_lr = check_scalar("start_lr", start_lr, low=0, low_open=True)
    end_lr = check_scalar("end_lr", end_lr, low=start_lr, low_open=True)
    num_iter = check_scalar("num_iter", num_iter, low=2, integer=True)
    beta = check_scalar("beta", beta, low=0, high=1, high_open=True)
    diverge = check_scalar("diverge", diverge, low=1, low_open=True)
    ratio = end_lr / start_lr

    def ramp(t, base_lr):
        return start_lr * ratio ** (min(t, num_iter - 1) / (num_iter - 1))

    record = {"lrs": [], "losses": [], "smoothed": [], "stopped": "end"}
    avg = [0.0]

    def callback(solver, event, info):
        if event != "iteration":
            return
        loss = float(info["loss"])
        record["lrs"].append(float(info["lr"]))
        record["losses"].append(loss)
        if not math.isfinite(loss):
            record["smoothed"].append(math.inf)
            record["stopped"] = "non-finite"
            raise _Stop
        i = len(record["losses"])
        avg[0] = beta * avg[0] + (1 - beta) * loss
        value = avg[0] / (1 - beta ** i)
        record["smoothed"].append(value)
        if i > 1 and value > diverge * min(record["smoothed"]):
            record["stopped"] = "diverged"
            raise _Stop
        if i >= num_iter:
            raise _Stop

    n_train = data["X_train"].shape[0]
    per_epoch = max(n_train // batch_size, 1)
    config = {**(optim_config or {}), "learning_rate": start_lr}
    snapshot = _snapshot(model)
    try:
        solver = Solver(model, data, update_rule=update_rule, optim_config=config, lr_schedule=ramp,
                        lr_schedule_unit="iteration", batch_size=batch_size,
                        num_epochs=math.ceil(num_iter / per_epoch), num_train_samples=1, num_val_samples=1,
                        verbose=False, seed=seed, callback=callback)
        try:
            with np.errstate(all="ignore"):      # the ramp is meant to blow up at the end
                solver.train()
        except _Stop:
            pass
    finally:
        _restore(model, snapshot)
    finite = [s for s in record["smoothed"] if math.isfinite(s)]
    k = int(np.argmin(finite)) if finite else None
    record.update(iterations=len(record["losses"]),
                  suggestion=suggest_lr(record["lrs"][:len(finite)], finite) if finite else None,
                  min_lr=record["lrs"][k] if k is not None else None)
    return record


# ----------------------------------------------------------------------------------------------
# monitoring a training run from public data (an observer; the fused version: BABYSITTING.md)
# ----------------------------------------------------------------------------------------------

class TrainingStopped(Exception):
    """Raised out of Solver.train() by a Monitor: `diagnosis` says why, `iteration` when."""

    def __init__(self, diagnosis, iteration):
        super().__init__(f"iteration {iteration}: {diagnosis}")
        self.diagnosis, self.iteration = diagnosis, iteration


def update_ratios(before, after):
    """{name: ||after - before|| / ||before||} per parameter (the lecture's ~1e-3 rule of thumb);
    0 where the weights were all zero (the optimizers' ``update_ratios()`` convention)."""
    from .solver._monitor import snapshot_ratios
    return snapshot_ratios(before, after)


def _norm_param(model, i, frozen):
    """Hidden layer i's batchnorm call as training makes it: a frozen layer's in test mode on copies of
    its running statistics (mean 0, variance 1 where it has none yet, as the model creates them)."""
    from .nn.frozen_norm import initial_statistics
    if i not in frozen:
        return {"mode": "train"}
    bn = model.bn_params[i]
    initial = initial_statistics(model.params[f"gamma{i + 1}"].shape[0], model.params["W1"].dtype, True)
    stats = {key: np.array(bn[key]) if isinstance(bn.get(key), np.ndarray) else start
             for key, start in zip(("running_mean", "running_var"), initial)}
    return {"mode": "test", "eps": bn.get("eps", 1e-5), **stats}


def activation_stats(model, X, activation="relu", activation_param=None):
    """Per hidden layer: layer, width, mean, std, fraction of flat units (dead ReLU, saturated
    tanh/sigmoid) and of units flat on every row (fastopt.diagnose.layer_stats), of
    FullyConnectedNet's documented architecture {affine - [batchnorm|layernorm] - activation} x (L-1),
    recomputed from ``model.params`` on the batch X (batchnorm with the batch's own statistics, as in
    training, except in a frozen layer, which trains with its running statistics: fastopt.nn.frozen_norm;
    no dropout). Nothing of the model is changed, no random number is drawn."""
    from .diagnose import layer_stats
    from .layers import activations as A, affine_forward, batchnorm_forward, layernorm_forward

    spec = A.get(activation)
    p = model.params
    h = np.ascontiguousarray(X.reshape(X.shape[0], -1), dtype=p["W1"].dtype)
    frozen = getattr(model, "frozen", ())
    stats, k = [], 1
    while f"W{k + 1}" in p:
        a, _ = affine_forward(h, p[f"W{k}"], p[f"b{k}"])
        if f"gamma{k}" in p:
            norm = batchnorm_forward if getattr(model, "normalization", "batchnorm") == "batchnorm" else layernorm_forward
            a, _ = norm(a, p[f"gamma{k}"], p[f"beta{k}"], _norm_param(model, k - 1, frozen) if norm is batchnorm_forward else {})
        h, _ = A.activation_forward(activation, a, activation_param)
        stats.append({"layer": k, "width": int(h.shape[1]), **layer_stats(spec, h)})
        k += 1
    return stats


class Monitor:
    """The settings of a babysat run, and a Solver callback applying them from the outside.

    ``Solver(..., monitor=Monitor(interval=..., X=probe, explode=..., flat_window=..., flat_tol=...,
    patience=...))`` hands them to the Solver's own monitoring (fastopt.solver._monitor: the ratios
    from the optimizer's kernels when it offers them, history and diagnoses in the Solver and its
    checkpoints, patience as early_stopping). As ``Solver(..., callback=Monitor(...))`` it observes a
    run from the callback events, from copies of the parameters:

    - a non-finite loss, or one above `explode` x the first loss: TrainingStopped("loss exploded at
      iteration N: learning rate too high?") out of train();
    - a loss that moved by less than `flat_tol` (relative) over the last `flat_window` steps (means of
      the first and last quarter of the window): a "learning rate too low?" entry in `diagnoses`
      (training goes on; near convergence the question is expected);
    - every `interval` steps: the update/weight ratio of each parameter over one step (params copied
      before that step, compared after it) and, when `X` is given, activation_stats on it;
    - `patience` (epochs without a better validation accuracy): early stopping; the Solver's
      best_params are copied back into the model before TrainingStopped is raised.
    `history` holds one dict per measurement: iteration, loss, ratios, activations.
    """

    def __init__(self, *, interval=50, X=None, activation="relu", explode=3.0, flat_window=200,
                 flat_tol=1e-2, patience=None, callback=None):
        from ._validation import check_scalar
        self.interval = check_scalar("interval", interval, low=1, integer=True)
        self.explode = check_scalar("explode", explode, low=1, low_open=True)
        self.flat_window = check_scalar("flat_window", flat_window, low=2, integer=True)
        self.flat_tol = check_scalar("flat_tol", flat_tol, low=0)
        self.patience = None if patience is None else check_scalar("patience", patience, low=1, integer=True)
        self.X, self.activation, self.callback = X, activation, callback
        self.history, self.diagnoses = [], []
        self._before = None
        self._losses = []
        self._best, self._stale = -math.inf, 0

    def _stop(self, diagnosis, iteration):
        self.diagnoses.append({"iteration": iteration, "diagnosis": diagnosis})
        raise TrainingStopped(diagnosis, iteration)

    def __call__(self, solver, event, info):
        if self.callback is not None:
            self.callback(solver, event, info)
        if event == "begin":
            self._before = {k: v.copy() for k, v in solver.model.params.items()}
        elif event == "iteration":
            self._on_step(solver, info["iteration"], float(info["loss"]))
        elif event == "eval" and info.get("epoch_end") and self.patience is not None:
            if info["val_acc"] > self._best:
                self._best, self._stale = info["val_acc"], 0
            else:
                self._stale += 1
                if self._stale >= self.patience:
                    solver._restore_best()      # params and normalization statistics
                    self._stop(f"early stopping: no better validation accuracy for {self.patience} epochs "
                               f"(best {self._best:.4f}; its parameters restored)", info["iteration"])

    def _on_step(self, solver, t, loss):
        from .solver import _monitor    # the Solver's own rules (one declaration of each diagnosis)
        spec = {"explode": self.explode, "flat_window": self.flat_window, "flat_tol": self.flat_tol}
        self._losses.append(loss)
        found = _monitor.exploded(spec, self._losses, t, solver.epoch)
        if found is not None:
            self._stop(found["message"], t)
        flat = _monitor.not_moving(spec, self._losses, len(self._losses), solver.epoch)
        if flat is not None:
            self.diagnoses.append({"iteration": t, "diagnosis": flat["message"]})
        params = solver.model.params
        if self._before is not None:
            entry = {"iteration": t, "loss": loss, "ratios": update_ratios(self._before, params)}
            if self.X is not None:
                entry["activations"] = activation_stats(solver.model, self.X, self.activation)
            self.history.append(entry)
            self._before = None
        if t % self.interval == 0:
            self._before = {k: v.copy() for k, v in params.items()}     # the next step's "before"


# ----------------------------------------------------------------------------------------------
# command-line model options (shared by `fastopt check`, `lr-find` and `search`)
# ----------------------------------------------------------------------------------------------

MODEL_OPTIONS = ("data", "hidden", "normalization", "dropout", "reg", "weight_init", "weight_scale",
                 "optimizer", "lr", "batch_size", "seed")


def model_takes_activation():
    """Whether FullyConnectedNet has the `activation` option (issue 12's model change): the commands
    offer --activation only then."""
    import inspect
    from .nn import FullyConnectedNet
    return "activation" in inspect.signature(FullyConnectedNet).parameters


def add_model_options(parser, exclude=()):
    """The options of `fastopt train` that pick the data, the model and the update rule (same names
    and defaults), minus `exclude` (names of MODEL_OPTIONS an other command defines itself)."""
    from . import train_cli as T

    d = T.DEFAULTS
    add = parser.add_argument
    add("--data", default=d["data"], metavar="{" + ",".join(T.DATASETS) + "}",
        help=f"dataset (default {d['data']}); cifar10 needs --data-dir")
    add("--data-dir", metavar="DIR", help="folder with the CIFAR-10 python batches")
    if "hidden" not in exclude:
        add("--hidden", default=d["hidden"], metavar="N,N,...", help=f"hidden layer sizes (default {d['hidden']})")
    add("--normalization", default=d["normalization"], metavar="{" + ",".join(T.NORMALIZATIONS) + "}",
        help=f"normalization after each hidden affine layer (default {d['normalization']})")
    if "dropout" not in exclude:
        add("--dropout", default=d["dropout"], metavar="KEEP", help=f"dropout keep probability (default {d['dropout']})")
    if "reg" not in exclude:
        add("--reg", default=d["reg"], help=f"L2 regularization strength (default {d['reg']})")
    add("--weight-init", default=d["weight_init"], metavar="{" + ",".join(T.WEIGHT_INITS) + "}",
        help=f"weight initialization (default {d['weight_init']})")
    add("--weight-scale", metavar="STD", help="std of the initial weights with --weight-init small")
    if model_takes_activation():
        from .layers.activations import ACTIVATIONS
        add("--activation", default="relu", metavar="{" + ",".join(ACTIVATIONS) + "}",
            help="activation of the hidden layers (default relu)")
    add("--optimizer", default=d["optimizer"], metavar="{" + ",".join(T.OPTIMIZERS) + "}",
        help=f"update rule (default {d['optimizer']})")
    if "lr" not in exclude:
        add("--lr", default=d["lr"], help=f"learning rate (default {d['lr']})")
    add("--batch-size", default=d["batch_size"], help=f"minibatch size (default {d['batch_size']})")
    add("--seed", default=d["seed"], help=f"seed of initialization and minibatches (default {d['seed']})")


def parse_model_options(args, exclude=()):
    """The validated model configuration from add_model_options' strings (UsageError when bad)."""
    from . import train_cli as T

    cfg = {"data": T._choice("--data", args.data, T.DATASETS), "data_dir": args.data_dir,
           "normalization": T._choice("--normalization", args.normalization, T.NORMALIZATIONS),
           "weight_init": T._choice("--weight-init", args.weight_init, T.WEIGHT_INITS),
           "optimizer": T._choice("--optimizer", args.optimizer, T.OPTIMIZERS),
           "batch_size": T._number("--batch-size", args.batch_size, int, low=1),
           "seed": T._number("--seed", args.seed, int, low=0), "weight_scale": None}
    if getattr(args, "activation", None) is not None:
        from .layers.activations import ACTIVATIONS
        cfg["activation"] = T._choice("--activation", args.activation, tuple(ACTIVATIONS))
    if "hidden" not in exclude:
        cfg["hidden"] = T._hidden(args.hidden)
    if "dropout" not in exclude:
        cfg["dropout"] = T._number("--dropout", args.dropout, float, low=0, high=1, low_open=True)
    if "reg" not in exclude:
        cfg["reg"] = T._number("--reg", args.reg, float, low=0)
    if "lr" not in exclude:
        cfg["lr"] = T._number("--lr", args.lr, float, low=0, low_open=True)
    if cfg["weight_init"] == "small":
        scale = T.DEFAULTS["weight_scale"] if args.weight_scale is None else args.weight_scale
        cfg["weight_scale"] = T._number("--weight-scale", scale, float, low=0, low_open=True)
    elif args.weight_scale is not None:
        raise UsageError("--weight-scale applies only to --weight-init small")
    if cfg["data"] == "cifar10" and args.data_dir is None:
        raise UsageError("--data cifar10 needs --data-dir DIR (the extracted cifar-10-batches-py folder)")
    if args.data_dir is not None and not os.path.isdir(args.data_dir):
        raise UsageError(f"--data-dir {args.data_dir!r} is not an existing folder")
    if cfg["data"] != "cifar10" and args.data_dir is not None:
        raise UsageError(f"--data-dir applies only to --data cifar10 (got --data {cfg['data']})")
    return cfg


def check_output_paths(args, *options):
    """Every given output path (--json, --plot, ...) must be writable; --plot needs matplotlib."""
    from .train_cli import _check_writable

    for option in options:
        path = getattr(args, option.lstrip("-").replace("-", "_"), None)
        if path is not None:
            _check_writable(option, path)
    if getattr(args, "plot", None) is not None:
        try:
            import matplotlib  # noqa: F401  (only whether it is installed)
        except ImportError:
            raise UsageError("--plot needs matplotlib: pip install 'fastopt[plot]'") from None


def load_data(cfg):
    """The data set named by the configuration (train_cli's loader: same splits as `fastopt train`)."""
    from .train_cli import load_data as _load
    return _load(cfg)


def model_kwargs(cfg, data, **overrides):
    """FullyConnectedNet keyword arguments for configuration `cfg` on `data` (as `fastopt train`)."""
    kw = {"hidden_dims": list(cfg["hidden"]), "input_dim": int(np.prod(data["X_train"].shape[1:])),
          "num_classes": _num_classes(data), "dropout_keep_ratio": cfg["dropout"],
          "normalization": None if cfg["normalization"] == "none" else cfg["normalization"],
          "reg": cfg["reg"], "weight_scale": cfg["weight_scale"] or 1e-2,
          "weight_init": None if cfg["weight_init"] == "small" else cfg["weight_init"],
          "dtype": np.float32, "rng": cfg["seed"]}
    if "activation" in cfg:
        kw["activation"] = cfg["activation"]
    kw.update(overrides)
    return kw


def update_rule(cfg):
    """(update_rule, optim_config) for the Solver, as `fastopt train` builds them."""
    from .train_cli import update_rule as _rule
    return _rule(cfg["optimizer"]), {"learning_rate": cfg["lr"]}


def write_json(path, obj):
    """Write `obj` as JSON atomically (a temporary file renamed over `path`)."""
    from .checkpoint import atomic_write_bytes
    atomic_write_bytes(path, (json.dumps(obj, indent=2, default=float) + "\n").encode())


# ----------------------------------------------------------------------------------------------
# `fastopt check`
# ----------------------------------------------------------------------------------------------

def configure(parser):
    add_model_options(parser)
    parser.add_argument("--iterations", default="200", help="steps of the overfitting check (default 200)")
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")


def format_check(c):
    """'PASS  name  value  expected ...', and on a failure the lecture's reading on a second line."""
    expected = f"{c['expected']:.4g}" if isinstance(c["expected"], float) else str(c["expected"])
    line = f"{'PASS' if c['passed'] else 'FAIL'}  {c['check']:<32} {c['value']:>10.4g}   expected {expected}"
    return line if c["passed"] else f"{line}\n      -> {c['reading']}"


def run(args):
    from .train_cli import _number

    cfg = parse_model_options(args)
    iterations = _number("--iterations", args.iterations, int, low=1)
    check_output_paths(args, "--json")
    data = load_data(cfg)
    rule, optim_config = update_rule(cfg)
    result = sanity_check(model_kwargs(cfg, data), data, update_rule=rule, optim_config=optim_config,
                          overfit_iterations=iterations, seed=cfg["seed"])
    for c in result["checks"]:
        print(format_check(c))
    print("all checks passed" if result["passed"] else "some checks FAILED")
    if args.json is not None:
        write_json(args.json, {"config": cfg, **result})
    sys.stdout.flush()
    return 0 if result["passed"] else 1
