"""``geomlib compute / list / report`` through the real console script, and the committed demo dataset."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

import geomlib
from geomlib.dataset import cache
from geomlib.dataset.report import render
from tests.factories import synthetic

ROOT = Path(__file__).resolve().parents[2]


def geomlib_cli(*args, cwd=None):
    exe = Path(sys.executable).with_name("geomlib")
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, cwd=cwd)


@pytest.fixture
def model(tmp_path):
    path, _ = synthetic.build(tmp_path / "tiny", 5, dtype=torch.bfloat16)
    return path


def test_compute_list_report(model, tmp_path):
    c = tmp_path / "cache"
    out = geomlib_cli("compute", model, "--cache", c, "--null-draws", "2", "-q")
    assert out.returncode == 0, out.stderr
    assert len(list(c.rglob("weights-*.nc"))) == 1
    out = geomlib_cli("list", "--cache", c)
    assert out.returncode == 0 and "tiny" in out.stdout and "llama, 5 layers" in out.stdout
    out = geomlib_cli("report", model, "--cache", c, "--phases", "A:0,B:2,C:4")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    for heading in ("Adjacent-layer raw cos-sim", "Per-family summary", "Scale track", "PCA of the log-scale",
                    "Aligned vs raw", "Per-phase mean delta", "Null bands", "γ directions of input_ln"):
        assert heading in text, heading
    assert "phases (user): A=0-1, B=2-3, C=4-4" in text
    # every verdict sits beside its null band
    verdict_lines = [ln for ln in text.splitlines() if "null" in ln and "±" in ln]
    assert len(verdict_lines) == 7


def test_report_computes_when_missing_and_reuses_otherwise(model, tmp_path):
    c = tmp_path / "cache"
    out = geomlib_cli("report", model, "--cache", c, "--null-draws", "0", "-q")
    assert out.returncode == 0, out.stderr
    (nc,) = list(c.rglob("weights-*.nc"))
    mtime = nc.stat().st_mtime_ns
    assert geomlib_cli("report", model, "--cache", c).returncode == 0
    assert nc.stat().st_mtime_ns == mtime


@pytest.mark.parametrize(
    "args, words",
    [
        (["compute", "/no/such/model"], "not an existing file"),
        (["compute", "{model}", "--null-draws", "1"], "null_draws=1"),
        (["compute", "{model}", "--phases", "9"], "phase boundaries"),
        (["compute", "{model}", "--phases", "x,y"], "--phases"),
        (["compute", "{model}", "--device", "cuda:7"] if not torch.cuda.is_available() else
         ["compute", "{model}", "--device", "tpu"], "device"),
        (["report", "{model}", "--null-draws", "-3"], "null_draws=-3"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(model, tmp_path, args, words):
    c = tmp_path / "cache"
    out = geomlib_cli(*[a.format(model=model) for a in args], "--cache", c, "-q")
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("geomlib: error:") and words in lines[0]
    assert not list(c.rglob("*.nc")) if c.exists() else True


def test_list_on_empty_cache(tmp_path):
    out = geomlib_cli("list", "--cache", tmp_path / "none")
    assert out.returncode == 0 and "no cached datasets" in out.stdout


# --- the real demo model ---------------------------------------------------------------------------


def committed(source: str) -> cache.Entry:
    hits = [e for e in cache.entries(ROOT / "cache") if e.source == source and e.analysis == "weights"]
    assert hits, f"no committed dataset for {source} in cache/ (run: geomlib compute {source})"
    return hits[0]


@pytest.mark.slow
def test_committed_demo_dataset_reproduces_exactly(tmp_path):
    """Recompute demo:smollm2-135m from its GGUF: the committed numbers must come out again."""
    entry = committed("demo:smollm2-135m")
    ds = geomlib.compute("demo:smollm2-135m", cache_dir=tmp_path, progress=False)
    (fresh,) = list(tmp_path.rglob("weights-*.nc"))
    assert fresh.name == entry.path.name and fresh.parent.name == entry.path.parent.name  # same identity and key
    old = cache.read(entry.path)
    for v in old.data_vars:
        if old[v].dtype.kind == "f":
            np.testing.assert_allclose(ds[v].values, old[v].values, rtol=1e-9, atol=1e-12, err_msg=v)
        else:
            assert (ds[v].values == old[v].values).all(), v
    assert ds.attrs["quantization"] == "Q4_1" and "quantization noise" in ds.attrs["quantization_note"]


@pytest.mark.slow
def test_report_on_the_demo_runs_from_the_committed_cache(tmp_path):
    c = tmp_path / "cache"
    shutil.copytree(ROOT / "cache", c)
    out = geomlib_cli("report", "demo:smollm2-135m", "--cache", c)
    assert out.returncode == 0, out.stderr
    assert "NOTE: weights are quantized (Q4_1)" in out.stdout
    assert "30 layers" in out.stdout and "Null bands" in out.stdout
    assert sorted(p.name for p in c.rglob("*.nc")) == sorted(p.name for p in (ROOT / "cache").rglob("*.nc"))


def test_render_is_torch_free_on_a_cached_dataset(model, tmp_path):
    geomlib.compute(model, cache_dir=tmp_path, progress=False, null_draws=0)
    code = ("import sys, geomlib\nfrom geomlib.dataset.report import render\n"
            f"print(render(geomlib.load({str(model)!r}, cache_dir={str(tmp_path)!r}))[:40])\n"
            "assert 'torch' not in sys.modules\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("geomlib report:")
    assert isinstance(render(xr.open_dataset(next(tmp_path.rglob("*.nc")), engine="netcdf4").load()
                             .pipe(lambda d: geomlib.dataset.apply_phases(d))), str)
