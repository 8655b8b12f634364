"""The read-one-tensor-at-a-time interface every checkpoint format implements.

A :class:`TensorStore` knows the names, shapes and storage types of all tensors
of a checkpoint from its headers alone, and reads the bytes of one tensor only
when asked.  Architecture adapters (:mod:`geomlib.arch`) are written against
this interface, so safetensors (single or sharded, local or from the hub) and
GGUF look the same to them.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Iterable

import torch

from ..errors import CorruptCheckpointError


@dataclass(frozen=True)
class TensorInfo:
    """Header facts of one stored tensor.

    Attributes
    ----------
    shape : tuple of int
        Logical shape in PyTorch order (``[out, in]`` for a Linear weight).
    dtype : str
        Storage type as the file names it (``"BF16"``, ``"F32"``, ``"Q4_1"``...).
    nbytes : int
        Bytes the tensor occupies in the file.
    """

    shape: tuple[int, ...]
    dtype: str
    nbytes: int


class TensorStore(abc.ABC):
    """Lazy, per-tensor access to the weights of one checkpoint.

    Subclasses fill ``_infos`` (name -> :class:`TensorInfo`) from headers when
    they are built and implement :meth:`_read`.  ``bytes_read`` counts the
    payload bytes fetched so far, which lets tests and progress bars see how
    much of the file a computation touched.
    """

    #: short format label recorded in provenance (``"safetensors"``, ``"gguf"``)
    format: str = ""

    def __init__(self) -> None:
        self._infos: dict[str, TensorInfo] = {}
        self.bytes_read = 0
        self.tensors_read: list[str] = []

    # -- header facts -------------------------------------------------------
    def names(self) -> list[str]:
        """All tensor names, in a deterministic (sorted) order."""
        return sorted(self._infos)

    def __contains__(self, name: object) -> bool:
        return name in self._infos

    def info(self, name: str) -> TensorInfo:
        """Header facts of tensor ``name`` (no payload is read)."""
        try:
            return self._infos[name]
        except KeyError:
            raise CorruptCheckpointError(
                f"tensor {name!r} is not in {self.describe()}; the checkpoint does not match "
                "its config, re-download it or check that config.json belongs to these weights"
            ) from None

    def resolve(self, name: str) -> str | None:
        """The stored name of the tensor known to Hugging Face as ``name``, or None.

        Formats that use other names (GGUF) translate here; the rest of geomlib
        only ever speaks HF names.
        """
        return name if name in self else None

    def find_prefixes(self, suffix: str) -> list[str]:
        """Every ``prefix`` such that ``prefix + suffix`` is a stored tensor."""
        return sorted({n[: -len(suffix)] for n in self.names() if n.endswith(suffix)})

    @abc.abstractmethod
    def describe(self) -> str:
        """A short human description (the file or directory) used in messages."""

    @abc.abstractmethod
    def identity_material(self) -> bytes:
        """Bytes that identify the tensor index (names, shapes, types, offsets)."""

    # -- payload --------------------------------------------------------------
    def read(self, name: str) -> torch.Tensor:
        """Read one tensor from disk.

        Returns
        -------
        torch.Tensor
            The tensor with its stored shape, in the storage dtype where torch
            has it, otherwise dequantized to float32 (GGUF quant types).
        """
        info = self.info(name)
        tensor = self._read(name, info)
        self.bytes_read += info.nbytes
        self.tensors_read.append(name)
        return tensor

    @abc.abstractmethod
    def _read(self, name: str, info: TensorInfo) -> torch.Tensor: ...

    def storage_dtypes(self, names: Iterable[str]) -> list[str]:
        """Sorted distinct storage types among ``names``."""
        return sorted({self.info(n).dtype for n in names})

    def close(self) -> None:
        """Release file handles (a no-op for stores that hold none)."""
