"""`fastopt evaluate`: accuracy and confusion matrix of model files; bad input is one line, exit 2."""
import json

import numpy as np
import pytest

from fastopt import Solver, cli, evaluate_cli, train_cli
from fastopt.data.subset import select_classes
from fastopt.nn import FullyConnectedNet
from fastopt.preprocessing import Center


@pytest.fixture
def run(monkeypatch):
    # Registered here as the lead registers it in fastopt/cli.py's COMMANDS.
    monkeypatch.setitem(cli.COMMANDS, "evaluate", ("fastopt.evaluate_cli", "evaluate saved models"))
    return lambda *argv: cli.main(["evaluate", *map(str, argv)])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    data = select_classes(train_cli.load_data({"data": "digits", "data_dir": None}), [5, 6, 7, 8, 9])
    paths = []
    for seed in (0, 1):
        pre = Center().fit(data["X_train"])
        Z = {k: pre.transform(v) if k.startswith("X") else v for k, v in data.items()}
        model = FullyConnectedNet([32], input_dim=64, num_classes=5, weight_init="he", rng=seed)
        Solver(model, Z, update_rule="adam", optim_config={"learning_rate": 3e-3}, num_epochs=3,
               batch_size=32, verbose=False, seed=seed).train()
        path = d / f"m{seed}.model"
        model.save(path, preprocess=pre, meta={"data": "digits", "classes": [5, 6, 7, 8, 9]})
        paths.append(path)
    return paths, data, d


def test_accuracy_and_confusion_matrix(run, files, capsys):
    paths, data, d = files
    assert run("--model", paths[0], "--json", d / "r.json") == 0
    out = capsys.readouterr().out
    r = json.loads((d / "r.json").read_text())
    saved = FullyConnectedNet.load(paths[0])
    from fastopt.model_io import load_model
    pred = load_model(paths[0]).predict(data["X_test"])
    assert r["accuracy"] == pytest.approx(float(np.mean(pred == data["y_test"])), abs=0)
    m = np.array(r["confusion"])
    assert m.shape == (5, 5) and m.sum() == len(data["y_test"]) and np.trace(m) == np.sum(pred == data["y_test"])
    assert m[2, 3] == np.sum((data["y_test"] == 2) & (pred == 3))
    assert r["classes"] == [5, 6, 7, 8, 9] and saved.num_classes == 5
    assert f"accuracy {r['accuracy']:.4f}" in out and "true\\pred" in out


def test_an_ensemble_of_files_as_json_on_stdout(run, files, capsys):
    paths, data, _ = files
    assert run("--model", paths[0], "--model", paths[1], "--json") == 0
    r = json.loads(capsys.readouterr().out)
    assert len(r["member_accuracy"]) == 2 and r["examples"] == len(data["y_test"])


def test_plot(run, files):
    pytest.importorskip("matplotlib")
    paths, _, d = files
    assert run("--model", paths[0], "--plot", d / "c.png", "--split", "val") == 0
    assert (d / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("argv, match", [
    (["--model", "/nonexistent"], "not an existing file"),
    (["--split", "dev"], "--split"),
    (["--data", "mnist"], "--data"),
    (["--classes", "0-2"], "has 5 classes"),
    (["--plot", "/nonexistent/dir/x.png"], "does not exist"),
])
def test_bad_input_is_one_line_and_exit_2(run, files, capsys, argv, match):
    paths, _, _ = files
    if argv[0] != "--model":
        argv = ["--model", paths[0], *argv]
    assert run(*argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and match in err


def test_a_damaged_file_is_exit_2(run, files, capsys, tmp_path):
    bad = tmp_path / "bad.model"
    bad.write_bytes(b"not a model")
    assert run("--model", bad) == 2
    assert "--model" in capsys.readouterr().err


def test_confusion_matrix_known_answer():
    m = evaluate_cli.confusion_matrix(np.array([0, 0, 1, 2, 2]), np.array([0, 1, 1, 2, 0]), 3)
    assert m.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 1]]
