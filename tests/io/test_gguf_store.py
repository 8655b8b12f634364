"""GGUF reading: tiny models written the way llama.cpp writes them must come back as HF parameters.

The expected values are taken from the original model's modules (or from
``transformers`` loading the same file), never through geomlib, so a wrong
name mapping, a missing or wrong un-permutation, or a forgotten ``- 1`` on
Gemma norms fails here.
"""

from __future__ import annotations

import operator
import os

import numpy as np
import pytest
import torch

import geomlib
from geomlib.errors import CorruptCheckpointError, GeomlibError, UnsupportedArchitectureError
from geomlib.io.gguf_store import GGUF_ARCHS, unpermute_rows
from tests.factories.gguf import (
    MODEL_TYPES,
    data_start,
    permute_rows,
    roundtrip,
    stored_qtype,
    write_gguf,
    write_truncated_gguf,
    write_unsupported_gguf,
)
from tests.factories.hf import tiny_model

N_LAYERS = 3
GEMMA = ("gemma", "gemma2", "gemma3_text")

#: family -> module path inside an HF decoder layer (absent modules: family absent)
MODULES = {
    "q_proj": "self_attn.q_proj",
    "k_proj": "self_attn.k_proj",
    "v_proj": "self_attn.v_proj",
    "o_proj": "self_attn.o_proj",
    "gate_proj": "mlp.gate_proj",
    "up_proj": "mlp.up_proj",
    "down_proj": "mlp.down_proj",
    "input_ln": "input_layernorm",
    "post_attn_ln": "post_attention_layernorm",
    "pre_ffn_ln": "pre_feedforward_layernorm",
    "post_ffn_ln": "post_feedforward_layernorm",
    "q_norm": "self_attn.q_norm",
    "k_norm": "self_attn.k_norm",
}
NORMS = {"input_ln", "post_attn_ln", "pre_ffn_ln", "post_ffn_ln", "q_norm", "k_norm"}


def hf_modules(base, L: int) -> dict:
    """Family -> module of layer ``L`` of an HF base model (``model.model`` of a causal LM)."""
    out = {}
    for fam, path in MODULES.items():
        try:
            out[fam] = operator.attrgetter(path)(base.layers[L])
        except AttributeError:
            continue
    return out


def hf_weights(base, L: int) -> dict[str, torch.Tensor]:
    return {fam: m.weight.detach().float() for fam, m in hf_modules(base, L).items()}


def hf_biases(base, L: int) -> dict[str, torch.Tensor]:
    mods = hf_modules(base, L).items()
    return {fam: m.bias.detach().float() for fam, m in mods if getattr(m, "bias", None) is not None}


def assert_gemma_norm(got: torch.Tensor, want: torch.Tensor) -> None:
    """``got`` is ``want`` up to the float32 rounding of llama.cpp's stored ``want + 1``.

    llama.cpp writes Gemma gains as float32(w + 1).  Near 1 a float32 has a
    spacing of 2**-23, far coarser than that of a small w, so the addition
    rounds away w's low bits; the exact ``- 1`` geomlib applies (in float64)
    cannot bring them back.  The error is at most half the float32 spacing
    at |w + 1|, and nothing more is allowed.
    """
    w = want.numpy().astype(np.float32)
    tol = np.spacing(np.abs(w + np.float32(1))).astype(np.float64) / 2
    err = np.abs(got.numpy().astype(np.float64) - w.astype(np.float64))
    assert (err <= tol).all(), f"max error {err.max()} exceeds the float32 rounding of w + 1 ({tol.max()})"


