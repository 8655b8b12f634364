"""BERT GGUF reading: a tiny BERT written the way llama.cpp's converter writes it must come back as HF parameters.

The file is written here with ``gguf.GGUFWriter`` and gguf's own tensor-name
map for ``MODEL_ARCH.BERT`` (``blk.N.attn_q.weight``, ``attn_output_norm``,
``layer_output_norm``, biases beside the weights, ``bert.*`` metadata), never
through geomlib, and what geomlib reads is compared with the HF modules.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import geomlib
from geomlib.errors import CorruptCheckpointError
from tests.factories.gguf import roundtrip, stored_qtype
from tests.factories.hf import tiny_model

N_LAYERS = 3
#: family -> module path inside an HF BertLayer
MODULES = {
    "q_proj": "attention.self.query",
    "k_proj": "attention.self.key",
    "v_proj": "attention.self.value",
    "o_proj": "attention.output.dense",
    "up_proj": "intermediate.dense",
    "down_proj": "output.dense",
    "post_attn_ln": "attention.output.LayerNorm",
    "post_ffn_ln": "output.LayerNorm",
}


def module(model, L: int, path: str):
    m = model.encoder.layer[L]
    for part in path.split("."):
        m = getattr(m, part)
    return m


def write_bert_gguf(path, model, quant: str | None = None, drop: str | None = None):
    """``model`` (a BertModel) as llama.cpp's ``BertModel`` conversion writes it; ``drop`` omits a metadata key."""
    import gguf

    cfg = model.config
    w = gguf.GGUFWriter(path, "bert")
    w.add_name("tiny-bert")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_layer_norm_eps(cfg.layer_norm_eps)
    w.add_causal_attention(False)
    w.add_file_type(int(gguf.LlamaFileType.MOSTLY_Q8_0 if quant == "Q8_0" else gguf.LlamaFileType.ALL_F32))
    if drop:
        w.kv_data[0].pop(drop)
    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.BERT, cfg.num_hidden_layers)
    for hf_name, p in model.state_dict().items():
        if hf_name.startswith("pooler.") or hf_name.endswith("position_ids"):
            continue  # llama.cpp skips the pooler
        name = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        assert name is not None, hf_name
        data = p.detach().float().numpy()
        force_f32 = name.startswith(("position_embd", "token_types"))
        t = "F32" if force_f32 else stored_qtype(data.shape, quant)
        enc = gguf.quants.quantize(data, gguf.GGMLQuantizationType[t])
        w.add_tensor(name, enc, raw_dtype=gguf.GGMLQuantizationType[t])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture(scope="module")
def bert():
    return tiny_model("bert", N_LAYERS)


@pytest.mark.parametrize("quant", [None, "Q8_0"])
def test_bert_layers_and_biases_equal_hf_parameters(tmp_path, bert, quant):
    ckpt = geomlib.open_model(write_bert_gguf(tmp_path / "bert.gguf", bert, quant))
    assert ckpt.arch == "bert" and ckpt.format == "gguf"
    assert ckpt.families == tuple(MODULES)
    for L in range(N_LAYERS):
        got, got_b = ckpt.layer(L), ckpt.biases(L)
        assert set(got) == set(MODULES) and set(got_b) == set(MODULES)
        for fam, path in MODULES.items():
            m = module(bert, L, path)
            w = m.weight.detach().float().numpy()
            want = roundtrip(w, stored_qtype(w.shape, quant)) if quant else w
            assert torch.equal(got[fam], torch.from_numpy(want).double()), (L, fam)
            assert torch.equal(got_b[fam], m.bias.detach().double()), (L, fam)  # biases stay F32
    assert ckpt.quantization == quant


def test_bert_facts_match_config(tmp_path, bert):
    ckpt = geomlib.open_model(write_bert_gguf(tmp_path / "bert.gguf", bert))
    cfg = bert.config
    assert (ckpt.n_layers, ckpt.n_heads, ckpt.n_kv_heads, ckpt.hidden, ckpt.intermediate, ckpt.head_dim) == (
        N_LAYERS, cfg.num_attention_heads, cfg.num_attention_heads, cfg.hidden_size, cfg.intermediate_size,
        cfg.hidden_size // cfg.num_attention_heads,
    )
    assert ckpt.config["layer_norm_eps"] == pytest.approx(cfg.layer_norm_eps, rel=1e-6)  # stored as float32
    assert ckpt.config["max_position_embeddings"] == cfg.max_position_embeddings


def test_bert_reads_only_the_requested_layer(tmp_path, bert):
    ckpt = geomlib.open_model(write_bert_gguf(tmp_path / "bert.gguf", bert))
    ckpt.layer(1, ["q_proj", "post_ffn_ln"])
    assert sorted(ckpt._store.tensors_read) == ["blk.1.attn_q.weight", "blk.1.layer_output_norm.weight"]


def test_bert_without_block_count_is_corrupt(tmp_path, bert):
    path = write_bert_gguf(tmp_path / "bert.gguf", bert, drop="bert.block_count")
    with pytest.raises(CorruptCheckpointError, match="bert.block_count"):
        geomlib.open_model(path)


def test_bert_stored_rows_are_hf_rows(tmp_path, bert):
    """No permutation for BERT: the file's q rows are HF's rows (read with gguf alone)."""
    import gguf

    path = write_bert_gguf(tmp_path / "bert.gguf", bert)
    t = next(t for t in gguf.GGUFReader(path).tensors if t.name == "blk.2.attn_q.weight")
    raw = np.array(t.data).reshape(tuple(reversed(t.shape.tolist())))
    assert np.array_equal(raw, module(bert, 2, "attention.self.query").weight.detach().numpy())
    assert np.array_equal(geomlib.open_model(path).layer(2, "q_proj")["q_proj"].float().numpy(), raw)
