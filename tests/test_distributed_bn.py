"""Batchnorm and dropout data-parallel on real MPI ranks (`mpiexec -n 1..4 --oversubscribe`), through
``for_solver`` in a minimal Solver-like loop, and `fastopt train --distributed`'s run_distributed.
Skipped with the reason when mpi4py or mpiexec is missing (pip install 'fastopt[mpi]')."""
import argparse
import json
import textwrap

import numpy as np
import pytest

from fastopt import checkpoint
from test_distributed import load_worker, mpirun, write_worker
from test_distributed_sharded import full_batch_reference, shard_masks

# The job: train a batchnorm model, with and without dropout, in both modes and dtypes, the way a
# Solver with comm= does (for_solver, broadcast, loss, optimizer step); rank 0 alone writes the file.
WORKER = textwrap.dedent('''
    import sys
    import numpy as np
    import fastopt
    from fastopt.distributed import abort_on_error, for_solver

    STEPS, SHARDS, SEED = 5, 8, 3

    def make_model(dtype, keep):
        return fastopt.FullyConnectedNet([17, 9], input_dim=12, num_classes=5, dtype=dtype, rng=1, reg=0.01,
                                         weight_init="he", normalization="batchnorm", dropout_keep_ratio=keep)

    def make_optimizer(model):
        # SGD, not Adam: the biases before batchnorm cancel in it, their gradient is rounding noise,
        # which Adam would scale up to full steps (and so to different parameters in different modes)
        return fastopt.SGD(model.params, lr=0.05, momentum=0.9)

    def batches(dtype):
        r = np.random.default_rng(7)
        X, y = (r.standard_normal((120, 12)) * 1.5 + 0.3).astype(dtype), r.integers(0, 5, 120)
        return [(X[i * 20:(i + 1) * 20 + 3], y[i * 20:(i + 1) * 20 + 3]) for i in range(STEPS)]

    def state(model):
        out = {k: v.copy() for k, v in model.params.items()}
        for i, p in enumerate(model.bn_params):
            out[f"running_mean{i}"], out[f"running_var{i}"] = p["running_mean"].copy(), p["running_var"].copy()
        return out

    def run(comm, out):
        results = {}
        for dtype in (np.float32, np.float64):
            for keep in (1.0, 0.7):
                for mode in ("deterministic", "fast"):
                    model = make_model(dtype, keep)
                    if comm != "serial" and comm.Get_rank() != 0:   # broadcast gives every rank rank 0's start
                        for p in model.params.values():
                            p += 1.0
                    dist = for_solver(model, comm, shards=SHARDS, mode=mode, seed=SEED)
                    opt = make_optimizer(model)
                    dist.broadcast(opt)
                    losses = []
                    for X, y in batches(dtype):
                        loss, grads = dist.loss(X, y)
                        opt.step(grads)
                        losses.append(loss)
                    tag = f"{mode}/{np.dtype(dtype).name}/{keep}/"
                    results.update({tag + k: v for k, v in state(model).items()})
                    results[tag + "losses"] = np.array(losses)
        if comm != "serial":     # every rank must hold bitwise the same parameters
            gathered = comm.allgather(results)
            results["ranks_agree"] = np.array(all(all(np.array_equal(g[k], results[k]) for k in results)
                                                  for g in gathered))
            results["ranks"] = np.array(comm.Get_size())
            if not dist.is_root:
                return
        np.savez(out, **results)

    if __name__ == "__main__":
        from mpi4py import MPI
        abort_on_error(run, MPI.COMM_WORLD, sys.argv[1])
''')


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    return write_worker(tmp_path_factory, "bn_worker", WORKER)


@pytest.fixture(scope="module")
def reference(worker):
    """One process summing the same shards (no MPI)."""
    out = worker.parent / "serial.npz"
    load_worker(worker).run("serial", out)
    return dict(np.load(out))


