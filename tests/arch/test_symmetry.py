"""The symmetry table: coverage of the registry, config overrides, and each claim checked on a real HF forward pass.

The functional tests build a one-layer float64 Hugging Face model with random
weights, apply a transformation to its weights through the adapter's plan and
compare the final hidden states: a claimed symmetry must leave them unchanged
(to rounding), a transformation outside the group must change them.
"""

from __future__ import annotations

import pytest
import torch

from geomlib.arch.base import ArchFacts
from geomlib.arch.registry import REGISTRY, get_adapter
from geomlib.arch.symmetry import SymmetryGroup, symmetry_group, symmetry_table_markdown
from geomlib.errors import UnsupportedArchitectureError
from geomlib.metrics.matching import fold_norms

D = torch.float64
LABELS = {
    "mlp_neuron_scale": {"signed", "positive", "none"},
    "head_perm": {"free", "gqa-groups"},
    "qk_group": {"GL(d)", "rope-scaled-rotations", "partial-rope", "rope+qknorm"},
    "ov_group": {"GL(d)"},
}


# ------------------------------------------------------------------------------------------ the table
@pytest.mark.parametrize("model_type", sorted(REGISTRY))
def test_every_registered_architecture_has_a_valid_entry(model_type):
    g = symmetry_group(model_type)
    assert isinstance(g, SymmetryGroup) and g.model_type == model_type
    for field, allowed in LABELS.items():
        assert getattr(g, field) in allowed, (field, getattr(g, field))
    assert g.norm_fold == bool(g.norm_folds)
    assert g.norm_offset == get_adapter(model_type).norm_offset
    assert g.mlp_gated == ("gate_proj" in get_adapter(model_type).family_plan(ArchFacts(1, 4, 2, 4, 16, 8)))
    plan = get_adapter(model_type).family_plan(ArchFacts(1, 4, 2, 4, 16, 8))
    for norm, fams in g.norm_folds:  # only families the adapter really has
        assert norm in plan and set(fams) <= set(plan), (norm, fams)
    assert (g.rotary_fraction is None) == (g.qk_group == "GL(d)")
    if g.mlp_gated:
        assert g.mlp_neuron_scale == "signed"  # the up factor is linear whatever the gate is


def test_markdown_table_has_one_row_per_model_type():
    md = symmetry_table_markdown()
    lines = md.strip().splitlines()
    assert len(lines) == 2 + len(REGISTRY)
    assert all(line.count("|") == 9 for line in lines)
    for mt in REGISTRY:
        assert any(line.startswith(f"| {mt} |") for line in lines)
    assert symmetry_table_markdown(["llama"]).count("\n") == 3


def test_facts_and_config_bits_refine_the_defaults():
    assert symmetry_group("llama", ArchFacts(2, 8, 8, 4, 32, 64)).head_perm == "free"
    assert symmetry_group("llama", ArchFacts(2, 8, 2, 4, 32, 64)).head_perm == "gqa-groups"
    assert symmetry_group("gpt2").head_perm == "free"
    cfg = {"model_type": "gpt2", "n_layer": 1, "n_head": 2, "n_embd": 8, "activation_function": "relu"}
    assert symmetry_group("gpt2", cfg).mlp_neuron_scale == "positive"
    neox = {"num_hidden_layers": 1, "num_attention_heads": 2, "hidden_size": 8, "intermediate_size": 16}
    assert symmetry_group("gpt_neox", neox).rotary_fraction == 0.25
    assert symmetry_group("gpt_neox", dict(neox, rotary_pct=1.0)).qk_group == "rope-scaled-rotations"
    half = dict(neox, rope_parameters={"partial_rotary_factor": 0.5})
    assert symmetry_group("gpt_neox", half).rotary_fraction == 0.5
    phi = dict(neox, num_key_value_heads=1, partial_rotary_factor=0.75)
    g = symmetry_group("phi3", phi)
    assert g.qk_group == "partial-rope" and g.head_perm == "gqa-groups"
    relu_gate = symmetry_group("llama", dict(neox, hidden_act="relu"))
    assert relu_gate.mlp_neuron_scale == "signed" and "positive scale" in relu_gate.notes
    text = {"model_type": "gemma3", "text_config": dict(neox, num_key_value_heads=2, head_dim=4)}
    assert symmetry_group("gemma3", text).qk_group == "rope+qknorm"
    with pytest.raises(UnsupportedArchitectureError):
        symmetry_group("mamba")


