"""Lecture 7 on the bundled digits, with numbers: transfer learning, augmentation, ensembles, averaged weights.

    python benchmarks/transfer_demo.py                  # every part, 5 seeds
    python benchmarks/transfer_demo.py --part transfer --seeds 10

transfer   pretrain on digits 0-4 (the whole training split), then learn 5-9 from 20 examples per class:
           a frozen pretrained body with a fresh head, full fine-tuning (body at a 10x smaller rate than
           the head), and the same network from scratch.
augment    200 training examples (all ten digits), with and without offline augmentation
           (shift:1,noise:0.05, 9 augmented copies of every example).
ensemble   single models, an ensemble of independently seeded runs, a snapshot ensemble of one run's
           last epochs.
ema        the final weights against their exponential moving average (optimizer ema=) at the same
           moment, and the Solver's best-validation swap-in.

Every number is a test-split accuracy; "mean +- std (min)" over the seeds. tests/test_transfer_demo.py
runs the transfer part on 3 seeds (with a random frozen body as a control).
"""
import argparse

import numpy as np

from fastopt import Adam, FullyConnectedNet
from fastopt.augment import Augment, augmented_copies
from fastopt.data import load_digits, select_classes, subsample_train
from fastopt.ensemble import Ensemble, Snapshots
from fastopt.model_io import clone
from fastopt.transfer import Solver

HIDDEN, KEEP = [64, 64], 1.0       # --hidden, --keep: the network of every part
SOURCE, TARGET = list(range(5)), list(range(5, 10))


def digits():
    return load_digits(seed=0, standardize=True)     # as `fastopt train` loads them


def accuracy(model, data, split="test"):
    return float(np.mean(np.argmax(model.loss(data[f"X_{split}"]), axis=1) == data[f"y_{split}"]))


def train(model, data, *, lr, epochs, seed, batch_size=25, **kw):
    Solver(model, {k: data[k] for k in ("X_train", "y_train", "X_val", "y_val")}, update_rule=Adam,
           optim_config={"learning_rate": lr, **kw.pop("optim_config", {})}, batch_size=batch_size,
           num_epochs=epochs, verbose=False, seed=seed, **kw).train()
    return model


def net(num_classes, seed):
    return FullyConnectedNet(HIDDEN, input_dim=64, num_classes=num_classes, weight_init="he", rng=seed,
                             dropout_keep_ratio=KEEP)


# ---------------------------------------------------------------- transfer

def pretrain(data, seed=0, epochs=20):
    return train(net(len(SOURCE), seed), select_classes(data, SOURCE), lr=3e-3, epochs=epochs, seed=seed, batch_size=64)


def transfer_run(data, pretrained, seed, per_class=20, epochs=60):
    """{method: test accuracy} on digits 5-9 learned from `per_class` examples of each."""
    target = subsample_train(select_classes(data, TARGET), per_class * len(TARGET), seed=seed)
    head = len(pretrained.hidden_dims)
    frozen = clone(pretrained).replace_head(len(TARGET), rng=seed, fresh=True).freeze(range(head))
    tuned = clone(pretrained).replace_head(len(TARGET), rng=seed, fresh=True)
    return {
        "frozen body": accuracy(train(frozen, target, lr=1e-2, epochs=epochs, seed=seed), target),
        "fine-tuned": accuracy(train(tuned, target, lr=1e-3, layer_lr={head: 1e-2}, epochs=epochs, seed=seed), target),
        "from scratch": accuracy(train(net(len(TARGET), 1000 + seed), target, lr=3e-3, epochs=epochs, seed=seed), target),
    }


def transfer(seeds, data=None, per_class=20):
    data = digits() if data is None else data
    pretrained = pretrain(data)
    runs = [transfer_run(data, pretrained, s, per_class) for s in seeds]
    return {m: [r[m] for r in runs] for m in runs[0]}, accuracy(pretrained, select_classes(data, SOURCE))


# ---------------------------------------------------------------- augmentation

