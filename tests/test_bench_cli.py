"""`fastopt bench` and `fastopt info` from the command-line entry point. No timing assertions: only
that the commands run, report what they promise and refuse bad options."""
import importlib.util
import json
import math
import re

import pytest

import fastopt
from fastopt import cli
from fastopt.bench import cases, suites, timing


def run_cli(argv):
    """Exit code of `fastopt <argv>`, whether it returns or argparse exits."""
    try:
        return cli.main(argv)
    except SystemExit as exc:
        return exc.code


ROW_KEYS = {"suite", "kernel", "size", "elements", "dtype", "bytes_moved", "fastopt", "numpy", "torch",
            "fastopt_s", "numpy_s", "torch_s", "speedup", "torch_ratio", "gbps", "copy_fraction", "torch_impl",
            "fastopt_median_s", "numpy_median_s", "torch_median_s", "speedup_median", "speedup_range",
            "torch_ratio_median", "torch_ratio_range", "roofline", "roofline_s", "roofline_median_s",
            "roofline_pattern", "roofline_fraction", "others"}


@pytest.fixture(scope="module")
def quick_optim_json(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "optim.json"
    code = cli.main(["bench", "--quick", "--suite", "optim", "--no-torch", "--json", str(path)])
    return code, json.loads(path.read_text())


def test_bench_quick_optim_writes_rows(quick_optim_json):
    code, doc = quick_optim_json
    assert code == 0
    assert doc["fastopt_version"] == fastopt.__version__
    assert doc["copy_bandwidth_gbps"] > 0
    assert doc["machine"]["backend"] == "cython"
    assert "OPENBLAS_CORETYPE" in doc["machine"]["env"]
    rows = doc["rows"]
    # every optimizer at both quick sizes, float32 only by default
    assert {(r["kernel"], r["size"]) for r in rows} == {
        (k, s) for k in suites.OPTIMIZERS for s in ("10k", "100k")}
    for row in rows:
        assert ROW_KEYS <= set(row)
        assert row["suite"] == "optim" and row["dtype"] == "float32"
        for impl in ("fastopt", "numpy"):
            assert 0 < row[impl]["min_s"] <= row[impl]["median_s"]
            assert row[impl]["repeats"] == 3 and row[impl]["number"] >= 1
        assert row["torch"] is None and row["torch_ratio"] is None
        # the ratios are taken from the min times (their formulas: test_bench_row_known_answer)
        assert row["fastopt_s"] == row["fastopt"]["min_s"] and row["numpy_s"] == row["numpy"]["min_s"]
        # the roofline: a stream loop over the arrays the step reads and writes, timed in the run
        moved = row["bytes_moved"] // (4 * row["elements"])
        assert row["roofline_pattern"] == {"reads": (moved + 1) // 2, "writes": (moved - 1) // 2}
        assert row["roofline"]["repeats"] == 3 and row["roofline_fraction"] > 0
        lo, hi = row["speedup_range"]
        assert 0 < lo <= row["speedup_median"] <= hi
        assert row["speedup"] > 0 and row["gbps"] > 0


def test_bench_row_known_answer():
    # Worked by hand: fastopt 2 ms, NumPy 8 ms, torch 3 ms, 1 MB moved, copy probe 2 GB/s.
    from fastopt.bench import report
    case = cases.Case(kernel="adam", size="1M", elements=10**6, dtype="float32", bytes_moved=10**6,
                      fastopt=lambda: None, numpy=lambda: None, torch=lambda: None, torch_impl="fused")
    t = {"fastopt": timing.Timing(0.002, 0.003, 3, 1), "numpy": timing.Timing(0.008, 0.009, 3, 1),
         "torch": timing.Timing(0.003, 0.004, 3, 1)}
    row = report.make_row("optim", case, t, copy_bandwidth=2e9)
    assert row["speedup"] == pytest.approx(4.0, rel=1e-12)
    assert row["torch_ratio"] == pytest.approx(1.5, rel=1e-12)
    assert row["gbps"] == pytest.approx(0.5, rel=1e-12)          # 1e6 bytes / 2e-3 s
    assert row["copy_fraction"] == pytest.approx(0.25, rel=1e-12)
    assert row["fastopt_s"] == 0.002 and row["numpy"]["median_s"] == 0.009
    no_baseline = report.make_row("optim", case, {"fastopt": t["fastopt"]}, copy_bandwidth=2e9)
    assert no_baseline["speedup"] is None and no_baseline["torch_ratio"] is None


def test_bench_ratios_are_paired_per_repeat():
    """Medians of the per-repeat ratios and their range; the roofline share from the medians."""
    from fastopt.bench import report
    case = cases.Case(kernel="adam", size="1k", elements=1000, dtype="float32", bytes_moved=None,
                      fastopt=lambda: None, numpy=lambda: None, access=(4, 3), extra={"numba": lambda: None})
    t = {"fastopt": timing.Timing(1.0, 2.0, 3, 1, (1.0, 2.0, 4.0)),
         "numpy": timing.Timing(3.0, 8.0, 3, 1, (3.0, 8.0, 8.0)),        # ratios 3, 4, 2
         "numba": timing.Timing(0.5, 1.0, 3, 1, (0.5, 1.0, 4.0)),        # ratios 0.5, 0.5, 1
         "roofline": timing.Timing(0.5, 0.5, 3, 1, (0.5, 0.5, 0.5))}
    row = report.make_row("small", case, t, copy_bandwidth=1e9)
    assert row["speedup_median"] == 3.0 and row["speedup_range"] == [2.0, 4.0]
    assert row["numba_ratio_median"] == 0.5 and row["numba_ratio_range"] == [0.5, 1.0]
    assert row["roofline_fraction"] == 0.25 and row["roofline_pattern"] == {"reads": 4, "writes": 3}
    assert row["others"] == "numba 0.50x" and row["torch_ratio_median"] is None
    line = report.table_row(row)
    assert "3.00x [2.00-4.00]" in line and "25%" in line and "numba 0.50x" in line


def test_bench_small_suite_quick(tmp_path):
    path = tmp_path / "small.json"
    code = cli.main(["bench", "--quick", "--suite", "small", "--no-torch", "--threads", "1", "--repeat", "2",
                     "--json", str(path)])
    assert code == 0
    rows = {r["kernel"]: r for r in json.loads(path.read_text())["rows"]}
    assert set(rows) == {"digits step", "adam 20 tensors"}
    digits, tensors = rows["digits step"], rows["adam 20 tensors"]
    assert digits["fastopt_median_s"] > 0 and digits["numpy_median_s"] > 0 and digits["speedup_median"] > 0
    assert digits["roofline"] is None and digits["torch"] is None
    assert tensors["roofline_pattern"] == {"reads": 4, "writes": 3} and tensors["roofline_fraction"] > 0
    assert tensors["bytes_moved"] == 7 * 4 * 20 * 1000
    assert (tensors.get("numba") is not None) == (importlib.util.find_spec("numba") is not None)


def test_stream_roofline_times_the_case_pattern():
    from fastopt.bench import runner
    case = cases.Case(kernel="k", size="7", elements=7, dtype="float64", bytes_moved=None,
                      fastopt=lambda: None, access=(2, 1))
    assert runner.roofline(case, 1)() == 14.0     # two arrays of ones read: checksum 2 * 7


def test_bench_bytes_moved_formulas(quick_optim_json):
    rows = {(r["kernel"], r["elements"]): r for r in quick_optim_json[1]["rows"]}
    assert rows[("adam", 10_000)]["bytes_moved"] == 7 * 4 * 10_000
    assert rows[("sgd-momentum", 100_000)]["bytes_moved"] == 5 * 4 * 100_000


def test_bench_prints_table_and_header(capsys):
    assert cli.main(["bench", "--quick", "--suite", "optim", "--no-torch", "--sizes", "1000",
                     "--repeat", "1", "--dtype", "float64"]) == 0
    out = capsys.readouterr().out
    assert "copy bandwidth" in out and "OPENBLAS_CORETYPE=" in out
    assert "speedup" in out and "GB/s" in out
    table = [line for line in out.splitlines() if line.startswith("adam ")]
    assert len(table) == 1 and "1k" in table[0] and "float64" in table[0]


def test_bench_norm_quick_rows(tmp_path):
    path = tmp_path / "norm.json"
    assert cli.main(["bench", "--quick", "--suite", "norm", "--no-torch", "--repeat", "1",
                     "--json", str(path)]) == 0
    rows = json.loads(path.read_text())["rows"]
    kernels = {r["kernel"] for r in rows}
    assert kernels == {f"{k} {p}" for k in ("batchnorm", "layernorm", "spatial batchnorm")
                       for p in ("fwd", "bwd", "fwd+bwd")}
    for row in rows:
        passes = {"fwd": 3, "bwd": 5, "fwd+bwd": 8}[row["kernel"].rsplit(" ", 1)[1]]
        assert row["bytes_moved"] == passes * 4 * row["elements"]
        assert row["fastopt_s"] > 0 and row["numpy_s"] > 0


def test_bench_with_torch(tmp_path):
    pytest.importorskip("torch")
    path = tmp_path / "t.json"
    assert cli.main(["bench", "--quick", "--suite", "optim", "--sizes", "1000", "--repeat", "1",
                     "--threads", "1", "--json", str(path)]) == 0
    rows = json.loads(path.read_text())["rows"]
    # Every rule torch has (Lion it has not) is compared with its best CPU path.
    with_torch = {k for k, case in suites.OPTIMIZERS.items() if case[3] is not None}
    assert {r["kernel"] for r in rows if r["torch_s"] is not None} == with_torch
    rows = [r for r in rows if r["kernel"] in with_torch]
    assert rows and all(r["torch_s"] > 0 and r["torch_impl"] in ("fused", "foreach", "for-loop") for r in rows)
    assert all(r["torch_ratio"] == pytest.approx(r["torch_s"] / r["fastopt_s"]) for r in rows)


def test_bench_plot_writes_png(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "speedup.png"
    assert cli.main(["bench", "--quick", "--suite", "optim", "--no-torch", "--repeat", "1",
                     "--plot", str(path)]) == 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_restores_backend_and_threads():
    fastopt.set_num_threads(1)
    assert cli.main(["bench", "--quick", "--suite", "optim", "--no-torch", "--sizes", "100",
                     "--repeat", "1", "--threads", "2"]) == 0
    assert fastopt.get_num_threads() == 1 and fastopt.backend() == "cython"


@pytest.mark.parametrize("argv, fragment", [
    (["--suite", "nope"], "invalid choice"),
    (["--threads", "0"], "--threads must be >= 1"),
    (["--repeat", "0"], "--repeat must be >= 1"),
    (["--sizes", "10k,zero"], "--sizes"),
    (["--dtype", "float16"], "invalid choice"),
])
def test_bench_bad_options_exit_2(argv, fragment, capsys):
    assert run_cli(["bench", "--quick"] + argv) == 2
    captured = capsys.readouterr()
    assert fragment in captured.err
    assert "kernel" not in captured.out  # refused before anything ran


def test_bench_unwritable_json_path_exits_2_before_running(tmp_path, capsys):
    target = tmp_path / "missing-folder" / "out.json"
    assert run_cli(["bench", "--quick", "--json", str(target)]) == 2
    captured = capsys.readouterr()
    assert "does not exist" in captured.err and "--json" in captured.err
    assert captured.out == "" and not target.exists()
    assert run_cli(["bench", "--quick", "--json", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err


def test_bench_plot_without_matplotlib_exits_2(tmp_path, capsys, monkeypatch):
    import importlib.util
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "matplotlib" else real_find_spec(name, *a))
    assert run_cli(["bench", "--quick", "--plot", str(tmp_path / "p.png")]) == 2
    assert "matplotlib" in capsys.readouterr().err


def test_missing_suite_module_is_reported(monkeypatch, capsys):
    monkeypatch.setitem(cases.SUITES, "optim", "fastopt.bench.no_such_module:cases")
    with pytest.raises(cases.SuiteUnavailable, match="no_such_module"):
        cases.load_suite("optim")
    # named explicitly: an error; as part of "all": a note, and the other suites still run
    assert run_cli(["bench", "--quick", "--suite", "optim"]) == 2
    assert "not installed" in capsys.readouterr().err
    monkeypatch.setitem(cases.SUITES, "norm", "fastopt.bench.no_such_module:cases")
    monkeypatch.setitem(cases.SUITES, "mlp", "fastopt.bench.no_such_module:cases")
    assert run_cli(["bench", "--quick", "--no-torch"]) == 0
    out = capsys.readouterr().out
    assert out.count("no_such_module, which is not installed; skipped") == 3


def test_copy_bandwidth_probe_is_positive_finite():
    bandwidth = timing.copy_bandwidth(nbytes=2**20, repeat=3)
    assert math.isfinite(bandwidth) and bandwidth > 0


def test_measure_interleaves_and_counts_calls():
    calls = []
    result = timing.measure({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                            repeat=4, min_time=0.0, before=lambda name: calls.append(name.upper()))
    assert set(result) == {"a", "b"}
    assert all(t.number == 1 and t.repeats == 4 and t.min <= t.median for t in result.values())
    timed = [c for c in calls if c.isupper()]
    assert timed[2:] == ["A", "B", "B", "A", "A", "B", "B", "A"]  # after calibration, rotated order
    with pytest.raises(ValueError, match="repeat"):
        timing.measure({"a": lambda: None}, repeat=0, min_time=0.0)


@pytest.mark.parametrize("text, value", [("10k", 10_000), ("1M", 1_000_000), ("16M", 16_000_000),
                                         ("2500", 2500)])
def test_size_labels_round_trip(text, value):
    assert cases.parse_size(text) == value
    assert cases.size_label(value) == text


def test_info_prints_version_and_backend(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    # The labels are padded to the longest one, which depends on the environment variables set
    assert re.search(rf"^fastopt: +{re.escape(fastopt.__version__)} ", out, re.M), out
    assert "backend:" in out and "cython" in out
    assert "OpenMP:" in out and "NumPy:" in out and "instruction sets:" in out


def test_info_json(capsys):
    assert cli.main(["info", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["fastopt_version"] == fastopt.__version__
    assert record["backend"] == fastopt.backend()
    assert record["threads"] == fastopt.get_num_threads()
    assert isinstance(record["openmp"], bool) and isinstance(record["simd"], list)
    assert record["numpy_version"] and record["python"]


def fake_mlp_cases(config):
    """A suite shaped like the mlp one: one size, no bytes formula; counts which backend each call saw."""
    counts = {}

    def record(impl):
        key = f"{impl} ran on {fastopt.backend()}"
        counts[key] = counts.get(key, 0) + 1

    yield cases.Case(kernel="mlp train step", size="8-4-2 b4", elements=4, dtype="float32",
                     bytes_moved=None, fastopt=lambda: record("fastopt"), numpy=lambda: record("numpy"),
                     notes={"counts": counts})


def test_registered_suite_plugs_in(monkeypatch, tmp_path):
    monkeypatch.setitem(cases.SUITES, "mlp", f"{__name__}:fake_mlp_cases")
    path = tmp_path / "mlp.json"
    argv = ["bench", "--quick", "--suite", "mlp", "--no-torch", "--repeat", "2", "--json", str(path)]
    if importlib.util.find_spec("matplotlib"):
        argv += ["--plot", str(tmp_path / "mlp.png")]
    assert cli.main(argv) == 0
    (row,) = json.loads(path.read_text())["rows"]
    assert row["suite"] == "mlp" and row["gbps"] is None and row["copy_fraction"] is None
    assert row["speedup"] > 0 and row["torch"] is None
    # the runner selected the compiled backend for fastopt and the NumPy one for numpy, every call
    assert set(row["note_counts"]) == {"fastopt ran on cython", "numpy ran on numpy"}


def test_bench_without_compiled_core_exits_2(monkeypatch, capsys):
    def no_core(name):
        raise ImportError("the compiled core is not built")
    monkeypatch.setattr(fastopt, "set_backend", no_core)
    assert run_cli(["bench", "--quick", "--suite", "optim"]) == 2
    assert "compiled core is not built" in capsys.readouterr().err