@pytest.fixture(scope="module")
def jobs(worker):
    results = {}
    for n in (1, 2, 3, 4):
        out = worker.parent / f"ranks{n}.npz"
        proc = mpirun(n, worker, out)
        assert proc.returncode == 0, proc.stderr[-3000:]
        results[n] = dict(np.load(out))
    return results


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_deterministic_batchnorm_and_dropout_are_bitwise_identical_for_any_rank_count(jobs, reference, n):
    got = jobs[n]
    assert int(got["ranks"]) == n and bool(got["ranks_agree"])
    keys = [k for k in reference if k.startswith("deterministic/")]
    assert len(keys) == 2 * 2 * (10 + 4 + 1)       # dtypes x dropout x (params, running stats, losses)
    for k in keys:
        np.testing.assert_array_equal(got[k], reference[k], err_msg=k)


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_fast_mode_agrees_within_rounding(jobs, reference, n):
    for k in (k for k in reference if k.startswith("fast/")):
        det = reference[k.replace("fast/", "deterministic/")]
        tol = 2e-4 if "float32" in k else 1e-10
        np.testing.assert_allclose(jobs[n][k], det, rtol=tol, atol=tol, err_msg=k)


def _plain_training(mod, dtype, keep):
    """ONE process training on the whole global batch: the plain model.loss (batchnorm with the batch's
    statistics), or with dropout the full-batch reference with the masks of (seed, step, shard)."""
    model = mod.make_model(dtype, keep)
    opt = mod.make_optimizer(model)
    losses = []
    for t, (X, y) in enumerate(mod.batches(dtype)):
        if keep == 1:
            loss, grads = model.loss(X, y)
        else:
            loss, grads = full_batch_reference(model, X, y, shard_masks(model, len(y), mod.SHARDS, mod.SEED, t))
        opt.step(grads)
        losses.append(loss)
    return model, losses


@pytest.mark.parametrize("keep", [1.0, 0.7])
def test_data_parallel_training_equals_one_process_on_the_whole_batch(jobs, worker, keep):
    mod = load_worker(worker)
    model, losses = _plain_training(mod, np.float64, keep)
    got = jobs[3]
    tag = f"deterministic/float64/{keep}/"
    np.testing.assert_allclose(got[tag + "losses"], losses, rtol=1e-10)
    expected = mod.state(model) if keep == 1 else dict(model.params)   # full_batch_reference keeps no running stats
    for k, v in expected.items():
        np.testing.assert_allclose(got[tag + k], v, rtol=1e-9, atol=1e-11, err_msg=k)
    assert not np.allclose(got[tag + "W1"], mod.make_model(np.float64, keep).params["W1"])   # it trained


def test_float32_batchnorm_training_stays_close_to_one_process(jobs, worker):
    mod = load_worker(worker)
    model, losses = _plain_training(mod, np.float32, 1.0)
    got = jobs[2]
    np.testing.assert_allclose(got["deterministic/float32/1.0/losses"], losses, rtol=1e-4)
    for k, v in mod.state(model).items():
        np.testing.assert_allclose(got["deterministic/float32/1.0/" + k], v, rtol=1e-3, atol=1e-4, err_msg=k)


# ---------------------------------------------------------------- fastopt train --distributed

def _train_cli(n, tmp_path, name, *extra):
    """`fastopt train --distributed ...` under mpiexec (the command's own entry point, so its wiring
    to run_distributed is what runs), on the digits with the default model (batchnorm)."""
    script = tmp_path / "train_cli_job.py"
    script.write_text(textwrap.dedent('''
        import sys
        from fastopt import cli
        sys.exit(cli.main(["train", *sys.argv[1:]]))
    '''))
    out = tmp_path / f"{name}.json"
    proc = mpirun(n, script, "--distributed", "deterministic", "--hidden", "32,16", "--batch-size", "32",
                  "--shards", "4", "--dropout", "0.9", "--json", out, "--quiet", *extra)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text()), proc


