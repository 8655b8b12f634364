"""geomlib.readahead: the CLI's early hint fills the page cache with a local checkpoint, and only that."""

from __future__ import annotations

import os
import time

import torch
from safetensors.torch import save_file

from geomlib import readahead
from tests.io.test_safetensors_store import _resident


def test_checkpoint_files_are_the_local_weight_files(tmp_path):
    save_file({"a": torch.zeros(4)}, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "x.gguf").write_bytes(b"GGUF")
    assert readahead.checkpoint_files(tmp_path) == [tmp_path / "model.safetensors", tmp_path / "x.gguf"]
    assert readahead.checkpoint_files(tmp_path / "x.gguf") == [tmp_path / "x.gguf"]
    assert readahead.checkpoint_files(tmp_path / "config.json") == []
    assert readahead.start("demo:smollm2-135m") is None  # not a local path: nothing is read
    assert readahead.start("Qwen/Qwen3-0.6B") is None
    assert 0 < readahead.budget() <= readahead.MAX_BYTES


def test_start_reads_the_checkpoint_into_the_page_cache_up_to_the_limit(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file({"a": torch.randn(1024, 1024), "b": torch.randn(1024, 1024)}, path)  # 8 MB
    os.sync()
    fd = os.open(path, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
    size = path.stat().st_size
    assert _resident(path, 0, size) < 0.5  # the precondition: eviction worked here
    t = readahead.start(tmp_path, limit=size // 2)
    t.join(10)
    deadline = time.monotonic() + 10
    while _resident(path, 0, size // 2 - 8192) < 0.99 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _resident(path, 0, size // 2 - 8192) >= 0.99
    assert _resident(path, size // 2 + 2**20, size // 2 - 2**20) < 0.5  # past the limit: not asked for
