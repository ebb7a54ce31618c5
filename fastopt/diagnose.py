"""`fastopt diagnose init`: the lecture's weight-initialization experiment, as a command and an API.

A deep stack of affine -> activation layers (no biases) is fed N(0, 1) data; the mean and std of each
layer's activations show whether the signal survives the depth (CS231n lecture 6, "Weight
Initialization"). By default the lecture's five cases, 10 layers of 500 units, 1000 examples:

    tanh, std 0.01   activations collapse toward 0 layer after layer (and so would the gradients)
    tanh, std 1      pre-activations are huge: almost every unit saturates at -1 or 1
    tanh, Xavier     std ~ 1/sqrt(fan_in): a stable, non-saturated distribution
    relu, Xavier     half the units are off: the variance halves at each layer
    relu, He         std ~ sqrt(2/fan_in) compensates: stable again

``init_experiment(activation, init, ...)`` returns the per-layer statistics;
``run_init_experiments(cases, ...)`` runs several on the same data.
"""
import json
import math
import sys

import numpy as np

from .cli import UsageError
from .layers import activations as _act

LECTURE_CASES = (("tanh", "0.01"), ("tanh", "1"), ("tanh", "xavier"), ("relu", "xavier"), ("relu", "he"))
NAMED_INITS = ("xavier", "he", "glorot")
DEFAULTS = {"depth": "10", "width": "500", "examples": "1000", "seed": "0"}


def parse_init(text):
    """'xavier', 'he', 'glorot' (fastopt.nn.init) or a positive number: the std of the weights."""
    if text in NAMED_INITS:
        return text
    try:
        std = float(text)
    except ValueError:
        std = math.nan
    if not (math.isfinite(std) and std > 0):
        raise ValueError(f"init must be one of {NAMED_INITS} or a positive weight std, got {text!r}")
    return std


def _label(activation, init):
    return f"{activation}, {'std ' + format(init, 'g') if isinstance(init, float) else init}"


def layer_stats(spec, out):
    """mean, std, fraction of flat units (dead ReLU / saturated tanh, sigmoid) and of units flat on
    every example, of one layer's activations `out` (N, width)."""
    flat = spec.flat_mask(out)
    out64 = out.astype(np.float64, copy=False)
    return {"mean": float(out64.mean()), "std": float(out64.std()),
            "flat_fraction": float(flat.mean()), "dead_units": float(flat.all(axis=0).mean())}


def init_experiment(activation, init, *, depth=10, width=500, examples=1000, seed=0, dtype=np.float32,
                    X=None, keep_activations=False):
    """Per-layer activation statistics of `depth` affine -> `activation` layers of `width` units.

    init: a weight std (float > 0) or 'xavier' / 'he' / 'glorot' (fastopt.nn.init.weight_std).
    X: the input (examples, width); default N(0, 1) from `seed`. Weights come from
    np.random.default_rng(seed) too, so every case sees the same data and the same normal draws.
    Returns a dict (label, activation, init, weight_std, layers: list of layer_stats dicts, and
    `activations`: the arrays when keep_activations).
    """
    from ._validation import check_scalar
    from .nn.init import weight_std

    depth = check_scalar("depth", depth, low=1, integer=True)
    width = check_scalar("width", width, low=1, integer=True)
    examples = check_scalar("examples", examples, low=1, integer=True)
    spec = _act.get(activation)
    init = parse_init(init) if isinstance(init, str) else float(init)
    rng = np.random.default_rng(seed)
    h = rng.standard_normal((examples, width)).astype(dtype) if X is None else np.asarray(X, dtype=dtype)
    weight_rng = np.random.default_rng([seed, 1])
    layers, kept = [], []
    std = None
    for _ in range(depth):
        fan_in = h.shape[1]
        std = (weight_std(None, fan_in, width, init) if isinstance(init, float)
               else weight_std(init, fan_in, width, None))
        W = (weight_rng.standard_normal((fan_in, width)) * std).astype(dtype)
        h, _ = spec.forward(h @ W)
        layers.append(layer_stats(spec, h))
        if keep_activations:
            kept.append(h)
    result = {"label": _label(activation, init), "activation": activation, "init": init,
              "weight_std": std, "layers": layers}
    if keep_activations:
        result["activations"] = kept
    return result


def run_init_experiments(cases=LECTURE_CASES, **kw):
    """init_experiment for each (activation, init) of `cases`, on the same data and seed."""
    return [init_experiment(a, i, **kw) for a, i in cases]


# ---------------------------------------------------------------- command line

