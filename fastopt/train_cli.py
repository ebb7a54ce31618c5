"""`fastopt train`: train a FullyConnectedNet with the Solver and report validation/test accuracy.

With no options it trains a batchnorm MLP on the bundled digits. Every option is parsed and checked
here (not by argparse), and every output path is checked for writability, before any data is loaded
or any training starts, so a mistake costs one line on stderr and exit code 2, never a lost run.
"""
import contextlib
import json
import math
import os
import sys
import tempfile
import time

import numpy as np

from . import train_extras
from .cli import UsageError

DATASETS = ("digits", "cifar10", "spiral")
NORMALIZATIONS = ("none", "batchnorm", "layernorm")
WEIGHT_INITS = ("small", "he", "xavier", "auto")   # auto: the activation's own (He or Xavier)
BACKENDS = ("cython", "numpy")


def _optimizer_tables():
    """(OPTIMIZERS, OPTIMIZER_OPTIONS, CLASS_RULES) from the declarations (fastopt/optim/_declarations.py).

    OPTIMIZERS: the CS231n rules (run as functions by the Solver), then the rules that exist only
    as torch-style classes (CLASS_RULES: name -> Rule; the Solver builds the class).
    OPTIMIZER_OPTIONS: option -> (optim_config key, the optimizers that use it, bounds for _number).
    Keys are CS231n's names where CS231n has one (the Solver maps them to the torch names), else
    torch's; the option is "--" + key with "-" for "_", epsilon spelled --eps.
    """
    from .optim._declarations import class_rules, cs231n_forms

    forms = cs231n_forms()
    class_only = {r.key: r for r in class_rules() if r.key not in forms}
    options = {}

    def add(key, user, bounds):
        option = "--eps" if key == "epsilon" else "--" + key.replace("_", "-")
        entry = options.setdefault(option, (key, [], bounds))
        entry[1].append(user)

    for name, (rule, form) in forms.items():
        hypers = {h.name: h for h in rule.hypers}
        for k in form.config:
            if k.name != "learning_rate":
                add(k.name, name, dict(low=k.low, high=k.high, high_open=k.high_open,
                                       low_open=hypers[k.target].cli_positive))
    for name, rule in class_only.items():
        for h in rule.hypers:
            if h.kind == "bool" or h.name == "lr":
                continue
            keys = ("beta1", "beta2") if h.kind == "pair" else ("epsilon" if h.name == "eps" else h.name,)
            for key in keys:
                add(key, name, h.bounds())
    def plain(bounds):   # 0 and 1, not 0.0 and 1.0, in the messages
        return {k: int(v) if isinstance(v, float) and v.is_integer() else v for k, v in bounds.items()}

    return ((*forms, *class_only), {o: (k, tuple(u), plain(b)) for o, (k, u, b) in options.items()},
            class_only)


# Optimizer hyperparameters beyond --lr: see _optimizer_tables.
OPTIMIZERS, OPTIMIZER_OPTIONS, CLASS_RULES = _optimizer_tables()


def _class_capable():
    """{--optimizer name: Rule} of the optimizers that can run as a fastopt optimizer class with
    its options (max_grad_norm=, ema=): the class-only rules, and the CS231n forms whose rule has
    a class whose kernel averages (adam -> Adam, ...; not CS231n's velocity momentum)."""
    from .optim._declarations import cs231n_forms
    table = {name: rule for name, (rule, form) in cs231n_forms().items()
             if rule.class_name is not None and rule.averaging and not form.fixed}
    return {**table, **CLASS_RULES}


# Options of the optimizer classes (fastopt.optim._base.Optimizer's keywords): option -> optim_config key.
CLASS_OPTIONS = {"--max-grad-norm": "max_grad_norm", "--ema": "ema"}
CLASS_CAPABLE = _class_capable()

# Chosen so that `fastopt train` alone reaches >= 95% test accuracy on the digits in seconds on one
# core. Measured with a NumPy stand-in model, seeds 0..9: test accuracy 96.4%..98.3% (mean 97.2%);
# lr 1e-2 dipped to 95.0%, reg 1e-3 to 92.8%, 30 epochs or dropout 0.8 did not raise the minimum.
DEFAULTS = {
    "data": "digits", "hidden": "128,64", "normalization": "batchnorm", "dropout": "1",
    "activation": "relu", "reg": "1e-4", "weight_init": "he", "weight_scale": "1e-2", "optimizer": "adam", "lr": "3e-3",
    "lr_decay": "0.95", "epochs": "20", "batch_size": "64", "seed": "0",
}
MONITOR_INTERVAL = "10"  # --monitor without N: a measurement every 10 steps (>= 1 per digits epoch)
SPLIT_SEED = 0           # the data split stays fixed when --seed changes: test sets stay comparable
NUM_TRAIN_SAMPLES = 1000  # training rows the Solver samples to estimate train accuracy per epoch


