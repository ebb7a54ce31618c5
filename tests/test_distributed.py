"""fastopt.distributed: data-parallel training, in one process ("serial") and in real MPI jobs
(`mpiexec -n 1..4 --oversubscribe` on this machine, loopback only), which are skipped with the reason
when mpi4py or mpiexec is missing (pip install 'fastopt[mpi]'). Every job has a timeout: a hang fails.
"""
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import fastopt
from fastopt import checkpoint
from fastopt.distributed import DataParallel, RankFailure, shard_bounds, shards_of_rank
from fastopt.distributed.combine import NARROW

PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(fastopt.__file__)))
TIMEOUT = 180      # seconds per MPI job on the loaded 2-core machine; a hang fails the test


# ---------------------------------------------------------------- shards (no MPI)

@pytest.mark.parametrize("n, s", [(1, 1), (7, 3), (64, 8), (1023, 7), (10, 10)])
def test_shard_bounds_cover_the_batch_in_near_equal_pieces(n, s):
    b = shard_bounds(n, s)
    sizes = np.diff(b)
    assert b[0] == 0 and b[-1] == n and len(b) == s + 1
    assert sizes.min() >= 1 and sizes.max() - sizes.min() <= 1


@pytest.mark.parametrize("s", [1, 4, 7, 8, 13])
def test_every_shard_has_exactly_one_rank(s):
    for size in range(1, s + 1):
        owned = [i for r in range(size) for i in shards_of_rank(s, size, r)]
        assert owned == list(range(s))


def test_bad_shard_counts():
    with pytest.raises(ValueError, match="cannot be split into 9"):
        shard_bounds(8, 9)
    with pytest.raises(ValueError, match="shards must be"):
        shard_bounds(8, 0)
    with pytest.raises(TypeError, match="shards must be an int"):
        shard_bounds(8, 2.5)


# ---------------------------------------------------------------- one process, no MPI

def make_model(dtype=np.float64, reg=0.05, reg_type="l2", **kw):
    return fastopt.FullyConnectedNet([9, 7], input_dim=6, num_classes=4, dtype=dtype, rng=3, reg=reg,
                                     reg_type=reg_type, weight_init="he", **kw)


def batch(n=37, seed=0, dtype=np.float64):
    r = np.random.default_rng(seed)
    return r.standard_normal((n, 6)).astype(dtype), r.integers(0, 4, n)


class Recorder:
    """An optimizer stand-in that keeps a copy of the gradients it is given."""

    def __init__(self):
        self.grads = None

    def step(self, grads):
        self.grads = {k: np.array(v) for k, v in grads.items()}

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


@pytest.mark.parametrize("reg_type", ["l2", "l1"])
@pytest.mark.parametrize("shards", [1, 3, 8])
def test_combined_gradient_is_the_whole_batch_gradient(reg_type, shards):
    """Shard sums / N + the regularization once == model.loss on the whole batch (float64)."""
    model = make_model(reg_type=reg_type)
    X, y = batch()
    loss, grads = model.loss(X, y)
    grads = {k: v.copy() for k, v in grads.items()}
    rec = Recorder()
    dp = DataParallel(model, rec, "serial", shards=shards)
    assert dp.step(X, y) == pytest.approx(loss, rel=1e-13)
    for k in grads:
        np.testing.assert_allclose(rec.grads[k], grads[k], rtol=1e-12, atol=1e-15, err_msg=k)
    assert model.reg == 0.05                     # restored after the shard passes


def test_regularization_is_added_once_not_per_shard():
    X, y = batch()
    g = {}
    for reg in (0.0, 0.5):
        rec = Recorder()
        DataParallel(make_model(reg=reg), rec, "serial", shards=8).step(X, y)
        g[reg] = rec.grads
    W1 = make_model().params["W1"]
    np.testing.assert_allclose(g[0.5]["W1"] - g[0.0]["W1"], 0.5 * W1, rtol=1e-10)
    np.testing.assert_array_equal(g[0.5]["b1"], g[0.0]["b1"])     # biases are not regularized


