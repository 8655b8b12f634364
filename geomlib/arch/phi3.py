"""Phi-3: fused ``qkv_proj`` (``[q; k; v]`` by blocks) and ``gate_up_proj`` (``[gate; up]``)."""

from .base import Adapter, ArchFacts, Src


def _q(f: ArchFacts) -> slice:
    return slice(0, f.n_heads * f.head_dim)


def _k(f: ArchFacts) -> slice:
    q = f.n_heads * f.head_dim
    return slice(q, q + f.n_kv_heads * f.head_dim)


def _v(f: ArchFacts) -> slice:
    q, kv = f.n_heads * f.head_dim, f.n_kv_heads * f.head_dim
    return slice(q + kv, q + 2 * kv)


ADAPTER = Adapter(
    name="phi3",
    model_types=("phi3",),
    layer_root="layers.{L}",
    plan={
        "q_proj": Src("self_attn.qkv_proj", rows=_q),
        "k_proj": Src("self_attn.qkv_proj", rows=_k),
        "v_proj": Src("self_attn.qkv_proj", rows=_v),
        "o_proj": Src("self_attn.o_proj"),
        "gate_proj": Src("mlp.gate_up_proj", rows=lambda f: slice(0, f.intermediate)),
        "up_proj": Src("mlp.gate_up_proj", rows=lambda f: slice(f.intermediate, 2 * f.intermediate)),
        "down_proj": Src("mlp.down_proj"),
        "input_ln": Src("input_layernorm"),
        "post_attn_ln": Src("post_attention_layernorm"),
    },
)
