"""Dataset assembly and cache: analyses become one xarray Dataset per model.

Names and coordinates are attached here, once; :mod:`geomlib.metrics` stays
pure.  The cache, phases and :func:`load` of cached results need no torch.
"""

from .api import cached, compute, load
from .cache import cache_root, entries
from .params import ANALYSES, WeightParams
from .phases import adjacent, apply_phases, phase_direction_stats, phase_mean

__all__ = [
    "ANALYSES",
    "WeightParams",
    "adjacent",
    "apply_phases",
    "cache_root",
    "cached",
    "compute",
    "entries",
    "load",
    "phase_direction_stats",
    "phase_mean",
]