@pytest.mark.parametrize("kw", [{"normalization": "batchnorm"}, {"normalization": "batchnorm", "dropout_keep_ratio": 0.5}])
def test_batchnorm_and_dropout_models_are_trained_through_the_sharded_execution(kw):
    """(Refused before the sharded execution existed.) One serial step with batchnorm == the
    optimizer stepping model.loss's whole-batch gradient; tests/test_distributed_sharded.py has more."""
    model, ref = make_model(**kw), make_model(**kw)
    X, y = batch()
    dp = DataParallel(model, fastopt.SGD(model.params, lr=0.1), "serial", shards=4)
    assert dp.loss.net is not None
    loss = dp.step(X, y)
    if "dropout_keep_ratio" not in kw:
        ref_loss, grads = ref.loss(X, y)
        fastopt.SGD(ref.params, lr=0.1).step(grads)
        assert loss == pytest.approx(ref_loss, rel=1e-12)
        for k in ref.params:
            np.testing.assert_allclose(model.params[k], ref.params[k], rtol=1e-12, atol=1e-13, err_msg=k)
    assert dp.steps == 1 and not np.array_equal(model.params["W1"], make_model(**kw).params["W1"])


def test_layernorm_models_are_accepted():
    model = make_model(normalization="layernorm")
    X, y = batch()
    loss, _ = model.loss(X, y)
    assert DataParallel(model, fastopt.Adam(model.params), "serial").step(X, y) == pytest.approx(loss, rel=1e-12)


@pytest.mark.parametrize("kw, error, match", [
    ({"mode": "slow"}, ValueError, "mode"), ({"shards": 0}, ValueError, "shards"),
    ({"shards": 1.5}, TypeError, "shards"), ({"comm": "world"}, ValueError, "comm")])
def test_bad_arguments(kw, error, match):
    model = make_model()
    kw = {"comm": "serial", **kw}
    with pytest.raises(error, match=match):
        DataParallel(model, fastopt.Adam(model.params), **kw)


def test_not_a_model():
    with pytest.raises(TypeError, match="params"):
        DataParallel(object(), Recorder(), "serial")


def test_a_failing_shard_changes_nothing():
    model = make_model()
    opt = fastopt.Adam(model.params, lr=0.1)
    dp = DataParallel(model, opt, "serial", shards=4)
    X, y = batch()
    y_bad = y.copy()
    y_bad[-1] = 99                               # a label out of range in the last shard only
    before = {k: v.copy() for k, v in model.params.items()}
    with pytest.raises(RankFailure, match=r"rank 0: ValueError: y must hold labels"):
        dp.step(X, y_bad)
    for k, v in model.params.items():
        np.testing.assert_array_equal(v, before[k])
    assert opt.state_dict()["state"][0]["step"] == 0 and dp.steps == 0 and model.reg == 0.05


def test_checkpoint_round_trip(tmp_path):
    X, y = batch()
    model = make_model()
    dp = DataParallel(model, fastopt.Adam(model.params, lr=0.01), "serial", shards=4)
    for _ in range(3):
        dp.step(X, y)
    dp.save_checkpoint(tmp_path / "c.ckpt", extra={"note": [1, 2]})
    dp.step(X, y)
    expected = {k: v.copy() for k, v in model.params.items()}

    model2 = make_model()
    dp2 = DataParallel(model2, fastopt.Adam(model2.params, lr=0.01), "serial", shards=4)
    assert dp2.load_checkpoint(tmp_path / "c.ckpt") == {"note": [1, 2]} and dp2.steps == 3
    dp2.step(X, y)
    for k in expected:
        np.testing.assert_array_equal(model2.params[k], expected[k])


def test_an_unusable_checkpoint_changes_nothing(tmp_path):
    model = make_model()
    dp = DataParallel(model, fastopt.Adam(model.params), "serial", shards=4)
    dp.save_checkpoint(tmp_path / "c.ckpt")
    other = DataParallel(make_model(), fastopt.Adam(make_model().params), "serial", shards=5)
    with pytest.raises(ValueError, match="4 shards"):
        other.load_checkpoint(tmp_path / "c.ckpt")
    checkpoint.save(tmp_path / "x.ckpt", {"format": "something else"})
    with pytest.raises(ValueError, match="not a fastopt.distributed"):
        dp.load_checkpoint(tmp_path / "x.ckpt")
    assert dp.steps == 0


# ---------------------------------------------------------------- real MPI jobs

