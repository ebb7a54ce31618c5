"""L-BFGS (full batch) with torch.optim.LBFGS's algorithm, on flat buffers, robust to non-finite values.

    opt = LBFGS(model.params, lr=1, line_search_fn="strong_wolfe")
    loss = opt.step(lambda: model.loss(X, y))       # the closure returns (loss, grads)

The closure protocol (fastopt passes gradients explicitly, so the closure returns them instead of
writing ``.grad``): ``closure()`` takes no argument, evaluates the objective at the CURRENT values
of the parameters (which the optimizer sets in place before each call) and returns ``(loss, grads)``,
grads in the parameters' structure -- a dict by name when the parameters were given by name, else a
list in parameter order -- each like its parameter (dtype, shape, C-contiguous). That is exactly what
``FullyConnectedNet.loss(X, y)`` returns. The gradients are copied into the optimizer's own flat
buffer at once, so a closure may return the same (reused) arrays on every call.

The algorithm is torch's (minFunc's): the two-loop recursion over the last ``history_size``
curvature pairs, ``max_iter`` iterations and at most ``max_eval`` evaluations per ``step``, the
first step scaled by ``min(1, 1/|g|_1) * lr``, an optional strong-Wolfe line search with cubic
interpolation (torch's ``_strong_wolfe`` / ``_cubic_interpolate``), the same stopping tests in the
same order. On a convex float64 problem the iterates match torch's to rounding (the dot products are
summed in a different, fixed order). All vector work runs on one flat buffer per quantity through the
``lbfgs`` kernel family (fastopt._backend: compiled ``fastopt._lbfgs_kernels`` or the NumPy twin
``fastopt.reference.lbfgs``): dot products accumulated in double over a fixed block partition
(bitwise the same for any thread count), axpys in the parameters' precision, and the two-loop
recursion's update fused with its next dot product.

Non-finite values (the known failure of torch's LBFGS, which then returns NaN and leaves NaN
parameters) are recovered from, never propagated:

* a trial point whose loss or gradient is not finite is pulled back: the step toward it is halved
  (towards the last finite point: 0 for a fixed step or the first trial of the line search, the
  previous trial while bracketing, the bracket's low end while zooming), up to ``MAX_SHRINK``
  times, each try counting as an evaluation;
* if every try fails, the parameters go back to the last point with a finite loss and gradient, the
  curvature history is dropped (``state["n_resets"]`` counts this) and the iteration restarts from
  there with a steepest-descent step, as the first iteration does;
* if the first evaluation of a ``step`` is not finite and the previous ``step`` ended with a move that
  was not evaluated (the fixed-step mode skips the evaluation after the last iteration, as torch
  does), the parameters go back to the last finite point, the history is dropped, and the step goes
  on from there. At any other point that does not evaluate finite, ``step`` raises FloatingPointError.

A ``step`` that raises (the closure raised, returned something malformed, or no finite point was
found) puts the parameters and the state back as they were when it was called, then re-raises.

``state_dict()`` is plain data (numbers, None, and NumPy arrays: the history as (k, n) arrays), and a
restored optimizer continues bit for bit. LBFGS has one param group, as torch's; a scheduler from
``fastopt.optim.lr_scheduler`` may change ``param_groups[0]["lr"]`` between steps.
"""
import math
import numbers
import threading
from collections.abc import Mapping

import numpy as np

from .. import _backend
from .._validation import check_array, check_distinct, check_like, check_scalar
from ._base import state_dict_parts

__all__ = ["LBFGS"]

MAX_SHRINK = 30           # halvings of a step toward a non-finite point before the history is reset
_CURVATURE_MIN = 1e-10    # torch: a pair (s, y) enters the history only when y.s > 1e-10
_LINE_SEARCHES = (None, "strong_wolfe")
_STATE_KEYS = ("func_evals", "n_iter", "n_resets", "d", "t", "old_dirs", "old_stps", "ro", "H_diag",
               "prev_flat_grad", "prev_loss", "restart", "unevaluated_move", "last_finite_x")


def _check_max_eval(name, value):
    return None if value is None else check_scalar(name, value, low=1, integer=True)


