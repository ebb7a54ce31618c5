"""Models as files: a FullyConnectedNet with the preprocessing fitted to its data, in fastopt's safe
checkpoint format (fastopt.checkpoint: plain dicts, numbers, strings and arrays; atomic writes;
checksummed; an allow-list unpickler).

    save_model("digits.model", model, preprocess=pre)
    saved = load_model("digits.model")          # SavedModel(model, preprocess)
    saved.predict(X_raw)                        # preprocess, then the model's scores' argmax

The file holds the architecture as the constructor's keyword values (activation included: a file
without it, written before, is a ReLU network), ``model.state_dict(rng=False)`` (params,
normalization running statistics), ``preprocess.state_dict()`` and optionally ``meta``: plain data
about the training run (the dataset, the classes kept) that ``fastopt evaluate`` reads.
``model.save(path)`` / ``FullyConnectedNet.load(path)`` / ``model.load_weights(path)`` call these. Loading chooses no code:
the model class is fixed (FullyConnectedNet), rebuilt through its validating constructor from the
keyword values, and load_state_dict validates every array against it; the preprocessing kind is
looked up in fastopt.preprocessing's own table. A file of another format, another model class, an
unknown or missing keyword, values that do not fit the architecture, or preprocessing whose output
does not match the model's input is refused with ValueError naming what is wrong.

The dropout seed / rng stream is not saved (it does not affect predictions); a loaded model draws
fresh dropout masks from rng=0 if trained further.
"""
import os
from typing import NamedTuple

import numpy as np

from . import checkpoint, preprocessing
from ._validation import _describe
from .nn import FullyConnectedNet

__all__ = ["save_model", "load_model", "clone", "SavedModel", "architecture_of", "structure_of", "FORMAT", "VERSION"]

FORMAT = "fastopt-model"
VERSION = 1
MODEL_CLASS = "FullyConnectedNet"
# The constructor keywords that define the architecture and its training-time behaviour (not seed/rng).
ARCHITECTURE_KEYS = ("hidden_dims", "input_dim", "num_classes", "dropout_keep_ratio", "normalization",
                     "reg", "reg_type", "weight_scale", "weight_init", "dtype", "activation", "activation_param")
# What the architecture keys default to in a file written before they existed (a ReLU network).
_ARCHITECTURE_DEFAULTS = {"activation": "relu", "activation_param": None}
# The keys that decide the computation (load_weights compares them); the rest are training settings.
STRUCTURE_KEYS = ("hidden_dims", "input_dim", "num_classes", "normalization", "activation",
                  "activation_param", "dtype")
_FILE_KEYS = {"format", "version", "model", "architecture", "state", "preprocess"}
_OPTIONAL_FILE_KEYS = {"meta"}


class SavedModel(NamedTuple):
    """A loaded model file: the model and the preprocessing fitted to its training data (or None)."""
    model: FullyConnectedNet
    preprocess: object
    meta: dict = {}

    def scores(self, X):
        """The model's class scores for raw inputs X (preprocessed first when the file holds preprocessing)."""
        if self.preprocess is not None:
            X = self.preprocess.transform(X)
        return self.model.loss(X)

    def predict(self, X):
        return np.argmax(self.scores(X), axis=1)


def architecture_of(model):
    """The constructor keyword values (plain data) that rebuild `model`'s architecture."""
    arch = {k: getattr(model, k) for k in ARCHITECTURE_KEYS}
    arch["hidden_dims"] = [int(h) for h in arch["hidden_dims"]]
    arch["dtype"] = np.dtype(arch["dtype"]).name
    return arch


def structure_of(model):
    """The architecture values that decide what the model computes (not its training settings)."""
    arch = architecture_of(model)
    return {k: arch[k] for k in STRUCTURE_KEYS}


def _check_meta(meta, where="meta"):
    """meta: None or a dict of str keys and plain values (str, int, float, bool, None, or lists of them)."""
    if meta is None:
        return None
    if not isinstance(meta, dict):
        raise TypeError(f"{where} must be a dict of plain values, got {_describe(meta)}")
    plain = (str, int, float, bool, type(None))
    for k, v in meta.items():
        if not isinstance(k, str):
            raise TypeError(f"{where} keys must be str, got {_describe(k)}")
        if not (isinstance(v, plain) or (isinstance(v, list) and all(isinstance(x, plain) for x in v))):
            raise TypeError(f"{where}[{k!r}] must be a str, number, bool, None or a list of them, got {_describe(v)}")
    return {k: list(v) if isinstance(v, list) else v for k, v in meta.items()}


