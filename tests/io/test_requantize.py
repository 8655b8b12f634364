"""``geomlib.io.requantize``: a re-quantized GGUF must read back as gguf's own ``dequantize(quantize(w))``.

Expected values come from the source's parameters (the HF modules of the tiny
models, or the float32 demo read from its safetensors) and from
``gguf.quants`` directly, never from the file geomlib wrote; the layout is
checked against the test factory that writes llama.cpp's layout and against
transformers' own GGUF loader.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tracemalloc
import warnings

import numpy as np
import pytest
import torch

import geomlib
from geomlib.errors import GeomlibError, GeomlibWarning, InvalidArgumentError, UnsupportedArchitectureError
from geomlib.io import requantize as rq
from geomlib.io.requantize import QTYPES, requantize
from tests.factories.gguf import permute_rows, roundtrip, stored_qtype, write_gguf
from tests.factories.hf import make_checkpoint
from tests.factories.synthetic import NAMES

MINILM = "demo:minilm-l6"
#: per-family bound on ||dq(q(W)) - W||_F / ||W||_F for the minilm demo
BOUNDS = {"Q8_0": 0.01, "Q4_0": 0.15}
#: the HF module of each family (the synthetic factory's names, plus Qwen3's q/k norms)
LLAMA_MODULES = {**NAMES, "q_norm": "self_attn.q_norm", "k_norm": "self_attn.k_norm"}


def gguf_roundtrip(w: np.ndarray, qtype: str) -> np.ndarray:
    """What a reader of ``w`` stored as ``qtype`` gets back, from gguf alone (float32)."""
    import gguf

    t = gguf.GGMLQuantizationType[qtype]
    return np.asarray(gguf.quants.dequantize(gguf.quants.quantize(w.astype(np.float32), t), t)).reshape(w.shape)


def expected_type(shape, qtype: str) -> str:
    """llama.cpp's storage of a tensor: F32 when 1-D, F16 when its rows are not whole ``qtype`` blocks."""
    import gguf

    if len(shape) < 2:
        return "F32"
    block, _ = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[qtype]]
    return qtype if shape[-1] % block == 0 else "F16"


def metadata(path) -> dict:
    import gguf

    return {k: f.contents() for k, f in gguf.GGUFReader(path).fields.items() if not k.startswith("GGUF.")}


def one_sentence(exc: BaseException) -> str:
    msg = str(exc)
    assert isinstance(exc, GeomlibError), repr(exc)
    assert "\n" not in msg and msg.count("; ") >= 1, msg
    return msg


def hf_layer(model, L: int) -> dict[str, torch.Tensor]:
    out = {}
    layer = model.layers[L]
    for fam, path in LLAMA_MODULES.items():
        m = layer
        try:
            for part in path.split("."):
                m = getattr(m, part)
        except AttributeError:
            continue
        out[fam] = m
    return out


# -- the float32 demo: exact, and each quantization gguf's exact answer --------------------------------------


@pytest.fixture(scope="module")
def minilm_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("minilm")
    return {q: requantize(MINILM, d / f"minilm.{q}.gguf", q, progress=False) for q in ("F32", "Q8_0", "Q4_0")}


@pytest.fixture(scope="module")
def minilm():
    with geomlib.open_model(MINILM) as ckpt:
        yield ckpt


