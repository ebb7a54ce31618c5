"""`fastopt lr-find`: the learning-rate range test (fastopt.babysit.lr_find) from the command line.

Builds the model `fastopt train` would build from the same options, raises the learning rate
exponentially from --start-lr to --end-lr over --iterations steps, stops when the smoothed loss
exceeds 4x its minimum, and prints the suggested rate (steepest descent of the smoothed loss). The
model is trained for nothing: its weights are restored afterwards.
"""
import math
import sys

from .babysit import (add_model_options, check_output_paths, load_data, lr_find, model_kwargs,
                      parse_model_options, update_rule, write_json)
from .cli import UsageError


def configure(parser):
    add_model_options(parser, exclude=("lr",))
    add = parser.add_argument
    add("--start-lr", default="1e-7", help="first learning rate (default 1e-7)")
    add("--end-lr", default="10", help="last learning rate (default 10)")
    add("--iterations", default="100", help="steps of the ramp (default 100)")
    add("--beta", default="0.98", help="smoothing factor of the loss's moving average (default 0.98)")
    add("--json", metavar="PATH", help="write rates, losses, smoothed losses and the suggestion as JSON")
    add("--plot", metavar="PATH", help="smoothed loss against the rate on a log axis, as a PNG")


def write_plot(path, result):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    finite = [(lr, s) for lr, s in zip(result["lrs"], result["smoothed"]) if math.isfinite(s)]
    ax.plot([f[0] for f in finite], [f[1] for f in finite], lw=1, label="smoothed loss")
    ax.plot(result["lrs"], result["losses"], lw=0.5, alpha=0.4, label="loss")
    if result["suggestion"] is not None:
        ax.axvline(result["suggestion"], color="C3", ls="--", label=f"suggested {result['suggestion']:.2g}")
    ax.set_xscale("log")
    ax.set(xlabel="learning rate", ylabel="training loss", title="learning-rate range test")
    if finite:
        lo = min(f[1] for f in finite)
        ax.set_ylim(lo - 0.05 * abs(lo), 4.2 * lo if lo > 0 else None)
    ax.legend()
    fig.savefig(path, format="png", dpi=100)


def run(args):
    from .train_cli import _number

    cfg = parse_model_options(args, exclude=("lr",))
    start = _number("--start-lr", args.start_lr, float, low=0, low_open=True)
    end = _number("--end-lr", args.end_lr, float, low=start, low_open=True)
    iterations = _number("--iterations", args.iterations, int, low=2)
    beta = _number("--beta", args.beta, float, low=0, high=1, high_open=True)
    check_output_paths(args, "--json", "--plot")
    data = load_data(cfg)
    cfg["lr"] = start
    rule, optim_config = update_rule(cfg)
    from .nn import FullyConnectedNet
    model = FullyConnectedNet(**model_kwargs(cfg, data))
    result = lr_find(model, data, update_rule=rule, optim_config=optim_config, start_lr=start, end_lr=end,
                     num_iter=iterations, batch_size=cfg["batch_size"], beta=beta, seed=cfg["seed"])
    if not result["lrs"]:
        raise UsageError("no step was taken")
    print(f"{result['iterations']} steps from lr {result['lrs'][0]:.3g} to {result['lrs'][-1]:.3g} "
          f"(stopped: {result['stopped']})")
    if result["min_lr"] is not None:
        print(f"lowest smoothed loss {min(s for s in result['smoothed'] if math.isfinite(s)):.4f} "
              f"at lr {result['min_lr']:.3g}")
    if result["suggestion"] is None:
        print("no suggestion: the smoothed loss never fell (raise --end-lr or --iterations)")
    else:
        print(f"suggested learning rate (steepest descent of the smoothed loss): {result['suggestion']:.3g}")
    if args.json is not None:
        write_json(args.json, {"config": {k: v for k, v in cfg.items() if k != "lr"},
                               "start_lr": start, "end_lr": end, **result})
    if args.plot is not None:
        write_plot(args.plot, result)
    sys.stdout.flush()
    return 0
