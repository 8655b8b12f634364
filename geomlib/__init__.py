"""geomlib: how a transformer's weights change from layer to layer.

Entry points
------------
open_model(source) -> Checkpoint
    Lazy, per-layer access to any supported checkpoint (safetensors, sharded
    or not; GGUF; HF hub cache; bundled demos).  Needs the ``compute`` extra.
compute(source, analyses=None, cache_dir=None, device="auto", **{analysis: params}) -> xarray.Dataset
    Every registered analysis by default (``geomlib.analyses.names()``), cached
    under ``cache/`` (or ``$GEOMLIB_CACHE``); computes only what is missing.
load(source, analyses=None) -> xarray.Dataset
    The cached analyses; never computes, needs no torch.
compare(a, b, cache_dir=None, ...) -> xarray.Dataset
    Two checkpoints layer against layer (dims ``layer`` of A, ``layer_b`` of B), gauge-aware, cached.
sweep(sources, analyses=None, cache_dir=None, ...) -> xarray.Dataset
    Many checkpoints (or one hub id at several revisions) on a Dask cluster: a ``checkpoint`` dim, plus the
    compare of consecutive checkpoints.

``import geomlib`` itself stays light (no torch), so that browsing cached
results starts fast; the compute entry points import torch on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import GeomlibError

__version__ = "0.1.0"

_LAZY = {"open_model": "model", "Checkpoint": "model", "compute": "store", "load": "store", "cached": "store",
         "compare": "store.compare", "sweep": "store.sweep"}

if TYPE_CHECKING:  # pragma: no cover
    from .model import Checkpoint, open_model
    from .store import cached, compute, load
    from .store.compare import compare
    from .store.sweep import sweep


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'geomlib' has no attribute {name!r}")


__all__ = ["Checkpoint", "GeomlibError", "cached", "compare", "compute", "load", "open_model", "sweep",
           "__version__"]
