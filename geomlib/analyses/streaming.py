"""Every pair of layers, streamed: hold a chunk of layers, pass the rest by it.

The all-pairs passes (aligned cosine of every weight pair, the per-head
operator gram) share this loop and its memory rule, so a chunk of
``budget // bytes_per_layer`` layers is held and every other layer is read once
per chunk: memory O(chunk), reads O(L² / chunk).
"""

from __future__ import annotations

from typing import Callable, Iterator, Sequence, TypeVar

T = TypeVar("T")


def layers_within(budget_bytes: int, bytes_per_layer: int, n: int) -> int:
    """How many layers fit in ``budget_bytes`` (at least 1, at most ``n``)."""
    return max(1, min(n, budget_bytes // max(1, bytes_per_layer)))


def pairs(layers: Sequence[int], chunk: int, load: Callable[[int], T], *,
          diagonal: bool) -> Iterator[tuple[int, T, int, T]]:
    """Yield ``(L1, x1, L2, x2)`` for every pair ``L1 < L2`` (``<=`` with ``diagonal``) of ``layers``, once.

    ``load(L)`` is called for the layers of each held chunk and once per chunk
    for every later layer; nothing else is kept.
    """
    layers = list(layers)
    for c0 in range(0, len(layers), chunk):
        held = {L: load(L) for L in layers[c0:c0 + chunk]}
        for L2 in layers[c0:]:
            x2 = held[L2] if L2 in held else load(L2)
            for L1, x1 in held.items():
                if L1 < L2 or (diagonal and L1 == L2):
                    yield L1, x1, L2, x2


def n_pairs(n: int, diagonal: bool) -> int:
    return n * (n + 1) // 2 if diagonal else n * (n - 1) // 2


__all__ = ["layers_within", "n_pairs", "pairs"]