def test_minilm_f32_is_the_source_exactly(minilm_files, minilm):
    with geomlib.open_model(minilm_files["F32"]) as got:
        assert got.format == "gguf" and got.arch == "bert"
        for fact in ("n_layers", "n_heads", "n_kv_heads", "head_dim", "hidden", "intermediate", "families",
                     "norm_offset"):
            assert getattr(got, fact) == getattr(minilm, fact), fact
        assert got.quantization is None and got.dtype == "F32"
        assert got.config["layer_norm_eps"] == pytest.approx(minilm.config["layer_norm_eps"], rel=1e-6)
        for L in range(minilm.n_layers):
            a, b = minilm.layer(L), got.layer(L)
            assert set(a) == set(b) == set(minilm.families)
            for fam in a:
                assert torch.equal(a[fam], b[fam]), (L, fam)
            a, b = minilm.biases(L), got.biases(L)
            assert set(a) == set(b) and a
            for fam in a:
                assert torch.equal(a[fam], b[fam]), (L, fam, "bias")


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_0"])
def test_minilm_quantized_is_ggufs_roundtrip(minilm_files, minilm, qtype):
    path = minilm_files[qtype]
    errors: dict[str, list[float]] = {}
    with geomlib.open_model(path) as got:
        assert got.quantization == qtype and got.dtype == f"F32,{qtype}"
        assert (got.n_layers, got.families, got.hidden, got.n_heads) == (
            minilm.n_layers, minilm.families, minilm.hidden, minilm.n_heads)
        for L in range(minilm.n_layers):
            src, out = minilm.layer(L, dtype=torch.float32), got.layer(L)
            for fam, w in src.items():
                w = w.numpy()
                if w.ndim == 1:  # LayerNorm gains stay F32
                    assert torch.equal(out[fam], torch.from_numpy(w).double()), (L, fam)
                    continue
                want = gguf_roundtrip(w, qtype)
                assert torch.equal(out[fam], torch.from_numpy(want).double()), (L, fam)
                errors.setdefault(fam, []).append(float(np.linalg.norm(want - w) / np.linalg.norm(w)))
            for fam, b in minilm.biases(L).items():
                assert torch.equal(got.biases(L)[fam], b), (L, fam, "bias")
    assert set(errors) == {"q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj"}
    for fam, errs in errors.items():
        assert 0 < max(errs) < BOUNDS[qtype], (fam, errs)  # lossy, within the format's bound
    meta = metadata(path)
    assert meta["general.architecture"] == "bert"
    assert meta["geomlib.requantize.qtype"] == qtype
    assert meta["geomlib.requantize.source"] == MINILM
    assert meta["geomlib.requantize.source_identity"] == minilm.identity
    assert "geomlib.requantize.f16_fallback" not in meta  # 384 and 1536 are whole Q blocks


def test_minilm_files_shrink_with_the_type(minilm_files):
    size = {q: p.stat().st_size for q, p in minilm_files.items()}
    assert size["F32"] > 3 * size["Q8_0"] and size["Q8_0"] > 1.7 * size["Q4_0"], size
    # token embeddings are carried along, quantized like the matrices
    import gguf

    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(minilm_files["Q8_0"]).tensors}
    assert types["token_embd.weight"] == "Q8_0"
    assert types["position_embd.weight"] == types["token_types.weight"] == "F32"  # as llama.cpp keeps them


# -- tiny decoders -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_type", ["llama", "qwen2", "qwen3"])
def test_decoder_q8_0_is_ggufs_roundtrip(tmp_path, model_type):
    src, model = make_checkpoint(tmp_path, model_type)
    with pytest.warns(GeomlibWarning, match="F16"):  # down_proj's 48-value rows are 1.5 Q8_0 blocks
        path = requantize(src, tmp_path / "out.gguf", "Q8_0", progress=False)
    with geomlib.open_model(path) as got:
        assert got.arch == model_type and got.n_kv_heads == model.config.num_key_value_heads < got.n_heads
        for L in range(got.n_layers):
            out, out_b = got.layer(L), got.biases(L)
            mods = hf_layer(model, L)
            assert set(out) == set(mods)
            for fam, m in mods.items():
                w = m.weight.detach().numpy()
                want = roundtrip(w, stored_qtype(w.shape, "Q8_0"))
                assert torch.equal(out[fam], torch.from_numpy(want).double()), (L, fam)
            want_b = {fam: m.bias for fam, m in mods.items() if getattr(m, "bias", None) is not None}
            assert set(out_b) == set(want_b)  # qwen2's q/k/v biases, nothing for llama
            for fam, b in want_b.items():
                assert torch.equal(out_b[fam], b.detach().double())
        assert got._store.info(got.tensor_names(0)["down_proj"]).dtype == "F16"
        assert got.quantization == "Q8_0"
    fallback = metadata(path)["geomlib.requantize.f16_fallback"]
    assert fallback == [f"blk.{L}.ffn_down.weight" for L in range(3)]


