"""Tiny random Hugging Face models, saved as real safetensors checkpoints.

Every parameter (norm gains and biases included) is overwritten with distinct
seeded Gaussian values, so a test that maps the wrong tensor to a family, or
the wrong layer, cannot pass by accident (default inits make all norms 1).
"""

from __future__ import annotations

from pathlib import Path

import torch

# hidden 32, 4 heads, head_dim 8 unless the architecture decouples them;
# GQA (2 kv heads) wherever the architecture supports it.
_COMMON = dict(hidden_size=32, num_attention_heads=4, intermediate_size=48, vocab_size=64)
TINY: dict[str, dict] = {
    "llama": dict(_COMMON, num_key_value_heads=2),
    "mistral": dict(_COMMON, num_key_value_heads=2),
    "qwen2": dict(_COMMON, num_key_value_heads=2),
    # heads * head_dim != hidden, as in Qwen3-4B
    "qwen3": dict(_COMMON, num_key_value_heads=2, head_dim=16),
    "gemma": dict(_COMMON, num_key_value_heads=2, head_dim=8),
    "gemma2": dict(_COMMON, num_key_value_heads=2, head_dim=12),
    "gemma3_text": dict(_COMMON, num_key_value_heads=1, head_dim=8),
    "gpt2": dict(n_embd=32, n_head=4, vocab_size=64, n_positions=64, bos_token_id=0, eos_token_id=0),
    "gpt_neox": dict(_COMMON, eos_token_id=0, bos_token_id=0),
    "phi3": dict(_COMMON, num_key_value_heads=2, pad_token_id=0, bos_token_id=0, eos_token_id=0),
    "bert": dict(_COMMON),
    "mpnet": dict(_COMMON),
}
MODEL_TYPES = tuple(TINY)
_LAYER_KEY = {"gpt2": "n_layer"}


def tiny_config(model_type: str, n_layers: int = 3, **overrides):
    """A transformers config of ``model_type`` with tiny shapes."""
    from transformers import AutoConfig

    kw = dict(TINY[model_type])
    kw[_LAYER_KEY.get(model_type, "num_hidden_layers")] = n_layers
    kw.update(overrides)
    return AutoConfig.for_model(model_type, **kw)


def tiny_model(model_type: str, n_layers: int = 3, seed: int = 0, **overrides):
    """A randomly initialised base model (``AutoModel``), every parameter distinct."""
    from transformers import AutoModel

    torch.manual_seed(seed)
    model = AutoModel.from_config(tiny_config(model_type, n_layers, **overrides), attn_implementation="eager")
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float32) * 0.5)
    return model.eval()


def save_model(model, path: Path, dtype: torch.dtype = torch.float32, max_shard_size: str | int | None = None) -> Path:
    """``save_pretrained`` as safetensors in ``dtype``; sharded when ``max_shard_size`` is given."""
    model = model.to(dtype)
    kw = {} if max_shard_size is None else {"max_shard_size": max_shard_size}
    model.save_pretrained(path, **kw)
    return Path(path)


def make_checkpoint(
    tmp_path: Path,
    model_type: str = "llama",
    dtype: torch.dtype = torch.float32,
    n_layers: int = 3,
    seed: int = 0,
    max_shard_size: str | int | None = None,
    name: str | None = None,
    **overrides,
):
    """Build, save and return ``(directory, model)``; the model holds the saved values."""
    model = tiny_model(model_type, n_layers, seed, **overrides)
    path = save_model(model, Path(tmp_path) / (name or f"{model_type}-{str(dtype).split('.')[-1]}"), dtype, max_shard_size)
    return path, model
