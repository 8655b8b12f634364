"""geomlib: how a transformer's weights change from layer to layer.

Entry points
------------
open_model(source) -> Checkpoint
    Lazy, per-layer access to any supported checkpoint (safetensors, sharded
    or not; GGUF; HF hub cache; bundled demos).  Needs the ``compute`` extra.
compute(source, analyses=("weights",), cache_dir=None, device="auto") -> xarray.Dataset
    Inter-layer geometry, cached under ``cache/`` (or ``$GEOMLIB_CACHE``).
load(source) -> xarray.Dataset
    The cached analyses (no torch needed), computing what is missing.

``import geomlib`` itself stays light (no torch), so that browsing cached
results starts fast; the compute entry points import torch on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import GeomlibError

__version__ = "0.1.0"

_LAZY = {"open_model": "checkpoint", "Checkpoint": "checkpoint", "compute": "dataset", "load": "dataset"}

if TYPE_CHECKING:  # pragma: no cover
    from .checkpoint import Checkpoint, open_model
    from .dataset import compute, load


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'geomlib' has no attribute {name!r}")


__all__ = ["Checkpoint", "GeomlibError", "compute", "load", "open_model", "__version__"]
