"""Tiny GGUF files written the way llama.cpp's ``convert_hf_to_gguf.py`` writes them.

The factories take a model from :func:`tests.factories.hf.tiny_model` and write
its weights with :class:`gguf.GGUFWriter`, applying exactly the transformations
llama.cpp's converter applies, so a reader that undoes them must give back the
model's own parameters:

* tensor names come from gguf's own HF -> GGUF name map (``blk.0.attn_q.weight``);
* llama q/k rows are permuted for llama.cpp's RoPE kernel;
* gemma, gemma2 and gemma3 norm gains are stored as ``w + 1``;
* 1-D tensors (norms, biases) always stay F32, whatever the requested type;
  2-D tensors whose rows are not a whole number of quantization blocks fall
  back to F16, as the converter does on :class:`gguf.QuantError`.

Everything is deliberately independent of ``geomlib``: the tests compare
what geomlib reads with what these factories wrote.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class GGUFSpec:
    """How llama.cpp's converter writes one HF ``model_type``."""

    arch: str  # general.architecture
    arch_enum: str  # gguf.MODEL_ARCH member name
    permute_qk: bool  # LlamaModel.modify_tensors permutes q/k rows
    norm_plus_one: bool  # Gemma*Model.modify_tensors adds 1 to every norm gain
    always_head_dim: bool  # llama.cpp writes key/value_length for gemma even when it is hidden // heads


#: HF ``model_type`` -> GGUF ``general.architecture`` and llama.cpp's conversion rules
SPECS: dict[str, GGUFSpec] = {
    "llama": GGUFSpec("llama", "LLAMA", True, False, False),
    "qwen2": GGUFSpec("qwen2", "QWEN2", False, False, False),
    "qwen3": GGUFSpec("qwen3", "QWEN3", False, False, False),
    "gemma": GGUFSpec("gemma", "GEMMA", False, True, True),
    "gemma2": GGUFSpec("gemma2", "GEMMA2", False, True, True),
    "gemma3_text": GGUFSpec("gemma3", "GEMMA3", False, True, True),
}
MODEL_TYPES = tuple(SPECS)

#: ``quant`` argument -> (storage type of 2-D tensors, ``general.file_type``)
_QUANTS = {
    None: ("F32", "ALL_F32"),
    "F32": ("F32", "ALL_F32"),
    "F16": ("F16", "MOSTLY_F16"),
    "BF16": ("BF16", "MOSTLY_BF16"),
    "F64": ("F64", "ALL_F32"),  # llama.cpp has no F64 file type; the tensors carry their own
    "Q8_0": ("Q8_0", "MOSTLY_Q8_0"),
    "Q4_0": ("Q4_0", "MOSTLY_Q4_0"),
    "Q4_1": ("Q4_1", "MOSTLY_Q4_1"),
}
QUANTS = tuple(q for q in _QUANTS if q is not None)