def _check_line_search(name, value):
    if value not in _LINE_SEARCHES:
        raise ValueError(f"{name} must be None or 'strong_wolfe', got {value!r}")
    return value


# key -> checker; the group holds these, read (and checked) at every step as torch reads them.
_HYPER = (
    ("lr", lambda n, v: check_scalar(n, v, low=0)),
    ("max_iter", lambda n, v: check_scalar(n, v, low=1, integer=True)),
    ("max_eval", _check_max_eval),
    ("tolerance_grad", lambda n, v: check_scalar(n, v, low=0)),
    ("tolerance_change", lambda n, v: check_scalar(n, v, low=0)),
    ("history_size", lambda n, v: check_scalar(n, v, low=1, integer=True)),
    ("line_search_fn", _check_line_search),
)


def _cubic_interpolate(x1, f1, g1, x2, f2, g2, bounds=None):
    """Minimizer of the cubic through (x1, f1, g1), (x2, f2, g2), clamped to `bounds` (torch's)."""
    if bounds is not None:
        xmin_bound, xmax_bound = bounds
    else:
        xmin_bound, xmax_bound = (x1, x2) if x1 <= x2 else (x2, x1)
    # Python floats raise where torch's tensors give NaN or inf (a 0/0 between two equal flat ends,
    # the square of a huge slope): those cases, and a NaN minimizer, take the midpoint of the bounds,
    # the bisection torch falls back to when the cubic has no minimum, instead of failing the step.
    try:
        d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
        d2_square = d1 ** 2 - g1 * g2
        if d2_square >= 0:
            d2 = math.sqrt(d2_square)
            if x1 <= x2:
                min_pos = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
            else:
                min_pos = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
            if min_pos == min_pos:
                return min(max(min_pos, xmin_bound), xmax_bound)
    except (ZeroDivisionError, OverflowError):
        pass
    return (xmin_bound + xmax_bound) / 2.0


class _NoFinitePoint(Exception):
    """Every pulled-back trial was non-finite (internal: handled by a history reset)."""


