"""`fastopt search`: random hyperparameter search in log space, coarse to fine (CS231n lecture 6).

    fastopt search --trials 20 --epochs 2 --lr log:1e-5,1e-1 --reg log:1e-6,1e-1 --stages 2 --json s.json

Each hyperparameter is a fixed value or a distribution: ``log:LO,HI`` (log-uniform, 0 < LO < HI),
``uniform:LO,HI`` and ``choice:A|B|...`` (``--hidden choice:64|128,64``). A stage draws --trials
configurations and trains each for its epochs; the next stage narrows every range around the best
quarter of the trials (never beyond the range given) and trains twice as long (stage s: epochs x 2^s).
At the end: a table, the best configuration as a `fastopt train` command line, a warning for each
best value that lies on the edge of its range (widen it: the optimum may lie outside), and the plot of
validation accuracy against lr and reg on log axes.

Reproducibility: trial t of stage s draws its values from ``default_rng([seed, s, t])`` and trains
with a seed derived from (seed, s, t) on one thread, so its result does not depend on which worker
ran it or in what order. Every finished trial is appended to the --json file at once (atomic
rewrite), and --resume FILE skips the trials that file holds.

Where trials run: any ``concurrent.futures.Executor`` (API: ``random_search(..., executor=...)``);
``--workers K`` is a local process pool, ``--scheduler ADDRESS`` a Dask cluster (``pip install
'fastopt[distributed]'``). A trial lost with its worker is rescheduled by Dask, and resubmitted here
if its future fails (``retries``).
"""
import concurrent.futures as cf
import functools
import json
import math
import sys
import time
from dataclasses import dataclass

import numpy as np

from .babysit import (add_model_options, check_output_paths, model_kwargs, parse_model_options,
                      update_rule, write_json)
from .cli import UsageError

FORMAT, VERSION = "fastopt.search", 1
SEARCHED = ("lr", "reg", "dropout", "hidden")      # the options a distribution may be given for
TOP_FRACTION = 0.25                                # a stage narrows around its best quarter
EDGE = 0.1                                         # "on the edge": within 10% of the span of an end
DEFAULT_RANGES = {"lr": "log:1e-5,1e-1", "reg": "log:1e-6,1e-1"}


# ----------------------------------------------------------------------------------------------
# distributions
# ----------------------------------------------------------------------------------------------

def _hidden_value(text):
    sizes = [int(p) for p in text.split(",")]
    if not sizes or any(s < 1 for s in sizes):
        raise ValueError(text)
    return sizes


# How each searched option's values are read and bounded: (parse one value, low, low_open, high).
_VALUE = {"lr": (float, 0.0, True, None), "reg": (float, 0.0, False, None),
          "dropout": (float, 0.0, True, 1.0), "hidden": (_hidden_value, None, False, None)}


@dataclass(frozen=True)
class Dist:
    """One hyperparameter: kind "log" / "uniform" (low, high), "choice" (values) or "fixed" (values[0])."""
    name: str
    kind: str
    low: float = None
    high: float = None
    values: tuple = ()

    def spec(self):
        if self.kind in ("log", "uniform"):
            return f"{self.kind}:{self.low:g},{self.high:g}"
        text = [",".join(map(str, v)) if isinstance(v, list) else f"{v:g}" for v in self.values]
        return ("choice:" + "|".join(text)) if self.kind == "choice" else text[0]

    def _t(self, v):
        return math.log(v) if self.kind == "log" else v

    def _inv(self, u):
        return math.exp(u) if self.kind == "log" else u

    def sample(self, rng):
        if self.kind in ("log", "uniform"):
            return self._inv(rng.uniform(self._t(self.low), self._t(self.high)))
        if self.kind == "choice":
            return self.values[int(rng.integers(len(self.values)))]
        return self.values[0]

    def narrow(self, best, within):
        """The range spanned by the `best` values, padded by a quarter of its width, inside `within`."""
        if self.kind in ("log", "uniform"):
            lo, hi = self._t(min(best)), self._t(max(best))
            pad = 0.25 * (hi - lo) if hi > lo else 0.05 * (self._t(within.high) - self._t(within.low))
            return Dist(self.name, self.kind, max(within.low, self._inv(lo - pad)),
                        min(within.high, self._inv(hi + pad)))
        if self.kind == "choice":
            kept = tuple(v for v in self.values if v in best)
            return Dist(self.name, "choice", values=kept) if len(kept) > 1 else Dist(self.name, "fixed", values=kept)
        return self

    def edge(self, value):
        """"lower" / "upper" when `value` lies within EDGE of an end of the range, else None."""
        if self.kind not in ("log", "uniform"):
            return None
        u = (self._t(value) - self._t(self.low)) / (self._t(self.high) - self._t(self.low))
        return "lower" if u < EDGE else "upper" if u > 1 - EDGE else None


