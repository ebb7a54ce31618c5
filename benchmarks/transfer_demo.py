"""Transfer learning on the bundled digits (CS231n lecture 7), measured over seeds.

    python benchmarks/transfer_demo.py                          # the issue's setting, 5 seeds
    python benchmarks/transfer_demo.py --per-class 5 --seeds 10
    python benchmarks/transfer_demo.py --set hidden=256 --set keep=0.5 --set body_lr=1e-4
    python benchmarks/transfer_demo.py --part ensemble          # ensembles (--part ema: averaged weights)

Pretrain on digits 0-4 (their whole training split), then learn digits 5-9 from `per_class` training
examples of each, four ways, on the same subset per seed:

frozen       the pretrained body (its first `freeze` hidden layers; -1: all reused) frozen, a fresh head
             trained with whatever else is not frozen
fine-tuned   the same trained for `warmup` epochs, then every layer, the reused hidden layers at body_lr
             (l2sp > 0: with the L2-SP penalty pulling them towards their pretrained values)
scratch      the same architecture from a random init
random body  control: a RANDOM frozen body with a fresh head, trained as `frozen` (does pretraining matter?)

Inputs are pixels / 16 (0..1). `preprocess` (fastopt.preprocessing spec, or "none") is fitted on the
pretraining split and shipped with the body to the transfer methods, as a model file carries it;
`scratch_fit` says what the scratch and random-body runs fit theirs on ("target": the small split
itself, "source": the pretraining split). Seed s draws the pretraining init and batches, the target
subset, every head and the scratch init. `reuse` copies only the lower hidden layers (the upper ones
re-initialized); bn_stats="target" gives frozen batchnorm layers the target split's statistics (AdaBN);
cosine=1 decays every target run's rates. Every run keeps its best-validation weights (the Solver's);
settings are chosen on the validation split, the test split is reported. augment_demo.py holds the
augmentation study; benchmarks/results/transfer.txt the log and the findings.
"""
import argparse
import dataclasses
import time

import numpy as np

from fastopt import Adam, FullyConnectedNet
from fastopt.augment import Augment
from fastopt.data import load_digits, select_classes, subsample_train
from fastopt.data.digits import load_digits_raw
from fastopt.data.preprocess import prepare_splits
from fastopt.ensemble import Ensemble, Snapshots
from fastopt.model_io import clone
from fastopt.preprocessing import from_spec
from fastopt.regularizers import Regularizers
from fastopt.transfer import Solver

SOURCE, TARGET = list(range(5)), list(range(5, 10))
METHODS = ("frozen", "fine-tuned", "scratch", "random body")
SPLITS = ("train", "val", "test")


@dataclasses.dataclass(frozen=True)
class Setting:
    """Every knob of one transfer experiment (`--set name=value` on the command line)."""
    hidden: tuple = (64, 64)
    keep: float = 1.0               # dropout keep probability (1: none)
    normalization: str = "none"     # none | batchnorm | layernorm
    reg: float = 0.0                # L2 weight decay (the model's reg), pretraining and after
    pre_epochs: int = 20
    pre_lr: float = 3e-3
    pre_keep: str = "best"          # best | final: the pretraining's best-validation or last weights
    pre_augment: str = "none"       # fastopt.augment spec for pretraining (e.g. shift:1,noise:0.05)
    preprocess: str = "standardize"
    scratch_fit: str = "target"     # target | source: where scratch / random body fit the preprocessing
    per_class: int = 20
    epochs: int = 60                # epochs on the target subset (fine-tuned: warmup included)
    batch_size: int = 25
    head_lr: float = 1e-2
    body_lr: float = 1e-3
    warmup: int = 0                 # fine-tuned: head-only epochs before the body is unfrozen
    freeze: int = -1                # hidden layers frozen by frozen / random body / warm-up (-1: all reused)
    scratch_lr: float = 3e-3
    reuse: int = -1                 # lower hidden layers taken from the pretrained model (-1: all); the
                                    # ones above are re-initialized (seed) and trained at head_lr
    l2sp: float = 0.0               # fine-tuned: + 0.5 * l2sp * ||W - W_pretrained||^2 on the reused weights
    bn_stats: str = "source"        # source | target: frozen batchnorm layers keep the source's running
                                    # statistics, or take the target training split's (AdaBN) first
    cosine: int = 0                 # 1: cosine decay of every target run's rates (fine-tuned: after warm-up)

    def replace(self, **kw):
        return dataclasses.replace(self, **kw)


