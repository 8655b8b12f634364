"""What an architecture adapter declares, and the facts it derives from a config.

An adapter is data, not loading code: for each canonical family it names the
stored tensor (relative to the layer's module path) and how to cut the family
out of it (transpose a GPT-2 ``Conv1D``, take rows of a fused qkv).  The
generic reader in :mod:`geomlib.model.checkpoint` applies these plans to any
:class:`~geomlib.io.store.TensorStore`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from ..errors import CorruptCheckpointError
from .families import FAMILIES


@dataclass(frozen=True)
class ArchFacts:
    """Shape facts of a transformer, read from its config.

    Attributes
    ----------
    n_layers, n_heads, n_kv_heads, head_dim, hidden, intermediate : int
        ``n_heads * head_dim`` need not equal ``hidden`` (Qwen3, Gemma);
        ``n_kv_heads < n_heads`` is grouped-query attention.
    """

    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    hidden: int
    intermediate: int

    @property
    def group(self) -> int:
        """Query heads sharing one key/value head."""
        return self.n_heads // self.n_kv_heads

    def kv_head(self, h):
        """The key/value head query head ``h`` reads (GQA)."""
        return kv_head(h, self.n_heads, self.n_kv_heads)


def kv_head(h, n_heads: int, n_kv_heads: int):
    """The key/value head of query head ``h`` (an int or an integer tensor): consecutive groups share one."""
    return h // (n_heads // n_kv_heads)


RowSelector = Callable[[ArchFacts], "slice | torch.Tensor"]


@dataclass(frozen=True)
class Src:
    """Where one family lives inside a layer.

    Attributes
    ----------
    module : str
        Module path under the layer root, without ``.weight`` / ``.bias``
        (``"self_attn.q_proj"``).
    transpose : bool
        The stored weight is ``[in, out]`` (GPT-2 ``Conv1D``).
    rows : callable or None
        For fused tensors, a function of the facts returning the output rows
        (a slice or an index tensor) that belong to this family; applied after
        the transpose, and to the bias as well.
    """

    module: str
    transpose: bool = False
    rows: RowSelector | None = None


#: fact -> the config key Llama (and most HF models) store it under
_LLAMA_KEYS = {
    "n_layers": "num_hidden_layers",
    "n_heads": "num_attention_heads",
    "n_kv_heads": "num_key_value_heads",
    "hidden": "hidden_size",
    "intermediate": "intermediate_size",
    "head_dim": "head_dim",
}


@dataclass
class Adapter:
    """Declarative description of one architecture family.

    Subclass-free: each ``geomlib/arch/<name>.py`` builds one instance.

    Attributes
    ----------
    model_types : tuple of str
        HF ``config.model_type`` values this adapter serves.
    layer_root : str
        Module path of layer ``L`` relative to the model root (``"layers.{L}"``).
    plan : dict
        Family -> :class:`Src`, or a function of :class:`ArchFacts` returning it.
    keys : dict
        Config keys for the facts, where they differ from Llama's names.
    defaults : dict
        Fact -> function of the config, used when the config leaves it unset
        (GPT-2's ``n_inner=None`` means ``4 * n_embd``).
    norm_offset : float
        The effective norm gain is ``norm_offset + stored`` (1 for Gemma).
    norm_kind : str
        ``"rms"`` or ``"layer"`` (LayerNorm with bias).
    text_config : str or None
        Key of a nested text config (multimodal wrappers).
    """

    name: str
    model_types: tuple[str, ...]
    layer_root: str
    plan: dict[str, Src] | Callable[[ArchFacts], dict[str, Src]]
    keys: dict[str, str] = field(default_factory=dict)
    defaults: dict[str, Callable[[dict], int | None]] = field(default_factory=dict)
    norm_offset: float = 0.0
    norm_kind: str = "rms"
    text_config: str | None = None

    def __post_init__(self) -> None:
        if not callable(self.plan):
            unknown = set(self.plan) - set(FAMILIES)
            assert not unknown, f"{self.name}: unknown families {unknown}"

    def text_cfg(self, cfg: dict) -> dict:
        """The part of a config that describes the language model."""
        if self.text_config and isinstance(cfg.get(self.text_config), dict):
            return cfg[self.text_config]
        return cfg

    def config_key(self, fact: str) -> str:
        """The config key a fact (``"n_layers"``, ``"hidden"``...) is read from (``"n_layer"`` for GPT-2)."""
        return self.keys.get(fact, _LLAMA_KEYS[fact])

    def facts(self, cfg: dict) -> ArchFacts:
        """Read :class:`ArchFacts` from an HF config dict, validating it."""
        cfg = self.text_cfg(cfg)
        mt = cfg.get("model_type", self.name)
        key = {fact: self.config_key(fact) for fact in _LLAMA_KEYS}

        def value(fact: str, fallback: int | None = None) -> int:
            v = cfg.get(key[fact])
            if v is None and fact in self.defaults:
                v = self.defaults[fact](cfg)
            if v is None:
                v = fallback
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise CorruptCheckpointError(
                    f"the {mt} config has {key[fact]}={v!r}, but a positive integer is required for it; "
                    "fix config.json or use the checkpoint's original config"
                )
            return v

        n_layers, n_heads, hidden = value("n_layers"), value("n_heads"), value("hidden")
        n_kv_heads = value("n_kv_heads", n_heads)
        head_dim = value("head_dim", hidden // n_heads)
        intermediate = value("intermediate")
        if n_heads % n_kv_heads:
            raise CorruptCheckpointError(
                f"the {mt} config has {n_heads} attention heads and {n_kv_heads} key/value heads, "
                "but the first must be a multiple of the second; fix config.json"
            )
        return ArchFacts(n_layers, n_heads, n_kv_heads, head_dim, hidden, intermediate)

    def family_plan(self, facts: ArchFacts) -> dict[str, Src]:
        return self.plan(facts) if callable(self.plan) else self.plan


def llama_plan(extra: dict[str, Src] | None = None) -> dict[str, Src]:
    """The Llama module layout, shared by Llama, Mistral, Qwen2/3 and Gemma."""
    plan = {
        "q_proj": Src("self_attn.q_proj"),
        "k_proj": Src("self_attn.k_proj"),
        "v_proj": Src("self_attn.v_proj"),
        "o_proj": Src("self_attn.o_proj"),
        "gate_proj": Src("mlp.gate_proj"),
        "up_proj": Src("mlp.up_proj"),
        "down_proj": Src("mlp.down_proj"),
        "input_ln": Src("input_layernorm"),
        "post_attn_ln": Src("post_attention_layernorm"),
    }
    plan.update(extra or {})
    return plan