def parse_dist(name, text):
    """A Dist from 'log:LO,HI', 'uniform:LO,HI', 'choice:A|B' or a plain value (ValueError if bad)."""
    parse, low, low_open, high = _VALUE[name]
    option = "--" + name

    def value(v, bounded=True):
        try:
            x = parse(v.strip())
        except ValueError:
            raise ValueError(f"{option}: {v!r} is not a valid value") from None
        if isinstance(x, float) and not bounded and not math.isfinite(x):
            raise ValueError(f"{option}: {v!r} must be a finite number")
        if isinstance(x, float) and bounded:
            if not math.isfinite(x) or (low is not None and (x < low or (low_open and x == low))) \
                    or (high is not None and x > high):
                bound = (f"{'>' if low_open else '>='} {low:g}" if low is not None else "") + \
                        (f" and <= {high:g}" if high is not None else "")
                raise ValueError(f"{option}: {v!r} must be a finite number {bound}")
        return x

    kind, sep, rest = text.partition(":")
    if not sep:
        return Dist(name, "fixed", values=(value(text),))
    if kind == "choice":
        values = tuple(value(v) for v in rest.split("|"))
        return Dist(name, "choice", values=values) if len(values) > 1 else Dist(name, "fixed", values=values)
    if kind not in ("log", "uniform"):
        raise ValueError(f"{option}: unknown distribution {kind!r} in {text!r} (use log:LO,HI, uniform:LO,HI, "
                         f"choice:A|B or a plain value)")
    if name == "hidden":
        raise ValueError(f"{option}: layer sizes take choice:A|B or a plain value, got {text!r}")
    parts = rest.split(",")
    if len(parts) != 2:
        raise ValueError(f"{option}: {kind} needs two bounds LO,HI, got {text!r}")
    lo, hi = value(parts[0], bounded=False), value(parts[1], bounded=False)
    if kind == "log" and lo <= 0:
        raise ValueError(f"{option}: log:LO,HI needs 0 < LO, got {text!r}")
    if not lo < hi:
        raise ValueError(f"{option}: {kind}:LO,HI needs LO < HI, got {text!r}")
    value(parts[0]), value(parts[1])        # then the option's own bounds (dropout's (0, 1])
    return Dist(name, kind, lo, hi)


def parse_space(specs):
    """{name: Dist} from {name: text} for the searched options."""
    return {name: parse_dist(name, text) for name, text in specs.items()}


# ----------------------------------------------------------------------------------------------
# trials
# ----------------------------------------------------------------------------------------------

def trial_seed(seed, stage, trial):
    """The training seed of trial (stage, trial): a function of the three numbers alone."""
    return int(np.random.SeedSequence([seed, stage, trial]).generate_state(1)[0] % (2**31 - 1))


def sample_trial(space, seed, stage, trial):
    rng = np.random.default_rng([seed, stage, trial])
    return {name: dist.sample(rng) for name, dist in space.items()}


def _trial_key(stage, trial):
    return f"{stage}/{trial}"


@functools.lru_cache(maxsize=4)
def _named_data(name, data_dir):
    from .train_cli import load_data
    return load_data({"data": name, "data_dir": data_dir})