def test_llama_q_k_are_written_permuted_per_head_count(tmp_path):
    src, model = make_checkpoint(tmp_path, "llama")
    path = requantize(src, tmp_path / "out.gguf", "F32", progress=False)
    import gguf

    tensors = {t.name: t for t in gguf.GGUFReader(path).tensors}
    attn = model.layers[1].self_attn
    for fam, heads in (("q", 4), ("k", 2)):
        t = tensors[f"blk.1.attn_{fam}.weight"]
        raw = np.array(t.data).reshape(tuple(reversed(t.shape.tolist())))
        hf = getattr(attn, f"{fam}_proj").weight.detach().numpy()
        assert not np.array_equal(raw, hf)
        assert np.array_equal(raw, permute_rows(hf, heads))  # llama.cpp's order, per kv head for k
    with geomlib.open_model(path) as got:
        assert torch.equal(got.layer(1, "k_proj")["k_proj"], attn.k_proj.weight.detach().double())


@pytest.mark.parametrize("qtype", QTYPES)
def test_every_qtype_reads_back_as_its_roundtrip(tmp_path, qtype):
    src, model = make_checkpoint(tmp_path, "llama", n_layers=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GeomlibWarning)
        path = requantize(src, tmp_path / "out.gguf", qtype.lower(), progress=False)  # case-insensitive
    with geomlib.open_model(path) as got:
        assert got.quantization == (None if qtype in ("F32", "F16", "BF16") else qtype)
        for L in range(2):
            out = got.layer(L)
            for fam, m in hf_layer(model, L).items():
                w = m.weight.detach().numpy()
                t = expected_type(w.shape, qtype)
                assert got._store.info(got.tensor_names(L)[fam]).dtype == t
                assert torch.equal(out[fam], torch.from_numpy(gguf_roundtrip(w, t)).double()), (qtype, L, fam)
    assert metadata(path)["general.file_type"] == int(getattr(__import__("gguf").LlamaFileType, rq._FILE_TYPES[qtype]))


def test_layout_is_the_llama_cpp_factorys(tmp_path):
    """Same names, types and bytes per layer as the factory that writes llama.cpp's layout."""
    import gguf

    src, model = make_checkpoint(tmp_path, "llama")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GeomlibWarning)
        ours = gguf.GGUFReader(requantize(src, tmp_path / "ours.gguf", "Q8_0", progress=False))
    ref = gguf.GGUFReader(write_gguf(tmp_path / "ref.gguf", model, "llama", "Q8_0"))
    a = {t.name: t for t in ours.tensors}
    b = {t.name: t for t in ref.tensors}
    assert set(a) == set(b)
    for name in b:
        assert a[name].tensor_type == b[name].tensor_type, name
        assert list(a[name].shape) == list(b[name].shape), name
        assert np.array_equal(np.asarray(a[name].data), np.asarray(b[name].data)), name
    for key in ("llama.block_count", "llama.embedding_length", "llama.feed_forward_length",
                "llama.attention.head_count", "llama.attention.head_count_kv", "llama.rope.freq_base",
                "llama.attention.layer_norm_rms_epsilon", "llama.rope.dimension_count", "general.file_type"):
        assert ours.fields[key].contents() == ref.fields[key].contents(), key


def test_transformers_loads_the_file_as_the_same_weights(tmp_path):
    from transformers import AutoModelForCausalLM

    src, model = make_checkpoint(tmp_path, "llama")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GeomlibWarning)
        path = requantize(src, tmp_path / "out.gguf", "Q8_0", progress=False)
    hf = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=path.name, dtype=torch.float32)
    with geomlib.open_model(path) as got:
        for L in range(got.n_layers):
            out = got.layer(L, dtype=torch.float32)
            for fam, m in hf_layer(hf.model, L).items():
                assert torch.equal(out[fam], m.weight.detach()), (L, fam)


