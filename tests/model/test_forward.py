"""Attention entropy from a real forward pass, on tiny real checkpoints with real tokenizers.

Every model is saved by the factories as a real safetensors directory or GGUF
file, with a tiny tokenizer trained on the built-in text (a ``tokenizers`` BPE,
saved the way ``save_pretrained`` saves it, or written into the GGUF's
``tokenizer.ggml.*`` metadata).  The reference numbers come from the factory's
own in-memory model run with ``output_attentions=True`` on ids produced by the
``tokenizers`` object directly, reduced with ``torch.special.entr``.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import inspect
import json
import logging
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import geomlib
from geomlib.analyses.phases import head_invariant
from geomlib.errors import GeomlibError, InvalidArgumentError, SourceNotFoundError, UnsupportedSourceError
from geomlib.model.forward import (
    MAX_WINDOWS,
    MIN_TOKENS,
    TEXT_SOURCE,
    WINDOW_TOKENS,
    EntropyResult,
    _attention_entropy,
    attention_entropy,
    builtin_text,
    check_memory_budget,
    check_text,
    check_tokenizer,
    resolve_text,
    text_windows,
)
from tests.factories.gguf import write_gguf
from tests.factories.hf import MODEL_TYPES, make_checkpoint, save_model, tiny_model
from tests.factories.packaging import carried
from tests.factories.tokenizers import VOCAB, save_tokenizer, word_tokenizer

# every architecture geomlib reads; the encoders attend both ways
CAUSAL = {mt: mt not in ("bert", "mpnet") for mt in MODEL_TYPES}
# gpt2's tiny default has 64 positions: give every model room for the default 512 tokens
OVERRIDES = {"gpt2": dict(n_positions=1024)}


def byte_level_tokenizer(vocab_size: int):
    """A GPT-2 style byte-level BPE (what SmolLM2's GGUF holds), trained on the built-in text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator([builtin_text()], trainer)
    return tk


def reference_entropy(model, ids: list[int]) -> np.ndarray:
    """(layers, heads) mean over queries of the entropy of the returned attention maps."""
    return reference_per_query(model, ids).mean(-1)


def reference_per_query(model, ids: list[int]) -> np.ndarray:
    """(layers, heads, queries) entropy of every attention row of the returned maps."""
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids]), output_attentions=True)
    return np.stack([torch.special.entr(a[0].double()).sum(-1).numpy() for a in out.attentions])


def reference_windows(model, ids: list[int], n_windows: int) -> np.ndarray:
    """(window, layers, heads): the per-query entropies averaged over ``n_windows`` contiguous, near-equal
    stretches of queries (numpy's array_split, written independently of geomlib's edges)."""
    per_query = reference_per_query(model, ids)
    return np.stack([c.mean(-1) for c in np.array_split(per_query, n_windows, axis=-1)])


def check_windows(res: EntropyResult) -> None:
    """The windows tile the queries and their token-weighted mean is the reported mean."""
    e = res.window_edges
    assert e[0] == 0 and e[-1] == res.n_tokens and (np.diff(e) > 0).all()
    assert res.windows.shape == (len(e) - 1,) + res.values.shape and res.windows.dtype == np.float64
    w = np.diff(e) / res.n_tokens
    np.testing.assert_allclose(np.tensordot(w, res.windows, axes=1), res.values, rtol=1e-12, atol=1e-12)


def check_bounds(values: np.ndarray, n: int, causal: bool) -> None:
    assert np.isfinite(values).all()
    assert (values >= 0).all()
    assert (values <= math.log(n) + 1e-9).all()
    if causal:
        # query i sees i + 1 keys: the mean entropy is at most the mean of log(i + 1)
        assert (values <= np.log(np.arange(1, n + 1)).mean() + 1e-9).all()


