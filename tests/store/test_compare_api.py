"""``geomlib.compare``'s cache: one entry per (A, B, parameters) in A's directory, served, forced, repaired,
and invisible to ``load``/``cached`` of A while ``geomlib list`` and ``geomlib cache verify|clean`` handle it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr

import geomlib
from geomlib.errors import CacheError, SourceNotFoundError
from geomlib.store import cache
from tests.factories import synthetic


@pytest.fixture
def two(tmp_path):
    a, _ = synthetic.build(tmp_path / "tiny-a", 3, seed=0, dtype=torch.float32)
    b, _ = synthetic.build(tmp_path / "tiny-b", 3, seed=1, dtype=torch.float32)
    return str(a), str(b)


def _cmp(a, b, root, **kw):
    return geomlib.compare(a, b, root, progress=False, null_draws=0, **kw)


def _entries(root):
    return sorted(root.rglob("compare-*.nc"))


def test_one_entry_in_a_directory_served_then_forced(two, tmp_path):
    a, b = two
    root = tmp_path / "cache"
    ds1 = _cmp(a, b, root)
    files = _entries(root)
    assert len(files) == 1 and cache.record_path(files[0]).exists()
    with geomlib.open_model(a) as ca:
        want_dir = cache.model_dir(root, ca.source, ca.identity)
    assert files[0].parent == want_dir and files[0].name == f"compare-{ds1.attrs['cache_key']}.nc"
    mtime = files[0].stat().st_mtime_ns
    ds2 = _cmp(a, b, root)
    assert files[0].stat().st_mtime_ns == mtime  # served from the cache, not recomputed
    xr.testing.assert_identical(ds1, ds2)
    ds3 = _cmp(a, b, root, force=True)
    assert files[0].stat().st_mtime_ns != mtime and _entries(root) == files
    xr.testing.assert_identical(ds1.drop_attrs(), ds3.drop_attrs())
    for k in ("source_a", "source_b", "identity_a", "identity_b", "arch_a", "arch_b", "n_layers_a", "n_layers_b",
              "params", "created", "geomlib_version", "torch_version", "device", "threads", "warnings",
              "symmetry_group", "cache_key", "schema_version"):
        assert k in ds1.attrs, k
    assert ds1.attrs["analysis"] == "compare" and ds1.attrs["source_b"] == b


def test_parameters_and_either_identity_enter_the_key(two, tmp_path):
    a, b = two
    root = tmp_path / "cache"
    k0 = _cmp(a, b, root).attrs["cache_key"]
    assert _cmp(a, b, root, seed=1).attrs["cache_key"] != k0
    assert _cmp(b, a, root).attrs["cache_key"] != k0  # B's directory, B's identity first
    assert len(_entries(root)) == 3
    # B's weights change in place (same path): a new entry, never the old numbers
    synthetic.build(tmp_path / "tiny-b", 3, seed=2, dtype=torch.float32)
    ds = _cmp(a, b, root)
    assert ds.attrs["cache_key"] != k0 and len(_entries(root)) == 4
    with geomlib.open_model(b) as cb:
        assert ds.attrs["identity_b"] == cb.identity


def test_a_corrupt_entry_is_recomputed(two, tmp_path, capsys):
    a, b = two
    root = tmp_path / "cache"
    ds1 = _cmp(a, b, root)
    path = _entries(root)[0]
    path.write_bytes(path.read_bytes()[:100])  # truncated
    ds2 = geomlib.compare(a, b, root, progress=True, null_draws=0)
    assert "is damaged" in capsys.readouterr().err
    xr.testing.assert_identical(ds1.drop_attrs(), ds2.drop_attrs())
    assert cache.verify(path) is None


def test_load_and_cached_of_a_ignore_compare_entries(two, tmp_path):
    a, b = two
    root = tmp_path / "cache"
    _cmp(a, b, root)
    with pytest.raises(SourceNotFoundError):  # only a compare entry: nothing of A's own analyses is cached
        geomlib.load(a, cache_dir=root)
    geomlib.compute(a, "weights", root, progress=False, weights={"null_draws": 0})
    before = geomlib.load(a, cache_dir=root)
    _cmp(a, b, root, seed=3)
    for ds in (geomlib.load(a, cache_dir=root), geomlib.cached(a, cache_dir=root)):
        assert ds.attrs["analyses"] == "weights" and "raw_cos" not in ds and "layer" in ds.dims
        xr.testing.assert_identical(ds.drop_attrs(), before.drop_attrs())
    # a damaged compare entry neither breaks nor marks A's own results
    path = _entries(root)[0]
    path.write_bytes(b"garbage")
    ds = geomlib.load(a, cache_dir=root)
    assert "damaged" not in ds.attrs and ds.attrs["analyses"] == "weights"


def test_cli_list_verify_and_clean_handle_compare_entries(two, tmp_path, run_cli):
    a, b = two
    root = tmp_path / "cache"
    _cmp(a, b, root)
    geomlib.compute(a, "weights", root, progress=False, weights={"null_draws": 0})
    out = run_cli("list", "--cache", root)
    assert out.code == 0 and f"compare with {b}" in out.out and "weights" in out.out
    line = next(line for line in out.out.splitlines() if "compare with" in line)
    assert line.startswith(a) and " compare " in line
    verify = run_cli("cache", "verify", "--cache", root)
    assert verify.code == 0 and "2 intact, 0 damaged" in verify.out
    assert "nothing to clean" in run_cli("cache", "clean", "--cache", root).out
    path = _entries(root)[0]
    path.write_bytes(path.read_bytes()[:64])
    verify = run_cli("cache", "verify", "--cache", root)
    assert verify.code == 1 and str(path) in verify.out
    clean = run_cli("cache", "clean", "--cache", root)
    assert clean.code == 0 and str(path) in clean.out and not path.exists()
    assert run_cli("cache", "verify", "--cache", root).code == 0


def test_a_cache_that_is_a_file_is_refused_before_any_work(two, tmp_path):
    a, b = two
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(CacheError, match="is a file, not a directory"):
        _cmp(a, b, f)


def test_threads_are_applied_and_recorded(two, tmp_path):
    a, b = two
    before = torch.get_num_threads()
    ds = _cmp(a, b, tmp_path / "cache", threads=1)
    assert ds.attrs["threads"] == 1 and torch.get_num_threads() == before
    assert np.isfinite(ds.mlp_matched_cos).all()
