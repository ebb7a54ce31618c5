"""`fastopt train --monitor [N] --early-stopping K --plot --json`: lines, JSON, panels, bad input."""
import json

import pytest

from fastopt import train_cli
from fastopt.cli import main

FAST = ["train", "--epochs", "2", "--threads", "1", "--quiet", "--hidden", "16"]


def test_monitor_prints_one_line_per_epoch_and_writes_the_history(tmp_path, capsys):
    path = tmp_path / "out.json"
    assert main([*FAST, "--monitor", "5", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 2 and lines[0].startswith("epoch 1/2") and lines[1].startswith("epoch 2/2")
    for line in lines:
        assert "train_acc" in line and "val_acc" in line and "ratio median" in line and " max " in line and "dead" in line
    summary = json.loads(path.read_text())
    history = summary["monitor"]
    assert [r["iteration"] for r in history] == list(range(1, summary["iterations"] + 1, 5))
    assert set(history[0]["update_ratio"]) >= {"W1", "W2", "b1"} and history[0]["activations"]
    assert summary["config"]["monitor"] == 5 and summary["stopped"] is None


def test_monitor_without_n_uses_the_default_interval(tmp_path):
    path = tmp_path / "out.json"
    assert main([*FAST, "--json", str(path), "--monitor"]) == 0
    history = json.loads(path.read_text())["monitor"]
    assert [r["iteration"] for r in history][:3] == [1, 11, 21]


def test_an_exploding_run_says_so(tmp_path, capsys):
    path = tmp_path / "out.json"
    assert main([*FAST, "--epochs", "5", "--normalization", "none", "--optimizer", "sgd", "--lr", "1e4",
                 "--monitor", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "diagnosis: loss exploded at iteration" in out and "learning rate too high?" in out
    summary = json.loads(path.read_text())
    assert summary["stopped"]["kind"] == "exploded"
    json.dumps(summary, allow_nan=False)       # strict JSON even after a diverged run


def test_early_stopping_option(tmp_path, capsys):
    path = tmp_path / "out.json"
    assert main([*FAST, "--epochs", "30", "--lr", "1e-7", "--optimizer", "sgd", "--early-stopping", "2",
                 "--json", str(path)]) == 0
    summary = json.loads(path.read_text())
    assert summary["stopped"]["kind"] == "early_stopping" and summary["epochs"] < 30
    assert "stopped: early stopping" in capsys.readouterr().out


def test_plot_has_the_ratio_panel(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    panels = []
    real = train_cli.plot_update_ratios

    def spy(ax, history):
        real(ax, history)
        panels.append(ax)

    monkeypatch.setattr(train_cli, "plot_update_ratios", spy)
    png = tmp_path / "curves.png"
    assert main([*FAST, "--monitor", "3", "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ax, = panels
    assert ax.get_yscale() == "log"
    assert any(list(line.get_ydata()) == [1e-3, 1e-3] for line in ax.get_lines())      # the 1e-3 line
    assert {line.get_label() for line in ax.get_lines()} >= {"layer 1", "layer 2"}


def test_plot_without_monitor_has_two_panels(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    monkeypatch.setattr(train_cli, "plot_update_ratios", lambda ax, h: pytest.fail("no monitor: no panel"))
    assert main([*FAST, "--plot", str(tmp_path / "c.png")]) == 0


@pytest.mark.parametrize("argv, fragment", [
    (["--monitor", "0"], "--monitor must be an integer >= 1"),
    (["--monitor", "-5"], "--monitor must be an integer >= 1"),
    (["--monitor", "x"], "--monitor must be an integer >= 1"),
    (["--early-stopping", "0"], "--early-stopping must be an integer >= 1"),
    (["--early-stopping", "1.5"], "--early-stopping must be an integer >= 1"),
])
def test_bad_monitor_options_exit_2_before_training(argv, fragment, capsys, monkeypatch):
    monkeypatch.setattr(train_cli, "train_model", lambda *a: pytest.fail("trained"))
    assert main([*FAST, *argv]) == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1