def augment(seeds, data=None, n=200, spec="shift:1,noise:0.05", copies=9):
    data = digits() if data is None else data
    out = {"plain": [], f"augmented ({spec}, {copies} copies)": []}
    for s in seeds:
        small = subsample_train(data, n, seed=s)
        out["plain"].append(accuracy(train(net(10, s), small, lr=3e-3, epochs=40, seed=s), small))
        X, y = augmented_copies(Augment(spec, image_shape="digits", seed=s), small["X_train"], small["y_train"], copies)
        big = {**small, "X_train": X, "y_train": y}
        # the same number of updates: 40 epochs of the small set = 4 of the enlarged one
        out[f"augmented ({spec}, {copies} copies)"].append(
            accuracy(train(net(10, s), big, lr=3e-3, epochs=40 // (copies + 1), seed=s), small))
        out.setdefault("augmented, 10x the updates (40 epochs)", []).append(
            accuracy(train(net(10, s), big, lr=3e-3, epochs=40, seed=s), small))
    return out


# ---------------------------------------------------------------- ensembles and averaged weights

def ensembles(seeds, data=None, n=300, k=5):
    data = digits() if data is None else data
    small = subsample_train(data, n, seed=0)
    single, snap, members = [], [], []
    for s in seeds:
        snaps = Snapshots(last=k)
        model = train(net(10, s), small, lr=3e-3, epochs=30, seed=s, callback=snaps)
        single.append(accuracy(model, small))
        snap.append(Ensemble(snaps.models).accuracy(small["X_test"], small["y_test"]))
        members.append(model)
    return {"single model": single, f"snapshot ensemble (last {k} epochs)": snap,
            f"ensemble of {len(members)} seeded runs": [Ensemble(members).accuracy(small["X_test"], small["y_test"])]}


def ema(seeds, data=None, n=300, decay=0.99):
    """The final iterate, its EMA at the same moment, and the Solver's best-validation swap-in."""
    data = digits() if data is None else data
    small = subsample_train(data, n, seed=0)
    final, avg, best = [], [], []
    for s in seeds:
        model, last = net(10, s), {}

        def keep_last(solver, event, info):
            if event == "iteration" and info["iteration"] == info["num_iterations"]:
                last["final"] = clone(solver.model)
                with solver.optimizer.averaged():
                    last["ema"] = clone(solver.model)
        solver = Solver(model, {k: small[k] for k in ("X_train", "y_train", "X_val", "y_val")}, update_rule=Adam,
                        optim_config={"learning_rate": 3e-3, "ema": decay}, evaluate_averaged=False,
                        batch_size=25, num_epochs=30, verbose=False, seed=s, callback=keep_last)
        solver.train()
        final.append(accuracy(last["final"], small))
        avg.append(accuracy(last["ema"], small))
        best.append(accuracy(model, small))
    return {"final weights": final, f"EMA of the weights (decay {decay})": avg,
            "best-validation weights (Solver)": best}


def summary(values):
    v = np.asarray(values)
    return f"{v.mean():.4f} +- {v.std():.4f} (min {v.min():.4f}, n={len(v)})"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--part", choices=["all", "transfer", "augment", "ensemble", "ema"], default="all")
    p.add_argument("--hidden", default="64,64", help="hidden layer sizes (default 64,64)")
    p.add_argument("--keep", type=float, default=1.0, help="dropout keep probability (default 1: none)")
    p.add_argument("--per-class", type=int, default=20, help="transfer: target examples per class (default 20)")
    a = p.parse_args(argv)
    global HIDDEN, KEEP
    HIDDEN, KEEP = [int(h) for h in a.hidden.split(",")], a.keep
    print(f"hidden {HIDDEN}, dropout keep {KEEP}")
    seeds = list(range(a.seeds))
    data = digits()
    if a.part in ("all", "transfer"):
        results, source_acc = transfer(seeds, data, a.per_class)
        print(f"transfer: pretrained on 0-4 (test acc there {source_acc:.4f}); 5-9 from {a.per_class} examples per class")
        for m, v in results.items():
            print(f"  {m:<40} {summary(v)}")
        gap = np.array(results["frozen body"]) - np.array(results["from scratch"])
        print(f"  frozen - scratch per seed: {', '.join(f'{g:+.3f}' for g in gap)}")
    for part, fn in (("augment", augment), ("ensemble", ensembles), ("ema", ema)):
        if a.part in ("all", part):
            print(part)
            for m, v in fn(seeds, data).items():
                print(f"  {m:<40} {summary(v)}")


if __name__ == "__main__":
    main()
