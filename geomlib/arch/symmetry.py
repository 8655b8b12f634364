"""The per-layer symmetry group of each architecture: which weight changes leave the function unchanged.

A layer-to-layer comparison means something only if it is invariant under these
transformations (two checkpoints that differ by one compute the same function).
Every entry below follows from the forward pass of the Hugging Face module; the
reasons are stated once here and summarised per architecture in ``notes``.

MLP (``mlp_gated``, ``mlp_neuron_scale``)
    Neuron order is free: one permutation shared by the rows of gate/up and the
    columns of down.  In a gated MLP ``down · (act(gate x) ∘ (up x))`` the output
    is linear in ``up_i``, so ``up_i → c up_i, down_i → down_i / c`` is a symmetry
    for every real ``c ≠ 0`` (``"signed"``) whatever ``act`` is: SwiGLU (silu) and
    GeGLU (gelu-tanh, Gemma) alike.  The gate row has no scale freedom because
    silu and gelu are not homogeneous.  An ungated MLP ``down · act(up x + b)``
    has a positive per-neuron scale exactly when ``act`` is positively homogeneous
    (ReLU: ``"positive"``, acting on ``up_i``, ``b_i`` and ``1/down_i``); GELU
    (GPT-2, NeoX, BERT, MPNet) has none (``"none"``).
Heads (``head_perm``)
    Attention is a sum over heads, so heads can be reordered.  Under grouped-query
    attention the query heads of one group share a key/value head: the legal
    reorderings permute the kv groups and, independently inside each group, its
    query heads (``"gqa-groups"``); with one kv head per query head this is any
    permutation (``"free"``).
QK pair (``qk_group``), per kv group, with ``logit = x_dstᵀ W_Qᵀ R_δ W_K x_src``
    * no rotary embedding (``R_δ = I``): ``W_Q → A W_Q, W_K → A⁻ᵀ W_K`` for any
      ``A ∈ GL(d)`` (``"GL(d)"``; biases follow as ``b_Q → A b_Q``).
    * RoPE: the same change preserves every logit iff ``Aᵀ`` commutes with all
      ``R_δ``, block rotations by distinct frequencies on the pairs
      ``(i, i + r/2)`` (HF ``rotate_half`` layout).  The commutant is one
      complex scalar ``a I + b J`` (a scaled rotation) per pair
      (``"rope-scaled-rotations"``, the group ``(C*)^{d/2}``).
    * partial RoPE on the first ``r = rotary_fraction · d`` dims (GPT-NeoX,
      Phi-4-mini): scaled rotations on the rotary pairs times ``GL(d − r)`` on the
      pass-through dims, no mixing between the two (``"partial-rope"``).
    * q_norm/k_norm (Qwen3, Gemma3): ``q = γ ∘ RMSNorm(W_Q x)`` keeps ``rms(A y)
      ∝ rms(y)`` only for ``A = c·O`` (O orthogonal), and ``diag(γ) O diag(γ)⁻¹``
      must still commute with RoPE: for generic ``γ`` only a sign per rotary pair
      (joint on Q and K) survives, plus a positive scale of ``W_Q`` and of
      ``W_K`` separately that the norm removes (``"rope+qknorm"``).
    Every QK group is a subgroup of GL(d) (up to the positive scales), so the
    operator ``W_Qᵀ W_K`` and its cosines are invariant under all of them; under
    RoPE they are also coarser than the group (two heads equal up to a GL(d) that
    does not commute with RoPE get cosine 1 but differ as functions).
    :func:`geomlib.metrics.head_matching.head_cos` with ``kind="qk_rope"`` resolves
    the rotary pairs and is invariant under exactly the RoPE group.
OV pair (``ov_group``)
    ``W_V → B W_V, W_O → W_O B⁻¹`` with any ``B ∈ GL(d)`` (per kv group; the
    softmax weights do not depend on V), in every architecture: ``"GL(d)"``.
Norms (``norm_fold``, ``norm_folds``)
    A pre-norm gain feeding matrices ``W`` trades with their input columns:
    ``γ → γ ∘ s, W → W diag(1/s)``.  Folding ``W diag(γ)`` picks the invariant
    representative (``γ`` is ``norm_offset + stored``; LayerNorm's ``β`` would
    fold into biases, which geomlib does not compare).  Post-norms (BERT/MPNet,
    and Gemma2/3's ``post_attn_ln``/``post_ffn_ln``) scale the residual stream or
    a normalised sublayer output and fold into no single matrix.
Not a per-layer symmetry
    The residual-stream basis is shared by all layers (a rotation of it must act
    on every layer and on the embeddings at once), so comparisons keep it fixed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .base import ArchFacts
from .registry import REGISTRY, get_adapter

_LLAMA_FOLDS = (("input_ln", ("q_proj", "k_proj", "v_proj")), ("post_attn_ln", ("gate_proj", "up_proj")))
_SANDWICH_FOLDS = (("input_ln", ("q_proj", "k_proj", "v_proj")), ("pre_ffn_ln", ("gate_proj", "up_proj")))
_UNGATED_FOLDS = (("input_ln", ("q_proj", "k_proj", "v_proj")), ("post_attn_ln", ("up_proj",)))

#: activations with ``act(c z) = c act(z)`` for ``c > 0``
_POS_HOMOGENEOUS = ("relu", "leaky_relu")


@dataclass(frozen=True)
class _Defaults:
    gated: bool
    activation: str
    rotary: float | None  # fraction of head_dim under RoPE; None: absolute/relative positions
    qk_norm: bool
    gqa: bool  # the config may set fewer kv heads than query heads
    folds: tuple[tuple[str, tuple[str, ...]], ...]
    why: str


#: model_type -> what its HF module does (activation and rotary fraction are overridden by a config)
_TABLE: dict[str, _Defaults] = {
    "llama": _Defaults(True, "silu", 1.0, False, True, _LLAMA_FOLDS, "SwiGLU, RoPE, pre-RMSNorm"),
    "mistral": _Defaults(True, "silu", 1.0, False, True, _LLAMA_FOLDS, "Llama layout"),
    "qwen2": _Defaults(True, "silu", 1.0, False, True, _LLAMA_FOLDS, "Llama layout; q/k/v biases follow A, B"),
    "qwen3": _Defaults(True, "silu", 1.0, True, True, _LLAMA_FOLDS, "Llama layout plus per-head q/k RMSNorm"),
    "phi3": _Defaults(True, "silu", 1.0, False, True, _LLAMA_FOLDS,
                      "fused qkv and gate_up; partial_rotary_factor < 1 in Phi-4-mini"),
    "gemma": _Defaults(True, "gelu_pytorch_tanh", 1.0, False, True, _LLAMA_FOLDS,
                       "GeGLU: up is linear, so (up, down) keeps the signed scale; gains are 1 + w"),
    "gemma2": _Defaults(True, "gelu_pytorch_tanh", 1.0, False, True, _SANDWICH_FOLDS,
                        "GeGLU; sandwich norms: post_attn_ln/post_ffn_ln normalise sublayer outputs (not foldable)"),
    "gemma3": _Defaults(True, "gelu_pytorch_tanh", 1.0, True, True, _SANDWICH_FOLDS,
                        "Gemma2 layout plus q/k RMSNorm"),
    "gpt2": _Defaults(False, "gelu_new", None, False, False, _UNGATED_FOLDS,
                      "ungated MLP, learned absolute positions, pre-LayerNorm"),
    "gpt_neox": _Defaults(False, "gelu", 0.25, False, False, _UNGATED_FOLDS,
                          "ungated MLP, partial RoPE (rotary_pct, 0.25 in Pythia), parallel residual"),
    "bert": _Defaults(False, "gelu", None, False, False, (),
                      "ungated MLP, absolute positions, post-LayerNorm (gains live in the residual stream)"),
    "mpnet": _Defaults(False, "gelu", None, False, False, (),
                       "ungated MLP, relative position bias (additive, leaves QK free), post-LayerNorm"),
}
_TABLE["gemma3_text"] = _TABLE["gemma3"]


@dataclass(frozen=True)
class SymmetryGroup:
    """The weight transformations of one layer that leave the network's function unchanged.

    Attributes
    ----------
    model_type : str
    activation : str
        The MLP activation (of the gate in a gated MLP).
    mlp_gated : bool
        ``down · (act(gate x) ∘ up x)`` rather than ``down · act(up x)``.
    mlp_neuron_scale : {"signed", "positive", "none"}
        Per-neuron scale on ``(up_i, down_i)`` beyond the neuron permutation.
    head_perm : {"free", "gqa-groups"}
    qk_group : {"GL(d)", "rope-scaled-rotations", "partial-rope", "rope+qknorm"}
        Per-(kv-)head group on ``(W_Q, W_K)``; see the module docstring.
    rotary_fraction : float or None
        Fraction of ``head_dim`` under RoPE; None without rotary embeddings.
    ov_group : {"GL(d)"}
    norm_fold : bool
        Some norm gain folds exactly into the columns of the matrices it feeds.
    norm_folds : tuple of (norm family, tuple of matrix families)
        Which gain folds into which families.
    norm_offset : float
        The effective gain is ``norm_offset + stored`` (1 for Gemma).
    notes : str
    """

    model_type: str
    activation: str
    mlp_gated: bool
    mlp_neuron_scale: str
    head_perm: str
    qk_group: str
    rotary_fraction: float | None
    ov_group: str
    norm_fold: bool
    norm_folds: tuple[tuple[str, tuple[str, ...]], ...]
    norm_offset: float
    notes: str

    def rotary_dim(self, head_dim: int) -> int | None:
        """Dims of each head under RoPE, as HF computes them (``int(head_dim * fraction)``); None without RoPE."""
        return None if self.rotary_fraction is None else int(head_dim * self.rotary_fraction)


def _config_bits(cfg: Mapping) -> tuple[str | None, float | None]:
    """Activation and rotary fraction as a config states them (any HF naming), or None."""
    act = cfg.get("hidden_activation") or cfg.get("hidden_act") or cfg.get("activation_function")
    rope = cfg.get("rope_parameters") if isinstance(cfg.get("rope_parameters"), Mapping) else {}
    frac = cfg.get("rotary_pct", cfg.get("partial_rotary_factor", rope.get("partial_rotary_factor")))
    return (act if isinstance(act, str) else None), (float(frac) if isinstance(frac, (int, float)) else None)


def symmetry_group(model_type: str, facts: ArchFacts | Mapping | None = None) -> SymmetryGroup:
    """The per-layer symmetry group of ``model_type``.

    Parameters
    ----------
    model_type : str
        An HF ``config.model_type`` with an adapter in :mod:`geomlib.arch`.
    facts : ArchFacts, config dict or None
        ``ArchFacts`` decide ``head_perm`` (``"free"`` when ``n_kv_heads ==
        n_heads``); a config dict additionally overrides the activation
        (``hidden_act`` / ``hidden_activation`` / ``activation_function``) and the
        rotary fraction (``rotary_pct`` / ``partial_rotary_factor``).  Without
        either, the architecture's defaults are used and GQA-capable
        architectures report ``"gqa-groups"`` (a superset of the free case's
        constraint, and equal to it for one head per group).

    Raises
    ------
    UnsupportedArchitectureError
        ``model_type`` has no adapter.
    """
    adapter = get_adapter(model_type)
    row = _TABLE[adapter.name if model_type not in _TABLE else model_type]
    act, rotary, gqa = row.activation, row.rotary, row.gqa
    notes = [row.why]
    if isinstance(facts, Mapping):
        cfg_act, cfg_rot = _config_bits(adapter.text_cfg(dict(facts)))
        act = cfg_act or act
        rotary = cfg_rot if (cfg_rot is not None and rotary is not None) else rotary
        facts = adapter.facts(dict(facts))
    if isinstance(facts, ArchFacts):
        gqa = facts.n_kv_heads < facts.n_heads
    if row.gated:
        scale = "signed"  # the up factor is linear whatever the gate is
        if act in _POS_HOMOGENEOUS:
            notes.append("the ReLU gate row also has a positive scale (traded with down), not represented")
    else:
        scale = "positive" if act in _POS_HOMOGENEOUS else "none"
    if rotary is None:
        qk = "GL(d)"
    elif row.qk_norm:
        qk = "rope+qknorm"
    elif rotary < 1.0:
        qk = "partial-rope"
    else:
        qk = "rope-scaled-rotations"
    return SymmetryGroup(
        model_type=model_type, activation=act, mlp_gated=row.gated, mlp_neuron_scale=scale,
        head_perm="gqa-groups" if gqa else "free", qk_group=qk, rotary_fraction=rotary, ov_group="GL(d)",
        norm_fold=bool(row.folds), norm_folds=row.folds, norm_offset=adapter.norm_offset, notes="; ".join(notes),
    )


def symmetry_table_markdown(model_types: list[str] | None = None) -> str:
    """A markdown table of :func:`symmetry_group` (architecture defaults) for the README.

    Parameters
    ----------
    model_types : list of str, optional
        Rows to render; every registered model type by default.
    """
    rows = ["| model_type | MLP | neuron scale | head perm | QK group | OV group | norm fold | notes |",
            "|---|---|---|---|---|---|---|---|"]
    for mt in model_types or sorted(REGISTRY):
        g = symmetry_group(mt)
        mlp = f"gated ({g.activation})" if g.mlp_gated else g.activation
        qk = g.qk_group if g.rotary_fraction in (None, 1.0) else f"{g.qk_group} (r = {g.rotary_fraction:g} d)"
        fold = ", ".join(f"{n}→{'/'.join(f.removesuffix('_proj') for f in fams)}" for n, fams in g.norm_folds)
        rows.append(f"| {mt} | {mlp} | {g.mlp_neuron_scale} | {g.head_perm} | {qk} | {g.ov_group} | "
                    f"{fold or 'none'} | {g.notes} |")
    return "\n".join(rows) + "\n"
