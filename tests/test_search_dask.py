"""fastopt search on a real Dask cluster on loopback: a LocalCluster, and the `dask scheduler` /
`dask worker` commands. Same results as the local pool; a worker killed mid-search loses no finished
trial and its trial runs again. Needs `pip install 'dask[distributed]'` (fastopt[distributed])."""
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from fastopt import cli, search

distributed = pytest.importorskip(
    "distributed", reason="Dask is not installed: pip install 'dask[distributed]' (fastopt[distributed]) "
                          "to run the cluster tests")

pytestmark = pytest.mark.filterwarnings("ignore")

from test_search import SPACE, _base, _strip  # noqa: E402  (after the skip)

DASK = str(Path(sys.executable).with_name("dask"))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def reference():
    """The search of tests/test_search.py run here, one trial after the other."""
    return search.random_search(search.parse_space(SPACE), _base(), trials=3, epochs=1, stages=2, seed=3)


def test_local_cluster_gives_the_same_results(reference):
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster, set_as_default=False) as client:
        result = search.random_search(search.parse_space(SPACE), _base(), trials=3, epochs=1, stages=2,
                                      seed=3, executor=client.get_executor(pure=False))
    assert _strip(result["trials"]) == _strip(reference["trials"])


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory):
    """`dask scheduler` and two `dask worker` processes (no nanny: a killed worker stays dead)."""
    if not os.path.exists(DASK):
        pytest.skip(f"no dask command beside {sys.executable}")
    tmp = tmp_path_factory.mktemp("dask")
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([DASK, "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--no-dashboard"], cwd=tmp, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    workers = {}
    try:
        for name in ("w0", "w1"):
            p = subprocess.Popen([DASK, "worker", address, "--nthreads", "1", "--no-nanny", "--name", name,
                                  "--no-dashboard", "--host", "127.0.0.1"], cwd=tmp, env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(p)
            workers[name] = p
        with distributed.Client(address, timeout=30, set_as_default=False) as client:
            client.wait_for_workers(2, timeout=60)
        yield address, workers
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


def test_dask_commands_cluster_same_results_through_the_command_line(dask_cluster, tmp_path, capsys):
    address, _ = dask_cluster
    common = ["search", "--trials", "2", "--epochs", "1", "--stages", "2", "--hidden", "16",
              "--lr", "log:1e-3,1e-1", "--reg", "log:1e-5,1e-2", "--seed", "5", "--quiet"]
    assert cli.main(common + ["--workers", "1", "--json", str(tmp_path / "pool.json")]) == 0
    assert cli.main(common + ["--scheduler", address, "--json", str(tmp_path / "dask.json")]) == 0
    import json
    pool = json.loads((tmp_path / "pool.json").read_text())
    dask = json.loads((tmp_path / "dask.json").read_text())
    assert _strip(dask["trials"]) == _strip(pool["trials"])
    assert dask["train_command"] == pool["train_command"]


def test_killed_worker_loses_no_finished_trial_and_its_trial_is_retried(dask_cluster, reference):
    address, workers = dask_cluster
    space = search.parse_space(SPACE)
    # Trials of ~0.5 s each here (12 epochs took 45 ms: the search then finished between two polls
    # below, and no worker was ever seen busy), so a busy worker is there to be killed.
    long = dict(trials=6, epochs=150, stages=1, seed=11)
    expected = search.random_search(space, _base(), **long)
    seen, errors = [], []
    client = distributed.Client(address, timeout=30, set_as_default=False)
    try:
        def run():
            try:
                search.random_search(space, _base(), executor=client.get_executor(pure=False),
                                     on_result=seen.append, **long)
            except Exception as exc:  # noqa: BLE001 - reported by the assertion below
                errors.append(exc)

        thread = threading.Thread(target=run)
        thread.start()
        # A worker busy with a trial, after >= 1 finished. The deadline is generous: on a loaded machine
        # (a CI run beside other jobs) the first result once took long enough that a 60 s wait failed.
        deadline = time.monotonic() + 180
        victim = running = None
        processing = {}
        while time.monotonic() < deadline and victim is None and thread.is_alive():
            if seen:
                processing = client.processing()
                names = {addr: info.get("name") for addr, info in client.scheduler_info()["workers"].items()}
                for addr, keys in processing.items():
                    if keys and names.get(addr) in workers:
                        victim, running = names[addr], list(keys)
                        break
            time.sleep(0.05)
        assert victim is not None, (f"no trial was running on a worker after the first result: {len(seen)} "
                                    f"results, search {'running' if thread.is_alive() else 'finished'}, "
                                    f"processing {processing}")
        finished_before = [r["key"] for r in seen]
        workers[victim].send_signal(signal.SIGKILL)
        workers[victim].wait(10)
        thread.join(120)
        assert not thread.is_alive() and not errors, errors
    finally:
        client.close()
    keys = [r["key"] for r in seen]
    assert sorted(keys) == sorted(r["key"] for r in expected["trials"])    # every trial, each once
    assert set(finished_before) <= set(keys) and running
    assert _strip(sorted(seen, key=lambda r: r["key"])) == _strip(expected["trials"])
