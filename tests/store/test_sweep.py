"""geomlib.sweep in this process (scheduler="serial"): the checkpoint list, the assembled Dataset, failures.

The Dask paths (a real LocalCluster, a killed worker, a scheduler address) are in test_cluster.py; they
are checked against the serial path built here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import geomlib
from geomlib.errors import GeomlibError, InvalidArgumentError, SourceNotFoundError
from geomlib.store import cache
from geomlib.store.sweep import Item, items_of, load_sweep, sweep, sweeps
from tests.factories import synthetic


def make_run(root: Path, n: int = 3, n_layers: int = 3) -> list[Path]:
    """``n`` checkpoints of one architecture: a random start and small drifts of it, as training makes."""
    out = []
    _, base = synthetic.build(root / "step-00000", n_layers=n_layers, seed=0)
    out.append(root / "step-00000")
    for k in range(1, n):
        drift = 0.3 * k

        def plant(L, fresh, prev, drift=drift):
            return {f: base[L][f] + drift * (fresh[f] - 1 if fresh[f].ndim == 1 else fresh[f]) for f in fresh}

        synthetic.build(root / f"step-{100 * k:05d}", n_layers=n_layers, seed=k, plant=plant)
        out.append(root / f"step-{100 * k:05d}")
    return out


@pytest.fixture(scope="module")
def run_dirs(tmp_path_factory) -> list[Path]:
    return make_run(tmp_path_factory.mktemp("run"))


def test_items_from_paths_read_steps_from_names(run_dirs):
    items = items_of([str(p) for p in run_dirs])
    assert [it.label for it in items] == ["step-00000", "step-00100", "step-00200"]
    assert [it.step for it in items] == [0, 100, 200]
    assert all(Path(it.source).is_absolute() for it in items)


def test_items_from_hub_revisions():
    items = items_of("EleutherAI/pythia-160m", revisions="step1000,step2000,main")
    assert items == [Item("EleutherAI/pythia-160m@step1000", "step1000", 1000),
                     Item("EleutherAI/pythia-160m@step2000", "step2000", 2000),
                     Item("EleutherAI/pythia-160m@main", "main", None)]


def test_items_from_manifest(tmp_path, run_dirs):
    doc = {"checkpoints": [{"label": f"s{k}", "step": 10 * k, "path": str(p), "loss": 3.0 - k, "note": "x"}
                           for k, p in enumerate(run_dirs)]}
    (tmp_path / "sweep.json").write_text(json.dumps(doc))
    items = items_of(tmp_path)
    assert [(it.label, it.step, it.source) for it in items] == [(f"s{k}", 10 * k, str(p.resolve()))
                                                               for k, p in enumerate(run_dirs)]
    assert [it.extra for it in items] == [(("loss", 3.0 - k),) for k in range(len(run_dirs))]
    ds = sweep(tmp_path, ["weights"], tmp_path / "c", scheduler="serial", compare=False, progress=False)
    assert list(ds["loss"].values) == [3.0, 2.0, 1.0] and ds["loss"].dims == ("checkpoint",)


@pytest.mark.parametrize("kw, words", [
    (dict(sources=["a/b", "c/d"], revisions="x,y"), "exactly one hub id"),
    (dict(sources="a/b@main", revisions="x"), "exactly one hub id"),
    (dict(sources="a/b", revisions="x,,y"), "empty entry"),
    (dict(sources="a/b", revisions="x/y"), "without"),
    (dict(sources=["p", "q"], labels="one"), "1 labels were given for 2"),
    (dict(sources=["p", "q"], steps="1,x"), "whole numbers"),
    (dict(sources=["p", "q"], labels="same,same"), "occur twice"),
    (dict(sources=[]), "at least one source"),
])
def test_bad_lists_are_refused_in_one_sentence(kw, words):
    with pytest.raises(InvalidArgumentError) as err:
        items_of(**kw)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_bad_manifest_is_refused(tmp_path):
    (tmp_path / "sweep.json").write_text('{"checkpoints": [{"label": "a"}]}')
    with pytest.raises(InvalidArgumentError, match="not a sweep manifest"):
        items_of(tmp_path)


def test_serial_sweep_equals_each_checkpoint_computed_alone(tmp_path, run_dirs):
    ds = sweep([str(p) for p in run_dirs], ["weights", "gauge"], tmp_path / "c", scheduler="serial",
               compare=False, progress=False)
    assert list(ds["checkpoint"].values) == ["step-00000", "step-00100", "step-00200"]
    assert list(ds["step"].values) == [0, 100, 200]
    for p in run_dirs:
        one = geomlib.compute(str(p.resolve()), ["weights", "gauge"], tmp_path / "alone", progress=False, threads=1)
        got = ds.sel(checkpoint=p.name)
        for v in ("cos", "mlp_matched_cos", "head_matched_cos", "phase"):
            np.testing.assert_array_equal(got[v].values, one[v].values)
        assert str(got["identity"].values) == one.attrs["identity"]
    assert ds.attrs["failed"] == "" and ds.attrs["source"] == "sweep:step-00000"


def test_sweep_is_cached_for_the_dashboard_and_listed(tmp_path, run_dirs):
    root = tmp_path / "c"
    ds = sweep([str(p) for p in run_dirs[:2]], ["weights"], root, scheduler="serial", compare=False,
               progress=False, name="tiny run")
    assert sweeps(root) == ["tiny run"]
    back = load_sweep("tiny run", root)
    xr.testing.assert_equal(back, ds)  # values and coordinates; netCDF stores a one-item list attribute as a scalar
    entry = [e for e in cache.entries(root) if e.analysis == "sweep"]
    assert len(entry) == 1 and entry[0].source == "sweep:tiny run"
    assert cache.verify(entry[0].path) is None  # written with its checksum record
    # a sweep entry is not a model: the model's own cached analyses still load alone
    assert set(geomlib.load(str(run_dirs[0].resolve()), cache_dir=root).attrs["analyses"].split(",")) == {"weights"}
    with pytest.raises(SourceNotFoundError, match="no sweep named 'other'"):
        load_sweep("other", root)


def test_a_bad_source_is_reported_and_the_rest_complete(tmp_path, run_dirs):
    missing = tmp_path / "no-such-checkpoint"
    srcs = [str(run_dirs[0]), str(missing), str(run_dirs[1])]
    ds = sweep(srcs, ["weights"], tmp_path / "c", scheduler="serial", compare=False, progress=False)
    assert list(ds["checkpoint"].values) == ["step-00000", "step-00100"]
    failed = ds.attrs["failed"].splitlines()
    assert len(failed) == 1 and failed[0].startswith(f"{missing}: ") and "is not an existing file" in failed[0]


def test_every_source_bad_is_an_error(tmp_path):
    with pytest.raises(GeomlibError, match="every checkpoint of the sweep failed"):
        sweep([str(tmp_path / "a"), str(tmp_path / "b")], ["weights"], tmp_path / "c", scheduler="serial",
              compare=False, progress=False)


def test_bad_arguments_fail_before_any_work(tmp_path, run_dirs):
    srcs = [str(p) for p in run_dirs]
    with pytest.raises(InvalidArgumentError, match="null_draws"):
        sweep(srcs, ["weights"], tmp_path / "c", scheduler="serial", weights={"null_draws": -1}, progress=False)
    with pytest.raises(InvalidArgumentError, match="not a Dask scheduler address"):
        sweep(srcs, ["weights"], tmp_path / "c", scheduler="localhost:8786", progress=False)
    with pytest.raises(InvalidArgumentError, match="not an amount of memory"):
        sweep(srcs, ["weights"], tmp_path / "c", memory_per_worker="lots", progress=False)
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").glob("*/*.nc"))


def test_consecutive_compares_skip_a_failed_checkpoint(tmp_path, run_dirs):
    missing = tmp_path / "no-such-checkpoint"
    srcs = [str(run_dirs[0]), str(missing), str(run_dirs[1]), str(run_dirs[2])]
    ds = sweep(srcs, ["weights"], tmp_path / "c", scheduler="serial", progress=False)
    assert list(ds["previous"].values) == ["", "step-00000", "step-00100"]
    a, b = (str(p.resolve()) for p in run_dirs[:2])
    direct = geomlib.compare(a, b, tmp_path / "direct", progress=False, threads=1)
    got = ds.sel(checkpoint="step-00100")
    fams = direct["family"]
    np.testing.assert_array_equal(got["prev_raw_cos"].sel(family=fams).values, direct["raw_cos"].values)
    n = direct.sizes["layer"]
    for v in ("raw_cos", "mlp_matched_cos", "head_matched_cos"):
        diag = direct[v].values[..., np.arange(n), np.arange(n)]
        moved = got[f"moved_{v}"]
        moved = moved.sel(family=fams) if "family" in moved.dims else moved
        np.testing.assert_array_equal(moved.values, diag)
    assert np.isnan(ds["moved_raw_cos"].sel(checkpoint="step-00000")).all()  # nothing before the first
    # the later the checkpoint, the more its layers drifted from the start (drift 0.3 k of fresh weights)
    assert (ds["moved_mlp_matched_cos"].sel(checkpoint="step-00100", mlp_view="mean") < 1).all()
    assert ds.attrs["failed"].splitlines()[0].startswith(f"{missing}: ")


def test_compare_of_the_same_checkpoint_twice_has_not_moved(tmp_path, run_dirs):
    same = tmp_path / "copy"
    same.mkdir()
    for f in run_dirs[0].iterdir():
        (same / f.name).write_bytes(f.read_bytes())
    ds = sweep([str(run_dirs[0]), str(same)], ["weights"], tmp_path / "c", scheduler="serial", progress=False,
               labels="first,copy", steps="0,0")
    np.testing.assert_allclose(ds["moved_mlp_matched_cos"].sel(checkpoint="copy").values, 1.0, atol=1e-12)
    raw = ds["moved_raw_cos"].sel(checkpoint="copy")
    np.testing.assert_allclose(raw.sel(family=[f for f in raw.family.values if raw.sel(family=f).notnull().all()]),
                               1.0, atol=1e-12)


def test_hub_revisions_sweep_offline(tmp_path, run_dirs, monkeypatch):
    from tests.factories.hub import cache_repo, dir_files

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hf = tmp_path / "hf"
    for k, p in enumerate(run_dirs[:2]):
        cache_repo(hf, "tiny-org/run", dir_files(p), commit=f"{k + 1:040x}", refs=(f"step{1000 * k}",))
    ds = sweep("tiny-org/run", ["weights"], tmp_path / "c", revisions="step0,step1000", scheduler="serial",
               progress=False, hf_cache_dir=hf)
    assert list(ds["checkpoint"].values) == ["step0", "step1000"] and list(ds["step"].values) == [0, 1000]
    assert list(ds["source"].values) == ["tiny-org/run@step0", "tiny-org/run@step1000"]
    alone = geomlib.compute(str(run_dirs[1].resolve()), ["weights"], tmp_path / "alone", progress=False, threads=1)
    xr.testing.assert_equal(ds["cos"].sel(checkpoint="step1000", drop=True), alone["cos"])
    assert ds.attrs["sweep_name"] == "tiny-org/run"
