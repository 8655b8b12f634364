"""Canonical per-layer weight families and their geometry.

Every architecture adapter maps its own tensor names onto these families, so
all metrics can speak one vocabulary.  Matrices are in Hugging Face Linear
orientation ``[out, in]``; norms are 1-D gains.
"""

from __future__ import annotations

#: weight matrices, [out, in]
MATRIX_FAMILIES: tuple[str, ...] = (
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
)

#: 1-D norm gains.  ``post_attn_ln`` is the module HF calls
#: ``post_attention_layernorm`` (the MLP's input norm in pre-norm models such
#: as Llama; the norm after attention in Gemma2/3 and BERT); Gemma2/3 add
#: ``pre_ffn_ln`` / ``post_ffn_ln`` and BERT-style encoders ``post_ffn_ln``.
NORM_FAMILIES: tuple[str, ...] = (
    "input_ln",
    "post_attn_ln",
    "pre_ffn_ln",
    "post_ffn_ln",
    "q_norm",
    "k_norm",
)

FAMILIES: tuple[str, ...] = MATRIX_FAMILIES + NORM_FAMILIES

#: which axis of each matrix family touches the residual stream:
#: the input side of q, k, v, gate, up and the output side of o, down.
RESIDUAL_AXIS: dict[str, int] = {
    "q_proj": 1,
    "k_proj": 1,
    "v_proj": 1,
    "gate_proj": 1,
    "up_proj": 1,
    "o_proj": 0,
    "down_proj": 0,
}

#: families that split into attention heads along the given axis
HEAD_AXIS: dict[str, int] = {"q_proj": 0, "k_proj": 0, "v_proj": 0, "o_proj": 1}