def parse_setting(cls, items, base=None):
    """A `cls` dataclass from ["name=value", ...] (--set) on top of `base` (values typed by its fields)."""
    base = cls() if base is None else base
    kw = {}
    for item in items:
        name, _, text = item.partition("=")
        if name not in {f.name for f in dataclasses.fields(cls)}:
            raise SystemExit(f"--set {item!r}: unknown setting {name!r}")
        current = getattr(base, name)
        kw[name] = tuple(int(h) for h in text.split(",")) if isinstance(current, tuple) else type(current)(text)
    return dataclasses.replace(base, **kw)


# ---------------------------------------------------------------- data

def pixel_digits():
    """All ten digits, pixels / 16, split as load_digits splits them (seed 0), not yet preprocessed."""
    images, labels = load_digits_raw()
    X = images.reshape(len(images), -1).astype(np.float32) / np.float32(16)
    return prepare_splits(X, labels, seed=0, subtract_mean=False)


def preprocessed(data, spec, fit_on):
    """`data` with the preprocessing `spec` fitted on fit_on's training split, applied to every X_ array."""
    if spec == "none":
        return data
    pre = from_spec(spec).fit(fit_on["X_train"])
    return {**data, **{k: pre.transform(v) for k, v in data.items() if k.startswith("X_")}}


def accuracy(model, data, split="test"):
    return float(np.mean(np.argmax(model.loss(data[f"X_{split}"]), axis=1) == data[f"y_{split}"]))


# ---------------------------------------------------------------- models and training

def make_net(setting, num_classes, seed):
    return FullyConnectedNet(list(setting.hidden), input_dim=64, num_classes=num_classes, weight_init="he",
                             rng=seed, dropout_keep_ratio=setting.keep, reg=setting.reg,
                             normalization=None if setting.normalization == "none" else setting.normalization)


def train(model, data, *, lr, epochs, seed, batch_size=25, cosine=False, **kw):
    """Adam from fastopt.transfer.Solver (trainable params, layer_lr=); the best-validation weights kept.
    cosine: the rates decay to 0 over the run (per epoch)."""
    if epochs > 0:
        if cosine:
            kw["lr_schedule"] = f"cosine:T_max={epochs}"
        Solver(model, {k: data[k] for k in ("X_train", "y_train", "X_val", "y_val")}, update_rule=Adam,
               optim_config={"learning_rate": lr}, batch_size=batch_size, num_epochs=epochs, verbose=False,
               seed=seed, **kw).train()
    return model


class L2SP(Regularizers):
    """L2-SP (Li et al. 2018): 0.5 * alpha * ||W - W0||^2 for every anchored weight W (W0: its pretrained
    value), the decay towards the pretrained body rather than towards 0 (the model's own reg, 0 by
    default, still applies). Kept here, not in fastopt.regularizers: it did not pay on digits
    (benchmarks/results/transfer.txt). Through the Solver's regularizers hook: an elastic net of
    (0, 0) makes its Trainable call add()."""

    def __init__(self, anchors, alpha):
        super().__init__(elastic_net=(0.0, 0.0))
        self.anchors = {k: np.array(v, copy=True) for k, v in anchors.items()}
        self.alpha = float(alpha)

    def add(self, params, loss, grads):
        penalty = 0.0
        for k, W0 in self.anchors.items():
            if k in params and k in grads:
                d = params[k] - W0
                grads[k] += self.alpha * d
                penalty += 0.5 * self.alpha * float(np.vdot(d.astype(np.float64), d.astype(np.float64)))
        return loss + penalty


