"""The safetensors store reads what the ``safetensors`` library reads, and only what it is asked for.

Reference values always come from ``safetensors.torch.load_file``, never from
geomlib.  Damaged files are refused when the checkpoint is opened, with a
message naming the file.  That one layer costs one layer's bytes is measured by
the kernel (``rchar`` of ``/proc/self/io``: bytes returned by read-like system
calls), not by geomlib's own counters.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import geomlib
from geomlib.errors import CorruptCheckpointError
from geomlib.io.safetensors_store import DTYPES, SafetensorsStore
from tests.factories.hf import make_checkpoint

FLOAT_DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]


def _reference(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint directory as the safetensors library loads it."""
    out: dict[str, torch.Tensor] = {}
    for f in sorted(path.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-for-bit equality (also for float8 and NaN payloads, which ``torch.equal`` mishandles)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8))


def _store(path: Path) -> SafetensorsStore:
    return SafetensorsStore([path.name], lambda f: path.parent / f, str(path))


def _raw_file(path: Path, header: dict, data: bytes = b"", header_len: int | None = None) -> Path:
    """Write a safetensors file by hand: 8-byte little-endian length, JSON header, data."""
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)  # the format pads the header with spaces to 8 bytes
    path.write_bytes(struct.pack("<Q", len(raw) if header_len is None else header_len) + raw + data)
    return path


# -- values ------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: str(d).split(".")[-1])
@pytest.mark.parametrize("shard", [None, "20KB"], ids=["single", "sharded"])
def test_every_tensor_equals_safetensors_load_file(tmp_path, dtype, shard):
    path, _ = make_checkpoint(tmp_path, "llama", dtype, n_layers=3, max_shard_size=shard)
    assert (len(list(path.glob("*.safetensors"))) > 1) == (shard is not None)
    ref = _reference(path)
    with geomlib.open_model(path) as ckpt:
        store = ckpt._store
        assert store.names() == sorted(ref)
        tag = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64"}[dtype]
        assert ckpt.dtype == tag
        for name, want in ref.items():
            assert store.info(name).shape == tuple(want.shape)
            assert store.info(name).dtype == tag
            got = store.read(name)
            assert _same(got, want), name
        assert store.bytes_read == sum(t.numel() * t.element_size() for t in ref.values())


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: str(d).split(".")[-1])
def test_layer_is_the_stored_values_upcast(tmp_path, dtype):
    """``layer(L)`` in float64 equals the file's tensor converted, for every storage dtype."""
    path, _ = make_checkpoint(tmp_path, "llama", dtype, n_layers=2)
    ref = _reference(path)
    with geomlib.open_model(path) as ckpt:
        for L in range(2):
            W = ckpt.layer(L)
            names = ckpt.tensor_names(L)
            for fam, w in W.items():
                assert w.dtype == torch.float64
                assert torch.equal(w, ref[names[fam]].to(torch.float64)), (L, fam)


def test_every_safetensors_dtype_round_trips(tmp_path):
    """Every dtype the store maps (ints, bools, float8), scalars and empty tensors included."""
    gen = torch.Generator().manual_seed(0)
    tensors = {}
    for tag, (dt, size) in DTYPES.items():
        assert torch.empty(0, dtype=dt).element_size() == size
        if dt == torch.bool:
            t = torch.rand(5, 3, generator=gen) > 0.5
        elif dt.is_floating_point:
            t = (torch.randn(5, 3, generator=gen) * 4).to(dt)
        else:
            lo = 0 if dt in (torch.uint8, torch.uint16, torch.uint32, torch.uint64) else -100
            t = torch.randint(lo, 100, (5, 3), generator=gen, dtype=torch.int64).to(dt)
        tensors[f"m.{tag}"] = t
        tensors[f"s.{tag}"] = t[0, 0].clone()  # shape []
        tensors[f"e.{tag}"] = t[:0]  # shape [0, 3], zero bytes
    f = tmp_path / "all.safetensors"
    save_file(tensors, f, metadata={"format": "pt"})
    ref = load_file(f)
    store = _store(f)
    try:
        assert store.names() == sorted(ref)
        for name, want in ref.items():
            assert store.info(name).dtype == name.split(".")[1]
            assert _same(store.read(name), want), name
    finally:
        store.close()


