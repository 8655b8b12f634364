"""``open_model`` and :class:`Checkpoint`: one layer's canonical weights at a time.

A checkpoint is opened from headers alone (config, safetensors headers or GGUF
metadata); no tensor payload is read until :meth:`Checkpoint.layer` asks for
one layer, and then only that layer's tensors are read.  Memory therefore does
not grow with depth: read a layer, reduce it, drop it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Iterable, Iterator, Mapping

import torch

from ..arch import FAMILIES, HEAD_AXIS, Adapter, ArchFacts, Src, get_adapter
from ..device import resolve_device
from ..errors import CorruptCheckpointError, InvalidArgumentError
from ..io.gguf_store import FLOAT_TYPES, GGUFStore, index_span
from ..io.source import Opened, open_source
from ..io.store import TensorStore

# config keys that say who saved the file, not what the weights are
_VOLATILE_CONFIG_KEYS = {"_name_or_path", "transformers_version", "_gguf"}
_FOREIGN_PREFIX_HINTS = ("vision", "audio", "visual", "image", "speech")


def _valid_prefix(p: str) -> bool:
    return p == "" or p.endswith(".")


class Checkpoint:
    """A model's weights, readable one layer at a time in canonical families.

    Use :func:`open_model` to make one.

    Attributes
    ----------
    arch : str
        The HF ``model_type`` (``"llama"``, ``"qwen3"``, ``"bert"``...).
    n_layers, n_heads, n_kv_heads, head_dim, hidden, intermediate : int
    families : tuple of str
        Canonical families present in at least one layer, in canonical order.
    dtype : str
        Storage type(s) of the layer tensors as the file names them
        (``"BF16"``; ``"F32,Q4_1"`` for a mixed GGUF).
    quantization : str or None
        Quantized storage types (``"Q4_1"``), None for float checkpoints.
    norm_offset : float
        Effective norm gain is ``norm_offset + stored`` (1.0 for Gemma).
    identity : str
        sha256 of the config and of every tensor's name, type, shape and whole
        payload: stable across machines and file layouts, changes when any
        stored byte changes.
    source, format : str
        What was opened, and ``"safetensors"`` or ``"gguf"``.
    config : dict
        The HF config (built from metadata for GGUF).
    """

    def __init__(self, opened: Opened, adapter: Adapter) -> None:
        self.config = opened.config
        self.origin = dict(opened.origin)
        self.adapter = adapter
        self._store: TensorStore = opened.store
        self.facts: ArchFacts = adapter.facts(self.config)
        self._plan: dict[str, Src] = adapter.family_plan(self.facts)
        self._prefix = self._find_prefix()
        # before anything loops over or is sized by the config's counts: they must be the file's
        self._check_layer_count()
        self._weights = [self._names(L, "weight") for L in range(self.n_layers)]
        self._biases = [self._names(L, "bias") for L in range(self.n_layers)]
        present = {f for names in self._weights for f in names}
        self.families: tuple[str, ...] = tuple(f for f in FAMILIES if f in present)
        if not self.families:
            raise CorruptCheckpointError(
                f"{self.source} has no layer tensors of a {self.arch} model; check that the weights match config.json"
            )
        self._rows_cache: dict[str, torch.Tensor | slice | None] = {}
        self._validated: set[int] = set()
        # A lazy (hub) store fetches a shard to read its header: check layer 0 now
        # and every other layer when it is first read, so opening downloads little.
        lazy = getattr(self._store, "lazy", False)
        checked = [0] if lazy else range(self.n_layers)
        for L in checked:
            self._validate_layer(L)
        types = self._store.storage_dtypes(n for L in checked for n in self._weights[L].values())
        self.dtype = ",".join(types)
        quant = [t for t in types if t not in FLOAT_TYPES and t not in ("F8_E4M3", "F8_E5M2")]
        self.quantization: str | None = ",".join(quant) if quant else None
        self._identity: str | None = None

    # -- facts -------------------------------------------------------------------
    @property
    def arch(self) -> str:
        return str(self.adapter.text_cfg(self.config).get("model_type", self.adapter.name))

    n_layers = property(lambda self: self.facts.n_layers)
    n_heads = property(lambda self: self.facts.n_heads)
    n_kv_heads = property(lambda self: self.facts.n_kv_heads)
    head_dim = property(lambda self: self.facts.head_dim)
    hidden = property(lambda self: self.facts.hidden)
    intermediate = property(lambda self: self.facts.intermediate)

    @property
    def norm_offset(self) -> float:
        return self.adapter.norm_offset

    @property
    def source(self) -> str:
        return self.origin["source"]

    @property
    def format(self) -> str:
        return self._store.format

    def summary(self) -> dict[str, object]:
        """The architecture facts as a flat, JSON/netCDF-safe dict."""
        return {
            "source": self.source,
            "format": self.format,
            "arch": self.arch,
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "n_kv_heads": self.n_kv_heads,
            "head_dim": self.head_dim,
            "hidden": self.hidden,
            "intermediate": self.intermediate,
            "families": ",".join(self.families),
            "dtype": self.dtype,
            "quantization": self.quantization or "none",
            "norm_offset": self.norm_offset,
            "identity": self.identity,
        }

    def __repr__(self) -> str:
        q = f", quantization={self.quantization}" if self.quantization else ""
        return (
            f"Checkpoint({self.source!r}, arch={self.arch}, layers={self.n_layers}, heads={self.n_heads}/"
            f"{self.n_kv_heads}, head_dim={self.head_dim}, hidden={self.hidden}, dtype={self.dtype}{q})"
        )

    # -- name resolution -----------------------------------------------------------
    def _rel(self, L: int, src: Src, kind: str) -> str:
        return f"{self.adapter.layer_root.format(L=L)}.{src.module}.{kind}"

    def _find_prefix(self) -> str:
        candidates: list[str] = []
        for src in self._plan.values():
            candidates = [p for p in self._store.find_prefixes(self._rel(0, src, "weight")) if _valid_prefix(p)]
            if candidates:
                break
        if not candidates:
            first = next(iter(self._plan.values()))
            raise CorruptCheckpointError(
                f"{self.source} has no tensor like {self._rel(0, first, 'weight')!r} although its config says "
                f"model_type {self.arch!r}; the weights do not belong to this config"
            )
        # multimodal files hold towers with the same layout: prefer the language model
        own = [p for p in candidates if not any(h in p for h in _FOREIGN_PREFIX_HINTS)] or candidates
        return min(own, key=lambda p: (len(p), p))

    def _names(self, L: int, kind: str) -> dict[str, str]:
        out = {}
        for fam, src in self._plan.items():
            stored = self._store.resolve(self._prefix + self._rel(L, src, kind))
            if stored is not None:
                out[fam] = stored
        return out

    def _rows(self, fam: str) -> torch.Tensor | slice | None:
        if fam not in self._rows_cache:
            src = self._plan[fam]
            self._rows_cache[fam] = src.rows(self.facts) if src.rows else None
        return self._rows_cache[fam]

    def _expected_shape(self, fam: str) -> tuple[int, ...]:
        f = self.facts
        q, kv = f.n_heads * f.head_dim, f.n_kv_heads * f.head_dim
        return {
            "q_proj": (q, f.hidden),
            "k_proj": (kv, f.hidden),
            "v_proj": (kv, f.hidden),
            "o_proj": (f.hidden, q),
            "gate_proj": (f.intermediate, f.hidden),
            "up_proj": (f.intermediate, f.hidden),
            "down_proj": (f.hidden, f.intermediate),
            "q_norm": (f.head_dim,),
            "k_norm": (f.head_dim,),
        }.get(fam, (f.hidden,))

    def _planned_shape(self, fam: str, stored: str) -> tuple[int, ...]:
        shape = self._store.info(stored).shape
        if self._plan[fam].transpose:
            shape = tuple(reversed(shape))
        rows = self._rows(fam)
        if rows is not None and shape:
            shape = (len(torch.arange(shape[0])[rows]),) + tuple(shape[1:])
        return tuple(shape)

    def _validate_layer(self, L: int) -> None:
        """Refuse layer ``L`` if a stored shape is not the one the config implies (headers only)."""
        if L in self._validated:
            return
        fused: dict[str, list[str]] = {}
        for fam, stored in self._weights[L].items():
            fused.setdefault(stored, []).append(fam)
        for stored, fams in fused.items():
            # The whole stored tensor first: its rows are the sum of its families' (q, k, v of a fused
            # qkv partition it).  Only once the file confirms the config's sizes are the row selectors
            # built, since they allocate index tensors sized by those (possibly absurd) config values.
            shape = self._store.info(stored).shape
            got = tuple(reversed(shape)) if self._plan[fams[0]].transpose else tuple(shape)
            wants = [self._expected_shape(f) for f in fams]
            want = (sum(w[0] for w in wants),) + wants[0][1:] if len(fams) > 1 else wants[0]
            if got != want:
                what = fams[0] if len(fams) == 1 else f"{'+'.join(fams)} (stored together as {stored})"
                raise self._shape_mismatch(L, what, got, want)
        for fam, stored in self._weights[L].items():
            got, want = self._planned_shape(fam, stored), self._expected_shape(fam)
            if got != want:
                raise self._shape_mismatch(L, fam, got, want)
        self._validated.add(L)

    def _shape_mismatch(self, L: int, what: str, got: tuple, want: tuple) -> CorruptCheckpointError:
        if isinstance(self._store, GGUFStore):
            said, fix = "the GGUF metadata", "the metadata does not describe the tensors, re-convert or re-download the file"
        else:
            said = "the config"
            fix = "the weights do not match config.json, correct it or use the config.json that came with them"
        return CorruptCheckpointError(
            f"layer {L} {what} of {self.source} has shape {list(got)} but {said} "
            f"(hidden={self.hidden}, heads={self.n_heads}/{self.n_kv_heads}, head_dim={self.head_dim}, "
            f"intermediate={self.intermediate}) implies {list(want)}; {fix}"
        )

    def _stored_layers(self) -> frozenset[int]:
        """Indices of the layers that have at least one tensor, from the tensor names alone."""
        if isinstance(self._store, GGUFStore):
            return self._store.blocks
        head, _, tail = (self._prefix + self.adapter.layer_root).partition("{L}")
        pattern = re.compile(re.escape(head) + r"(0|[1-9][0-9]*)" + re.escape(tail) + r"\.")
        return frozenset(int(m.group(1)) for name in self._store.names() if (m := pattern.match(name)))

    def _check_layer_count(self) -> None:
        """Refuse a config whose layer count is not that of the layer tensors present.

        Too high a count would fail mid-computation (or, at 2**31, loop for
        ever); too low a one would silently analyse part of the model.
        """
        n, present = self.n_layers, self._stored_layers()
        # distinct indices 0 <= i: exactly 0..n-1 iff there are n of them and the largest is n - 1
        # (a GGUF's block_count was held to its blk.N tensors when the file was opened, so it passes here)
        if len(present) == n and max(present, default=-1) == n - 1:
            return
        key = self.adapter.config_key("n_layers")
        if self.adapter.text_cfg(self.config) is not self.config:
            key = f"{self.adapter.text_config}.{key}"
        fix = f"set {key} to {len(present)} in config.json or use the config.json that came with these weights"
        if present and max(present) + 1 != len(present):
            fix = "layers are missing from the weights, re-download them"
        raise CorruptCheckpointError(
            f"config.json of {self.source} says {key} = {n}, but the weights hold tensors of layers "
            f"{index_span(present)} ({len(present)} layers); {fix}"
        )

    @property
    def identity(self) -> str:
        """sha256 of the config and of every tensor's name, type, shape and whole payload.

        The same weights give the same identity whether stored in one file or
        in shards, on any machine; any changed byte (a fine-tune, rows edited
        in place) gives another, so the results cache never serves old numbers.
        Computed on first use (for a hub model it needs every shard).  Cost:
        one read of the checkpoint the first time, then free while its files
        are unchanged (per-file memo, :mod:`geomlib.io.digest`).
        """
        if self._identity is None:
            cfg = {k: v for k, v in self.config.items() if k not in _VOLATILE_CONFIG_KEYS}
            h = hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode())
            h.update(self._store.identity_material())
            self._identity = h.hexdigest()
        return self._identity

    # -- validation of arguments ---------------------------------------------------
    def _check_layer(self, L: object) -> int:
        if isinstance(L, bool) or not isinstance(L, int) or not -self.n_layers <= L < self.n_layers:
            raise InvalidArgumentError(
                f"layer {L!r} is out of range for {self.source}, which has layers 0..{self.n_layers - 1}; "
                "pass an integer in that range (negative counts from the end)"
            )
        return L % self.n_layers

    def _check_families(self, families: Iterable[str] | str | None) -> tuple[str, ...]:
        if families is None:
            return self.families
        if isinstance(families, str):
            families = (families,)
        families = tuple(families)
        unknown = [f for f in families if f not in FAMILIES]
        if unknown:
            raise InvalidArgumentError(
                f"unknown famil{'y' if len(unknown) == 1 else 'ies'} {', '.join(map(repr, unknown))}; "
                f"choose from {', '.join(FAMILIES)}"
            )
        return families

    # -- reading -----------------------------------------------------------------------
    def tensor_names(self, L: int) -> dict[str, str]:
        """Stored tensor names (weights and biases) read for layer ``L``, by family."""
        L = self._check_layer(L)
        out = dict(self._weights[L])
        out.update({f"{k}.bias": v for k, v in self._biases[L].items()})
        return out

    def prefetch(self, L: int, families: Iterable[str] | str | None = None) -> None:
        """Hint that layer ``L`` (these families) is read next: the OS starts reading it in the background.

        Out-of-range layers are ignored, so a pass can call ``prefetch(L + 1)`` unconditionally.
        """
        if not -self.n_layers <= L < self.n_layers:
            return
        fams = self._check_families(families)
        table = self._weights[L % self.n_layers]
        self._store.prefetch(sorted({table[f] for f in fams if f in table}))

    def layer_nbytes(self, L: int) -> int:
        """Bytes layer ``L``'s weights and biases occupy in the file (fused tensors once)."""
        return sum(self._store.info(n).nbytes for n in set(self.tensor_names(L).values()))

    def _read(
        self, table: Mapping[str, str], fams: tuple[str, ...], dtype: torch.dtype, device: torch.device
    ) -> dict[str, torch.Tensor]:
        raw: dict[str, torch.Tensor] = {}  # fused tensors are read once per call
        out = {}
        for fam in fams:
            stored = table.get(fam)
            if stored is None:
                continue
            if stored not in raw:
                raw[stored] = self._store.read(stored).to(device)
            t = raw[stored]
            if self._plan[fam].transpose and t.ndim == 2:
                t = t.T
            rows = self._rows(fam)
            if rows is not None:
                t = t[rows.to(device) if isinstance(rows, torch.Tensor) else rows]
            out[fam] = t.to(dtype).contiguous()
        return out

    def _check_dtype(self, dtype: object) -> torch.dtype:
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise InvalidArgumentError(
                f"dtype {dtype!r} is not a torch floating dtype; use torch.float64 (default) or torch.float32"
            )
        return dtype

    def layer(
        self,
        L: int,
        families: Iterable[str] | str | None = None,
        dtype: torch.dtype = torch.float64,
        device: str | torch.device | None = None,
    ) -> dict[str, torch.Tensor]:
        """Read layer ``L``'s weights, and nothing else.

        Parameters
        ----------
        L : int
            Layer index (negative counts from the end).
        families : iterable of str, optional
            Subset of :data:`~geomlib.arch.FAMILIES`; default every family
            the checkpoint has.  Families absent from this layer are absent
            from the result.
        dtype : torch.dtype
            Result dtype (float64 by default, whatever the storage dtype).
        device : str or torch.device, optional
            ``None`` for CPU, ``"auto"`` for CUDA when present.

        Returns
        -------
        dict of str to Tensor
            Matrices ``W : (n_out, n_in)`` in HF Linear orientation; norm gains
            ``g : (hidden,)`` or ``(head_dim,)`` as stored (add
            :attr:`norm_offset` for the effective gain).
        """
        L = self._check_layer(L)
        self._validate_layer(L)
        return self._read(self._weights[L], self._check_families(families), self._check_dtype(dtype),
                          resolve_device(device))

    def biases(
        self,
        L: int,
        families: Iterable[str] | str | None = None,
        dtype: torch.dtype = torch.float64,
        device: str | torch.device | None = None,
    ) -> dict[str, torch.Tensor]:
        """Layer ``L``'s biases by family (``b : (n_out,)``; LayerNorm betas ``(hidden,)``).

        Families without a bias are absent.
        """
        L = self._check_layer(L)
        return self._read(self._biases[L], self._check_families(families), self._check_dtype(dtype),
                          resolve_device(device))

    def iter_layers(
        self,
        families: Iterable[str] | str | None = None,
        dtype: torch.dtype = torch.float64,
        device: str | torch.device | None = None,
        progress: bool = True,
    ) -> Iterator[tuple[int, dict[str, torch.Tensor]]]:
        """Yield ``(L, layer(L))`` for every layer, one layer in memory at a time."""
        from tqdm.auto import tqdm

        fams = self._check_families(families)
        for L in tqdm(range(self.n_layers), desc=f"reading {self.source}", unit="layer", disable=not progress,
                      leave=False):
            yield L, self.layer(L, fams, dtype, device)

    # -- blocks: the same slice of every layer, for all-pairs reductions ---------------------
    def block_axis(self, family: str) -> tuple[int, int]:
        """``(n, elems)``: a family's matrix splits into ``n`` blocks of ``elems`` elements each.

        Blocks follow the stored rows, so :meth:`read_block` reads one
        contiguous byte range per block; every layer splits the same way.
        """
        self._check_families(family)
        stored = next((names[family] for names in self._weights if family in names), None)
        if stored is None:
            raise InvalidArgumentError(f"{self.source} has no {family} in any layer; choose one of {self.families}")
        shape = self._planned_shape(family, stored)
        if len(shape) == 1:
            return shape[0], 1
        return (shape[1], shape[0]) if self._plan[family].transpose else (shape[0], shape[1])

    def read_block(
        self,
        L: int,
        family: str,
        start: int,
        stop: int,
        dtype: torch.dtype = torch.float64,
        device: str | torch.device | None = None,
    ) -> torch.Tensor | None:
        """Block ``start:stop`` of layer ``L``'s ``family`` matrix, reading only its bytes.

        Returns
        -------
        Tensor or None
            Rows ``start:stop`` of ``W`` (columns for transposed storage such as
            GPT-2's ``Conv1D``); any consistent element subset serves a
            Frobenius inner product.  None if the layer lacks the family.
        """
        L = self._check_layer(L)
        stored = self._weights[L].get(family)
        if stored is None:
            return None
        self._validate_layer(L)
        dev, dtype = resolve_device(device), self._check_dtype(dtype)
        src, rows = self._plan[family], self._rows(family)
        if src.transpose:
            t = self._store.read_rows(stored, start, stop).to(dev)  # stored rows are W's columns
            if rows is not None:
                t = t[:, rows.to(dev) if isinstance(rows, torch.Tensor) else rows]
            t = t.T
        else:
            sel = torch.arange(self._store.info(stored).shape[0])
            if rows is not None:
                sel = sel[rows]
            sel = sel[start:stop]
            # fused layouts (NeoX's interleaved heads) select several contiguous runs
            breaks = (torch.nonzero(sel[1:] - sel[:-1] != 1).flatten() + 1).tolist()
            runs = [(int(r[0]), int(r[-1]) + 1) for r in torch.tensor_split(sel, breaks) if len(r)]
            parts = [self._store.read_rows(stored, a, b) for a, b in runs]
            t = torch.cat(parts) if parts else self._store.read_rows(stored, 0, 0)
            t = t.to(dev)
        return t.to(dtype).contiguous()

    def head(self, weights: Mapping[str, torch.Tensor] | torch.Tensor, family: str, h: int) -> torch.Tensor:
        """The slice of a layer's weight that belongs to attention head ``h``.

        Parameters
        ----------
        weights : dict or Tensor
            ``layer(L)`` or the family's matrix itself.
        family : {"q_proj", "k_proj", "v_proj", "o_proj"}
        h : int
            Query head index; k and v use key/value head ``h // (n_heads // n_kv_heads)``.

        Returns
        -------
        Tensor
            ``W_Q^h : (head_dim, hidden)`` rows of q; the rows of the shared
            kv head for k and v; ``W_O^h : (hidden, head_dim)`` columns of o.
        """
        if family not in HEAD_AXIS:
            raise InvalidArgumentError(
                f"family {family!r} has no per-head view; choose one of {', '.join(HEAD_AXIS)}"
            )
        if isinstance(h, bool) or not isinstance(h, int) or not 0 <= h < self.n_heads:
            raise InvalidArgumentError(
                f"head {h!r} is out of range for {self.source}, which has heads 0..{self.n_heads - 1}"
            )
        W = weights[family] if isinstance(weights, Mapping) else weights
        d = self.head_dim
        g = self.facts.kv_head(h) if family in ("k_proj", "v_proj") else h
        return W[g * d : (g + 1) * d] if HEAD_AXIS[family] == 0 else W[:, g * d : (g + 1) * d]

    # -- lifetime ----------------------------------------------------------------------
    @property
    def bytes_read(self) -> int:
        """Payload bytes read from the file(s) so far."""
        return self._store.bytes_read

    def close(self) -> None:
        self._store.close()

    def __enter__(self) -> "Checkpoint":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_model(source: str | os.PathLike, hf_cache_dir: str | os.PathLike | None = None) -> Checkpoint:
    """Open a checkpoint lazily.

    Parameters
    ----------
    source : str or path
        ``demo:smollm2-135m`` / ``demo:minilm-l6``; a Hugging Face directory
        (``config.json`` + ``model.safetensors`` or sharded with
        ``model.safetensors.index.json``); a ``.gguf`` file; or a hub id
        ``org/name[@revision]`` (from the local HF cache when present, which
        is all that is used with ``HF_HUB_OFFLINE=1``; downloaded otherwise).
    hf_cache_dir : path, optional
        HF hub cache to use instead of ``HF_HUB_CACHE`` / ``HF_HOME``.

    Returns
    -------
    Checkpoint
        Opened from headers only; no weights are read yet.

    Raises
    ------
    GeomlibError
        One sentence on what is wrong: missing path, directory without config,
        unsupported architecture, truncated file, pickle checkpoint refused,
        a config whose layer count or sizes disagree with the tensors present...
    """
    opened = open_source(source, hf_cache_dir)
    try:
        adapter = get_adapter(opened.config.get("model_type"), where=f"{opened.origin['source']}'s config")
        return Checkpoint(opened, adapter)
    except BaseException:
        opened.store.close()
        raise


__all__ = ["Checkpoint", "open_model"]
