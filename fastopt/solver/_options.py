"""The Solver's keyword arguments and data: declared once, checked once, at construction."""
import os
from collections.abc import Mapping

import numpy as np

from .._validation import check_bool, check_scalar
from . import _monitor, _registry, _schedule

DEFAULTS = {
    "update_rule": "sgd", "optim_config": None, "lr_decay": 1.0, "lr_schedule": None,
    "lr_schedule_unit": None, "batch_size": 100, "num_epochs": 10, "num_train_samples": 1000,
    "num_val_samples": None, "checkpoint_name": None, "print_every": 10, "verbose": True,
    "seed": None, "callback": None, "evaluate_averaged": None,
    "monitor": None, "early_stopping": None, "augment": None, "comm": None,
    "layer_lr": None, "regularizers": None,
}
DATA_KEYS = ("X_train", "y_train", "X_val", "y_val")


def _optional(name, value, **kw):
    return None if value is None else check_scalar(name, value, **kw)


def check_options(kwargs):
    """Validated kwargs (defaults filled in) plus "rule": the resolved rule function or class, and
    "schedule_kind" (fastopt.solver._schedule.check: None, "spec", "factory" or "rate"; a spec is
    returned as a plain dict)."""
    unknown = sorted(set(kwargs) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"Unrecognized arguments {', '.join(unknown)}; accepted: {', '.join(sorted(DEFAULTS))}")
    kw = {**DEFAULTS, **kwargs}
    rule = kw["update_rule"]
    if isinstance(rule, str):
        rule = _registry.resolve_rule(rule)
    elif not callable(rule):
        raise TypeError(f"update_rule must be a rule name (str), an update function or an optimizer class, "
                        f"got {type(rule).__name__}")
    optim_config = {} if kw["optim_config"] is None else kw["optim_config"]
    if not isinstance(optim_config, dict):
        raise TypeError(f"optim_config must be a dict, got {type(optim_config).__name__}")
    lr_decay = check_scalar("lr_decay", kw["lr_decay"], low=0, low_open=True, high=1)
    num_epochs = check_scalar("num_epochs", kw["num_epochs"], low=0, integer=True)
    kind, schedule = _schedule.check(kw["lr_schedule"], kw["lr_schedule_unit"], lr_decay, num_epochs)
    if kind is not None and "learning_rate" not in optim_config and "lr" not in optim_config:
        raise ValueError("lr_schedule needs the base rate in optim_config['learning_rate']")
    name = kw["checkpoint_name"]
    if name is not None and not isinstance(name, (str, os.PathLike)):
        raise TypeError(f"checkpoint_name must be a str path prefix or None, got {type(name).__name__}")
    callback = kw["callback"]
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable(solver, event, info) or None, got {type(callback).__name__}")
    monitor = _monitor.check_spec(kw["monitor"])
    early = _optional("early_stopping", kw["early_stopping"], low=1, integer=True)
    patience = getattr(kw["monitor"], "patience", None) if not isinstance(kw["monitor"], Mapping) else None
    if patience is not None:            # a fastopt.babysit.Monitor(patience=K): early stopping after K epochs
        patience = check_scalar("monitor patience", patience, low=1, integer=True)
        if early is not None and early != patience:
            raise ValueError(f"early_stopping={early} and the monitor's patience={patience} disagree; give one")
        early = patience
    return {
        "layer_lr": check_layer_lr(kw["layer_lr"]), "regularizers": check_regularizers(kw["regularizers"]),
        "monitor": monitor, "early_stopping": early, "augment": check_augment(kw["augment"]), "comm": kw["comm"],
        "update_rule": kw["update_rule"], "rule": rule, "optim_config": optim_config, "lr_decay": lr_decay,
        "lr_schedule": schedule, "schedule_kind": kind, "lr_schedule_unit": kw["lr_schedule_unit"],
        "batch_size": check_scalar("batch_size", kw["batch_size"], low=1, integer=True),
        "num_epochs": num_epochs,
        "num_train_samples": _optional("num_train_samples", kw["num_train_samples"], low=1, integer=True),
        "num_val_samples": _optional("num_val_samples", kw["num_val_samples"], low=1, integer=True),
        "checkpoint_name": None if name is None else os.fspath(name),
        "print_every": check_scalar("print_every", kw["print_every"], low=1, integer=True),
        "verbose": check_bool("verbose", kw["verbose"]),
        "seed": _optional("seed", kw["seed"], low=0, integer=True),
        "callback": callback,
        "evaluate_averaged": None if kw["evaluate_averaged"] is None
        else check_bool("evaluate_averaged", kw["evaluate_averaged"]),
    }


