"""Every architecture: ``Checkpoint.layer(L)`` equals the transformers module's parameters.

The expected tensors are taken from the instantiated ``transformers`` modules
(the layout each modeling file uses in its forward pass), never through
geomlib, for every family and layer, in bf16 and fp32, single-file and sharded.
"""

from __future__ import annotations

import pytest
import torch

import geomlib
from geomlib.arch import FAMILIES, supported_model_types
from tests.factories.hf import MODEL_TYPES, make_checkpoint


def _split_rows(w: torch.Tensor, sizes: list[int]) -> list[torch.Tensor]:
    return list(torch.split(w, sizes, dim=0))


def expected_layer(model, model_type: str, L: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(weights, biases) of layer ``L`` read off the transformers modules."""
    cfg = model.config
    W: dict[str, torch.Tensor] = {}
    B: dict[str, torch.Tensor] = {}

    def put(fam, module):
        W[fam] = module.weight.detach()
        if getattr(module, "bias", None) is not None:
            B[fam] = module.bias.detach()

    if model_type == "gpt2":
        blk = model.h[L]
        hidden = cfg.n_embd
        # Conv1D computes x @ W + b with W : (in, out); c_attn's output splits as [q | k | v]
        qkv_w = blk.attn.c_attn.weight.detach().T
        qkv_b = blk.attn.c_attn.bias.detach()
        for fam, w, b in zip(("q_proj", "k_proj", "v_proj"), _split_rows(qkv_w, [hidden] * 3), qkv_b.split(hidden)):
            W[fam], B[fam] = w, b
        W["o_proj"], B["o_proj"] = blk.attn.c_proj.weight.detach().T, blk.attn.c_proj.bias.detach()
        W["up_proj"], B["up_proj"] = blk.mlp.c_fc.weight.detach().T, blk.mlp.c_fc.bias.detach()
        W["down_proj"], B["down_proj"] = blk.mlp.c_proj.weight.detach().T, blk.mlp.c_proj.bias.detach()
        put("input_ln", blk.ln_1)
        put("post_attn_ln", blk.ln_2)
        return W, B
    if model_type == "gpt_neox":
        blk = model.layers[L]
        H, d = cfg.num_attention_heads, cfg.hidden_size // cfg.num_attention_heads
        # forward: qkv(x).view(..., H, 3*d).chunk(3, dim=-1)
        w = blk.attention.query_key_value.weight.detach().view(H, 3 * d, -1)
        b = blk.attention.query_key_value.bias.detach().view(H, 3 * d)
        for i, fam in enumerate(("q_proj", "k_proj", "v_proj")):
            W[fam] = w[:, i * d : (i + 1) * d].reshape(H * d, -1)
            B[fam] = b[:, i * d : (i + 1) * d].reshape(H * d)
        put("o_proj", blk.attention.dense)
        put("up_proj", blk.mlp.dense_h_to_4h)
        put("down_proj", blk.mlp.dense_4h_to_h)
        put("input_ln", blk.input_layernorm)
        put("post_attn_ln", blk.post_attention_layernorm)
        return W, B
    if model_type in ("bert", "mpnet"):
        blk = model.encoder.layer[L]
        if model_type == "bert":
            att = blk.attention.self
            put("q_proj", att.query), put("k_proj", att.key), put("v_proj", att.value)
            put("o_proj", blk.attention.output.dense)
            put("post_attn_ln", blk.attention.output.LayerNorm)
        else:
            att = blk.attention.attn
            put("q_proj", att.q), put("k_proj", att.k), put("v_proj", att.v), put("o_proj", att.o)
            put("post_attn_ln", blk.attention.LayerNorm)
        put("up_proj", blk.intermediate.dense)
        put("down_proj", blk.output.dense)
        put("post_ffn_ln", blk.output.LayerNorm)
        return W, B
    blk = model.layers[L]
    att, mlp = blk.self_attn, blk.mlp
    if model_type == "phi3":
        H, KV, d = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.hidden_size // cfg.num_attention_heads
        q, k, v = _split_rows(att.qkv_proj.weight.detach(), [H * d, KV * d, KV * d])
        W.update(q_proj=q, k_proj=k, v_proj=v)
        gate, up = mlp.gate_up_proj.weight.detach().chunk(2, dim=0)  # forward: up_states.chunk(2, dim=-1)
        W.update(gate_proj=gate, up_proj=up)
        put("o_proj", att.o_proj)
        put("down_proj", mlp.down_proj)
    else:
        for fam in ("q_proj", "k_proj", "v_proj", "o_proj"):
            put(fam, getattr(att, fam))
        for fam in ("gate_proj", "up_proj", "down_proj"):
            put(fam, getattr(mlp, fam))
    put("input_ln", blk.input_layernorm)
    put("post_attn_ln", blk.post_attention_layernorm)
    if hasattr(blk, "pre_feedforward_layernorm"):
        put("pre_ffn_ln", blk.pre_feedforward_layernorm)
        put("post_ffn_ln", blk.post_feedforward_layernorm)
    if hasattr(att, "q_norm"):
        put("q_norm", att.q_norm)
        put("k_norm", att.k_norm)
    return W, B


def test_every_supported_model_type_has_a_test_model():
    assert set(MODEL_TYPES) <= set(supported_model_types())
    # the multimodal gemma3 wrapper shares the gemma3_text adapter
    assert set(supported_model_types()) - set(MODEL_TYPES) == {"gemma3"}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_layer_equals_transformers_parameters(tmp_path, model_type, dtype):
    path, model = make_checkpoint(tmp_path, model_type, dtype=dtype, n_layers=3)
    model = model.to(dtype)
    with geomlib.open_model(path) as ckpt:
        assert ckpt.arch == model_type
        for L in range(3):
            want_w, want_b = expected_layer(model, model_type, L)
            got_w, got_b = ckpt.layer(L), ckpt.biases(L)
            assert set(got_w) == set(want_w)
            assert set(got_b) == set(want_b)
            for fam, want in want_w.items():
                assert got_w[fam].dtype == torch.float64
                # bf16 and fp32 widen to float64 exactly: equality, not closeness
                torch.testing.assert_close(got_w[fam], want.double(), rtol=0, atol=0, msg=f"L{L} {fam}")
            for fam, want in want_b.items():
                torch.testing.assert_close(got_b[fam], want.double(), rtol=0, atol=0, msg=f"L{L} {fam} bias")
        assert ckpt.dtype == {torch.float32: "F32", torch.bfloat16: "BF16"}[dtype]
        assert ckpt.quantization is None


@pytest.mark.parametrize("model_type", ["llama", "gpt2", "gpt_neox", "phi3", "qwen3"])
def test_sharded_checkpoint_reads_identically(tmp_path, model_type):
    single, _ = make_checkpoint(tmp_path, model_type, n_layers=4, name="single")
    sharded, _ = make_checkpoint(tmp_path, model_type, n_layers=4, name="sharded", max_shard_size="8KB")
    assert (sharded / "model.safetensors.index.json").exists()
    assert len(list(sharded.glob("*.safetensors"))) > 2
    with geomlib.open_model(single) as a, geomlib.open_model(sharded) as b:
        assert a.families == b.families
        for L in range(4):
            la, lb = a.layer(L), b.layer(L)
            for fam in a.families:
                assert torch.equal(la[fam], lb[fam]), (L, fam)


@pytest.mark.parametrize(
    "model_type, facts",
    [
        ("llama", dict(n_heads=4, n_kv_heads=2, head_dim=8, hidden=32, intermediate=48)),
        ("qwen3", dict(n_heads=4, n_kv_heads=2, head_dim=16, hidden=32, intermediate=48)),
        ("gemma3_text", dict(n_heads=4, n_kv_heads=1, head_dim=8, hidden=32, intermediate=48)),
        ("gpt2", dict(n_heads=4, n_kv_heads=4, head_dim=8, hidden=32, intermediate=128)),
        ("bert", dict(n_heads=4, n_kv_heads=4, head_dim=8, hidden=32, intermediate=48)),
    ],
)
def test_architecture_facts(tmp_path, model_type, facts):
    path, _ = make_checkpoint(tmp_path, model_type, n_layers=2)
    with geomlib.open_model(path) as ckpt:
        assert ckpt.n_layers == 2
        for key, value in facts.items():
            assert getattr(ckpt, key) == value, key
        assert set(ckpt.families) <= set(FAMILIES)


@pytest.mark.parametrize("model_type", ["gemma", "gemma2", "gemma3_text"])
def test_gemma_norm_offset_is_one(tmp_path, model_type):
    path, model = make_checkpoint(tmp_path, model_type, n_layers=1)
    with geomlib.open_model(path) as ckpt:
        assert ckpt.norm_offset == 1.0
        # stored value, as transformers holds it; the effective gain is 1 + stored
        assert torch.equal(ckpt.layer(0)["input_ln"], model.layers[0].input_layernorm.weight.detach().double())


def test_non_gemma_norm_offset_is_zero(tmp_path):
    path, _ = make_checkpoint(tmp_path, "llama", n_layers=1)
    assert geomlib.open_model(path).norm_offset == 0.0


def test_kv_head_groups_consecutive_query_heads():
    import torch

    from geomlib.arch.base import kv_head

    assert [kv_head(h, 8, 2) for h in range(8)] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert [kv_head(h, 4, 4) for h in range(4)] == [0, 1, 2, 3]  # no GQA: each head its own
    assert kv_head(torch.arange(6), 6, 3).tolist() == [0, 0, 1, 1, 2, 2]
