"""The one list of analyses.  Everything that enumerates analyses iterates it."""

from __future__ import annotations

import re

from ..errors import InvalidArgumentError
from .base import Analysis

_REGISTRY: dict[str, Analysis] = {}
#: names that would collide with compute()'s own keywords or the CLI's flags
_RESERVED = {"source", "analyses", "cache_dir", "cache", "device", "phases", "phase_names", "n_phases", "force",
             "progress", "hf_cache_dir", "hf_cache", "quiet", "params", "threads"}


def register(analysis: Analysis) -> Analysis:
    """Add ``analysis`` (an :class:`Analysis` instance); its name must be new."""
    if not isinstance(analysis, Analysis):
        raise InvalidArgumentError(f"register() takes an Analysis instance, not {type(analysis).__name__}")
    name = analysis.name
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name or "") or name in _RESERVED:
        raise InvalidArgumentError(
            f"analysis name {name!r} is not allowed; use lower-case letters, digits and _, not one of "
            f"{', '.join(sorted(_RESERVED))}"
        )
    if name in _REGISTRY and _REGISTRY[name] is not analysis:
        raise InvalidArgumentError(f"an analysis named {name!r} is already registered; unregister it first")
    _REGISTRY[name] = analysis
    return analysis


def unregister(name: str) -> None:
    """Remove an analysis (tests register toy analyses and remove them)."""
    _REGISTRY.pop(name, None)


def get(name: str) -> Analysis:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise InvalidArgumentError(
            f"analysis {name!r} is not known; choose from {', '.join(_REGISTRY)}"
        ) from None


def names() -> tuple[str, ...]:
    """Registered analysis names, in registration order."""
    return tuple(_REGISTRY)


def defaults(sweep: bool = False) -> tuple[str, ...]:
    """The analyses computed when none are named (``sweep``: by a sweep, see ``Analysis.sweep_default``)."""
    def chosen(a: Analysis) -> bool:
        return bool(a.default if not sweep or a.sweep_default is None else a.sweep_default)

    return tuple(n for n, a in _REGISTRY.items() if chosen(a))


def resolve(analyses, sweep: bool = False) -> tuple[str, ...]:
    """``None`` -> the defaults (a sweep's with ``sweep``); a name or names -> checked, in the order given."""
    if analyses is None:
        return defaults(sweep)
    if isinstance(analyses, str):
        analyses = [a.strip() for a in analyses.split(",") if a.strip()]
    try:
        out = tuple(dict.fromkeys(analyses))
    except TypeError:
        raise InvalidArgumentError(
            f"analyses={analyses!r} is not a list of names; pass e.g. ['weights', 'heads']"
        ) from None
    bad = [a for a in out if a not in _REGISTRY]
    if bad or not out:
        raise InvalidArgumentError(
            f"analyses {list(out)} are not all known; choose from {', '.join(_REGISTRY)}"
        )
    return out


def is_current(analysis: str, schema_version: int) -> bool:
    """Whether a cache entry of ``analysis`` at ``schema_version`` is one the registry still reads."""
    a = _REGISTRY.get(analysis)
    return a is not None and a.schema_version == schema_version


__all__ = ["defaults", "get", "is_current", "names", "register", "resolve", "unregister"]
