"""Keep the process' resident memory near what it actually holds (glibc's allocator).

A run allocates and frees large temporaries all the time: a layer pair's
float64 neuron costs, rotated copies of a layer, the block products.  glibc
serves blocks above a *dynamic* mmap threshold from fresh mappings (returned to
the OS when freed) and smaller ones from its heaps, one per thread (arena).
The threshold rises to the size of every mapped block freed, up to 32 MB, so
after the first few frees almost every temporary comes from a heap, and a freed
block inside a heap stays resident while anything above it lives.  With two
task threads each arena keeps its own high-water mark: measured on the
Qwen3-0.6B gauge analysis, 0.96 GB peak RSS against 0.91 GB with the policy
below (1.34 GB before its loops moved to blocks below the threshold), for the
same numbers.

:func:`map_large_blocks`
    Fixes the mmap threshold (``mallopt``; :func:`threshold_for` picks it from the
    model's width), so every block at least that large is its own mapping and
    goes back to the OS the moment it is freed.  The price is the page faults
    of mapping it again, so :func:`geomlib.compute` does it only for analyses
    whose concurrent pieces need it (:attr:`Analysis.maps_large_blocks
    <geomlib.analyses.base.Analysis>`: gauge), and the hot loops reuse buffers
    or work in blocks below the threshold.  Measured on short runs: mapping
    every layer-sized block of the seeds' one-pass weights run cost 10-20% of
    its time for no memory saved.
:func:`trim_heap`
    Returns the free pages of every heap between analyses (``malloc_trim``).

Both are no-ops off glibc; neither changes a number.
"""

from __future__ import annotations

#: the smallest and largest mmap threshold :func:`threshold_for` picks (glibc's own dynamic one stops at 32 MB)
MIN_LARGE_BLOCK = 8 << 20
MAX_LARGE_BLOCK = 32 << 20
#: mallopt's parameter number for the mmap threshold (glibc's malloc.h)
_M_MMAP_THRESHOLD = -3


def _libc():
    """glibc's ``(malloc_trim, mallopt)``, or Nones off glibc."""
    import ctypes

    try:
        # by soname: ctypes.util.find_library runs ldconfig in a subprocess (0.1-0.3 s at every start)
        libc = ctypes.CDLL("libc.so.6")
        return libc.malloc_trim, libc.mallopt
    except (OSError, AttributeError):  # pragma: no cover - musl, macOS, Windows
        return None, None


_TRIM, _MALLOPT = _libc()
_threshold: int | None = None


def trim_heap() -> None:
    """Hand the heaps' free pages back to the OS (glibc ``malloc_trim(0)``; a no-op elsewhere).

    :func:`geomlib.compute` trims between analyses.  Not after every layer: the
    next layer's allocations would fault every page in again.
    """
    if _TRIM is not None:
        _TRIM(0)


def threshold_for(hidden: int) -> int:
    """The mmap threshold for a model of width ``hidden``: a float64 ``hidden x hidden`` matrix, within 8-32 MB.

    The square cores and Grams of a layer pair are formed and freed thousands of
    times per run: they stay in the heaps, where reusing them costs nothing.
    Layer-sized blocks (``I x hidden``, the ``I x I`` neuron costs) are larger and
    are mapped.  Measured: at hidden 1024 (8 MB) the Qwen3-0.6B gauge analysis
    peaks at 0.91 GB instead of 1.34 GB in the same time (4 MB: 0.82 GB but 10 s
    more kernel time faulting pages in); at hidden 2560 an 8 MB threshold maps
    every 26 MB core and costs the Qwen3-4B weights analysis 9% more time.
    """
    return int(min(MAX_LARGE_BLOCK, max(MIN_LARGE_BLOCK, 8 * int(hidden) ** 2)))


def map_large_blocks(threshold: int = MIN_LARGE_BLOCK) -> bool:
    """Serve every block of at least ``threshold`` bytes from its own mapping, freed to the OS on ``free``.

    Process-wide and lasting (it is how glibc's allocator is tuned); calling it
    again with the same value does nothing.  :func:`geomlib.compute` calls it
    before an analysis that sets ``maps_large_blocks``.

    Returns
    -------
    bool
        Whether the allocator accepted it (False off glibc).
    """
    global _threshold
    if _MALLOPT is None:
        return False
    if _threshold == threshold:
        return True
    ok = bool(_MALLOPT(_M_MMAP_THRESHOLD, int(threshold)))
    if ok:
        _threshold = threshold
    return ok


__all__ = ["MAX_LARGE_BLOCK", "MIN_LARGE_BLOCK", "map_large_blocks", "threshold_for", "trim_heap"]