def assert_layer_equals(ckpt, base, L: int, model_type: str, expected=lambda fam, w: w) -> None:
    """Every family of geomlib's layer ``L`` equals ``expected(fam, hf_weight)``; the family sets agree."""
    want = hf_weights(base, L)
    got = ckpt.layer(L)
    assert set(got) == set(want), f"layer {L}: families {sorted(got)} != HF modules {sorted(want)}"
    for fam, w in want.items():
        g = got[fam]
        assert g.dtype == torch.float64 and g.shape == w.shape, (L, fam, g.dtype, g.shape, w.shape)
        if model_type in GEMMA and fam in NORMS:
            assert_gemma_norm(g, w)
        else:
            e = torch.as_tensor(expected(fam, w.numpy())).double()
            assert torch.equal(g, e), f"layer {L} {fam}: max |diff| {(g - e).abs().max().item()}"


@pytest.fixture(params=MODEL_TYPES)
def model_type(request):
    return request.param


# -- float32 files: exact round trip -------------------------------------------------------------


def test_f32_layers_equal_hf_parameters(tmp_path, model_type):
    model = tiny_model(model_type, N_LAYERS)
    ckpt = geomlib.open_model(write_gguf(tmp_path / "m.gguf", model, model_type))
    for L in range(N_LAYERS):
        assert_layer_equals(ckpt, model, L, model_type)
        want_b = hf_biases(model, L)
        got_b = ckpt.biases(L)
        assert set(got_b) == set(want_b)
        for fam, b in want_b.items():
            assert torch.equal(got_b[fam], b.double()), (L, fam)


def test_qwen2_biases_are_read(tmp_path):
    # guards the bias comparison above against passing vacuously: qwen2 has q/k/v biases
    model = tiny_model("qwen2", N_LAYERS)
    ckpt = geomlib.open_model(write_gguf(tmp_path / "m.gguf", model, "qwen2"))
    assert set(ckpt.biases(1)) == {"q_proj", "k_proj", "v_proj"}
    assert torch.equal(ckpt.biases(1)["k_proj"], model.layers[1].self_attn.k_proj.bias.detach().double())


