"""Data augmentation on a small digits training set (CS231n lecture 7), measured over seeds.

    python benchmarks/augment_demo.py                                   # 200 examples, 5 seeds
    python benchmarks/augment_demo.py --spec shift:1 --spec noise:0.2 --set preprocess=none --set epochs=120

`n` training examples of all ten digits (stratified, seed s), the same network trained with and
without online augmentation (Solver(augment=fastopt.augment.Augment(spec, image_shape="digits",
seed=s)): every step draws fresh shifts/noise per example). Inputs are pixels / 16 (0..1, background
0) and then `preprocess` fitted on the small training split ("none": the pixels themselves; a shift's
zero padding is then background, while after "standardize" it is each pixel's mean and every feature
has its own scale, so a shifted image is no longer an image of the same kind). Every run keeps its
best-validation weights; settings are chosen on the validation split, the test split is reported.
"""
import argparse
import dataclasses
import time

import numpy as np

from fastopt.augment import Augment
from fastopt.data import subsample_train
from transfer_demo import accuracy, make_net, parse_setting, pixel_digits, preprocessed, summary, train


EVAL = ("val", "test", "shifted")


@dataclasses.dataclass(frozen=True)
class Setting:
    """The knobs of one augmentation experiment (`--set name=value`)."""
    n: int = 200
    hidden: tuple = (64, 64)
    keep: float = 1.0
    normalization: str = "none"
    reg: float = 0.0
    preprocess: str = "standardize"
    epochs: int = 40
    lr: float = 3e-3
    batch_size: int = 25


def shifted_test(data, seed=12345):
    """`data` plus X_shifted / y_shifted: every test image translated by (dy, dx) uniform in [-1, 1]^2
    (zero padding: background), drawn once by a fixed-seed Augment -- a test split with the variation the
    centred UCI digits lack."""
    batch = Augment("shift:1", image_shape="digits", seed=seed)(data["X_test"], data["y_test"], 0)
    return {**data, "X_shifted": batch.X, "y_shifted": data["y_test"]}


def augment_seed(setting, data, spec, seed):
    """{split: accuracy} (val, test, shifted) of one seed's run, augmented with `spec` ("none": plain)."""
    small = subsample_train(shifted_test(data), setting.n, seed=seed)
    small = preprocessed(small, setting.preprocess, small)
    aug = None if spec == "none" else Augment(spec, image_shape="digits", seed=seed)
    model = train(make_net(setting, 10, seed), small, lr=setting.lr, epochs=setting.epochs, seed=seed,
                  batch_size=setting.batch_size, augment=aug)
    return {split: accuracy(model, small, split) for split in EVAL}


def study(setting, specs, seeds, data=None):
    """{spec: {split: [accuracy per seed]}} (the same subset per seed for every spec)."""
    data = pixel_digits() if data is None else data
    out = {}
    for spec in specs:
        runs = [augment_seed(setting, data, spec, s) for s in seeds]
        out[spec] = {split: [r[split] for r in runs] for split in EVAL}
    return out


def report(setting, results):
    """Lines: each spec's accuracies, and its paired per-seed gain over "none" on test and shifted."""
    lines = [f"{setting}"]
    for spec, r in results.items():
        lines.append(f"  {spec:<18} " + "   ".join(f"{split} {summary(r[split])}" for split in EVAL))
        if "none" in results and spec != "none":
            for split in ("test", "shifted"):
                gap = np.asarray(r[split]) - np.asarray(results["none"][split])
                lines.append(f"  {'':<18} {split} - plain per seed: mean {gap.mean():+.3f}, min {gap.min():+.3f}")
    return lines


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--spec", action="append", default=None,
                   help="an augmentation spec to compare with none (repeatable; default shift:1,noise:0.05)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    a = p.parse_args(argv)
    setting = parse_setting(Setting, a.set)
    specs = ["none"] + (a.spec or ["shift:1,noise:0.05"])
    start = time.perf_counter()
    print("\n".join(report(setting, study(setting, specs, list(range(a.seeds))))))
    print(f"  ({a.seeds} seeds, {time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
