"""`fastopt train --distributed MODE` (``mpiexec -n K fastopt train --distributed deterministic ...``)
and `mpiexec -n K python -m fastopt.distributed train ...`: `fastopt train` data-parallel on K ranks.

The options are `fastopt train`'s (fastopt.train_cli.configure, checked by its parse_config) plus
--distributed MODE, --shards and --steps (``configure_distributed``; `python -m fastopt.distributed
train` defaults --distributed to deterministic). ``run_distributed(args)`` runs the parsed options.
Every rank parses the same options and loads the same data; the global minibatches come from one
Generator seeded by --seed (CS231n's Solver: `batch_size` rows drawn with replacement per step,
`max(N // batch_size, 1)` steps per epoch, the learning rate times --lr-decay after each epoch),
identical on every rank, so a run does not depend on K. The model is `fastopt train`'s (batchnorm by
default: normalized with the GLOBAL batch's statistics; --dropout masks seeded by (--seed, step,
shard): fastopt.distributed.sharded). Rank 0 prints, evaluates, writes --checkpoint (at each epoch
end and at the end) and --json. --resume works on any K.
The optimizer is the one `fastopt train` builds (fastopt.solver._registry.make_optimizer); with
--ema the accuracies are those of the averaged weights, as the Solver's.
Not supported here (refused with a message): --plot, --lr-schedule.
"""
import contextlib
import json
import sys
import time

import numpy as np

from ..cli import UsageError
from .data_parallel import DataParallel, abort_on_error
from .global_loss import MODES

DEFAULT_SHARDS = 8

def configure(parser):
    """`fastopt train`'s options (which include configure_distributed's), data-parallel by default."""
    from ..train_cli import configure as train_options
    train_options(parser)
    parser.set_defaults(distributed="deterministic")


def configure_distributed(parser):
    """The options data-parallel training adds to `fastopt train` (--distributed off by default)."""
    parser.add_argument("--distributed", metavar="{" + ",".join(MODES) + "}",
                        help="train data-parallel on the ranks of mpiexec (needs fastopt[mpi]): "
                             "deterministic (bitwise the same on any number of ranks) or fast (one "
                             "Allreduce per step, equal within rounding)")
    parser.add_argument("--shards", default=str(DEFAULT_SHARDS),
                        help=f"with --distributed: fixed pieces of each minibatch, >= ranks and <= "
                             f"--batch-size (default {DEFAULT_SHARDS})")
    parser.add_argument("--steps", help="with --distributed: stop after this many optimizer steps in "
                                        "total (default: all epochs)")


def make_optimizer(name, params, optim_config):
    """The optimizer `fastopt train --optimizer name` trains with (its optim_config, as parse_config
    gives it): built by the Solver's own fastopt.solver._registry.make_optimizer, so both trainers
    run the same rule with the same hyperparameters."""
    from ..optim import RULES
    from ..solver._registry import make_optimizer as build
    from ..train_cli import _class_config, update_rule
    rule = update_rule(name, optim_config)
    return build(RULES[rule] if isinstance(rule, str) else rule, params, _class_config(name, optim_config))


def parse(args):
    from ..train_cli import _number, parse_config
    cfg = parse_config(args)
    if cfg["lr_schedule"] is not None:
        raise UsageError("--lr-schedule is not supported by the data-parallel trainer; use --lr-decay")
    if args.plot is not None:
        raise UsageError("--plot is not supported by the data-parallel trainer; use --json")
    if args.distributed not in MODES:
        raise UsageError(f"--distributed must be one of {', '.join(MODES)}; got {args.distributed!r}")
    cfg["mode"], cfg["quiet"] = args.distributed, bool(args.quiet)
    cfg["shards"] = _number("--shards", args.shards, int, low=1)
    if cfg["shards"] > cfg["batch_size"]:
        raise UsageError(f"--shards ({cfg['shards']}) must be <= --batch-size ({cfg['batch_size']})")
    cfg["steps"] = None if args.steps is None else _number("--steps", args.steps, int, low=1)
    return cfg