def test_facts_match_config(tmp_path, model_type):
    model = tiny_model(model_type, N_LAYERS)
    cfg = model.config
    ckpt = geomlib.open_model(write_gguf(tmp_path / "m.gguf", model, model_type))
    heads = cfg.num_attention_heads
    assert ckpt.arch == cfg.model_type
    assert ckpt.format == "gguf"
    assert ckpt.n_layers == cfg.num_hidden_layers == N_LAYERS
    assert ckpt.n_heads == heads
    assert ckpt.n_kv_heads == cfg.num_key_value_heads
    assert ckpt.head_dim == (getattr(cfg, "head_dim", None) or cfg.hidden_size // heads)
    assert ckpt.hidden == cfg.hidden_size
    assert ckpt.intermediate == cfg.intermediate_size
    assert ckpt.norm_offset == (1.0 if model_type in GEMMA else 0.0)
    assert ckpt.quantization is None and ckpt.dtype == "F32"
    assert set(ckpt.families) == set(hf_weights(model, 0))


def test_head_dim_decoupled_from_hidden_is_read_from_key_length(tmp_path):
    # qwen3 and gemma2 here have heads * head_dim != hidden: only attention.key_length can say so
    for mt in ("qwen3", "gemma2"):
        model = tiny_model(mt, N_LAYERS)
        assert model.config.head_dim * model.config.num_attention_heads != model.config.hidden_size
        ckpt = geomlib.open_model(write_gguf(tmp_path / f"{mt}.gguf", model, mt))
        assert ckpt.head_dim == model.config.head_dim
        assert ckpt.layer(0, "q_proj")["q_proj"].shape == model.layers[0].self_attn.q_proj.weight.shape


# -- the llama q/k permutation -----------------------------------------------------------------------


def raw_gguf(path, name: str) -> np.ndarray:
    """A tensor exactly as stored (F32 files), read with gguf alone."""
    import gguf

    t = next(t for t in gguf.GGUFReader(path).tensors if t.name == name)
    return np.array(t.data).reshape(tuple(reversed(t.shape.tolist())))


def test_llama_q_k_are_stored_permuted_and_read_unpermuted(tmp_path):
    model = tiny_model("llama", N_LAYERS)
    path = write_gguf(tmp_path / "m.gguf", model, "llama")
    ckpt = geomlib.open_model(path)
    attn = model.layers[1].self_attn
    for fam, n in (("q_proj", ckpt.n_heads), ("k_proj", ckpt.n_kv_heads)):
        hf = getattr(attn, fam).weight.detach().numpy()
        raw = raw_gguf(path, f"blk.1.attn_{fam[0]}.weight")
        # the file really holds other row order: a reader that skipped un-permuting would fail
        assert not np.array_equal(raw, hf)
        # ...of the same rows (a permutation, not corruption)
        assert np.array_equal(np.sort(raw, axis=0), np.sort(hf, axis=0))
        assert np.array_equal(raw, permute_rows(hf, n))
        assert np.array_equal(ckpt.layer(1, fam)[fam].numpy(), hf)
    # k is permuted per kv head (2 here), not per query head (4): the wrong count gives the wrong rows
    raw_k = raw_gguf(path, "blk.1.attn_k.weight")
    assert ckpt.n_kv_heads != ckpt.n_heads
    assert not np.array_equal(unpermute_rows(raw_k, ckpt.n_heads), attn.k_proj.weight.detach().numpy())
    # v is not permuted
    assert np.array_equal(raw_gguf(path, "blk.1.attn_v.weight"), attn.v_proj.weight.detach().numpy())


@pytest.mark.parametrize("model_type", ["qwen2", "qwen3", "gemma2"])
def test_non_llama_q_k_are_stored_as_in_hf(tmp_path, model_type):
    model = tiny_model(model_type, N_LAYERS)
    path = write_gguf(tmp_path / "m.gguf", model, model_type)
    attn = model.layers[1].self_attn
    for fam in ("q_proj", "k_proj"):
        assert np.array_equal(raw_gguf(path, f"blk.1.attn_{fam[0]}.weight"), getattr(attn, fam).weight.detach().numpy())


@pytest.mark.parametrize("n_head,head_dim,n_in", [(4, 8, 32), (2, 16, 8), (9, 64, 3), (1, 2, 5)])
def test_unpermute_rows_inverts_llama_cpp_permutation(n_head, head_dim, n_in):
    w = np.random.default_rng(n_head).standard_normal((n_head * head_dim, n_in))
    p = permute_rows(w, n_head)
    assert head_dim == 2 or not np.array_equal(p, w)
    assert np.array_equal(unpermute_rows(p, n_head), w)


def test_gemma_norms_are_stored_plus_one(tmp_path):
    model = tiny_model("gemma2", N_LAYERS)
    path = write_gguf(tmp_path / "m.gguf", model, "gemma2")
    w = model.layers[0].input_layernorm.weight.detach().numpy()
    raw = raw_gguf(path, "blk.0.attn_norm.weight")
    assert np.abs(raw - (w + 1)).max() < 1e-6  # the file holds w + 1: geomlib must subtract it
    got = geomlib.open_model(path).layer(0, "input_ln")["input_ln"]
    assert_gemma_norm(got, torch.from_numpy(w))


# -- quantized files -------------------------------------------------------------------------------------


@pytest.mark.parametrize("quant,dtype,quantization", [
    ("Q8_0", "F16,F32,Q8_0", "Q8_0"),
    ("Q4_1", "F16,F32,Q4_1", "Q4_1"),  # the demo's type
    ("F16", "F16,F32", None),
    ("BF16", "BF16,F32", None),
])
def test_quantized_layers_equal_dequantized_original(tmp_path, model_type, quant, dtype, quantization):
    model = tiny_model(model_type, N_LAYERS)
    ckpt = geomlib.open_model(write_gguf(tmp_path / "m.gguf", model, model_type, quant))
    # Q8_0/Q4_1 blocks run along a row, so llama's row permutation commutes with quantization: the
    # un-permuted read of quantize(permute(w)) is exactly dequantize(quantize(w)).
    for L in range(N_LAYERS):
        assert_layer_equals(ckpt, model, L, model_type, lambda fam, w: roundtrip(w, stored_qtype(w.shape, quant)))
    names = ckpt.tensor_names(0)
    for fam, w in hf_weights(model, 0).items():
        assert ckpt._store.info(names[fam]).dtype == stored_qtype(tuple(w.shape), quant), fam
    assert ckpt.dtype == dtype
    assert ckpt.quantization == quantization
    # the storage really lost precision (otherwise the comparison above proves nothing)
    q = ckpt.layer(0, "q_proj")["q_proj"]
    assert not torch.equal(q, model.layers[0].self_attn.q_proj.weight.detach().double())


def test_q8_0_rows_that_do_not_fill_blocks_fall_back_to_f16(tmp_path):
    # down_proj's rows have 48 = 1.5 blocks of 32: llama.cpp stores such tensors as F16
    model = tiny_model("llama", N_LAYERS)
    ckpt = geomlib.open_model(write_gguf(tmp_path / "m.gguf", model, "llama", "Q8_0"))
    names = ckpt.tensor_names(0)
    assert ckpt._store.info(names["down_proj"]).dtype == "F16"
    assert ckpt._store.info(names["q_proj"]).dtype == "Q8_0"
    assert ckpt._store.info(names["input_ln"]).dtype == "F32"


# -- agreement with transformers' own GGUF loader ----------------------------------------------------


@pytest.mark.parametrize("model_type,quant", [
    ("llama", None),
    ("llama", "Q8_0"),
    ("qwen2", None),
    ("gemma2", None),
    ("gemma3_text", "Q8_0"),
])
def test_matches_transformers_gguf_loader(tmp_path, model_type, quant):
    from transformers import AutoModelForCausalLM

    model = tiny_model(model_type, N_LAYERS)
    path = write_gguf(tmp_path / "m.gguf", model, model_type, quant)
    hf = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=path.name, dtype=torch.float32)
    ckpt = geomlib.open_model(path)
    for L in range(N_LAYERS):
        want = hf_weights(hf.model, L)
        got = ckpt.layer(L, dtype=torch.float32)
        assert set(got) == set(want)
        for fam, w in want.items():
            # both dequantize with gguf in float32; transformers' float32 (w + 1) - 1 and geomlib's exact
            # float64 subtraction rounded to float32 give the same float, so equality is exact
            assert torch.equal(got[fam], w), f"layer {L} {fam}: max |diff| {(got[fam] - w).abs().max().item()}"


