"""`fastopt train`'s lecture-7 options: data subsets, preprocessing, augmentation, transfer (init from a
model file, freezing), extra regularizers, ensembles and saving the model.

The train command calls, in this order (each a clear point of its own flow):

    configure(parser)                          # adds the options below
    extras = parse(args, cfg)                  # all checked (UsageError) before any data is loaded
    data, preprocess = prepare_data(extras, data)
    model = prepare_model(extras, model)       # --init-from, --freeze
    SolverClass, kwargs = solver(extras)       # fastopt.solver.Solver and its extra keywords
    report = after_training(extras, model, solver, data, preprocess, retrain=...)

``extras`` is a plain JSON-ready dict (it goes into the run's summary).
"""
import os
import sys

from .cli import UsageError

# option -> help; the value strings are parsed in parse().
OPTIONS = {
    "--classes": ("SPEC", "keep only these classes, relabelled 0..K-1 in the order given: 0-4, 5-9, 1,3,5"),
    "--train-size": ("N", "cut the training split to N examples, the same number per class (seeded by --seed)"),
    "--preprocess": ("SPEC", "fit on the training split, apply to every split: center, center:channel, "
                             "standardize, pca:K, whiten, whiten:K, zca"),
    "--augment": ("SPEC", "augment each training batch: shift:K, crop:P, flip, noise:S, mixup:A, comma "
                          "separated (e.g. shift:1,noise:0.05)"),
    "--init-from": ("PATH", "start from the model file PATH (written by --save-model): its architecture and "
                            "weights, a fresh classifier when the classes differ, its preprocessing"),
    "--freeze": ("K", "keep the first K hidden layers fixed, their batchnorm in inference mode (with --init-from: "
                       "the pretrained body)"),
    "--elastic-net": ("L1,L2", "add l1*sum|W| + 0.5*l2*sum W^2 over the weights to the loss"),
    "--max-norm": ("C", "after each update, scale every unit's incoming weights to norm <= C"),
    "--ensemble": ("K", "train K independently seeded models (--seed, --seed+1, ...) and report the "
                        "ensemble's accuracy (mean of the softmax probabilities) beside each member's"),
    "--save-model": ("PATH", "write the trained model, its preprocessing and the data settings to PATH "
                             "(fastopt evaluate --model PATH)"),
}
KEYS = {option: option[2:].replace("-", "_") for option in OPTIONS}
IMAGE_PREPROCESSING = ("center", "standardize", "zca")   # keep rows as images (augment stays possible)


def configure(parser):
    group = parser.add_argument_group("transfer learning, ensembles, augmentation (lecture 7)")
    for option, (metavar, text) in OPTIONS.items():
        group.add_argument(option, metavar=metavar, help=text)


def _int(option, text, low):
    from .train_cli import _number
    return _number(option, text, int, low=low)


def _float(option, text, low, low_open=False):
    from .train_cli import _number
    return _number(option, text, float, low=low, low_open=low_open)


def _load(option, path):
    from . import model_io
    if not os.path.isfile(path):
        raise UsageError(f"{option} {path!r} is not an existing file")
    try:
        return model_io.load_model(path)
    except (OSError, ValueError) as exc:
        raise UsageError(f"{option} {path!r}: {exc}") from None


