"""Qwen3: Llama's layout plus per-head RMS norms on queries and keys (``q_norm``, ``k_norm``, shape ``(head_dim,)``)."""

from .base import Adapter, Src, llama_plan

ADAPTER = Adapter(
    name="qwen3",
    model_types=("qwen3",),
    layer_root="layers.{L}",
    plan=llama_plan({"q_norm": Src("self_attn.q_norm"), "k_norm": Src("self_attn.k_norm")}),
)