def _mpiexec():
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        pytest.skip("mpi4py is not installed (pip install 'fastopt[mpi]')")
    here = Path(sys.executable).parent / "mpiexec"
    found = str(here) if here.exists() else shutil.which("mpiexec")
    if found is None:
        pytest.skip("mpiexec is not on PATH (pip install 'fastopt[mpi]' brings Open MPI's)")
    return found


def mpirun(n, *args, timeout=TIMEOUT, pythonpath=None):
    """Run `python args...` on n ranks (`pythonpath`: one more import folder); returns the
    CompletedProcess (a hang fails the test)."""
    path = PACKAGE_PARENT if pythonpath is None else os.pathsep.join([PACKAGE_PARENT, pythonpath])
    env = dict(os.environ, PYTHONPATH=path, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMPI_MCA_rmaps_base_oversubscribe="1")
    cmd = [_mpiexec(), "-n", str(n), "--oversubscribe", sys.executable, *map(str, args)]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=PACKAGE_PARENT)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"MPI job did not finish in {timeout} s (a hang): {cmd}\n{exc.stdout}\n{exc.stderr}")


# The job: train the same model from the same data deterministic and fast, and resume the
# deterministic run at step RESUME_AT from the checkpoint another job (another rank count) wrote.
WORKER = textwrap.dedent('''
    import sys
    import numpy as np
    import fastopt
    from fastopt.distributed import DataParallel, abort_on_error

    STEPS, RESUME_AT, SHARDS = 6, 3, 8

    def setup(mode, dtype, comm):
        model = fastopt.FullyConnectedNet([17, 9], input_dim=12, num_classes=5, dtype=dtype, rng=1,
                                          reg=0.01, weight_init="he")
        opt = fastopt.Adam(model.params, lr=0.01)
        if comm != "serial" and comm.Get_rank() != 0:   # the broadcast must give every rank rank 0's start
            for p in model.params.values():
                p += 1.0
        return model, DataParallel(model, opt, comm, shards=SHARDS, mode=mode)

    def batches(dtype):
        r = np.random.default_rng(7)
        X, y = r.standard_normal((120, 12)).astype(dtype), r.integers(0, 5, 120)
        return [(X[i * 20:(i + 1) * 20 + 3], y[i * 20:(i + 1) * 20 + 3]) for i in range(STEPS)]

    def run(comm, out, ckpt_in=None, ckpt_out=None):
        results = {}
        for dtype in (np.float32, np.float64):
            data = batches(dtype)
            for mode in ("deterministic", "fast"):
                model, dp = setup(mode, dtype, comm)
                for t, (X, y) in enumerate(data):
                    dp.step(X, y)
                    if t + 1 == RESUME_AT and ckpt_out and mode == "deterministic" and dtype is np.float64:
                        dp.save_checkpoint(ckpt_out)
                results.update({f"{mode}/{np.dtype(dtype).name}/{k}": v.copy() for k, v in model.params.items()})
            if ckpt_in and dtype is np.float64:
                model, dp = setup("deterministic", dtype, comm)
                dp.load_checkpoint(ckpt_in)
                for X, y in data[dp.steps:]:
                    dp.step(X, y)
                results.update({f"resumed/{k}": v.copy() for k, v in model.params.items()})
        if comm != "serial":     # every rank must hold bitwise the same parameters
            gathered = comm.allgather(results)
            same = all(all(np.array_equal(g[k], results[k]) for k in results) for g in gathered)
            results["ranks_agree"] = np.array(same)
            results["ranks"] = np.array(comm.Get_size())
            if comm.Get_rank() != 0:
                return
        np.savez(out, **results)

    if __name__ == "__main__":
        from mpi4py import MPI
        args = [a if a != "-" else None for a in sys.argv[1:]]
        abort_on_error(run, MPI.COMM_WORLD, *args)
''')


def write_worker(tmp_path_factory, name, text):
    """A job script `name`.py in a fresh folder (its outputs go beside it)."""
    path = tmp_path_factory.mktemp("mpi") / f"{name}.py"
    path.write_text(text)
    return path