# ------------------------------------------------------------------------------- functional checks
_GQA = {"hidden_size": 16, "intermediate_size": 12, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 4}
_MQA = {"hidden_size": 16, "intermediate_size": 12, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 4}
CONFIGS = {
    "llama": _GQA,
    "qwen3": _GQA,
    "gemma": _MQA,
    "gemma2": _MQA,
    "gpt2": {"n_embd": 16, "n_head": 2, "n_inner": 12},
    "gpt_neox": {"hidden_size": 16, "intermediate_size": 12, "num_attention_heads": 2, "rotary_pct": 0.5},
}


class Layer:
    """A one-layer HF model with random weights, read and written by family through the adapter's plan."""

    def __init__(self, model_type: str, seed: int = 0, **extra):
        transformers = pytest.importorskip("transformers")
        cfg = transformers.AutoConfig.for_model(model_type, vocab_size=23, num_hidden_layers=1, n_layer=1,
                                                rms_norm_eps=1e-12, layer_norm_eps=1e-12,
                                                attn_implementation="eager", **CONFIGS[model_type], **extra)
        self.model = transformers.AutoModel.from_config(cfg).to(D).eval()
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, p in self.model.named_parameters():
                if name.endswith("bias"):
                    p.zero_()  # the groups act on biases too; zero keeps the transformations weight-only
                elif p.ndim == 1:
                    p.copy_(1 + 0.5 * torch.randn(p.shape, generator=g, dtype=D))  # generic gains
                else:
                    p.copy_(torch.randn(p.shape, generator=g, dtype=D) / p.shape[-1] ** 0.5)
        self.adapter = get_adapter(model_type)
        self.facts = self.adapter.facts(cfg.to_dict())
        self.layer = self.model.get_submodule(self.adapter.layer_root.format(L=0))
        self.plan = self.adapter.family_plan(self.facts)
        self.ids = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6, 5, 3]])

    def _param(self, fam):
        src = self.plan[fam]
        w = self.layer.get_submodule(src.module).weight.data
        return src, (w.T if src.transpose else w)

    def get(self, fam):
        src, w = self._param(fam)
        return (w[src.rows(self.facts)] if src.rows else w).clone()

    def set(self, fam, new):
        src, w = self._param(fam)
        if src.rows:
            w[src.rows(self.facts)] = new
        else:
            w.copy_(new)

    def out(self):
        with torch.no_grad():
            return self.model(self.ids).last_hidden_state.clone()


def is_symmetry(layer: Layer, transform, tol: float = 1e-10) -> bool:
    """Apply ``transform(layer)``; True if the output is unchanged (to ``tol``), else it must move by > 1e-4."""
    before = layer.out()
    transform(layer)
    diff = float((layer.out() - before).abs().max())
    assert diff < tol or diff > 1e-4, diff  # no borderline cases: the test would be meaningless
    return diff < tol


def scale_neurons(layer, c, fams=("up_proj",), perm=None):
    I = layer.facts.intermediate
    perm = torch.arange(I) if perm is None else perm
    for f in ("gate_proj", "up_proj"):
        if f in layer.plan:
            layer.set(f, layer.get(f)[perm] * (c[:, None] if f in fams else 1))
    layer.set("down_proj", layer.get("down_proj")[:, perm] / (c[None, :] if "up_proj" in fams else 1))


def qk_gauge(layer, A):
    """W_Q → A W_Q per query head, W_K → A⁻ᵀ W_K per kv head (the same A for every head)."""
    f, d = layer.facts, layer.facts.head_dim
    q = layer.get("q_proj").reshape(f.n_heads, d, -1)
    k = layer.get("k_proj").reshape(f.n_kv_heads, d, -1)
    layer.set("q_proj", (A @ q).reshape(f.n_heads * d, -1))
    layer.set("k_proj", (torch.linalg.inv(A).T @ k).reshape(f.n_kv_heads * d, -1))