class LBFGS:
    """torch.optim.LBFGS over NumPy arrays (see the module docstring for the closure protocol).

    params: a list of arrays, a dict name -> array, or a list holding one param-group dict; all
    float32 or all float64 (one flat buffer), C-contiguous, writeable; updated in place.
    """

    def __init__(self, params, lr=1, max_iter=20, max_eval=None, tolerance_grad=1e-7,
                 tolerance_change=1e-9, history_size=100, line_search_fn=None):
        values = dict(lr=lr, max_iter=max_iter, max_eval=max_eval, tolerance_grad=tolerance_grad,
                      tolerance_change=tolerance_change, history_size=history_size,
                      line_search_fn=line_search_fn)
        group, names, arrays = self._parse_params(params, values)
        hyper = self._validate_group("param_groups[0]", group)
        self.defaults = dict(hyper)
        group.update(hyper)
        group["params"] = self._group_params = tuple(arrays)
        if names is not None:
            group["param_names"] = tuple(names)
        self.param_groups = [group]
        self._params = list(arrays)
        self._names = names
        self._pflat = [a.reshape(-1) for a in arrays]
        offsets = np.cumsum([0] + [a.size for a in arrays])
        self._slices = [slice(int(a), int(b)) for a, b in zip(offsets[:-1], offsets[1:])]
        self._numel = int(offsets[-1])
        self._dtype = arrays[0].dtype
        self.state = self._initial_state()
        # step() runs user code between updates of shared buffers: a second step (another thread,
        # or the closure itself calling step) would interleave with it, so it raises instead.
        self._busy = threading.Lock()

    # ------------------------------------------------------------ construction
    @staticmethod
    def _parse_params(params, values):
        if isinstance(params, np.ndarray):
            raise TypeError("params must be a list or dict of arrays, got a single ndarray; pass [array]")
        group = {}
        if isinstance(params, (list, tuple)) and params and all(isinstance(g, dict) for g in params):
            if len(params) != 1:
                raise ValueError(f"LBFGS does not support several param groups (got {len(params)}), as torch's")
            group = {k: v for k, v in params[0].items() if k != "params"}
            if "params" not in params[0]:
                raise ValueError("param_groups[0] has no 'params' entry")
            unknown = sorted(set(group) - {k for k, _ in _HYPER})
            if unknown:
                raise ValueError(f"param_groups[0] has unknown entries {unknown}; "
                                 f"expected {[k for k, _ in _HYPER]}")
            params = params[0]["params"]
        for key, value in values.items():
            group.setdefault(key, value)
        if isinstance(params, Mapping):
            names, arrays = list(params.keys()), list(params.values())
            for name in names:
                if not isinstance(name, str):
                    raise TypeError(f"params keys must be str names, got {type(name).__name__}")
            labels = [f"params[{n!r}]" for n in names]
        elif isinstance(params, (list, tuple)):
            names, arrays = None, list(params)
            labels = [f"params[{i}]" for i in range(len(arrays))]
        else:
            raise TypeError(f"params must be a list or dict of arrays, got {type(params).__name__}")
        if not arrays:
            raise ValueError("params is empty: the optimizer has nothing to update")
        for label, a in zip(labels, arrays):
            check_array(label, a, writeable=True)
        for label, a in zip(labels[1:], arrays[1:]):
            if a.dtype != arrays[0].dtype:
                raise TypeError(f"{label} has dtype {a.dtype} but {labels[0]} has {arrays[0].dtype}: "
                                f"LBFGS keeps one flat buffer, so all parameters need one dtype")
        check_distinct(list(zip(labels, arrays)))
        return group, names, arrays

    @staticmethod
    def _validate_group(label, group):
        out = {}
        for key, check in _HYPER:
            if key not in group:
                raise ValueError(f"{label} has no {key!r} entry")
            out[key] = check(f"{label}[{key!r}]", group[key])
        if out["max_eval"] is None:
            out["max_eval"] = out["max_iter"] * 5 // 4      # torch's default
        return out

    @staticmethod
    def _initial_state():
        return {"func_evals": 0, "n_iter": 0, "n_resets": 0, "d": None, "t": None, "old_dirs": [],
                "old_stps": [], "ro": [], "H_diag": 1.0, "prev_flat_grad": None, "prev_loss": None,
                "restart": True, "unevaluated_move": False, "last_finite_x": None}

    # ------------------------------------------------------------ flat buffers <-> parameters
    def _threads(self):
        return _backend.threads_for(self._numel, self._k.GRAIN)

    def _gather_params(self):
        x = np.empty(self._numel, self._dtype)
        for p, sl in zip(self._pflat, self._slices):
            x[sl] = p
        return x

    def _set_params(self, x):
        for p, sl in zip(self._pflat, self._slices):
            p[...] = x[sl]

    def _place(self, x, t, d):
        """Parameters <- x + t * d (written straight into each parameter)."""
        k, nt = self._k, self._nt
        for p, sl in zip(self._pflat, self._slices):
            k.add_scaled(out=p, x=x[sl], a=t, d=d[sl], n_threads=nt)

    def _gather_grads(self, grads):
        """Validate the closure's grads (the params' structure) and copy them into a new flat buffer."""
        params, names = self._params, self._names
        if names is not None:
            if not isinstance(grads, Mapping):
                raise TypeError(f"the closure must return (loss, grads) with grads a dict by parameter "
                                f"name {list(names)}, got grads of type {type(grads).__name__}")
            if set(grads) != set(names) or len(grads) != len(names):
                missing = [n for n in names if n not in grads]
                extra = sorted(map(repr, set(grads) - set(names)))
                raise ValueError(f"the closure's grads must have exactly the parameter names; missing "
                                 f"{missing}, unexpected [{', '.join(extra)}]")
            seq = [grads[n] for n in names]
            labels = [f"grads[{n!r}]" for n in names]
            plabels = [f"params[{n!r}]" for n in names]
        else:
            if not isinstance(grads, (list, tuple)):
                raise TypeError(f"the closure must return (loss, grads) with grads a list aligned with "
                                f"the parameters, got grads of type {type(grads).__name__}")
            if len(grads) != len(params):
                raise ValueError(f"the closure's grads has {len(grads)} entries, expected {len(params)}")
            seq = list(grads)
            labels = [f"grads[{i}]" for i in range(len(seq))]
            plabels = [f"params[{i}]" for i in range(len(seq))]
        for g, p, label, plabel in zip(seq, params, labels, plabels):
            check_like(label, g, plabel, p)
        flat = np.empty(self._numel, self._dtype)
        for g, sl in zip(seq, self._slices):
            flat[sl] = g.reshape(-1)
        return flat

    def _evaluate(self, closure):
        """(loss, flat grad, max |grad|, finite) at the parameters' current values."""
        out = closure()
        if not isinstance(out, tuple) or len(out) != 2:
            raise TypeError(f"the closure must return a pair (loss, grads), got {type(out).__name__}"
                            + (f" of length {len(out)}" if isinstance(out, tuple) else ""))
        loss, grads = out
        if isinstance(loss, np.ndarray) and loss.ndim == 0:
            loss = loss[()]
        if isinstance(loss, (bool, np.bool_)) or not isinstance(loss, numbers.Real):
            raise TypeError(f"the closure's loss must be a real number, got {type(loss).__name__}")
        loss = float(loss)
        g = self._gather_grads(grads)
        gmax = self._k.abs_max(x=g, n_threads=self._nt)
        return loss, g, gmax, math.isfinite(loss) and math.isfinite(gmax)

    # ------------------------------------------------------------ the step
    def step(self, closure):
        """Up to max_iter L-BFGS iterations from the current parameters; returns the loss the first
        closure call returned (torch's convention)."""
        if not callable(closure):
            raise TypeError(f"closure must be callable () -> (loss, grads), got {type(closure).__name__}")
        if len(self.param_groups) != 1:
            raise ValueError("LBFGS has exactly one param group; param_groups was changed")
        group = self.param_groups[0]
        if group.get("params") is not self._group_params:
            raise ValueError("param_groups[0]['params'] was replaced; parameters are fixed at construction")
        hyper = self._validate_group("param_groups[0]", group)
        if not self._busy.acquire(blocking=False):
            raise RuntimeError("LBFGS.step is already running (in another thread, or the closure called "
                               "step); one step at a time")
        try:
            self._k = _backend.kernels("lbfgs")
            self._nt = self._threads()
            saved_state = {key: (list(v) if isinstance(v, list) else v) for key, v in self.state.items()}
            saved_params = self._gather_params()
            try:
                return self._run(closure, hyper)
            except BaseException:
                self._set_params(saved_params)
                self.state = saved_state
                raise
        finally:
            self._busy.release()

    def _reset_history(self, state):
        state["old_dirs"], state["old_stps"], state["ro"] = [], [], []
        state["H_diag"] = 1.0
        state["restart"] = True
        state["n_resets"] += 1

    def _run(self, closure, h):
        k, nt = self._k, self._nt
        state = self.state
        lr, max_iter, max_eval = h["lr"], h["max_iter"], h["max_eval"]
        tolerance_grad, tolerance_change = h["tolerance_grad"], h["tolerance_change"]
        history_size = h["history_size"]

        loss, g, gmax, finite = self._evaluate(closure)
        current_evals = 1
        state["func_evals"] += 1
        if not finite and state["unevaluated_move"]:
            # The last fixed step of the previous call moved without evaluating: go back.
            self._set_params(state["last_finite_x"])
            self._reset_history(state)
            loss, g, gmax, finite = self._evaluate(closure)
            current_evals += 1
            state["func_evals"] += 1
        if not finite:
            raise FloatingPointError("LBFGS: the closure returned a non-finite loss or gradient at the "
                                     "current parameters, and there is no earlier finite point to return to")
        state["unevaluated_move"] = False
        state["last_finite_x"] = None
        orig_loss = loss
        if gmax <= tolerance_grad:
            return orig_loss

        x = self._gather_params()        # the last point with a finite loss and gradient
        d, t = state["d"], state["t"]
        old_dirs, old_stps, ro = state["old_dirs"], state["old_stps"], state["ro"]
        H_diag, prev_flat_grad, prev_loss = state["H_diag"], state["prev_flat_grad"], state["prev_loss"]

        n_iter = 0
        while n_iter < max_iter:
            n_iter += 1
            state["n_iter"] += 1
            restart = state["restart"]
            # ---------------------------------------------------- the descent direction
            if restart:
                d = np.empty_like(g)
                k.scale(out=d, a=-1.0, x=g, n_threads=nt)
                old_dirs, old_stps, ro = [], [], []
                H_diag = 1.0
                state["restart"] = False
            else:
                y = g.copy()
                k.axpy(y=y, a=-1.0, x=prev_flat_grad, n_threads=nt)
                s = np.empty_like(d)
                k.scale(out=s, a=t, x=d, n_threads=nt)
                ys = k.dot(x=y, y=s, n_threads=nt)
                if ys > _CURVATURE_MIN:
                    if len(old_dirs) == history_size:
                        old_dirs.pop(0)
                        old_stps.pop(0)
                        ro.pop(0)
                    old_dirs.append(y)
                    old_stps.append(s)
                    ro.append(1.0 / ys)
                    H_diag = ys / k.dot(x=y, y=y, n_threads=nt)
                d = self._two_loop(g, old_dirs, old_stps, ro, H_diag)
            prev_flat_grad = g
            prev_loss = loss
            # ---------------------------------------------------- the step length
            if restart:
                t = min(1.0, 1.0 / k.abs_sum(x=g, n_threads=nt)) * lr
            else:
                t = lr
            gtd = k.dot(x=g, y=d, n_threads=nt)
            if not math.isfinite(gtd):
                # A direction that overflowed: start again from steepest descent.
                self._reset_history(state)
                old_dirs, old_stps, ro, H_diag = [], [], [], 1.0
                if current_evals >= max_eval:
                    break
                continue
            if gtd > -tolerance_change:
                break

            try:
                if h["line_search_fn"] == "strong_wolfe":
                    loss, g, t, gmax, ls_func_evals = self._strong_wolfe(
                        closure, x, t, d, loss, g, gtd, tolerance_change,
                        max_ls=max_eval - current_evals)   # torch: the step's evaluation budget
                    self._place(x, t, d)
                    x = self._gather_params()
                    opt_cond = gmax <= tolerance_grad
                elif n_iter != max_iter:
                    loss, g, t, gmax, ls_func_evals = self._shrink_until_finite(closure, x, 0.0, t, d)
                    x = self._gather_params()
                    opt_cond = gmax <= tolerance_grad
                else:
                    # torch: no evaluation after the last fixed step (useless when stochastic).
                    self._place(x, t, d)
                    state["unevaluated_move"] = True
                    state["last_finite_x"] = x
                    ls_func_evals = 0
                    opt_cond = False
            except _NoFinitePoint as exc:
                ls_func_evals = exc.args[0]
                self._set_params(x)                 # back to the last finite point, with its g
                loss, g = prev_loss, prev_flat_grad
                self._reset_history(state)
                old_dirs, old_stps, ro, H_diag = [], [], [], 1.0
                current_evals += ls_func_evals
                state["func_evals"] += ls_func_evals
                if n_iter == max_iter or current_evals >= max_eval:
                    break
                continue

            current_evals += ls_func_evals
            state["func_evals"] += ls_func_evals
            # ---------------------------------------------------- stopping tests (torch's order)
            if n_iter == max_iter:
                break
            if current_evals >= max_eval:
                break
            if opt_cond:
                break
            if k.abs_max(x=d, n_threads=nt) * abs(t) <= tolerance_change:
                break
            if abs(loss - prev_loss) < tolerance_change:
                break

        state.update(d=d, t=t, old_dirs=old_dirs, old_stps=old_stps, ro=ro, H_diag=H_diag,
                     prev_flat_grad=prev_flat_grad, prev_loss=prev_loss)
        return orig_loss

    def _two_loop(self, g, old_dirs, old_stps, ro, H_diag):
        """-H g by the two-loop recursion; each update is fused with the next loop's dot product."""
        k, nt = self._k, self._nt
        num_old = len(old_dirs)
        al = [0.0] * num_old
        q = np.empty_like(g)
        k.scale(out=q, a=-1.0, x=g, n_threads=nt)
        if num_old == 0:
            k.scale(out=q, a=H_diag, x=q, n_threads=nt)
            return q
        sq = k.dot(x=old_stps[-1], y=q, n_threads=nt)
        for i in range(num_old - 1, -1, -1):
            al[i] = sq * ro[i]
            if i > 0:
                sq = k.axpy_dot(y=q, a=-al[i], x=old_dirs[i], z=old_stps[i - 1], n_threads=nt)
            else:
                k.axpy(y=q, a=-al[i], x=old_dirs[i], n_threads=nt)
        r = q
        k.scale(out=r, a=H_diag, x=q, n_threads=nt)
        yr = k.dot(x=old_dirs[0], y=r, n_threads=nt)
        for i in range(num_old):
            be_i = yr * ro[i]
            if i + 1 < num_old:
                yr = k.axpy_dot(y=r, a=al[i] - be_i, x=old_stps[i], z=old_dirs[i + 1], n_threads=nt)
            else:
                k.axpy(y=r, a=al[i] - be_i, x=old_stps[i], n_threads=nt)
        return r

    def _shrink_until_finite(self, closure, x, t_lo, t, d):
        """Evaluate at x + t d; while that is not finite, move t halfway back toward t_lo (a finite
        trial), at most MAX_SHRINK times. Returns (loss, g, t, gmax, evaluations); raises
        _NoFinitePoint(evaluations) when every try failed."""
        evals = 0
        for _ in range(MAX_SHRINK + 1):
            self._place(x, t, d)
            loss, g, gmax, finite = self._evaluate(closure)
            evals += 1
            if finite:
                return loss, g, t, gmax, evals
            t = t_lo + 0.5 * (t - t_lo)
        raise _NoFinitePoint(evals)

    def _strong_wolfe(self, closure, x, t, d, f, g, gtd, tolerance_change, c1=1e-4, c2=0.9, max_ls=25):
        """torch's _strong_wolfe (ported from minFunc/lswolfe.lua), with non-finite trials pulled back
        toward the last finite trial. Returns (f, g, t, max|g|, evaluations)."""
        k, nt = self._k, self._nt
        d_norm = k.abs_max(x=d, n_threads=nt)
        gmax0 = k.abs_max(x=g, n_threads=nt)
        f_new, g_new, t, gmax_new, ls_func_evals = self._shrink_until_finite(closure, x, 0.0, t, d)
        gtd_new = k.dot(x=g_new, y=d, n_threads=nt)

        t_prev, f_prev, g_prev, gtd_prev, gmax_prev = 0.0, f, g, gtd, gmax0
        done = False
        ls_iter = 0
        while ls_iter < max_ls:
            if f_new > (f + c1 * t * gtd) or (ls_iter > 1 and f_new >= f_prev):
                bracket, bracket_f = [t_prev, t], [f_prev, f_new]
                bracket_g, bracket_gtd = [g_prev, g_new], [gtd_prev, gtd_new]
                bracket_gmax = [gmax_prev, gmax_new]
                break
            if abs(gtd_new) <= -c2 * gtd:
                bracket, bracket_f, bracket_g, bracket_gmax = [t], [f_new], [g_new], [gmax_new]
                done = True
                break
            if gtd_new >= 0:
                bracket, bracket_f = [t_prev, t], [f_prev, f_new]
                bracket_g, bracket_gtd = [g_prev, g_new], [gtd_prev, gtd_new]
                bracket_gmax = [gmax_prev, gmax_new]
                break
            min_step = t + 0.01 * (t - t_prev)
            max_step = t * 10
            tmp = t
            t = _cubic_interpolate(t_prev, f_prev, gtd_prev, t, f_new, gtd_new, bounds=(min_step, max_step))
            t_prev, f_prev, g_prev, gtd_prev, gmax_prev = tmp, f_new, g_new, gtd_new, gmax_new
            f_new, g_new, t, gmax_new, evals = self._shrink_until_finite(closure, x, t_prev, t, d)
            ls_func_evals += evals
            gtd_new = k.dot(x=g_new, y=d, n_threads=nt)
            ls_iter += 1

        if ls_iter == max_ls:
            bracket, bracket_f = [0.0, t], [f, f_new]
            bracket_g, bracket_gmax = [g, g_new], [gmax0, gmax_new]
            # torch leaves bracket_gtd from the bracketing loop here (undefined if it never broke);
            # the zoom below is skipped in that case since ls_iter == max_ls.

        insuf_progress = False
        low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[-1] else (1, 0)
        while not done and ls_iter < max_ls:
            if abs(bracket[1] - bracket[0]) * d_norm < tolerance_change:
                break
            t = _cubic_interpolate(bracket[0], bracket_f[0], bracket_gtd[0],
                                   bracket[1], bracket_f[1], bracket_gtd[1])
            eps = 0.1 * (max(bracket) - min(bracket))
            if min(max(bracket) - t, t - min(bracket)) < eps:
                if insuf_progress or t >= max(bracket) or t <= min(bracket):
                    t = max(bracket) - eps if abs(t - max(bracket)) < abs(t - min(bracket)) \
                        else min(bracket) + eps
                    insuf_progress = False
                else:
                    insuf_progress = True
            else:
                insuf_progress = False

            f_new, g_new, t, gmax_new, evals = self._shrink_until_finite(closure, x, bracket[low_pos], t, d)
            ls_func_evals += evals
            gtd_new = k.dot(x=g_new, y=d, n_threads=nt)
            ls_iter += 1

            if f_new > (f + c1 * t * gtd) or f_new >= bracket_f[low_pos]:
                bracket[high_pos], bracket_f[high_pos] = t, f_new
                bracket_g[high_pos], bracket_gtd[high_pos], bracket_gmax[high_pos] = g_new, gtd_new, gmax_new
                low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[1] else (1, 0)
            else:
                if abs(gtd_new) <= -c2 * gtd:
                    done = True
                elif gtd_new * (bracket[high_pos] - bracket[low_pos]) >= 0:
                    bracket[high_pos], bracket_f[high_pos] = bracket[low_pos], bracket_f[low_pos]
                    bracket_g[high_pos], bracket_gtd[high_pos] = bracket_g[low_pos], bracket_gtd[low_pos]
                    bracket_gmax[high_pos] = bracket_gmax[low_pos]
                bracket[low_pos], bracket_f[low_pos] = t, f_new
                bracket_g[low_pos], bracket_gtd[low_pos], bracket_gmax[low_pos] = g_new, gtd_new, gmax_new

        return (bracket_f[low_pos], bracket_g[low_pos], bracket[low_pos], bracket_gmax[low_pos],
                ls_func_evals)

    # ------------------------------------------------------------ state_dict
    def state_dict(self):
        """Plain data: {"state": {...}, "param_groups": [{hyperparameters, "params": [indices]}]}.

        The history is stored as (k, n) arrays "old_dirs" (y) and "old_stps" (s) and a (k,) array
        "ro"; other entries are numbers, bools, None or 1-D arrays. Everything is a copy.
        """
        st = self.state
        out = {}
        for key in _STATE_KEYS:
            v = st[key]
            if key in ("old_dirs", "old_stps"):
                out[key] = np.stack(v) if v else np.empty((0, self._numel), self._dtype)
            elif key == "ro":
                out[key] = np.array(v, dtype=np.float64)
            elif isinstance(v, np.ndarray):
                out[key] = v.copy()
            else:
                out[key] = v
        group = self.param_groups[0]
        saved = dict(self._validate_group("param_groups[0]", group))
        saved["params"] = list(range(len(self._params)))
        if "param_names" in group:
            saved["param_names"] = list(group["param_names"])
        return {"state": out, "param_groups": [saved]}

    def load_state_dict(self, state_dict):
        """Restore from state_dict() output; everything is validated first, arrays are copied in."""
        label = "state_dict"
        groups, st = state_dict_parts(state_dict, label)
        if not isinstance(groups, (list, tuple)) or len(groups) != 1 or not isinstance(groups[0], dict):
            raise ValueError(f"{label}['param_groups'] must be a list of one dict (LBFGS has one group)")
        g0 = groups[0]
        n_params = len(self._params)
        if list(g0.get("params", ())) != list(range(n_params)):
            raise ValueError(f"{label}['param_groups'][0]['params'] must be {list(range(n_params))}, "
                             f"got {g0.get('params')!r}")
        mine = self.param_groups[0].get("param_names")
        if "param_names" in g0 and mine is not None and list(g0["param_names"]) != list(mine):
            raise ValueError(f"{label}['param_groups'][0]['param_names'] {list(g0['param_names'])} do not "
                             f"match this optimizer's {list(mine)}")
        hyper = self._validate_group(f"{label}['param_groups'][0]", g0)
        new = self._validate_state(f"{label}['state']", st, hyper["history_size"])
        if not self._busy.acquire(blocking=False):
            raise RuntimeError("LBFGS.load_state_dict called while step is running")
        try:
            self.param_groups[0].update(hyper)
            self.state = new
        finally:
            self._busy.release()

    def _validate_state(self, label, st, history_size):
        if not isinstance(st, dict):
            raise TypeError(f"{label} must be a dict, got {type(st).__name__}")
        if set(st) != set(_STATE_KEYS):
            raise ValueError(f"{label} must have the entries {sorted(_STATE_KEYS)}, got {sorted(map(str, st))}")
        n, dtype = self._numel, self._dtype
        new = {}
        for key in ("func_evals", "n_iter", "n_resets"):
            new[key] = check_scalar(f"{label}[{key!r}]", st[key], low=0, integer=True)
        for key in ("restart", "unevaluated_move"):
            if not isinstance(st[key], (bool, np.bool_)):
                raise TypeError(f"{label}[{key!r}] must be a bool, got {type(st[key]).__name__}")
            new[key] = bool(st[key])
        new["H_diag"] = check_scalar(f"{label}['H_diag']", st["H_diag"], low=0, low_open=True)
        for key in ("t", "prev_loss"):
            new[key] = None if st[key] is None else check_scalar(f"{label}[{key!r}]", st[key])

        def vector(key):
            v = st[key]
            if v is None:
                return None
            if not isinstance(v, np.ndarray) or v.dtype != dtype or v.shape != (n,):
                raise ValueError(f"{label}[{key!r}] must be None or a {dtype} array of shape ({n},), "
                                 f"got {v.dtype if isinstance(v, np.ndarray) else type(v).__name__} "
                                 f"{getattr(v, 'shape', '')}")
            if not np.all(np.isfinite(v)):
                raise ValueError(f"{label}[{key!r}] holds non-finite values")
            return v.copy()

        for key in ("d", "prev_flat_grad", "last_finite_x"):
            new[key] = vector(key)
        dirs, stps, ro = st["old_dirs"], st["old_stps"], st["ro"]
        for key, v in (("old_dirs", dirs), ("old_stps", stps)):
            if not isinstance(v, np.ndarray) or v.dtype != dtype or v.ndim != 2 or v.shape[1] != n:
                raise ValueError(f"{label}[{key!r}] must be a {dtype} array of shape (k, {n})")
            if not np.all(np.isfinite(v)):
                raise ValueError(f"{label}[{key!r}] holds non-finite values")
        if not isinstance(ro, np.ndarray) or ro.ndim != 1 or not (dirs.shape[0] == stps.shape[0] == ro.shape[0]):
            raise ValueError(f"{label}: old_dirs, old_stps and ro must hold the same number k of pairs")
        if ro.shape[0] > history_size:
            raise ValueError(f"{label} holds {ro.shape[0]} pairs, more than history_size={history_size}")
        if not np.all(np.isfinite(ro)) or np.any(ro <= 0):
            raise ValueError(f"{label}['ro'] must hold finite positive numbers (1 / y.s)")
        if not new["restart"] and (new["d"] is None or new["t"] is None or new["prev_flat_grad"] is None):
            raise ValueError(f"{label}: a state that continues (restart False) needs d, t and prev_flat_grad")
        if new["unevaluated_move"] != (new["last_finite_x"] is not None):
            raise ValueError(f"{label}: last_finite_x is given exactly when unevaluated_move is True")
        new["old_dirs"] = [row.copy() for row in dirs]
        new["old_stps"] = [row.copy() for row in stps]
        new["ro"] = [float(r) for r in ro]
        return new

    def __repr__(self):
        group = self.param_groups[0]
        body = "\n".join(f"    {k}: {group[k]}" for k, _ in _HYPER)
        return f"LBFGS (\nParameter Group 0\n{body}\n)"