def parse(args, cfg):
    """The extras (a JSON-ready dict) from argparse's strings, checked against the run's cfg (data,
    hidden, seed); UsageError (one line, exit 2) for anything wrong, before any data is loaded."""
    from . import augment, preprocessing
    from .data.subset import parse_classes

    text = {key: getattr(args, key, None) for key in KEYS.values()}
    ex = {key: None for key in KEYS.values()}
    ex["data"], ex["seed"] = cfg["data"], cfg["seed"]
    if text["classes"] is not None:
        try:
            ex["classes"] = parse_classes(text["classes"])
        except ValueError as exc:
            raise UsageError(f"--classes: {exc}") from None
        if len(ex["classes"]) < 2:
            raise UsageError(f"--classes must name at least 2 classes, got {text['classes']!r}")
    if text["train_size"] is not None:
        ex["train_size"] = _int("--train-size", text["train_size"], 1)
    if text["preprocess"] is not None:
        try:
            preprocessing.from_spec(text["preprocess"], image_shape=augment.IMAGE_SHAPES.get(cfg["data"]))
        except (TypeError, ValueError) as exc:
            raise UsageError(f"--preprocess: {exc}") from None
        ex["preprocess"] = text["preprocess"]
    if text["augment"] is not None:
        try:
            aug = augment.Augment(text["augment"], image_shape=augment.IMAGE_SHAPES.get(cfg["data"]))
        except (TypeError, ValueError) as exc:
            raise UsageError(f"--augment: {exc}") from None
        if aug.image_shape is None:
            raise UsageError(f"--augment needs image data (digits or cifar10), got --data {cfg['data']}")
        if ex["preprocess"] is not None and ex["preprocess"].split(":")[0] not in IMAGE_PREPROCESSING:
            raise UsageError(f"--augment needs rows that are images; --preprocess {ex['preprocess']} projects them "
                             f"(use one of {', '.join(IMAGE_PREPROCESSING)})")
        if not _solver_takes("augment"):
            raise UsageError("--augment needs a Solver with augment= (this fastopt's Solver has none yet)")
        ex["augment"] = aug.spec
    depth = len(cfg["hidden"])
    if text["init_from"] is not None:
        saved = _load("--init-from", text["init_from"])
        ex["init_from"] = text["init_from"]
        depth = len(saved.model.hidden_dims)
        if saved.preprocess is not None and ex["preprocess"] is not None:
            raise UsageError(f"--preprocess with --init-from: the model file {text['init_from']!r} holds the "
                             f"preprocessing its body was trained with; drop --preprocess")
    if text["freeze"] is not None:
        ex["freeze"] = _int("--freeze", text["freeze"], 0)
        if ex["freeze"] > depth:
            raise UsageError(f"--freeze {ex['freeze']}: the model has {depth} hidden layers "
                             f"({'from --init-from' if ex['init_from'] else '--hidden'}); give at most {depth}")
        # Without --init-from a fresh model's frozen batchnorm layers normalize with mean 0, variance 1
        # (fastopt.nn.frozen_norm): a random frozen body, as without batchnorm.
    if text["elastic_net"] is not None:
        parts = text["elastic_net"].split(",")
        if len(parts) != 2:
            raise UsageError(f"--elastic-net must be L1,L2 (two numbers >= 0), got {text['elastic_net']!r}")
        ex["elastic_net"] = [_float("--elastic-net", p.strip(), 0) for p in parts]
    if text["max_norm"] is not None:
        ex["max_norm"] = _float("--max-norm", text["max_norm"], 0, low_open=True)
    if text["ensemble"] is not None:
        ex["ensemble"] = _int("--ensemble", text["ensemble"], 1)
    if text["save_model"] is not None:
        from .train_cli import _check_writable
        ex["save_model"] = _check_writable("--save-model", text["save_model"])
    return ex


def _solver_takes(keyword):
    from .solver import _options
    return keyword in _options.DEFAULTS


def _init_file(extras):
    return None if extras["init_from"] is None else _load("--init-from", extras["init_from"])


# ---------------------------------------------------------------- the calls of the train command

def prepare_data(extras, data):
    """(data, preprocess): the classes kept, the training split cut, the preprocessing fitted on the
    training split (or the --init-from file's) applied to every split. preprocess is None without one."""
    from . import augment, preprocessing
    from .data import subset

    try:
        if extras["classes"] is not None:
            data = subset.select_classes(data, extras["classes"])
        if extras["train_size"] is not None:
            data = subset.subsample_train(data, extras["train_size"], seed=extras["seed"])
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    saved = _init_file(extras)
    pre = saved.preprocess if saved is not None else None
    if extras["preprocess"] is not None:
        pre = preprocessing.from_spec(extras["preprocess"], image_shape=augment.IMAGE_SHAPES.get(extras["data"]))
        try:
            pre.fit(data["X_train"])
        except ValueError as exc:     # pca:K with K beyond the features, whiten of a rank-deficient split
            raise UsageError(f"--preprocess {extras['preprocess']}: {exc}") from None
    if pre is not None:
        try:
            data = {**data, **{f"X_{s}": pre.transform(data[f"X_{s}"]) for s in subset.SPLITS}}
        except ValueError as exc:
            raise UsageError(f"--init-from {extras['init_from']!r}: its preprocessing does not fit "
                             f"--data {extras['data']}: {exc}") from None
    return data, pre