def check_regularizers(regularizers):
    from ..regularizers import Regularizers
    if regularizers is not None and not isinstance(regularizers, Regularizers):
        raise TypeError(f"regularizers must be None or a fastopt.regularizers.Regularizers, got "
                        f"{type(regularizers).__name__}")
    return regularizers


def check_layer_lr(layer_lr):
    """None or {layer index (int >= 0): learning rate >= 0} (a copy); the model's param_groups
    checks the indices against its depth, check_layer_lr_fits the rest against model and rule."""
    if layer_lr is None:
        return None
    if not isinstance(layer_lr, Mapping):
        raise TypeError(f"layer_lr must be None or a dict layer index -> learning rate, got {type(layer_lr).__name__}")
    return {check_scalar("layer_lr key", k, low=0, integer=True): check_scalar(f"layer_lr[{k!r}]", v, low=0)
            for k, v in layer_lr.items()}


def check_layer_lr_fits(layer_lr, model, rule):
    """layer_lr needs a model with param_groups(lr=...) and an optimizer class (param groups)."""
    if not layer_lr:
        return
    if not callable(getattr(model, "param_groups", None)):
        raise TypeError(f"layer_lr needs a model with param_groups(lr={{layer: lr}}) (as FullyConnectedNet), "
                        f"got {type(model).__name__}")
    if not isinstance(rule, type):
        raise ValueError(f"layer_lr needs an optimizer class (update_rule=fastopt.optim.Adam, ...), "
                         f"got the CS231n rule {_registry.rule_name(rule)!r}")


def check_augment(augment):
    """None, a fastopt.augment.Augment, or its plain-data form augment_spec() (a checkpoint's)."""
    from ..augment import Augment
    if augment is None or isinstance(augment, Augment):
        return augment
    if isinstance(augment, Mapping):
        if set(augment) != {"spec", "image_shape", "seed"}:
            raise ValueError(f"augment as a dict must have the keys 'spec', 'image_shape', 'seed', got "
                             f"{sorted(map(repr, augment))}")
        shape = augment["image_shape"]
        return Augment(augment["spec"], image_shape=None if shape is None else tuple(shape), seed=augment["seed"])
    raise TypeError(f"augment must be None or a fastopt.augment.Augment, got {type(augment).__name__}")


def augment_spec(augment):
    """The plain data an Augment is rebuilt from (check_augment), None for None."""
    if augment is None:
        return None
    shape = augment.image_shape
    return {"spec": augment.spec, "image_shape": None if shape is None else [int(v) for v in shape],
            "seed": int(augment.seed)}


def check_augment_fits(augment, model, X, y):
    """An augmentation that fits the data: one probe call on the first row (an Augment draws nothing
    from a stream: nothing changes). With mixup the Solver passes the model's loss soft labels, an
    (N, C) float array of target probabilities (AugmentedBatch.soft_labels): a model whose loss takes
    only integer labels refuses them at the first step, before it changes anything."""
    if augment is None:
        return
    if X.dtype.kind != "f":
        raise TypeError(f"augment needs float32 or float64 training data, data['X_train'] is {X.dtype}")
    try:
        augment(X[:1], y[:1], 0)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"augment does not fit data['X_train']: {exc}") from None


def check_model(model):
    if not isinstance(getattr(model, "params", None), Mapping) or not callable(getattr(model, "loss", None)):
        raise TypeError(f"model must have a mapping `params` (name -> array) and a method `loss(X, y=None)`, "
                        f"got {type(model).__name__}")
    if not model.params:
        raise ValueError("model.params is empty: there is nothing to train")
    trainable = getattr(model, "trainable_params", None)
    if trainable is not None:
        if not isinstance(trainable, Mapping) or not set(trainable) <= set(model.params):
            raise TypeError("model.trainable_params must be a mapping of some of model.params' names to "
                            "their arrays")
        if not trainable:
            raise ValueError("model.trainable_params is empty (every layer frozen): there is nothing to train")