def permute_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's RoPE row permutation of a q or k weight (``LlamaModel.permute``).

    Parameters
    ----------
    w : (n_head * head_dim, n_in) array
        The HF weight.
    n_head : int
        ``num_attention_heads`` for q, ``num_key_value_heads`` for k.

    Returns
    -------
    array of the same shape, rows in llama.cpp order: within each head the
    two rotary halves are interleaved.
    """
    out = w.shape[0]
    return w.reshape(n_head, 2, out // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_name(name_map, hf_name: str) -> str:
    """The GGUF name of an HF tensor name rooted at ``model.``."""
    name = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
    if name is None:
        raise KeyError(f"gguf's tensor-name map has no entry for {hf_name}")
    return name


def hf_state(model) -> dict[str, np.ndarray]:
    """The model's parameters as float32 arrays under ``model.``-rooted HF names.

    ``tiny_model`` builds base models (``LlamaModel``) whose parameter names
    lack the ``model.`` root a ``*ForCausalLM`` checkpoint has; gguf's name
    map only knows the rooted names.
    """
    out = {}
    for name, p in model.state_dict().items():
        rooted = name if name.startswith("model.") else "model." + name
        out[rooted] = p.detach().to("cpu").float().numpy()
    return out


def stored_qtype(shape: tuple[int, ...], quant: str | None) -> str:
    """The storage type llama.cpp's converter gives a tensor of ``shape``.

    1-D tensors stay F32; 2-D tensors get ``quant`` unless their rows do not
    split into whole blocks, in which case the converter falls back to F16.
    """
    import gguf

    target = _QUANTS[quant][0]
    if len(shape) < 2:
        return "F32"
    block, _ = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[target]]
    return target if shape[-1] % block == 0 else "F16"


def encode(w: np.ndarray, qtype: str) -> np.ndarray:
    """``w`` as gguf stores it in ``qtype`` (float arrays for F64/F32/F16, bytes otherwise)."""
    import gguf

    if qtype == "F64":
        return np.ascontiguousarray(w, dtype=np.float64)
    return gguf.quants.quantize(np.ascontiguousarray(w, dtype=np.float32), gguf.GGMLQuantizationType[qtype])


def roundtrip(w: np.ndarray, qtype: str) -> np.ndarray:
    """``dequantize(quantize(w))`` in float32: what a reader of a ``qtype`` tensor gets back."""
    import gguf

    t = gguf.GGMLQuantizationType[qtype]
    return np.asarray(gguf.quants.dequantize(encode(w, qtype), t), dtype=np.float32).reshape(w.shape)


def _rope_theta(cfg) -> float | None:
    theta = getattr(cfg, "rope_theta", None)
    if theta is not None:
        return float(theta)
    params = getattr(cfg, "rope_parameters", None) or {}
    # gemma3 keeps one set per attention type; llama.cpp's rope.freq_base is the global one
    params = params.get("full_attention", params)
    theta = params.get("rope_theta")
    return None if theta is None else float(theta)


def write_gguf(
    path: Path,
    model,
    model_type: str,
    quant: str | None = None,
    *,
    name: str | None = None,
    edit: Callable[[object], None] | None = None,
) -> Path:
    """Write ``model`` as a GGUF file the way ``convert_hf_to_gguf.py`` would.

    Parameters
    ----------
    path : Path
        The ``.gguf`` file to write (parents are created).
    model : transformers.PreTrainedModel
        A model from :func:`tests.factories.hf.tiny_model` (base or causal LM).
    model_type : str
        One of :data:`MODEL_TYPES`.
    quant : {None, "F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1"}
        Storage type of 2-D tensors; None writes F32 everywhere.
    name : str, optional
        ``general.name``.
    edit : callable, optional
        Called with the ``GGUFWriter`` after the standard metadata is added,
        to damage or drop keys (``w.add_head_count(0)``,
        ``w.kv_data[0].pop("llama.block_count")``).

    Returns
    -------
    Path
        ``path``.
    """
    import gguf

    spec = SPECS[model_type]
    cfg = model.config
    qtype, ftype = _QUANTS[quant]
    n_layers = cfg.num_hidden_layers
    heads = cfg.num_attention_heads
    kv = getattr(cfg, "num_key_value_heads", None) or heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    w = gguf.GGUFWriter(path, spec.arch)
    w.add_name(name or f"tiny-{model_type}")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(n_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(heads)
    w.add_head_count_kv(kv)
    w.add_layer_norm_rms_eps(float(cfg.rms_norm_eps))
    theta = _rope_theta(cfg)
    if theta is not None:
        w.add_rope_freq_base(theta)
    w.add_vocab_size(cfg.vocab_size)
    if spec.arch == "llama":
        # transformers reads llama's head_dim from here, not from key_length
        w.add_rope_dimension_count(head_dim)
    if spec.always_head_dim or head_dim * heads != cfg.hidden_size:
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
    w.add_file_type(int(getattr(gguf.LlamaFileType, ftype)))
    if qtype not in ("F64", "F32", "F16", "BF16"):
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    if edit is not None:
        edit(w)

    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH[spec.arch_enum], n_layers)
    for hf_name, data in hf_state(model).items():
        if hf_name == "model.lm_head.weight" or hf_name.startswith("lm_head."):
            continue  # tied to token_embd in these tiny models
        if spec.permute_qk and hf_name.endswith(("q_proj.weight", "k_proj.weight")):
            data = permute_rows(data, heads if "q_proj" in hf_name else kv)
        if spec.norm_plus_one and hf_name.endswith("norm.weight"):
            # in float32, as the converter does on a float32 checkpoint: this rounds w to the ulp of w + 1
            data = (data + np.float32(1.0)).astype(np.float32)
        t = stored_qtype(data.shape, quant)
        w.add_tensor(gguf_name(name_map, hf_name), encode(data, t), raw_dtype=gguf.GGMLQuantizationType[t])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def write_unsupported_gguf(path: Path, arch: str = "mamba", n_layers: int = 2, hidden: int = 32) -> Path:
    """A well-formed GGUF of an architecture geomlib does not read.

    It carries the metadata and a few tensors a real conversion of ``arch``
    would, so only the architecture can be the reason it is refused.
    """
    import gguf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    w = gguf.GGUFWriter(path, arch)
    w.add_name(f"tiny-{arch}")
    w.add_block_count(n_layers)
    w.add_embedding_length(hidden)
    w.add_context_length(64)
    w.add_feed_forward_length(0 if arch == "mamba" else 4 * hidden)
    w.add_head_count(0 if arch == "mamba" else 4)
    w.add_file_type(int(gguf.LlamaFileType.ALL_F32))
    rng = np.random.default_rng(0)
    w.add_tensor("token_embd.weight", rng.standard_normal((64, hidden), dtype=np.float32))
    for L in range(n_layers):
        w.add_tensor(f"blk.{L}.attn_norm.weight", rng.standard_normal(hidden, dtype=np.float32))
    w.add_tensor("output_norm.weight", rng.standard_normal(hidden, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def truncate(path: Path, keep: int | float) -> Path:
    """Cut ``path`` after ``keep`` bytes (an int) or that fraction of its size (a float), in place."""
    path = Path(path)
    size = path.stat().st_size
    n = int(size * keep) if isinstance(keep, float) else int(keep)
    assert 0 <= n < size, f"keep={keep} does not shorten a {size}-byte file"
    with path.open("r+b") as f:
        f.truncate(n)
    return path


def write_truncated_gguf(path: Path, model, model_type: str = "llama", keep: int | float = 0.5) -> Path:
    """A GGUF of ``model`` cut short, like an interrupted download.

    ``keep`` as a fraction lands in the tensor data of the tiny models (their
    metadata is a few kB); as a small int it lands inside the header.
    """
    return truncate(write_gguf(path, model, model_type), keep)


def data_start(path: Path) -> int:
    """Offset of the first tensor byte (where metadata and tensor infos end)."""
    import gguf

    return int(gguf.GGUFReader(path, "r").data_offset)
