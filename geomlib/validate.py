"""Argument checks shared by every layer of the package (a leaf module: imports only the errors)."""

from __future__ import annotations

import numbers

from .errors import InvalidArgumentError


def positive_int(name: str, value: object, minimum: int = 1) -> int:
    """``value`` if it is an integer of at least ``minimum`` (bools refused), else one-sentence error."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise InvalidArgumentError(f"{name}={value!r} is not allowed; pass an integer of at least {minimum}")
    return int(value)


__all__ = ["positive_int"]