def test_sharded_reads_like_unsharded(tmp_path):
    one, _ = make_checkpoint(tmp_path, "llama", torch.bfloat16, n_layers=4, name="one")
    many, _ = make_checkpoint(tmp_path, "llama", torch.bfloat16, n_layers=4, max_shard_size="20KB", name="many")
    assert len(list(many.glob("*.safetensors"))) > 2
    with geomlib.open_model(one) as a, geomlib.open_model(many) as b:
        assert a.summary() | {"source": "", "identity": ""} == b.summary() | {"source": "", "identity": ""}
        for L in range(4):
            for read in ("layer", "biases"):
                x, y = getattr(a, read)(L), getattr(b, read)(L)
                assert x.keys() == y.keys()
                assert all(torch.equal(x[k], y[k]) for k in x), (L, read)
            assert a.layer_nbytes(L) == b.layer_nbytes(L)


def test_sharded_gpt2_with_biases_reads_like_unsharded(tmp_path):
    """A fused-qkv architecture with biases, split across shards."""
    one, _ = make_checkpoint(tmp_path, "gpt2", n_layers=3, name="one")
    many, _ = make_checkpoint(tmp_path, "gpt2", n_layers=3, max_shard_size="10KB", name="many")
    assert len(list(many.glob("*.safetensors"))) > 2
    with geomlib.open_model(one) as a, geomlib.open_model(many) as b:
        for L in range(3):
            x, y = a.layer(L), b.layer(L)
            bx, by = a.biases(L), b.biases(L)
            assert x.keys() == y.keys() and bx.keys() == by.keys() and bx
            assert all(torch.equal(x[k], y[k]) for k in x) and all(torch.equal(bx[k], by[k]) for k in bx)


# -- damaged files --------------------------------------------------------------------------


def _refused_at_open(source, *words: str) -> str:
    with pytest.raises(CorruptCheckpointError) as ei:
        geomlib.open_model(source)
    msg = str(ei.value)
    assert isinstance(ei.value, geomlib.GeomlibError) and "\n" not in msg
    for w in words:
        assert w in msg, (w, msg)
    return msg


@pytest.mark.parametrize(
    "keep",
    [lambda n: n - 1, lambda n: n // 2, lambda n: 200, lambda n: 20, lambda n: 4],
    ids=["last-byte", "half", "in-header", "header-start", "in-length"],
)
def test_truncated_file_refused_at_open(tmp_path, keep):
    path, _ = make_checkpoint(tmp_path, "llama", n_layers=2)
    f = path / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: keep(len(data))])
    _refused_at_open(path, str(f), "truncated", "re-download")


def test_truncated_shard_refused_at_open(tmp_path):
    path, _ = make_checkpoint(tmp_path, "llama", n_layers=3, max_shard_size="20KB")
    shard = sorted(path.glob("model-*.safetensors"))[1]
    shard.write_bytes(shard.read_bytes()[:-8])
    _refused_at_open(path, str(shard), "truncated")


def test_file_shrunk_after_open_is_reported_on_read(tmp_path):
    """The descriptor is opened lazily; a file cut later is still not read past its end."""
    path, _ = make_checkpoint(tmp_path, "llama", n_layers=2)
    f = path / "model.safetensors"
    with geomlib.open_model(path) as ckpt:
        f.write_bytes(f.read_bytes()[:-4096])
        with pytest.raises(CorruptCheckpointError, match="truncated"):
            ckpt.layer(1)


def test_garbage_header_length_refused(tmp_path):
    path, _ = make_checkpoint(tmp_path, "llama", n_layers=2)
    f = path / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[:8] = b"\xff" * 8
    f.write_bytes(bytes(data))
    _refused_at_open(path, str(f), "not a safetensors file", "header")


