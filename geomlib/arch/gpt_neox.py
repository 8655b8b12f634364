"""GPT-NeoX (Pythia): q/k/v fused in ``query_key_value``, interleaved per head.

The fused weight is ``[n_heads * 3 * head_dim, hidden]`` laid out as
``[q_0; k_0; v_0; q_1; k_1; v_1; ...]`` (HF views it as
``(n_heads, 3 * head_dim)`` then chunks the last axis in three).
"""

import torch

from .base import Adapter, ArchFacts, Src


def _interleaved(part: int):
    def rows(f: ArchFacts) -> torch.Tensor:
        d = f.head_dim
        start = torch.arange(f.n_heads) * 3 * d + part * d
        return (start[:, None] + torch.arange(d)[None, :]).reshape(-1)

    return rows


ADAPTER = Adapter(
    name="gpt_neox",
    model_types=("gpt_neox",),
    layer_root="layers.{L}",
    plan={
        "q_proj": Src("attention.query_key_value", rows=_interleaved(0)),
        "k_proj": Src("attention.query_key_value", rows=_interleaved(1)),
        "v_proj": Src("attention.query_key_value", rows=_interleaved(2)),
        "o_proj": Src("attention.dense"),
        "up_proj": Src("mlp.dense_h_to_4h"),
        "down_proj": Src("mlp.dense_4h_to_h"),
        "input_ln": Src("input_layernorm"),
        "post_attn_ln": Src("post_attention_layernorm"),
    },
    # NeoX has no key/value head count: every head has its own k and v
    keys={"n_kv_heads": "num_attention_heads"},
    norm_kind="layer",
)