@pytest.fixture(scope="module")
def tokenizer():
    return word_tokenizer()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, tokenizer):
    """model_type -> (directory with weights and tokenizer, in-memory model)."""
    root = tmp_path_factory.mktemp("entropy")
    out = {}
    for mt in CAUSAL:
        path, model = make_checkpoint(root, mt, n_layers=3, vocab_size=VOCAB, **OVERRIDES.get(mt, {}))
        save_tokenizer(tokenizer, path)
        out[mt] = (path, model)
    return out


# -- the built-in text ------------------------------------------------------------------------------
def test_builtin_text_ships_with_the_package():
    res = importlib.resources.files("geomlib").joinpath("data/alice.txt")
    assert res.is_file()
    text = builtin_text()
    assert text == res.read_text(encoding="utf-8")
    assert text.startswith("Alice was beginning to get very tired of sitting by her sister on the bank")
    assert 350 <= len(text.split()) <= 450
    assert "Wonderland" in TEXT_SOURCE and "public domain" in TEXT_SOURCE


def test_builtin_text_is_package_data_in_pyproject():
    # a wheel only carries non-Python files that package-data names
    assert carried("data/alice.txt") and not carried("data/other.bin")


# -- numbers ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model_type", list(CAUSAL))
def test_matches_output_attentions_of_the_same_model(checkpoints, tokenizer, model_type):
    path, model = checkpoints[model_type]
    ckpt = geomlib.open_model(path)
    res = attention_entropy(ckpt, device="cpu", max_tokens=96, progress=False)
    assert isinstance(res, EntropyResult)
    assert res.values.shape == (ckpt.n_layers, ckpt.n_heads) == (3, 4)
    assert res.values.dtype == np.float64
    ids = tokenizer.encode(builtin_text()).ids[:96]
    assert res.n_tokens == len(ids) == 96
    np.testing.assert_allclose(res.values, reference_entropy(model, ids), rtol=1e-6, atol=1e-9)
    check_bounds(res.values, res.n_tokens, CAUSAL[model_type])
    # 96 tokens: 3 windows of 32 queries, each the mean of its own queries' entropies
    assert list(res.window_edges) == [0, 32, 64, 96]
    np.testing.assert_allclose(res.windows, reference_windows(model, ids, 3), rtol=1e-6, atol=1e-9)
    check_windows(res)
    assert "3 contiguous windows of 32-32" in res.method
    assert res.text_sha256 == hashlib.sha256(builtin_text().encode()).hexdigest()
    assert res.text_source == TEXT_SOURCE
    assert res.device == "cpu" and not res.offloaded
    assert "eager" in res.method and "safetensors" in res.method
    attrs = res.attrs()
    assert attrs["entropy_n_tokens"] == 96 and attrs["entropy_offloaded"] == 0
    assert all(isinstance(v, (str, int)) for v in attrs.values())


def test_default_max_tokens_truncates_the_text(checkpoints, tokenizer):
    path, model = checkpoints["bert"]
    res = attention_entropy(geomlib.open_model(path), device="cpu", progress=False)
    ids = tokenizer.encode(builtin_text()).ids
    assert len(ids) > 512 and res.n_tokens == 512  # the word-level BPE splits finely: the cap applies
    np.testing.assert_allclose(res.values, reference_entropy(model, ids[:512]), rtol=1e-6, atol=1e-9)
    check_bounds(res.values, 512, causal=False)
    assert res.windows.shape == (16, 3, 4) and (np.diff(res.window_edges) == 32).all()  # the default: 16 x 32
    np.testing.assert_allclose(res.windows, reference_windows(model, ids[:512], 16), rtol=1e-6, atol=1e-9)
    check_windows(res)


@pytest.mark.parametrize("n, W", [(1, 1), (2, 1), (63, 1), (64, 2), (100, 3), (482, 15), (512, 16), (513, 16),
                                  (10_000, 16)])