def run_trial(spec, data=None):
    """Train one configuration; a top-level function so process pools and Dask workers can run it.

    spec: {"key", "stage", "trial", "seed", "epochs", "params" (lr, reg, dropout, hidden), "base"
    (the fixed model/solver configuration, as babysit.parse_model_options returns it)}. data: the
    data dict, or None to load spec["base"]["data"] by name in the worker (cached per process).
    Runs on one thread (fastopt's kernels and NumPy's BLAS): trials run side by side.
    """
    import fastopt
    from ._blas import limit_blas_threads
    from .nn import FullyConnectedNet
    from .solver import Solver
    from .train_cli import NUM_TRAIN_SAMPLES

    base, p = spec["base"], spec["params"]
    if data is None:
        data = _named_data(base["data"], base.get("data_dir"))
    cfg = {**base, "lr": p["lr"], "reg": p["reg"], "dropout": p["dropout"], "hidden": p["hidden"],
           "seed": spec["seed"]}
    fastopt.set_num_threads(1)
    start = time.perf_counter()
    with limit_blas_threads(1), np.errstate(all="ignore"):   # a diverging trial is a result, not an error
        model = FullyConnectedNet(**model_kwargs(cfg, data))
        rule, optim_config = update_rule(cfg)
        solver = Solver(model, {k: data[k] for k in ("X_train", "y_train", "X_val", "y_val")},
                        update_rule=rule, optim_config=optim_config, lr_decay=base["lr_decay"],
                        batch_size=base["batch_size"], num_epochs=spec["epochs"],
                        num_train_samples=NUM_TRAIN_SAMPLES, verbose=False, seed=spec["seed"])
        solver.train()
    losses = solver.loss_history
    return {"key": spec["key"], "stage": spec["stage"], "trial": spec["trial"], "seed": spec["seed"],
            "epochs": spec["epochs"], "params": p,
            "val_acc": float(solver.best_val_acc),
            "train_acc": float(solver.train_acc_history[-1]) if solver.train_acc_history else math.nan,
            "final_loss": float(losses[-1]) if losses else math.nan,
            "seconds": round(time.perf_counter() - start, 3)}


def _result_order(r):
    """Best first: validation accuracy, then the later stage (trained longer), then the key."""
    return (-r["val_acc"] if math.isfinite(r["val_acc"]) else math.inf, -r["stage"], r["trial"])


def narrow_space(space, original, results):
    """The next stage's space: each range narrowed around the best TOP_FRACTION of `results`."""
    ranked = sorted(results, key=_result_order)
    top = ranked[:max(2, math.ceil(TOP_FRACTION * len(ranked)))]
    return {name: dist.narrow([r["params"][name] for r in top], original[name]) for name, dist in space.items()}


def random_search(space, base, *, trials, epochs, stages=1, seed=0, executor=None, data=None,
                  previous=(), on_result=None, retries=2):
    """Coarse-to-fine random search. Returns {"trials": [...], "best": result, "stages": [space specs],
    "warnings": [...]}.

    space: {name: Dist} for lr, reg, dropout, hidden (parse_space). base: the fixed configuration
    (babysit.parse_model_options plus lr_decay). executor: any concurrent.futures.Executor (None:
    trials run here, one after the other). data: passed to every trial (None: loaded by name in each
    worker). previous: results of an interrupted search (their trials are not run again). on_result:
    called with each new result as it arrives (in the calling thread). A trial whose future fails is
    submitted again up to `retries` times.
    """
    from ._validation import check_scalar

    if not isinstance(space, dict) or set(space) != set(SEARCHED) or \
            not all(isinstance(d, Dist) for d in space.values()):
        raise TypeError(f"space must be a dict of Dist for exactly {SEARCHED} (parse_space), got "
                        f"{sorted(space) if isinstance(space, dict) else type(space).__name__}")
    trials = check_scalar("trials", trials, low=1, integer=True)
    epochs = check_scalar("epochs", epochs, low=1, integer=True)
    stages = check_scalar("stages", stages, low=1, integer=True)
    seed = check_scalar("seed", seed, low=0, integer=True)
    retries = check_scalar("retries", retries, low=0, integer=True)
    if executor is not None and not isinstance(executor, cf.Executor):
        raise TypeError(f"executor must be a concurrent.futures.Executor, got {type(executor).__name__}")
    done = {r["key"]: r for r in previous}
    results, spaces = [], []
    current = dict(space)
    for stage in range(stages):
        if stage:
            current = narrow_space(current, space, [r for r in results if r["stage"] == stage - 1])
        spaces.append({name: d.spec() for name, d in current.items()})
        specs = []
        for t in range(trials):
            params = sample_trial(current, seed, stage, t)
            spec = {"key": _trial_key(stage, t), "stage": stage, "trial": t, "seed": trial_seed(seed, stage, t),
                    "epochs": epochs * 2 ** stage, "params": params, "base": base}
            old = done.get(spec["key"])
            if old is not None:
                if _normalize(old["params"]) != _normalize(params) or old["epochs"] != spec["epochs"]:
                    raise ValueError(f"the results to resume hold trial {spec['key']} with {old['params']}, "
                                     f"but this search draws {params}: they come from a different search")
                results.append(old)
            else:
                specs.append(spec)
        for result in _run_all(specs, executor, data, retries):
            results.append(result)
            if on_result is not None:
                on_result(result)
    results.sort(key=lambda r: (r["stage"], r["trial"]))
    best = min(results, key=_result_order)
    return {"trials": results, "best": best, "stages": spaces, "warnings": edge_warnings(space, best)}