def configure(parser):
    sub = parser.add_subparsers(dest="diagnosis", metavar="DIAGNOSIS")
    sub.required = True
    p = sub.add_parser("init", help="activation statistics per layer for several weight inits",
                       description=__doc__.split("\n\n")[1])
    p.add_argument("--depth", default=DEFAULTS["depth"], help="layers (default 10)")
    p.add_argument("--width", default=DEFAULTS["width"], help="units per layer and input features (default 500)")
    p.add_argument("--examples", default=DEFAULTS["examples"], help="N(0, 1) input rows (default 1000)")
    p.add_argument("--activation", metavar="NAME[,NAME...]",
                   help=f"activations to try, from {', '.join(_act.ACTIVATIONS)} (default: the lecture's cases)")
    p.add_argument("--init", metavar="INIT[,INIT...]",
                   help="inits to try: xavier, he, glorot or a weight std such as 0.01 (default: the lecture's "
                        "cases; with --activation and/or --init every activation is tried with every init)")
    p.add_argument("--seed", default=DEFAULTS["seed"], help="seed of the data and weights (default 0)")
    p.add_argument("--json", metavar="PATH", help="write the statistics as JSON")
    p.add_argument("--plot", metavar="PATH", help="per-layer histograms as a PNG (needs fastopt[plot])")


def _cases(args):
    if args.activation is None and args.init is None:
        return list(LECTURE_CASES)
    names = (args.activation or "tanh,relu").split(",")
    inits = (args.init or "xavier,he").split(",")
    for name in names:
        if name not in _act.ACTIVATIONS:
            raise UsageError(f"--activation must name activations from {', '.join(_act.ACTIVATIONS)}; got {name!r}")
    for init in inits:
        try:
            parse_init(init)
        except ValueError as exc:
            raise UsageError(f"--init: {exc}") from None
    return [(n, i) for n in names for i in inits]


def format_table(results):
    """One row per layer; for each case its mean, std and percentage of flat (dead/saturated) units."""
    width = 24
    head = "layer" + "".join(f"{r['label']:>{width}}" for r in results)
    sub = "     " + "".join(f"{'mean':>8}{'std':>9}{'flat%':>7}" for _ in results)
    lines = [head, sub]
    for k in range(len(results[0]["layers"])):
        row = f"{k + 1:>5}"
        for r in results:
            s = r["layers"][k]
            row += f"{s['mean']:>8.3f}{s['std']:>9.2e}{100 * s['flat_fraction']:>7.1f}"
        lines.append(row)
    return "\n".join(lines)


def write_plot(path, results):
    """Rows: cases; columns: layers; each panel the histogram of that layer's activations, on the
    first layer's value range for the whole row (so a collapse toward 0 shows as a narrowing spike)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    depth = len(results[0]["activations"])
    fig = Figure(figsize=(1.6 * depth, 1.5 * len(results) + 0.5), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(results), depth, squeeze=False)
    for row, r in zip(axes, results):
        lo, hi = float(r["activations"][0].min()), float(r["activations"][0].max())
        if hi - lo < 1e-12:
            lo, hi = lo - 1, hi + 1
        for k, (ax, a) in enumerate(zip(row, r["activations"])):
            ax.hist(a.ravel(), bins=40, range=(lo, hi), color="C0")
            ax.set_yticks([])
            ax.tick_params(labelsize=6)
            ax.set_title(f"layer {k + 1}  std {r['layers'][k]['std']:.2g}", fontsize=7)
        row[0].set_ylabel(r["label"], fontsize=8)
    fig.suptitle("activations per layer (fastopt diagnose init)")
    fig.savefig(path, format="png", dpi=90)


def run(args):
    from .babysit import check_output_paths
    from .train_cli import _number

    depth = _number("--depth", args.depth, int, low=1)
    width = _number("--width", args.width, int, low=1)
    examples = _number("--examples", args.examples, int, low=1)
    seed = _number("--seed", args.seed, int, low=0)
    cases = _cases(args)
    check_output_paths(args, "--json", "--plot")

    results = run_init_experiments(cases, depth=depth, width=width, examples=examples, seed=seed,
                                   keep_activations=args.plot is not None)
    print(f"{depth} layers of {width} units, {examples} examples of N(0, 1) data, seed {seed}")
    print(format_table(results))
    if args.json is not None:
        summary = {"depth": depth, "width": width, "examples": examples, "seed": seed,
                   "experiments": [{k: v for k, v in r.items() if k != "activations"} for r in results]}
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)
            f.write("\n")
    if args.plot is not None:
        write_plot(args.plot, results)
    sys.stdout.flush()
    return 0
