"""A checkpoint's identity covers every payload byte, on real files, and its per-file memo is only a shortcut.

An in-place edit (rows negated, the file's size and mtime kept) must give a
new identity and make ``geomlib.compute`` recompute; the same weights in one
file or in shards, or copied elsewhere, keep the identity; the memo
(:mod:`geomlib.io.digest`) spares a second hash and is ignored when corrupt or
unwritable.  ``digest.hashed_bytes`` counts the payload bytes actually hashed.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

import geomlib
from geomlib.io import digest
from tests.factories import synthetic
from tests.factories.gguf import write_gguf
from tests.factories.hf import make_checkpoint, tiny_model

# 30 of the 128 rows of a 128 x 32 float32 matrix: they lie between the five 64-byte windows the
# sampled identity of old hashed (rows 0, 31-32, 63-64, 95-96, 127), which missed this edit
ROWS = slice(33, 63)


@pytest.fixture
def memos(tmp_path, monkeypatch) -> Path:
    """This test's own memo directory."""
    d = tmp_path / "digest-memos"
    monkeypatch.setenv("GEOMLIB_DIGEST_CACHE", str(d))
    return d


def _settle(*paths: Path) -> None:
    """Wait until the files are old enough to be memoised (a file changed in the last clock ticks is not)."""
    ctimes = [p.stat().st_ctime_ns for p in paths]
    time.sleep(2.1 if any(c % 1_000_000_000 == 0 for c in ctimes) else 0.1)


def _negate_f32_rows(path: Path, offset: int, row_bytes: int, rows: slice) -> None:
    """Negate float32 rows ``rows`` of the tensor at byte ``offset``, in place, then restore the mtime."""
    before = path.stat()
    start, n = offset + rows.start * row_bytes, (rows.stop - rows.start) * row_bytes
    with path.open("r+b") as f:
        f.seek(start)
        values = np.frombuffer(f.read(n), dtype="<f4")
        assert values.size and np.all(values != 0)
        f.seek(start)
        f.write((-values).tobytes())
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    # what a fingerprint of size and mtime alone would see: nothing changed
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (before.st_size, before.st_mtime_ns, before.st_ino)


def _safetensors_offset(path: Path, name: str) -> tuple[int, int]:
    """``(file offset of tensor name's data, bytes per row)`` from the file's own header."""
    with path.open("rb") as f:
        n = int.from_bytes(f.read(8), "little")
        entry = json.loads(f.read(n))[name]
    assert entry["dtype"] == "F32"
    return 8 + n + entry["data_offsets"][0], math.prod(entry["shape"][1:]) * 4


def _gguf_offset(path: Path, name: str) -> tuple[int, int]:
    import gguf

    t = next(t for t in gguf.GGUFReader(path, "r").tensors if t.name == name)
    assert t.tensor_type == gguf.GGMLQuantizationType.F32
    return int(t.data_offset), int(t.shape[0]) * 4  # ggml lists the row length first


def _weights(source, root):
    return geomlib.compute(source, analyses=["weights"], cache_dir=root, progress=False, weights={"null_draws": 0})


def _safetensors_model(tmp_path):
    path, _ = synthetic.build(tmp_path / "st", 3, dtype=torch.float32, inter=128)
    f = path / "model.safetensors"
    return path, f, _safetensors_offset(f, "model.layers.1.mlp.gate_proj.weight")


def _gguf_model(tmp_path):
    f = write_gguf(tmp_path / "m.gguf", tiny_model("llama", 3, intermediate_size=128), "llama")
    return f, f, _gguf_offset(f, "blk.1.ffn_gate.weight")


MODELS = {"safetensors": _safetensors_model, "gguf": _gguf_model}


@pytest.mark.parametrize("fmt", MODELS)
def test_an_in_place_edit_gives_a_new_identity_and_compute_recomputes(tmp_path, memos, fmt):
    source, f, (offset, row_bytes) = MODELS[fmt](tmp_path)
    _settle(f)
    root = tmp_path / "cache"
    before = _weights(source, root)
    assert list(memos.glob("*.json")), "the first identity leaves a memo"

    _negate_f32_rows(f, offset, row_bytes, ROWS)
    hashed = digest.hashed_bytes
    after = _weights(source, root)
    assert digest.hashed_bytes > hashed  # the memo no longer matched (ctime), so the file was hashed again
    assert after.attrs["identity"] != before.attrs["identity"]
    assert after.attrs["identity"] == geomlib.open_model(source).identity

    # the numbers are those of the edited weights, not the cached ones
    gate = dict(family="gate_proj", layer=1)
    assert not np.allclose(after.cos.sel(**gate).values, before.cos.sel(**gate).values)
    fresh = _weights(source, tmp_path / "fresh-cache")
    xr.testing.assert_allclose(after.cos, fresh.cos)
    assert len({p.parent for p in root.rglob("*.nc")}) == 2  # one model directory per identity