def _normalize(params):
    return json.loads(json.dumps(params))


def _run_all(specs, executor, data, retries):
    """Yield each spec's result as it finishes (in completion order)."""
    if executor is None:
        for spec in specs:
            yield run_trial(spec, data)
        return
    pending = {executor.submit(run_trial, spec, data): (spec, 0) for spec in specs}
    while pending:
        finished, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
        for future in finished:
            spec, attempt = pending.pop(future)
            try:
                result = future.result()
            except Exception:
                if attempt >= retries:
                    for other in pending:
                        other.cancel()
                    raise
                pending[executor.submit(run_trial, spec, data)] = (spec, attempt + 1)
                continue
            yield result


def edge_warnings(space, best):
    """A sentence for each value of the best trial within EDGE of an end of its range."""
    out = []
    for name, dist in space.items():
        side = dist.edge(best["params"][name])
        if side:
            out.append(f"the best {name} {best['params'][name]:.3g} lies on the {side} edge of {dist.spec()}: "
                       f"the optimum may be outside the range; widen it and search again")
    return out


def train_command(base, best):
    """The `fastopt train` command line that trains the best trial's configuration again."""
    p = best["params"]
    parts = ["fastopt", "train", "--data", base["data"]]
    if base.get("data_dir"):
        parts += ["--data-dir", base["data_dir"]]
    parts += ["--hidden", ",".join(map(str, p["hidden"])), "--normalization", base["normalization"],
              "--dropout", repr(p["dropout"]), "--reg", repr(p["reg"]), "--weight-init", base["weight_init"]]
    if base["weight_init"] == "small":
        parts += ["--weight-scale", f"{base['weight_scale']:g}"]
    if "activation" in base:
        parts += ["--activation", base["activation"]]
    parts += ["--optimizer", base["optimizer"], "--lr", repr(p["lr"]), "--lr-decay", f"{base['lr_decay']:g}",
              "--epochs", str(best["epochs"]), "--batch-size", str(base["batch_size"]), "--seed", str(best["seed"])]
    return " ".join(parts)


def format_table(results, limit=20):
    head = f"{'stage':>5} {'trial':>5} {'lr':>10} {'reg':>10} {'dropout':>8} {'hidden':>12} {'epochs':>6} " \
           f"{'val_acc':>8} {'train_acc':>9}"
    lines = [head]
    for r in sorted(results, key=_result_order)[:limit]:
        p = r["params"]
        lines.append(f"{r['stage']:>5} {r['trial']:>5} {p['lr']:>10.3g} {p['reg']:>10.3g} {p['dropout']:>8.3g} "
                     f"{','.join(map(str, p['hidden'])):>12} {r['epochs']:>6} {r['val_acc']:>8.4f} "
                     f"{r['train_acc']:>9.4f}")
    if len(results) > limit:
        lines.append(f"... {len(results) - limit} more in the JSON file")
    return "\n".join(lines)


