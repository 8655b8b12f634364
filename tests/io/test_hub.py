"""Hub ids resolve offline against a Hugging Face cache laid out as huggingface_hub lays it out.

The cache is built by hand in ``tmp_path`` exactly as huggingface_hub 2.x
writes it (``file_download.hf_hub_download`` / ``_snapshot_download``):

* ``models--org--name/blobs/<id>``: one file per distinct content, named by
  the sha256 of the content for LFS files (weights) and by the git blob sha1
  for regular files (``config.json``);
* ``models--org--name/snapshots/<40-hex commit>/<file>``: relative symlinks
  ``../../blobs/<id>`` (one more ``../`` per sub-folder);
* ``models--org--name/refs/main``: the commit hash, with no trailing newline
  (``snapshot_download`` reads it with ``f.read()`` and does not strip);
* ``models--org--name/trees/<commit>.json``: the tree listing that
  ``snapshot_download`` caches, used to tell complete snapshots from partial ones.

Nothing is downloaded: ``HF_HUB_OFFLINE=1`` is set for every test.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch

import geomlib
from geomlib.errors import CorruptCheckpointError, GeomlibError, SourceNotFoundError, UnsafeFormatError
from tests.factories.hf import make_checkpoint
from tests.factories.hub import COMMIT, cache_repo
from tests.factories.hub import dir_files as _dir_files

REPO = "tiny-org/tiny-llama"
COMMIT2 = hashlib.sha1(b"second commit").hexdigest()


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Forbid downloads and make the default cache empty, whatever the machine has."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_HOME", raising=False)


@pytest.fixture(params=[None, "40KB"], ids=["single", "sharded"])
def cached(request, tmp_path):
    """(cache dir, local checkpoint dir) with the checkpoint cached as REPO at COMMIT."""
    src, _ = make_checkpoint(tmp_path / "src", "llama", torch.float32, n_layers=4, max_shard_size=request.param)
    names = {p.name for p in src.iterdir()}
    assert ("model.safetensors.index.json" in names) == (request.param is not None)
    cache = tmp_path / "hf-cache"
    cache_repo(cache, REPO, _dir_files(src))
    return cache, src


def _assert_same_layers(a, b) -> None:
    assert a.n_layers == b.n_layers
    for L in range(a.n_layers):
        la, lb = a.layer(L, dtype=torch.float32), b.layer(L, dtype=torch.float32)
        assert la.keys() == lb.keys() and la
        for fam in la:
            assert torch.equal(la[fam], lb[fam]), (L, fam)


def test_layout_is_what_huggingface_hub_expects(cached):
    """huggingface_hub's own cache scanner and lookup accept the hand-built layout."""
    from huggingface_hub import scan_cache_dir, snapshot_download, try_to_load_from_cache

    cache, src = cached
    info = scan_cache_dir(cache)
    assert info.warnings == []
    (repo,) = info.repos
    assert repo.repo_id == REPO and repo.repo_type == "model"
    (rev,) = repo.revisions
    assert rev.commit_hash == COMMIT and rev.refs == frozenset({"main"})
    assert {f.file_name for f in rev.files} == {p.name for p in src.iterdir()}
    hit = try_to_load_from_cache(REPO, "config.json", cache_dir=cache)
    assert isinstance(hit, str) and Path(hit).read_bytes() == (src / "config.json").read_bytes()
    snap = snapshot_download(REPO, cache_dir=cache, local_files_only=True)
    assert Path(snap).name == COMMIT
    assert os.readlink(Path(snap) / "config.json").startswith("../../blobs/")


def test_hf_cache_dir_argument_resolves_offline(cached):
    cache, src = cached
    with geomlib.open_model(REPO, hf_cache_dir=cache) as hub, geomlib.open_model(src) as local:
        assert hub.source == REPO
        assert hub.origin["resolved"].endswith(COMMIT)
        _assert_same_layers(hub, local)
        assert hub.identity == local.identity
        assert hub.summary() | {"source": ""} == local.summary() | {"source": ""}


def test_hf_hub_cache_env_resolves_offline(cached, monkeypatch):
    cache, src = cached
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    with geomlib.open_model(REPO) as hub, geomlib.open_model(src) as local:
        _assert_same_layers(hub, local)
        assert hub.identity == local.identity


def test_hf_home_env_resolves_offline(tmp_path, monkeypatch):
    """With only HF_HOME set, the cache is HF_HOME/hub, as huggingface_hub has it."""
    src, _ = make_checkpoint(tmp_path / "src", "llama", n_layers=2)
    cache_repo(tmp_path / "home" / "hub", REPO, _dir_files(src))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    with geomlib.open_model(REPO) as hub, geomlib.open_model(src) as local:
        _assert_same_layers(hub, local)