@pytest.mark.parametrize("delta", [-7, +9], ids=["too-short", "too-long"])
def test_header_length_off_by_a_few_refused(tmp_path, delta):
    """A plausible length that cuts the JSON, or runs into the binary data."""
    path, _ = make_checkpoint(tmp_path, "llama", n_layers=2)
    f = path / "model.safetensors"
    data = bytearray(f.read_bytes())
    n = int.from_bytes(data[:8], "little")
    data[:8] = (n + delta).to_bytes(8, "little")
    f.write_bytes(bytes(data))
    _refused_at_open(path, str(f), "unreadable safetensors header")


def test_not_a_safetensors_file_at_all(tmp_path):
    path, _ = make_checkpoint(tmp_path, "llama", n_layers=2)
    (path / "model.safetensors").write_bytes(b"PK\x03\x04" + b"\0" * 4096)  # a zip (torch.save) file
    _refused_at_open(path, "model.safetensors")


@pytest.mark.parametrize(
    "entry, words",
    [
        ({"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 12]}, ["not 16 bytes long"]),
        ({"dtype": "F32", "shape": [2, 4], "data_offsets": [0, 32]}, ["truncated", "only 16 bytes"]),
        ({"dtype": "Q4_K", "shape": [2, 2], "data_offsets": [0, 16]}, ["'Q4_K'"]),
        ({"dtype": "F32", "shape": [2, 2]}, ["without dtype/shape/data_offsets"]),
        ({"dtype": "F32", "shape": [2, 2], "data_offsets": ["0", "16"]}, ["t"]),
        ({"dtype": "F32", "shape": [-2, 2], "data_offsets": [16, 0]}, ["t"]),
        ({"dtype": "F32", "shape": [2.5, 2], "data_offsets": [0, 16]}, ["t"]),
        ([1, 2, 3], ["t"]),
    ],
    ids=["short-range", "past-end", "unknown-dtype", "no-offsets", "string-offsets", "negative-dim",
         "float-dim", "not-an-object"],
)
def test_inconsistent_header_refused_at_open(tmp_path, entry, words):
    f = _raw_file(tmp_path / "x.safetensors", {"t": entry}, b"\0" * 16)
    with pytest.raises(CorruptCheckpointError) as ei:
        _store(f)
    msg = str(ei.value)
    assert str(f) in msg and "\n" not in msg
    assert all(w in msg for w in words), msg


def test_header_not_an_object_refused(tmp_path):
    f = _raw_file(tmp_path / "x.safetensors", [1, 2])  # type: ignore[arg-type]
    with pytest.raises(CorruptCheckpointError, match="not a JSON object"):
        _store(f)


def test_shard_in_index_but_missing_refused(tmp_path):
    path, _ = make_checkpoint(tmp_path, "llama", n_layers=3, max_shard_size="20KB")
    shard = sorted(path.glob("model-*.safetensors"))[-1]
    shard.unlink()
    _refused_at_open(path, shard.name, "missing", "re-download")


def test_index_not_json_refused(tmp_path):
    path, _ = make_checkpoint(tmp_path, "llama", n_layers=3, max_shard_size="20KB")
    (path / "model.safetensors.index.json").write_text("{weight_map:")
    _refused_at_open(path, "model.safetensors.index.json", "not a valid safetensors index")


def test_index_placing_a_tensor_in_the_wrong_shard_refused(tmp_path):
    path, _ = make_checkpoint(tmp_path, "llama", n_layers=3, max_shard_size="20KB")
    idx_path = path / "model.safetensors.index.json"
    idx = json.loads(idx_path.read_text())
    shards = sorted(set(idx["weight_map"].values()))
    name = next(n for n, s in idx["weight_map"].items() if s == shards[0])
    idx["weight_map"][name] = shards[1]
    idx_path.write_text(json.dumps(idx))
    _refused_at_open(path, name, "index puts it in")


# -- reading one layer reads one layer's bytes --------------------------------------------------


def _rchar() -> int:
    """Bytes this process has received from read-like system calls, as the kernel counts them."""
    with open("/proc/self/io") as fh:
        for line in fh:
            if line.startswith("rchar:"):
                return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


@pytest.mark.parametrize("shard", [None, "3MB"], ids=["single", "sharded"])
def test_one_layer_reads_only_that_layers_bytes(tmp_path, shard):
    n_layers, L = 8, 5
    path, _ = make_checkpoint(
        tmp_path, "llama", torch.float32, n_layers=n_layers, max_shard_size=shard,
        hidden_size=256, intermediate_size=512,
    )
    file_bytes = sum(f.stat().st_size for f in path.glob("*.safetensors"))
    with geomlib.open_model(path) as warm:
        warm.layer(0)  # import whatever is imported lazily before measuring
    before_open = _rchar()
    ckpt = geomlib.open_model(path)
    open_cost = _rchar() - before_open
    with ckpt:
        layer_bytes = ckpt.layer_nbytes(L)
        # the fixture is what the test needs: one layer is a small part of the file
        assert layer_bytes > 2_000_000 and file_bytes > n_layers * layer_bytes
        # opening reads config and headers only, not a layer's worth of weights
        assert open_cost < layer_bytes / 20, open_cost
        n_before = len(ckpt._store.tensors_read)
        before = _rchar()
        W = ckpt.layer(L)
        cost = _rchar() - before
        assert layer_bytes <= cost <= layer_bytes + 8192, (cost, layer_bytes)
        assert cost < file_bytes / (n_layers - 1)
        read = ckpt._store.tensors_read[n_before:]
        assert sorted(read) == sorted(ckpt.tensor_names(L).values())
        assert all(name.startswith(f"layers.{L}.") for name in read)
        # llama has no biases and no fused tensors: the layer is exactly its F32 matrices and gains
        assert sum(w.numel() for w in W.values()) * 4 == layer_bytes
        # geomlib's own counter agrees with the kernel's
        assert ckpt._store.bytes_read == layer_bytes


def test_unreadable_file_refused_with_its_path(tmp_path):
    """A path that stats but cannot be opened as a file (here a directory) is a clean error."""
    d = tmp_path / "model.safetensors"
    d.mkdir()
    with pytest.raises(CorruptCheckpointError, match="cannot be read") as ei:
        _store(d)
    assert str(d) in str(ei.value)



def _resident(path: Path, offset: int, nbytes: int) -> float:
    """Fraction of the pages of ``path[offset:offset + nbytes]`` in the page cache (mincore; faults nothing in)."""
    import ctypes
    import mmap
    import os

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    page = mmap.PAGESIZE
    start = offset // page * page
    length = offset + nbytes - start
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = libc.mmap(None, length, mmap.PROT_READ, mmap.MAP_SHARED, fd, start)
        assert addr not in (None, ctypes.c_void_p(-1).value), os.strerror(ctypes.get_errno())
        try:
            vec = (ctypes.c_ubyte * ((length + page - 1) // page))()
            assert libc.mincore(ctypes.c_void_p(addr), length, vec) == 0, os.strerror(ctypes.get_errno())
            return sum(b & 1 for b in bytes(vec)) / len(vec)
        finally:
            libc.munmap(ctypes.c_void_p(addr), length)
    finally:
        os.close(fd)


def test_prefetch_fills_the_page_cache_without_reading_into_the_process(tmp_path):
    """prefetch is a readahead hint: after it the tensor's pages are cached, and geomlib has read nothing."""
    import os
    import time

    path = tmp_path / "m.safetensors"
    save_file({"a": torch.randn(1024, 1024), "b": torch.randn(1024, 1024)}, path)
    os.sync()
    store = SafetensorsStore([path.name], lambda f: tmp_path / f, "test")
    f = store._files[path.name]
    off, nb = f.offsets["b"], f.infos["b"].nbytes
    fd = os.open(path, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # clean pages (synced): dropped from the cache
    os.close(fd)
    assert _resident(path, off, nb) < 0.5  # the precondition: eviction worked on this filesystem
    store.prefetch(["b"])
    deadline = time.monotonic() + 10
    while _resident(path, off, nb) < 0.99 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _resident(path, off, nb) >= 0.99
    assert store.bytes_read == 0
    assert _same(store.read("b"), load_file(path)["b"])
    store.close()
