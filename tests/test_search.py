"""fastopt search on a local process pool: distributions, seeding, coarse-to-fine, resume, bad input."""
import concurrent.futures as cf
import json
import multiprocessing

import numpy as np
import pytest

from fastopt import cli, search
from fastopt.babysit import add_model_options, parse_model_options

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _base(**kw):
    import argparse
    p = argparse.ArgumentParser()
    add_model_options(p, exclude=search.SEARCHED)
    base = parse_model_options(p.parse_args([]), exclude=search.SEARCHED)
    base.update(lr_decay=0.95, **kw)
    return base


SPACE = {"lr": "log:1e-4,1e-1", "reg": "log:1e-6,1e-1", "dropout": "uniform:0.6,1", "hidden": "choice:16|24,16"}


def _strip(results):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in results]


def test_parse_distributions():
    d = search.parse_dist("lr", "log:1e-5,1e-1")
    assert (d.kind, d.low, d.high) == ("log", 1e-5, 1e-1) and d.spec() == "log:1e-05,0.1"
    assert search.parse_dist("dropout", "uniform:0.5,1").kind == "uniform"
    assert search.parse_dist("reg", "0").values == (0.0,)
    h = search.parse_dist("hidden", "choice:64|128,64")
    assert h.values == ([64], [128, 64]) and h.spec() == "choice:64|128,64"


@pytest.mark.parametrize("name, text, message", [
    ("lr", "log:0,1", "needs 0 < LO"),
    ("lr", "log:1e-1,1e-5", "needs LO < HI"),
    ("reg", "gauss:1,2", "unknown distribution 'gauss'"),
    ("lr", "log:1e-3", "needs two bounds"),
    ("lr", "log:a,1", "'a' is not a valid value"),
    ("dropout", "uniform:0.5,1.5", "must be a finite number > 0 and <= 1"),
    ("lr", "-1", "must be a finite number > 0"),
    ("hidden", "log:1,2", "layer sizes take choice"),
    ("hidden", "choice:64|0", "is not a valid value"),
])
def test_parse_distribution_errors(name, text, message):
    with pytest.raises(ValueError, match=message):
        search.parse_dist(name, text)


def test_sampling_is_log_uniform_and_seeded_by_seed_stage_trial():
    space = search.parse_space(SPACE)
    draws = [search.sample_trial(space, 7, 0, t) for t in range(2000)]
    lr = np.log10([d["lr"] for d in draws])
    assert lr.min() >= -4 and lr.max() <= -1
    assert abs(lr.mean() + 2.5) < 0.06 and abs(np.mean(lr < -3) - 1 / 3) < 0.04   # uniform in log10
    assert {tuple(d["hidden"]) for d in draws} == {(16,), (24, 16)}
    assert search.sample_trial(space, 7, 0, 5) == draws[5]            # a function of (seed, stage, trial)
    assert search.sample_trial(space, 7, 1, 5) != draws[5]
    assert search.trial_seed(7, 0, 5) == search.trial_seed(7, 0, 5) != search.trial_seed(7, 1, 5)


def test_narrowing_and_edge_warnings():
    space = search.parse_space(SPACE)
    results = [{"stage": 0, "trial": t, "val_acc": acc,
                "params": {"lr": lr, "reg": 1e-3, "dropout": 0.8, "hidden": [16]}}
               for t, (lr, acc) in enumerate([(1e-3, 0.9), (2e-3, 0.95), (1e-1, 0.2), (1e-4, 0.3)])]
    narrowed = search.narrow_space(space, space, results)
    assert 1e-4 < narrowed["lr"].low < 1e-3 and 2e-3 < narrowed["lr"].high < 1e-2
    assert narrowed["hidden"].kind == "fixed" and narrowed["hidden"].values == ([16],)
    assert narrowed["reg"].low >= 1e-6 and narrowed["reg"].high <= 1e-1      # never beyond the given range
    best = {"params": {"lr": 9e-2, "reg": 1e-3, "dropout": 0.99, "hidden": [16]}}
    warnings = search.edge_warnings(space, best)
    assert len(warnings) == 2
    assert "best lr 0.09 lies on the upper edge of log:0.0001,0.1" in warnings[0]
    assert "dropout" in warnings[1]


