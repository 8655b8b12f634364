"""Cache layout, keys, atomic writes and the compute/load API."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import xarray as xr

import geomlib
from geomlib.dataset import cache, entries
from geomlib.errors import InvalidArgumentError
from tests.factories import synthetic


@pytest.fixture
def model(tmp_path):
    path, _ = synthetic.build(tmp_path / "tiny-llama", 4, dtype=torch.float32)
    return path


def _nc_files(root):
    return sorted(p for p in root.rglob("*.nc"))


def test_compute_writes_one_file_and_reuses_it(model, tmp_path):
    root = tmp_path / "cache"
    ds1 = geomlib.compute(model, cache_dir=root, progress=False, null_draws=2)
    files = _nc_files(root)
    assert len(files) == 1 and files[0].parent.name.startswith("tiny-llama-")
    mtime = files[0].stat().st_mtime_ns
    ds2 = geomlib.compute(model, cache_dir=root, progress=False, null_draws=2)
    assert files[0].stat().st_mtime_ns == mtime  # served from the cache
    xr.testing.assert_identical(ds1.drop_attrs(), ds2.drop_attrs())
    geomlib.compute(model, cache_dir=root, progress=False, null_draws=2, force=True)
    assert files[0].stat().st_mtime_ns != mtime


def test_parameters_and_weights_enter_the_key(model, tmp_path):
    root = tmp_path / "cache"
    geomlib.compute(model, cache_dir=root, progress=False, null_draws=2)
    geomlib.compute(model, cache_dir=root, progress=False, null_draws=4)  # other parameters: new entry
    assert len(_nc_files(root)) == 2
    # same path, different weights (a fine-tune saved over it): a new model directory, not stale numbers
    synthetic.build(model, 4, seed=1, dtype=torch.float32)
    ds = geomlib.compute(model, cache_dir=root, progress=False, null_draws=2)
    assert len({p.parent for p in _nc_files(root)}) == 2
    assert ds.attrs["identity"] == geomlib.open_model(model).identity


def test_phases_are_labels_not_part_of_the_key(model, tmp_path):
    root = tmp_path / "cache"
    a = geomlib.compute(model, cache_dir=root, progress=False, null_draws=0)
    b = geomlib.compute(model, cache_dir=root, progress=False, null_draws=0, phases=[2], phase_names=["x", "y"])
    assert len(_nc_files(root)) == 1
    assert a.attrs["phase_method"] == "changepoint:weights:ebic" and b.attrs["phase_method"] == "user"
    assert list(b.phase.values) == ["x", "x", "y", "y"]
    c = geomlib.compute(model, cache_dir=root, progress=False, null_draws=0, phases="seed")
    assert c.attrs["phase_method"] == "fractional" and len(_nc_files(root)) == 1


def test_gemma_norms_use_the_effective_gain(tmp_path):
    # Gemma stores w and applies 1 + w: a gain stored as 0 everywhere is a gain of 1, not a zero vector
    def plant(L, fresh, prev):
        fresh["input_ln"] = torch.zeros_like(fresh["input_ln"]) if L == 0 else fresh["input_ln"] - 1
        return fresh

    path, layers = synthetic.build(tmp_path / "g", 3, plant, model_type="gemma", head_dim=8)
    ds = geomlib.compute(path, cache_dir=tmp_path / "c", progress=False, null_draws=0)
    eff = [layers[L]["input_ln"] + 1 for L in range(3)]
    assert float(ds.scale.sel(family="input_ln", layer=0)) == pytest.approx(float(eff[0].norm()))
    assert float(ds.gamma_norm.sel(family="input_ln", layer=1)) == pytest.approx(float(eff[1].norm()))


def test_load_serves_the_cache_without_importing_torch(model, tmp_path):
    root = tmp_path / "cache"
    geomlib.compute(model, cache_dir=root, progress=False, null_draws=2)
    code = (
        "import sys, geomlib\n"
        f"ds = geomlib.load({str(model)!r}, cache_dir={str(root)!r})\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print(ds.sizes['layer'], ds.attrs['phase_method'])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["4", "changepoint:weights:ebic"]


def test_load_computes_what_is_missing(model, tmp_path):
    ds = geomlib.load(model, cache_dir=tmp_path / "c", progress=False, null_draws=0)
    assert len(_nc_files(tmp_path / "c")) == 1
    assert ds.sizes["layer"] == 4


def test_cache_root_from_environment(model, tmp_path, monkeypatch):
    monkeypatch.setenv("GEOMLIB_CACHE", str(tmp_path / "env-cache"))
    geomlib.compute(model, progress=False, null_draws=0)
    assert len(_nc_files(tmp_path / "env-cache")) == 1
    assert entries()[0].source == str(model)


def test_interrupted_write_leaves_no_loadable_file(model, tmp_path, monkeypatch):
    root = tmp_path / "cache"
    ds = geomlib.compute(model, cache_dir=tmp_path / "first", progress=False, null_draws=0)
    target = root / "m" / "weights-0123.nc"

    def crash(self, path, **kw):  # a writer dying half-way: a partial file exists, then an error
        with open(path, "wb") as fh:
            fh.write(b"CDF\x01 partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(xr.Dataset, "to_netcdf", crash)
    with pytest.raises(KeyboardInterrupt):
        cache.write_atomic(ds, target)
    assert not target.exists()
    assert list(target.parent.iterdir()) == []  # the temporary file is gone too
    assert entries(root) == []


def test_corrupt_cache_file_is_reported(tmp_path):
    bad = tmp_path / "m" / "weights-x.nc"
    bad.parent.mkdir()
    bad.write_bytes(b"not netcdf")
    with pytest.raises(geomlib.GeomlibError, match="delete it and compute again"):
        cache.read(bad)
    assert entries(tmp_path) == []


def test_bad_arguments(model, tmp_path):
    with pytest.raises(InvalidArgumentError, match="choose from weights"):
        geomlib.compute(model, analyses=["weights", "vibes"], cache_dir=tmp_path)
    with pytest.raises(InvalidArgumentError, match="unknown parameter"):
        geomlib.compute(model, cache_dir=tmp_path, null_drawz=3)
    with pytest.raises(InvalidArgumentError, match="aligned_pairs"):
        geomlib.compute(model, cache_dir=tmp_path, aligned_pairs="some")
    with pytest.raises(InvalidArgumentError, match="null_draws=1"):
        geomlib.compute(model, cache_dir=tmp_path, null_draws=1)
    assert _nc_files(tmp_path) == []


def test_netcdf_attrs_are_safe_types(model, tmp_path):
    ds = geomlib.compute(model, cache_dir=tmp_path, progress=False, null_draws=0)
    for k, v in ds.attrs.items():
        assert isinstance(v, (str, int, float, np.integer, np.floating, np.ndarray)), (k, type(v))
    assert os.path.getsize(_nc_files(tmp_path)[0]) < 200_000