def write_plot(path, results, space=None):
    """Validation accuracy against lr and against reg (log axes), one colour per stage; the x axis
    spans the searched range when `space` is given (a best point at its edge is then plain to see)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2, sharey=True)
    for stage in sorted({r["stage"] for r in results}):
        rs = [r for r in results if r["stage"] == stage]
        for ax, name in zip(axes, ("lr", "reg")):
            ax.scatter([r["params"][name] for r in rs], [r["val_acc"] for r in rs], s=14,
                       label=f"stage {stage} ({rs[0]['epochs']} epochs)")
    for ax, key, name in zip(axes, ("lr", "reg"), ("learning rate", "regularization")):
        dist = (space or {}).get(key)
        log = all(r["params"][key] > 0 for r in results)
        ax.set_xscale("log" if log else "linear")
        ax.set(xlabel=name, title=f"validation accuracy vs {name}")
        if dist is not None and dist.kind in ("log", "uniform"):
            ax.set_xlim(dist.low, dist.high)
    axes[0].set_ylabel("validation accuracy")
    axes[0].legend()
    fig.savefig(path, format="png", dpi=100)


# ----------------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------------

def configure(parser):
    from .train_cli import DEFAULTS as T

    add_model_options(parser, exclude=SEARCHED)
    add = parser.add_argument
    add("--trials", default="20", help="trials per stage (default 20)")
    add("--epochs", default="2", help="epochs of each stage-0 trial; stage s trains epochs x 2^s (default 2)")
    add("--stages", default="1", help="coarse-to-fine stages (default 1)")
    add("--lr", default=DEFAULT_RANGES["lr"], help=f"learning rate distribution (default {DEFAULT_RANGES['lr']})")
    add("--reg", default=DEFAULT_RANGES["reg"], help=f"regularization distribution (default {DEFAULT_RANGES['reg']})")
    add("--dropout", default=T["dropout"], help="dropout keep probability: a value or uniform:LO,HI (default 1)")
    add("--hidden", default=T["hidden"], help=f"hidden sizes: a value or choice:A|B (default {T['hidden']})")
    add("--lr-decay", default=T["lr_decay"], help=f"learning rate factor after each epoch (default {T['lr_decay']})")
    add("--workers", help="trials run side by side in a local process pool of K processes (default: usable cores)")
    add("--scheduler", metavar="ADDRESS", help="run the trials on this Dask scheduler (tcp://host:port); "
                                               "needs pip install 'fastopt[distributed]'")
    add("--connect-timeout", default="5", help="seconds to wait for --scheduler (default 5)")
    add("--json", metavar="PATH", help="results file: every finished trial is added to it at once")
    add("--resume", metavar="PATH", help="a results file of an interrupted search: its trials are not run again "
                                         "(new results go to --json, or to this file when --json is not given)")
    add("--plot", metavar="PATH", help="validation accuracy against lr and reg, as a PNG")
    add("--quiet", action="store_true", help="no progress output")


def _search_settings(args):
    """Everything that decides the trials (what --resume compares), validated; UsageError if bad."""
    from .train_cli import _number

    base = parse_model_options(args, exclude=SEARCHED)
    base["lr_decay"] = _number("--lr-decay", args.lr_decay, float, low=0, high=1, low_open=True)
    try:
        space = parse_space({name: getattr(args, name) for name in SEARCHED})
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    settings = {"trials": _number("--trials", args.trials, int, low=1),
                "epochs": _number("--epochs", args.epochs, int, low=1),
                "stages": _number("--stages", args.stages, int, low=1),
                "seed": base["seed"], "space": {n: d.spec() for n, d in space.items()}, "base": base}
    return settings, space


def _load_previous(path, settings):
    try:
        with open(path) as f:
            saved = json.load(f)
    except OSError as exc:
        raise UsageError(f"--resume {path!r}: cannot read it ({exc.strerror})") from None
    except ValueError as exc:
        raise UsageError(f"--resume {path!r} is not a JSON results file ({exc})") from None
    if not isinstance(saved, dict) or saved.get("format") != FORMAT or not isinstance(saved.get("trials"), list):
        raise UsageError(f"--resume {path!r} is not a results file of fastopt search")
    if _normalize(saved.get("settings")) != _normalize(settings):
        raise UsageError(f"--resume {path!r} was written by a different search (options differ); "
                         f"give the same options, or start a new --json file")
    return saved["trials"]


def _executor(args):
    """(executor, closer) for --scheduler or --workers; UsageError if the cluster is unreachable."""
    from .train_cli import _number

    if args.scheduler is not None:
        if args.workers is not None:
            raise UsageError("give --workers (local processes) or --scheduler (a Dask cluster), not both")
        timeout = _number("--connect-timeout", args.connect_timeout, float, low=0, low_open=True)
        try:
            from distributed import Client
        except ImportError:
            raise UsageError("--scheduler needs Dask: pip install 'fastopt[distributed]'") from None
        try:
            client = Client(args.scheduler, timeout=timeout, set_as_default=False)
        except (OSError, TimeoutError, ValueError) as exc:
            raise UsageError(f"--scheduler {args.scheduler!r}: cannot connect within {timeout:g} s "
                             f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
        return client.get_executor(pure=False), client.close
    from ._backend import get_num_threads
    workers = (get_num_threads() if args.workers is None
               else _number("--workers", args.workers, int, low=1))
    import multiprocessing
    # spawn: a forked child of a process that ran OpenMP threads can hang in libgomp.
    pool = cf.ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
    return pool, functools.partial(pool.shutdown, cancel_futures=True)


class _Progress:
    """A tqdm bar counting trials on a terminal; else one line per finished trial."""

    def __init__(self, total, initial, quiet):
        self.bar, self.quiet, self.count, self.total = None, quiet, initial, total
        if not quiet and sys.stderr.isatty():
            try:
                from tqdm import tqdm
                self.bar = tqdm(total=total, initial=initial, unit="trial", desc="search", file=sys.stderr)
            except ImportError:
                pass

    def __call__(self, r):
        self.count += 1
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix_str(f"last val_acc {r['val_acc']:.3f}")
        elif not self.quiet:
            print(f"trial {self.count}/{self.total} (stage {r['stage']}, #{r['trial']}): val_acc "
                  f"{r['val_acc']:.4f}  lr {r['params']['lr']:.3g}  reg {r['params']['reg']:.3g}",
                  file=sys.stderr, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def run(args):
    settings, space = _search_settings(args)
    out_path = args.json if args.json is not None else args.resume
    check_output_paths(args, "--json", "--plot")
    previous = _load_previous(args.resume, settings) if args.resume is not None else []
    if out_path is not None:     # a new search overwrites --json; --resume FILE continues FILE
        from .train_cli import _check_writable
        _check_writable("--json", out_path)
    executor, close = _executor(args)

    record = {"format": FORMAT, "version": VERSION, "settings": settings, "trials": list(previous),
              "complete": False}

    def save():
        if out_path is not None:
            write_json(out_path, record)

    total = settings["trials"] * settings["stages"]
    progress = _Progress(total, len(previous), args.quiet)

    def on_result(r):
        record["trials"].append(r)
        save()
        progress(r)

    save()
    try:
        result = random_search(space, settings["base"], trials=settings["trials"], epochs=settings["epochs"],
                               stages=settings["stages"], seed=settings["seed"], executor=executor,
                               previous=previous, on_result=on_result)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    finally:
        progress.close()
        close()
    record.update(trials=result["trials"], best=result["best"], stages=result["stages"],
                  warnings=result["warnings"], complete=True,
                  train_command=train_command(settings["base"], result["best"]))
    save()
    print(format_table(result["trials"]))
    best = result["best"]
    print(f"best: val_acc {best['val_acc']:.4f} (stage {best['stage']}, trial {best['trial']}, "
          f"{best['epochs']} epochs)")
    print(record["train_command"])
    for w in result["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    if args.plot is not None:
        write_plot(args.plot, result["trials"], space)
    sys.stdout.flush()
    return 0
