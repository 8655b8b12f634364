"""Ranged reads: rows ``start:stop`` of a stored tensor, exactly what a full read holds there."""

from __future__ import annotations

import pytest
import torch

import geomlib
from tests.factories.gguf import write_gguf
from tests.factories.hf import make_checkpoint, tiny_model


def _ranges(n: int) -> list[tuple[int, int]]:
    # aligned, unaligned, single rows, empty, whole
    return [(0, n), (0, 1), (n - 1, n), (3, 11), (5, 5), (1, n - 2), (n // 2, n)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_safetensors_rows_equal_full_read(tmp_path, dtype):
    path, _ = make_checkpoint(tmp_path, "llama", dtype=dtype, n_layers=2, max_shard_size="10KB")
    with geomlib.open_model(path) as ckpt:
        store = ckpt._store
        for name in store.names():
            full = store.read(name)
            if full.ndim == 0:
                continue
            for a, b in _ranges(full.shape[0]):
                if b < a:
                    continue
                got = store.read_rows(name, a, b)
                assert got.dtype == full.dtype
                assert torch.equal(got, full[a:b]), (name, a, b)


@pytest.mark.parametrize("quant", [None, "Q8_0", "F16"])
@pytest.mark.parametrize("model_type", ["llama", "gemma2"])
def test_gguf_rows_equal_full_read_including_unpermuted_qk(tmp_path, model_type, quant):
    # llama's q/k are un-permuted within heads: ranges that cut through a head must still match
    model = tiny_model(model_type, n_layers=2)
    path = write_gguf(tmp_path / "m.gguf", model, model_type, quant)
    with geomlib.open_model(path) as ckpt:
        store = ckpt._store
        for name in store.names():
            full = store.read(name)
            for a, b in _ranges(full.shape[0]):
                if b < a:
                    continue
                assert torch.equal(store.read_rows(name, a, b), full[a:b]), (name, a, b)


def test_ranged_read_reads_only_those_bytes(tmp_path):
    path, _ = make_checkpoint(tmp_path, "llama", n_layers=2)
    with geomlib.open_model(path) as ckpt:
        store = ckpt._store
        name = "layers.1.mlp.down_proj.weight"
        before = store.bytes_read
        store.read_rows(name, 4, 9)
        assert store.bytes_read - before == 5 * store.info(name).shape[1] * 4


def test_rows_out_of_range_are_refused(tmp_path):
    path, _ = make_checkpoint(tmp_path, "llama", n_layers=1)
    with geomlib.open_model(path) as ckpt:
        with pytest.raises(ValueError, match="out of range"):
            ckpt._store.read_rows("layers.0.mlp.up_proj.weight", 40, 60)