# -- lazy reading ----------------------------------------------------------------------------------------


def test_only_the_requested_layer_is_read(tmp_path):
    model = tiny_model("llama", N_LAYERS)
    ckpt = geomlib.open_model(write_gguf(tmp_path / "m.gguf", model, "llama"))
    assert ckpt._store.tensors_read == [] and ckpt.bytes_read == 0
    ckpt.layer(2)
    read = ckpt._store.tensors_read
    assert read and all(n.startswith("blk.2.") for n in read), read
    assert sorted(read) == sorted(set(ckpt.tensor_names(2).values()))
    assert ckpt.bytes_read == ckpt.layer_nbytes(2)


def test_family_subset_reads_only_those_tensors(tmp_path):
    model = tiny_model("llama", N_LAYERS)
    ckpt = geomlib.open_model(write_gguf(tmp_path / "m.gguf", model, "llama"))
    ckpt.layer(1, ["k_proj", "input_ln"])
    assert sorted(ckpt._store.tensors_read) == ["blk.1.attn_k.weight", "blk.1.attn_norm.weight"]


# -- errors ------------------------------------------------------------------------------------------------


def assert_one_sentence(exc: BaseException) -> str:
    msg = str(exc)
    assert isinstance(exc, GeomlibError)
    assert "\n" not in msg and "Traceback" not in msg, msg
    # raised "from None": no chained gguf/numpy traceback is printed under it
    assert exc.__cause__ is None and (exc.__context__ is None or exc.__suppress_context__), repr(exc.__context__)
    return msg


