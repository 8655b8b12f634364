"""The thread policy (``geomlib.threads``), its wiring into ``geomlib.compute`` and ``geomlib compute --threads``.

No test times anything: the policy is checked with a patched load average and core count.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import geomlib
from geomlib import threads
from geomlib.errors import InvalidArgumentError
from tests.factories import synthetic

ENV = ("GEOMLIB_THREADS", *threads.CHILD_ENV)


@pytest.fixture(autouse=True)
def clean_threads(monkeypatch):
    """No thread variable set, and torch's count, the environment and the module's record restored afterwards."""
    saved_env = {k: os.environ.get(k) for k in ENV}
    saved_torch = torch.get_num_threads()
    saved_written = dict(threads._WRITTEN)
    for k in ENV:
        monkeypatch.delenv(k, raising=False)
    threads._WRITTEN.clear()
    yield
    torch.set_num_threads(saved_torch)
    threads._WRITTEN.clear()
    threads._WRITTEN.update(saved_written)
    for k, v in saved_env.items():  # apply_threads writes os.environ itself, behind monkeypatch's back
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def machine(monkeypatch, cores: int, load: float, quota: float | None = None) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))
    monkeypatch.setattr(threads, "_cgroup_cpus", lambda: quota)


# -- the policy ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 2, 3, 64])
def test_an_explicit_request_is_honoured(monkeypatch, n):
    machine(monkeypatch, cores=2, load=5.0)  # even on a busy machine, and above its cores
    assert threads.choose_threads(n) == n
    assert threads.thread_policy(n).reason == "requested"


@pytest.mark.parametrize("bad", [0, -1, "two", 1.5, "2", True, [2]])
def test_a_bad_request_is_refused_in_one_sentence(bad):
    with pytest.raises(InvalidArgumentError) as exc:
        threads.choose_threads(bad)
    msg = str(exc.value)
    assert "\n" not in msg and repr(bad) in msg and "at least 1" in msg


def test_omp_num_threads_is_honoured(monkeypatch):
    machine(monkeypatch, cores=2, load=5.0)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads.choose_threads() == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "4,2")  # a nested OpenMP list: the first level counts
    assert threads.choose_threads() == 4


def test_geomlib_threads_wins_over_omp(monkeypatch):
    machine(monkeypatch, cores=8, load=0.0)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.setenv("GEOMLIB_THREADS", "5")
    choice = threads.thread_policy()
    assert (choice.threads, choice.reason) == (5, "GEOMLIB_THREADS")
    assert choice.describe() == "geomlib: 5 BLAS threads (GEOMLIB_THREADS=5)"


def test_a_malformed_environment(monkeypatch):
    machine(monkeypatch, cores=4, load=0.0)
    monkeypatch.setenv("OMP_NUM_THREADS", "lots")  # another tool's variable: left to it, the policy decides
    assert threads.choose_threads() == 4
    monkeypatch.setenv("GEOMLIB_THREADS", "0")  # geomlib's own: refused, with how to fix it
    with pytest.raises(InvalidArgumentError, match="GEOMLIB_THREADS='0'"):
        threads.choose_threads()


def test_a_busy_machine_gets_one_thread(monkeypatch):
    machine(monkeypatch, cores=2, load=7.5)
    assert threads.choose_threads() == 1
    machine(monkeypatch, cores=64, load=300.0)
    assert threads.choose_threads() == 1


@pytest.mark.parametrize("cores, load, want", [(2, 0.1, 2), (2, 0.49, 2), (2, 0.6, 1), (4, 1.4, 3), (4, 0.0, 4)])
def test_free_cores_rounded(monkeypatch, cores, load, want):
    machine(monkeypatch, cores=cores, load=load)
    choice = threads.thread_policy()
    assert choice.threads == want and choice.reason == "policy"
    assert choice.describe() == f"geomlib: {want} BLAS thread{'s' if want > 1 else ''} ({cores} cores, load {load:.1f})"


def test_a_cgroup_quota_caps_the_cores(monkeypatch):
    machine(monkeypatch, cores=16, load=0.0, quota=2.5)
    assert threads.available_cores() == 2
    assert threads.choose_threads() == 2
    machine(monkeypatch, cores=16, load=0.0, quota=0.5)
    assert threads.choose_threads() == 1


def test_the_module_imports_without_torch():
    code = "import sys, geomlib.threads as t; t.choose_threads(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- applying it -----------------------------------------------------------------------------------------
def test_apply_threads_is_idempotent_and_sets_children(monkeypatch):
    threads.apply_threads(1)
    assert torch.get_num_threads() == 1
    assert all(os.environ[k] == "1" for k in threads.CHILD_ENV)
    threads.apply_threads(1)
    assert torch.get_num_threads() == 1 and all(os.environ[k] == "1" for k in threads.CHILD_ENV)
    threads.apply_threads(2)  # geomlib's own earlier value is not a user's: it follows
    assert torch.get_num_threads() == 2 and all(os.environ[k] == "2" for k in threads.CHILD_ENV)
    with pytest.raises(InvalidArgumentError):
        threads.apply_threads(0)


def test_a_users_variable_is_kept(monkeypatch):
    monkeypatch.setenv("MKL_NUM_THREADS", "7")
    threads.apply_threads(1)
    assert os.environ["MKL_NUM_THREADS"] == "7" and os.environ["OPENBLAS_NUM_THREADS"] == "1"


def test_geomlibs_own_variable_is_not_read_back_as_a_choice(monkeypatch):
    threads.apply_threads(1)  # writes OMP_NUM_THREADS=1 for child processes
    machine(monkeypatch, cores=4, load=0.0)
    assert threads.choose_threads() == 4  # the machine is looked at again, not geomlib's echo


def test_using_threads_restores(monkeypatch):
    torch.set_num_threads(2)
    with threads.using_threads(1):
        assert torch.get_num_threads() == 1 and os.environ["OMP_NUM_THREADS"] == "1"
    assert torch.get_num_threads() == 2
    assert all(k not in os.environ for k in threads.CHILD_ENV)


# -- geomlib.compute and the CLI ------------------------------------------------------------------------------
@pytest.fixture
def model(tmp_path):
    path, _ = synthetic.build(tmp_path / "tiny-llama", 3, dtype=torch.float32)
    return path


def test_compute_refuses_a_bad_count_before_any_work(tmp_path):
    # the source does not exist either: the thread count is checked first
    for bad in (0, -1, "two", 1.5):
        with pytest.raises(InvalidArgumentError, match="threads="):
            geomlib.compute(tmp_path / "no-such-model", cache_dir=tmp_path / "c", threads=bad)
    assert not (tmp_path / "c").exists()


def test_compute_records_threads_outside_the_key(model, tmp_path, capsys):
    root = tmp_path / "cache"
    torch.set_num_threads(2)
    ds = geomlib.compute(model, ["weights"], cache_dir=root, threads=1, progress=True, weights={"null_draws": 0})
    err = capsys.readouterr().err
    assert "geomlib: 1 BLAS thread (as requested" in err
    assert int(ds.attrs["weights_threads"]) == 1
    assert torch.get_num_threads() == 2  # the caller's count is back
    files = sorted(root.rglob("*.nc"))
    # another count: the same cache entry (the key does not depend on threads), nothing recomputed
    ds2 = geomlib.compute(model, ["weights"], cache_dir=root, threads=2, progress=True, weights={"null_draws": 0})
    assert sorted(root.rglob("*.nc")) == files
    assert ds2.attrs["weights_cache_key"] == ds.attrs["weights_cache_key"]
    assert int(ds2.attrs["weights_threads"]) == 1
    assert "BLAS thread" not in capsys.readouterr().err  # nothing to compute, nothing to say


def test_compute_quiet_prints_no_thread_line(model, tmp_path, capsys):
    geomlib.compute(model, ["weights"], cache_dir=tmp_path / "c", threads=1, progress=False,
                    weights={"null_draws": 0})
    assert "BLAS" not in capsys.readouterr().err


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5"])
def test_cli_threads_bad_count_exits_2_in_one_line(run_cli, model, tmp_path, value):
    res = run_cli("compute", model, "--threads", value, "--cache", tmp_path / "c")
    line = res.one_error_line("--threads")
    assert repr(value) in line or value in line
    assert not (tmp_path / "c").exists()  # refused before any work


def test_cli_threads_is_used(run_cli, model, tmp_path):
    res = run_cli("compute", model, "--analyses", "weights", "--weights.null-draws", "0", "--threads", "1",
                  "--cache", tmp_path / "c")
    assert res.code == 0, res.err
    assert "geomlib: 1 BLAS thread" in res.err
    ds = geomlib.load(model, "weights", cache_dir=tmp_path / "c")
    assert int(ds.attrs["weights_threads"]) == 1
