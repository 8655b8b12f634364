"""The cache of computed analyses: ``compute`` fills it, ``load``/``cached`` read it (torch-free).

Names and coordinates are attached once, when each analysis builds its
Dataset; this package stores, finds, merges and labels them.
"""

from .api import cached, compute, load
from .cache import cache_root, entries

__all__ = ["cache_root", "cached", "compute", "entries", "load"]