def _schedule_names():
    from .optim.lr_scheduler import SCHEDULES  # the one list of schedules
    return tuple(SCHEDULES)


def _activation_names():
    from .layers.activations import ACTIVATIONS
    return tuple(ACTIVATIONS)


def configure(parser):
    d = DEFAULTS
    add = parser.add_argument
    add("--data", default=d["data"], metavar="{" + ",".join(DATASETS) + "}",
        help=f"dataset (default {d['data']}: bundled, standardized; spiral: the CS231n toy set; "
             f"cifar10 needs --data-dir)")
    add("--data-dir", metavar="DIR", help="folder with the CIFAR-10 python batches (data_batch_1..5, test_batch)")
    add("--hidden", default=d["hidden"], metavar="N,N,...",
        help=f"hidden layer sizes, comma separated (default {d['hidden']})")
    add("--normalization", default=d["normalization"], metavar="{" + ",".join(NORMALIZATIONS) + "}",
        help=f"normalization after each hidden affine layer (default {d['normalization']})")
    add("--dropout", default=d["dropout"], metavar="KEEP",
        help=f"dropout keep probability in (0, 1]; 1 disables dropout (default {d['dropout']})")
    add("--activation", default=d["activation"], metavar="{" + ",".join(_activation_names()) + "}",
        help=f"activation of the hidden layers (default {d['activation']}; --weight-init auto picks "
             f"He for the ReLU family, Xavier for tanh/sigmoid)")
    add("--reg", default=d["reg"], help=f"L2 regularization strength >= 0 (default {d['reg']})")
    add("--weight-init", default=d["weight_init"], metavar="{" + ",".join(WEIGHT_INITS) + "}",
        help=f"weight initialization; small = Gaussian of std --weight-scale (default {d['weight_init']})")
    add("--weight-scale", metavar="STD",
        help=f"std of the initial weights with --weight-init small (default {d['weight_scale']})")
    add("--optimizer", default=d["optimizer"], metavar="{" + ",".join(OPTIMIZERS) + "}",
        help=f"update rule (default {d['optimizer']})")
    add("--lr", default=d["lr"], help=f"learning rate > 0 (default {d['lr']})")
    for option, (key, users, _) in OPTIMIZER_OPTIONS.items():
        add(option, help=f"{key} of {', '.join(users)} (default: the rule's own)")
    users = ", ".join(CLASS_CAPABLE)
    add("--max-grad-norm", metavar="NORM",
        help=f"clip the gradients to this global 2-norm > 0 inside each step (optimizers {users})")
    add("--ema", metavar="DECAY|polyak",
        help=f"keep a moving average of the weights (a decay in [0, 1), or polyak: the running mean) "
             f"and evaluate, keep the best and report with it (optimizers {users})")
    add("--lr-decay",
        help=f"learning rate factor after each epoch, in (0, 1] (default {d['lr_decay']} without "
             f"--lr-schedule; the same as --lr-schedule exponential:gamma=G)")
    add("--lr-schedule", metavar="NAME[:KEY=VALUE,...]",
        help="a fastopt.optim.lr_scheduler schedule with its arguments, e.g. cosine:T_max=20, "
             "step:step_size=5,gamma=0.5, multistep:milestones=[5,10], onecycle:max_lr=0.01, "
             "linear:start_factor=0.1,total_iters=5, cosine_restarts:T_0=5, plateau:patience=2,factor=0.5 "
             "(watches the validation accuracy; monitor=loss for the epoch's training loss); names: "
             + ", ".join(_schedule_names()) + " (unit=epoch|iteration chooses when it steps)")
    add("--epochs", default=d["epochs"], help=f"epochs >= 1 (default {d['epochs']})")
    add("--batch-size", default=d["batch_size"], help=f"minibatch size >= 1 (default {d['batch_size']})")
    add("--threads", help="threads for fastopt's kernels (fastopt.set_num_threads) and for NumPy's OpenBLAS "
                          "(default: all usable cores; BLAS untouched)")
    add("--backend", metavar="{" + ",".join(BACKENDS) + "}",
        help="kernel backend (default: cython when built)")
    add("--seed", default=d["seed"],
        help=f"seed of initialization, minibatches and dropout; the data split is fixed (default {d['seed']})")
    add("--checkpoint", metavar="PATH", help="save the solver here after every epoch and at the end")
    add("--resume", metavar="PATH", help="load a checkpoint written by --checkpoint before training")
    add("--monitor", nargs="?", const=MONITOR_INTERVAL, metavar="N",
        help=f"babysit the run: every N steps (default {MONITOR_INTERVAL}) record the update/weight ratio "
             f"and gradient norm of each parameter and the activation statistics of each layer; stop on an "
             f"exploding loss, warn on a flat one; print one line per epoch (loss, accuracies, median and "
             f"max update/weight ratio, dead units, diagnoses)")
    add("--early-stopping", metavar="K",
        help="stop when the validation accuracy has not improved for K epochs and keep the best parameters")
    add("--json", metavar="PATH", help="write the summary (accuracies, epochs, seconds, configuration; "
                                       "the monitor's history with --monitor) as JSON")
    add("--plot", metavar="PATH", help="save loss and accuracy curves (and with --monitor the update/weight "
                                       "ratio per layer) as a PNG (needs fastopt[plot])")
    add("--quiet", action="store_true", help="no progress output (the final summary is still printed)")
    from .distributed.cli import configure_distributed
    train_extras.configure(parser)    # transfer, preprocessing, augmentation, ensembles, model files
    configure_distributed(parser)     # --distributed MODE, --shards, --steps (off by default)


