"""Monitoring while training (``Solver(monitor=...)``): what is measured, when, and the diagnoses.

The monitor spec is plain data (stored in checkpoints as it is):
    {"interval": N, "explode": 3.0, "flat_window": 200, "flat_tol": 1e-2, "activation": None,
     "probe": None or an array of rows like X_train}
``monitor=`` may be None (off: the training loop does nothing more than without it), an int N (the
interval, other fields their defaults), such a dict (missing fields their defaults) or a
fastopt.babysit.Monitor-like object (its attributes interval, X, activation, explode, flat_window,
flat_tol are read; its patience is early_stopping's).

A measurement is taken at steps 1, 1 + N, 1 + 2N, ... (1-based). Each is one JSON-ready dict
(``solver.monitor_history``):
    iteration, epoch (epochs completed before the step), loss, lr,
    update_ratio  {param name: ||p_new - p_old|| / ||p_old|| (0 when ||p_old|| == 0)} of the step,
    ratio_source  "optimizer" (the optimizer's kernels computed it in the step's pass over memory:
                  ``track_update_ratio=True`` and ``optimizer.update_ratios()``) or "snapshot" (copies
                  of the params taken before the step, for an optimizer without that interface),
    grad_norm     {param name: 2-norm of the step's gradient} (float64),
    activations   [{layer, width, mean, std, flat_fraction, dead_units}] per hidden layer of a
                  FullyConnectedNet-like model on the fixed probe rows (fastopt.babysit.activation_stats:
                  flat = dead ReLU / saturated tanh, sigmoid), [] for other models,
    ratio_median, ratio_max   over the weight matrices' ratios (params with ndim >= 2; all params
                  when there is none), dead_fraction (hidden units flat on every probe row, over all
                  hidden units; None without activations).
No measurement draws a random number or changes the model: a monitored run trains bitwise like
an unmonitored one.

Diagnoses (``solver.diagnoses``: dicts iteration, epoch, kind, message), all decided from
``loss_history`` alone (so a resumed run decides as the uninterrupted one):
    "exploded"    a non-finite loss, or one above explode x the first loss: training stops with
                  "loss exploded at iteration N: learning rate too high?"
    "not_moving"  every flat_window steps: the means of the window's first and last quarters differ
                  by at most flat_tol (relative): "loss not moving over iterations a..b: learning
                  rate too low?" (a warning: training goes on)
    "early_stopping"  (Solver(early_stopping=K), independent of the monitor)
"""
import math
import numbers
from collections.abc import Mapping

import numpy as np

from .._validation import check_scalar

DEFAULTS = {"interval": None, "explode": 3.0, "flat_window": 200, "flat_tol": 1e-2, "activation": None,
            "probe": None}
PROBE_ROWS = 256           # the default probe: the first rows of X_train (no random draw)
RATIO_SOURCES = ("optimizer", "snapshot")
KINDS = ("exploded", "not_moving", "early_stopping")
STOP_KINDS = ("exploded", "early_stopping")
_ACTIVATION_KEYS = ("layer", "width", "mean", "std", "flat_fraction", "dead_units")
RECORD_KEYS = ("iteration", "epoch", "loss", "lr", "ratio_source", "update_ratio", "grad_norm", "activations",
               "ratio_median", "ratio_max", "dead_fraction")
DIAGNOSIS_KEYS = ("iteration", "epoch", "kind", "message")


# ---------------------------------------------------------------- the spec
def check_spec(monitor, where="monitor"):
    """The monitor spec (a plain dict, DEFAULTS' keys) for `monitor`, or None; TypeError/ValueError."""
    if monitor is None:
        return None
    if isinstance(monitor, numbers.Integral) and not isinstance(monitor, bool):
        given = {"interval": monitor}
    elif isinstance(monitor, Mapping):
        unknown = sorted(map(repr, set(monitor) - set(DEFAULTS)))   # repr: a key that is not a str shows as one
        if unknown:
            raise ValueError(f"{where} has unknown keys {', '.join(unknown)}; accepted: {sorted(DEFAULTS)}")
        given = dict(monitor)
    elif hasattr(monitor, "interval"):      # fastopt.babysit.Monitor and the like
        given = {"interval": monitor.interval, "probe": getattr(monitor, "X", None)}
        for key in ("explode", "flat_window", "flat_tol", "activation"):
            if hasattr(monitor, key):
                given[key] = getattr(monitor, key)
    else:
        raise TypeError(f"{where} must be None, an int interval, a dict of {sorted(DEFAULTS)} or a "
                        f"fastopt.babysit.Monitor, got {type(monitor).__name__}")
    spec = {**DEFAULTS, **given}
    spec["interval"] = check_scalar(f"{where} interval", spec["interval"], low=1, integer=True)
    spec["explode"] = check_scalar(f"{where} explode", spec["explode"], low=1, low_open=True)
    spec["flat_window"] = check_scalar(f"{where} flat_window", spec["flat_window"], low=2, integer=True)
    spec["flat_tol"] = check_scalar(f"{where} flat_tol", spec["flat_tol"], low=0)
    if spec["activation"] is not None:
        from ..layers.activations import get
        get(spec["activation"])             # ValueError naming the choices
    probe = spec["probe"]
    if probe is not None and (not isinstance(probe, np.ndarray) or probe.ndim < 2 or probe.dtype.kind != "f"
                              or probe.shape[0] == 0):
        raise TypeError(f"{where} probe (Monitor's X) must be a float ndarray of rows (N >= 1, ...), got "
                        f"{type(probe).__name__} {getattr(probe, 'dtype', '')}{getattr(probe, 'shape', '')}")
    return spec


