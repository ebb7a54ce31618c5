"""`fastopt diagnose init`: the lecture's initialization experiment, its facts asserted numerically."""
import json

import numpy as np
import pytest

from fastopt import cli, diagnose


@pytest.fixture(scope="module")
def lecture():
    """The lecture's five cases at its size (10 layers of 500 units), on 200 examples (the lecture: 1000)."""
    results = diagnose.run_init_experiments(depth=10, width=500, examples=200, seed=0)
    return {r["label"]: r for r in results}


def _stds(r):
    return np.array([s["std"] for s in r["layers"]])


def test_small_weights_collapse_to_zero(lecture):
    stds = _stds(lecture["tanh, std 0.01"])
    assert np.all(np.diff(stds) < 0)                   # shrinks at every layer
    assert stds[-1] < 1e-5 * stds[0]                   # ~0.22x per layer: nothing left after 10


def test_large_weights_saturate_tanh(lecture):
    r = lecture["tanh, std 1"]
    assert all(s["flat_fraction"] > 0.8 for s in r["layers"])     # most |a| > 0.99 at every layer
    assert all(0.9 < s["std"] < 1.0 for s in r["layers"])         # the values sit at -1 and 1


def test_xavier_tanh_stays_in_a_band(lecture):
    r = lecture["tanh, xavier"]
    stds = _stds(r)
    assert np.all((stds > 0.15) & (stds < 0.8))
    assert stds[-1] > 0.3 * stds[0]                    # shrinks slowly, does not collapse
    assert all(s["flat_fraction"] < 0.05 for s in r["layers"])


def test_relu_xavier_halves_the_variance_and_he_keeps_it(lecture):
    xavier, he = _stds(lecture["relu, xavier"]), _stds(lecture["relu, he"])
    ratios = xavier[1:] / xavier[:-1]
    np.testing.assert_allclose(ratios, 1 / np.sqrt(2), rtol=0.08)   # variance halves per layer
    assert xavier[-1] < 0.1 * xavier[0]
    assert np.all((he > 0.5 * he[0]) & (he < 2 * he[0]))
    for r in (lecture["relu, xavier"], lecture["relu, he"]):
        assert all(0.4 < s["flat_fraction"] < 0.6 for s in r["layers"])   # half the units are off


def test_same_seed_same_statistics():
    a = diagnose.init_experiment("sigmoid", "glorot", depth=3, width=40, examples=30, seed=4)
    b = diagnose.init_experiment("sigmoid", "glorot", depth=3, width=40, examples=30, seed=4)
    assert a == b and a["weight_std"] == pytest.approx(np.sqrt(2 / 80))


def test_command_table_json_and_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out, png = tmp_path / "init.json", tmp_path / "init.png"
    code = cli.main(["diagnose", "init", "--depth", "3", "--width", "64", "--examples", "50",
                     "--activation", "tanh,leaky_relu", "--init", "0.05,he", "--json", str(out),
                     "--plot", str(png)])
    assert code == 0
    text = capsys.readouterr().out
    assert "tanh, std 0.05" in text and "leaky_relu, he" in text
    summary = json.loads(out.read_text())
    assert [e["label"] for e in summary["experiments"]] == ["tanh, std 0.05", "tanh, he",
                                                             "leaky_relu, std 0.05", "leaky_relu, he"]
    assert len(summary["experiments"][0]["layers"]) == 3
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("argv, message", [
    (["--activation", "swish"], "--activation must name activations"),
    (["--init", "0"], "--init: init must be one of"),
    (["--depth", "0"], "--depth must be an integer >= 1"),
    (["--json", "/nonexistent/dir/x.json"], "does not exist"),
])
def test_bad_input(argv, message, capsys):
    assert cli.main(["diagnose", "init", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
