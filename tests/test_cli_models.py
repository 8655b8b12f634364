"""``geomlib compare``, ``geomlib sweep`` and ``geomlib requantize`` as a user runs them (subprocesses)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from tests.factories.cli import CliResult
from tests.store.test_sweep import make_run
from tests.test_cli import run


@pytest.fixture(scope="module")
def run_dirs(tmp_path_factory) -> list[Path]:
    return make_run(tmp_path_factory.mktemp("run"))


def test_compare_prints_the_table_and_writes_the_dataset(tmp_path, run_dirs):
    out = tmp_path / "cmp.nc"
    proc = run("compare", str(run_dirs[0]), str(run_dirs[0]), "--cache", str(tmp_path / "c"), "-q", "--threads", "1",
               "-o", str(out), tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "comparison: layer-to-layer" in proc.stdout and f"wrote {out}" in proc.stdout
    ds = xr.open_dataset(out)
    n = ds.sizes["layer"]
    np.testing.assert_allclose(ds["mlp_matched_cos"].values[..., np.arange(n), np.arange(n)], 1.0, atol=1e-12)
    rows = [ln.split() for ln in proc.stdout.splitlines() if ln[:5].strip().isdigit()]
    assert len(rows) == n and all(r[2] == "1.000" for r in rows)  # raw cos of a layer with itself


@pytest.mark.parametrize("args, words", [
    (["compare", "a-missing", "b-missing"], ["a-missing", "not an existing file"]),
    (["compare", "x", "y", "--null-draws", "-1"], ["null_draws"]),
    (["compare", "x", "y", "-o", "out.png"], ["must be a netCDF file"]),
    (["sweep", "a/b", "c/d", "--revisions", "s1,s2"], ["exactly one hub id"]),
    (["sweep", "x", "--scheduler", "nowhere:1"], ["not a Dask scheduler address"]),
    (["sweep", "x", "--memory-per-worker", "lots"], ["not an amount of memory"]),
    (["sweep", "x", "--compare.pairs", "some"], ["invalid choice"]),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, words):
    CliResult.of(run(*args, "--cache", str(tmp_path / "c"), tmp_path=tmp_path)).one_error_line(*words)
    assert not any((tmp_path / "c").glob("*/*.nc"))


def test_sweep_serial_table_file_and_a_failed_checkpoint(tmp_path, run_dirs):
    out = tmp_path / "sweep.nc"
    srcs = [str(run_dirs[0]), str(tmp_path / "gone"), str(run_dirs[1])]
    proc = run("sweep", *srcs, "--analyses", "weights", "--scheduler", "serial", "--cache", str(tmp_path / "c"),
               "--name", "demo", "-o", str(out), "-q", tmp_path=tmp_path)
    assert proc.returncode == 1, proc.stderr  # some checkpoints failed, the others were written
    assert "Traceback" not in proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("geomlib: error: ")]
    assert len(errors) == 1 and str(tmp_path / "gone") in errors[0]
    assert "cached as sweep:demo" in proc.stdout
    table = [ln.split() for ln in proc.stdout.splitlines() if ln.startswith("step-")]
    assert [r[:2] for r in table] == [["step-00000", "0"], ["step-00100", "100"]]
    ds = xr.open_dataset(out)
    assert list(ds["checkpoint"].values) == ["step-00000", "step-00100"]
    assert float(table[1][2]) == pytest.approx(float(ds["moved_raw_cos"].isel(checkpoint=1).mean()), abs=5e-4)
    listed = run("list", "--cache", str(tmp_path / "c"), tmp_path=tmp_path)
    assert "sweep:demo" in listed.stdout


def test_requantize_writes_a_gguf_geomlib_reads(tmp_path):
    out = tmp_path / "minilm.Q4_0.gguf"
    proc = run("requantize", "demo:minilm-l6", str(out), "--type", "q4_0", "-q", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {out}" in proc.stdout and out.is_file()
    info = run("info", str(out), "--json", tmp_path=tmp_path)
    assert '"quantization": "Q4_0"' in info.stdout and '"arch": "bert"' in info.stdout
    again = CliResult.of(run("requantize", "demo:minilm-l6", str(out), "-q", tmp_path=tmp_path))
    again.one_error_line(str(out), "overwrite")
    CliResult.of(run("requantize", "demo:minilm-l6", str(tmp_path / "x.gguf"), "--type", "Q3_K", tmp_path=tmp_path)
                 ).one_error_line("Q3_K", "Q8_0")