def ov_gauge(layer, B):
    f, d = layer.facts, layer.facts.head_dim
    v = layer.get("v_proj").reshape(f.n_kv_heads, d, -1)
    o = layer.get("o_proj").reshape(-1, f.n_heads, d)
    layer.set("v_proj", (B @ v).reshape(f.n_kv_heads * d, -1))
    layer.set("o_proj", (o @ torch.linalg.inv(B)).reshape(-1, f.n_heads * d))


def pair_rotation(d, r, pair, scale, angle):
    """A scaled rotation on rotary pair ``(pair, pair + r/2)`` (HF rotate_half layout), identity elsewhere."""
    A = torch.eye(d, dtype=D)
    i, j = pair, pair + r // 2
    c, s = torch.cos(torch.tensor(angle, dtype=D)), torch.sin(torch.tensor(angle, dtype=D))
    A[i, i], A[i, j], A[j, i], A[j, j] = scale * c, -scale * s, scale * s, scale * c
    return A


def generic(d, seed, block=None):
    A = torch.eye(d, dtype=D)
    lo, hi = block or (0, d)
    A[lo:hi, lo:hi] += 0.7 * torch.randn(hi - lo, hi - lo, generator=torch.Generator().manual_seed(seed), dtype=D)
    return A


@pytest.mark.parametrize("model_type", ["llama", "gemma", "qwen3"])
def test_gated_mlp_has_a_signed_scale_on_up_down_and_none_on_the_gate(model_type):
    assert symmetry_group(model_type).mlp_neuron_scale == "signed"
    I = CONFIGS[model_type]["intermediate_size"]
    g = torch.Generator().manual_seed(1)
    c = (torch.rand(I, generator=g, dtype=D) + 0.3) * (torch.randint(0, 2, (I,), generator=g) * 2 - 1)
    perm = torch.randperm(I, generator=g)
    assert is_symmetry(Layer(model_type), lambda m: scale_neurons(m, c, ("up_proj",), perm))
    assert not is_symmetry(Layer(model_type), lambda m: scale_neurons(m, c.abs(), ("gate_proj",)))


@pytest.mark.parametrize("act, scale", [("gelu_new", "none"), ("relu", "positive")])
def test_ungated_mlp_scale_follows_the_activation(act, scale):
    g = symmetry_group("gpt2", {"n_layer": 1, "n_head": 2, "n_embd": 16, "activation_function": act})
    assert g.mlp_neuron_scale == scale
    c = torch.linspace(0.5, 2.0, 12, dtype=D)
    assert is_symmetry(Layer("gpt2", activation_function=act), lambda m: scale_neurons(m, c)) == (scale != "none")
    assert not is_symmetry(Layer("gpt2", activation_function=act), lambda m: scale_neurons(m, -c))


