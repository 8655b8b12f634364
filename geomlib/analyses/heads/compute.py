"""Per-head operator geometry (seeds 001 and 002) for every (layer, layer_b, head), streamed.

For each head and layer the QK operator ``g = W_Qᵀ W_K`` and the OV operator
``W_O W_V`` (hidden x hidden, rank ≤ d) are handled in factored form
(:mod:`geomlib.metrics.operators`); no hidden x hidden matrix is ever formed.

Pass 1 reads one layer at a time and keeps its reduced spectra (singular
values, signed eigenvalues of the symmetric part, top-k eigenvectors).  Pass 2
computes the all-pairs operator gram ⟨g_L, g_L'⟩ holding as many layers'
factors as the memory budget allows and streaming the others past them:
O(L² H d² hidden) work.  Everything else is derived from the reduced spectra.
"""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from ...metrics.operators import (
    head_factors,
    operator_gram,
    operator_spectrum,
    principal_cosines,
    rescale_fit,
    sign_agreement,
    spectrum_shape,
    vector_cos,
)
from ...metrics.similarity import cos_from_gram
from ...model.checkpoint import Checkpoint
from ...store.provenance import provenance
from ..base import RunContext
from ..concurrent import TaskRunner, one_torch_thread
from ..params import Params, compute_dtype
from ..streaming import layers_within, n_pairs, pairs
from . import OPERATORS, operators_of

NULL_METRICS = ("cos", "shape_cos", "rescale_resid", "pa_mean", "pa_min", "top1_overlap", "sign_agree")


#: per-head work runs a layer per thread while one layer's attention in float64 is at most this many bytes
#: (Qwen3-0.6B: 50 MB; Qwen3-4B: 210 MB, computed a layer at a time on all threads)
CONCURRENT_LAYER_BYTES = 128 * 2**20


def topk_grid(two_d: int) -> list[int]:
    """Seed 001's top-k ladder 2, 4, 8, ... capped at 2d (2d itself included)."""
    grid, t = [], 2
    while t < two_d:
        grid.append(t)
        t *= 2
    return grid + [two_d]


def _factors(ckpt: Checkpoint, w: dict, kind: str):
    return head_factors(w, ckpt.n_heads, ckpt.n_kv_heads, ckpt.head_dim, kind)


def _usable_operators(L: int, w: dict, kinds: list[str], warn) -> list[str]:
    """The operators of layer ``L`` whose families are all in ``w`` and finite; a warning for each other one.

    One finite scan per family (O(layer)): the spectra's Cholesky, eigh and SVD raise on NaN or Inf, and an
    operator's values depend on nothing but its own two families, so the other operator keeps its values.
    """
    finite = {f: bool(torch.isfinite(t).all()) for f, t in w.items()}
    usable = []
    for kind in kinds:
        missing = [f for f in OPERATORS[kind] if f not in w]
        bad = [f for f in OPERATORS[kind] if not finite.get(f, True)]
        if missing:
            warn(f"layer {L} has no {'/'.join(missing)}: its per-head {kind.upper()} values are NaN")
        elif bad:
            warn(f"layer {L} {'/'.join(bad)} has NaN or Inf weights: its per-head {kind.upper()} values are NaN")
        else:
            usable.append(kind)
    return usable


def _pairwise(n: int, fn) -> np.ndarray:
    """Stack ``fn(L)`` -> (n, ...) over L into (n, n, ...)."""
    return np.stack([fn(L) for L in range(n)])


