import functools
import json
import sys

import numpy as np
import pytest

import fastopt.data
from fastopt.cli import main

from test_data import write_cifar

FAST = ["train", "--epochs", "2", "--threads", "1", "--quiet"]


def run_json(tmp_path, *extra, name="out.json"):
    path = tmp_path / name
    assert main([*FAST, "--json", str(path), *extra]) == 0
    return json.loads(path.read_text())


def test_tiny_digits_run_writes_a_sane_summary(tmp_path, capsys):
    summary = run_json(tmp_path, "--hidden", "32", "--seed", "3")
    assert {"val_acc", "test_acc", "best_val_acc", "epochs", "iterations", "seconds", "config"} <= set(summary)
    assert summary["epochs"] == 2
    assert summary["iterations"] == 2 * (1258 // 64)
    assert 0.5 < summary["test_acc"] <= 1 and 0.5 < summary["val_acc"] <= 1
    assert summary["seconds"] > 0
    cfg = summary["config"]
    assert cfg["hidden"] == [32] and cfg["seed"] == 3 and cfg["threads"] == 1
    assert cfg["data"] == "digits" and cfg["normalization"] == "batchnorm" and cfg["optimizer"] == "adam"
    # As in CS231n, accuracies are recorded after the first iteration and at the end of each epoch.
    assert len(summary["history"]["val_acc"]) == 2 + 1
    out = capsys.readouterr()
    assert "test acc" in out.out and "config:" in out.out
    assert "epoch" not in out.err              # --quiet


def test_same_seed_same_result(tmp_path):
    a = run_json(tmp_path, "--hidden", "16", name="a.json")
    b = run_json(tmp_path, "--hidden", "16", name="b.json")
    assert a["test_acc"] == b["test_acc"] and a["history"] == b["history"]


def test_plain_progress_lines_without_a_terminal(capsys):
    assert main(["train", "--epochs", "2", "--hidden", "16", "--threads", "1"]) == 0
    err = capsys.readouterr().err
    assert "epoch 1/2" in err and "epoch 2/2" in err and "val_acc" in err


def test_tqdm_bar_on_a_terminal(capsys, monkeypatch):
    pytest.importorskip("tqdm")
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main(["train", "--epochs", "2", "--hidden", "16", "--threads", "1"]) == 0
    err = capsys.readouterr().err
    assert "38/38" in err                     # 2 epochs of 1258 // 64 iterations
    assert "epoch 1/2  loss" not in err       # no plain lines when the bar is drawn


@pytest.mark.parametrize("extra", [
    ["--normalization", "layernorm", "--optimizer", "sgd_momentum", "--lr", "0.05", "--dropout", "0.9"],
    ["--normalization", "none", "--optimizer", "rmsprop", "--weight-init", "small", "--weight-scale", "0.05"],
    ["--optimizer", "adamw", "--weight-init", "xavier", "--reg", "0", "--backend", "numpy"],
])
def test_option_combinations_train(tmp_path, extra):
    summary = run_json(tmp_path, "--hidden", "32", *extra)
    assert 0.3 < summary["test_acc"] <= 1
    if "--backend" in extra:
        assert summary["config"]["backend"] == "numpy"


def test_spiral(tmp_path):
    summary = run_json(tmp_path, "--data", "spiral", "--hidden", "64", "--epochs", "30", "--batch-size", "32",
                       "--lr", "1e-2")
    assert summary["config"]["data"] == "spiral"
    assert summary["test_acc"] > 0.6          # a linear model gets ~1/3


def test_cifar10_from_generated_batches(tmp_path, monkeypatch):
    write_cifar(tmp_path / "cifar")
    # The files hold 100 training rows, not 50000: shrink the loader's defaults for this test.
    small = functools.partial(fastopt.data.load_cifar10, num_training=80, num_validation=20, num_test=20)
    monkeypatch.setattr(fastopt.data, "load_cifar10", small)
    summary = run_json(tmp_path, "--data", "cifar10", "--data-dir", str(tmp_path / "cifar"), "--hidden", "8",
                       "--batch-size", "10")
    assert summary["config"]["data_dir"] == str(tmp_path / "cifar")
    assert 0 <= summary["test_acc"] <= 1 and summary["iterations"] == 2 * 8


def test_cifar10_too_few_rows_is_a_usage_error(tmp_path, capsys):
    write_cifar(tmp_path)
    assert main([*FAST, "--data", "cifar10", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "hold 100 rows" in err and "Traceback" not in err


def _same(a, b, where="checkpoint"):
    """Bitwise equality of nested checkpoint data (dicts, lists, arrays, numbers, RNG states)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for k in a:
            _same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]")
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape, where
        assert a.tobytes() == b.tobytes(), where
    else:
        assert type(a) is type(b) and a == b, where


@pytest.mark.parametrize("optimizer", ["adam", "sgd_momentum"])
def test_resume_equals_an_uninterrupted_run_bitwise(tmp_path, optimizer):
    from fastopt import checkpoint
    common = ["--hidden", "16", "--optimizer", optimizer, "--dropout", "0.9"]
    full = run_json(tmp_path, *common, "--epochs", "3", "--checkpoint", str(tmp_path / "full.ckpt"),
                    name="full.json")
    run_json(tmp_path, *common, "--checkpoint", str(tmp_path / "part.ckpt"), name="part.json")  # 2 epochs
    # The resumed run is given another seed: the checkpoint's RNG states and params must win. A
    # resume that dropped the loaded state would train a seed-7 run from scratch, which differs:
    fresh = run_json(tmp_path, *common, "--epochs", "3", "--seed", "7", name="fresh.json")
    assert fresh["history"] != full["history"]
    resumed = run_json(tmp_path, *common, "--epochs", "3", "--seed", "7", "--resume", str(tmp_path / "part.ckpt"),
                       "--checkpoint", str(tmp_path / "resumed.ckpt"), name="resumed.json")
    assert resumed["config"]["resume"] == str(tmp_path / "part.ckpt")
    for key in ("val_acc", "test_acc", "best_val_acc", "epochs", "iterations", "history"):
        assert resumed[key] == full[key], key
    a, b = checkpoint.load(tmp_path / "full.ckpt"), checkpoint.load(tmp_path / "resumed.ckpt")
    # Checkpoint version 3 stores the constructor arguments as top-level keys; "seed" is the one the
    # two runs were given differently (0 and 7: the loaded draws' state, compared as "rng", wins).
    assert (a["seed"], b["seed"]) == (0, 7)
    for key in a:
        if key != "seed":
            _same(a[key], b[key], key)


def test_resume_into_a_different_model_is_a_usage_error(tmp_path, capsys):
    ckpt = tmp_path / "model.ckpt"
    run_json(tmp_path, "--hidden", "16", "--checkpoint", str(ckpt))
    capsys.readouterr()
    assert main([*FAST, "--hidden", "24", "--resume", str(ckpt)]) == 2
    err = capsys.readouterr().err
    assert "--resume" in err and "Traceback" not in err


def test_resume_from_a_file_that_is_not_a_checkpoint(tmp_path, capsys):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"definitely not a checkpoint")
    assert main([*FAST, "--resume", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "cannot load it" in err and "Traceback" not in err


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "curves.png"
    assert main([*FAST, "--hidden", "16", "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_fails_before_training(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)      # makes `import matplotlib` fail
    out_json = tmp_path / "out.json"
    assert main([*FAST, "--plot", str(tmp_path / "c.png"), "--json", str(out_json)]) == 2
    captured = capsys.readouterr()
    assert "pip install 'fastopt[plot]'" in captured.err
    assert captured.out == "" and not out_json.exists()


@pytest.mark.parametrize("argv, fragment", [
    (["--hidden", "12,x"], "--hidden must be a comma-separated list of positive integers"),
    (["--hidden", "12,0"], "--hidden"),
    (["--hidden", ""], "--hidden"),
    (["--epochs", "0"], "--epochs must be an integer >= 1, got '0'"),
    (["--epochs", "2.5"], "--epochs must be an integer"),
    (["--batch-size", "-4"], "--batch-size must be an integer >= 1"),
    (["--lr", "-1"], "--lr must be a number > 0, got '-1'"),
    (["--lr", "nan"], "--lr must be a number > 0"),
    (["--lr", "fast"], "--lr must be a number > 0"),
    (["--lr-decay", "1.5"], "--lr-decay must be a number > 0 and <= 1"),
    (["--dropout", "1.5"], "--dropout must be a number > 0 and <= 1, got '1.5'"),
    (["--dropout", "0"], "--dropout must be a number > 0"),
    (["--reg", "-0.1"], "--reg must be a number >= 0"),
    (["--threads", "0"], "--threads must be an integer >= 1"),
    (["--seed", "-1"], "--seed must be an integer >= 0"),
    (["--data", "mnist"], "--data must be one of digits, cifar10, spiral; got 'mnist'"),
    (["--normalization", "groupnorm"], "--normalization must be one of"),
    (["--optimizer", "lbfgs"], "--optimizer must be one of"),
    (["--weight-init", "orthogonal"], "--weight-init must be one of"),
    (["--backend", "cuda"], "--backend must be one of cython, numpy"),
    (["--weight-scale", "0.1"], "--weight-scale applies only to --weight-init small"),
    (["--weight-init", "small", "--weight-scale", "0"], "--weight-scale must be a number > 0"),
    (["--data", "cifar10"], "--data cifar10 needs --data-dir"),
    (["--data", "cifar10", "--data-dir", "/nonexistent/cifar"], "is not an existing folder"),
    (["--data-dir", "/tmp"], "--data-dir applies only to --data cifar10"),
    (["--resume", "/nonexistent/model.ckpt"], "--resume '/nonexistent/model.ckpt' is not an existing file"),
    (["--json", "/nonexistent/dir/out.json"], "folder '/nonexistent/dir' does not exist"),
    (["--checkpoint", "/nonexistent/dir/m.ckpt"], "--checkpoint"),
    (["--plot", "/nonexistent/dir/c.png"], "--plot"),
    (["--momentum", "0.9"], "--momentum applies only to --optimizer sgd_momentum or nesterov_momentum"),
    (["--optimizer", "sgd_momentum", "--momentum", "1"], "--momentum must be a number >= 0 and < 1"),
    (["--optimizer", "adamw", "--beta2", "1.0"], "--beta2 must be a number >= 0 and < 1, got '1.0'"),
    (["--optimizer", "adam", "--beta1", "x"], "--beta1 must be a number"),
    (["--optimizer", "sgd", "--eps", "1e-8"], "--eps applies only to --optimizer adagrad or rmsprop"),
    (["--optimizer", "adam", "--eps", "0"], "--eps must be a number > 0"),
    (["--optimizer", "adam", "--weight-decay", "0.1"], "--weight-decay applies only to --optimizer adamw"),
    (["--optimizer", "adamw", "--weight-decay", "-1"], "--weight-decay must be a number >= 0"),
    (["--optimizer", "adam", "--decay-rate", "0.9"], "--decay-rate applies only to --optimizer rmsprop"),
    (["--ema", "1"], "--ema must be a number >= 0 and < 1 or 'polyak', got '1'"),
    (["--ema", "Polyak"], "--ema must be a number >= 0 and < 1 or 'polyak', got 'Polyak'"),
    (["--ema", "nan"], "--ema must be a number"),
    (["--max-grad-norm", "0"], "--max-grad-norm must be a number > 0, got '0'"),
    (["--max-grad-norm", "inf"], "--max-grad-norm must be a number > 0"),
    (["--optimizer", "sgd_momentum", "--ema", "0.9"], "--ema applies only to --optimizer sgd, adagrad"),
    (["--optimizer", "nesterov_momentum", "--max-grad-norm", "1"], "--max-grad-norm applies only to"),
])
def test_bad_options_exit_2_with_one_line_and_no_training(argv, fragment, capsys):
    assert main(["train", *argv]) == 2
    captured = capsys.readouterr()
    assert fragment in captured.err
    assert captured.err.startswith("fastopt train: error: ") and captured.err.count("\n") == 1
    assert "Traceback" not in captured.err
    assert captured.out == ""                  # nothing was trained


def test_json_path_that_is_a_directory(tmp_path, capsys):
    assert main([*FAST, "--json", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err


def test_default_configuration_reaches_95_percent(tmp_path):
    """`fastopt train` with no options (one thread): >= 95% test accuracy on the digits."""
    path = tmp_path / "default.json"
    assert main(["train", "--threads", "1", "--quiet", "--json", str(path)]) == 0
    summary = json.loads(path.read_text())
    assert summary["config"]["hidden"] == [128, 64] and summary["config"]["epochs"] == 20
    assert summary["test_acc"] >= 0.95


@pytest.mark.parametrize("extra, expected", [
    (["--optimizer", "sgd_momentum", "--momentum", "0.5", "--lr", "0.05"],
     {"learning_rate": 0.05, "momentum": 0.5}),
    (["--optimizer", "nesterov_momentum", "--momentum", "0.7", "--lr", "0.05"],
     {"learning_rate": 0.05, "momentum": 0.7}),
    (["--optimizer", "rmsprop", "--decay-rate", "0.9", "--eps", "1e-6"],
     {"learning_rate": 3e-3, "decay_rate": 0.9, "epsilon": 1e-6}),
    (["--optimizer", "adamw", "--beta1", "0.8", "--beta2", "0.99", "--weight-decay", "0.05"],
     {"learning_rate": 3e-3, "beta1": 0.8, "beta2": 0.99, "weight_decay": 0.05}),
])
def test_optimizer_hyperparameters_reach_the_solver(tmp_path, monkeypatch, extra, expected):
    import fastopt.solver
    seen = {}
    real_init = fastopt.solver.Solver.__init__

    def spy(self, model, data, **kwargs):
        seen.update(kwargs["optim_config"])
        real_init(self, model, data, **kwargs)

    monkeypatch.setattr(fastopt.solver.Solver, "__init__", spy)
    summary = run_json(tmp_path, *extra)
    assert seen == expected
    assert summary["config"]["optim_config"] == expected


def test_keyboard_interrupt_exits_130_and_writes_no_summary(tmp_path, capsys, monkeypatch):
    from fastopt.nn import FullyConnectedNet
    real, calls = FullyConnectedNet.loss, []

    def interrupted(self, X, y=None):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(self, X, y)

    monkeypatch.setattr(FullyConnectedNet, "loss", interrupted)
    out_json = tmp_path / "out.json"
    assert main([*FAST, "--hidden", "16", "--json", str(out_json)]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "Traceback" not in err
    assert len(calls) == 5 and not out_json.exists()


@pytest.mark.parametrize("option", ["--json", "--checkpoint", "--plot"])
def test_unwritable_existing_output_is_refused_before_training(tmp_path, capsys, monkeypatch, option):
    import os
    target = tmp_path / "existing.out"
    target.write_bytes(b"keep me")
    os.chmod(target, 0o444)
    if os.access(target, os.W_OK):     # root ignores the mode bits: deny like a read-only mount would
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if os.fspath(p) == str(target)
                            and mode & os.W_OK else real_access(p, mode, **kw))
    assert main([*FAST, option, str(target)]) == 2
    captured = capsys.readouterr()
    assert f"{option} '{target}' is not writable" in captured.err and captured.out == ""
    assert target.read_bytes() == b"keep me"


def test_output_in_a_folder_that_cannot_be_written_is_refused(tmp_path, capsys, monkeypatch):
    import tempfile

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    assert main([*FAST, "--json", str(tmp_path / "new.json")]) == 2
    err = capsys.readouterr().err
    assert "cannot write in" in err and "Permission denied" in err
    assert not (tmp_path / "new.json").exists()


def test_backend_cython_without_the_compiled_core_is_a_usage_error(capsys, monkeypatch):
    from fastopt import _backend
    monkeypatch.setattr(_backend, "_compiled_available", lambda: False)
    assert main([*FAST, "--backend", "cython"]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("fastopt train: error: --backend cython:")
    assert "compiled core" in captured.err and "Traceback" not in captured.err and captured.out == ""


@pytest.mark.parametrize("argv, fragment", [([], "required"), (["frobnicate"], "invalid choice")])
def test_missing_or_unknown_subcommand_exits_2(argv, fragment, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert fragment in err and err.startswith("usage: fastopt")


@pytest.mark.parametrize("extra, rule, expected", [
    (["--optimizer", "adam", "--ema", "0.9", "--max-grad-norm", "2"], "Adam",
     {"learning_rate": 3e-3, "ema": 0.9, "max_grad_norm": 2.0, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8}),
    (["--optimizer", "adagrad", "--ema", "polyak"], "Adagrad",      # CS231n's epsilon, not the class's 1e-10
     {"learning_rate": 3e-3, "ema": "polyak", "epsilon": 1e-8}),
    (["--optimizer", "lion", "--lr", "1e-4", "--max-grad-norm", "1"], "Lion",
     {"learning_rate": 1e-4, "max_grad_norm": 1.0}),
])
def test_class_options_run_the_optimizer_class(tmp_path, monkeypatch, extra, rule, expected):
    """--ema / --max-grad-norm run the rule as its fastopt.optim class with those options, and the
    Solver then evaluates (and reports) with the averaged weights."""
    import fastopt.solver
    seen = {}
    real_init = fastopt.solver.Solver.__init__

    def spy(self, model, data, **kwargs):
        real_init(self, model, data, **kwargs)
        seen.update(rule=kwargs["update_rule"], config=kwargs["optim_config"], optimizer=self.optimizer,
                    averaged=self.evaluate_averaged)

    monkeypatch.setattr(fastopt.solver.Solver, "__init__", spy)
    summary = run_json(tmp_path, *extra)
    assert seen["rule"] is getattr(fastopt.optim, rule) and seen["config"] == expected
    assert seen["optimizer"].max_grad_norm == expected.get("max_grad_norm")
    assert seen["optimizer"].ema == expected.get("ema") and seen["averaged"] == ("ema" in expected)
    assert {k: summary["config"]["optim_config"][k] for k in ("ema", "max_grad_norm") if k in expected} == \
        {k: expected[k] for k in ("ema", "max_grad_norm") if k in expected}
    assert 0 <= summary["test_acc"] <= 1


def test_without_class_options_a_cs231n_rule_stays_a_function():
    from fastopt.train_cli import update_rule
    assert update_rule("adam") == "adam" and update_rule("adam", {"learning_rate": 1e-3}) == "adam"
    assert update_rule("adam", {"ema": 0.5}) is fastopt.optim.Adam
