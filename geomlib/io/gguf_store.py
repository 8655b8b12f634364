"""GGUF checkpoints (llama.cpp format), memory-mapped and dequantized per tensor.

GGUF stores tensors under llama.cpp names (``blk.3.attn_q.weight``) and, for
some architectures, in a layout that differs from Hugging Face's.  This module
undoes exactly what llama.cpp's ``convert_hf_to_gguf.py`` did, so a tensor read
here equals the one in the original HF checkpoint up to quantization:

* llama: q and k rows were permuted for llama.cpp's RoPE; they are un-permuted.
* gemma, gemma2, gemma3: norm gains were stored as ``w + 1``; 1 is subtracted
  (in float64, so the subtraction itself adds no rounding).
* bert: stored as in HF (separate q/k/v with biases, LayerNorm weight and bias);
  its HF names have no ``model.`` root (``encoder.layer.3.attention.self.query``).

Names are translated with the ``gguf`` package's own tensor-name map, so the
rest of geomlib asks for HF names (``model.layers.3.self_attn.q_proj.weight``).
"""

from __future__ import annotations

import functools
import mmap
import numbers
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import CorruptCheckpointError, UnsupportedArchitectureError
from .gguf_header import BadHeader, scan_header
from .store import TensorInfo, TensorStore


@dataclass(frozen=True)
class _GGUFArch:
    model_type: str  # the HF config model_type geomlib's adapters are keyed by
    unpermute_qk: bool  # llama.cpp permuted q/k rows for its RoPE kernel
    norm_plus_one: bool  # llama.cpp stored norm gains as w + 1


#: GGUF ``general.architecture`` -> how llama.cpp converted it
GGUF_ARCHS: dict[str, _GGUFArch] = {
    "llama": _GGUFArch("llama", True, False),
    "qwen2": _GGUFArch("qwen2", False, False),
    "qwen3": _GGUFArch("qwen3", False, False),
    "gemma": _GGUFArch("gemma", False, True),
    "gemma2": _GGUFArch("gemma2", False, True),
    "gemma3": _GGUFArch("gemma3_text", False, True),
    "bert": _GGUFArch("bert", False, False),
}

#: storage types that are plain floats (everything else is a quantization)
FLOAT_TYPES = {"F32", "F16", "BF16", "F64"}

#: HF config key -> the GGUF metadata key (after ``<arch>.``) it is read from, to name it in messages
GGUF_KEYS = {
    "num_hidden_layers": "block_count",
    "hidden_size": "embedding_length",
    "intermediate_size": "feed_forward_length",
    "num_attention_heads": "attention.head_count",
    "num_key_value_heads": "attention.head_count_kv",
    "head_dim": "attention.key_length",
}

_BLOCK = re.compile(r"blk\.(0|[1-9][0-9]*)\.")


def index_span(indices, limit: int = 4) -> str:
    """Sorted integers as runs, ``"0..3"`` or ``"0..1, 3, 7..9, ..."`` (at most ``limit`` runs)."""
    runs: list[list[int]] = []
    for i in sorted(indices):
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        elif len(runs) == limit:
            return ", ".join(f"{a}..{b}" if b > a else str(a) for a, b in runs) + ", ..."
        else:
            runs.append([i, i])
    return ", ".join(f"{a}..{b}" if b > a else str(a) for a, b in runs) or "none"


def _decoder(tensor_type):
    """``f(data, type) -> ndarray`` for one GGUF tensor type: gguf's dequantizer, except for F64, which it
    does not implement (gguf's reader already maps F64 data as a float64 array)."""
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize

    if tensor_type == GGMLQuantizationType.F64:
        return lambda data, _: np.asarray(data, dtype=np.float64)
    return dequantize


@functools.cache
def _reader_class(gguf):
    """``gguf.GGUFReader`` over a plain ndarray view of its memory map (a subclass, built once).

    The reader slices its map once per metadata item, and a tokenizer has 10⁵ of them: as ``np.memmap``
    views each slice runs a Python hook (``__array_finalize__``), most of the parse time (2.4 s for the
    SmolLM2 demo); plain views of the same pages parse it in 0.7 s into identical fields and tensors.
    """

    class FastGGUFReader(gguf.GGUFReader):
        @property
        def data(self):
            return self._plain

        @data.setter
        def data(self, value):
            self._plain = np.asarray(value)  # shares the mapping (kept alive as the view's base)

    return FastGGUFReader


