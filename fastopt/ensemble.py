"""Model ensembles (CS231n lecture 7): average the members' predicted class probabilities.

    ens = Ensemble([model_a, model_b, model_c])
    ens.accuracy(X_val, y_val)

A member is anything with ``loss(X)`` returning class scores (N, num_classes) and the attributes
``num_classes`` and ``input_dim`` (FullyConnectedNet, TwoLayerNet). Each member's scores go through a
softmax in float64; the ensemble's probabilities are their mean. ``from_seeds`` builds the members
from independently seeded runs of a factory; ``Snapshots(last=K)``, a Solver callback, keeps copies
of the model at the end of each of the last K epochs of ONE run (a snapshot ensemble):

    snaps = Snapshots(last=3)
    Solver(model, data, callback=snaps, ...).train()
    Ensemble(snaps.models).accuracy(X_val, y_val)
"""
import numpy as np

from ._validation import _describe, check_scalar

__all__ = ["Ensemble", "softmax", "from_seeds", "Snapshots"]


def softmax(scores):
    """Row-wise softmax in float64 (max subtracted first)."""
    s = np.asarray(scores, dtype=np.float64)
    s = s - s.max(axis=1, keepdims=True)
    np.exp(s, out=s)
    s /= s.sum(axis=1, keepdims=True)
    return s


class Ensemble:
    """Average of the members' softmax probabilities; members must agree on num_classes and input_dim."""

    def __init__(self, models):
        if isinstance(models, (str, bytes)) or not hasattr(models, "__iter__"):
            raise TypeError(f"models must be a sequence of models, got {_describe(models)}")
        models = list(models)
        if not models:
            raise ValueError("models must hold at least one model, got none")
        for i, m in enumerate(models):
            for attr in ("num_classes", "input_dim"):
                if not isinstance(getattr(m, attr, None), (int, np.integer)):
                    raise TypeError(f"models[{i}] must have an int attribute {attr!r} and loss(X) -> "
                                    f"scores, got {_describe(m)}")
            if not callable(getattr(m, "loss", None)):
                raise TypeError(f"models[{i}] must have a loss(X) method returning scores, got {_describe(m)}")
            for attr in ("num_classes", "input_dim"):
                if getattr(m, attr) != getattr(models[0], attr):
                    raise ValueError(f"models[{i}].{attr} is {getattr(m, attr)}, but models[0].{attr} is "
                                     f"{getattr(models[0], attr)}: an ensemble's members must agree")
        self.models = models
        self.num_classes = int(models[0].num_classes)
        self.input_dim = int(models[0].input_dim)

    def __len__(self):
        return len(self.models)

    def __repr__(self):
        return f"Ensemble({len(self.models)} models, input_dim={self.input_dim}, num_classes={self.num_classes})"

    def member_proba(self, X):
        """(K, N, num_classes) float64: each member's softmax probabilities."""
        out = []
        for i, m in enumerate(self.models):
            scores = m.loss(X)
            if not isinstance(scores, np.ndarray) or scores.shape != (X.shape[0], self.num_classes):
                raise ValueError(f"models[{i}].loss(X) must return scores of shape "
                                 f"({X.shape[0]}, {self.num_classes}), got {_describe(scores)}")
            out.append(softmax(scores))
        return np.stack(out)

    def predict_proba(self, X):
        """(N, num_classes) float64: the mean of the members' probabilities."""
        return self.member_proba(X).mean(axis=0)

    def predict(self, X):
        return np.argmax(self.predict_proba(X), axis=1)

    def accuracy(self, X, y):
        y = _check_labels(y, X.shape[0] if isinstance(X, np.ndarray) else None, self.num_classes)
        return float(np.mean(self.predict(X) == y))

    def member_accuracies(self, X, y):
        """Each member's own accuracy (to compare with the ensemble's)."""
        y = _check_labels(y, X.shape[0] if isinstance(X, np.ndarray) else None, self.num_classes)
        return [float(np.mean(np.argmax(p, axis=1) == y)) for p in self.member_proba(X)]


def _check_labels(y, n, num_classes):
    if not isinstance(y, np.ndarray) or y.dtype.kind not in "iu" or y.ndim != 1 or (n is not None and y.shape[0] != n):
        raise ValueError(f"y must be an integer array of shape ({n},), got {_describe(y)}")
    return y


def from_seeds(factory, seeds):
    """Ensemble of factory(seed) for each seed: independently seeded runs (factory trains and returns a model)."""
    if not callable(factory):
        raise TypeError(f"factory must be callable as factory(seed) -> trained model, got {_describe(factory)}")
    seeds = [check_scalar(f"seeds[{i}]", s, low=0, integer=True) for i, s in enumerate(seeds)]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct (independent runs), got {seeds}")
    return Ensemble([factory(s) for s in seeds])


class Snapshots:
    """A Solver callback keeping copies (fastopt.model_io.clone) of the model at the end of the last
    `last` epochs seen, oldest first; ``then`` is called after it with the same arguments (to chain
    another callback). The models are independent of the training run (the Solver's final swap-in of
    its best params does not touch them)."""

    def __init__(self, last, then=None):
        self.last = check_scalar("last", last, low=1, integer=True)
        if then is not None and not callable(then):
            raise TypeError(f"then must be None or a callback(solver, event, info), got {_describe(then)}")
        self.then = then
        self.models, self.epochs = [], []

    def __call__(self, solver, event, info):
        if event == "eval" and info.get("epoch_end"):
            from .model_io import clone
            self.models = (self.models + [clone(solver.model)])[-self.last:]
            self.epochs = (self.epochs + [info["epoch"]])[-self.last:]
        if self.then is not None:
            self.then(solver, event, info)