def test_revisions_resolve(tmp_path):
    """``@commit``, ``@branch`` and no revision each pick the snapshot they name."""
    a, _ = make_checkpoint(tmp_path / "src", "llama", n_layers=2, seed=1, name="a")
    b, _ = make_checkpoint(tmp_path / "src", "llama", n_layers=3, seed=2, name="b")
    cache = tmp_path / "cache"
    cache_repo(cache, REPO, _dir_files(a), commit=COMMIT, refs=("v1",))
    cache_repo(cache, REPO, _dir_files(b), commit=COMMIT2, refs=("main",))
    with geomlib.open_model(a) as la, geomlib.open_model(b) as lb:
        for source, want in [
            (f"{REPO}@{COMMIT}", la),
            (f"{REPO}@v1", la),
            (f"{REPO}@{COMMIT2}", lb),
            (f"{REPO}@main", lb),
            (REPO, lb),
        ]:
            with geomlib.open_model(source, hf_cache_dir=cache) as hub:
                assert hub.source == source
                assert hub.n_layers == want.n_layers
                assert hub.identity == want.identity
                _assert_same_layers(hub, want)


def test_partial_download_still_resolves(tmp_path):
    """A snapshot missing files geomlib does not need (README, a pickle copy) is usable.

    ``hf download org/name --include "*.json" "*.safetensors"`` records the full
    tree listing but fetches only some files; huggingface_hub then calls the
    snapshot incomplete, yet config and weights are all there.
    """
    src, _ = make_checkpoint(tmp_path / "src", "llama", n_layers=2)
    cache = tmp_path / "cache"
    cache_repo(cache, REPO, _dir_files(src), listed_only={"README.md": b"# tiny\n", "pytorch_model.bin": b"x" * 64})
    with geomlib.open_model(REPO, hf_cache_dir=cache) as hub, geomlib.open_model(src) as local:
        _assert_same_layers(hub, local)


def test_uncached_id_names_offline_and_cache(cached):
    cache, _ = cached
    for source in ("tiny-org/not-there", f"{REPO}@{'0' * 40}", f"{REPO}@no-such-branch"):
        with pytest.raises(SourceNotFoundError) as ei:
            geomlib.open_model(source, hf_cache_dir=cache)
        msg = str(ei.value)
        assert isinstance(ei.value, GeomlibError)
        assert "HF_HUB_OFFLINE" in msg and str(cache) in msg and source in msg
        assert "\n" not in msg


def test_uncached_id_with_env_cache_names_that_cache(tmp_path, monkeypatch):
    cache = tmp_path / "empty-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    with pytest.raises(SourceNotFoundError, match="HF_HUB_OFFLINE") as ei:
        geomlib.open_model("tiny-org/not-there")
    assert str(cache) in str(ei.value)


class _Trap:
    """Unpickling this creates ``path``: proof that a pickle was loaded."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_cached_pickle_only_repo_is_refused_unloaded(tmp_path):
    src, _ = make_checkpoint(tmp_path / "src", "llama", n_layers=2)
    marker = tmp_path / "unpickled"
    payload = pickle.dumps(_Trap(marker))
    # the trap works: loading it would leave the marker
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(_Trap(control))).close()
    assert control.exists()
    cache = tmp_path / "cache"
    cache_repo(cache, REPO, {"config.json": (src / "config.json").read_bytes(), "pytorch_model.bin": payload})
    with pytest.raises(UnsafeFormatError) as ei:
        geomlib.open_model(REPO, hf_cache_dir=cache)
    msg = str(ei.value)
    assert "pytorch_model.bin" in msg and "pickle" in msg and "arbitrary code" in msg and "\n" not in msg
    assert not marker.exists()


def test_cached_shard_missing_from_snapshot_is_corrupt(tmp_path):
    """An index naming a shard the snapshot lacks is reported, not silently skipped."""
    src, _ = make_checkpoint(tmp_path / "src", "llama", n_layers=3, max_shard_size="20KB")
    files = _dir_files(src)
    shard = sorted(f for f in files if f.endswith(".safetensors"))[-1]
    cache = tmp_path / "cache"
    cache_repo(cache, REPO, {k: v for k, v in files.items() if k != shard})
    with pytest.raises(CorruptCheckpointError, match="missing") as ei:
        geomlib.open_model(REPO, hf_cache_dir=cache)
    assert shard in str(ei.value)


def test_moved_cache_keeps_working(cached, tmp_path):
    """Relative symlinks survive moving the cache, as huggingface_hub intends."""
    cache, src = cached
    moved = tmp_path / "moved-cache"
    shutil.move(cache, moved)
    with geomlib.open_model(REPO, hf_cache_dir=moved) as hub, geomlib.open_model(src) as local:
        assert hub.identity == local.identity
        _assert_same_layers(hub, local)