def probe_rows(spec, X_train):
    """The fixed rows activation statistics are measured on: the spec's probe, else X_train's first rows."""
    probe = spec["probe"]
    if probe is None:
        return X_train[:PROBE_ROWS]
    if probe.shape[1:] != X_train.shape[1:]:
        raise ValueError(f"monitor probe has rows of shape {probe.shape[1:]}, the training data's are "
                         f"{X_train.shape[1:]}")
    return probe


# ---------------------------------------------------------------- measurements
def _norm(a):
    a = np.asarray(a).reshape(-1)
    a = a.astype(np.float64, copy=False)
    return math.sqrt(float(np.dot(a, a)))


def snapshot_ratios(before, after):
    """{name: ||after - before|| / ||before||}, 0 when ||before|| == 0 (the optimizers' interface);
    float64 on the parameters' values."""
    out = {}
    for name, w0 in before.items():
        w = _norm(w0)
        out[name] = _norm(np.asarray(after[name], dtype=np.float64) - np.asarray(w0, dtype=np.float64)) / w if w else 0.0
    return out


def _median_max(ratios, matrices):
    values = [ratios[k] for k in matrices if k in ratios] or list(ratios.values())
    if not values:
        return None, None
    return float(np.median(values)), float(np.max(values))


class Recorder:
    """Takes the measurements of one Solver (module docstring). `params`: the optimized params
    (name -> array, the optimizer's order). The ratios come from the optimizer when it was built
    with track_update_ratio=True and has update_ratios(), else from a copy of the params."""

    def __init__(self, spec, probe, model, params):
        self.interval = spec["interval"]
        self.spec = spec
        self.probe = probe
        self.model = model
        self.params = params
        self.names = list(params)
        self.matrices = [k for k, v in params.items() if np.ndim(v) >= 2]
        self.fast = False
        self.activation = getattr(model, "activation", None) or spec["activation"] or "relu"
        self.activation_param = getattr(model, "activation_param", None)
        self._before = None

    def due(self, step):
        """Whether 1-based step `step` is measured."""
        return (step - 1) % self.interval == 0

    def before_step(self, optimizer):
        # The optimizer says whether it tracks (a subclass's _make_optimizer may have built it without).
        self.fast = (bool(getattr(optimizer, "track_update_ratio", False))
                     and callable(getattr(optimizer, "update_ratios", None)))
        if not self.fast:
            self._before = {k: np.array(v, copy=True) for k, v in self.params.items()}

    def _ratios(self, optimizer):
        if not self.fast:
            before, self._before = self._before, None
            return snapshot_ratios(before, self.params)
        out = {}
        for key, value in optimizer.update_ratios().items():
            name = self.names[key] if isinstance(key, numbers.Integral) and not isinstance(key, bool) else key
            out[str(name)] = float(value)
        return out

    def _activations(self):
        if not (hasattr(self.model, "hidden_dims") and "W1" in self.model.params):
            return []
        from ..babysit import activation_stats
        return activation_stats(self.model, self.probe, self.activation, self.activation_param)

    def after_step(self, step, epoch, loss, lr, grads, optimizer):
        """The measurement of step `step` (after the optimizer's step)."""
        ratios = self._ratios(optimizer)
        acts = self._activations()
        median, largest = _median_max(ratios, self.matrices)
        units = sum(a["width"] for a in acts)
        dead = sum(a["dead_units"] * a["width"] for a in acts) / units if units else None
        return {"iteration": step, "epoch": epoch, "loss": float(loss), "lr": float(lr),
                "ratio_source": RATIO_SOURCES[0] if self.fast else RATIO_SOURCES[1], "update_ratio": ratios,
                "grad_norm": {k: _norm(grads[k]) for k in self.names if k in grads}, "activations": acts,
                "ratio_median": median, "ratio_max": largest, "dead_fraction": dead}