def _operator_arrays(ckpt: Checkpoint, params: Params, ctx: RunContext) -> dict:
    dev = ctx.device
    n, H, d = ckpt.n_layers, ckpt.n_heads, ckpt.head_dim
    kinds = operators_of(ckpt.families)
    fams = sorted({f for k in kinds for f in OPERATORS[k]})
    k = params.k
    red = {kind: {"sv": np.full((n, H, d), np.nan), "eig": np.full((n, H, 2 * d), np.nan),
                  "gap": np.full((n, H), np.nan), "frac": np.full((n, H), np.nan),
                  "vecs": torch.full((n, H, min(k, 2 * d), ckpt.hidden), math.nan, dtype=torch.float64)}
           for kind in kinds}
    # per (operator, layer): False where the layer lacks a family of the operator or holds a NaN or Inf in one
    present = {kind: [False] * n for kind in kinds}

    def spectra(L: int, w: dict, todo: list[str]) -> None:
        for kind in todo:
            s = operator_spectrum(*_factors(ckpt, w, kind), k=k)
            r = red[kind]
            r["sv"][L], r["eig"][L] = s["singvals"].cpu().numpy(), s["sym_eigs"].cpu().numpy()
            r["gap"][L], r["frac"][L] = s["eigengap"].cpu().numpy(), s["frac_pos"].cpu().numpy()
            r["vecs"][L] = s["eigvecs"].cpu()

    # layers' spectra are independent: one layer per worker, torch at one thread each (analyses.concurrent),
    # while the float64 layers the workers and the reading thread hold stay small
    layer64 = sum(math.prod(ckpt.block_axis(f)) for f in fams) * 8
    workers = max(1, torch.get_num_threads()) if layer64 <= CONCURRENT_LAYER_BYTES else 1
    bar = ctx.bar(total=n, desc="per-head spectra", unit="layer")
    with one_torch_thread(workers > 1), TaskRunner(workers, ctx.warn, on_group_done=lambda: bar.update(1)) as run:
        for L in range(n):
            w = ckpt.layer(L, fams, device=dev)
            todo = _usable_operators(L, w, kinds, ctx.warn)
            for kind in todo:
                present[kind][L] = True
            if not todo:
                bar.update(1)
                continue
            run.submit([(partial(spectra, L, w, todo), False)])
    bar.close()
    # pass 2: the all-pairs gram, a chunk of layers held, the rest streamed past
    gram = {kind: np.full((n, n, H), np.nan) for kind in kinds}
    cdt = compute_dtype(params)
    per_layer = sum(math.prod(ckpt.block_axis(f)) for f in fams) * cdt.itemsize  # bytes of one layer
    ok = [L for L in range(n) if any(present[kind][L] for kind in kinds)]
    chunk = layers_within(params.block_mib * 2**20, 2 * per_layer, len(ok))

    def load(L: int) -> dict:
        # float32: each Gram entry is a length-hidden·d² sum of float32 products, relative 1e-6 of the head norms
        w = ckpt.layer(L, fams, dtype=cdt, device=dev)
        return {kind: _factors(ckpt, w, kind) for kind in kinds if present[kind][L]}

    def pair_gram(L1: int, f1: dict, L2: int, f2: dict) -> None:
        for kind in kinds:
            if kind in f1 and kind in f2:  # an operator with a non-finite factor keeps its NaN (see pass 1)
                g = operator_gram(*f1[kind], *f2[kind]).double().cpu().numpy()
                gram[kind][L1, L2] = gram[kind][L2, L1] = g

    bar = ctx.bar(total=n_pairs(len(ok), diagonal=True), desc="operator gram", unit="pair")
    with one_torch_thread(workers > 1), TaskRunner(workers, ctx.warn, in_flight=2 * workers,
                                                   on_group_done=lambda: bar.update(1)) as run:
        for L1, f1, L2, f2 in pairs(ok, chunk, load, diagonal=True):
            run.submit([(partial(pair_gram, L1, f1, L2, f2), False)])
    bar.close()
    out = {}
    for kind in kinds:
        r, G = red[kind], gram[kind]
        diag = np.einsum("llh->lh", G)
        cos = cos_from_gram(torch.from_numpy(G).permute(2, 0, 1)).permute(1, 2, 0).numpy()
        with np.errstate(invalid="ignore", divide="ignore"):
            T = G / np.where(diag > 0, diag, np.nan)[None, :, :]  # optimal scalar of g_L onto g_{layer_b}
        vec = r["vecs"]
        good = np.flatnonzero(present[kind])  # layers with eigenvectors: LAPACK's SVD raises on the NaN of others
        # principal angles of every layer pair: seconds at 8B scale, so with its own bar
        vec_good = vec if len(good) == n else vec[torch.from_numpy(good)]  # one copy, only when a layer is bad
        pa = np.full((n, n, H, vec.shape[2]), np.nan)
        for L in ctx.bar(good.tolist(), desc=f"{kind} principal angles", unit="layer"):
            pa[L, good] = principal_cosines(vec[L][None], vec_good).numpy()  # each (len(good), H, k)
        top1 = torch.einsum("ahx,bhx->abh", vec[:, :, 0], vec[:, :, 0]).numpy() ** 2
        lam = torch.from_numpy(r["eig"])
        grid = topk_grid(2 * d)
        agree = np.stack([_pairwise(n, lambda L, t=t: sign_agreement(lam[L][None], lam, t).numpy()) for t in grid],
                         axis=-1)
        bad = ~np.asarray(present[kind])
        agree[bad], agree[:, bad] = np.nan, np.nan  # NaN signs compare unequal: a silent 0 otherwise
        sv = torch.from_numpy(r["sv"])
        shape = spectrum_shape(sv)
        shape_cos = _pairwise(n, lambda L: vector_cos(shape[L][None], shape).numpy())
        fit = [rescale_fit(sv[L][None].expand(n, -1, -1), sv) for L in range(n)]
        cross = np.full(n, np.nan)
        if H > 1:
            iu = np.triu_indices(H, 1)
            for L in range(n):
                c = vector_cos(shape[L][:, None], shape[L][None, :]).numpy()
                cross[L] = c[iu].mean()
        out.update({
            f"{kind}_gram": G,
            f"{kind}_cos": cos,
            f"{kind}_T": T,
            f"{kind}_resid": np.sqrt(np.clip(1 - cos**2, 0, 1)),
            f"{kind}_sym_eigs": r["eig"],
            f"{kind}_frac_pos": r["frac"],
            f"{kind}_eigengap": r["gap"],
            f"{kind}_sign_agree": agree,
            f"{kind}_pa_mean": pa.mean(axis=-1),
            f"{kind}_pa_min": pa.min(axis=-1),
            f"{kind}_top1_overlap": top1,
            f"{kind}_singvals": r["sv"],
            f"{kind}_shape_cos": shape_cos,
            f"{kind}_rescale_T": np.stack([t.numpy() for t, _ in fit]),
            f"{kind}_rescale_resid": np.stack([q.numpy() for _, q in fit]),
            f"{kind}_cross_head_shape_cos": cross,
        })
    out["topk"] = topk_grid(2 * d)
    out["kinds"] = kinds
    return out


