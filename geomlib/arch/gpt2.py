"""GPT-2: ``Conv1D`` weights stored ``[in, out]``, q/k/v fused in ``c_attn``.

``c_attn`` is ``[hidden, 3*hidden]``; after the transpose its rows are
``[q; k; v]``, each ``hidden`` long.  The MLP has no gate.
"""

from .base import Adapter, Src


def _qkv(i: int):
    return lambda f: slice(i * f.hidden, (i + 1) * f.hidden)


ADAPTER = Adapter(
    name="gpt2",
    model_types=("gpt2",),
    layer_root="h.{L}",
    plan={
        "q_proj": Src("attn.c_attn", transpose=True, rows=_qkv(0)),
        "k_proj": Src("attn.c_attn", transpose=True, rows=_qkv(1)),
        "v_proj": Src("attn.c_attn", transpose=True, rows=_qkv(2)),
        "o_proj": Src("attn.c_proj", transpose=True),
        "up_proj": Src("mlp.c_fc", transpose=True),
        "down_proj": Src("mlp.c_proj", transpose=True),
        "input_ln": Src("ln_1"),
        "post_attn_ln": Src("ln_2"),
    },
    keys={"n_layers": "n_layer", "n_heads": "n_head", "hidden": "n_embd", "intermediate": "n_inner",
          "n_kv_heads": "n_head"},
    defaults={"intermediate": lambda cfg: 4 * cfg["n_embd"] if isinstance(cfg.get("n_embd"), int) else None},
    norm_kind="layer",
)
