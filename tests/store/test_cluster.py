"""Sweeps on a real Dask cluster: LocalCluster worker processes, a killed worker, a scheduler address.

Every result is checked against the serial path (scheduler="serial", one thread per task as on the
workers), value for value.  Cluster start-up and torch imports in fresh worker processes take seconds,
so these tests are marked slow.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
import xarray as xr

from geomlib.errors import ClusterError, InvalidArgumentError
from geomlib.store import cache
from geomlib.store.cluster import Task, parse_bytes, resolve_scheduler, run_tasks
from geomlib.store.sweep import sweep
from tests.factories import synthetic
from tests.store.test_sweep import make_run

distributed = pytest.importorskip("distributed")


def same_numbers(a: xr.Dataset, b: xr.Dataset) -> None:
    """Equal variables and coordinates; attributes (times, hosts, scheduler) may differ."""
    xr.testing.assert_equal(a.drop_attrs(deep=True), b.drop_attrs(deep=True))


@pytest.fixture(autouse=True)
def environ_restored():
    """A LocalCluster made by a test itself leaves its nannies' variables (OMP_NUM_THREADS=1,
    MALLOC_TRIM_THRESHOLD_...) in os.environ, where later tests would inherit them."""
    before = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(before)


@pytest.fixture(scope="module")
def run_dirs(tmp_path_factory) -> list[Path]:
    return make_run(tmp_path_factory.mktemp("run"))


def test_scheduler_and_memory_arguments(monkeypatch):
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    assert resolve_scheduler(None) == "local"
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", "tcp://10.1.2.3:8786")
    assert resolve_scheduler(None) == "tcp://10.1.2.3:8786"
    assert resolve_scheduler("Serial") == "serial"
    for bad in ("10.1.2.3:8786", "http://x:1", ""):
        with pytest.raises(InvalidArgumentError, match="not a Dask scheduler address"):
            resolve_scheduler(bad)
    assert parse_bytes("4GiB") == 4 * 2**30 and parse_bytes("500MB") == 500 * 10**6 and parse_bytes(1024) == 1024
    for bad in ("0GiB", "4 parsecs", "-1", True):
        with pytest.raises(InvalidArgumentError):
            parse_bytes(bad)


def test_duplicate_task_keys_are_refused():
    t = Task("k", "k", len, ((),))
    with pytest.raises(InvalidArgumentError, match="same key"):
        run_tasks([t, t], "serial", progress=False)


@pytest.mark.slow
def test_local_cluster_equals_serial_and_reports_a_bad_source(tmp_path, run_dirs):
    srcs = [str(run_dirs[0]), str(tmp_path / "missing"), *map(str, run_dirs[1:])]
    serial = sweep(srcs, ["weights", "gauge"], tmp_path / "serial", scheduler="serial", progress=False)
    env = dict(os.environ)
    local = sweep(srcs, ["weights", "gauge"], tmp_path / "local", scheduler="local", workers=2, progress=False)
    assert dict(os.environ) == env  # the nannies' OMP_NUM_THREADS=1 etc. do not outlive the cluster
    same_numbers(serial, local)
    assert list(local["checkpoint"].values) == ["step-00000", "step-00100", "step-00200"]
    failed = local.attrs["failed"].splitlines()
    assert failed == serial.attrs["failed"].splitlines()
    assert len(failed) == 1 and failed[0].startswith(f"{tmp_path / 'missing'}: ") and "\n" not in failed[0]
    # each worker wrote its own entries into the shared cache; the client wrote the sweep
    entries = sorted(p.name.split("-")[0] for p in (tmp_path / "local").glob("*/*.nc"))
    assert entries.count("weights") == 3 and entries.count("gauge") == 3 and entries.count("sweep") == 1


@pytest.mark.slow
def test_killed_worker_is_retried_with_identical_result(tmp_path):
    # a checkpoint big enough that its gauge task runs for seconds: time to kill its worker mid-task
    srcs = []
    for k in range(2):
        synthetic.build(tmp_path / f"ck{k}", n_layers=8, seed=k, hidden=192, heads=8, kv=4, inter=768)
        srcs.append(str(tmp_path / f"ck{k}"))
    params = dict(gauge={"pairs": "all", "null_draws": 4})
    serial = sweep(srcs, ["gauge"], tmp_path / "serial", scheduler="serial", compare=False, progress=False,
                   **params)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                  silence_logs=50) as cluster, distributed.Client(cluster) as watcher:
        got: dict = {}
        runner = threading.Thread(target=lambda: got.update(ds=sweep(
            srcs, ["gauge"], tmp_path / "cluster", scheduler=cluster.scheduler_address, compare=False,
            progress=False, **params)))
        runner.start()
        victim = None
        deadline = time.monotonic() + 120
        while victim is None and time.monotonic() < deadline:
            busy = {w: keys for w, keys in watcher.processing().items() if keys}
            if busy:
                victim = next(iter(busy))
                key = busy[victim][0]
            else:
                time.sleep(0.02)
        assert victim is not None, "no task ever started"
        pid = watcher.run(os.getpid, workers=[victim])[victim]
        os.kill(pid, signal.SIGKILL)
        # the task was still running when its worker died: its checkpoint had no gauge entry yet
        source = srcs[int(key.split("-")[1].removeprefix("ck"))]
        assert not [e for e in cache.entries(tmp_path / "cluster") if e.source == source]
        runner.join(timeout=300)
        assert not runner.is_alive()
        assert [e for e in cache.entries(tmp_path / "cluster") if e.source == source]
        pids = set(watcher.run(os.getpid).values())
        assert pid not in pids  # the nanny started a new worker process
    same_numbers(serial, got["ds"])
    assert got["ds"].attrs["failed"] == ""


@pytest.mark.slow
def test_unreachable_scheduler_is_one_line(tmp_path, run_dirs):
    t0 = time.monotonic()
    with pytest.raises(ClusterError) as err:
        sweep([str(p) for p in run_dirs], ["weights"], tmp_path / "c", scheduler="tcp://127.0.0.1:9", progress=False)
    assert time.monotonic() - t0 < 30
    assert "did not answer" in str(err.value) and "\n" not in str(err.value)
