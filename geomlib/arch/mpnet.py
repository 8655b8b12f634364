"""MPNet encoders (all-mpnet-base-v2): BERT-like, attention under ``attention.attn.{q,k,v,o}``."""

from .base import Adapter, Src

ADAPTER = Adapter(
    name="mpnet",
    model_types=("mpnet",),
    layer_root="encoder.layer.{L}",
    plan={
        "q_proj": Src("attention.attn.q"),
        "k_proj": Src("attention.attn.k"),
        "v_proj": Src("attention.attn.v"),
        "o_proj": Src("attention.attn.o"),
        "up_proj": Src("intermediate.dense"),
        "down_proj": Src("output.dense"),
        "post_attn_ln": Src("attention.LayerNorm"),
        "post_ffn_ln": Src("output.LayerNorm"),
    },
    keys={"n_kv_heads": "num_attention_heads"},
    norm_kind="layer",
)
