"""The committed demo sweep (cache/sweep-demo-tiny-llama-*): it loads, it is what `make demo-sweep` makes.

The checkpoints are regenerated, never committed: the slow test trains the demo run again
(scripts/train_demo_sweep.py, deterministic, about 70 s on one core), sweeps it and finds the committed
numbers, checkpoint identities included (the identity hashes every weight byte).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from geomlib.store import cache
from geomlib.store.sweep import load_sweep, sweep, sweeps

ROOT = Path(__file__).resolve().parents[2]
NAME = "demo-tiny-llama"


@pytest.fixture(scope="module")
def committed() -> xr.Dataset:
    return load_sweep(NAME, ROOT / "cache")


def test_the_committed_sweep_is_listed_intact_and_small():
    assert NAME in sweeps(ROOT / "cache")
    (entry,) = [e for e in cache.entries(ROOT / "cache") if e.analysis == "sweep" and e.source == f"sweep:{NAME}"]
    assert cache.verify(entry.path) is None
    assert entry.path.stat().st_size < 2 * 2**20


def test_the_committed_sweep_describes_a_training_run(committed):
    ds = committed
    assert list(ds["step"].values) == [0, 12, 25, 50, 100, 200, 400]
    loss = ds["loss"].values
    assert loss[0] == pytest.approx(np.log(320), abs=0.1) and loss[-1] < loss[0] / 10  # it trained
    assert set(ds.attrs["analyses"].split(",")) == {"weights", "heads", "gauge"} and ds.attrs["failed"] == ""
    moved = ds["moved_mlp_matched_cos"].sel(mlp_view="mean")
    assert np.isnan(moved.isel(checkpoint=0)).all()
    later = moved.isel(checkpoint=slice(1, None)).values
    assert np.isfinite(later).all() and (later <= 1 + 1e-9).all() and (later > 0).all()
    # early steps (warm-up, tiny learning rate) barely move the layers; by step 100 they have moved
    assert moved.isel(checkpoint=1).mean() > 0.99 > moved.sel(checkpoint="step 100").mean()
    assert ds["attn_entropy"].sizes["checkpoint"] == 7  # the heads' forward pass ran on every checkpoint


@pytest.mark.slow
def test_make_demo_sweep_reproduces_the_committed_sweep(committed, tmp_path):
    run = tmp_path / "run"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "train_demo_sweep.py"), str(run), "--quiet"],
                   check=True, timeout=600)
    manifest = json.loads((run / "sweep.json").read_text())["checkpoints"]
    assert [c["step"] for c in manifest] == [0, 12, 25, 50, 100, 200, 400]
    assert manifest[-1]["loss"] < manifest[0]["loss"] / 10  # it learns (memorises) its text
    assert min(c["heldout_loss"] for c in manifest) < manifest[0]["heldout_loss"] - 1  # and generalises, early
    fresh = sweep(run, None, tmp_path / "cache", name=NAME, scheduler="serial", threads=1, progress=False)
    assert list(fresh["identity"].values) == list(committed["identity"].values)  # byte-identical weights
    # every number and coordinate; the sources are this machine's paths, the attributes say when and where
    xr.testing.assert_allclose(fresh.drop_attrs(deep=True).drop_vars("source"),
                               committed.drop_attrs(deep=True).drop_vars("source"), rtol=0, atol=1e-9)