def load_worker(path):
    """A job script imported as a module, to run it in this process ("serial")."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    return write_worker(tmp_path_factory, "dp_worker", WORKER)


@pytest.fixture(scope="module")
def reference(worker):
    """One process summing the same shards (no MPI), and its checkpoint at step RESUME_AT."""
    mod = load_worker(worker)
    out, ckpt = worker.parent / "serial.npz", worker.parent / "serial.ckpt"
    mod.run("serial", out, None, ckpt)
    return dict(np.load(out)), ckpt


@pytest.fixture(scope="module")
def jobs(worker, reference):
    """Jobs on 1, 2, 3 and 4 ranks; the job on n ranks resumes from the checkpoint of the job on
    n - 1 ranks (the serial run's for n = 1): a checkpoint moves between rank counts."""
    results, ckpt_in = {}, reference[1]
    for n in (1, 2, 3, 4):
        out, ckpt_out = worker.parent / f"ranks{n}.npz", worker.parent / f"ranks{n}.ckpt"
        proc = mpirun(n, worker, out, ckpt_in, ckpt_out)
        assert proc.returncode == 0, proc.stderr[-3000:]
        results[n] = dict(np.load(out))
        ckpt_in = ckpt_out
    return results


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_deterministic_mode_is_bitwise_identical_for_any_rank_count(jobs, reference, n):
    ref = reference[0]
    got = jobs[n]
    assert int(got["ranks"]) == n and bool(got["ranks_agree"])
    keys = [k for k in ref if k.startswith("deterministic/")]
    assert len(keys) == 2 * 6
    for k in keys:
        np.testing.assert_array_equal(got[k], ref[k], err_msg=k)
    assert not np.array_equal(got["deterministic/float64/W1"], setup_params()["W1"])   # it trained


def setup_params():
    return fastopt.FullyConnectedNet([17, 9], input_dim=12, num_classes=5, dtype=np.float64, rng=1,
                                     reg=0.01, weight_init="he").params


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_fast_mode_agrees_within_rounding(jobs, reference, n):
    ref, got = reference[0], jobs[n]
    for k in (k for k in ref if k.startswith("fast/")):
        det = ref[k.replace("fast/", "deterministic/")]
        tol = 1e-5 if "float32" in k else 1e-12
        np.testing.assert_allclose(got[k], det, rtol=tol, atol=tol, err_msg=k)


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_a_checkpoint_resumes_on_another_rank_count(jobs, reference, n):
    ref, got = reference[0], jobs[n]
    for k in (k for k in got if k.startswith("resumed/")):
        np.testing.assert_array_equal(got[k], ref["deterministic/float64/" + k[len("resumed/"):]], err_msg=k)


FAILING = textwrap.dedent('''
    import sys
    import numpy as np
    import fastopt
    from mpi4py import MPI
    from fastopt.distributed import DataParallel, abort_on_error

    class Flaky(fastopt.FullyConnectedNet):
        """Fails in its loss on rank 1 from the second step on."""
        calls = 0
        def loss(self, X, y=None):
            Flaky.calls += 1
            if MPI.COMM_WORLD.Get_rank() == 1 and Flaky.calls > 4:
                raise FloatingPointError("shard exploded")
            return super().loss(X, y)

    def run(where):
        model = Flaky([5], input_dim=3, num_classes=2, seed=0)
        dp = DataParallel(model, fastopt.Adam(model.params), shards=4)
        X, y = np.ones((8, 3)), np.arange(8) % 2
        if where == "outside" and MPI.COMM_WORLD.Get_rank() == 1:
            raise KeyError("no such data file")           # outside a step: the others wait in step()
        for _ in range(5):
            dp.step(X, y)
        print("finished", flush=True)

    abort_on_error(run, sys.argv[1])
''')


@pytest.mark.parametrize("where, n", [("step", 2), ("step", 3), ("outside", 2)])
def test_a_failing_rank_ends_the_job_with_a_clear_message(tmp_path, where, n):
    script = tmp_path / "failing.py"
    script.write_text(FAILING)
    proc = mpirun(n, script, where, timeout=120)
    assert proc.returncode != 0 and "finished" not in proc.stdout
    if where == "step":       # every rank reports which rank failed and why, then exits 1
        for r in range(n):
            assert f"rank {r}/{n}: data-parallel step failed on rank 1: FloatingPointError: shard exploded" \
                in proc.stderr, proc.stderr[-3000:]
    else:                     # the failing rank says so, then aborts the whole job
        assert f"rank 1/{n} failed (KeyError: 'no such data file'); aborting the job" in proc.stderr
        assert "MPI_ABORT" in proc.stderr


def test_cli_trains_the_same_on_one_and_two_ranks(tmp_path):
    out = {}
    for n in (1, 2):
        path = tmp_path / f"run{n}.json"
        proc = mpirun(n, "-m", "fastopt.distributed", "train", "--hidden", "32", "--epochs", "1",
                      "--steps", "12", "--batch-size", "32", "--shards", "4", "--reg", "1e-3", "--normalization", "none",
                      "--checkpoint", tmp_path / f"c{n}.ckpt", "--json", path, "--quiet")
        assert proc.returncode == 0, proc.stderr[-3000:]
        out[n] = json.loads(path.read_text())
        assert f"{n} rank(s), deterministic: 12 steps" in proc.stdout
    assert out[1]["final_loss"] == out[2]["final_loss"] and out[1]["val_acc"] == out[2]["val_acc"]
    W = out[2]["n_params"] + 2                 # a row: gradient sum, loss sum, failed flag (float32)
    assert W <= NARROW                         # a narrow row: one Allgatherv of the other rank's 2 shard rows
    assert out[2]["bytes_per_step"] == 4 * 2 * W
    assert out[1]["val_acc"] > 0.3                              # digits, 10 classes: it learned


def test_cli_refuses_what_it_cannot_do():
    for option, message in ((["--lr-schedule", "cosine:T_max=5"], "--lr-schedule is not supported"),
                            (["--shards", "99"], "must be <= --batch-size"),
                            (["--distributed", "quick"], "--distributed must be one of")):
        proc = subprocess.run([sys.executable, "-m", "fastopt.distributed", "train", *option],
                              capture_output=True, text=True, timeout=60, cwd=PACKAGE_PARENT,
                              env=dict(os.environ, PYTHONPATH=PACKAGE_PARENT))
        assert proc.returncode == 2 and message in proc.stderr, (option, proc.stderr)


POOL = textwrap.dedent('''
    import sys
    import numpy as np
    import fastopt
    from mpi4py.futures import MPIPoolExecutor

    def trial(lr):
        """One hyperparameter trial of a search: a few Adam steps on fixed data; the final loss."""
        r = np.random.default_rng(0)
        X, y = r.standard_normal((64, 10)), r.integers(0, 3, 64)
        model = fastopt.FullyConnectedNet([16], input_dim=10, num_classes=3, dtype=np.float64, rng=0)
        opt = fastopt.Adam(model.params, lr=lr)
        for _ in range(20):
            loss, grads = model.loss(X, y)
            opt.step(grads)
        return loss

    if __name__ == "__main__":
        lrs = [1e-4, 1e-3, 1e-2, 3e-2, 1e-1]
        with MPIPoolExecutor() as pool:
            pooled = list(pool.map(trial, lrs))
        assert pooled == [trial(lr) for lr in lrs], (pooled, [trial(lr) for lr in lrs])
        print("pool ok", len(pooled))
''')


def test_search_trials_run_on_mpi_pool_executor(tmp_path):
    """A search's trials as futures on MPI workers (mpi4py.futures), the same results as in-process."""
    script = tmp_path / "pool.py"
    script.write_text(POOL)
    proc = mpirun(3, "-m", "mpi4py.futures", script)
    assert proc.returncode == 0 and "pool ok 5" in proc.stdout, proc.stderr[-3000:]


SEARCH = textwrap.dedent('''
    import json, sys
    from mpi4py.futures import MPIPoolExecutor
    from fastopt import search
    from test_search import SPACE, _base, _strip

    if __name__ == "__main__":
        args = dict(trials=3, epochs=1, stages=2, seed=3)
        with MPIPoolExecutor() as pool:
            pooled = search.random_search(search.parse_space(SPACE), _base(), executor=pool, **args)
        json.dump(_strip(pooled["trials"]), open(sys.argv[1], "w"))
''')


def test_fastopt_search_runs_its_trials_on_mpi_pool_executor(tmp_path):
    """fastopt.search.random_search with executor=MPIPoolExecutor() under `mpiexec -n 3 python -m
    mpi4py.futures` (rank 0 the search, 2 workers): the same trials as the search run in-process."""
    from fastopt import search
    from test_search import SPACE, _base, _strip
    script, out = tmp_path / "search_pool.py", tmp_path / "trials.json"
    script.write_text(SEARCH)
    tests = os.path.dirname(os.path.abspath(__file__))
    proc = mpirun(3, "-m", "mpi4py.futures", script, out, pythonpath=tests)
    assert proc.returncode == 0, proc.stderr[-3000:]
    local = search.random_search(search.parse_space(SPACE), _base(), trials=3, epochs=1, stages=2, seed=3)
    assert json.loads(out.read_text()) == json.loads(json.dumps(_strip(local["trials"])))


def test_fastopt_train_offers_the_distributed_options():
    """fastopt train's parser has configure_distributed's options, off by default; this module's
    parser is the same one, data-parallel by default, and parses an argv the same way."""
    import argparse
    from fastopt import train_cli
    from fastopt.distributed import cli
    train = argparse.ArgumentParser()
    train_cli.configure(train)
    dist = argparse.ArgumentParser()
    cli.configure(dist)
    argv = ["--shards", "4", "--steps", "3", "--distributed", "fast"]
    assert vars(train.parse_args(argv)) == vars(dist.parse_args(argv))
    assert train.parse_args([]).distributed is None    # fastopt train stays single-process by default
    assert dist.parse_args([]).distributed == "deterministic"


@pytest.mark.parametrize("name", __import__("fastopt.train_cli", fromlist=["OPTIMIZERS"]).OPTIMIZERS)
def test_every_fastopt_train_optimizer_trains_data_parallel(name):
    """The data-parallel CLI builds `fastopt train --optimizer NAME`'s optimizer the Solver's way:
    one serial step equals the Solver's optimizer stepping the whole batch's gradient."""
    from fastopt.distributed.cli import make_optimizer
    from fastopt.solver import _registry
    from fastopt.train_cli import _class_config, update_rule
    config = {"learning_rate": 1e-2}
    X, y = batch()
    model, ref = make_model(), make_model()
    dp = DataParallel(model, make_optimizer(name, model.params, config), "serial", shards=1)
    rule = update_rule(name, config)
    opt = _registry.make_optimizer(_registry.update_rules()[rule] if isinstance(rule, str) else rule,
                                   ref.params, _class_config(name, config))
    dp.step(X, y)
    opt.step(ref.loss(X, y)[1])
    for k in ref.params:
        np.testing.assert_allclose(model.params[k], ref.params[k], rtol=1e-12, atol=1e-15, err_msg=k)
    assert not np.array_equal(model.params["W1"], make_model().params["W1"])


def test_class_options_reach_the_data_parallel_optimizer():
    from fastopt.distributed.cli import make_optimizer
    model = make_model()
    opt = make_optimizer("adam", model.params, {"learning_rate": 1e-3, "ema": 0.5, "max_grad_norm": 1.0})
    assert isinstance(opt, fastopt.optim.Adam) and opt.ema == 0.5 and opt.max_grad_norm == 1.0


def test_cli_with_ema_reports_the_accuracy_of_the_averaged_weights(monkeypatch):
    import argparse
    from fastopt.distributed import cli
    from fastopt.train_cli import load_data
    built = []
    real = cli.make_optimizer
    monkeypatch.setattr(cli, "make_optimizer", lambda *a: built.append(real(*a)) or built[-1])
    parser = argparse.ArgumentParser()
    cli.configure(parser)
    cfg = cli.parse(parser.parse_args(["--optimizer", "adam", "--ema", "0.9", "--hidden", "16", "--epochs", "1",
                                       "--steps", "4", "--batch-size", "32", "--shards", "2", "--quiet",
                                       "--normalization", "none"]))
    summary, model = cli.train(cfg, "serial")
    data = load_data(cfg)
    acc = lambda: float(np.mean(np.argmax(model.loss(data["X_val"]), axis=1) == data["y_val"]))
    trained = acc()
    with built[0].averaged():
        averaged = acc()
    assert summary["val_acc"] == averaged and averaged != trained