def prepare_model(extras, model):
    """The model to train: `model` as built, or (--init-from) the file's model with a fresh classifier
    for model.num_classes classes when the classes differ from the file's (its meta's classes against
    --classes); the first --freeze hidden layers frozen."""
    saved = _init_file(extras)
    if saved is not None:
        loaded = saved.model
        if loaded.input_dim != model.input_dim:
            raise UsageError(f"--init-from {extras['init_from']!r}: the model takes {loaded.input_dim} "
                             f"features, the data has {model.input_dim}")
        loaded.reg = model.reg
        # A fresh classifier when the classes differ: in number, or in which they are (0-4, then 5-9).
        loaded.replace_head(model.num_classes, rng=extras["seed"],
                            fresh=saved.meta.get("classes") != extras["classes"])
        if list(loaded.hidden_dims) != list(model.hidden_dims) or loaded.normalization != model.normalization:
            print(f"--init-from: the architecture is the file's (hidden {','.join(map(str, loaded.hidden_dims))}, "
                  f"normalization {loaded.normalization or 'none'}), not --hidden/--normalization", file=sys.stderr)
        model = loaded
    if extras["freeze"]:
        if extras["freeze"] > len(model.hidden_dims):
            raise UsageError(f"--freeze {extras['freeze']}: the model has {len(model.hidden_dims)} hidden layers")
        model.freeze(range(extras["freeze"]))
    return model


def solver(extras):
    """(the Solver class, its extra keyword arguments) for the run: fastopt.solver.Solver (over
    model.trainable_params) with regularizers= and augment= (mixup too) when asked for."""
    from .augment import IMAGE_SHAPES, Augment
    from .regularizers import Regularizers
    from .solver import Solver

    kwargs = {}
    if extras["elastic_net"] is not None or extras["max_norm"] is not None:
        kwargs["regularizers"] = Regularizers(elastic_net=extras["elastic_net"], max_norm=extras["max_norm"])
    if extras["augment"] is not None:
        kwargs["augment"] = Augment(extras["augment"], image_shape=IMAGE_SHAPES[extras["data"]], seed=extras["seed"])
    return Solver, kwargs


def _accuracy(predict, data, split):
    import numpy as np
    return float(np.mean(predict(data[f"X_{split}"]) == data[f"y_{split}"]))


def after_training(extras, model, solver, data, preprocess=None, retrain=None):
    """After the main run: the ensemble (--ensemble K: retrain(seed) -> a trained model for each further
    seed) and the model file (--save-model). Returns a JSON-ready report (printed lines go to stdout)."""
    import numpy as np

    from . import ensemble, model_io

    report = {}
    if extras["ensemble"] is not None and extras["ensemble"] > 1:
        if retrain is None:
            raise ValueError("--ensemble needs retrain(seed) -> a trained model")
        members = [model] + [retrain(extras["seed"] + k) for k in range(1, extras["ensemble"])]
        ens = ensemble.Ensemble(members)
        report["ensemble"] = {
            "members": len(members), "seeds": [extras["seed"] + k for k in range(len(members))],
            **{f"{s}_acc": _accuracy(ens.predict, data, s) for s in ("val", "test")},
            **{f"member_{s}_acc": ens.member_accuracies(data[f"X_{s}"], data[f"y_{s}"]) for s in ("val", "test")},
        }
        e = report["ensemble"]
        print(f"ensemble of {len(members)}: test acc {e['test_acc']:.4f} (members "
              f"{', '.join(f'{a:.4f}' for a in e['member_test_acc'])}; mean {np.mean(e['member_test_acc']):.4f})")
    if extras["save_model"] is not None:
        meta = {"data": extras["data"], "classes": extras["classes"], "preprocess": extras["preprocess"],
                "train_size": extras["train_size"], "init_from": extras["init_from"]}
        model_io.save_model(extras["save_model"], model, preprocess=preprocess, meta=meta)
        report["saved_model"] = extras["save_model"]
        print(f"model saved to {extras['save_model']}")
    return report
