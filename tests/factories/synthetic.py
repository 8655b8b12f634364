"""Llama-layout checkpoints written directly as config.json + safetensors, with planted structure.

Faster than instantiating transformers models for large or many layers, and
lets a test plant exact relationships between layers (identical, rotated,
rescaled, rank-r updates, zero or NaN matrices).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import save_file

NAMES = {
    "q_proj": "self_attn.q_proj",
    "k_proj": "self_attn.k_proj",
    "v_proj": "self_attn.v_proj",
    "o_proj": "self_attn.o_proj",
    "gate_proj": "mlp.gate_proj",
    "up_proj": "mlp.up_proj",
    "down_proj": "mlp.down_proj",
    "input_ln": "input_layernorm",
    "post_attn_ln": "post_attention_layernorm",
}


def config(n_layers: int, hidden: int = 32, heads: int = 4, kv: int = 2, inter: int = 48, head_dim: int | None = None,
           model_type: str = "llama") -> dict:
    return {
        "model_type": model_type,
        "architectures": ["LlamaForCausalLM"],
        "num_hidden_layers": n_layers,
        "hidden_size": hidden,
        "num_attention_heads": heads,
        "num_key_value_heads": kv,
        "head_dim": head_dim or hidden // heads,
        "intermediate_size": inter,
        "vocab_size": 16,
        "rms_norm_eps": 1e-6,
    }


def shapes(cfg: dict) -> dict[str, tuple[int, ...]]:
    h, i, d = cfg["hidden_size"], cfg["intermediate_size"], cfg["head_dim"]
    q, kv = cfg["num_attention_heads"] * d, cfg["num_key_value_heads"] * d
    return {"q_proj": (q, h), "k_proj": (kv, h), "v_proj": (kv, h), "o_proj": (h, q), "gate_proj": (i, h),
            "up_proj": (i, h), "down_proj": (h, i), "input_ln": (h,), "post_attn_ln": (h,)}


def random_layer(cfg: dict, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Independent Gaussian matrices; norm gains around 1."""
    out = {}
    for fam, shape in shapes(cfg).items():
        t = torch.randn(shape, generator=gen, dtype=torch.float64)
        out[fam] = 1 + 0.1 * t if len(shape) == 1 else t
    return out


def write(path: Path, cfg: dict, layers: list[dict[str, torch.Tensor]], dtype: torch.dtype = torch.float32) -> Path:
    """Save ``layers`` (family -> tensor, families may be omitted) as an HF directory."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {"model.embed_tokens.weight": torch.zeros(cfg["vocab_size"], cfg["hidden_size"], dtype=dtype),
               "model.norm.weight": torch.ones(cfg["hidden_size"], dtype=dtype)}
    for L, layer in enumerate(layers):
        for fam, t in layer.items():
            tensors[f"model.layers.{L}.{NAMES[fam]}.weight"] = t.to(dtype).contiguous()
    (path / "config.json").write_text(json.dumps(cfg))
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
    return path


def build(path: Path, n_layers: int, plant: Callable[[int, dict, list], dict] | None = None, seed: int = 0,
          dtype: torch.dtype = torch.float64, **cfg_kw) -> tuple[Path, list[dict[str, torch.Tensor]]]:
    """Random layers, each optionally replaced by ``plant(L, random_layer, previous_layers)``.

    Returns the directory and the float64 layers that were written (before the dtype cast).
    """
    cfg = config(n_layers, **cfg_kw)
    gen = torch.Generator().manual_seed(seed)
    layers: list[dict[str, torch.Tensor]] = []
    for L in range(n_layers):
        fresh = random_layer(cfg, gen)
        layers.append(plant(L, fresh, layers) if plant else fresh)
    return write(path, cfg, layers, dtype), layers


def orthogonal(n: int, seed: int) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(n, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))