def adapt_batchnorm(model, X, y):
    """AdaBN: every batchnorm layer's running statistics set to its batch statistics on X (one
    train-mode pass with momentum 0, before freezing), so a frozen layer (inference mode: its running
    statistics in training and at test) normalizes with the target data's statistics instead of the
    source's."""
    if model.normalization != "batchnorm":
        return model
    saved = [p.get("momentum") for p in model.bn_params]
    for p in model.bn_params:
        p["momentum"] = 0.0
    model.loss(X, y)
    for p, m in zip(model.bn_params, saved):
        if m is None:
            del p["momentum"]
        else:
            p["momentum"] = m
    return model


def reused(setting, pretrained, seed):
    """A 5-class model whose lower `reuse` hidden layers (params and batchnorm statistics) are the
    pretrained model's and whose upper ones and head are freshly initialized from `seed`."""
    n = len(setting.hidden) if setting.reuse < 0 else setting.reuse
    if n == len(setting.hidden):
        return clone(pretrained).replace_head(len(TARGET), rng=seed, fresh=True)
    model = make_net(setting, len(TARGET), 3000 + seed)
    for i in range(n):
        for k in pretrained.layer_param_names(i):
            model.params[k] = pretrained.params[k]
        if setting.normalization == "batchnorm":
            for k in ("running_mean", "running_var"):
                model.bn_params[i][k] = pretrained.bn_params[i][k].copy()
    return model


def pretrain_source(setting, source, seed):
    """The model pretrained on digits 0-4. Their validation accuracy saturates within a few epochs, so
    the best-validation weights (pre_keep="best") are an early epoch's; "final" keeps the last ones."""
    last = {}

    def keep_last(solver, event, info):
        if event == "iteration" and info["iteration"] == info["num_iterations"]:
            last["model"] = clone(solver.model)
    aug = None if setting.pre_augment == "none" else Augment(setting.pre_augment, image_shape="digits", seed=seed)
    model = train(make_net(setting, len(SOURCE), seed), source, lr=setting.pre_lr, epochs=setting.pre_epochs,
                  seed=seed, batch_size=64, callback=keep_last if setting.pre_keep == "final" else None,
                  augment=aug)
    return last.get("model", model)


def transfer_seed(setting, data, seed):
    """{method: (val accuracy, test accuracy)} on digits 5-9 for one seed, plus "source" (the pretrained
    model's test accuracy on 0-4)."""
    s = setting
    source = preprocessed(select_classes(data, SOURCE), s.preprocess, select_classes(data, SOURCE))
    small = subsample_train(select_classes(data, TARGET), s.per_class * len(TARGET), seed=seed)
    target = preprocessed(small, s.preprocess, select_classes(data, SOURCE))       # the body's inputs
    own = target if s.scratch_fit == "source" else preprocessed(small, s.preprocess, small)
    pretrained = pretrain_source(s, source, seed)
    n_reused = len(s.hidden) if s.reuse < 0 else s.reuse
    body = range(n_reused if s.freeze < 0 else s.freeze)
    cos = bool(s.cosine)

    def scores(model, d):
        return accuracy(model, d, "val"), accuracy(model, d, "test")

    def start(model, d):
        """The model with `body` frozen (batchnorm statistics adapted to the target split first)."""
        if s.bn_stats == "target":
            adapt_batchnorm(model, d["X_train"], d["y_train"])
        return model.freeze(body)

    frozen = start(reused(s, pretrained, seed), target)
    train(frozen, target, lr=s.head_lr, epochs=s.epochs, seed=seed, batch_size=s.batch_size, cosine=cos)
    tuned = start(reused(s, pretrained, seed), target)
    train(tuned, target, lr=s.head_lr, epochs=s.warmup, seed=seed, batch_size=s.batch_size)
    anchors = {f"W{i + 1}": pretrained.params[f"W{i + 1}"] for i in range(n_reused)}
    train(tuned.unfreeze(), target, lr=s.head_lr, layer_lr={i: s.body_lr for i in range(n_reused)},
          epochs=s.epochs - s.warmup, seed=seed, batch_size=s.batch_size, cosine=cos,
          regularizers=L2SP(anchors, s.l2sp) if s.l2sp > 0 else None)
    scratch = train(make_net(s, len(TARGET), 1000 + seed), own, lr=s.scratch_lr, epochs=s.epochs, seed=seed,
                    batch_size=s.batch_size, cosine=cos)
    random_body = make_net(s, len(TARGET), 2000 + seed)
    if s.normalization == "batchnorm":      # a random body has no statistics of its own: its target's
        adapt_batchnorm(random_body, own["X_train"], own["y_train"])
    train(random_body.freeze(body), own, lr=s.head_lr, epochs=s.epochs, seed=seed, batch_size=s.batch_size,
          cosine=cos)
    return {"frozen": scores(frozen, target), "fine-tuned": scores(tuned, target), "scratch": scores(scratch, own),
            "random body": scores(random_body, own), "source": accuracy(pretrained, source)}