@pytest.mark.parametrize("arch", ["mamba", "bloom"])
def test_unsupported_architecture_lists_supported_ones(tmp_path, arch):
    path = write_unsupported_gguf(tmp_path / f"{arch}.gguf", arch)
    with pytest.raises(UnsupportedArchitectureError) as info:
        geomlib.open_model(path)
    msg = assert_one_sentence(info.value)
    assert repr(arch) in msg and path.name in msg
    for supported in GGUF_ARCHS:
        assert supported in msg


def test_missing_architecture_is_refused(tmp_path):
    model = tiny_model("llama", N_LAYERS)
    path = write_gguf(tmp_path / "m.gguf", model, "llama", edit=lambda w: w.kv_data[0].pop("general.architecture"))
    with pytest.raises(UnsupportedArchitectureError) as info:
        geomlib.open_model(path)
    msg = assert_one_sentence(info.value)
    assert "general.architecture" in msg and "llama" in msg


@pytest.fixture(scope="module")
def llama_model():
    return tiny_model("llama", N_LAYERS)


@pytest.mark.parametrize("where", ["empty", "in_magic", "in_metadata", "at_data_start", "mid_data", "last_byte"])
def test_truncated_gguf_is_corrupt(tmp_path, llama_model, where):
    full = write_gguf(tmp_path / "full.gguf", llama_model, "llama")
    size, start = full.stat().st_size, data_start(full)
    keep = {"empty": 0, "in_magic": 3, "in_metadata": start // 2, "at_data_start": start,
            "mid_data": (start + size) // 2, "last_byte": size - 1}[where]
    path = write_truncated_gguf(tmp_path / "cut.gguf", llama_model, "llama", keep)
    assert path.stat().st_size == keep
    with pytest.raises(CorruptCheckpointError) as info:
        geomlib.open_model(path)
    msg = assert_one_sentence(info.value)
    assert str(path) in msg
    assert ("empty" if where == "empty" else "truncated") in msg
    assert "re-download" in msg or "redo" in msg


@pytest.mark.parametrize("head", [b"", b"GGUF"])
def test_garbage_gguf_is_corrupt(tmp_path, head):
    path = tmp_path / "junk.gguf"
    path.write_bytes(head + np.random.default_rng(0).bytes(4096))
    with pytest.raises(CorruptCheckpointError) as info:
        geomlib.open_model(path)
    msg = assert_one_sentence(info.value)
    assert str(path) in msg
    assert ("corrupt" if head else "not a GGUF file") in msg


def test_safetensors_renamed_gguf_is_corrupt(tmp_path, llama_model):
    from tests.factories.hf import save_model

    d = save_model(llama_model, tmp_path / "st")
    path = tmp_path / "model.gguf"
    os.replace(d / "model.safetensors", path)
    with pytest.raises(CorruptCheckpointError) as info:
        geomlib.open_model(path)
    assert "not a GGUF file" in assert_one_sentence(info.value)


@pytest.mark.parametrize("key,edit", [
    ("llama.attention.head_count", lambda w: w.add_head_count(0)),
    ("llama.attention.head_count_kv", lambda w: w.add_head_count_kv(0)),
    ("llama.block_count", lambda w: w.kv_data[0].pop("llama.block_count")),
    ("llama.embedding_length", lambda w: w.kv_data[0].pop("llama.embedding_length")),
])
def test_bad_metadata_is_corrupt_and_names_the_key(tmp_path, llama_model, key, edit):
    path = write_gguf(tmp_path / "m.gguf", llama_model, "llama", edit=edit)
    with pytest.raises(CorruptCheckpointError) as info:
        geomlib.open_model(path)
    msg = assert_one_sentence(info.value)
    assert key in msg and path.name in msg and "config.json" not in msg


def test_metadata_contradicting_tensors_is_corrupt(tmp_path, llama_model):
    # well-formed metadata that does not describe the tensors (hidden 64, matrices 32 wide) must not be
    # trusted: the shapes are checked against it when the file is opened
    path = write_gguf(tmp_path / "m.gguf", llama_model, "llama", edit=lambda w: w.add_embedding_length(64))
    with pytest.raises(CorruptCheckpointError) as info:
        geomlib.open_model(path)
    assert "shape" in assert_one_sentence(info.value)


# -- the real demo ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_demo_smollm2_matches_transformers():
    from transformers import AutoModelForCausalLM

    from geomlib.io.demo import demo_path

    path = demo_path("demo:smollm2-135m")
    ckpt = geomlib.open_model("demo:smollm2-135m")
    assert (ckpt.arch, ckpt.n_layers, ckpt.n_heads, ckpt.n_kv_heads) == ("llama", 30, 9, 3)
    assert (ckpt.head_dim, ckpt.hidden, ckpt.intermediate) == (64, 576, 1536)
    assert ckpt.quantization == "Q4_1"
    assert ckpt.format == "gguf"
    hf = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    for L in (0, 1, 15, 28, 29):
        want = hf_weights(hf.model, L)
        got = ckpt.layer(L, dtype=torch.float32)
        assert set(got) == set(want) == set(MODULES) - {"pre_ffn_ln", "post_ffn_ln", "q_norm", "k_norm"}
        for fam, w in want.items():
            # both sides dequantize Q4_1 with gguf in float32 and un-permute q/k the same way
            assert torch.equal(got[fam], w), f"layer {L} {fam}: max |diff| {(got[fam] - w).abs().max().item()}"


def test_f64_tensors_are_read_exactly(tmp_path):
    """gguf's dequantizer has no F64; the store reads F64 data as it is."""
    model = tiny_model("llama", N_LAYERS)
    ckpt = geomlib.open_model(write_gguf(tmp_path / "m.gguf", model, "llama", "F64"))
    assert "F64" in ckpt.dtype.split(",")
    for L in range(N_LAYERS):
        assert_layer_equals(ckpt, model, L, "llama")
    names = ckpt.tensor_names(0)
    assert ckpt._store.info(names["q_proj"]).dtype == "F64"
    torch.testing.assert_close(ckpt.read_block(0, "q_proj", 3, 5), ckpt.layer(0, "q_proj")["q_proj"][3:5],
                               rtol=0, atol=0)  # a row range of permuted llama q rows, through the same decoder


def test_the_fast_reader_parses_what_gguf_parses():
    """The plain-view reader (3x faster on a tokenizer's metadata) gives gguf's fields and tensors, read-only."""
    import gguf
    import numpy as np

    from geomlib.io.demo import demo_path
    from geomlib.io.gguf_store import _reader_class

    path = demo_path("demo:smollm2-135m")
    fast, ref = _reader_class(gguf)(path, "r"), gguf.GGUFReader(path, "r")
    assert type(fast.data) is np.ndarray and not fast.data.flags.writeable
    assert fast.fields.keys() == ref.fields.keys()
    for k, f in ref.fields.items():
        g = fast.fields[k]
        assert (g.types, g.data, len(g.parts)) == (f.types, f.data, len(f.parts)), k
        assert all(np.array_equal(a, b) for a, b in zip(g.parts, f.parts)), k
    for a, b in zip(fast.tensors, ref.tensors):
        assert (a.name, a.tensor_type, list(a.shape)) == (b.name, b.tensor_type, list(b.shape))
        assert np.array_equal(a.data, b.data) and not a.data.flags.writeable
