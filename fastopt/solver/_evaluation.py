"""Evaluation and the model's state: accuracy on (a subsample of) a split, the state snapshot kept
for the best validation accuracy, and putting that snapshot back into the model."""
import numpy as np


def accuracy(model, X, y, draws, num_samples, batch_size):
    """Fraction of `y` the model predicts on `X` (test mode, `batch_size` rows at a time), on
    `num_samples` rows drawn with replacement (CS231n's subsample) when X has more."""
    N = X.shape[0]
    if num_samples is not None and N > num_samples:
        idx = draws.subsample(N, num_samples)
        X, y = X[idx], y[idx]
        N = num_samples
    preds = [np.argmax(model.loss(X[start:start + batch_size]), axis=1) for start in range(0, N, batch_size)]
    return float(np.mean(np.concatenate(preds) == y))


def _has_state(model):
    return hasattr(model, "state_dict") and hasattr(model, "load_state_dict")


def model_state(model, rng=True):
    """A copy of what training changes: model.state_dict() when the model has one (fastopt's nets:
    params, normalization statistics, dropout RNG), else {"params": copies}. rng=False leaves out
    the model's RNG (the best snapshot restores values, not the random stream)."""
    if _has_state(model):
        state = model.state_dict()
        if not rng:
            state.pop("rng", None)
        return state
    return {"params": {k: v.copy() for k, v in model.params.items()}}


def load_model_state(model, state):
    """model_state() output back into the model, in place (params keep their identity)."""
    if _has_state(model):
        model.load_state_dict(state)
    else:
        for k, v in state["params"].items():
            np.copyto(model.params[k], v)
