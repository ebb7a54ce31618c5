"""fastopt.train_extras: the lecture-7 options of `fastopt train`, each call tested directly (the train
command's wiring is the lead's; `_train` below does what it will do)."""
import argparse

import numpy as np
import pytest

from fastopt import train_cli, train_extras
from fastopt.cli import UsageError
from fastopt.model_io import load_model
from fastopt.nn import FullyConnectedNet


def _args(*argv):
    p = argparse.ArgumentParser()
    train_cli.configure(p)
    if "--classes" not in p._option_string_actions:     # until train_cli.configure adds them itself
        train_extras.configure(p)
    args = p.parse_args(list(argv))
    cfg = train_cli.parse_config(args)
    return cfg, train_extras.parse(args, cfg)


def _train(cfg, extras, epochs=3, lr=3e-3):
    """The train command's flow with the extras (as the lead wires it into train_cli)."""
    data, pre = train_extras.prepare_data(extras, train_cli.load_data(cfg))
    num_classes = int(data["y_train"].max()) + 1

    def fit(seed):
        model = FullyConnectedNet(cfg["hidden"], input_dim=data["X_train"].shape[1], num_classes=num_classes,
                                  weight_init="he", rng=seed)
        model = train_extras.prepare_model(extras, model)
        cls, kwargs = train_extras.solver(extras)
        solver = cls(model, {k: data[k] for k in ("X_train", "y_train", "X_val", "y_val")}, update_rule="adam",
                     optim_config={"learning_rate": lr}, batch_size=32, num_epochs=epochs, verbose=False,
                     seed=seed, **kwargs)
        solver.train()
        return model, solver
    model, solver = fit(cfg["seed"])
    report = train_extras.after_training(extras, model, solver, data, pre, retrain=lambda s: fit(s)[0])
    return model, data, pre, report


def test_no_extras_changes_nothing():
    cfg, ex = _args()
    data = train_cli.load_data(cfg)
    out, pre = train_extras.prepare_data(ex, data)
    assert pre is None and all(out[k] is data[k] for k in data)
    m = FullyConnectedNet([4], input_dim=64, num_classes=10, rng=0)
    assert train_extras.prepare_model(ex, m) is m and m.frozen == frozenset()
    assert train_extras.solver(ex)[1] == {}


def test_classes_train_size_and_preprocess():
    cfg, ex = _args("--classes", "5-9", "--train-size", "50", "--preprocess", "pca:20", "--seed", "3")
    data, pre = train_extras.prepare_data(ex, train_cli.load_data(cfg))
    assert data["X_train"].shape == (50, 20) and data["X_test"].shape[1] == 20
    assert np.bincount(data["y_train"]).tolist() == [10] * 5
    assert set(np.unique(data["y_test"])) == set(range(5)) and pre.output_features == 20


@pytest.mark.parametrize("argv, match", [
    (["--classes", "3"], "at least 2"),
    (["--classes", "0-x"], "--classes"),
    (["--train-size", "0"], "--train-size must be an integer >= 1"),
    (["--preprocess", "pca"], "--preprocess"),
    (["--preprocess", "pca:100"], None),            # refused when fitted (64 features): prepare_data
    (["--augment", "shift:x"], "--augment"),
    (["--freeze", "3"], "--freeze 3: the model has 2 hidden layers"),
    (["--freeze", "-1"], "--freeze"),
    (["--elastic-net", "1e-4"], "L1,L2"),
    (["--elastic-net", "1e-4,-1"], "--elastic-net"),
    (["--max-norm", "0"], "--max-norm must be a number > 0"),
    (["--ensemble", "0"], "--ensemble"),
    (["--init-from", "/nonexistent"], "not an existing file"),
    (["--save-model", "/nonexistent/dir/m"], "does not exist"),
    (["--data", "spiral", "--augment", "shift:1"], "image data"),
    (["--augment", "shift:1", "--preprocess", "pca:8"], "images"),
])
def test_bad_options_are_one_usage_error_before_any_data(argv, match):
    if match is None:
        cfg, ex = _args(*argv)
        with pytest.raises(UsageError, match="k = 100 is larger than the number of features"):
            train_extras.prepare_data(ex, train_cli.load_data(cfg))
        return
    with pytest.raises(UsageError, match=match):
        _args(*argv)


def test_freeze_with_batchnorm_without_init_from_is_a_random_frozen_body():
    """Accepted: a fresh model's frozen batchnorm layers have defined statistics (mean 0, variance 1)."""
    cfg, ex = _args("--freeze", "1", "--normalization", "batchnorm")
    assert ex["freeze"] == 1 and cfg["normalization"] == "batchnorm"


def test_augment_is_refused_until_the_solver_takes_it_or_passed_when_it_does():
    if train_extras._solver_takes("augment"):
        cfg, ex = _args("--augment", "shift:1,noise:0.05")
        aug = train_extras.solver(ex)[1]["augment"]
        assert aug.options["shift"] == 1 and aug.image_shape == (1, 8, 8)
    else:
        with pytest.raises(UsageError, match="augment="):
            _args("--augment", "shift:1,noise:0.05")


def test_save_model_then_init_from_with_frozen_body(tmp_path):
    path = str(tmp_path / "pre.model")
    cfg, ex = _args("--classes", "0-4", "--preprocess", "standardize", "--hidden", "32,16", "--save-model", path)
    model, data, pre, report = _train(cfg, ex)
    assert report["saved_model"] == path
    saved = load_model(path)
    assert saved.meta["classes"] == [0, 1, 2, 3, 4] and saved.meta["data"] == "digits"
    X = train_cli.load_data(cfg)["X_test"][:7]
    assert saved.scores(X).tobytes() == model.loss(pre.transform(X)).tobytes()

    cfg2, ex2 = _args("--classes", "5-9", "--train-size", "100", "--init-from", path, "--freeze", "2",
                      "--max-norm", "5")
    assert "--init-from" not in str(ex2) and ex2["freeze"] == 2
    body = {k: v.copy() for k, v in saved.model.params.items() if not k.endswith("3")}
    model2, data2, pre2, _ = _train(cfg2, ex2, epochs=30, lr=2e-2)
    assert pre2 is not None and pre2.state_dict()["mean"].tobytes() == pre.state_dict()["mean"].tobytes()
    assert model2.frozen == {0, 1} and model2.hidden_dims == [32, 16]
    assert all(model2.params[k].tobytes() == v.tobytes() for k, v in body.items())
    assert float(np.mean(np.argmax(model2.loss(data2["X_test"]), axis=1) == data2["y_test"])) > 0.5
    # --freeze beyond the file's depth: refused before anything
    with pytest.raises(UsageError, match="has 2 hidden layers"):
        _args("--init-from", path, "--freeze", "3", "--hidden", "8,8,8")
    with pytest.raises(UsageError, match="drop --preprocess"):
        _args("--init-from", path, "--preprocess", "center")


def test_ensemble_reports_members_and_the_ensemble():
    cfg, ex = _args("--ensemble", "3", "--hidden", "16", "--train-size", "200", "--elastic-net", "1e-5,1e-4")
    _, _, _, report = _train(cfg, ex, epochs=10)
    e = report["ensemble"]
    assert e["members"] == 3 and e["seeds"] == [0, 1, 2] and len(e["member_test_acc"]) == 3
    assert 0.5 < e["test_acc"] <= 1 and len(set(e["member_test_acc"])) > 1
