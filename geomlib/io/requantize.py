"""Re-quantize any checkpoint geomlib reads into a GGUF file, one layer at a time.

:func:`requantize` writes the layout llama.cpp's ``convert_hf_to_gguf.py``
writes for the model's architecture (tensor names from the ``gguf`` package's
own name map, llama q/k rows permuted for llama.cpp's RoPE kernel, 1-D norms
and biases in F32) with the metadata :class:`~geomlib.io.gguf_store.GGUFStore`
rebuilds the config from, so ``geomlib.open_model(out)`` reads back exactly
``dequantize(quantize(w))`` of every source weight.  Its first use is
measuring how much of each metric survives quantization (compare a float
checkpoint with its Q8_0 / Q4_0 re-quantization).

Memory does not grow with depth: every tensor's name, type and byte size is
known from the headers, so the GGUF header and tensor infos are written first
and the data follows tensor by tensor (``GGUFWriter.add_tensor_info`` then
``write_tensor_data``); one layer is read, quantized, written and dropped
before the next is read.

What is written
    * every per-layer tensor geomlib reads (weights and biases of each family);
      token embeddings, BERT's position/token-type embeddings and embedding
      LayerNorm, the final norm and an untied LM head where the source has them;
    * ``general.architecture``, ``general.name``, ``general.file_type``,
      ``general.quantization_version`` (quantized types), the ``<arch>.*``
      shape keys (block_count, embedding_length, feed_forward_length, head
      counts, key/value_length, norm epsilon, rope base, context length,
      vocab size);
    * provenance under ``geomlib.requantize.*``: the source as given, its
      geomlib identity (sha256), the requested type, the geomlib version, and
      the tensors stored as F16 because their rows do not fill whole blocks.

Not written: the tokenizer (``tokenizer.ggml.*``), so llama.cpp cannot run the
file and geomlib's forward-pass analysis (``heads``) cannot read it.
"""

from __future__ import annotations

import os
import secrets
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import GeomlibWarning, InvalidArgumentError, UnsupportedArchitectureError
from ..validate import unwritable

#: storage types :func:`requantize` writes (those ``gguf.quants.quantize`` implements among llama.cpp's
#: classic types), best first
QTYPES: tuple[str, ...] = ("F32", "F16", "BF16", "Q8_0", "Q5_1", "Q5_0", "Q4_1", "Q4_0")
_FLOAT = ("F32", "F16", "BF16")
#: qtype -> ``gguf.LlamaFileType`` member (``general.file_type``)
_FILE_TYPES = {
    "F32": "ALL_F32",
    "F16": "MOSTLY_F16",
    "BF16": "MOSTLY_BF16",
    "Q8_0": "MOSTLY_Q8_0",
    "Q5_1": "MOSTLY_Q5_1",
    "Q5_0": "MOSTLY_Q5_0",
    "Q4_1": "MOSTLY_Q4_1",
    "Q4_0": "MOSTLY_Q4_0",
}
#: storage of a matrix whose rows do not split into whole blocks (llama.cpp's converter does the same)
FALLBACK = "F16"
#: metadata key prefix of the provenance note
META = "geomlib.requantize"


@dataclass(frozen=True)
class _Layout:
    """How llama.cpp writes one HF ``model_type``."""

    gguf_arch: str  # general.architecture (and gguf.MODEL_ARCH_NAMES value)
    permute_qk: bool  # LlamaModel.modify_tensors permutes q/k rows
    layer_norm: bool  # LayerNorm (``layer_norm_eps``) rather than RMSNorm (``rms_norm_eps``)
    #: non-layer tensors, relative to the model root: (HF name, always F32)
    head: tuple[tuple[str, bool], ...]  # written before the blocks
    tail: tuple[tuple[str, bool], ...]  # written after them (an LM head lives outside the model root)