def trained_params(model):
    """The params the optimizer updates: model.trainable_params when the model has it (frozen
    layers left out), else model.params."""
    trainable = getattr(model, "trainable_params", None)
    return model.params if trainable is None else trainable


def check_X(name, X, features=None):
    if not isinstance(X, np.ndarray) or X.ndim < 2 or X.dtype.kind not in "fiu":
        raise TypeError(f"{name} must be a numeric ndarray of shape (N, ...), got "
                        f"{type(X).__name__} {getattr(X, 'dtype', '')}{getattr(X, 'shape', '')}")
    if X.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    if features is not None and X.shape[1:] != features:
        raise ValueError(f"{name} has rows of shape {X.shape[1:]}, the training data's are {features}")
    return X


def check_y(name, y, n, num_classes):
    if not isinstance(y, np.ndarray) or y.dtype.kind not in "iu" or y.ndim != 1:
        raise TypeError(f"{name} must be a 1-D ndarray of integer labels, got "
                        f"{type(y).__name__} {getattr(y, 'dtype', '')}{getattr(y, 'shape', '')}")
    if y.shape[0] != n:
        raise ValueError(f"{name} has {y.shape[0]} labels for {n} rows")
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= num_classes:
        raise ValueError(f"{name} must hold labels in [0, {num_classes - 1}] (the model scores "
                         f"{num_classes} classes), got values in [{lo}, {hi}]")
    return y


def num_classes(model, X):
    """The number of classes the model scores: its `num_classes` when it has one (as fastopt's
    FullyConnectedNet does), else from one test-mode forward pass of one row."""
    declared = getattr(model, "num_classes", None)
    if isinstance(declared, int) and not isinstance(declared, bool) and declared >= 1:
        input_dim = getattr(model, "input_dim", None)
        if isinstance(input_dim, int) and int(np.prod(X.shape[1:])) != input_dim:
            raise ValueError(f"data['X_train'] does not fit the model: its rows have "
                             f"{int(np.prod(X.shape[1:]))} features, the model's input_dim is {input_dim}")
        return declared
    try:
        scores = model.loss(X[:1])
    except Exception as exc:  # noqa: BLE001 - the model's own error says why the data does not fit it
        raise ValueError(f"data['X_train'] does not fit the model: model.loss(X_train[:1]) raised "
                         f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(scores, np.ndarray) or scores.ndim != 2 or scores.shape[0] != 1 or scores.shape[1] < 1:
        raise ValueError(f"model.loss(X) must return scores of shape (N, C), got "
                         f"{type(scores).__name__}{getattr(scores, 'shape', '')} for one row")
    return scores.shape[1]


def check_data(data, model):
    """{X_train, y_train, X_val, y_val} checked against each other and the model; (data, classes)."""
    if not isinstance(data, Mapping):
        raise TypeError(f"data must be a dict with keys {DATA_KEYS}, got {type(data).__name__}")
    missing = [k for k in DATA_KEYS if k not in data]
    if missing:
        raise ValueError(f"data is missing {missing}; it needs {list(DATA_KEYS)}")
    X_train = check_X("data['X_train']", data["X_train"])
    X_val = check_X("data['X_val']", data["X_val"], X_train.shape[1:])
    for split, X in (("train", X_train), ("val", X_val)):
        y = data[f"y_{split}"]
        if not isinstance(y, np.ndarray) or y.dtype.kind not in "iu" or y.ndim != 1:
            check_y(f"data['y_{split}']", y, X.shape[0], 1)  # raises the TypeError
        if y.shape[0] != X.shape[0]:
            raise ValueError(f"data['X_{split}'] has {X.shape[0]} rows but data['y_{split}'] has "
                             f"{y.shape[0]} labels")
    classes = num_classes(model, X_train)
    for split, X in (("train", X_train), ("val", X_val)):
        check_y(f"data['y_{split}']", data[f"y_{split}"], X.shape[0], classes)
    return {k: data[k] for k in DATA_KEYS}, classes