def _nulls(ckpt: Checkpoint, params: Params, dev: torch.device) -> dict:
    """Null distributions of the pairwise metrics for random Gaussian heads of the model's shapes."""
    d, hidden, k = ckpt.head_dim, ckpt.hidden, params.k
    out = {}
    for i, kind in enumerate(operators_of(ckpt.families)):
        mean = np.full(len(NULL_METRICS), np.nan)
        std = np.full(len(NULL_METRICS), np.nan)
        if params.null_draws:
            gen = torch.Generator().manual_seed(params.seed + 1000 * i)
            B = params.null_draws  # one random head per draw, batched as heads

            def draw():
                return [torch.randn(B, hidden, d, generator=gen, dtype=torch.float64).to(dev) for _ in range(2)]

            (P1, Q1), (P2, Q2) = draw(), draw()
            g12 = operator_gram(P1, Q1, P2, Q2)
            c = g12 / (operator_gram(P1, Q1, P1, Q1) * operator_gram(P2, Q2, P2, Q2)).sqrt()
            s1, s2 = operator_spectrum(P1, Q1, k), operator_spectrum(P2, Q2, k)
            sh1, sh2 = spectrum_shape(s1["singvals"]), spectrum_shape(s2["singvals"])
            _, rr = rescale_fit(s1["singvals"], s2["singvals"])
            pc = principal_cosines(s1["eigvecs"], s2["eigvecs"])
            vals = {
                "cos": c,
                "shape_cos": vector_cos(sh1, sh2),
                "rescale_resid": rr,
                "pa_mean": pc.mean(-1),
                "pa_min": pc.min(-1).values,
                "top1_overlap": (s1["eigvecs"][:, 0] * s2["eigvecs"][:, 0]).sum(-1) ** 2,
                "sign_agree": sign_agreement(s1["sym_eigs"], s2["sym_eigs"], min(k, 2 * d)),
            }
            for j, m in enumerate(NULL_METRICS):
                v = vals[m].cpu().double()
                mean[j], std[j] = float(v.mean()), float(v.std())
        out[f"{kind}_null_mean"], out[f"{kind}_null_std"] = mean, std
    return out


