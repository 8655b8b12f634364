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
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import torch

from ..errors import CorruptCheckpointError
from ..threads import choose_threads
from .digest import tensor_digests


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

    def identity_material(self) -> bytes:
        """Bytes that identify the weights: every tensor's name, type, shape and sha256 of its whole payload.

        Independent of the file layout (one file or shards, offsets, which
        machine), while a change to any stored byte changes it.  Cost: one read
        of the checkpoint the first time (files are hashed in parallel when
        there are several), then free while the files are unchanged (see
        :mod:`geomlib.io.digest`).  A lazy hub store fetches every shard.
        """
        names = self.names()
        by_file: dict[Path | None, dict[str, int]] = {}
        for name in names:  # on this thread: a lazy (hub) store fetches each shard here, once
            by_file.setdefault(self._payload_path(name), {})[name] = self.info(name).nbytes
        workers = min(len(by_file), choose_threads()) if len(by_file) > 1 else 1
        jobs = [(path, sizes, self._payload_bytes) for path, sizes in by_file.items()]
        if workers > 1:
            with ThreadPoolExecutor(workers, thread_name_prefix="geomlib-digest") as pool:
                parts = list(pool.map(lambda job: tensor_digests(*job), jobs))
        else:
            parts = [tensor_digests(*job) for job in jobs]
        digests = {name: d for part in parts for name, d in part.items()}
        h = hashlib.sha256()
        for name in names:
            info = self.info(name)
            h.update(f"{name}|{info.dtype}|{list(info.shape)}|".encode())
            h.update(digests[name])
        return h.digest()

    @abc.abstractmethod
    def _payload_bytes(self, name: str, start: int, length: int) -> bytes:
        """``length`` raw bytes of tensor ``name``'s stored payload from byte ``start``.

        :meth:`identity_material` calls it from several threads at once, but
        for tensors of different files only (:meth:`_payload_path`).
        """

    def _payload_path(self, name: str) -> Path | None:
        """The local file that holds tensor ``name``'s payload, or None (its digest is then not memoised).

        Formats may override it.  The default knows the built-in stores: a
        sharded store's ``_file_of(name).path`` (safetensors; this fetches a
        lazy hub shard) and a one-file store's ``path`` (GGUF).
        """
        file_of = getattr(self, "_file_of", None)
        holder = file_of(name) if callable(file_of) else self
        path = getattr(holder, "path", None)
        return Path(path) if isinstance(path, (str, os.PathLike)) else None

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
