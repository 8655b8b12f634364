"""Declarative analysis parameters: each one is declared once, with its type, bounds and help.

Validation, the CLI flags (``--heads.null-draws``), ``compute()``'s keywords and
the cache key are all derived from these declarations (scikit-learn's
``_parameter_constraints`` idea), so no analysis writes its own checks.
Torch-free: the cache and the CLI parser read it.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any, Mapping

from ..errors import InvalidArgumentError


@dataclass(frozen=True)
class Param:
    """One parameter of an analysis.

    Attributes
    ----------
    name : str
        Python name (``null_draws``); the CLI flag is ``--<analysis>.<name with dashes>``.
    default : object
        Value when not given.
    type : type
        ``int``, ``float``, ``str`` or ``bool``; ``None`` is allowed only when ``default`` is None.
    help : str
        One line for ``--help`` and the docs.
    min : number, optional
        Smallest allowed value (ints and floats).
    choices : tuple, optional
        Allowed values.
    forbid : mapping, optional
        ``{value: reason}`` for single values that are not allowed (``{1: "..."}``).
    path : bool
        The value is a readable regular file (not a directory, pipe or device); the cache key uses its content
        hash, not its path.
    in_key : bool
        Whether the value changes the numbers (and so enters the cache key).  A memory budget does not.
    """

    name: str
    default: Any
    type: type
    help: str
    min: float | None = None
    choices: tuple | None = None
    forbid: Mapping[Any, str] | None = None
    path: bool = False
    in_key: bool = True

    @property
    def flag(self) -> str:
        return self.name.replace("_", "-")

    def check(self, analysis: str, value: Any) -> Any:
        """``value`` if allowed, else one-sentence :class:`InvalidArgumentError`."""
        where = f"{analysis} parameter {self.name}={value!r}"
        if value is None:
            if self.default is None:
                return None
            raise InvalidArgumentError(
                f"{where} is not allowed; pass a {self.type.__name__} (default {self.default!r})")
        if self.type is bool:
            if not isinstance(value, bool):
                raise InvalidArgumentError(f"{where} is not allowed; pass True or False")
            return value
        if self.type in (int, float):
            ok = isinstance(value, (int, float) if self.type is float else int) and not isinstance(value, bool)
            if not ok:
                what = "a number" if self.type is float else "an integer"
                raise InvalidArgumentError(f"{where} is not allowed; pass {what}")
        elif self.type is str and not isinstance(value, (str, os.PathLike)):
            raise InvalidArgumentError(f"{where} is not allowed; pass a string")
        # a forbidden value may lie below min too: its reason says more than the bound
        if self.forbid and value in self.forbid:
            raise InvalidArgumentError(f"{where} is not allowed: {self.forbid[value]}")
        if self.min is not None and self.type in (int, float) and value < self.min:
            raise InvalidArgumentError(f"{where} is not allowed; pass a value of at least {self.min:g}")
        if self.choices is not None and value not in self.choices:
            raise InvalidArgumentError(f"{where} is not a choice; use one of {', '.join(map(repr, self.choices))}")
        if self.path:
            value = os.fspath(value)
            _check_file(where, value)
        return value

    def key_value(self, value: Any) -> Any:
        """What enters the cache key: a file by its content, not where it lives."""
        if self.path and value is not None:
            try:
                digest = hashlib.sha256()
                with open(value, "rb") as fh:  # in blocks: a file passed by mistake may be gigabytes
                    for block in iter(lambda: fh.read(1 << 20), b""):
                        digest.update(block)
                return "sha256:" + digest.hexdigest()
            except OSError as exc:  # it changed since it was checked (removed, permissions)
                raise InvalidArgumentError(
                    f"file {value!r} cannot be read ({exc.strerror or exc.__class__.__name__}); pass a readable "
                    "file or omit it"
                ) from None
        return value


def _check_file(where: str, path: str) -> None:
    """One sentence for each way ``path`` can fail to be a readable regular file."""
    if not path or not os.path.exists(path):
        raise InvalidArgumentError(f"{where}: no such file; pass a readable file or omit it")
    if os.path.isdir(path):
        raise InvalidArgumentError(f"{where} is a directory, not a file; pass a readable file in it or omit it")
    if not os.path.isfile(path):
        raise InvalidArgumentError(
            f"{where} is not a regular file (a device, pipe or socket); pass a readable file or omit it")
    if not os.access(path, os.R_OK):
        raise InvalidArgumentError(f"{where} cannot be read (permission denied); pass a readable file or omit it")


class Params:
    """The validated parameters of one analysis: attribute access, immutable.

    Make them with :meth:`geomlib.analyses.Analysis.make_params`.
    """

    __slots__ = ("_analysis", "_specs", "_values")

    def __init__(self, analysis: str, specs: tuple[Param, ...], given: Mapping[str, Any] | None = None) -> None:
        given = dict(given or {})
        known = {p.name: p for p in specs}
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise InvalidArgumentError(
                f"unknown parameter(s) {', '.join(unknown)} for the {analysis} analysis; "
                f"its parameters are {', '.join(known) or 'none'}"
            )
        values = {p.name: p.check(analysis, given[p.name]) if p.name in given else p.default for p in specs}
        object.__setattr__(self, "_analysis", analysis)
        object.__setattr__(self, "_specs", specs)
        object.__setattr__(self, "_values", values)

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"{self._analysis} has no parameter {name!r}") from None

    def __setattr__(self, name, value):  # pragma: no cover - immutability guard
        raise AttributeError("Params are immutable; use replace()")

    def replace(self, **changes) -> "Params":
        return Params(self._analysis, self._specs, {**self._values, **changes})

    def as_dict(self) -> dict:
        """Every value (recorded in provenance)."""
        return dict(self._values)

    def key_dict(self) -> dict:
        """The values that change the numbers, files by content hash (the cache key)."""
        return {p.name: p.key_value(self._values[p.name]) for p in self._specs if p.in_key}

    def __eq__(self, other) -> bool:
        return isinstance(other, Params) and (self._analysis, self._values) == (other._analysis, other._values)

    def __hash__(self) -> int:
        return hash((self._analysis, tuple(sorted(self._values.items(), key=lambda kv: kv[0]))))

    def __repr__(self) -> str:
        return f"Params[{self._analysis}]({', '.join(f'{k}={v!r}' for k, v in self._values.items())})"


#: shared declarations (each analysis still owns its own value and default)
def null_draws(default: int, what: str, pooled: bool = False) -> Param:
    """``pooled``: the band's std is pooled over pairs (:func:`geomlib.metrics.nulls.pooled_std`), so one draw per
    pair is allowed."""
    forbid = {} if pooled else {1: "one draw gives no standard deviation; use 0 (skip) or at least 2"}
    return Param("null_draws", default, int, f"seeded draws per null baseline ({what}); 0 skips them (NaN)", min=0,
                 forbid=forbid)


def seed() -> Param:
    return Param("seed", 0, int, "seed of the null draws", min=0)


def block_mib(what: str, default: int = 256) -> Param:
    return Param("block_mib", default, int, f"memory budget in MiB for {what}", min=1)


__all__ = ["PRECISIONS", "Param", "Params", "block_mib", "compute_dtype", "null_draws", "precision", "seed"]


#: ``precision`` -> the torch dtype name of the factorizations
PRECISIONS = ("float32", "float64")


def precision(what: str) -> Param:
    return Param("precision", "float32", str, f"dtype of {what} (float32 holds a tested tolerance against "
                 "float64, see the README; float64 is the reference)", choices=PRECISIONS)



def compute_dtype(params: "Params"):
    """The torch dtype named by an analysis' ``precision`` parameter (imports torch; call from compute code)."""
    import torch

    return getattr(torch, params.precision)


def storage_dtype(ckpt):
    """The narrowest float torch dtype that holds a checkpoint's layer values exactly (imports torch).

    Every analysis reads layers in it, so they see the same numbers.
    """
    import torch

    exact32 = {"F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"}
    types = set(ckpt.dtype.split(","))
    if ckpt.format == "gguf":
        # dequantization yields float32; Gemma's stored w+1 is undone in float64
        return torch.float64 if ckpt.norm_offset else torch.float32
    return torch.float32 if types <= exact32 else torch.float64