def test_text_windows_rule(n, W):
    e = text_windows(n)
    assert e.dtype == np.int64 and len(e) == W + 1 == min(MAX_WINDOWS, max(1, n // WINDOW_TOKENS)) + 1
    assert e[0] == 0 and e[-1] == n
    sizes = np.diff(e)
    assert sizes.max() - sizes.min() <= 1 and (np.diff(sizes) <= 0).all()  # the longer ones first
    assert [len(c) for c in np.array_split(np.arange(n), W)] == sizes.tolist()
    if W > 1:
        assert sizes.min() >= WINDOW_TOKENS
    with pytest.raises(InvalidArgumentError, match="n_tokens"):
        text_windows(0)


def test_capped_at_the_models_maximum_positions(tmp_path, tokenizer):
    path, model = make_checkpoint(tmp_path, "gpt2", n_layers=2, vocab_size=VOCAB)  # n_positions 64
    save_tokenizer(tokenizer, path)
    res = attention_entropy(geomlib.open_model(path), device="cpu", progress=False)
    assert res.n_tokens == 64
    np.testing.assert_allclose(res.values, reference_entropy(model, tokenizer.encode(builtin_text()).ids[:64]),
                               rtol=1e-6, atol=1e-9)


def test_hooks_and_output_attentions_agree(checkpoints):
    ckpt = geomlib.open_model(checkpoints["qwen3"][0])
    hooks = _attention_entropy(ckpt, None, "cpu", 40, False, None, collect="hooks")
    outputs = _attention_entropy(ckpt, None, "cpu", 40, False, None, collect="outputs")
    np.testing.assert_array_equal(hooks.values, outputs.values)
    np.testing.assert_array_equal(hooks.windows, outputs.windows)
    np.testing.assert_array_equal(hooks.window_edges, [0, 40])  # 40 tokens: one window
    # the public function takes no private switch
    assert list(inspect.signature(attention_entropy).parameters) == ["ckpt", "text", "device", "max_tokens",
                                                                     "progress", "max_memory"]
    with pytest.raises(InvalidArgumentError, match="collect="):
        _attention_entropy(ckpt, None, "cpu", 40, False, None, collect="both")


@pytest.mark.parametrize("share", [0.0, 0.5])
def test_offloaded_model_gives_the_same_numbers(tmp_path, tokenizer, share):
    path, _ = make_checkpoint(tmp_path, "llama", n_layers=4, vocab_size=VOCAB)
    save_tokenizer(tokenizer, path)
    ckpt = geomlib.open_model(path)
    full = attention_entropy(ckpt, device="cpu", max_tokens=64, progress=False)
    nbytes = (path / "model.safetensors").stat().st_size
    # a budget below the weights forces accelerate's device_map: all (share 0) or some layers on disk
    small = attention_entropy(ckpt, device="cpu", max_tokens=64, progress=False,
                              max_memory=max(1, int(nbytes * share)))
    assert small.offloaded and not full.offloaded
    assert "offloaded" in small.device
    np.testing.assert_allclose(small.values, full.values, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(small.windows, full.windows, rtol=1e-12, atol=1e-12)


def test_text_as_string_or_file(checkpoints, tmp_path, tokenizer):
    path, model = checkpoints["llama"]
    ckpt = geomlib.open_model(path)
    text = "Down, down, down. Would the fall never come to an end? Alice had no idea what Latitude was."
    f = tmp_path / "t.txt"
    f.write_text(text, encoding="utf-8")
    a = attention_entropy(ckpt, text=text, device="cpu", progress=False)
    b = attention_entropy(ckpt, text=f, device="cpu", progress=False)
    np.testing.assert_array_equal(a.values, b.values)
    assert a.text_sha256 == b.text_sha256 == hashlib.sha256(text.encode()).hexdigest()
    assert a.text_source == "user text" and b.text_source == "file t.txt"
    ids = tokenizer.encode(text).ids
    assert a.n_tokens == len(ids)
    np.testing.assert_allclose(a.values, reference_entropy(model, ids), rtol=1e-6, atol=1e-9)


def test_progress_bar(checkpoints, capsys):
    attention_entropy(geomlib.open_model(checkpoints["gpt2"][0]), device="cpu", max_tokens=16, progress=True)
    assert "attention entropy" in capsys.readouterr().err


def test_device_auto_runs(checkpoints):
    res = attention_entropy(geomlib.open_model(checkpoints["llama"][0]), device="auto", max_tokens=16,
                            progress=False)
    assert res.device.startswith("cuda" if torch.cuda.is_available() else "cpu")
    assert res.values.shape == (3, 4)


def relabel_heads(model, qperm: list[int], kvperm: list[int]) -> None:
    """Rename the heads of every llama layer in place: query head j becomes old head ``qperm[j]`` and kv head
    g old kv head ``kvperm[g]``; consistent with GQA when ``qperm[j] // group == kvperm[j // group]``.  The
    network computes the same function, each head's attention map now under another index."""
    cfg = model.config
    D = cfg.hidden_size // cfg.num_attention_heads
    rows = lambda w, order: torch.cat([w[i * D:(i + 1) * D] for i in order])  # noqa: E731
    with torch.no_grad():
        for layer in model.layers:
            att = layer.self_attn
            att.q_proj.weight.copy_(rows(att.q_proj.weight, qperm))
            att.k_proj.weight.copy_(rows(att.k_proj.weight, kvperm))
            att.v_proj.weight.copy_(rows(att.v_proj.weight, kvperm))
            att.o_proj.weight.copy_(torch.cat([att.o_proj.weight[:, i * D:(i + 1) * D] for i in qperm], dim=1))


def test_relabelled_heads_permute_the_entropies_and_leave_the_sorted_profile(tmp_path, tokenizer):
    """Relabelling heads is a symmetry: every entropy, mean and per window, moves with its head, and the
    per-layer sorted profile the phases segment does not change (to the rounding of the output projection)."""
    model = tiny_model("llama", n_layers=3, vocab_size=VOCAB)  # 4 query heads in 2 kv groups
    a_path = save_model(model, tmp_path / "a")
    save_tokenizer(tokenizer, a_path)
    qperm, kvperm = [3, 2, 0, 1], [1, 0]  # groups swapped, and the heads within the first
    relabel_heads(model, qperm, kvperm)
    b_path = save_model(model, tmp_path / "b")
    save_tokenizer(tokenizer, b_path)
    a = attention_entropy(geomlib.open_model(a_path), device="cpu", max_tokens=128, progress=False)
    b = attention_entropy(geomlib.open_model(b_path), device="cpu", max_tokens=128, progress=False)
    assert not np.allclose(a.values, b.values)  # the labels did move
    np.testing.assert_allclose(b.values, a.values[:, qperm], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(b.windows, a.windows[:, :, qperm], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(head_invariant(b.values), head_invariant(a.values), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(head_invariant(b.windows), head_invariant(a.windows), rtol=1e-5, atol=1e-7)


def test_heads_analysis_stores_the_windows_and_phases_bootstrap_them(tmp_path, tokenizer):
    path, _ = make_checkpoint(tmp_path, "llama", n_layers=6, vocab_size=VOCAB)
    save_tokenizer(tokenizer, path)
    ds = geomlib.compute(path, "heads", tmp_path / "cache", progress=False, heads={"null_draws": 0})
    win = ds["attn_entropy_windows"]
    assert win.dims == ("window", "layer", "head") and win.shape == (16, 6, 4)
    assert list(ds.window.values) == list(range(16))
    assert list(ds.window_start.values) == list(range(0, 512, 32)) and (ds.window_tokens.values == 32).all()
    np.testing.assert_allclose(win.mean("window").values, ds.attn_entropy.values, rtol=1e-12, atol=1e-12)
    assert "window" in win.attrs["description"]
    assert ds.attrs["heads_schema_version"] == 4
    # phases are applied at load time: fitted to the sorted entropy profile, bootstrapped over its windows
    assert ds.attrs["phase_method"].startswith("changepoint:entropy")
    assert ds.attrs["phase_bootstrap"].startswith("bootstrap over 16 text windows")
    assert ds.phase_boundary_freq.dims == ("layer",) and ds.phase_boundary_freq.values[0] == 1.0
    again = geomlib.load(path, "heads", tmp_path / "cache", heads={"null_draws": 0})  # from the cache
    assert again.attrs["phase_bootstrap"] == ds.attrs["phase_bootstrap"]
    np.testing.assert_array_equal(again.phase_boundary_freq.values, ds.phase_boundary_freq.values)
    # no forward pass: nothing to resample, and the phases say so
    off = geomlib.compute(path, "heads", tmp_path / "cache", progress=False,
                          heads={"null_draws": 0, "forward_pass": False})
    assert "attn_entropy_windows" not in off.data_vars and "window" not in off.dims
    assert off.attrs["phase_bootstrap"].startswith("no bootstrap: ")
    assert np.isnan(off.phase_boundary_freq.values).all()


# -- GGUF -------------------------------------------------------------------------------------------------
def add_tokenizer(tk):
    """A GGUFWriter edit adding ``tk`` as llama.cpp writes a GPT-2 style BPE (tokenizer.ggml.model 'gpt2')."""
    vocab = tk.get_vocab()
    tokens = sorted(vocab, key=vocab.get)
    merges = json.loads(tk.to_str())["model"]["merges"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in merges]

    def edit(w):
        w.add_tokenizer_model("gpt2")
        w.add_token_list(tokens)
        w.add_token_types([1] * len(tokens))
        w.add_token_merges(merges)

    return edit


def test_gguf_model_and_tokenizer_from_the_file(tmp_path):
    tk = byte_level_tokenizer(320)
    model = tiny_model("llama", n_layers=2, vocab_size=320)
    path = write_gguf(tmp_path / "m.gguf", model, "llama", edit=add_tokenizer(tk))
    ckpt = geomlib.open_model(path)
    res = attention_entropy(ckpt, device="cpu", max_tokens=80, progress=False)
    ids = tk.encode(builtin_text()).ids[:80]
    assert res.n_tokens == len(ids) == 80
    assert res.values.shape == (2, 4)
    # F32 GGUF: transformers undoes llama.cpp's q/k permutation, so the numbers are the HF model's
    np.testing.assert_allclose(res.values, reference_entropy(model, ids), rtol=1e-5, atol=1e-7)
    check_bounds(res.values, 80, causal=True)
    assert "GGUF" in res.method


def test_gguf_over_the_budget_is_refused(tmp_path):
    tk = byte_level_tokenizer(320)
    path = write_gguf(tmp_path / "m.gguf", tiny_model("llama", n_layers=2, vocab_size=320), "llama",
                      edit=add_tokenizer(tk))
    with pytest.raises(UnsupportedSourceError, match=r"dequantizes a whole GGUF.*heads=\{'forward_pass': False\}"):
        attention_entropy(geomlib.open_model(path), device="cpu", progress=False, max_memory=1000)


def test_gguf_over_the_budget_is_refused_before_any_work(tmp_path, run_cli):
    """compute() and the CLI pass max_memory to the heads pre-flight: nothing runs, nothing is written."""
    tk = byte_level_tokenizer(320)
    path = write_gguf(tmp_path / "m.gguf", tiny_model("llama", n_layers=2, vocab_size=320), "llama",
                      edit=add_tokenizer(tk))
    ckpt = geomlib.open_model(path)
    check_memory_budget(ckpt)  # the default budget (a quarter of RAM) holds a tiny model
    with pytest.raises(UnsupportedSourceError, match="--heads.max-memory"):
        check_memory_budget(ckpt, 1000)
    c = tmp_path / "cache"
    with pytest.raises(UnsupportedSourceError, match=r"dequantizes a whole GGUF.*--heads\.max-memory"):
        geomlib.compute(path, cache_dir=c, progress=False, weights={"null_draws": 0},
                        heads={"null_draws": 0, "max_memory": 1000})
    assert not c.exists() or not list(c.rglob("*.nc"))  # not even the weights analysis ran
    run_cli("compute", path, "--cache", c, "--weights.null-draws", "0", "--heads.null-draws", "0",
            "--heads.max-memory", "1000", "-q").one_error_line("dequantizes a whole GGUF", "--heads.max-memory",
                                                               "--no-heads.forward-pass")
    assert not c.exists() or not list(c.rglob("*.nc"))


# -- errors ------------------------------------------------------------------------------------------------
def test_missing_tokenizer_files(tmp_path):
    path, _ = make_checkpoint(tmp_path, "llama", n_layers=2, vocab_size=VOCAB)
    with pytest.raises(SourceNotFoundError, match=r"tokenizer.*heads=\{'forward_pass': False\}") as info:
        attention_entropy(geomlib.open_model(path), device="cpu", progress=False)
    assert isinstance(info.value, GeomlibError)
    assert str(path) in str(info.value) and "--no-heads.forward-pass" in str(info.value)
    check_tokenizer_refuses(geomlib.open_model(path))


def test_gguf_without_tokenizer_metadata(tmp_path):
    path = write_gguf(tmp_path / "m.gguf", tiny_model("llama", n_layers=2), "llama")
    with pytest.raises(SourceNotFoundError, match=r"tokenizer.ggml.*heads=\{'forward_pass': False\}"):
        attention_entropy(geomlib.open_model(path), device="cpu", progress=False)
    check_tokenizer_refuses(geomlib.open_model(path))


def check_tokenizer_refuses(ckpt):
    """The cheap pre-flight check says the same as the forward pass, before any model is built."""
    with pytest.raises(SourceNotFoundError, match=r"no tokenizer.*--no-heads\.forward-pass"):
        check_tokenizer(ckpt)


def test_bad_arguments(checkpoints, tmp_path):
    ckpt = geomlib.open_model(checkpoints["llama"][0])
    with pytest.raises(InvalidArgumentError, match="empty"):
        attention_entropy(ckpt, text="   \n", progress=False)
    with pytest.raises(InvalidArgumentError, match="at least 2"):
        attention_entropy(ckpt, text="Alice", device="cpu", progress=False)
    with pytest.raises(SourceNotFoundError, match="does not exist"):
        attention_entropy(ckpt, text=tmp_path / "missing.txt", progress=False)
    for bad in (1, 0, 2.5, True):
        with pytest.raises(InvalidArgumentError, match="max_tokens"):
            attention_entropy(ckpt, max_tokens=bad, progress=False)
    with pytest.raises(InvalidArgumentError, match="max_memory"):
        attention_entropy(ckpt, max_memory=0, progress=False)
    with pytest.raises(InvalidArgumentError, match="text must be"):
        attention_entropy(ckpt, text=b"bytes", progress=False)
    with pytest.raises(InvalidArgumentError, match="Checkpoint"):
        attention_entropy(str(checkpoints["llama"][0]), progress=False)


# -- the real demo -------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_demo_smollm2_entropy_is_finite_bounded_and_deterministic():
    ckpt = geomlib.open_model("demo:smollm2-135m")
    a = attention_entropy(ckpt, device="cpu", progress=False)
    b = attention_entropy(ckpt, device="cpu", progress=False)
    assert a.values.shape == (30, 9)
    assert 400 <= a.n_tokens <= 512  # the whole built-in text, with SmolLM2's own tokenizer
    check_bounds(a.values, a.n_tokens, causal=True)
    np.testing.assert_array_equal(a.values, b.values)
    # trained heads differ: some attend sharply (sinks, previous token), some broadly
    assert a.values.min() < 1.0 < 3.0 < a.values.max()
    assert "GGUF" in a.method and a.text_source == TEXT_SOURCE
    assert a.windows.shape == (15, 30, 9)  # ~480 tokens: 15 windows of 32
    check_windows(a)
    np.testing.assert_array_equal(a.windows, b.windows)


# -- the text and the pre-flight ------------------------------------------------------------------------------
@pytest.mark.parametrize("content, words", [
    (b"", r"empty \(0 characters\)"),
    (b" \n\t \r\n", r"empty \(only whitespace\)"),
    (b"\x00" * 64, "looks binary.*NUL"),
    ("some words".encode("utf-16"), "looks binary.*UTF-16"),
    (b"words \xe9 more words", r"not UTF-8 text \(byte 0xe9 at offset 6"),
    (b"\x07\x08" * 10 + b"a few words of text", "looks binary.*control characters"),
])
def test_unreadable_text_files_are_refused_in_one_sentence(checkpoints, tmp_path, content, words):
    f = tmp_path / "text.txt"
    f.write_bytes(content)
    ckpt = geomlib.open_model(checkpoints["llama"][0])
    for call in (lambda: resolve_text(f), lambda: check_text(ckpt, f, progress=False),
                 lambda: attention_entropy(ckpt, text=f, device="cpu", progress=False)):
        with pytest.raises(InvalidArgumentError, match=words) as info:
            call()
        assert "\n" not in str(info.value)


def test_text_checks_accept_real_text(checkpoints, tmp_path):
    f = tmp_path / "text.txt"
    # tabs, CRLF, a form feed and a DOS end-of-file marker are plain text; one stray escape is tolerated
    f.write_bytes(("Alice was beginning\tto get very tired\r\n\x0cof sitting by her sister on the bank. " * 20
                   + "\x1b" + "\x1a").encode("utf-8"))
    content, label = resolve_text(f)
    assert content.startswith("Alice") and label == "file text.txt"
    ckpt = geomlib.open_model(checkpoints["llama"][0])
    assert check_text(ckpt, f, max_tokens=16, progress=False) == 16
    assert check_text(ckpt, None, max_tokens=512, progress=False) > 100  # the built-in text
    with pytest.raises(InvalidArgumentError, match="NUL"):
        resolve_text("a string with a \x00 inside")
    with pytest.raises(InvalidArgumentError, match="is a directory"):
        resolve_text(tmp_path)


def test_check_text_counts_tokens_with_the_models_tokenizer(checkpoints):
    ckpt = geomlib.open_model(checkpoints["llama"][0])
    with pytest.raises(InvalidArgumentError, match=r"1 token\(s\).*at least 2"):
        check_text(ckpt, "Alice", progress=False)
    assert MIN_TOKENS == 2
    assert check_text(ckpt, "Alice was", progress=False) == 2


def test_the_preflight_loads_the_tokenizer_once_for_the_whole_run(checkpoints, tmp_path, monkeypatch):
    """check_text (pre-flight) builds the tokenizer; the forward pass of the same checkpoint reuses it."""
    from transformers import AutoTokenizer

    calls = []
    real = AutoTokenizer.from_pretrained.__func__

    def counting(cls, *args, **kwargs):
        calls.append(args)
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(AutoTokenizer, "from_pretrained", classmethod(counting))
    ds = geomlib.compute(checkpoints["llama"][0], "heads", cache_dir=tmp_path / "c", progress=False,
                         heads={"null_draws": 0, "max_tokens": 32})
    assert np.isfinite(ds.attn_entropy).all()
    assert len(calls) == 1, calls


def test_the_preflight_refuses_a_short_text_before_any_analysis(checkpoints, tmp_path, monkeypatch):
    from geomlib.analyses.heads import compute as heads_compute
    from geomlib.analyses.weights import compute as weights_compute

    def must_not_run(*args, **kwargs):
        raise AssertionError("an analysis ran before the text was checked")

    monkeypatch.setattr(heads_compute, "run", must_not_run)
    monkeypatch.setattr(weights_compute, "run", must_not_run)
    f = tmp_path / "short.txt"
    f.write_text("Alice", encoding="utf-8")
    with pytest.raises(InvalidArgumentError, match=r"1 token\(s\)"):
        geomlib.compute(checkpoints["llama"][0], ["weights", "heads"], cache_dir=tmp_path / "c", progress=False,
                        heads={"text": str(f)})
    f.write_bytes(b"\x00\x01\x02" * 100)
    with pytest.raises(InvalidArgumentError, match="looks binary"):
        geomlib.compute(checkpoints["llama"][0], ["weights", "heads"], cache_dir=tmp_path / "c", progress=False,
                        heads={"text": str(f)})
    assert not (tmp_path / "c").exists() or not list((tmp_path / "c").rglob("*.nc"))


# -- nothing from transformers when progress is off ------------------------------------------------------------
def checkpoint_with_unexpected_keys(root: Path, tokenizer) -> Path:
    """A tiny llama whose safetensors also hold tensors the base model has no place for: transformers prints a
    LOAD REPORT table of UNEXPECTED keys while building it (what a CausalLM's untied lm_head does)."""
    from safetensors.torch import load_file, save_file

    path, _ = make_checkpoint(root, "llama", n_layers=2, vocab_size=VOCAB)
    save_tokenizer(tokenizer, path)
    f = path / "model.safetensors"
    tensors = load_file(f)
    tensors["lm_head.weight"] = torch.randn(tensors["embed_tokens.weight"].shape)
    tensors["extra_unused.weight"] = torch.randn(4, 4)
    save_file(tensors, f, metadata={"format": "pt"})
    return path


@pytest.mark.parametrize("case, flags, loud_words", [
    # transformers' LOAD REPORT table of the keys the base model has no place for
    ("unexpected-keys", [], ["LOAD REPORT", "UNEXPECTED"]),
    # accelerate, driven by transformers, on a model over the memory budget
    ("offloaded", ["--heads.max-memory", "20000"], ["offloaded to the disk"]),
])
def test_quiet_compute_prints_nothing_from_transformers(tmp_path, tokenizer, case, flags, loud_words):
    """``-q``: the forward pass' model load says nothing; without -q the same run does (the trigger works)."""
    path = checkpoint_with_unexpected_keys(tmp_path, tokenizer)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}

    def cli(*extra):
        return subprocess.run([sys.executable, "-m", "geomlib", "compute", str(path), "--analyses", "heads",
                               "--heads.null-draws", "0", "--heads.max-tokens", "32", *flags, *extra],
                              capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)

    loud = cli("--cache", str(tmp_path / "loud"))
    assert loud.returncode == 0, loud.stderr
    for w in loud_words:
        assert w in loud.stderr, (w, loud.stderr)
    quiet = cli("--cache", str(tmp_path / "quiet"), "-q")
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == ""
    # geomlib's own last line, nothing else
    assert quiet.stdout.splitlines() == [f"{path}: heads cached under {tmp_path / 'quiet'}"]


def test_quiet_context_restores_transformers_settings(checkpoints):
    from transformers.utils import logging as hf_logging

    ckpt = geomlib.open_model(checkpoints["llama"][0])
    before_filters, accelerate_level = list(warnings.filters), logging.getLogger("accelerate").level
    for bars in (True, False):
        (hf_logging.enable_progress_bar if bars else hf_logging.disable_progress_bar)()
        hf_logging.set_verbosity_info()
        try:
            attention_entropy(ckpt, device="cpu", max_tokens=16, progress=False)
            assert hf_logging.get_verbosity() == hf_logging.INFO
            assert hf_logging.is_progress_bar_enabled() is bars
            assert warnings.filters == before_filters
            assert logging.getLogger("accelerate").level == accelerate_level
        finally:
            hf_logging.set_verbosity_warning()
            hf_logging.enable_progress_bar()