@pytest.fixture(scope="module")
def serial_search():
    space = search.parse_space(SPACE)
    return search.random_search(space, _base(), trials=3, epochs=1, stages=2, seed=3)


def test_stages_narrow_and_train_longer(serial_search):
    trials = serial_search["trials"]
    assert [(r["stage"], r["trial"]) for r in trials] == [(s, t) for s in (0, 1) for t in range(3)]
    assert {r["epochs"] for r in trials if r["stage"] == 1} == {2}
    assert all(0 <= r["val_acc"] <= 1 for r in trials)
    stage1 = search.Dist("lr", "log", *map(float, serial_search["stages"][1]["lr"][4:].split(",")))
    assert all(stage1.low <= r["params"]["lr"] <= stage1.high for r in trials if r["stage"] == 1)
    assert serial_search["best"] == min(trials, key=search._result_order)


def test_process_pool_gives_the_same_results(serial_search):
    space = search.parse_space(SPACE)
    with cf.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        pooled = search.random_search(space, _base(), trials=3, epochs=1, stages=2, seed=3, executor=pool)
    assert _strip(pooled["trials"]) == _strip(serial_search["trials"])


def test_resume_runs_only_the_missing_trials(serial_search):
    space = search.parse_space(SPACE)
    previous = [r for r in serial_search["trials"] if r["key"] in ("0/0", "0/2", "1/1")]
    new = []
    resumed = search.random_search(space, _base(), trials=3, epochs=1, stages=2, seed=3,
                                   previous=previous, on_result=new.append)
    assert sorted(r["key"] for r in new) == ["0/1", "1/0", "1/2"]
    assert _strip(resumed["trials"]) == _strip(serial_search["trials"])
    with pytest.raises(ValueError, match="different search"):
        search.random_search(space, _base(), trials=3, epochs=1, stages=2, seed=4, previous=previous)


def test_a_failing_trial_is_resubmitted():
    calls = []

    class Flaky(cf.ThreadPoolExecutor):
        def submit(self, fn, *args, **kw):
            calls.append(args[0]["key"])
            if calls.count(args[0]["key"]) == 1 and args[0]["key"] == "0/1":
                return super().submit(_lost_worker)
            return super().submit(fn, *args, **kw)

    space = search.parse_space({**SPACE, "hidden": "8"})
    with Flaky(1) as ex:
        result = search.random_search(space, _base(), trials=2, epochs=1, seed=0, executor=ex)
    assert calls.count("0/1") == 2 and len(result["trials"]) == 2


def _lost_worker():
    raise ConnectionError("worker lost")


def _cli(tmp_path, *extra):
    return ["search", "--trials", "2", "--epochs", "1", "--stages", "2", "--hidden", "16", "--workers", "1",
            "--lr", "log:1e-3,1e-1", "--reg", "log:1e-5,1e-2", "--seed", "5", "--json",
            str(tmp_path / "s.json"), *extra]