def _correlations(arr: dict, entropy: np.ndarray | None) -> dict:
    out = {}
    for kind in arr["kinds"]:
        n = arr[f"{kind}_rescale_T"].shape[0]
        corr_T = np.full(n, np.nan)
        corr_op = np.nan
        if entropy is not None:
            e = entropy.reshape(-1)
            for a in range(n):
                t = arr[f"{kind}_rescale_T"][:, a, :].reshape(-1)
                ok = np.isfinite(t) & np.isfinite(e)
                if ok.sum() > 2 and np.std(t[ok]) > 0 and np.std(e[ok]) > 0:
                    corr_T[a] = np.corrcoef(t[ok], e[ok])[0, 1]
            op = arr[f"{kind}_singvals"][:, :, 0].reshape(-1)
            ok = np.isfinite(op) & np.isfinite(e)
            if ok.sum() > 2 and np.std(op[ok]) > 0 and np.std(e[ok]) > 0:
                corr_op = float(np.corrcoef(op[ok], e[ok])[0, 1])
        out[f"{kind}_corr_T_entropy"] = corr_T
        out[f"{kind}_corr_opnorm_entropy"] = corr_op
    return out


_DESC = {
    "gram": "⟨M_L^h, M_L'^h⟩_F of the per-head operator (QK: W_Qᵀ W_K; OV: W_O W_V), from d x d factors",
    "cos": "gram / √(gram_LL gram_L'L') (normalized by the gram diagonal, as seed 001's note requires)",
    "T": "gram / gram_L'L': the optimal scalar of M_L onto M_{layer_b}",
    "resid": "√(1 − cos²): the residual fraction left by that scalar",
    "sym_eigs": "eigenvalues of (M + Mᵀ)/2 on span[P Q], signed, sorted by |λ| descending",
    "frac_pos": "fraction of positive eigenvalues of the symmetric part: 1/2 by construction when the factors "
                "have full rank (sym(P Qᵀ) has inertia (d, d)), so not a finding",
    "eigengap": "(|λ_k| − |λ_{k+1}|)/|λ_k| at the top-k boundary; small values mean the top-k subspace cuts "
                "a near-degenerate block and its principal angles are not well defined",
    "sign_agree": "fraction of the top-k eigenvalues whose signs agree between layer and layer_b, pairing by "
                  "magnitude rank (seed 001's pairing, which is arbitrary)",
    "pa_mean": "mean cosine of the principal angles between the top-k eigenvector subspaces",
    "pa_min": "smallest such cosine",
    "top1_overlap": "(u₁ · u₁')² of the leading eigenvectors",
    "singvals": "singular values of M (from the 2d x 2d core), descending",
    "shape_cos": "cosine between the spectra shapes σ/σ_max of layer and layer_b",
    "rescale_T": "scalar T minimising ‖σ_L − T σ_{layer_b}‖ (seed 002, anchor = layer_b)",
    "rescale_resid": "‖σ_L − T σ_{layer_b}‖ / ‖σ_L‖",
    "cross_head_shape_cos": "mean cosine of spectrum shapes between pairs of heads of the layer",
    "corr_T_entropy": "Pearson correlation over (layer, head) of rescale_T (anchor = layer_b) with attn_entropy",
    "corr_opnorm_entropy": "Pearson correlation over (layer, head) of the operator norm σ_max with attn_entropy",
    "null_mean": "mean over seeded random-Gaussian heads of the model's shapes (pairs of independent heads)",
    "null_std": "standard deviation over those draws",
}