def save_model(path, model, preprocess=None, meta=None):
    """Write `model` (a FullyConnectedNet), its fitted `preprocess` and `meta` (plain data about how
    it was trained: dataset, classes, ...) to `path`, atomically."""
    if not isinstance(model, FullyConnectedNet):
        raise TypeError(f"model must be a FullyConnectedNet, got {_describe(model)}")
    meta = _check_meta(meta)
    pre_state = None
    if preprocess is not None:
        if not hasattr(preprocess, "state_dict") or not hasattr(preprocess, "output_features"):
            raise TypeError(f"preprocess must be a fitted fastopt.preprocessing object, got {_describe(preprocess)}")
        pre_state = preprocess.state_dict()     # ValueError when not fitted
        if preprocess.output_features != model.input_dim:
            raise ValueError(f"preprocess outputs {preprocess.output_features} features, but the model's "
                             f"input_dim is {model.input_dim}")
    data = {"format": FORMAT, "version": VERSION, "model": MODEL_CLASS, "architecture": architecture_of(model),
            "state": model.state_dict(rng=False), "preprocess": pre_state}
    if meta is not None:
        data["meta"] = meta
    checkpoint.save(os.fspath(path), data)


def _build(arch, state):
    """A FullyConnectedNet from architecture keyword values and a state_dict (validated by both)."""
    # rng=0: weights from a private stream (then overwritten), NumPy's global state untouched.
    model = FullyConnectedNet(**dict(arch, dtype=np.dtype(arch["dtype"])), rng=0)
    model.load_state_dict(state)
    return model


def clone(model):
    """An independent copy of a FullyConnectedNet's architecture, weights and normalization statistics
    (what a model file holds; not the dropout stream, not the frozen set): e.g. a snapshot for an ensemble."""
    if not isinstance(model, FullyConnectedNet):
        raise TypeError(f"model must be a FullyConnectedNet, got {_describe(model)}")
    return _build(architecture_of(model), model.state_dict(rng=False))


def _refuse(path, what):
    raise ValueError(f"model file {os.fspath(path)!r} {what}")


def _check_sizes_against_arrays(path, arch, state):
    """The layer widths must be those of the weight arrays in the file, checked before the model is
    built: a tampered width (hidden_dims=[10**9]) is refused instead of allocated."""
    dims = [arch["input_dim"], *arch["hidden_dims"], arch["num_classes"]] \
        if isinstance(arch["hidden_dims"], (list, tuple)) else None
    params = state.get("params") if isinstance(state, dict) else None
    if dims is None or not isinstance(params, dict):
        _refuse(path, "must hold architecture['hidden_dims'] as a list and state['params'] as a dict")
    for i in range(len(dims) - 1):
        W = params.get(f"W{i + 1}")
        shape = (dims[i], dims[i + 1])
        if not isinstance(W, np.ndarray) or W.shape != shape:
            _refuse(path, f"has architecture widths {dims} but state['params']['W{i + 1}'] is {_describe(W)} "
                          f"(expected shape {shape})")


def load_model(path):
    """Read a file written by save_model: SavedModel(model, preprocess). ValueError for a bad file."""
    data = checkpoint.load(os.fspath(path))    # CheckpointError (a ValueError) for a damaged file
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        _refuse(path, f"is not a fastopt model file (format {FORMAT!r} expected)")
    if not _FILE_KEYS <= set(data) <= _FILE_KEYS | _OPTIONAL_FILE_KEYS:
        _refuse(path, f"has keys {sorted(map(str, data))}, expected {sorted(_FILE_KEYS)} "
                      f"(and optionally {sorted(_OPTIONAL_FILE_KEYS)})")
    if data["version"] != VERSION:
        _refuse(path, f"has format version {data['version']!r}; this fastopt reads version {VERSION}")
    if data["model"] != MODEL_CLASS:
        _refuse(path, f"holds a {data['model']!r} model; load_model rebuilds {MODEL_CLASS} only")
    arch = data["architecture"]
    if isinstance(arch, dict):
        arch = {**{k: v for k, v in _ARCHITECTURE_DEFAULTS.items() if k not in arch}, **arch}
    if not isinstance(arch, dict) or set(arch) != set(ARCHITECTURE_KEYS):
        got = sorted(map(str, arch)) if isinstance(arch, dict) else type(arch).__name__
        _refuse(path, f"has architecture keys {got}, expected {sorted(ARCHITECTURE_KEYS)}")
    if arch["dtype"] not in ("float32", "float64"):
        _refuse(path, f"has architecture dtype {arch['dtype']!r}, expected 'float32' or 'float64'")
    _check_sizes_against_arrays(path, arch, data["state"])
    try:
        model = _build(arch, data["state"])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"model file {os.fspath(path)!r} does not describe a valid {MODEL_CLASS}: {exc}") from None
    pre = None
    if data["preprocess"] is not None:
        try:
            pre = preprocessing.from_state_dict(data["preprocess"])
        except (TypeError, ValueError) as exc:
            raise ValueError(f"model file {os.fspath(path)!r} has invalid preprocessing: {exc}") from None
        if pre.output_features != model.input_dim:
            _refuse(path, f"has preprocessing producing {pre.output_features} features for a model whose "
                          f"input_dim is {model.input_dim}")
    try:
        meta = _check_meta(data.get("meta"), "the file's meta") or {}
    except TypeError as exc:
        raise ValueError(f"model file {os.fspath(path)!r}: {exc}") from None
    return SavedModel(model, pre, meta)