def test_gguf_source_requantizes(tmp_path):
    """A GGUF in, F32 out is the same file's weights; Q8_0 out is the roundtrip of what was read."""
    _, model = make_checkpoint(tmp_path, "llama")
    src = write_gguf(tmp_path / "src.gguf", model, "llama")
    f32 = requantize(src, tmp_path / "f32.gguf", "F32", progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GeomlibWarning)
        q8 = requantize(f32, tmp_path / "q8.gguf", "Q8_0", progress=False)
    with geomlib.open_model(src) as a, geomlib.open_model(f32) as b, geomlib.open_model(q8) as c:
        for L in range(a.n_layers):
            la, lb, lc = a.layer(L), b.layer(L), c.layer(L)
            for fam in la:
                assert torch.equal(la[fam], lb[fam]), (L, fam)
                w = la[fam].float().numpy()
                want = roundtrip(w, stored_qtype(w.shape, "Q8_0"))
                assert torch.equal(lc[fam], torch.from_numpy(want).double()), (L, fam)
    assert metadata(q8)["geomlib.requantize.source"] == str(f32)


def test_mistral_is_written_as_llama(tmp_path):
    src, model = make_checkpoint(tmp_path, "mistral", n_layers=2)
    path = requantize(src, tmp_path / "out.gguf", "F32", progress=False)
    with geomlib.open_model(path) as got:
        assert got.arch == "llama"  # llama.cpp converts Mistral as llama
        for fam, m in hf_layer(model, 1).items():
            assert torch.equal(got.layer(1, fam)[fam], m.weight.detach().double()), fam


def test_progress_bar_counts_layers(tmp_path, capsys):
    src, _ = make_checkpoint(tmp_path, "llama", n_layers=2)
    requantize(src, tmp_path / "out.gguf", "F32", progress=True)
    err = capsys.readouterr().err
    assert "requantizing" in err and "/2 [" in err and "layer" in err


# -- refusals: one sentence, nothing left behind ------------------------------------------------------------


def leftovers(directory) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith((".tmp", ".gguf")) or ".probe-" in p.name)


@pytest.mark.parametrize("qtype", ["Q4_K", "q3", "F64", "", 8, None])
def test_unknown_qtype_is_refused(tmp_path, qtype):
    with pytest.raises(InvalidArgumentError) as info:
        requantize(MINILM, tmp_path / "out.gguf", qtype, progress=False)
    msg = one_sentence(info.value)
    assert repr(qtype) in msg and all(q in msg for q in QTYPES)
    assert leftovers(tmp_path) == []


def test_existing_path_is_refused_without_overwrite(tmp_path):
    src, model = make_checkpoint(tmp_path, "llama", n_layers=2)
    out = tmp_path / "out.gguf"
    out.write_bytes(b"precious")
    with pytest.raises(InvalidArgumentError) as info:
        requantize(src, out, "F32", progress=False)
    assert "overwrite=True" in one_sentence(info.value)
    assert out.read_bytes() == b"precious" and leftovers(tmp_path) == ["out.gguf"]
    requantize(src, out, "F32", overwrite=True, progress=False)
    with geomlib.open_model(out) as got:
        assert torch.equal(got.layer(0, "v_proj")["v_proj"], model.layers[0].self_attn.v_proj.weight.detach().double())
    assert leftovers(tmp_path) == ["out.gguf"]


@pytest.mark.parametrize("case", ["missing_dir", "suffix", "directory", "not_a_path"])
def test_bad_output_path_is_refused_before_the_source_is_opened(tmp_path, monkeypatch, case):
    import geomlib.model

    def never(*a, **k):
        raise AssertionError("the source was opened")

    monkeypatch.setattr(geomlib.model, "open_model", never)
    path = {
        "missing_dir": tmp_path / "nope" / "out.gguf",
        "suffix": tmp_path / "out.safetensors",
        "directory": tmp_path / "dir.gguf",
        "not_a_path": 3,
    }[case]
    if case == "directory":
        path.mkdir()
    with pytest.raises(InvalidArgumentError) as info:
        requantize(MINILM, path, "Q8_0", progress=False)
    one_sentence(info.value)
    assert not (tmp_path / "nope").exists()
    assert leftovers(tmp_path) == (["dir.gguf"] if case == "directory" else [])