def test_gqa_head_permutation_must_move_whole_groups():
    assert symmetry_group("llama", Layer("llama").facts).head_perm == "gqa-groups"

    def permute(order):
        def t(m):
            f, d = m.facts, m.facts.head_dim
            q, o = m.get("q_proj").reshape(f.n_heads, d, -1), m.get("o_proj").reshape(-1, f.n_heads, d)
            m.set("q_proj", q[order].reshape(f.n_heads * d, -1))
            m.set("o_proj", o[:, order].reshape(-1, f.n_heads * d))
            kv = [order[i * f.group] // f.group for i in range(f.n_kv_heads)]
            for fam in ("k_proj", "v_proj"):
                m.set(fam, m.get(fam).reshape(f.n_kv_heads, d, -1)[kv].reshape(f.n_kv_heads * d, -1))
        return t

    assert is_symmetry(Layer("llama"), permute([3, 2, 1, 0]))  # swap the two groups and heads inside each
    assert not is_symmetry(Layer("llama"), permute([0, 2, 1, 3]))  # heads 1 and 2 change kv group


@pytest.mark.parametrize("model_type", ["llama", "gpt2", "gemma"])
def test_ov_pair_has_the_full_gl_d(model_type):
    layer = Layer(model_type)
    assert symmetry_group(model_type).ov_group == "GL(d)"
    assert is_symmetry(layer, lambda m: ov_gauge(m, generic(m.facts.head_dim, 3)))


def test_qk_group_without_rotary_is_gl_d():
    assert symmetry_group("gpt2").qk_group == "GL(d)"
    assert is_symmetry(Layer("gpt2"), lambda m: qk_gauge(m, generic(m.facts.head_dim, 4)))


def test_rope_restricts_qk_to_scaled_rotations_per_frequency_pair():
    d = CONFIGS["llama"]["head_dim"]
    assert symmetry_group("llama").qk_group == "rope-scaled-rotations"
    assert is_symmetry(Layer("llama"), lambda m: qk_gauge(m, pair_rotation(d, d, 1, 2.5, 0.7)))
    assert not is_symmetry(Layer("llama"), lambda m: qk_gauge(m, generic(d, 5)))
    # a rotation that mixes coordinates of two different pairs is not allowed
    A = torch.eye(d, dtype=D)
    A[[0, 1]] = A[[1, 0]]
    assert not is_symmetry(Layer("llama"), lambda m: qk_gauge(m, A))


def test_partial_rope_leaves_gl_on_the_pass_through_dims():
    g = symmetry_group("gpt_neox", Layer("gpt_neox").model.config.to_dict())
    assert g.qk_group == "partial-rope" and g.rotary_fraction == 0.5
    d = 16 // 2
    r = g.rotary_dim(d)
    assert getattr(Layer("gpt_neox").model.layers[0].attention, "rotary_ndims", r) == r == 4  # HF's own count
    assert symmetry_group("gpt2").rotary_dim(d) is None
    allowed = pair_rotation(d, r, 0, 0.4, 2.0) @ generic(d, 6, (r, d))
    assert is_symmetry(Layer("gpt_neox"), lambda m: qk_gauge(m, allowed))
    assert not is_symmetry(Layer("gpt_neox"), lambda m: qk_gauge(m, generic(d, 7, (r - 1, d))))


def test_qk_norm_leaves_only_pair_signs_and_separate_positive_scales():
    d = CONFIGS["qwen3"]["head_dim"]
    assert symmetry_group("qwen3").qk_group == "rope+qknorm"
    signs = torch.eye(d, dtype=D)
    signs[0, 0] = signs[d // 2, d // 2] = -1  # both coordinates of rotary pair 0
    assert is_symmetry(Layer("qwen3"), lambda m: qk_gauge(m, signs))
    # the q norm removes the scale (HF's RMSNorm computes in float32, so the match is to ~1e-7, not 1e-15)
    assert is_symmetry(Layer("qwen3"), lambda m: m.set("q_proj", 3.0 * m.get("q_proj")), tol=1e-5)
    assert not is_symmetry(Layer("llama"), lambda m: m.set("q_proj", 3.0 * m.get("q_proj")))
    assert not is_symmetry(Layer("qwen3"), lambda m: qk_gauge(m, pair_rotation(d, d, 0, 1.0, 0.7)))


@pytest.mark.parametrize("model_type", ["llama", "gemma", "gemma2", "gpt2"])
def test_norm_folds_are_exact(model_type):
    g = symmetry_group(model_type)
    layer = Layer(model_type)
    norms = {n: layer.layer.get_submodule(layer.plan[n].module).weight for n, _ in g.norm_folds}

    def fold(m):
        fams = {f for _, fs in g.norm_folds for f in fs}
        w = {f: m.get(f) for f in fams} | {n: p.data.clone() for n, p in norms.items()}
        for f, new in fold_norms(w, g.norm_folds, g.norm_offset).items():
            m.set(f, new)
        for p in norms.values():
            p.data.fill_(1.0 - g.norm_offset)  # the identity gain

    # Gemma's RMSNorm applies its gain in float32: the folded model agrees to float32 rounding only
    assert is_symmetry(layer, fold, tol=1e-5 if model_type.startswith("gemma") else 1e-10)
    if model_type == "gemma2":  # the sandwich post-norm is not foldable into o_proj
        layer = Layer(model_type)
        post = layer.layer.get_submodule(layer.plan["post_attn_ln"].module).weight

        def wrong(m):
            m.set("o_proj", (1 + post.data)[:, None] * m.get("o_proj"))
            post.data.zero_()

        assert not is_symmetry(layer, wrong)