# ---------------------------------------------------------------- diagnoses
def diagnosis(step, epoch, kind, message):
    return {"iteration": step, "epoch": epoch, "kind": kind, "message": message}


def exploded(spec, losses, step, epoch):
    """The "exploded" diagnosis when the last loss is not finite or above explode x the first; else None."""
    loss = losses[-1]
    if math.isfinite(loss) and loss <= spec["explode"] * losses[0]:
        return None
    return diagnosis(step, epoch, "exploded", f"loss exploded at iteration {step}: learning rate too high?")


def not_moving(spec, losses, step, epoch):
    """The "not_moving" warning at the end of each flat_window steps when the loss did not move."""
    w = spec["flat_window"]
    if step % w or len(losses) < w:
        return None
    window = losses[-w:]
    q = max(w // 4, 1)
    head, tail = math.fsum(window[:q]) / q, math.fsum(window[-q:]) / q
    if not abs(head - tail) <= spec["flat_tol"] * abs(head):
        return None
    return diagnosis(step, epoch, "not_moving", f"loss not moving over iterations {step - w + 1}..{step}: "
                     f"learning rate too low? ({head:.4g} -> {tail:.4g})")


# ---------------------------------------------------------------- the checkpoint's schema
def _require(condition, message):
    if not condition:
        raise ValueError(message)


def _is_int(v):
    return type(v) is int and v >= 0


def _is_float(v):
    return type(v) is float


def _float_map(v):
    return isinstance(v, dict) and all(isinstance(k, str) and _is_float(x) for k, x in v.items())


def check_record(rec, where, iteration):
    _require(isinstance(rec, dict) and set(rec) == set(RECORD_KEYS), f"{where} must be a dict with keys {RECORD_KEYS}")
    _require(_is_int(rec["iteration"]) and 1 <= rec["iteration"] <= iteration and _is_int(rec["epoch"]),
             f"{where}: iteration must be an int in [1, {iteration}], epoch an int >= 0")
    _require(all(_is_float(rec[k]) for k in ("loss", "lr")), f"{where}: loss and lr must be floats")
    _require(rec["ratio_source"] in RATIO_SOURCES, f"{where}: ratio_source must be one of {RATIO_SOURCES}")
    _require(_float_map(rec["update_ratio"]) and _float_map(rec["grad_norm"]),
             f"{where}: update_ratio and grad_norm must map names to floats")
    acts = rec["activations"]
    _require(isinstance(acts, list) and all(
        isinstance(a, dict) and set(a) == set(_ACTIVATION_KEYS) and _is_int(a["layer"]) and _is_int(a["width"])
        and all(_is_float(a[k]) for k in _ACTIVATION_KEYS[2:]) for a in acts),
        f"{where}: activations must be a list of dicts with keys {_ACTIVATION_KEYS}")
    _require(all(rec[k] is None or _is_float(rec[k]) for k in ("ratio_median", "ratio_max", "dead_fraction")),
             f"{where}: ratio_median, ratio_max and dead_fraction must be floats or None")


def check_diagnosis(d, where, iteration, kinds=KINDS):
    _require(isinstance(d, dict) and set(d) == set(DIAGNOSIS_KEYS), f"{where} must be a dict with keys {DIAGNOSIS_KEYS}")
    _require(_is_int(d["iteration"]) and d["iteration"] <= iteration and _is_int(d["epoch"]),
             f"{where}: iteration must be an int in [0, {iteration}], epoch an int >= 0")
    _require(isinstance(d["kind"], str) and d["kind"] in kinds, f"{where}: kind must be one of {kinds}")
    _require(isinstance(d["message"], str) and len(d["message"]) <= 1000, f"{where}: message must be a str")


def check_history(history, diagnoses, stopped, iteration, source):
    """The stored monitor_history, diagnoses and stopped entry (plain data only)."""
    _require(isinstance(history, list), f"{source}: monitor_history must be a list")
    for i, rec in enumerate(history):
        check_record(rec, f"{source}: monitor_history[{i}]", iteration)
    _require(isinstance(diagnoses, list), f"{source}: diagnoses must be a list")
    for i, d in enumerate(diagnoses):
        check_diagnosis(d, f"{source}: diagnoses[{i}]", iteration)
    if stopped is not None:
        check_diagnosis(stopped, f"{source}: stopped", iteration, STOP_KINDS)
        _require(stopped in diagnoses, f"{source}: stopped must be one of the diagnoses")