def study(setting, seeds, data=None):
    """{method: {"val": [...], "test": [...]}} over the seeds, and the pretrained models' 0-4 accuracies."""
    data = pixel_digits() if data is None else data
    runs = [transfer_seed(setting, data, s) for s in seeds]
    out = {m: {"val": [r[m][0] for r in runs], "test": [r[m][1] for r in runs]} for m in METHODS}
    return out, [r["source"] for r in runs]


# ---------------------------------------------------------------- the previous session's recipe
# Kept as it was for tests/test_transfer_demo.py and the README's ensemble/EMA rows: digits standardized on
# all ten classes (as `fastopt train` loads them), a 64-64 network, one pretrained model for every seed.

HIDDEN, KEEP = [64, 64], 1.0


def digits():
    return load_digits(seed=0, standardize=True)


def net(num_classes, seed):
    return make_net(Setting(hidden=tuple(HIDDEN), keep=KEEP), num_classes, seed)


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


# ---------------------------------------------------------------- report

def summary(values):
    v = np.asarray(values)
    return f"{v.mean():.3f} +- {v.std():.3f} (min {v.min():.3f})"


def sem(values):
    """The standard error of the mean (ddof 1): mean - 2 sem > 0 is the margin a win must clear."""
    v = np.asarray(values, dtype=np.float64)
    return float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan")


def report(setting, results, source_acc):
    """Lines: each method's val and test mean +- std (min), then the paired per-seed test gaps."""
    lines = [f"{setting}", f"  pretrained on 0-4: test acc {summary(source_acc)}"]
    for m in METHODS:
        lines.append(f"  {m:<12} val {summary(results[m]['val'])}   test {summary(results[m]['test'])}")
    test = {m: np.asarray(results[m]["test"]) for m in METHODS}
    for a, b in (("frozen", "scratch"), ("fine-tuned", "scratch"), ("frozen", "random body")):
        gap = test[a] - test[b]
        lines.append(f"  {a} - {b} per seed: mean {gap.mean():+.3f}, min {gap.min():+.3f}, "
                     f"mean - 2 sem {gap.mean() - 2 * sem(gap):+.3f}  [{', '.join(f'{g:+.3f}' for g in gap)}]")
    return lines


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--first-seed", type=int, default=0,
                   help="seeds first..first+seeds-1 (e.g. 100 to choose settings away from the reported 0-9)")
    p.add_argument("--part", choices=["transfer", "ensemble", "ema"], default="transfer")
    p.add_argument("--per-class", type=int, default=None, help="target examples per class (default 20)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="a Setting field, e.g. hidden=256,256 keep=0.5 warmup=20 (repeatable)")
    a = p.parse_args(argv)
    setting = parse_setting(Setting, a.set)
    if a.per_class is not None:
        setting = setting.replace(per_class=a.per_class)
    seeds, data = list(range(a.first_seed, a.first_seed + a.seeds)), pixel_digits()
    if a.part in ("ensemble", "ema"):
        for m, v in (ensembles if a.part == "ensemble" else ema)(seeds).items():
            print(f"  {m:<40} {summary(v)}")
        return
    start = time.perf_counter()
    results, source_acc = study(setting, seeds, data)
    print("\n".join(report(setting, results, source_acc)))
    print(f"  ({len(seeds)} seeds, {time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