def test_command_json_plot_table_and_resume(tmp_path, capsys):
    png = tmp_path / "s.png"
    assert cli.main(_cli(tmp_path, "--plot", str(png))) == 0
    out = capsys.readouterr()
    assert "fastopt train --data digits --hidden 16" in out.out and "--epochs 2" in out.out
    assert out.err.count("trial ") == 4 and png.read_bytes()[:4] == b"\x89PNG"
    saved = json.loads((tmp_path / "s.json").read_text())
    assert saved["complete"] and len(saved["trials"]) == 4 and saved["best"]["val_acc"] > 0
    # simulate an interruption after the first two trials, then resume into the same file
    full = saved["trials"]
    saved.update(trials=full[:2], complete=False)
    (tmp_path / "s.json").write_text(json.dumps(saved))
    assert cli.main(_cli(tmp_path, "--resume", str(tmp_path / "s.json"))) == 0
    out = capsys.readouterr()
    assert out.err.count("trial ") == 2                      # only the missing trials ran
    again = json.loads((tmp_path / "s.json").read_text())
    assert _strip(again["trials"]) == _strip(full)
    # the train command it prints reproduces the best trial's validation accuracy
    cmd = again["train_command"].split()[1:]
    assert cli.main(cmd + ["--quiet"]) == 0
    assert f"best during training {again['best']['val_acc']:.4f}" in capsys.readouterr().out


@pytest.mark.parametrize("extra, message", [
    (["--lr", "log:0,1"], "--lr: log:LO,HI needs 0 < LO"),
    (["--lr", "log:1e-1,1e-5"], "--lr: log:LO,HI needs LO < HI"),
    (["--reg", "normal:0,1"], "unknown distribution 'normal'"),
    (["--dropout", "uniform:0,1"], "--dropout: '0' must be a finite number > 0"),
    (["--trials", "0"], "--trials must be an integer >= 1"),
    (["--json", "/nonexistent/dir/s.json"], "does not exist"),
    (["--plot", "/proc/nope.png"], "cannot write"),
    (["--resume", "/nonexistent.json"], "--resume '/nonexistent.json': cannot read it"),
    (["--workers", "2", "--scheduler", "tcp://127.0.0.1:1"], "not both"),
    (["--data", "cifar10", "--data-dir", "/nonexistent"], "is not an existing folder"),
])
def test_command_bad_input_exit_2_before_training(tmp_path, extra, message, capsys):
    argv = _cli(tmp_path)
    argv = [a for i, a in enumerate(argv) if not (a == "--workers" or argv[i - 1] == "--workers")] + extra
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "s.json").exists()                 # nothing written, nothing trained


def test_scheduler_needs_dask_or_a_reachable_address(capsys):
    # works with and without distributed installed: either way a one-line error and exit code 2
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code = cli.main(["search", "--scheduler", f"tcp://127.0.0.1:{port}", "--connect-timeout", "1"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "cannot connect within 1 s" in err or "needs Dask: pip install 'fastopt[distributed]'" in err


def test_command_refuses_to_resume_a_different_search(tmp_path, capsys):
    assert cli.main(_cli(tmp_path, "--stages", "1")) == 0
    capsys.readouterr()
    argv = _cli(tmp_path, "--stages", "1", "--resume", str(tmp_path / "s.json"))
    argv[argv.index("--seed") + 1] = "6"
    assert cli.main(argv) == 2
    assert "written by a different search" in capsys.readouterr().err


def test_progress_bar_counts_trials_on_a_terminal(monkeypatch, capsys):
    pytest.importorskip("tqdm")
    monkeypatch.setattr("sys.stderr.isatty", lambda: True, raising=False)
    progress = search._Progress(total=3, initial=1, quiet=False)
    assert progress.bar is not None
    for t in range(2):
        progress({"stage": 0, "trial": t, "val_acc": 0.5, "params": {"lr": 1e-3, "reg": 1e-4}})
    assert progress.bar.n == 3
    progress.close()
    assert "3/3" in capsys.readouterr().err


def test_api_bad_arguments():
    space = search.parse_space(SPACE)
    with pytest.raises(TypeError, match="space must be a dict of Dist"):
        search.random_search({"lr": space["lr"]}, _base(), trials=1, epochs=1)
    with pytest.raises(ValueError, match="trials must be >= 1"):
        search.random_search(space, _base(), trials=0, epochs=1)
    with pytest.raises(TypeError, match="executor must be a concurrent.futures.Executor"):
        search.random_search(space, _base(), trials=1, epochs=1, executor=object())
