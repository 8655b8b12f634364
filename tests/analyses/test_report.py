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
    out = geomlib_cli("compute", model, "--cache", c, "--null-draws", "2", "--no-dynamic", "-q")
    assert out.returncode == 0, out.stderr
    assert len(list(c.rglob("weights-*.nc"))) == 1 and len(list(c.rglob("heads-*.nc"))) == 1
    out = geomlib_cli("list", "--cache", c)
    assert out.returncode == 0 and "tiny" in out.stdout and "llama, 5 layers" in out.stdout
    out = geomlib_cli("report", model, "--cache", c, "--phases", "A:0,B:2,C:4")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    for heading in ("Adjacent-layer raw cos-sim", "Per-family summary", "Scale track", "PCA of the log-scale",
                    "Aligned vs raw", "Per-phase mean delta", "Null bands", "γ directions of input_ln",
                    "Seed 001 (QK): operator cos-sim", "Seed 001 (QK) verdict", "Seed 002 (QK) verdict",
                    "Seed 001 (OV)", "Seed 002 (OV)"):
        assert heading in text, heading
    assert "phases (user): A=0-1, B=2-3, C=4-4" in text
    out = geomlib_cli("report", model, "--cache", c, "--n-phases", "2")  # automatic phases, their number given
    assert out.returncode == 0, out.stderr
    assert "phases (changepoint:weights:user-k): A=0-" in out.stdout
    # every verdict sits beside its null band
    lines = text.splitlines()
    table = lines[lines.index(next(ln for ln in lines if ln.startswith("=== Null bands"))):]
    weight_rows = [ln for ln in table[:12] if ln.strip().split(" ")[0].endswith("_proj")]
    assert len(weight_rows) == 7 and all("±" in ln for ln in weight_rows)
    for kind in ("QK", "OV"):
        verdict = lines[lines.index(f"=== Seed 001 ({kind}) verdict ===") + 1]
        assert "null" in verdict and "±" in verdict
        verdict = lines[lines.index(f"=== Seed 002 ({kind}) verdict ===") + 2]
        assert "random heads" in verdict and "±" in verdict


def test_report_computes_when_missing_and_reuses_otherwise(model, tmp_path):
    c = tmp_path / "cache"
    out = geomlib_cli("report", model, "--cache", c, "--null-draws", "0", "--no-dynamic", "-q")
    assert out.returncode == 0, out.stderr
    files = sorted(c.rglob("*.nc"))
    assert [f.name.split("-")[0] for f in files] == ["heads", "weights"]
    mtimes = [f.stat().st_mtime_ns for f in files]
    assert geomlib_cli("report", model, "--cache", c).returncode == 0
    assert [f.stat().st_mtime_ns for f in files] == mtimes


def test_missing_tokenizer_is_refused_before_any_work(model, tmp_path):
    c = tmp_path / "cache"
    out = geomlib_cli("compute", model, "--cache", c, "-q")
    assert out.returncode == 2
    assert "no tokenizer" in out.stderr and "--no-dynamic" in out.stderr and len(out.stderr.splitlines()) == 1
    assert not c.exists() or not list(c.rglob("*.nc"))  # not even the weights analysis ran


@pytest.mark.parametrize(
    "args, words",
    [
        (["compute", "/no/such/model"], "not an existing file"),
        (["compute", "{model}", "--null-draws", "1"], "null_draws=1"),
        (["compute", "{model}", "--phases", "9"], "phase boundaries"),
        (["compute", "{model}", "--phases", "x,y"], "--phases"),
        (["compute", "{model}", "--n-phases", "9"], "n_phases=9"),
        (["report", "{model}", "--phases", "seed", "--n-phases", "2"], "automatic phases only"),
        (["compute", "{model}", "--device", "cuda:7"] if not torch.cuda.is_available() else
         ["compute", "{model}", "--device", "tpu"], "device"),
        (["report", "{model}", "--null-draws", "-3"], "null_draws=-3"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(model, tmp_path, args, words):
    c = tmp_path / "cache"
    out = geomlib_cli(*[a.format(model=model) for a in args], "--cache", c, "--no-dynamic", "-q")
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("geomlib: error:") and words in lines[0]
    assert not list(c.rglob("*.nc")) if c.exists() else True


def test_list_on_empty_cache(tmp_path):
    out = geomlib_cli("list", "--cache", tmp_path / "none")
    assert out.returncode == 0 and "no cached datasets" in out.stdout


# --- the real demo model ---------------------------------------------------------------------------


def committed(source: str, analysis: str = "weights") -> cache.Entry:
    hits = [e for e in cache.entries(ROOT / "cache") if e.source == source and e.analysis == analysis]
    assert hits, f"no committed {analysis} dataset for {source} in cache/ (run: geomlib compute {source})"
    return hits[0]


#: values that come out of a float32 forward pass (attention entropy) may differ in the last bits
#: between BLAS builds; everything else is float64 from the same bytes
_FORWARD = ("attn_entropy", "qk_corr_T_entropy", "qk_corr_opnorm_entropy", "ov_corr_T_entropy",
            "ov_corr_opnorm_entropy")


@pytest.mark.slow
@pytest.mark.parametrize("analysis", ["weights", "heads"])
def test_committed_demo_dataset_reproduces(tmp_path, analysis):
    """Recompute demo:smollm2-135m from its GGUF: the committed numbers must come out again."""
    entry = committed("demo:smollm2-135m", analysis)
    ds = geomlib.compute("demo:smollm2-135m", analyses=[analysis], cache_dir=tmp_path, progress=False)
    (fresh,) = list(tmp_path.rglob(f"{analysis}-*.nc"))
    assert fresh.name == entry.path.name and fresh.parent.name == entry.path.parent.name  # same identity and key
    old = cache.read(entry.path)
    for v in old.data_vars:
        if old[v].dtype.kind == "f":
            tol = dict(rtol=1e-5, atol=1e-6) if v in _FORWARD else dict(rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(ds[v].values, old[v].values, err_msg=v, **tol)
        else:
            assert (ds[v].values == old[v].values).all(), v
    assert ds.attrs["quantization"] == "Q4_1"


@pytest.mark.slow
def test_report_on_the_demo_runs_from_the_committed_cache(tmp_path):
    c = tmp_path / "cache"
    shutil.copytree(ROOT / "cache", c)
    out = geomlib_cli("report", "demo:smollm2-135m", "--cache", c)
    assert out.returncode == 0, out.stderr
    assert "NOTE: weights are quantized (Q4_1)" in out.stdout
    assert "30 layers" in out.stdout and "Null bands" in out.stdout
    assert "phases (changepoint:entropy:ebic)" in out.stdout  # found automatically from the entropy profile
    assert "Seed 001 (QK) verdict" in out.stdout and "Seed 002 (QK) verdict" in out.stdout
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
