"""The read-one-tensor-at-a-time interface every checkpoint format implements.

A :class:`TensorStore` knows the names, shapes and storage types of all tensors
of a checkpoint from its headers alone, and reads the bytes of one tensor only
when asked.  Architecture adapters (:mod:`geomlib.arch`) are written against
this interface, so safetensors (single or sharded, local or from the hub) and
GGUF look the same to them.
"""

from __future__ import annotations

import abc
import hashlib
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

    #: payload bytes sampled per tensor for the identity: (positions, bytes each)
    SAMPLES = (5, 64)

    def identity_material(self) -> bytes:
        """Bytes that identify the weights: every tensor's name, type, shape and sampled payload.

        Independent of the file layout (one file or shards, offsets), but any
        re-training or fine-tune changes it: a few 64-byte windows spread over
        each tensor's payload are hashed.  Cost: ``5 * 64`` bytes per tensor.
        """
        h = hashlib.sha256()
        for name in self.names():
            info = self.info(name)
            h.update(f"{name}|{info.dtype}|{list(info.shape)}|".encode())
            n, width = self.SAMPLES
            if info.nbytes:
                starts = sorted({min(max(info.nbytes - width, 0), (info.nbytes - width) * i // max(n - 1, 1))
                                 for i in range(n)})
                for start in starts:
                    h.update(self._payload_bytes(name, max(start, 0), min(width, info.nbytes)))
        return h.digest()

    @abc.abstractmethod
    def _payload_bytes(self, name: str, start: int, length: int) -> bytes:
        """``length`` raw bytes of tensor ``name``'s stored payload from byte ``start``."""

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

    def read_rows(self, name: str, start: int, stop: int) -> torch.Tensor:
        """Rows ``start:stop`` (first axis) of a stored tensor, reading only their bytes.

        Lets a computation stream a block of rows from every layer, so that an
        all-pairs Gram over layers needs memory O(layers x block), not O(model).
        """
        info = self.info(name)
        if not info.shape or not 0 <= start <= stop <= info.shape[0]:
            raise ValueError(f"rows {start}:{stop} out of range for {name} of shape {list(info.shape)}")
        tensor = self._read_rows(name, info, start, stop)
        row_bytes = info.nbytes // info.shape[0] if info.shape[0] else 0
        self.bytes_read += (stop - start) * row_bytes
        self.tensors_read.append(f"{name}[{start}:{stop}]")
        return tensor

    def _read_rows(self, name: str, info: TensorInfo, start: int, stop: int) -> torch.Tensor:
        # fallback for formats without ranged reads
        return self._read(name, info)[start:stop]

    def storage_dtypes(self, names: Iterable[str]) -> list[str]:
        """Sorted distinct storage types among ``names``."""
        return sorted({self.info(n).dtype for n in names})

    def prefetch(self, names: Iterable[str]) -> None:
        """Ask the OS to start reading ``names`` now, in the background (advisory; a no-op where unsupported).

        A streaming pass calls it for layer L + 1 before it computes on layer L,
        so that the disk reads overlap the compute.  Nothing is read into this
        process: only the page cache is filled.
        """

    def close(self) -> None:
        """Release file handles (a no-op for stores that hold none)."""
