"""The one exception family of geomlib.

Every failure a user can cause (a bad path, an unsupported architecture, a
corrupt file, an out-of-range layer) raises a subclass of :class:`GeomlibError`
whose message is a single sentence: what came in, what was expected, and how to
fix it.  The CLI turns these into exit status 2 without a traceback.
"""

from __future__ import annotations


class GeomlibError(Exception):
    """Base class of every error geomlib raises on purpose."""


class SourceNotFoundError(GeomlibError, FileNotFoundError):
    """A model source (path, hub id, demo name) could not be located."""


class UnsupportedSourceError(GeomlibError, ValueError):
    """The source exists but is of a kind geomlib refuses or cannot read."""


class UnsafeFormatError(UnsupportedSourceError):
    """A pickle-based checkpoint (``.bin``, ``.pt``, ``.pth``, ``.ckpt``) was refused."""


class UnsupportedArchitectureError(GeomlibError, ValueError):
    """The model type has no adapter in :mod:`geomlib.arch`."""


class CorruptCheckpointError(GeomlibError, ValueError):
    """A checkpoint file is truncated, malformed or inconsistent with its config."""


class MissingDependencyError(GeomlibError, ImportError):
    """An optional package (demo wheel, hub client) is not installed."""


class InvalidArgumentError(GeomlibError, ValueError):
    """An argument of a public function is out of range or of the wrong kind."""


class HubError(GeomlibError, OSError):
    """A Hugging Face hub repository could not be resolved or downloaded."""


class CacheError(GeomlibError, OSError):
    """The result cache cannot be used: not a directory, not writable, or too little free space."""


class CorruptCacheEntryError(CacheError, ValueError):
    """A cached dataset failed its checksum or could not be parsed; recompute it or clean the cache."""


class ClusterError(GeomlibError, OSError):
    """A Dask scheduler could not be reached, or a local cluster could not be started."""


class GeomlibWarning(UserWarning):
    """A degenerate input (zero matrix, NaN or Inf weights, a family missing in some layers)
    was turned into NaN; the same text is recorded in the dataset's ``attrs``."""