_DECODER = _Layout(
    "llama", True, False, (("embed_tokens.weight", False),), (("norm.weight", True), ("/lm_head.weight", False))
)
#: HF ``model_type`` -> llama.cpp layout; Mistral is converted as ``llama``, as llama.cpp does
LAYOUTS: dict[str, _Layout] = {
    "llama": _DECODER,
    "mistral": _DECODER,
    "qwen2": _Layout("qwen2", False, False, _DECODER.head, _DECODER.tail),
    "qwen3": _Layout("qwen3", False, False, _DECODER.head, _DECODER.tail),
    "bert": _Layout(
        "bert",
        False,
        True,
        (
            ("embeddings.word_embeddings.weight", False),
            # llama.cpp keeps these F32 whatever the requested type
            ("embeddings.token_type_embeddings.weight", True),
            ("embeddings.position_embeddings.weight", True),
            ("embeddings.LayerNorm.weight", True),
            ("embeddings.LayerNorm.bias", True),
        ),
        (),
    ),
}


@dataclass
class _Entry:
    """One tensor of the output: its GGUF name, logical shape, storage type and where its data comes from."""

    name: str
    shape: tuple[int, ...]
    qtype: str
    layer: int | None  # None: a non-layer tensor, read from the store as ``stored``
    key: str  # family (``"q_proj"``, ``"q_proj.bias"``) for layer tensors, the stored name otherwise
    permute_heads: int | None = None


def _check_qtype(qtype: object) -> str:
    if not isinstance(qtype, str) or qtype.upper() not in QTYPES:
        raise InvalidArgumentError(
            f"qtype={qtype!r} is not a type requantize can write; choose one of {', '.join(QTYPES)}"
        )
    return qtype.upper()


def _check_path(path: object, overwrite: bool) -> Path:
    """The output path, after refusing one that cannot be written (nothing is read or created)."""
    if not isinstance(path, (str, os.PathLike)) or not str(os.fspath(path)):
        raise InvalidArgumentError(f"path={path!r} is not a file path; pass the .gguf file to write, e.g. 'out.Q8_0.gguf'")
    p = Path(os.fspath(path))
    if p.suffix.lower() != ".gguf":
        raise InvalidArgumentError(
            f"the output path {p} does not end in .gguf; name the file to write like 'model.Q8_0.gguf'"
        )
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise InvalidArgumentError(
            f"the directory {parent} of the output path {p.name} does not exist; create it or choose another path"
        )
    if p.is_dir():
        raise InvalidArgumentError(f"the output path {p} is a directory; pass the .gguf file to write inside it")
    if p.exists() and not overwrite:
        raise InvalidArgumentError(
            f"the output path {p} already exists; pass overwrite=True to replace it or choose another path"
        )
    why = unwritable(parent, prefix=f".{p.name}.probe-")
    if why is not None:
        raise InvalidArgumentError(
            f"the output directory {parent} cannot be written ({why}); choose a writable directory"
        )
    return p


def _gguf_name(name_map, hf_name: str) -> str | None:
    """The llama.cpp name of an HF tensor name, rooted at ``model.`` (decoders) or not (BERT)."""
    for candidate in ("model." + hf_name, hf_name):
        name = name_map.get_name(candidate, try_suffixes=(".weight", ".bias"))
        if name is not None:
            return name
    return None


def _stored_type(shape: tuple[int, ...], qtype: str, force_f32: bool) -> str:
    """llama.cpp's choice for one tensor: 1-D and forced tensors F32, matrices ``qtype`` or the fallback."""
    import gguf

    if force_f32 or len(shape) < 2:
        return "F32"
    block, _ = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[qtype]]
    return qtype if shape[-1] % block == 0 else FALLBACK


