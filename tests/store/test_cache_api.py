"""Cache layout, keys, atomic writes and the compute/load API (``load`` never computes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
import xarray as xr

import geomlib
from geomlib.errors import GeomlibWarning, InvalidArgumentError, SourceNotFoundError
from geomlib.store import cache, entries
from tests.factories import synthetic
from tests.factories.tokenizers import make_checkpoint_with_tokenizer


@pytest.fixture
def model(tmp_path):
    path, _ = synthetic.build(tmp_path / "tiny-llama", 4, dtype=torch.float32)
    return path


def _nc_files(root):
    return sorted(p for p in root.rglob("*.nc"))


def weights(model, root, *, null_draws=0, **kw):
    """The weights analysis alone, as ``compute``'s default was before heads joined it."""
    return geomlib.compute(model, analyses=["weights"], cache_dir=root, progress=False,
                           weights={"null_draws": null_draws}, **kw)


def one_sentence(msg: str) -> bool:
    """One line, and no full stop followed by a capitalised word inside it."""
    import re

    return "\n" not in msg and msg == msg.strip() and not re.search(r"[a-z)]\. [A-Z]", msg)


def test_compute_writes_one_file_and_reuses_it(model, tmp_path):
    root = tmp_path / "cache"
    ds1 = weights(model, root, null_draws=2)
    files = _nc_files(root)
    assert len(files) == 1 and files[0].parent.name.startswith("tiny-llama-")
    mtime = files[0].stat().st_mtime_ns
    ds2 = weights(model, root, null_draws=2)
    assert files[0].stat().st_mtime_ns == mtime  # served from the cache
    xr.testing.assert_identical(ds1.drop_attrs(), ds2.drop_attrs())
    weights(model, root, null_draws=2, force=True)
    assert files[0].stat().st_mtime_ns != mtime


def test_parameters_and_weights_enter_the_key(model, tmp_path):
    root = tmp_path / "cache"
    weights(model, root, null_draws=2)
    weights(model, root, null_draws=4)  # other parameters: new entry
    assert len(_nc_files(root)) == 2
    # same path, different weights (a fine-tune saved over it): a new model directory, not stale numbers
    synthetic.build(model, 4, seed=1, dtype=torch.float32)
    ds = weights(model, root, null_draws=2)
    assert len({p.parent for p in _nc_files(root)}) == 2
    assert ds.attrs["identity"] == geomlib.open_model(model).identity


def test_phases_are_labels_not_part_of_the_key(model, tmp_path):
    root = tmp_path / "cache"
    a = weights(model, root)
    b = weights(model, root, phases=[2], phase_names=["x", "y"])
    assert len(_nc_files(root)) == 1
    assert a.attrs["phase_method"] == "changepoint:weights:ebic" and b.attrs["phase_method"] == "user"
    assert list(b.phase.values) == ["x", "x", "y", "y"]
    c = weights(model, root, phases="seed")
    assert c.attrs["phase_method"] == "fractional" and len(_nc_files(root)) == 1


def test_gemma_norms_use_the_effective_gain(tmp_path):
    # Gemma stores w and applies 1 + w: a gain stored as 0 everywhere is a gain of 1, not a zero vector
    def plant(L, fresh, prev):
        fresh["input_ln"] = torch.zeros_like(fresh["input_ln"]) if L == 0 else fresh["input_ln"] - 1
        return fresh

    path, layers = synthetic.build(tmp_path / "g", 3, plant, model_type="gemma", head_dim=8)
    ds = weights(path, tmp_path / "c")
    eff = [layers[L]["input_ln"] + 1 for L in range(3)]
    assert float(ds.scale.sel(family="input_ln", layer=0)) == pytest.approx(float(eff[0].norm()))
    assert float(ds.gamma_norm.sel(family="input_ln", layer=1)) == pytest.approx(float(eff[1].norm()))