#: per-head variables and their dims after the leading ``operator`` dim
_LLH, _LH = ("layer", "layer_b", "head"), ("layer", "head")
_VARS = {
    **{v: _LLH for v in ("gram", "cos", "T", "resid", "pa_mean", "pa_min", "top1_overlap", "shape_cos",
                         "rescale_T", "rescale_resid")},
    "sym_eigs": ("layer", "head", "eig"),
    "singvals": ("layer", "head", "rank"),
    "frac_pos": _LH,
    "eigengap": _LH,
    "sign_agree": _LLH + ("topk",),
    "cross_head_shape_cos": ("layer",),
    "corr_T_entropy": ("layer_b",),
    "corr_opnorm_entropy": (),
    "null_mean": ("metric",),
    "null_std": ("metric",),
}


def run(ckpt: Checkpoint, params: Params, ctx: RunContext) -> xr.Dataset:
    """The per-head analysis of ``ckpt`` as a Dataset; per-head variables are ``head_*`` over ``operator``."""
    with torch.no_grad():
        arr = _operator_arrays(ckpt, params, ctx)
        arr.update(_nulls(ckpt, params, ctx.device))
    entropy, windows, edges, ent_meta = None, None, None, {}
    if params.forward_pass:
        from ...model.forward import attention_entropy

        res = attention_entropy(ckpt, text=Path(params.text) if params.text else None, device=ctx.device,
                                max_tokens=params.max_tokens, progress=ctx.progress, max_memory=params.max_memory)
        entropy = np.asarray(res.values, dtype=np.float64)
        windows, edges = np.asarray(res.windows, dtype=np.float64), np.asarray(res.window_edges, dtype=np.int64)
        ent_meta = res.attrs()  # entropy_* keys, netCDF-safe
    arr.update(_correlations(arr, entropy))
    n, H, d = ckpt.n_layers, ckpt.n_heads, ckpt.head_dim
    ops = arr["kinds"]
    data = {f"head_{v}": (("operator",) + dims, np.stack([arr[f"{op}_{v}"] for op in ops]))
            for v, dims in _VARS.items()}
    data["attn_entropy"] = (_LH, entropy if entropy is not None else np.full((n, H), np.nan))
    ds = xr.Dataset(data, coords={
        "operator": list(ops), "layer": np.arange(n), "layer_b": np.arange(n), "head": np.arange(H),
        "eig": np.arange(2 * d), "rank": np.arange(d), "topk": np.array(arr["topk"]), "metric": list(NULL_METRICS)})
    if windows is not None:
        # per text window: what the phases' bootstrap resamples (no forward pass, no variable: nothing to resample)
        ds["attn_entropy_windows"] = (("window", "layer", "head"), windows)
        ds = ds.assign_coords(window=np.arange(len(edges) - 1),
                              window_start=("window", edges[:-1]), window_tokens=("window", np.diff(edges)))
        ds["attn_entropy_windows"].attrs["description"] = (
            "attn_entropy averaged over the query positions of each contiguous text window instead of all of "
            "them (window_start, window_tokens; one forward pass, so every query still sees all earlier tokens); "
            "the window means weighted by window_tokens give attn_entropy back")
    for v in _VARS:
        ds[f"head_{v}"].attrs["description"] = _DESC[v]
    skipped = ctx.skipped.get("attn_entropy")
    ds["attn_entropy"].attrs["description"] = (
        "mean over query positions of the Shannon entropy (nats) of each head's attention distribution, "
        "from an eager forward pass over the text in attrs" if entropy is not None else
        f"not computed ({skipped or 'forward_pass=False'}): NaN")
    ds.attrs.update(provenance(ckpt, "heads", params, ctx))
    ds.attrs.update({
        "operators": ",".join(ops),
        "eigvec_k": params.k,
        "frac_pos_note": "the fraction of positive eigenvalues of sym(W_Qᵀ W_K) is 1/2 by construction when W_Q "
                         "and W_K have full rank; seed 001 printed it as a finding",
        "sign_agree_note": "sign agreement pairs eigenvalues by magnitude rank, which is arbitrary",
        **ent_meta,
    })
    return ds
