"""Gemma, Gemma2 and Gemma3.

All three store RMS-norm gains as ``w`` and apply ``1 + w`` (``norm_offset=1``).
Gemma2/3 wrap both sub-blocks in norms: ``post_attention_layernorm`` follows
attention, ``pre_feedforward_layernorm`` / ``post_feedforward_layernorm``
surround the MLP.  Gemma3 adds q/k norms; its multimodal checkpoints nest the
language model's config under ``text_config``.
"""

from .base import Adapter, Src, llama_plan

_SANDWICH = {
    "pre_ffn_ln": Src("pre_feedforward_layernorm"),
    "post_ffn_ln": Src("post_feedforward_layernorm"),
}

GEMMA = Adapter(
    name="gemma", model_types=("gemma",), layer_root="layers.{L}", plan=llama_plan(), norm_offset=1.0
)

GEMMA2 = Adapter(
    name="gemma2", model_types=("gemma2",), layer_root="layers.{L}", plan=llama_plan(_SANDWICH), norm_offset=1.0
)

GEMMA3 = Adapter(
    name="gemma3",
    model_types=("gemma3", "gemma3_text"),
    layer_root="layers.{L}",
    plan=llama_plan({**_SANDWICH, "q_norm": Src("self_attn.q_norm"), "k_norm": Src("self_attn.k_norm")}),
    norm_offset=1.0,
    text_config="text_config",
)

ADAPTERS = (GEMMA, GEMMA2, GEMMA3)
