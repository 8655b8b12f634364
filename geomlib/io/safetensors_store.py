"""Safetensors checkpoints (single file or sharded), read one tensor at a time.

The header of each file is parsed here rather than through ``safe_open`` so that
(1) a truncated or inconsistent file is refused with a precise message before
any layer is read, and (2) every payload byte goes through one ``pread`` call
per tensor: reading layer L costs exactly the bytes of layer L, which tests
verify with the kernel's own I/O counters.  The format is the documented
one: an 8-byte little-endian header length, a JSON header mapping each tensor
to ``dtype``, ``shape`` and ``data_offsets``, then the raw little-endian data.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Callable

import torch

from ..errors import CorruptCheckpointError
from .store import TensorInfo, TensorStore

#: safetensors dtype tag -> (torch dtype, bytes per element)
DTYPES: dict[str, tuple[torch.dtype, int]] = {
    "F64": (torch.float64, 8),
    "F32": (torch.float32, 4),
    "F16": (torch.float16, 2),
    "BF16": (torch.bfloat16, 2),
    "F8_E4M3": (torch.float8_e4m3fn, 1),
    "F8_E5M2": (torch.float8_e5m2, 1),
    "I64": (torch.int64, 8),
    "I32": (torch.int32, 4),
    "I16": (torch.int16, 2),
    "I8": (torch.int8, 1),
    "U8": (torch.uint8, 1),
    "U16": (torch.uint16, 2),
    "U32": (torch.uint32, 4),
    "U64": (torch.uint64, 8),
    "BOOL": (torch.bool, 1),
}

# A header larger than this is not a safetensors header (the reference
# implementation uses the same 100 MB bound).
_MAX_HEADER = 100_000_000
_CHUNK = 1 << 30  # pread moves at most ~2 GiB per call on Linux


def _is_count(v: object) -> bool:
    """Whether a header value is a usable size or offset (JSON true is not 1)."""
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


class _File:
    """One ``.safetensors`` file: its parsed header and an open descriptor."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.size = path.stat().st_size
            # opening can fail where stat does not (no read permission, a directory)
            with open(path, "rb") as fh:
                head = fh.read(8)
                n = int.from_bytes(head, "little")
                raw = fh.read(n) if len(head) == 8 and n <= _MAX_HEADER else b""
        except OSError as exc:
            raise CorruptCheckpointError(
                f"safetensors file {path} cannot be read ({exc.strerror or exc.__class__.__name__}); "
                "check the path and permissions"
            ) from None
        if len(head) < 8:
            raise self._truncated("it is shorter than the 8-byte header length")
        if n > _MAX_HEADER:
            raise CorruptCheckpointError(
                f"{path} is not a safetensors file (its first 8 bytes announce a {n}-byte header); "
                "check that the file is really .safetensors and re-download it"
            )
        if len(raw) < n:
            raise self._truncated(f"its {n}-byte JSON header is cut off after {len(raw)} bytes")
        try:
            header = json.loads(raw)
        # ValueError also covers integers past Python's 4300-digit limit; RecursionError, deep nesting
        except (ValueError, RecursionError) as exc:
            raise CorruptCheckpointError(
                f"{path} has an unreadable safetensors header ({exc.__class__.__name__}); re-download the file"
            ) from None
        if not isinstance(header, dict):
            raise CorruptCheckpointError(f"{path} has a safetensors header that is not a JSON object; re-download the file")
        self.header_bytes = raw
        self.data_start = 8 + n
        self.metadata = header.pop("__metadata__", None) or {}
        self.infos: dict[str, TensorInfo] = {}
        self.offsets: dict[str, int] = {}
        end_max = 0
        for name, entry in header.items():
            try:
                dtype, shape, (begin, end) = entry["dtype"], tuple(entry["shape"]), entry["data_offsets"]
            except (KeyError, TypeError, ValueError):
                raise CorruptCheckpointError(
                    f"{path} describes tensor {name!r} without dtype/shape/data_offsets; re-download the file"
                ) from None
            # int() would silently turn 2.5 or "2" into 2, and a negative dimension
            # could pair with a reversed byte range to pass the length check below
            if not all(_is_count(v) for v in (*shape, begin, end)):
                raise CorruptCheckpointError(
                    f"{path} gives tensor {name!r} shape {entry['shape']!r} and data_offsets "
                    f"{entry['data_offsets']!r}, which are not non-negative integers; re-download the file"
                )
            if dtype not in DTYPES:
                raise CorruptCheckpointError(
                    f"{path} stores tensor {name!r} as {dtype!r}, which is not a safetensors dtype geomlib "
                    f"knows ({', '.join(DTYPES)}); convert the checkpoint to a float dtype"
                )
            nbytes = math.prod(shape) * DTYPES[dtype][1]
            if end - begin != nbytes or begin < 0:
                raise CorruptCheckpointError(
                    f"{path} gives tensor {name!r} of shape {list(shape)} {dtype} the byte range "
                    f"[{begin}, {end}), which is not {nbytes} bytes long; re-download the file"
                )
            end_max = max(end_max, end)
            self.infos[name] = TensorInfo(shape, dtype, nbytes)
            self.offsets[name] = self.data_start + begin
        if self.data_start + end_max > self.size:
            raise self._truncated(
                f"its header describes {end_max} bytes of tensor data but only "
                f"{self.size - self.data_start} bytes follow the header"
            )
        self._fd: int | None = None

    def _truncated(self, why: str) -> CorruptCheckpointError:
        return CorruptCheckpointError(f"safetensors file {self.path} is truncated: {why}; re-download it")

    def _handle(self) -> int:
        """The file's descriptor, opened on first use."""
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        return self._fd

    def _pread(self, offset: int, nbytes: int, what: str) -> bytearray:
        fd = self._handle()
        buf = bytearray(nbytes)
        view = memoryview(buf)
        pos = 0
        while pos < nbytes:
            got = os.preadv(fd, [view[pos : pos + _CHUNK]], offset + pos)
            if got == 0:
                raise self._truncated(f"{what} ends past the end of the file")
            pos += got
        return buf

    def read(self, name: str, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Tensor ``name``, or only its rows ``start:stop`` (one contiguous byte range)."""
        info = self.infos[name]
        dtype, itemsize = DTYPES[info.dtype]
        shape = list(info.shape)
        if stop is not None and shape:
            row = math.prod(shape[1:]) * itemsize
            offset, nbytes = self.offsets[name] + start * row, (stop - start) * row
            shape[0] = stop - start
        else:
            offset, nbytes = self.offsets[name], info.nbytes
        if nbytes == 0:
            return torch.empty(shape, dtype=dtype)
        buf = self._pread(offset, nbytes, f"tensor {name!r}")
        # safetensors data is little-endian, as is every platform torch supports
        return torch.frombuffer(buf, dtype=dtype).reshape(shape)

    def advise(self, name: str) -> None:
        """Start the kernel's read of tensor ``name`` into the page cache (``POSIX_FADV_WILLNEED``)."""
        if not hasattr(os, "posix_fadvise"):  # pragma: no cover - not on macOS / Windows
            return
        try:
            os.posix_fadvise(self._handle(), self.offsets[name], self.infos[name].nbytes, os.POSIX_FADV_WILLNEED)
        except OSError:  # advisory: a filesystem without readahead reads on demand
            pass

    def payload(self, name: str, start: int, length: int) -> bytes:
        return bytes(self._pread(self.offsets[name] + start, length, f"tensor {name!r}"))

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass


class SafetensorsStore(TensorStore):
    """Tensors of one safetensors checkpoint, single-file or sharded.

    Parameters
    ----------
    files : list of str
        Shard file names, relative to whatever ``locate`` resolves.
    weight_map : dict of str to str or None
        For a sharded checkpoint, tensor name -> shard file name (the
        ``weight_map`` of ``model.safetensors.index.json``); None for one file.
    locate : callable
        Maps a shard file name to a local path.  For a local directory it joins
        paths; for a hub repository it downloads the shard on first use.
    label : str
        Human description used in messages.
    eager : bool
        Parse every shard header now (validates the files up front).  Lazy mode
        parses a shard's header, and so fetches the shard, only when one of its
        tensors is first needed.
    """

    format = "safetensors"

    def __init__(
        self,
        files: list[str],
        locate: Callable[[str], Path],
        label: str,
        weight_map: dict[str, str] | None = None,
        eager: bool = True,
    ) -> None:
        super().__init__()
        self._locate = locate
        self._label = label
        self._files: dict[str, _File] = {}
        self._weight_map = weight_map
        self._shards = list(files)
        if weight_map is None or eager:
            for f in self._shards:
                self._load(f)
        if weight_map is not None:
            missing = sorted(set(weight_map.values()) - set(self._shards))
            if missing:
                raise CorruptCheckpointError(
                    f"the index of {label} names shard(s) {missing} that are not listed; re-download the checkpoint"
                )

    def _load(self, fname: str) -> _File:
        f = self._files.get(fname)
        if f is None:
            f = _File(Path(self._locate(fname)))
            self._files[fname] = f
            if self._weight_map is not None:
                for name in f.infos:
                    if self._weight_map.get(name, fname) != fname:
                        raise CorruptCheckpointError(
                            f"tensor {name!r} is in shard {fname} but the index puts it in "
                            f"{self._weight_map[name]}; re-download the checkpoint"
                        )
            self._infos.update(f.infos)
        return f

    def names(self) -> list[str]:
        if self._weight_map is not None:
            return sorted(self._weight_map)
        return super().names()

    def __contains__(self, name: object) -> bool:
        if self._weight_map is not None:
            return name in self._weight_map
        return name in self._infos

    def info(self, name: str) -> TensorInfo:
        if name not in self._infos and self._weight_map is not None and name in self._weight_map:
            self._load(self._weight_map[name])
            if name not in self._infos:
                raise CorruptCheckpointError(
                    f"the index of {self._label} puts tensor {name!r} in shard {self._weight_map[name]}, "
                    "which does not contain it; re-download the checkpoint"
                )
        return super().info(name)

    def _file_of(self, name: str) -> _File:
        if self._weight_map is not None:
            return self._load(self._weight_map[name])
        return self._files[self._shards[0]]

    def _read(self, name: str, info: TensorInfo) -> torch.Tensor:
        return self._file_of(name).read(name)

    def _read_rows(self, name: str, info: TensorInfo, start: int, stop: int) -> torch.Tensor:
        return self._file_of(name).read(name, start, stop)

    def _payload_bytes(self, name: str, start: int, length: int) -> bytes:
        return self._file_of(name).payload(name, start, length)

    def prefetch(self, names) -> None:
        for name in names:
            # a shard not fetched yet (hub, lazy) is not downloaded for a hint
            if self._weight_map is not None and self._weight_map.get(name) not in self._files:
                continue
            f = self._file_of(name)
            if name in f.infos:
                f.advise(name)

    @property
    def lazy(self) -> bool:
        """Shard headers are fetched on first use (hub downloads), not at open."""
        return self._weight_map is not None and len(self._files) < len(self._shards)

    def describe(self) -> str:
        return self._label

    def close(self) -> None:
        for f in self._files.values():
            f.close()