# ---------------------------------------------------------------- option parsing

def _number(option, text, kind, *, low=None, high=None, low_open=False, high_open=False):
    what = "an integer" if kind is int else "a number"
    bounds = []
    if low is not None:
        bounds.append(f"{'>' if low_open else '>='} {low}")
    if high is not None:
        bounds.append(f"{'<' if high_open else '<='} {high}")
    expected = what + (" " + " and ".join(bounds) if bounds else "")
    try:
        value = kind(text)
    except (TypeError, ValueError):
        raise UsageError(f"{option} must be {expected}, got {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise UsageError(f"{option} must be {expected}, got {text!r}")
    if low is not None and (value < low or (low_open and value == low)):
        raise UsageError(f"{option} must be {expected}, got {text!r}")
    if high is not None and (value > high or (high_open and value == high)):
        raise UsageError(f"{option} must be {expected}, got {text!r}")
    return value


def _choice(option, text, choices):
    if text not in choices:
        raise UsageError(f"{option} must be one of {', '.join(choices)}; got {text!r}")
    return text


def _hidden(text):
    parts = [p.strip() for p in text.split(",")]
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        sizes = None
    if not sizes or any(s < 1 for s in sizes):
        raise UsageError(f"--hidden must be a comma-separated list of positive integers "
                         f"such as 128,64; got {text!r}")
    return sizes


def _check_writable(option, path):
    """Fail now, not after training, if `path` cannot be written (nothing is left behind)."""
    full = os.path.abspath(path)
    parent = os.path.dirname(full)
    if os.path.isdir(full):
        raise UsageError(f"{option} {path!r} is a directory; give a file name")
    if not os.path.isdir(parent):
        raise UsageError(f"{option} {path!r}: folder {parent!r} does not exist")
    if os.path.exists(full) and not os.access(full, os.W_OK):
        raise UsageError(f"{option} {path!r} is not writable")
    try:  # os.access alone is not enough (root, ACLs, read-only mounts): really create a file
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as exc:
        raise UsageError(f"{option} {path!r}: cannot write in {parent!r} ({exc.strerror})") from None
    return path


# Features and classes of each dataset (for the memory estimate, made before any data is loaded).
DATA_SHAPES = {"digits": (64, 10), "spiral": (2, 3), "cifar10": (3072, 10)}
# Copies of each parameter alive during training: the parameter, its gradient, the Solver's
# best-parameters snapshot and up to three optimizer state arrays (Adam with amsgrad).
PARAM_COPIES = 6
# Arrays of a batch's width alive per layer in a training step (pre-activation, activation,
# dropout output and mask, their gradients, normalization statistics).
ACTIVATION_COPIES = 8


def estimate_memory(cfg):
    """Bytes a training run with this configuration needs at least (float32), an upper-end estimate."""
    features, classes = DATA_SHAPES[cfg["data"]]
    dims = [features] + cfg["hidden"] + [classes]
    params = sum(a * b + b for a, b in zip(dims, dims[1:])) + 4 * sum(cfg["hidden"])
    batch = cfg["batch_size"]
    activations = batch * (features + ACTIVATION_COPIES * sum(dims[1:]))
    indices = 8 * batch                                   # int64 minibatch indices
    itemsize = np.dtype(cfg["dtype"]).itemsize
    return itemsize * (PARAM_COPIES * params + activations) + indices


def available_memory():
    """Bytes of memory this process may still use (MemAvailable), else physical memory, else None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None


def _check_memory(cfg):
    """Refuse, before anything is allocated, a model or batch that cannot fit in memory."""
    need, have = estimate_memory(cfg), available_memory()
    if have is not None and need > have:
        raise UsageError(f"--hidden {','.join(map(str, cfg['hidden']))} with --batch-size {cfg['batch_size']} "
                         f"needs about {need / 1e9:.3g} GB (parameters, gradients, optimizer state, "
                         f"activations), more than the {have / 1e9:.3g} GB of memory available")


def _optim_config(args, cfg):
    """{"learning_rate": ..., plus the optimizer options given}; an option the chosen rule does not
    use is an error rather than silently ignored."""
    config = {"learning_rate": cfg["lr"]}
    for option, (key, users, bounds) in OPTIMIZER_OPTIONS.items():
        text = getattr(args, option[2:].replace("-", "_"))
        if text is None:
            continue
        if cfg["optimizer"] not in users:
            raise UsageError(f"{option} applies only to --optimizer {' or '.join(users)} "
                             f"(got --optimizer {cfg['optimizer']})")
        config[key] = _number(option, text, float, **bounds)
    for option, key in CLASS_OPTIONS.items():
        text = getattr(args, option[2:].replace("-", "_"), None)   # None: a parser without them
        if text is None:
            continue
        if cfg["optimizer"] not in CLASS_CAPABLE:
            raise UsageError(f"{option} applies only to --optimizer {', '.join(CLASS_CAPABLE)} (got --optimizer "
                             f"{cfg['optimizer']}, CS231n's velocity form, which has no optimizer class)")
        if key == "ema" and text == "polyak":
            config[key] = "polyak"
        elif key == "ema":
            try:
                config[key] = _number(option, text, float, low=0, high=1, high_open=True)
            except UsageError:
                raise UsageError(f"--ema must be a number >= 0 and < 1 or 'polyak', got {text!r}") from None
        else:
            config[key] = _number(option, text, float, low=0, low_open=True)
    rule = CLASS_RULES.get(cfg["optimizer"])
    if rule is not None and ("beta1" in config) != ("beta2" in config):
        # One beta given: the other is this rule's default (Lion's beta2 is 0.99, not Adam's 0.999).
        b1, b2 = rule.defaults["betas"]
        config.setdefault("beta1", b1)
        config.setdefault("beta2", b2)
    return config


def _lr_schedule(args, cfg):
    """(the schedule spec or None, lr_decay): --lr-schedule parsed and checked now, by building it
    on a stand-in optimizer with the run's lr, so a bad spec costs one line and exit code 2."""
    text = args.lr_schedule
    if text is None:
        decay = DEFAULTS["lr_decay"] if args.lr_decay is None else args.lr_decay
        return None, _number("--lr-decay", decay, float, low=0, high=1, low_open=True)
    if args.lr_decay is not None:
        raise UsageError("give --lr-schedule or --lr-decay, not both (--lr-decay G is "
                         "--lr-schedule exponential:gamma=G)")
    from .solver._schedule import check_spec
    try:
        spec = check_spec(text, cfg["epochs"], lr=cfg["lr"], where="schedule")
    except (TypeError, ValueError) as exc:
        raise UsageError(f"--lr-schedule {text!r}: {exc}") from None
    return spec, 1.0


def parse_config(args):
    """The validated configuration (a JSON-ready dict) from argparse's strings; UsageError if bad."""
    cfg = {
        "data": _choice("--data", args.data, DATASETS),
        "data_dir": args.data_dir,
        "hidden": _hidden(args.hidden),
        "normalization": _choice("--normalization", args.normalization, NORMALIZATIONS),
        "activation": _choice("--activation", args.activation, _activation_names()),
        "dropout_keep_ratio": _number("--dropout", args.dropout, float, low=0, high=1, low_open=True),
        "reg": _number("--reg", args.reg, float, low=0),
        "weight_init": _choice("--weight-init", args.weight_init, WEIGHT_INITS),
        "weight_scale": None,
        "optimizer": _choice("--optimizer", args.optimizer, OPTIMIZERS),
        "lr": _number("--lr", args.lr, float, low=0, low_open=True),
        "lr_decay": None,
        "lr_schedule": None,
        "epochs": _number("--epochs", args.epochs, int, low=1),
        "batch_size": _number("--batch-size", args.batch_size, int, low=1),
        "threads": None if args.threads is None else _number("--threads", args.threads, int, low=1),
        "backend": None if args.backend is None else _choice("--backend", args.backend, BACKENDS),
        "seed": _number("--seed", args.seed, int, low=0),
        "dtype": "float32",
        "checkpoint": args.checkpoint,
        "resume": args.resume,
        "monitor": None if getattr(args, "monitor", None) is None
        else _number("--monitor", args.monitor, int, low=1),
        "early_stopping": None if getattr(args, "early_stopping", None) is None
        else _number("--early-stopping", args.early_stopping, int, low=1),
    }
    cfg["optim_config"] = _optim_config(args, cfg)
    cfg["lr_schedule"], cfg["lr_decay"] = _lr_schedule(args, cfg)
    if cfg["weight_init"] == "small":
        scale = DEFAULTS["weight_scale"] if args.weight_scale is None else args.weight_scale
        cfg["weight_scale"] = _number("--weight-scale", scale, float, low=0, low_open=True)
    elif args.weight_scale is not None:
        raise UsageError(f"--weight-scale applies only to --weight-init small (got --weight-init "
                         f"{cfg['weight_init']}, which sets its own scale)")
    if cfg["data"] == "cifar10":
        if args.data_dir is None:
            raise UsageError("--data cifar10 needs --data-dir DIR (the extracted cifar-10-batches-py folder)")
        if not os.path.isdir(args.data_dir):
            raise UsageError(f"--data-dir {args.data_dir!r} is not an existing folder")
    elif args.data_dir is not None:
        raise UsageError(f"--data-dir applies only to --data cifar10 (got --data {cfg['data']})")
    if args.resume is not None and not os.path.isfile(args.resume):
        raise UsageError(f"--resume {args.resume!r} is not an existing file")
    for option, path in (("--checkpoint", args.checkpoint), ("--json", args.json), ("--plot", args.plot)):
        if path is not None:
            _check_writable(option, path)
    _check_memory(cfg)
    if args.plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise UsageError("--plot needs matplotlib: pip install 'fastopt[plot]'") from None
    cfg["extras"] = train_extras.parse(args, cfg)
    return cfg


# ---------------------------------------------------------------- data, model, solver

def load_data(cfg):
    from . import data
    try:
        if cfg["data"] == "digits":
            return data.load_digits(seed=SPLIT_SEED, standardize=True)
        if cfg["data"] == "spiral":
            X, y = data.make_spiral(seed=SPLIT_SEED)
            return data.prepare_splits(X, y, seed=SPLIT_SEED)
        return data.load_cifar10(cfg["data_dir"])
    except (FileNotFoundError, ValueError) as exc:
        raise UsageError(str(exc)) from None


def update_rule(name, optim_config=None):
    """A CS231n rule name, or the optimizer class of a rule that has no CS231n form (AdamW, NAdam, ...),
    or of a CS231n rule when optim_config uses a class option (--ema, --max-grad-norm)."""
    rule = CLASS_RULES.get(name)
    if rule is None and any(key in (optim_config or {}) for key in CLASS_OPTIONS.values()):
        rule = CLASS_CAPABLE[name]
    if rule is not None:
        from . import optim
        return getattr(optim, rule.class_name)
    return name


def _class_config(name, optim_config):
    """optim_config for update_rule(name, optim_config): a CS231n rule run as its class keeps
    CS231n's defaults (adagrad's epsilon is 1e-8, the class's 1e-10)."""
    from .optim._declarations import cs231n_forms
    config = dict(optim_config)
    if name not in CLASS_RULES and isinstance(update_rule(name, config), type):
        for key in cs231n_forms()[name][1].config:
            config.setdefault(key.name, key.default)
    return config


def train_model(cfg, data, on_event):
    """Build the model and Solver, train, evaluate. Every call into fastopt.nn/fastopt.solver is here.

    `on_event(event, info)` receives the Solver's callback events. Returns the results dict.
    """
    from .nn import FullyConnectedNet

    Solver, solver_kwargs = train_extras.solver(cfg["extras"])

    num_classes = int(max(data["y_train"].max(), data["y_val"].max(), data["y_test"].max())) + 1
    model = FullyConnectedNet(
        cfg["hidden"], input_dim=data["X_train"].shape[1], num_classes=num_classes,
        dropout_keep_ratio=cfg["dropout_keep_ratio"],
        normalization=None if cfg["normalization"] == "none" else cfg["normalization"],
        activation=cfg["activation"], reg=cfg["reg"],
        weight_scale=cfg["weight_scale"] if cfg["weight_scale"] is not None else 1e-2,
        weight_init=None if cfg["weight_init"] == "small" else cfg["weight_init"],
        dtype=np.dtype(cfg["dtype"]).type, rng=cfg["seed"])
    model = train_extras.prepare_model(cfg["extras"], model)

    reported = [0]   # diagnoses already handed to on_event

    def callback(solver, event, info):
        if is_epoch_end(event, info) and cfg["checkpoint"]:
            solver.save_checkpoint(cfg["checkpoint"])
        if cfg.get("monitor") is not None and (is_epoch_end(event, info) or event == "end"):
            info = {**info, "monitor": solver.monitor_history[-1] if solver.monitor_history else None,
                    "diagnoses": solver.diagnoses[reported[0]:]}
            reported[0] = len(solver.diagnoses)
        on_event(event, info)

    solver = Solver(
        model, {k: data[k] for k in ("X_train", "y_train", "X_val", "y_val")},
        update_rule=update_rule(cfg["optimizer"], cfg["optim_config"]),
        optim_config=_class_config(cfg["optimizer"], cfg["optim_config"]),
        lr_decay=cfg["lr_decay"], lr_schedule=cfg["lr_schedule"],
        batch_size=cfg["batch_size"], num_epochs=cfg["epochs"],
        num_train_samples=NUM_TRAIN_SAMPLES, num_val_samples=None, verbose=False,
        seed=cfg["seed"], callback=callback, monitor=cfg.get("monitor"),
        early_stopping=cfg.get("early_stopping"), **solver_kwargs)
    if cfg["resume"]:
        try:
            solver.load_checkpoint(cfg["resume"])
        except Exception as exc:  # noqa: BLE001 - whatever the file holds, it is the user's input
            raise UsageError(f"--resume {cfg['resume']!r}: cannot load it into this model "
                             f"({type(exc).__name__}: {exc})") from None
    start = time.perf_counter()
    solver.train()
    seconds = time.perf_counter() - start
    if cfg["checkpoint"]:
        solver.save_checkpoint(cfg["checkpoint"])
    return {
        "val_acc": float(solver.check_accuracy(data["X_val"], data["y_val"])),
        "test_acc": float(solver.check_accuracy(data["X_test"], data["y_test"])),
        "best_val_acc": float(solver.best_val_acc),
        "epochs": solver.epoch,
        "iterations": len(solver.loss_history),
        "seconds": seconds,
        "loss_history": [float(v) for v in solver.loss_history],
        "train_acc_history": [float(v) for v in solver.train_acc_history],
        "val_acc_history": [float(v) for v in solver.val_acc_history],
        "monitor_history": solver.monitor_history, "diagnoses": solver.diagnoses, "stopped": solver.stopped,
        "model": model, "solver": solver,
    }


# ---------------------------------------------------------------- progress and reports

def is_epoch_end(event, info):
    """The Solver reports accuracies with event "eval" after the first iteration and at each epoch end."""
    return event == "eval" and bool(info.get("epoch_end"))


class Progress:
    """A tqdm bar over all iterations when tqdm is installed and stderr is a terminal, else one
    plain line per epoch (a redirected log stays readable)."""

    def __init__(self, cfg, n_train, quiet):
        self.epochs, self.quiet = cfg["epochs"], quiet
        self.monitor = cfg.get("monitor") is not None
        self.losses, self.bar = [], None
        if quiet:
            return
        if not sys.stderr.isatty():
            return
        try:
            from tqdm import tqdm
        except ImportError:
            return
        per_epoch = max(n_train // cfg["batch_size"], 1)
        self.bar = tqdm(total=self.epochs * per_epoch, unit="it", desc="train", file=sys.stderr,
                        dynamic_ncols=True, leave=True)

    def __call__(self, event, info):
        if event == "iteration":
            self.losses.append(float(info["loss"]))
            if self.bar is not None:
                self.bar.update(1)
                if len(self.losses) % 10 == 1:
                    self.bar.set_postfix_str(f"loss {self.losses[-1]:.4f}", refresh=False)
        elif is_epoch_end(event, info):
            loss = float(np.mean(self.losses)) if self.losses else float("nan")
            self.losses = []
            epoch = info.get("epoch", "?")
            train_acc, val_acc = info.get("train_acc", math.nan), info.get("val_acc", math.nan)
            text = (f"epoch {epoch}/{self.epochs}  loss {loss:.4f}  train_acc {train_acc:.4f}  "
                    f"val_acc {val_acc:.4f}  lr {info.get('lr', math.nan):.3g}")
            if self.monitor:      # --monitor: the line goes to stdout, whatever else is shown
                self._print(text + monitor_text(info.get("monitor"), info.get("diagnoses", ())))
            if self.bar is not None:
                self.bar.set_description_str(f"epoch {epoch}/{self.epochs}", refresh=False)
                self.bar.set_postfix_str(f"loss {loss:.4f} train {train_acc:.3f} val {val_acc:.3f}")
            elif not self.quiet and not self.monitor:
                print(text, file=sys.stderr, flush=True)
        elif event == "end" and self.monitor:
            for d in info.get("diagnoses", ()):
                self._print(f"diagnosis: {d['message']}")

    def _print(self, line):
        if self.bar is not None:
            self.bar.write(line, file=sys.stdout)
        else:
            print(line, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _g(value, fmt=".2e"):
    return "-" if value is None else format(value, fmt)


def monitor_text(record, diagnoses=()):
    """The --monitor part of an epoch line: the epoch's last measurement (median and max
    update/weight ratio of the weights, fraction of dead hidden units) and the diagnoses since the
    last line."""
    text = ""
    if record is not None:
        text = (f"  ratio median {_g(record['ratio_median'])} max {_g(record['ratio_max'])}"
                f"  dead {_g(record['dead_fraction'], '.3f')}")
    return text + "".join(f"  [{d['message']}]" for d in diagnoses)


def _finite_or_none(value):
    """JSON-safe data: non-finite floats (a diverged run's values) become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_or_none(v) for v in value]
    return value


def write_plot(path, results, title):
    # The object API with an explicit Agg canvas: no pyplot global state, no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    history = results.get("monitor_history") or []
    fig = Figure(figsize=(15 if history else 10, 4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3 if history else 2)
    ax_loss, ax_acc = axes[:2]
    ax_loss.plot(results["loss_history"], lw=0.8)
    ax_loss.set(xlabel="iteration", ylabel="training loss", title="loss")
    epochs = np.arange(1, len(results["val_acc_history"]) + 1)
    ax_acc.plot(epochs, results["train_acc_history"], "o-", ms=3, label="train")
    ax_acc.plot(epochs, results["val_acc_history"], "o-", ms=3, label="val")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    ax_acc.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_acc.legend()
    if history:
        plot_update_ratios(axes[2], history)
    fig.suptitle(title)
    fig.savefig(path, format="png", dpi=100)


def plot_update_ratios(ax, history):
    """The update/weight ratio of each layer's weights (W1, W2, ...) against the iteration on a log
    axis, with the lecture's healthy ~1e-3 as a horizontal line."""
    names = sorted({k for r in history for k in r["update_ratio"] if k.startswith("W") and k[1:].isdigit()},
                   key=lambda k: int(k[1:]))
    for name in names:
        points = [(r["iteration"], r["update_ratio"][name]) for r in history
                  if 0 < r["update_ratio"].get(name, 0) < math.inf]
        if points:
            ax.plot(*zip(*points), lw=0.8, label=f"layer {name[1:]}")
    ax.axhline(1e-3, color="k", ls="--", lw=0.8, label="1e-3")
    ax.set_yscale("log")
    ax.set(xlabel="iteration", ylabel="||update|| / ||weights||", title="update/weight ratio")
    ax.legend(fontsize="small")


@contextlib.contextmanager
def _blas_threads(n):
    """Limit NumPy's BLAS to `n` threads for the block (when n is given and the BLAS is OpenBLAS).

    The matrix products of a small MLP gain nothing from BLAS threads, and on a busy machine
    OpenBLAS's spinning threads made a 1.4 s digits run take 39 s; --threads therefore governs
    BLAS as well as fastopt's kernels. Without --threads, BLAS is left as configured.
    """
    if n is None:
        yield
        return
    from ._blas import limit_blas_threads
    with limit_blas_threads(n):
        yield


def _describe(cfg):
    hidden = ",".join(map(str, cfg["hidden"]))
    init = f"small({cfg['weight_scale']:g})" if cfg["weight_init"] == "small" else cfg["weight_init"]
    return (f"data={cfg['data']} hidden={hidden} normalization={cfg['normalization']} activation={cfg['activation']} "
            f"dropout={cfg['dropout_keep_ratio']:g} reg={cfg['reg']:g} init={init} "
            f"optimizer={cfg['optimizer']} lr={cfg['lr']:g} "
            + "".join(f"{k}={v if isinstance(v, str) else format(v, 'g')} "   # ema may be "polyak"
                      for k, v in cfg["optim_config"].items() if k != "learning_rate")
            + f"lr_decay={cfg['lr_decay']:g} "
            + (f"lr_schedule={cfg['lr_schedule']} " if cfg["lr_schedule"] else "")
            + f"epochs={cfg['epochs']} batch={cfg['batch_size']} seed={cfg['seed']} "
            + "".join(f"{k}={cfg[k]} " for k in ("monitor", "early_stopping") if cfg.get(k) is not None)
            + f"backend={cfg['backend']} threads={cfg['threads']}")


def run(args):
    if args.distributed is not None:   # mpiexec -n K fastopt train --distributed deterministic|fast
        from .distributed.cli import run_distributed
        return run_distributed(args)
    cfg = parse_config(args)
    import fastopt

    try:
        if cfg["backend"] is not None:
            fastopt.set_backend(cfg["backend"])
    except ImportError as exc:
        raise UsageError(f"--backend {cfg['backend']}: {exc}") from None
    if cfg["threads"] is not None:
        fastopt.set_num_threads(cfg["threads"])
    cfg["backend"], cfg["threads"] = fastopt.backend(), fastopt.get_num_threads()

    data = load_data(cfg)
    data, preprocess = train_extras.prepare_data(cfg["extras"], data)
    n_train = len(data["X_train"])
    if not args.quiet:
        print(f"{cfg['data']}: train {n_train}, val {len(data['X_val'])}, test {len(data['X_test'])}, "
              f"{data['X_train'].shape[1]} features", file=sys.stderr)
    progress = Progress(cfg, n_train, args.quiet)
    try:
        with _blas_threads(None if args.threads is None else cfg["threads"]):
            results = train_model(cfg, data, progress)
    finally:
        progress.close()

    summary = {"val_acc": results["val_acc"], "test_acc": results["test_acc"],
               "best_val_acc": results["best_val_acc"], "epochs": results["epochs"],
               "iterations": results["iterations"], "seconds": round(results["seconds"], 3),
               "config": cfg, "fastopt_version": fastopt.__version__,
               "history": {"train_acc": results["train_acc_history"],
                           "val_acc": results["val_acc_history"]},
               "stopped": results["stopped"], "diagnoses": results["diagnoses"]}
    if cfg["monitor"] is not None:
        summary["monitor"] = _finite_or_none(results["monitor_history"])
    print(f"val acc {results['val_acc']:.4f} (best during training {results['best_val_acc']:.4f})  "
          f"test acc {results['test_acc']:.4f}  epochs {results['epochs']}  "
          f"{results['seconds']:.1f} s")
    if results["stopped"] is not None:
        print(f"stopped: {results['stopped']['message']}")
    print(f"config: {_describe(cfg)}")
    summary["extras"] = train_extras.after_training(
        cfg["extras"], results["model"], results["solver"], data, preprocess,
        retrain=lambda seed: train_model({**cfg, "seed": seed}, data, lambda event, info: None)["model"])
    if args.json is not None:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)
            f.write("\n")
    if args.plot is not None:
        write_plot(args.plot, results, f"fastopt train: {cfg['data']}, test acc {results['test_acc']:.3f}")
    return 0
