"""The gauge analysis on the real SmolLM2-135M weights (the bundled demo GGUF, Q4_1).

The demo is cut to its first four layers (a new GGUF with ``block_count`` = 4 and every other metadata key
copied, the vocabulary arrays aside, see :data:`VOCAB`) and layer 2 is rewritten twice: once by a
function-preserving edit (the architecture's symmetries), once by a function-changing one (a rotation of its
residual side).  A float64 transformers forward pass proves which is which, and geomlib's gauge variables
must stay put under the first and move under the second.

Why a 1e-9 tolerance holds although the edited tensors are stored in float32 (GGUF has no F64 that gguf's
dequantizer, hence geomlib and transformers, can read): the source weights are Q4_1 (``d·q + m`` with float16
``d``, ``m`` and 4-bit ``q``), so every dequantized value is a multiple of 2⁻²⁴ (checked).  Layer 2 is written
as F32 in all three files (the baseline too, so the files differ only in the edit), and every edit is exact
in float32: permutations, signs and powers of two, quarter-turn rotations inside a rotary pair, and, for the
per-kv-head GL(d) on OV, integer unimodular matrices times signed powers of two, whose products with values on
the 2⁻²⁴ grid stay on it (checked: an edited value float32 cannot hold fails the test, it is never rounded).
The edited file is therefore *exactly* a symmetry image of the baseline; what is left is float64 round-off in
the forward pass and the analysis (observed: 0 on the outputs, ≤ 1e-14 relative on the gauge variables).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import geomlib
from tests.factories.gguf import permute_rows

N_CUT, EDITED = 4, 2  # keep blocks 0..3, edit block 2
VARS = ("mlp_matched_cos", "mlp_matched_null_mean", "mlp_matched_null_std", "head_matched_cos",
        "head_unmatched_cos", "head_matched_null_mean", "head_matched_null_std", "composition_mean")
#: indexed by a layer's own heads: invariant as a multiset over the heads of each layer
PER_HEAD = ("head_matched", "composition_score")
#: the vocabulary arrays (49k tokens, their types, 49k merges): not needed to run the model on token ids, and
#: gguf's reader parses them item by item, about 5 s per opening of a file, which this test does 9 times
#: (the cut files keep ``llama.vocab_size``, so the embedding's shape is still checked on load)
VOCAB = ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges")
#: "<|im_start|>user\nWhat is the capital of France?<|im_end|>" in SmolLM2's tokenizer
IDS = torch.tensor([[1, 4093, 198, 1780, 314, 260, 3575, 282, 4649, 47, 2]])


def unpermute_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF row order of a llama GGUF q/k weight: the inverse of llama.cpp's ``LlamaModel.permute``."""
    out = w.shape[0]
    return w.reshape(n_head, out // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def cut_gguf(r, dst: Path, n_layers: int, f32_layer: int, replace: dict[str, np.ndarray] | None = None,
             skip: tuple[str, ...] = VOCAB):
    """Write the GGUF that ``gguf.GGUFReader`` ``r`` reads, cut to its first ``n_layers`` blocks, as ``dst``.

    Every metadata key but those in ``skip`` is copied (tokenizer settings, ids and chat template included)
    with ``{arch}.block_count`` set to ``n_layers``; ``skip=()`` copies the vocabulary too.
    Tensors are copied byte for byte in their stored type, except those of block ``f32_layer``, which are
    written dequantized as F32, or as ``replace[name]`` (GGUF name, GGUF row order) when given.
    """
    import gguf
    from gguf.quants import dequantize

    replace = replace or {}
    arch = r.fields["general.architecture"].contents()
    w = gguf.GGUFWriter(dst, arch)
    for key, f in r.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture" or key in skip:
            continue  # the writer writes the first two itself
        val = n_layers if key == f"{arch}.block_count" else f.contents()
        vtype = f.types[0]
        w.add_key_value(key, val, vtype, sub_type=f.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None)
    for t in r.tensors:
        if t.name.startswith("blk.") and int(t.name.split(".")[1]) >= n_layers:
            continue
        if t.name.startswith(f"blk.{f32_layer}."):
            shape = tuple(int(s) for s in reversed(t.shape.tolist()))
            data = replace.get(t.name)
            if data is None:
                data = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(shape)
            assert data.shape == shape, (t.name, data.shape, shape)
            w.add_tensor(t.name, np.ascontiguousarray(data, dtype=np.float32))
        else:
            w.add_tensor(t.name, t.data, raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return dst


def read_layer(r, L: int, n_heads: int, n_kv: int) -> dict[str, np.ndarray]:
    """Block ``L`` of a GGUF (a ``gguf.GGUFReader``) as float64 arrays in HF layout (q/k rows un-permuted),
    keyed by GGUF suffix."""
    from gguf.quants import dequantize

    out = {}
    for t in r.tensors:
        if t.name.startswith(f"blk.{L}."):
            shape = tuple(int(s) for s in reversed(t.shape.tolist()))
            w = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float64).reshape(shape)
            key = t.name.split(".")[2]
            if key in ("attn_q", "attn_k"):
                w = unpermute_rows(w, n_heads if key == "attn_q" else n_kv)
            out[key] = w
    return out