def _nbytes(shape: tuple[int, ...], qtype: str) -> int:
    import gguf

    block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[qtype]]
    rows = int(np.prod(shape[:-1], dtype=np.int64)) if len(shape) > 1 else 1
    return rows * (shape[-1] // block) * size


def _permute_rows(w: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp's RoPE row permutation of a q or k weight (``LlamaModel.permute``); the reader undoes it."""
    out = w.shape[0]
    return w.reshape(n_heads, 2, out // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _encode(w: np.ndarray, qtype: str) -> np.ndarray:
    import gguf

    return gguf.quants.quantize(np.ascontiguousarray(w, dtype=np.float32), gguf.GGMLQuantizationType[qtype])


def _plan(ckpt, layout: _Layout, qtype: str) -> list[_Entry]:
    """Every output tensor, in file order, from headers alone."""
    import gguf

    arch = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == layout.gguf_arch)
    name_map = gguf.get_tensor_name_map(arch, ckpt.n_layers)
    store, prefix = ckpt._store, ckpt._prefix
    plan = ckpt.adapter.family_plan(ckpt.facts)
    root = ckpt.adapter.layer_root

    def extra(items) -> list[_Entry]:
        out = []
        for rel, force_f32 in items:
            hf = rel[1:] if rel.startswith("/") else prefix + rel  # "/": outside the model root
            stored = store.resolve(hf)
            if stored is None:
                continue
            name = _gguf_name(name_map, rel.lstrip("/"))
            if name is None:  # pragma: no cover - every name above is in gguf's map
                continue
            shape = tuple(store.info(stored).shape)
            out.append(_Entry(name, shape, _stored_type(shape, qtype, force_f32), None, stored))
        return out

    def unsupported(what: str) -> UnsupportedArchitectureError:
        return UnsupportedArchitectureError(
            f"{ckpt.source} has {what}, which llama.cpp's {layout.gguf_arch} layout has no tensor for; "
            f"requantize writes the standard {', '.join(sorted(LAYOUTS))} layouts only"
        )

    entries = extra(layout.head)
    for L in range(ckpt.n_layers):
        for key, stored in ckpt.tensor_names(L).items():
            fam = key[: -len(".bias")] if key.endswith(".bias") else key
            kind = "bias" if key.endswith(".bias") else "weight"
            rel = f"{root.format(L=L)}.{plan[fam].module}.{kind}"
            name = _gguf_name(name_map, rel)
            if name is None:
                raise unsupported(f"layer {L} {key}")
            shape = tuple(store.info(stored).shape)
            heads = None
            if layout.permute_qk and kind == "weight" and fam in ("q_proj", "k_proj"):
                heads = ckpt.n_heads if fam == "q_proj" else ckpt.n_kv_heads
            entries.append(_Entry(name, shape, _stored_type(shape, qtype, False), L, key, heads))
    entries += [e for e in extra(layout.tail) if not _tied(ckpt, e, entries)]
    return entries


def _tied(ckpt, entry: _Entry, entries: list[_Entry]) -> bool:
    """Whether an LM head is tied to the token embeddings (then llama.cpp writes no ``output.weight``)."""
    if entry.name != "output.weight":
        return False
    if ckpt.adapter.text_cfg(ckpt.config).get("tie_word_embeddings") is True:
        return True
    embd = next((e for e in entries if e.name == "token_embd.weight"), None)
    return embd is not None and embd.key == entry.key  # one stored tensor under both names


def _metadata(writer, ckpt, layout: _Layout, qtype: str, fallback: list[str]) -> None:
    import gguf

    from .. import __version__

    cfg = ckpt.adapter.text_cfg(ckpt.config)
    f = ckpt.facts
    writer.add_name(ckpt.source)
    writer.add_quantized_by(f"geomlib {__version__}")
    if isinstance(ctx := cfg.get("max_position_embeddings"), int) and ctx > 0:
        writer.add_context_length(ctx)
    writer.add_embedding_length(f.hidden)
    writer.add_block_count(f.n_layers)
    writer.add_feed_forward_length(f.intermediate)
    writer.add_head_count(f.n_heads)
    if not layout.layer_norm:
        writer.add_head_count_kv(f.n_kv_heads)
    writer.add_key_length(f.head_dim)
    writer.add_value_length(f.head_dim)
    if layout.layer_norm:
        eps = cfg.get("layer_norm_eps")
        if isinstance(eps, (int, float)) and not isinstance(eps, bool):
            writer.add_layer_norm_eps(float(eps))
        writer.add_causal_attention(False)
    else:
        eps = cfg.get("rms_norm_eps")
        if isinstance(eps, (int, float)) and not isinstance(eps, bool):
            writer.add_layer_norm_rms_eps(float(eps))
        theta = cfg.get("rope_theta")
        if theta is None and isinstance(params := cfg.get("rope_parameters"), dict):
            theta = params.get("rope_theta")
        if isinstance(theta, (int, float)) and not isinstance(theta, bool):
            writer.add_rope_freq_base(float(theta))
        if layout.permute_qk:
            writer.add_rope_dimension_count(f.head_dim)  # transformers reads llama's head_dim from here
    if isinstance(vocab := cfg.get("vocab_size"), int) and vocab > 0:
        writer.add_vocab_size(vocab)
    writer.add_file_type(int(getattr(gguf.LlamaFileType, _FILE_TYPES[qtype])))
    if qtype not in _FLOAT:
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_string(f"{META}.source", ckpt.source)
    writer.add_string(f"{META}.source_identity", ckpt.identity)
    writer.add_string(f"{META}.source_dtype", ckpt.dtype)
    writer.add_string(f"{META}.qtype", qtype)
    writer.add_string(f"{META}.geomlib_version", __version__)
    if fallback:
        writer.add_array(f"{META}.{FALLBACK.lower()}_fallback", fallback)


def _reserve(path: Path) -> Path:
    """A new, empty temporary file beside ``path`` (created with the permissions a plain open would give)."""
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:  # pragma: no cover - a 32-bit name collision
            continue


def _publish(tmp: Path, path: Path, overwrite: bool) -> None:
    """Move the finished ``tmp`` to ``path``; without ``overwrite`` never replace a file that appeared meanwhile."""
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)  # atomic, and fails if path exists
    except FileExistsError:
        raise InvalidArgumentError(
            f"the output path {path} was created by someone else while requantize ran; pass overwrite=True "
            "to replace it or choose another path"
        ) from None
    except OSError:  # a filesystem without hard links
        if path.exists():
            raise InvalidArgumentError(
                f"the output path {path} was created by someone else while requantize ran; pass overwrite=True "
                "to replace it or choose another path"
            ) from None
        os.replace(tmp, path)
        return
    tmp.unlink()


def requantize(
    source,
    path,
    qtype: str = "Q8_0",
    *,
    hf_cache_dir=None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Write a GGUF of ``source`` whose matrices are stored as ``qtype``.

    Parameters
    ----------
    source : str or path
        Anything :func:`geomlib.open_model` opens (``demo:minilm-l6``, an HF
        directory, a ``.gguf``, a hub id).  Architectures: bert, llama,
        mistral (written as llama, as llama.cpp does), qwen2, qwen3.
    path : str or path
        The ``.gguf`` file to write; its directory must exist.
    qtype : str
        Storage of the 2-D weight matrices, one of :data:`QTYPES` (case-insensitive).
        1-D tensors (norms, biases) stay F32, as do BERT's position and
        token-type embeddings; a matrix whose rows are not a whole number of
        quantization blocks (32 values) is stored as F16, with a
        :class:`~geomlib.errors.GeomlibWarning` and its name recorded in the
        ``geomlib.requantize.f16_fallback`` metadata.
    hf_cache_dir : path, optional
        HF hub cache for hub ids (as in :func:`geomlib.open_model`).
    overwrite : bool
        Replace an existing ``path``; refused by default.
    progress : bool
        A progress bar over the layers.

    Returns
    -------
    Path
        ``path``.  ``geomlib.open_model(path)`` then reads every layer as
        ``dequantize(quantize(w))`` of the source's weight (exactly ``w`` for F32).

    Raises
    ------
    GeomlibError
        One sentence: an unknown ``qtype``, an output path that exists (without
        ``overwrite``), lacks its directory, is not ``.gguf`` or cannot be
        written (all checked before the source is opened), an architecture
        without a llama.cpp layout here, or whatever opening the source raises.
        The file is written to a temporary beside ``path`` and renamed when
        complete: on any error nothing is left at ``path`` or beside it.
    """
    import gguf
    import torch
    from tqdm.auto import tqdm

    from ..model import open_model

    qtype = _check_qtype(qtype)
    for flag, value in (("overwrite", overwrite), ("progress", progress)):
        if not isinstance(value, bool):
            raise InvalidArgumentError(f"{flag}={value!r} is not a bool; pass True or False")
    path = _check_path(path, overwrite)

    with open_model(source, hf_cache_dir=hf_cache_dir) as ckpt:
        layout = LAYOUTS.get(ckpt.arch)
        if layout is None:
            raise UnsupportedArchitectureError(
                f"{ckpt.source} is a {ckpt.arch} checkpoint, which requantize cannot write as GGUF; "
                f"supported architectures: {', '.join(sorted(LAYOUTS))}"
            )
        resolved = Path(ckpt.origin.get("resolved", ""))
        if path.exists() and resolved.is_file() and resolved.samefile(path):
            raise InvalidArgumentError(
                f"the output path {path} is the source checkpoint itself; write the re-quantized file elsewhere"
            )
        entries = _plan(ckpt, layout, qtype)
        fallback = [e.name for e in entries if e.qtype == FALLBACK and qtype != FALLBACK and len(e.shape) > 1]
        if fallback:
            warnings.warn(
                f"{len(fallback)} matri{'x' if len(fallback) == 1 else 'ces'} of {ckpt.source} ({', '.join(fallback[:3])}"
                f"{', ...' if len(fallback) > 3 else ''}) have rows that are not a whole number of {qtype} blocks, "
                f"so they are stored as {FALLBACK} (as llama.cpp does); they are listed in the file's "
                f"{META}.{FALLBACK.lower()}_fallback metadata",
                GeomlibWarning,
                stacklevel=2,
            )
        tmp = _reserve(path)
        writer = None
        try:
            writer = gguf.GGUFWriter(tmp, layout.gguf_arch)
            _metadata(writer, ckpt, layout, qtype, fallback)
            for e in entries:
                # float32 tensor dtype: the shape is taken as the logical one, the size as given
                writer.add_tensor_info(e.name, e.shape, np.dtype(np.float32), _nbytes(e.shape, e.qtype),
                                       raw_dtype=gguf.GGMLQuantizationType[e.qtype])
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_ti_data_to_file()

            def put(e: _Entry, w: torch.Tensor) -> None:
                a = w.detach().to("cpu", torch.float32).numpy()
                if e.permute_heads is not None:
                    a = _permute_rows(a, e.permute_heads)
                data = _encode(a, e.qtype)
                assert data.nbytes == _nbytes(e.shape, e.qtype), (e.name, data.nbytes)
                writer.write_tensor_data(data)

            bar = tqdm(total=ckpt.n_layers, desc=f"requantizing {ckpt.source} to {qtype}", unit="layer",
                       disable=not progress, leave=False)
            with bar:
                _write(entries, ckpt, put, bar)
            writer.close()
            _fsync(tmp)
            _publish(tmp, path, overwrite)
        except BaseException:
            if writer is not None:
                writer.close()
            tmp.unlink(missing_ok=True)
            raise
    return path


def _write(entries: list[_Entry], ckpt, put: Callable, bar) -> None:
    """Write the data of ``entries`` in their order, reading one layer at a time."""
    import torch

    current: int | None = None
    weights: dict[str, torch.Tensor] = {}
    for e in entries:
        if e.layer is None:
            put(e, ckpt._store.read(e.key))
            continue
        if e.layer != current:
            if current is not None:
                bar.update(1)
            current = e.layer
            weights = {}  # drop the previous layer before reading this one
            weights = ckpt.layer(current, dtype=torch.float32)
            weights.update({f"{k}.bias": v for k, v in ckpt.biases(current, dtype=torch.float32).items()})
        put(e, weights[e.key])
    if current is not None:
        bar.update(1)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


__all__ = ["FALLBACK", "LAYOUTS", "QTYPES", "requantize"]
