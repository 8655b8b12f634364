"""geomlib.heap: freed large blocks leave the process, for the analyses that ask for it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from geomlib import heap


def _run(code: str, **env: str) -> str:
    full = {**os.environ, **env}
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=full,
                         timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


RSS_AFTER_FREE = """
    import ctypes, sys
    from geomlib import heap

    def rss_mb():
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * 4096 / 2**20

    if sys.argv[-1] == "policy" or {policy}:
        assert heap.map_large_blocks()
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    big = libc.malloc(30 << 20)  # a freed mapped block (<= 32 MB) raises glibc's dynamic threshold to its size
    ctypes.memset(big, 1, 30 << 20)
    libc.free(big)
    block = libc.malloc(20 << 20)  # now below the threshold: from the heap, unless the policy maps it
    ctypes.memset(block, 1, 20 << 20)
    keep = libc.malloc(1 << 16)  # a live block above it: the heap cannot shrink past it
    ctypes.memset(keep, 1, 1 << 16)
    before = rss_mb()
    libc.free(block)
    print(before - rss_mb())
"""


def test_map_large_blocks_hands_a_freed_block_back_at_once():
    assert float(_run(RSS_AFTER_FREE.format(policy=True))) > 16  # its own mapping: unmapped on free
    assert float(_run(RSS_AFTER_FREE.format(policy=False))) < 4  # glibc's default keeps it resident


def test_map_large_blocks_is_idempotent():
    assert heap.map_large_blocks() and heap.map_large_blocks()


def test_threshold_keeps_square_cores_in_the_heap_and_maps_layers():
    assert heap.threshold_for(0) == heap.threshold_for(64) == heap.MIN_LARGE_BLOCK
    assert heap.threshold_for(1024) == 8 * 1024**2  # Qwen3-0.6B: a float64 1024² core is mapped, float32 kept
    assert heap.threshold_for(1536) == 8 * 1536**2
    assert heap.threshold_for(2560) == heap.threshold_for(8192) == heap.MAX_LARGE_BLOCK


def test_compute_maps_large_blocks_only_for_analyses_that_ask(tmp_path):
    """weights alone leaves glibc's dynamic threshold alone; gauge fixes it (at the model's threshold)."""
    code = """
        import geomlib, geomlib.heap as heap
        from tests.factories.hf import make_checkpoint
        from pathlib import Path
        path, _ = make_checkpoint(Path({tmp!r}), "qwen3", n_layers=3)
        geomlib.compute(str(path), {analyses!r}, Path({tmp!r}) / "cache", progress=False, threads=1)
        print(heap._threshold)
    """
    assert _run(code.format(tmp=str(tmp_path / "w"), analyses="weights")) == "None"
    assert _run(code.format(tmp=str(tmp_path / "g"), analyses="gauge")) == str(heap.MIN_LARGE_BLOCK)


def test_trim_heap_returns_freed_pages():
    """Freed heap blocks between live ones stay resident until trim_heap hands their pages back (glibc)."""
    from geomlib.heap import _TRIM, trim_heap

    def rss_mb():
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * 4096 / 2**20

    blocks = [bytearray(b"x" * (64 << 10)) for _ in range(2048)]  # 128 MB of 64 KB heap blocks, touched
    del blocks[::2]  # 64 MB freed, each block between two live ones: the heap cannot shrink from its top
    before = rss_mb()
    trim_heap()
    after = rss_mb()
    assert _TRIM is not None  # this is glibc (Debian): the trim is real here
    assert before - after > 32, (before, after)