def unpermute_rows(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's RoPE row permutation of a q or k weight.

    Parameters
    ----------
    w : (n_heads * head_dim, n_in) array
        The weight as stored in GGUF.
    n_heads : int
        Attention heads for q, key/value heads for k.

    Returns
    -------
    (n_heads * head_dim, n_in) array in Hugging Face row order.
    """
    out = w.shape[0]
    return w.reshape(n_heads, out // n_heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _field(reader, key: str, default=None):
    f = reader.fields.get(key)
    if f is None:
        return default
    v = f.contents()
    return v


class GGUFStore(TensorStore):
    """Tensors of one ``.gguf`` file, exposed under Hugging Face names.

    Parameters
    ----------
    path : Path
        The GGUF file.  It is memory-mapped; a tensor's pages are touched
        only when that tensor is read.
    """

    format = "gguf"

    def __init__(self, path: Path) -> None:
        super().__init__()
        import gguf  # deferred: only GGUF users pay for the import

        self.path = Path(path)
        self._reader = self._open_reader(gguf)
        r = self._reader
        self.gguf_arch = str(_field(r, "general.architecture", ""))
        if not self.gguf_arch:
            raise UnsupportedArchitectureError(
                f"{self.path.name} has no general.architecture metadata, so geomlib cannot tell how llama.cpp "
                f"converted it; supported GGUF architectures: {', '.join(sorted(GGUF_ARCHS))}"
            )
        if self.gguf_arch not in GGUF_ARCHS:
            raise UnsupportedArchitectureError(
                f"{self.path.name} is a GGUF of architecture {self.gguf_arch!r}, which geomlib "
                f"cannot read; supported GGUF architectures: {', '.join(sorted(GGUF_ARCHS))}"
            )
        self._arch = GGUF_ARCHS[self.gguf_arch]
        self.config = self._config()
        self._tensors = {}
        for t in r.tensors:
            # ggml lists dims fastest-first; PyTorch order is the reverse
            shape = tuple(int(s) for s in reversed(t.shape.tolist()))
            self._infos[t.name] = TensorInfo(shape, t.tensor_type.name, int(t.n_bytes))
            self._tensors[t.name] = t
        #: indices of the blocks that have tensors (``blk.N.*``)
        self.blocks = frozenset(int(m.group(1)) for name in self._infos if (m := _BLOCK.match(name)))
        self._check_block_count()
        arch_enum = next(
            (k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == self.gguf_arch), None
        )
        # the name map costs ~50 kB per block: built only for a count the tensors confirm
        self._name_map = gguf.get_tensor_name_map(arch_enum, int(self.config["num_hidden_layers"]))

    def config_key(self, hf_key: str) -> str:
        """The GGUF metadata key an HF config key was read from (``llama.block_count``), for messages."""
        return f"{self.gguf_arch}.{GGUF_KEYS[hf_key]}" if hf_key in GGUF_KEYS else hf_key

    def _check_block_count(self) -> None:
        """Refuse a ``block_count`` other than the number of ``blk.N`` blocks the tensors form."""
        n, blocks = self.config["num_hidden_layers"], self.blocks
        # distinct indices 0 <= i: exactly 0..n-1 iff there are n of them and the largest is n - 1
        if len(blocks) == n and max(blocks) == n - 1:
            return
        held = f"tensors for blocks {index_span(blocks)} ({len(blocks)} blocks)" if blocks else "no blk.N tensors"
        raise CorruptCheckpointError(
            f"{self.path.name} has GGUF metadata {self.config_key('num_hidden_layers')} = {n} but holds {held}; "
            "the file is corrupt or its metadata was edited, re-convert or re-download it"
        )

    def _open_reader(self, gguf):
        """``gguf.GGUFReader`` of the file, or a one-sentence CorruptCheckpointError.

        gguf's own errors on bad bytes are numpy internals ("cannot reshape
        array of size 536 into shape (32,32)", "When changing to a larger
        dtype..."), so the common causes are diagnosed here first.
        """
        try:
            size = self.path.stat().st_size
            with self.path.open("rb") as f:
                magic = f.read(4)
        except OSError as exc:
            raise CorruptCheckpointError(
                f"{self.path} cannot be read ({exc.strerror or exc}); check its permissions"
            ) from None
        if size == 0:
            raise CorruptCheckpointError(
                f"{self.path} is empty (0 bytes); the download or conversion did not finish, redo it"
            )
        if magic != b"GGUF" and not (size < 4 and b"GGUF".startswith(magic)):  # a 3-byte cut is truncation
            raise CorruptCheckpointError(
                f"{self.path} is not a GGUF file (it starts with {magic!r}, not b'GGUF'); "
                "pass a .gguf written by llama.cpp, or re-download it"
            )
        try:
            with self.path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                scan_header(buf, size)
        except BadHeader as exc:
            raise CorruptCheckpointError(
                f"{self.path} is a truncated or corrupt GGUF file ({size} bytes): {exc}; re-download or re-convert it"
            ) from None
        except (OSError, ValueError) as exc:  # mmap of an unreadable or special file
            raise CorruptCheckpointError(
                f"{self.path} cannot be read ({getattr(exc, 'strerror', None) or exc}); check the file"
            ) from None
        try:
            return _reader_class(gguf)(self.path, "r")
        except Exception:  # gguf raises ValueError/IndexError/KeyError on bad or missing bytes
            raise CorruptCheckpointError(
                f"{self.path} is a truncated or corrupt GGUF file ({size} bytes, and its header or tensor data "
                "ends early or is malformed); re-download or re-convert it"
            ) from None

    # -- metadata ------------------------------------------------------------
    def _config(self) -> dict:
        r, a = self._reader, self.gguf_arch

        def need(key):
            v = _field(r, f"{a}.{key}")
            if v is None:
                raise CorruptCheckpointError(
                    f"{self.path.name} lacks the GGUF metadata key {a}.{key}; the file was not written by a "
                    "complete llama.cpp conversion, re-convert or re-download it"
                )
            return v

        def positive(key, v):
            # a zero or garbage count would otherwise surface later as ZeroDivisionError or a
            # message about config.json, which a GGUF does not have
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v <= 0:
                raise CorruptCheckpointError(
                    f"{self.path.name} has GGUF metadata {a}.{key} = {v!r}, but a positive integer is required; "
                    "the file is corrupt or from an incomplete conversion, re-convert or re-download it"
                )
            return int(v)

        heads = need("attention.head_count")
        kv = _field(r, f"{a}.attention.head_count_kv", heads)
        for key, v in (("attention.head_count", heads), ("attention.head_count_kv", kv)):
            if isinstance(v, list):
                if len(set(v)) != 1:
                    raise UnsupportedArchitectureError(
                        f"{self.path.name} has a different {key} per layer ({sorted(set(v))}); geomlib needs one "
                        "head count for all layers"
                    )
        heads = positive("attention.head_count", heads[0] if isinstance(heads, list) else heads)
        kv = positive("attention.head_count_kv", kv[0] if isinstance(kv, list) else kv)
        hidden = positive("embedding_length", need("embedding_length"))
        ff = need("feed_forward_length")
        cfg = {
            "model_type": self._arch.model_type,
            "num_hidden_layers": positive("block_count", need("block_count")),
            "hidden_size": hidden,
            "intermediate_size": positive("feed_forward_length", ff[0] if isinstance(ff, list) else ff),
            "num_attention_heads": heads,
            "num_key_value_heads": kv,
            "head_dim": positive("attention.key_length", _field(r, f"{a}.attention.key_length", hidden // heads)),
        }
        for key, hf in (
            ("attention.layer_norm_rms_epsilon", "rms_norm_eps"),
            ("attention.layer_norm_epsilon", "layer_norm_eps"),  # LayerNorm models (bert)
            ("rope.freq_base", "rope_theta"),
            ("context_length", "max_position_embeddings"),
            ("vocab_size", "vocab_size"),
        ):
            v = _field(r, f"{a}.{key}")
            if v is not None:
                cfg[hf] = v
        cfg["_gguf"] = {
            "architecture": a,
            "file_type": int(ft) if isinstance(ft := _field(r, "general.file_type", -1), numbers.Integral) else -1,
            "name": str(_field(r, "general.name", "")),
        }
        return cfg

    # -- names -----------------------------------------------------------------
    def resolve(self, hf_name: str) -> str | None:
        """The GGUF name of HF tensor ``hf_name`` (``model.``-rooted), or None."""
        name = self._name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        return name if name in self._infos else None

    def find_prefixes(self, suffix: str) -> list[str]:
        # GGUF names are translated from the canonical ``model.`` root; gguf's map knows BERT's names
        # without it (``encoder.layer.0...``), as a BertModel checkpoint stores them
        for prefix in ("model.", ""):
            if self.resolve(prefix + suffix):
                return [prefix]
        return []

    def describe(self) -> str:
        return str(self.path)

    # -- payload ---------------------------------------------------------------
    def _read(self, name: str, info: TensorInfo) -> torch.Tensor:
        return self._read_rows(name, info, 0, info.shape[0] if info.shape else 0)

    def _read_rows(self, name: str, info: TensorInfo, start: int, stop: int) -> torch.Tensor:
        t = self._tensors[name]
        dequantize = _decoder(t.tensor_type)
        lo, hi = start, stop
        heads = None
        if self._arch.unpermute_qk and (".attn_q." in name or ".attn_k." in name):
            heads = self.config["num_attention_heads" if ".attn_q." in name else "num_key_value_heads"]
            # the permutation mixes rows within a head only: read whole heads, un-permute, trim
            d = info.shape[0] // heads
            lo, hi = (start // d) * d, -(-stop // d) * d
        if len(info.shape) <= 1:
            w = np.asarray(dequantize(t.data, t.tensor_type)).reshape(info.shape)[lo:hi]
        else:
            # quantized data is (rows, bytes per row), float data (rows, cols): rows slice alike
            raw = t.data.reshape(info.shape[0], -1)[lo:hi]
            w = np.asarray(dequantize(raw, t.tensor_type)).reshape((hi - lo,) + tuple(info.shape[1:]))
        if heads is not None:
            w = unpermute_rows(w, (hi - lo) // (info.shape[0] // heads))[start - lo : stop - lo]
        if self._arch.norm_plus_one and name.endswith("norm.weight"):
            w = w.astype(np.float64) - 1.0
        if not w.flags.writeable or not w.flags.c_contiguous or np.may_share_memory(w, t.data):
            # never hand out a view of the read-only memory map
            w = np.array(w, order="C", copy=True)
        return torch.from_numpy(w)

    def _payload_bytes(self, name: str, start: int, length: int) -> bytes:
        flat = self._tensors[name].data.reshape(-1).view(np.uint8)
        return flat[start : start + length].tobytes()