def test_unwritable_directory_is_refused(tmp_path):
    d = tmp_path / "ro"
    d.mkdir()
    if os.geteuid() != 0:
        d.chmod(0o500)
        undo = ["chmod", "700", str(d)]
    else:  # root writes through permissions: an immutable directory refuses new files even to root
        if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(d)], capture_output=True).returncode:
            pytest.skip("needs chattr +i (root on ext4 or similar)")
        undo = ["chattr", "-i", str(d)]
    try:
        with pytest.raises(InvalidArgumentError) as info:
            requantize(MINILM, d / "out.gguf", "Q8_0", progress=False)
        assert "cannot be written" in one_sentence(info.value)
    finally:
        subprocess.run(undo, check=True)
    assert list(d.iterdir()) == []


@pytest.mark.parametrize("model_type", ["gpt2", "phi3"])
def test_unsupported_architecture_is_refused(tmp_path, model_type):
    src, _ = make_checkpoint(tmp_path, model_type, n_layers=2)
    with pytest.raises(UnsupportedArchitectureError) as info:
        requantize(src, tmp_path / "out.gguf", "Q8_0", progress=False)
    msg = one_sentence(info.value)
    assert model_type in msg and all(a in msg for a in ("bert", "llama", "qwen2", "qwen3"))
    assert leftovers(tmp_path) == []


def test_source_itself_is_refused_as_output(tmp_path):
    _, model = make_checkpoint(tmp_path, "llama", n_layers=2)
    src = write_gguf(tmp_path / "src.gguf", model, "llama")
    before = src.read_bytes()
    with pytest.raises(InvalidArgumentError) as info:
        requantize(src, src, "Q8_0", overwrite=True, progress=False)
    assert "source" in one_sentence(info.value)
    assert src.read_bytes() == before and leftovers(tmp_path) == ["src.gguf"]


@pytest.mark.parametrize("overwrite", [False, True])
def test_failure_mid_write_leaves_nothing(tmp_path, monkeypatch, overwrite):
    src, _ = make_checkpoint(tmp_path, "llama", n_layers=3)
    out = tmp_path / "out.gguf"
    if overwrite:
        out.write_bytes(b"old")
    calls = []
    real = rq._encode

    def failing(w, qtype):
        calls.append(1)
        if len(calls) == 12:  # inside layer 1
            raise KeyboardInterrupt
        return real(w, qtype)

    monkeypatch.setattr(rq, "_encode", failing)
    with pytest.raises(KeyboardInterrupt):
        requantize(src, out, "F32", overwrite=overwrite, progress=False)
    assert leftovers(tmp_path) == (["out.gguf"] if overwrite else [])
    if overwrite:
        assert out.read_bytes() == b"old"


# -- memory: one layer at a time ------------------------------------------------------------------------------


def test_memory_does_not_grow_with_depth(tmp_path):
    """tracemalloc peak (numpy and Python allocations: the quantized bytes) of 16 layers ~ that of 2."""
    kw = dict(hidden_size=256, intermediate_size=512, num_attention_heads=8, num_key_value_heads=4)
    peaks = {}
    for n in (2, 16):
        src, _ = make_checkpoint(tmp_path, "llama", n_layers=n, name=f"l{n}", **kw)
        geomlib.open_model(src).identity  # hash once outside the measurement (memoised)
        tracemalloc.start()
        try:
            requantize(src, tmp_path / f"l{n}.gguf", "Q8_0", progress=False)
            peaks[n] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    q8_layer = (4 * 256 * 256 + 3 * 256 * 512) * 34 // 32  # one layer's Q8_0 bytes (~0.75 MB at full heads)
    # holding every layer's data would add 14 layers (> 10 MB) to the 16-layer peak
    assert peaks[16] < peaks[2] + 3 * q8_layer, peaks