@pytest.mark.parametrize("threads", ["1", "2"])
def test_one_file_and_shards_have_the_same_identity(tmp_path, memos, monkeypatch, threads):
    monkeypatch.setenv("GEOMLIB_THREADS", threads)  # 2: the shards are hashed on two threads
    single, _ = make_checkpoint(tmp_path, "llama", n_layers=2, name="single")
    sharded, _ = make_checkpoint(tmp_path, "llama", n_layers=2, name="sharded", max_shard_size="8KB")
    shards = sorted(sharded.glob("*.safetensors"))
    assert len(shards) > 2
    _settle(*shards, single / "model.safetensors")
    assert geomlib.open_model(single).identity == geomlib.open_model(sharded).identity
    assert len(list(memos.glob("*.json"))) == 1 + len(shards)  # one memo per file


def test_a_copy_elsewhere_has_the_same_identity(tmp_path, memos):
    path, _ = synthetic.build(tmp_path / "a", 2, dtype=torch.float32)
    _settle(path / "model.safetensors")
    identity = geomlib.open_model(path).identity
    copy = shutil.copytree(path, tmp_path / "elsewhere" / "b")  # new path, inode and ctime
    assert (copy / "model.safetensors").stat().st_ino != (path / "model.safetensors").stat().st_ino
    hashed = digest.hashed_bytes
    assert geomlib.open_model(copy).identity == identity
    assert digest.hashed_bytes > hashed  # another file: hashed, not taken from the original's memo


@pytest.mark.parametrize("fmt", MODELS)
def test_the_memo_spares_a_second_hash(tmp_path, memos, fmt):
    source, f, _ = MODELS[fmt](tmp_path)
    _settle(f)
    hashed = digest.hashed_bytes
    first = geomlib.open_model(source).identity
    payload = digest.hashed_bytes - hashed
    assert 0.9 * f.stat().st_size < payload <= f.stat().st_size  # every payload byte, once
    (memo,) = memos.glob("*.json")
    assert json.loads(memo.read_text())["path"] == str(f.resolve())

    hashed = digest.hashed_bytes
    assert geomlib.open_model(source).identity == first
    assert digest.hashed_bytes == hashed  # nothing hashed: the digests came from the memo


@pytest.mark.parametrize("garbage", [b"\x00\xffnot json", b"[1, 2]", b'{"version": 1}', "stale"])
def test_a_corrupt_memo_is_ignored(tmp_path, memos, garbage):
    path, _ = synthetic.build(tmp_path / "m", 2, dtype=torch.float32)
    _settle(path / "model.safetensors")
    identity = geomlib.open_model(path).identity
    (memo,) = memos.glob("*.json")
    if garbage == "stale":  # the right file and fingerprint, but wrong digests and a wrong type
        data = json.loads(memo.read_text())
        first = next(iter(data["tensors"]))
        data["tensors"] = {first: [data["tensors"][first][0], "zz" * 32], "other": "x"}
        memo.write_text(json.dumps(data))
    else:
        memo.write_bytes(garbage)
    hashed = digest.hashed_bytes
    assert geomlib.open_model(path).identity == identity
    assert digest.hashed_bytes > hashed
    assert json.loads(memo.read_text())["version"] == digest.VERSION  # rewritten whole


def test_an_unwritable_memo_directory_does_not_fail_the_run(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("GEOMLIB_DIGEST_CACHE", str(blocker / "digests"))
    path, _ = synthetic.build(tmp_path / "m", 2, dtype=torch.float32)
    _settle(path / "model.safetensors")
    ckpt = geomlib.open_model(path)
    assert len(ckpt.identity) == 64
    assert blocker.read_text() == "not a directory"


def test_a_file_changed_in_the_current_clock_tick_is_not_memoised(tmp_path, memos, monkeypatch):
    """A second write within the timestamp tick of the hashed one would keep the fingerprint ("racy git")."""
    path, _ = synthetic.build(tmp_path / "m", 2, dtype=torch.float32)
    ctime = (path / "model.safetensors").stat().st_ctime_ns
    monkeypatch.setattr(digest, "time", types.SimpleNamespace(time_ns=lambda: ctime + 1_000_000))  # 1 ms later
    geomlib.open_model(path).identity
    assert not list(memos.glob("*.json"))
    monkeypatch.setattr(digest, "time", types.SimpleNamespace(time_ns=lambda: ctime + 3_000_000_000))  # 3 s later
    geomlib.open_model(path).identity
    assert len(list(memos.glob("*.json"))) == 1
