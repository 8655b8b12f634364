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

``import geomlib`` itself stays light (no torch), so that browsing cached
results starts fast; the compute entry points import torch on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import GeomlibError

__version__ = "0.1.0"

_LAZY = {"open_model": "model", "Checkpoint": "model", "compute": "store", "load": "store", "cached": "store"}

if TYPE_CHECKING:  # pragma: no cover
    from .model import Checkpoint, open_model
    from .store import cached, compute, load


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'geomlib' has no attribute {name!r}")


__all__ = ["Checkpoint", "GeomlibError", "cached", "compute", "load", "open_model", "__version__"]