def train(cfg, comm=None, out=sys.stdout):
    """Train as `fastopt train` would, data-parallel over `comm`; returns (summary dict, model) on
    every rank."""
    import fastopt
    from ..nn import FullyConnectedNet
    from ..train_cli import load_data

    if cfg["backend"] is not None:
        fastopt.set_backend(cfg["backend"])
    if cfg["threads"] is not None:
        fastopt.set_num_threads(cfg["threads"])
    data = load_data(cfg)
    X, y = data["X_train"], data["y_train"]
    num_classes = int(max(data["y_train"].max(), data["y_val"].max(), data["y_test"].max())) + 1
    model = FullyConnectedNet(
        cfg["hidden"], input_dim=X.shape[1], num_classes=num_classes,
        dropout_keep_ratio=cfg["dropout_keep_ratio"], activation=cfg["activation"],
        normalization=None if cfg["normalization"] == "none" else cfg["normalization"], reg=cfg["reg"],
        weight_scale=cfg["weight_scale"] if cfg["weight_scale"] is not None else 1e-2,
        weight_init=None if cfg["weight_init"] == "small" else cfg["weight_init"],
        dtype=np.dtype(cfg["dtype"]).type, rng=cfg["seed"])
    optimizer = make_optimizer(cfg["optimizer"], model.params, cfg["optim_config"])
    dp = DataParallel(model, optimizer, comm, shards=cfg["shards"], mode=cfg["mode"], seed=cfg["seed"])
    rng = np.random.default_rng(cfg["seed"])
    if cfg["resume"]:
        rng.bit_generator.state = dp.load_checkpoint(cfg["resume"])["rng"]
    per_epoch = max(X.shape[0] // cfg["batch_size"], 1)
    total = per_epoch * cfg["epochs"] if cfg["steps"] is None else cfg["steps"]
    lead = dp.rank == 0

    averaged = getattr(optimizer, "ema", None) is not None   # --ema: evaluate the averages, as the Solver

    def accuracy(Xs, ys):
        with optimizer.averaged() if averaged else contextlib.nullcontext():
            return float(np.mean(np.argmax(model.loss(Xs), axis=1) == ys))

    def checkpoint():
        if cfg["checkpoint"]:
            dp.save_checkpoint(cfg["checkpoint"], extra={"rng": rng.bit_generator.state})

    losses, seconds = [], 0.0
    while dp.steps < total:
        idx = rng.choice(X.shape[0], cfg["batch_size"])
        start = time.perf_counter()
        losses.append(dp.step(X[idx], y[idx]))
        seconds += time.perf_counter() - start
        if dp.steps % per_epoch == 0:
            for group in optimizer.param_groups:
                group["lr"] *= cfg["lr_decay"]
            checkpoint()
            if lead and not cfg["quiet"]:
                print(f"epoch {dp.steps // per_epoch}: loss {losses[-1]:.4f}, "
                      f"val acc {accuracy(data['X_val'], data['y_val']):.4f}", file=out, flush=True)
    checkpoint()
    summary = {
        "ranks": dp.size, "mode": dp.mode, "shards": dp.shards, "steps": dp.steps,
        "steps_this_run": len(losses), "seconds": seconds,
        "ms_per_step": 1e3 * seconds / max(len(losses), 1), "bytes_per_step": dp.bytes_per_step(),
        "n_params": dp.n_params, "final_loss": losses[-1] if losses else None,
        "val_acc": accuracy(data["X_val"], data["y_val"]),
        "test_acc": accuracy(data["X_test"], data["y_test"]), "config": cfg,
    }
    return summary, model


def run_distributed(args, comm=None):
    """Run `fastopt train --distributed` (or the subcommand: fastopt.cli's configure/run contract) on
    the parsed options: parse, train under abort_on_error; returns the exit status."""
    cfg = parse(args)
    if comm is None:
        from ._comm import import_mpi
        try:
            import_mpi()
        except ImportError as exc:     # the same on every rank: a usage error, not a traceback
            raise UsageError(f"--distributed: {exc}") from None
    if args.json is not None:
        from ..train_cli import _check_writable
        _check_writable("--json", args.json)

    def main():
        summary, _ = train(cfg, comm)
        from ._comm import collectives
        if collectives(comm).rank == 0:
            print(f"{summary['ranks']} rank(s), {summary['mode']}: {summary['steps']} steps, "
                  f"{summary['ms_per_step']:.2f} ms/step, {summary['bytes_per_step']} B combined/step/rank, "
                  f"val acc {summary['val_acc']:.4f}, test acc {summary['test_acc']:.4f}", flush=True)
            if args.json is not None:
                with open(args.json, "w") as f:
                    json.dump(summary, f, indent=2)
        return 0

    return abort_on_error(main, comm=comm)


run = run_distributed     # the subcommand's name (fastopt.distributed.__main__)