def to_gguf(layer: dict[str, np.ndarray], L: int, n_heads: int, n_kv: int) -> dict[str, np.ndarray]:
    """HF-layout float64 weights back to GGUF names and row order, as float32 that must hold them exactly."""
    out = {}
    for key, w in layer.items():
        if key in ("attn_q", "attn_k"):
            w = permute_rows(w, n_heads if key == "attn_q" else n_kv)
        w32 = w.astype(np.float32)
        bad = np.flatnonzero(w32.astype(np.float64) != w)
        assert bad.size == 0, f"{key}: {bad.size} edited values are not float32-exact (e.g. {w.flat[bad[0]]!r})"
        out[f"blk.{L}.{key}.weight"] = w32
    return out


def _integer_mixer(d: int, gen: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """An integer unimodular (I + U)(I + Lo), U/Lo one ±1 per row across the halves, and its exact inverse."""
    h = d // 2
    U, Lo = np.zeros((d, d)), np.zeros((d, d))
    U[np.arange(h), h + gen.permutation(h)] = gen.choice([-1.0, 1.0], h)  # U @ U = 0
    Lo[h + np.arange(h), gen.permutation(h)] = gen.choice([-1.0, 1.0], h)  # Lo @ Lo = 0
    eye = np.eye(d)
    return (eye + U) @ (eye + Lo), (eye - Lo) @ (eye - U)


def symmetry_edit(w: dict[str, np.ndarray], H: int, KV: int, D: int, seed: int) -> dict:
    """A function-preserving edit of one llama block in HF layout (float64 arrays, GGUF suffixes), exact in
    float32 on Q4_1 values."""
    gen = np.random.default_rng(seed)
    w = {k: v.copy() for k, v in w.items()}
    G = H // KV
    # SwiGLU: neurons permuted, up rows scaled by signed powers of two, down columns divided by them
    n_ff = w["ffn_up"].shape[0]
    p = gen.permutation(n_ff)
    c = 2.0 ** gen.integers(-2, 3, n_ff) * gen.choice([-1.0, 1.0], n_ff)
    w["ffn_gate"] = w["ffn_gate"][p]
    w["ffn_up"] = w["ffn_up"][p] * c[:, None]
    w["ffn_down"] = w["ffn_down"][:, p] / c[None, :]
    # heads: kv groups permuted, query heads permuted inside each group, consistently across q/k/v/o
    g = [1, 2, 0]
    inner = np.concatenate([gen.permutation(G) for _ in range(KV)])
    qperm = [g[j // G] * G + int(inner[j]) for j in range(H)]
    assert sorted(qperm) == list(range(H)) and qperm != list(range(H))
    rows = lambda m, order: np.concatenate([m[i * D:(i + 1) * D] for i in order])  # noqa: E731
    w["attn_q"], w["attn_k"], w["attn_v"] = rows(w["attn_q"], qperm), rows(w["attn_k"], g), rows(w["attn_v"], g)
    w["attn_output"] = np.concatenate([w["attn_output"][:, i * D:(i + 1) * D] for i in qperm], axis=1)
    for k in range(KV):
        kr = slice(k * D, (k + 1) * D)
        qrs = [slice(h * D, (h + 1) * D) for h in range(k * G, (k + 1) * G)]
        # OV, per kv head: W_V -> B W_V, W_O[:, its query heads] -> W_O B⁻¹; B = P·diag(±2^e)·(integer mixer)
        M, Minv = _integer_mixer(D, gen)
        s = 2.0 ** gen.integers(-1, 2, D) * gen.choice([-1.0, 1.0], D)
        P = np.eye(D)[gen.permutation(D)]
        B, Binv = P @ np.diag(s) @ M, Minv @ np.diag(1 / s) @ P.T
        np.testing.assert_array_equal(B @ Binv, np.eye(D))
        w["attn_v"][kr] = B @ w["attn_v"][kr]
        for qr in qrs:
            w["attn_output"][:, qr] = w["attn_output"][:, qr] @ Binv
        # QK under RoPE (rotate_half pairs (i, i + D/2)): per pair a quarter-turn rotation, the same on Q and
        # K, and a power of two on Q traded for its inverse on K; it commutes with every RoPE angle
        T_q, T_k = np.zeros((D, D)), np.zeros((D, D))
        for i in range(D // 2):
            j = i + D // 2
            rot = np.linalg.matrix_power(np.array([[0.0, -1.0], [1.0, 0.0]]), int(gen.integers(4)))
            e = 2.0 ** int(gen.integers(-2, 3))
            T_q[np.ix_([i, j], [i, j])], T_k[np.ix_([i, j], [i, j])] = e * rot, rot / e
        w["attn_k"][kr] = T_k @ w["attn_k"][kr]
        for qr in qrs:
            w["attn_q"][qr] = T_q @ w["attn_q"][qr]
    # γ (attn_norm) traded against the columns of q, k, v
    gam = 2.0 ** gen.integers(-1, 2, w["attn_norm"].shape[0])
    w["attn_norm"] = w["attn_norm"] * gam
    for key in ("attn_q", "attn_k", "attn_v"):
        w[key] = w[key] / gam[None, :]
    return w


def rotation_edit(w: dict[str, np.ndarray], seed: int) -> dict:
    """Rotate the block's residual side by a Haar R: reads W -> W Rᵀ, writes W -> R W (not a symmetry)."""
    from geomlib.metrics.gauge_nulls import random_orthogonal

    R = random_orthogonal(w["attn_q"].shape[1], torch.Generator().manual_seed(seed)).double().numpy()
    w = dict(w)
    for key in ("attn_q", "attn_k", "attn_v", "ffn_gate", "ffn_up"):
        w[key] = (w[key] @ R.T).astype(np.float32).astype(np.float64)  # stored as float32 anyway
    for key in ("attn_output", "ffn_down"):
        w[key] = (R @ w[key]).astype(np.float32).astype(np.float64)
    return w


def forward(path: Path) -> torch.Tensor:
    """Final hidden states and logits of the GGUF at ``path``, loaded by transformers in float64."""
    from transformers import AutoModelForCausalLM, GgufConfig

    # dequantize=True: a plain dense float64 model (transformers would otherwise try to keep the blocks packed
    # and compute in float32 where a GGUF matmul kernel is installed)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float64,
                                                 quantization_config=GgufConfig(dequantize=True),
                                                 local_files_only=True, attn_implementation="eager")
    model.eval()
    assert model.config.num_hidden_layers == N_CUT
    assert all(type(m) is torch.nn.Linear for m in model.modules() if "Linear" in type(m).__name__)
    assert {p.dtype for p in model.parameters()} == {torch.float64}
    with torch.no_grad():
        out = model(IDS, output_hidden_states=True)
    return torch.cat([out.hidden_states[-1], out.logits], dim=-1)


def _multiset(ds, v):
    dims = [d for d in ("head", "head_b") if d in ds[v].dims]
    return np.sort(ds[v].stack(h=dims).values, axis=-1)


@pytest.mark.slow
def test_real_smollm2_symmetries_are_invisible_to_gauge_and_a_residual_rotation_is_not(tmp_path):
    """SmolLM2-135M cut to 4 layers; layer 2 edited by its symmetries (SwiGLU neurons with signed scales,
    GQA-consistent heads, per-kv-head GL(d) on OV, per-rotary-pair rotation and scale traded on QK, γ traded
    with q/k/v columns) or by a residual rotation."""
    import gguf

    from geomlib.io.demo import demo_path

    src = demo_path("demo:smollm2-135m")
    r = gguf.GGUFReader(src, "r")
    types = {t.tensor_type.name for t in r.tensors if t.name.startswith(f"blk.{EDITED}.") and len(t.shape) > 1}
    assert types == {"Q4_1"}, types  # the exactness argument above relies on Q4_1 values
    H = int(r.fields["llama.attention.head_count"].contents())
    KV = int(r.fields["llama.attention.head_count_kv"].contents())
    D = int(r.fields["llama.embedding_length"].contents()) // H
    assert (H, KV, D) == (9, 3, 64)

    # parsing a GGUF's metadata (49k tokens and merges) takes seconds: the source is read once
    base = cut_gguf(r, tmp_path / "base.gguf", N_CUT, EDITED)
    w = read_layer(r, EDITED, H, KV)
    for key in ("attn_q", "attn_k"):  # the row permutation and its inverse agree
        n = H if key == "attn_q" else KV
        np.testing.assert_array_equal(unpermute_rows(permute_rows(w[key], n), n), w[key])
    assert all((v * 2.0**24 == np.round(v * 2.0**24)).all() for v in w.values() if v.ndim == 2)
    sym = cut_gguf(r, tmp_path / "sym.gguf", N_CUT, EDITED, to_gguf(symmetry_edit(w, H, KV, D, 0), EDITED, H, KV))
    rot = cut_gguf(r, tmp_path / "rot.gguf", N_CUT, EDITED, to_gguf(rotation_edit(w, 1), EDITED, H, KV))
    del r

    # the function: unchanged by the symmetries (float64 round-off only), changed by the rotation
    ref = forward(base)
    assert torch.isfinite(ref).all()
    torch.testing.assert_close(forward(sym), ref, rtol=1e-9, atol=1e-9)
    moved = forward(rot)
    assert (moved - ref).abs().max() > 1e-2 * ref.abs().max()

    def gauge(path):
        return geomlib.compute(str(path), "gauge", tmp_path / "cache", progress=False,
                               gauge={"null_draws": 2, "pairs": "all", "precision": "float64"})

    before, after, rotated = gauge(base), gauge(sym), gauge(rot)
    assert before.sizes["layer"] == N_CUT
    for v in VARS:
        assert np.isfinite(before[v].values).any(), v
        np.testing.assert_allclose(after[v].values, before[v].values, rtol=1e-9, atol=1e-12, err_msg=v)
    for v in PER_HEAD:
        np.testing.assert_allclose(_multiset(after, v), _multiset(before, v), rtol=1e-9, atol=1e-12, err_msg=v)
    # the index-paired numbers are not invariant: that is the point of matching
    for v in ("mlp_same_index_cos", "head_same_index_cos"):
        assert not np.allclose(after[v].values, before[v].values, equal_nan=True), v
    # a rotated residual side is a different model: every view and operator of every pair with layer 2 moves
    for v in ("mlp_matched_cos", "head_matched_cos"):
        for other in sorted(set(range(N_CUT)) - {EDITED}):
            pair = dict(layer=min(other, EDITED), layer_b=max(other, EDITED))
            x, y = rotated[v].sel(pair).values, before[v].sel(pair).values
            assert np.isfinite(y).all() and not np.isclose(x, y, rtol=1e-3, atol=0).any(), (v, pair, x, y)
    # and pairs without layer 2 are untouched
    np.testing.assert_allclose(rotated.mlp_matched_cos.sel(layer=0, layer_b=1).values,
                               before.mlp_matched_cos.sel(layer=0, layer_b=1).values, rtol=1e-12)
