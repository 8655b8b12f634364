"""BERT encoders (MiniLM, sentence-transformers): post-norm, no gate, LayerNorm with bias.

``attention.output.LayerNorm`` follows attention (``post_attn_ln``) and
``output.LayerNorm`` follows the MLP (``post_ffn_ln``).
"""

from .base import Adapter, Src

ADAPTER = Adapter(
    name="bert",
    model_types=("bert",),
    layer_root="encoder.layer.{L}",
    plan={
        "q_proj": Src("attention.self.query"),
        "k_proj": Src("attention.self.key"),
        "v_proj": Src("attention.self.value"),
        "o_proj": Src("attention.output.dense"),
        "up_proj": Src("intermediate.dense"),
        "down_proj": Src("output.dense"),
        "post_attn_ln": Src("attention.output.LayerNorm"),
        "post_ffn_ln": Src("output.LayerNorm"),
    },
    keys={"n_kv_heads": "num_attention_heads"},
    norm_kind="layer",
)
