"""Architecture adapters: one file per architecture, one registry.

See :mod:`geomlib.arch.base` for what an adapter declares and
:mod:`geomlib.arch.families` for the canonical family names.  The family
vocabulary is importable without torch (cached results are viewed without it);
the adapters load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .families import FAMILIES, HEAD_AXIS, MATRIX_FAMILIES, NORM_FAMILIES, RESIDUAL_AXIS

_LAZY = {
    "Adapter": "base",
    "ArchFacts": "base",
    "Src": "base",
    "REGISTRY": "registry",
    "get_adapter": "registry",
    "supported_model_types": "registry",
    "SymmetryGroup": "symmetry",
    "symmetry_group": "symmetry",
    "symmetry_table_markdown": "symmetry",
}

if TYPE_CHECKING:  # pragma: no cover
    from .base import Adapter, ArchFacts, Src
    from .registry import REGISTRY, get_adapter, supported_model_types
    from .symmetry import SymmetryGroup, symmetry_group, symmetry_table_markdown


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'geomlib.arch' has no attribute {name!r}")


__all__ = [
    "Adapter",
    "ArchFacts",
    "Src",
    "FAMILIES",
    "MATRIX_FAMILIES",
    "NORM_FAMILIES",
    "RESIDUAL_AXIS",
    "HEAD_AXIS",
    "REGISTRY",
    "get_adapter",
    "supported_model_types",
    "SymmetryGroup",
    "symmetry_group",
    "symmetry_table_markdown",
]
