"""`fastopt evaluate`: the accuracy and confusion matrix of saved models (fastopt train --save-model).

    fastopt evaluate --model digits.model                      # the file's dataset and classes, test split
    fastopt evaluate --model a.model --model b.model --json -  # an ensemble of two, as JSON on stdout
    fastopt evaluate --model digits.model --plot confusion.png

The data is loaded as `fastopt train` loads it (same split), the classes kept that the file's meta
names (or --classes), then each model's own preprocessing is applied. Several --model files are
evaluated as an ensemble (mean of the softmax probabilities) and each on its own.
"""
import json
import os
import sys

import numpy as np

from .cli import UsageError

SPLITS = ("test", "val", "train")


def configure(parser):
    add = parser.add_argument
    add("--model", action="append", metavar="PATH", required=True,
        help="a model file written by fastopt train --save-model (repeat for an ensemble)")
    add("--data", metavar="NAME", help="dataset (default: the one the model file names, else digits)")
    add("--data-dir", metavar="DIR", help="folder with the CIFAR-10 python batches (for --data cifar10)")
    add("--classes", metavar="SPEC", help="the classes the model was trained on, e.g. 5-9 (default: the file's)")
    add("--split", default="test", metavar="{" + ",".join(SPLITS) + "}", help="which split (default test)")
    add("--plot", metavar="PATH", help="draw the confusion matrix into a PNG (needs fastopt[plot])")
    add("--json", metavar="PATH", nargs="?", const="-", help="write the results as JSON to PATH (- or none: stdout)")


def confusion_matrix(y_true, y_pred, num_classes):
    """(num_classes, num_classes) int64 counts: row = true class, column = predicted class."""
    m = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(m, (y_true, y_pred), 1)
    return m


def _parse(args):
    from . import train_cli
    from .data.subset import parse_classes

    if args.split not in SPLITS:
        raise UsageError(f"--split must be one of {', '.join(SPLITS)}; got {args.split!r}")
    for option, path in (("--plot", args.plot), ("--json", None if args.json == "-" else args.json)):
        if path is not None:
            train_cli._check_writable(option, path)
    if args.plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise UsageError("--plot needs matplotlib: pip install 'fastopt[plot]'") from None
    saved = []
    from . import model_io
    for path in args.model:
        if not os.path.isfile(path):
            raise UsageError(f"--model {path!r} is not an existing file")
        try:
            saved.append(model_io.load_model(path))
        except (OSError, ValueError) as exc:
            raise UsageError(f"--model {path!r}: {exc}") from None
    meta = saved[0].meta
    data = args.data or meta.get("data") or "digits"
    if data not in train_cli.DATASETS:
        raise UsageError(f"--data must be one of {', '.join(train_cli.DATASETS)}; got {data!r}")
    if data == "cifar10" and (args.data_dir is None or not os.path.isdir(args.data_dir)):
        raise UsageError("--data cifar10 needs --data-dir DIR (the extracted cifar-10-batches-py folder)")
    classes = meta.get("classes")
    if args.classes is not None:
        try:
            classes = parse_classes(args.classes)
        except ValueError as exc:
            raise UsageError(f"--classes: {exc}") from None
    for s, path in zip(saved, args.model):
        want = len(classes) if classes else None
        if want is not None and s.model.num_classes != want:
            raise UsageError(f"--model {path!r} has {s.model.num_classes} classes, but the evaluation keeps "
                             f"{want} ({classes})")
    return saved, data, classes


def evaluate(saved, data, split="test"):
    """{accuracy, confusion, member accuracies} of saved models (SavedModel list) on data's split."""
    from .ensemble import Ensemble

    X, y = data[f"X_{split}"], data[f"y_{split}"]
    num_classes = saved[0].model.num_classes
    probs = []
    for s in saved:
        Xs = X if s.preprocess is None else s.preprocess.transform(X)
        if Xs.reshape(len(Xs), -1).shape[1] != s.model.input_dim:
            raise UsageError(f"a model takes {s.model.input_dim} features, the data has {Xs.shape[1]}")
        if s.model.num_classes != num_classes:
            raise UsageError("the models must have the same number of classes to form an ensemble")
        probs.append(Ensemble([s.model]).predict_proba(Xs))
    if y.size and y.max() >= num_classes:
        raise UsageError(f"the data has labels up to {int(y.max())}, the model {num_classes} classes "
                         f"(give --classes)")
    pred = np.argmax(np.mean(probs, axis=0), axis=1)
    out = {"split": split, "examples": int(len(y)), "accuracy": float(np.mean(pred == y)),
           "confusion": confusion_matrix(y, pred, num_classes).tolist()}
    if len(saved) > 1:
        out["member_accuracy"] = [float(np.mean(np.argmax(p, axis=1) == y)) for p in probs]
    return out


def format_confusion(matrix, labels):
    width = max(5, max(len(str(v)) for row in matrix for v in row) + 1, max(len(str(lab)) for lab in labels) + 1)
    lines = ["true\\pred".ljust(10) + "".join(str(lab).rjust(width) for lab in labels)]
    for lab, row in zip(labels, matrix):
        lines.append(str(lab).ljust(10) + "".join(str(v).rjust(width) for v in row))
    return "\n".join(lines)


def write_plot(path, matrix, labels, title):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    m = np.asarray(matrix)
    fig = Figure(figsize=(1.0 + 0.5 * len(labels), 0.8 + 0.5 * len(labels)), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    im = ax.imshow(m, cmap="Blues")
    ax.set(xticks=range(len(labels)), yticks=range(len(labels)), xticklabels=labels, yticklabels=labels,
           xlabel="predicted", ylabel="true", title=title)
    for (i, j), v in np.ndenumerate(m):
        ax.text(j, i, str(v), ha="center", va="center", fontsize=8,
                color="white" if v > m.max() / 2 else "black")
    fig.colorbar(im, ax=ax, shrink=0.8)
    fig.savefig(path, format="png", dpi=100)


def run(args):
    from . import train_cli
    from .data.subset import select_classes

    saved, data_name, classes = _parse(args)
    data = train_cli.load_data({"data": data_name, "data_dir": args.data_dir})
    if classes:
        try:
            data = select_classes(data, classes)
        except ValueError as exc:
            raise UsageError(f"--classes: {exc}") from None
    result = evaluate(saved, data, args.split)
    labels = classes or list(range(saved[0].model.num_classes))
    result.update(models=list(args.model), data=data_name, classes=labels)
    if args.json == "-":
        json.dump(result, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        what = "ensemble of " + str(len(saved)) if len(saved) > 1 else args.model[0]
        print(f"{what}: {data_name} {args.split} accuracy {result['accuracy']:.4f} ({result['examples']} examples)")
        if "member_accuracy" in result:
            print("members: " + ", ".join(f"{a:.4f}" for a in result["member_accuracy"]))
        print(format_confusion(result["confusion"], labels))
        if args.json is not None:
            with open(args.json, "w") as f:
                json.dump(result, f, indent=2)
                f.write("\n")
    if args.plot is not None:
        write_plot(args.plot, result["confusion"], labels,
                   f"{data_name} {args.split}: accuracy {result['accuracy']:.3f}")
    return 0