def test_load_serves_the_cache_without_importing_torch(model, tmp_path):
    root = tmp_path / "cache"
    weights(model, root, null_draws=2)
    code = (
        "import sys, geomlib\n"
        f"ds = geomlib.load({str(model)!r}, cache_dir={str(root)!r})\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print(ds.sizes['layer'], ds.attrs['phase_method'])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["4", "changepoint:weights:ebic"]


def test_load_never_computes(model, tmp_path):
    root = tmp_path / "c"
    for kw in ({}, {"analyses": ["weights"]}, {"weights": {"null_draws": 0}}):
        with pytest.raises(SourceNotFoundError) as e:
            geomlib.load(model, cache_dir=root, **kw)
        msg = str(e.value)
        assert f"is cached for {str(model)!r}" in msg and "compute it first (geomlib compute" in msg, msg
        assert one_sentence(msg), msg
    assert not root.exists()  # nothing was written, not even the directory
    with pytest.raises(SourceNotFoundError):
        geomlib.cached(model, cache_dir=root)
    assert not root.exists()
    root.mkdir()  # an empty cache directory stays empty
    with pytest.raises(SourceNotFoundError, match="compute it first"):
        geomlib.load(model, "weights", cache_dir=root)
    assert list(root.iterdir()) == []
    # the source is never opened: a path that does not exist is "not cached", not "not found"
    with pytest.raises(SourceNotFoundError, match="is cached for .*compute it first"):
        geomlib.load(tmp_path / "no-such-model", cache_dir=root)


def test_load_names_what_is_missing_and_serves_what_is_there(model, tmp_path):
    root = tmp_path / "c"
    weights(model, root)
    files = _nc_files(root)
    # a named analysis that is not cached: refused, naming it, and still not computed
    with pytest.raises(SourceNotFoundError, match=r"heads is cached for .*--analyses heads\)"):
        geomlib.load(model, cache_dir=root, analyses=["weights", "heads"])
    # parameters select entries: other parameters are not cached either
    with pytest.raises(SourceNotFoundError, match="with those parameters"):
        geomlib.load(model, cache_dir=root, analyses=["weights"], weights={"null_draws": 4})
    assert _nc_files(root) == files
    # unnamed: whatever is cached
    ds = geomlib.load(model, cache_dir=root)
    assert ds.attrs["analyses"] == "weights" and ds.sizes["layer"] == 4
    ds = geomlib.load(model, cache_dir=[tmp_path / "elsewhere", root], weights={"null_draws": 0})
    assert ds.attrs["analyses"] == "weights"
    assert _nc_files(root) == files


def test_cache_root_from_environment(model, tmp_path, monkeypatch):
    monkeypatch.setenv("GEOMLIB_CACHE", str(tmp_path / "env-cache"))
    geomlib.compute(model, analyses=["weights"], progress=False, weights={"null_draws": 0})
    assert len(_nc_files(tmp_path / "env-cache")) == 1
    assert entries()[0].source == str(model)


def test_interrupted_write_leaves_no_loadable_file(model, tmp_path, monkeypatch):
    root = tmp_path / "cache"
    ds = weights(model, tmp_path / "first")
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
    with pytest.raises(geomlib.GeomlibError, match="weights-x.nc is damaged: it has no checksum record"):
        cache.read(bad)
    assert entries(tmp_path) == []
    assert [d.path for d in cache.scan(tmp_path)[1]] == [bad]


def test_bad_arguments(model, tmp_path):
    with pytest.raises(InvalidArgumentError, match="choose from weights"):
        geomlib.compute(model, analyses=["weights", "vibes"], cache_dir=tmp_path)
    with pytest.raises(InvalidArgumentError, match="unknown parameter.*null_drawz.*weights analysis"):
        geomlib.compute(model, cache_dir=tmp_path, weights={"null_drawz": 3})
    with pytest.raises(InvalidArgumentError, match="aligned_pairs"):
        geomlib.compute(model, cache_dir=tmp_path, weights={"aligned_pairs": "some"})
    with pytest.raises(InvalidArgumentError, match="heads parameter null_draws=1 is not allowed: one draw gives no "
                                                   "standard deviation"):
        geomlib.compute(model, cache_dir=tmp_path, heads={"null_draws": 1})
    with pytest.raises(InvalidArgumentError, match="precision"):
        geomlib.compute(model, cache_dir=tmp_path, gauge={"precision": "half"})
    with pytest.raises(InvalidArgumentError, match="heads parameter k=0 is not allowed; pass a value of at least 1"):
        geomlib.compute(model, cache_dir=tmp_path, heads={"k": 0})
    with pytest.raises(InvalidArgumentError, match="must be a dict"):
        geomlib.compute(model, cache_dir=tmp_path, heads=8)
    assert _nc_files(tmp_path) == []


@pytest.mark.parametrize("kw, words", [
    ({"null_draws": 0}, ["unknown keyword(s) null_draws", "a dict named after their analysis"]),  # old flat keyword
    ({"dynamic": False}, ["unknown keyword(s) dynamic"]),
    ({"analyses": ["weights"], "heads": {"k": 4}}, ["parameters were given for heads", "not among the analyses"]),
    ({"analyses": "heads", "weights": {"null_draws": 0}}, ["parameters were given for weights"]),
])
def test_flat_keywords_and_parameters_of_unselected_analyses_fail_in_one_sentence(model, tmp_path, kw, words):
    for source in (model, tmp_path / "no-such-model"):  # refused before the source is even opened
        with pytest.raises(InvalidArgumentError) as e:
            geomlib.compute(source, cache_dir=tmp_path / "c", progress=False, **kw)
        msg = str(e.value)
        assert one_sentence(msg), msg
        for w in words:
            assert w in msg, (w, msg)
    assert not (tmp_path / "c").exists()


def test_missing_tokenizer_computes_the_rest_and_warns_once(model, tmp_path):
    """A tokenizer-less checkpoint: every default analysis runs; only attn_entropy is skipped, and said so once."""
    root = tmp_path / "cache"
    with pytest.warns(GeomlibWarning) as record:
        ds = geomlib.compute(model, cache_dir=root, progress=False, weights={"null_draws": 0},
                             heads={"null_draws": 0}, gauge={"null_draws": 0})
    said = [str(w.message) for w in record if issubclass(w.category, GeomlibWarning)]
    assert len(said) == 1 and said[0].startswith("attn_entropy not computed: ") and "no tokenizer" in said[0], said
    assert ds.attrs["analyses"] == "weights,heads,gauge,spectra"
    assert [p.name.split("-")[0] for p in _nc_files(root)] == ["gauge", "heads", "spectra", "weights"]
    assert np.isnan(ds.attn_entropy).all()
    assert ds.attn_entropy.attrs["description"].startswith("not computed (") and \
        "no tokenizer" in ds.attn_entropy.attrs["description"]
    reason = said[0].removeprefix("attn_entropy not computed: ")
    assert ds.attrs["heads_not_computed"] == f"attn_entropy: {reason}"
    assert ds.attrs["warnings"].splitlines() == [said[0]]
    assert json.loads(ds.attrs["heads_params"])["forward_pass"] is False  # the key says what was computed
    assert np.isfinite(ds.head_cos).all() and np.isfinite(ds.head_singvals).all()
    assert np.isfinite(ds.cos.sel(family="q_proj")).all()
    # a second call is served from the cache (it says so again, but computes nothing)
    mtimes = [p.stat().st_mtime_ns for p in _nc_files(root)]
    with pytest.warns(GeomlibWarning, match="attn_entropy not computed"):
        geomlib.compute(model, cache_dir=root, progress=False, weights={"null_draws": 0}, heads={"null_draws": 0},
                        gauge={"null_draws": 0})
    assert [p.stat().st_mtime_ns for p in _nc_files(root)] == mtimes


def test_forward_pass_off_is_recorded_without_a_warning(model, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error", GeomlibWarning)
        ds = geomlib.compute(model, analyses=["heads"], cache_dir=tmp_path, progress=False,
                             heads={"null_draws": 0, "forward_pass": False})
    assert np.isnan(ds.attn_entropy).all() and ds.attrs["heads_not_computed"] == "attn_entropy: forward_pass=False"


def test_a_hard_problem_still_fails_before_any_work(tmp_path):
    """No q/k/o/v projections: the heads analysis refuses, and not even the weights analysis runs."""
    def plant(L, fresh, prev):
        for f in ("q_proj", "k_proj", "v_proj", "o_proj"):
            del fresh[f]
        return fresh

    path, _ = synthetic.build(tmp_path / "mlp-only", 3, plant, dtype=torch.float32)
    with pytest.raises(geomlib.GeomlibError, match="no q/k or o/v projections"):
        geomlib.compute(path, cache_dir=tmp_path / "c", progress=False, weights={"null_draws": 0})
    assert _nc_files(tmp_path / "c") == [] if (tmp_path / "c").exists() else True


def test_max_memory_is_accepted_and_not_in_the_cache_key(model, tmp_path):
    root = tmp_path / "c"
    kw = dict(analyses=["heads"], cache_dir=root, progress=False)
    a = geomlib.compute(model, **kw, heads={"null_draws": 0, "forward_pass": False, "max_memory": 2**30})
    (f,) = _nc_files(root)
    mtime = f.stat().st_mtime_ns
    b = geomlib.compute(model, **kw, heads={"null_draws": 0, "forward_pass": False})
    assert _nc_files(root) == [f] and f.stat().st_mtime_ns == mtime  # the same entry, served
    assert a.attrs["heads_cache_key"] == b.attrs["heads_cache_key"]
    assert "max_memory" not in json.loads(a.attrs["heads_params"])
    # and load finds it whatever budget is named
    found = geomlib.load(model, "heads", cache_dir=root,
                         heads={"null_draws": 0, "forward_pass": False, "max_memory": 1})
    assert found.attrs["heads_cache_key"] == a.attrs["heads_cache_key"]


def test_max_memory_reaches_the_forward_pass(tmp_path):
    path, _ = make_checkpoint_with_tokenizer(tmp_path / "m", "llama", n_layers=2)
    kw = dict(analyses=["heads"], cache_dir=tmp_path / "c", progress=False)
    small = geomlib.compute(path, **kw, heads={"null_draws": 0, "max_tokens": 32, "max_memory": 1})
    assert small.attrs["entropy_offloaded"] == 1  # a 1-byte budget: every layer offloaded
    assert np.isfinite(small.attn_entropy).all() and "heads_not_computed" in small.attrs
    assert small.attrs["heads_not_computed"] == ""
    full = geomlib.compute(path, **kw, heads={"null_draws": 0, "max_tokens": 32}, force=True)
    assert full.attrs["entropy_offloaded"] == 0 and full.attrs["heads_cache_key"] == small.attrs["heads_cache_key"]
    np.testing.assert_allclose(full.attn_entropy.values, small.attn_entropy.values, rtol=1e-12, atol=1e-12)


def test_netcdf_attrs_are_safe_types(model, tmp_path):
    ds = geomlib.compute(model, cache_dir=tmp_path, progress=False, weights={"null_draws": 0},
                         heads={"null_draws": 0, "forward_pass": False}, gauge={"null_draws": 0})
    for k, v in ds.attrs.items():
        assert isinstance(v, (str, int, float, np.integer, np.floating, np.ndarray)), (k, type(v))
    files = _nc_files(tmp_path)
    assert len(files) == 4
    for f in files:
        assert os.path.getsize(f) < 200_000, f