def test_fastopt_train_distributed_runs_checkpoints_and_resumes_on_another_rank_count(tmp_path):
    straight, proc = _train_cli(1, tmp_path, "straight", "--steps", "16")
    assert "1 rank(s), deterministic: 16 steps" in proc.stdout
    assert straight["config"]["normalization"] == "batchnorm" and straight["config"]["dropout_keep_ratio"] == 0.9
    first, _ = _train_cli(2, tmp_path, "first", "--steps", "9", "--checkpoint", tmp_path / "c.ckpt")
    saved = checkpoint.load(tmp_path / "c.ckpt")            # rank 0 wrote it
    assert saved["format"] == "fastopt.distributed/2" and saved["steps"] == 9
    assert len(saved["state"]) == 10 + 4                    # W, b, gamma, beta x 2, W3, b3; running stats
    resumed, proc = _train_cli(1, tmp_path, "resumed", "--steps", "16", "--resume", tmp_path / "c.ckpt")
    assert resumed["steps"] == 16 and resumed["steps_this_run"] == 7
    assert resumed["final_loss"] == straight["final_loss"] and resumed["val_acc"] == straight["val_acc"]
    on_two, _ = _train_cli(2, tmp_path, "on_two", "--steps", "16")
    assert on_two["final_loss"] == straight["final_loss"] and on_two["test_acc"] == straight["test_acc"]
    assert on_two["bytes_per_step"] > 0 and straight["val_acc"] > 0.3      # digits, 10 classes: it learned


def test_the_distributed_options_are_off_in_plain_fastopt_train():
    from fastopt.train_cli import configure
    parser = argparse.ArgumentParser()
    configure(parser)                 # fastopt train's options include configure_distributed's
    args = parser.parse_args([])
    assert args.distributed is None and args.normalization == "batchnorm"


FAILING = textwrap.dedent('''
    import sys
    import types
    import numpy as np
    import fastopt
    from mpi4py import MPI
    from fastopt.distributed import abort_on_error, for_solver, sharded

    def run(where):
        """`where`: the layer function that raises on the last rank only (after some of the step's
        collectives: softmax_loss after both batchnorm forward combines)."""
        model = fastopt.FullyConnectedNet([6, 5], input_dim=3, num_classes=2, rng=0, normalization="batchnorm",
                                          dropout_keep_ratio=0.8)
        dist = for_solver(model, MPI.COMM_WORLD, shards=4)
        X, y = np.ones((8, 3)) + np.arange(8)[:, None], np.arange(8) % 2
        if MPI.COMM_WORLD.Get_rank() == MPI.COMM_WORLD.Get_size() - 1:
            def boom(*args):
                raise FloatingPointError("loss exploded")
            sharded.layers = types.SimpleNamespace(**{**vars(sharded.layers), where: boom})
        before = model.bn_params[0]["running_mean"].copy()
        try:
            dist.loss(X, y)
        finally:
            unchanged = np.array_equal(model.bn_params[0]["running_mean"], before)
            print(f"rank {MPI.COMM_WORLD.Get_rank()} steps {dist.steps} unchanged {unchanged}", flush=True)
        print("finished", flush=True)

    abort_on_error(run, sys.argv[1])
''')


@pytest.mark.parametrize("where, n", [("softmax_loss", 2), ("softmax_loss", 3), ("affine_forward", 2)])
def test_a_rank_failing_inside_the_sharded_batchnorm_step_ends_the_job_on_every_rank(tmp_path, where, n):
    """The step has five collectives; the last rank fails between the second and the third (its
    softmax_loss raises) or before the first (its first affine_forward), the others are already
    waiting in the next one: every rank raises RankFailure there, names the failing rank and exits 1
    with its running statistics and step count unchanged (no hang)."""
    script = tmp_path / "failing_bn.py"
    script.write_text(FAILING)
    proc = mpirun(n, script, where, timeout=120)
    assert proc.returncode != 0 and "finished" not in proc.stdout
    for r in range(n):
        assert (f"rank {r}/{n}: data-parallel step failed on rank {n - 1}: FloatingPointError: loss exploded"
                in proc.stderr), proc.stderr[-3000:]
        assert f"rank {r} steps 0 unchanged True" in proc.stdout
