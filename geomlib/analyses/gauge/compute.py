"""Matched neurons and heads between layers, streamed: O(1) layers for adjacent pairs, a chunk for all pairs.

For each pair (L, L') the MLP neurons of L' are matched to those of L under
the model's neuron group (:func:`~geomlib.metrics.matching.match_neurons`) and
its heads under the GQA-consistent head group with per-head GL(d)
(:func:`~geomlib.metrics.head_matching.match_heads`), after folding the norm gains
into the matrices they feed.  Adjacent pairs also get the residual-rotation
null: the same matching after a Haar rotation of the residual side of L'.
Every streamed pair L < L' also gets the Q-, K- and V-composition scores of
L's heads into L''s (:func:`~geomlib.metrics.composition.composition_scores`).
"""

from __future__ import annotations

import math
import warnings
from functools import partial
from typing import Iterator

import numpy as np
import torch
import xarray as xr

from ...arch.symmetry import symmetry_group
from ...metrics.composition import KINDS, composition_baseline, composition_null, composition_scores
from ...metrics.gauge_nulls import residual_rotation_null
from ...metrics.head_matching import match_heads
from ...metrics.matching import fold_norms, fold_qk_norms, match_neurons
from ...metrics.nulls import pooled_std
from ...model.checkpoint import Checkpoint
from ...store.provenance import provenance
from ..base import PAIRING, RunContext
from ..concurrent import TaskRunner, one_torch_thread
from ..heads import OPERATORS, operators_of
from ..params import Params, compute_dtype
from ..streaming import layers_within, n_pairs, pairs

MLP_FAMILIES = ("gate_proj", "up_proj", "down_proj")
ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
#: ``pairs="auto"`` matches every pair when the similarity products of all of them stay under this many
#: multiply-adds (n_pairs · I² · hidden): a few seconds, e.g. MiniLM-L6 (1.4e10); SmolLM2-135M (5.9e11, about
#: 2 min) and anything deeper or wider get adjacent pairs, the all-pairs matrices on request (pairs="all")
AUTO_ALL_PAIRS_WORK = 1e11
#: bytes of the (I, I) float64 neuron costs that concurrent neuron matchings may hold at once (Qwen3-0.6B's
#: 3072 neurons: 75 MB each, one per thread; Qwen3-4B's 9728: 757 MB, the pair's pieces run in order)
TASK_COST_BYTES = 512 * 2**20


def mlp_views(families, scale: str) -> list[str]:
    """The matched quantities of an MLP under ``scale`` (see :mod:`geomlib.metrics.matching`), then their mean."""
    gate = ["gate"] if "gate_proj" in families else []
    return gate + (["up_down"] if scale == "signed" else ["up", "down"]) + ["mean"]


def split_layer(w: dict) -> tuple[dict, dict]:
    """One layer's weights as (MLP families, attention families); norm gains and the rest are dropped."""
    mlp = {f: t for f, t in w.items() if f in MLP_FAMILIES}
    att = {f: t for f, t in w.items() if f in ATTENTION}
    return mlp, att


def task_workers(ckpt: Checkpoint, threads: int) -> int:
    """Pair pieces run at once: one per torch thread, while each may hold a neuron matching's cost.

    A neuron matching holds a float64 (I, I) cost for ``linear_sum_assignment``.  When one per thread
    fits in :data:`TASK_COST_BYTES`, every thread runs pieces at one torch thread each; otherwise the
    matchings, the bulk of the work, run in order on all threads (1).
    """
    if threads <= 1:
        return 1
    per = 8 * float(ckpt.intermediate or 0) ** 2
    return 1 if per and TASK_COST_BYTES // per < threads else threads


def run_pairs(ckpt: Checkpoint, ctx: RunContext, stream: Iterator[tuple], tasks, total: int, desc: str) -> None:
    """Each streamed pair ``(L1, a, L2, b)``'s pieces ``tasks(L1, L2, a, b)`` on :func:`task_workers` threads
    (torch at one thread each when several), with a progress bar of ``total`` pairs."""
    bar = ctx.bar(total=total, desc=desc, unit="pair")
    workers = task_workers(ckpt, torch.get_num_threads())
    with torch.no_grad(), one_torch_thread(workers > 1), \
            TaskRunner(workers, ctx.warn, on_group_done=lambda: bar.update(1)) as runner:
        for L1, a, L2, b in stream:
            runner.submit(tasks(L1, L2, a, b))
    bar.close()


def all_pairs_work(ckpt: Checkpoint) -> float:
    """Multiply-adds of the neuron similarities of every layer pair (the dominant cost of ``pairs="all"``)."""
    if "up_proj" not in ckpt.families:
        return 0.0
    return n_pairs(ckpt.n_layers, diagonal=False) * float(ckpt.intermediate) ** 2 * ckpt.hidden


def resolve_pairs(ckpt: Checkpoint, pairs: str) -> str:
    """``"adjacent"`` or ``"all"``; ``"auto"`` picks all pairs when :func:`all_pairs_work` is affordable."""
    if pairs != "auto":
        return pairs
    return "all" if all_pairs_work(ckpt) <= AUTO_ALL_PAIRS_WORK else "adjacent"


def head_backgrounds(h, op: str) -> tuple[float, float]:
    """Mean operator cos of ``h`` (a :class:`~geomlib.metrics.head_matching.HeadMatch`) over the head pairs of
    different indices (index-paired background) and over the pairs the matching did not pair (invariant one)."""
    H = h.perm.numel()
    diff = float(h.different_index[op].mean()) if h.different_index[op].numel() else math.nan
    off = torch.ones(H, H, dtype=torch.bool)
    off[torch.arange(H), h.perm] = False
    return diff, (float(h.cos[op][off].mean()) if H > 1 else math.nan)


def describe_group(group) -> str:
    """One line naming a :class:`~geomlib.arch.symmetry.SymmetryGroup` (the ``symmetry_group`` attribute)."""
    return (f"{group.model_type}: MLP neuron scale {group.mlp_neuron_scale}, heads {group.head_perm}, QK "
            f"{group.qk_group}, OV {group.ov_group}, norm folds "
            + (", ".join(f"{nf}->{'/'.join(fs)}" for nf, fs in group.norm_folds) or "none"))


def run(ckpt: Checkpoint, params: Params, ctx: RunContext) -> xr.Dataset:
    """The gauge analysis of ``ckpt`` as a Dataset."""
    n, H = ckpt.n_layers, ckpt.n_heads
    which = resolve_pairs(ckpt, params.pairs)
    group = symmetry_group(ckpt.arch, ckpt.config)
    has_mlp = all(f in ckpt.families for f in ("up_proj", "down_proj"))
    ops = operators_of(ckpt.families)
    views = mlp_views(ckpt.families, group.mlp_neuron_scale) if has_mlp else []
    norms = sorted({nf for nf, _ in group.norm_folds}) if params.fold_norms else []
    if params.fold_norms:
        norms += [f for f in ("q_norm", "k_norm") if f in ckpt.families]
    fams = [f for f in ckpt.families if f in MLP_FAMILIES or f in ATTENTION or f in norms]
    compose = all(f in ckpt.families for f in ATTENTION)
    cdt = compute_dtype(params)
    match_mlp = partial(match_neurons, scale=group.mlp_neuron_scale, compute_dtype=cdt)
    match_att = partial(match_heads, n_heads=H, n_kv_heads=ckpt.n_kv_heads, head_dim=ckpt.head_dim,
                        head_perm=group.head_perm, operators=tuple(ops), compute_dtype=cdt)
    compose_heads = partial(composition_scores, n_heads=H, n_kv_heads=ckpt.n_kv_heads, head_dim=ckpt.head_dim,
                            compute_dtype=cdt)

    nan = np.nan
    V, O, C = len(views), len(ops), len(KINDS) if compose else 0
    out = {
        "mlp_matched_cos": np.full((V, n, n), nan), "mlp_same_index_cos": np.full((V, n, n), nan),
        "mlp_frac_fixed": np.full((n, n), nan),
        "mlp_matched_null_mean": np.full((V, n), nan), "mlp_matched_null_std": np.full((V, n), nan),
        "head_matched_cos": np.full((O, n, n), nan), "head_same_index_cos": np.full((O, n, n), nan),
        "head_different_index_cos": np.full((O, n, n), nan), "head_unmatched_cos": np.full((O, n, n), nan),
        "head_assignment": np.full((n, n, H), -1, dtype=np.int64),
        "head_matched_null_mean": np.full((O, n), nan), "head_matched_null_std": np.full((O, n), nan),
        "head_matched": np.full((O, n, n, H), nan),
        "composition_score": np.full((C, n, n, H, H), nan),
    }
    finite = [True] * n

    def load(L: int) -> tuple[dict, dict]:
        # the compute dtype: half the memory of float64 layers; matched cosines are still summed in float64
        w = ckpt.layer(L, fams, dtype=cdt, device=ctx.device)
        # one scan per family, before the folds and the matchings: linear_sum_assignment and the SVDs raise on
        # NaN or Inf, and a matching pairs every unit of the layer, so one bad family touches all its values
        bad = [f for f, t in w.items() if not bool(torch.isfinite(t).all())]
        if bad:
            ctx.warn(f"layer {L} has NaN or Inf weights in {'/'.join(bad)}: its matched values are NaN")
            finite[L] = False
        if params.fold_norms:
            w = fold_qk_norms(fold_norms(w, group.norm_folds, ckpt.norm_offset), ckpt.head_dim, ckpt.norm_offset)
        return split_layer(w)

    def pair_stream() -> Iterator[tuple[int, tuple, int, tuple]]:
        if which == "all":
            per_layer = sum(math.prod(ckpt.block_axis(f)) for f in fams) * cdt.itemsize  # bytes of one layer
            yield from pairs(range(n), layers_within(params.block_mib * 2**20, per_layer, n), load, diagonal=False)
            return
        prev = load(0) if n else None
        for L in range(1, n):
            cur = load(L)
            yield L - 1, prev, L, cur
            prev = cur

    def mlp_task(L1: int, L2: int, a: tuple, b: tuple) -> None:
        m = match_mlp(a[0], b[0])
        for i, v in enumerate(views):
            out["mlp_matched_cos"][i, L1, L2] = out["mlp_matched_cos"][i, L2, L1] = m.matched_cos[v]
            out["mlp_same_index_cos"][i, L1, L2] = out["mlp_same_index_cos"][i, L2, L1] = m.same_index_cos[v]
        out["mlp_frac_fixed"][L1, L2] = out["mlp_frac_fixed"][L2, L1] = m.frac_fixed

    def heads_task(L1: int, L2: int, a: tuple, b: tuple) -> None:
        h = match_att(a[1], b[1])
        for i, op in enumerate(ops):
            out["head_matched_cos"][i, L1, L2] = out["head_matched_cos"][i, L2, L1] = h.matched_cos[op]
            out["head_same_index_cos"][i, L1, L2] = out["head_same_index_cos"][i, L2, L1] = h.same_index_cos[op]
            diff, bg = head_backgrounds(h, op)
            out["head_different_index_cos"][i, L1, L2] = out["head_different_index_cos"][i, L2, L1] = diff
            out["head_unmatched_cos"][i, L1, L2] = out["head_unmatched_cos"][i, L2, L1] = bg
        inv = torch.argsort(h.perm)  # the inverse matching: head j of L2 is matched to head inv[j] of L1
        out["head_assignment"][L1, L2] = h.perm.numpy()
        out["head_assignment"][L2, L1] = inv.numpy()
        for i, op in enumerate(ops):
            out["head_matched"][i, L1, L2] = h.matched[op].cpu().numpy()
            out["head_matched"][i, L2, L1] = h.matched[op][inv].cpu().numpy()

    def compose_task(L1: int, L2: int, a: tuple, b: tuple) -> None:
        comp = compose_heads(a[1], b[1])
        for i, k in enumerate(KINDS):
            out["composition_score"][i, L1, L2] = comp[k].cpu().numpy()

    def mlp_null_task(L1: int, a: tuple, b: tuple) -> None:
        band = residual_rotation_null(a[0], b[0], match_mlp, params.null_draws, params.seed + L1, cdt, quiet=False)
        for i, v in enumerate(views):
            out["mlp_matched_null_mean"][i, L1], out["mlp_matched_null_std"][i, L1] = band.mean[v], band.std[v]

    def heads_null_task(L1: int, a: tuple, b: tuple) -> None:
        band = residual_rotation_null(a[1], b[1], match_att, params.null_draws, params.seed + L1, cdt, quiet=False)
        for i, op in enumerate(ops):
            out["head_matched_null_mean"][i, L1] = band.mean[op]
            out["head_matched_null_std"][i, L1] = band.std[op]

    def tasks(L1: int, L2: int, a: tuple, b: tuple) -> list:
        """The pair's independent pieces, ``(fn, quiet)``: the nulls' warnings repeat the matchings'."""
        if not (finite[L1] and finite[L2]):
            return []  # NaN in, NaN out: the matchings would only warn
        todo = []
        null = L2 == L1 + 1 and params.null_draws
        # this order is the order in which the pieces' warnings are recorded
        if has_mlp:
            todo.append((partial(mlp_task, L1, L2, a, b), False))
        if ops:
            todo.append((partial(heads_task, L1, L2, a, b), False))
        if compose:
            todo.append((partial(compose_task, L1, L2, a, b), False))
        if ops and null:
            todo.append((partial(heads_null_task, L1, a, b), True))
        if has_mlp and null:
            todo.append((partial(mlp_null_task, L1, a, b), True))
        return todo

    total = n_pairs(n, diagonal=False) if which == "all" else max(n - 1, 0)
    run_pairs(ckpt, ctx, pair_stream(), tasks, total, "gauge matching")
    for L in range(n):  # a layer against itself: the identity matching, cos 1
        if finite[L]:
            for k in ("mlp_matched_cos", "mlp_same_index_cos", "head_matched_cos", "head_same_index_cos"):
                out[k][:, L, L] = 1.0  # an empty view or operator axis makes this a no-op
            out["mlp_frac_fixed"][L, L] = 1.0 if has_mlp else nan
            out["head_assignment"][L, L] = np.arange(H)
            out["head_matched"][:, L, L] = 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # pairs that were not streamed: all-NaN, mean NaN
        out["composition_mean"] = np.nanmean(out["composition_score"], axis=(3, 4))
    for stem in ("mlp_matched_null", "head_matched_null"):
        last = slice(0, max(n - 1, 0))  # pair (L, L+1) lives at layer L
        out[f"{stem}_std"][:, last] = pooled_std(out[f"{stem}_std"][:, last], out[f"{stem}_mean"][:, last],
                                                 params.null_draws)
    return _dataset(ckpt, params, ctx, out, views, ops, group, which, compose)


_DESC = {
    "mlp_matched_cos": "cosine of layer and layer_b's MLPs after matching layer_b's neurons to layer's (one "
                       "permutation for gate/up/down, plus the per-neuron sign/scale the activation allows; "
                       "gate: rows; up_down: the rank-1 maps down_i up_iᵀ; mean: their mean, what the matching "
                       "maximised); invariant to every symmetry of either layer",
    "mlp_same_index_cos": "the same quantities pairing neuron i with neuron i (index-paired, gauge-confounded)",
    "mlp_frac_fixed": "fraction of neurons the matching pairs with their own index",
    "mlp_matched_null_mean": "pair (layer, layer+1): mlp_matched_cos after a Haar rotation of layer+1's residual "
                             "side (keeps each layer's internal structure, destroys the shared residual basis)",
    "mlp_matched_null_std": "standard deviation of one rotation draw, pooled over the adjacent pairs: with "
                            "null_draws ≥ 2 the root mean of each pair's sample variance, with one draw von "
                            "Neumann's successive-difference estimate over pairs (wider when the null drifts with "
                            "depth); the Monte-Carlo error of a pair's null_mean is this over √null_draws",
    "head_matched_cos": "mean over heads of the operator cosine after matching layer_b's heads to layer's (joint QK "
                        "and OV assignment, GQA-consistent); invariant to each head's GL(d) and to head order",
    "head_same_index_cos": "mean operator cosine pairing head h with head h (index-paired)",
    "head_different_index_cos": "mean operator cosine over pairs of heads with different indices (index-paired "
                                "background, next to head_same_index_cos)",
    "head_unmatched_cos": "mean operator cosine over the pairs of heads the matching did not pair (the invariant "
                          "background of head_matched_cos)",
    "head_assignment": "head h of layer is matched to head head_assignment[layer, layer_b, h] of layer_b (-1: none)",
    "head_matched_null_mean": "pair (layer, layer+1): head_matched_cos after a Haar rotation of layer+1's residual "
                              "side",
    "head_matched_null_std": "standard deviation of one rotation draw, pooled over the adjacent pairs (as "
                             "mlp_matched_null_std)",
    "head_matched": "operator cosine of head h of layer with the head of layer_b it is matched to (the per-head "
                    "terms of head_matched_cos)",
    "composition_score": "Q-, K-, V-composition score (Elhage et al. 2021) of head h's OV circuit in the earlier layer "
                   "into head head_b's QK (q: query side, k: key side) or OV (v) circuit in the later layer_b, "
                   "norm gains folded; invariant to each head's GL(d); NaN unless layer < layer_b and the pair was "
                   "streamed. Unrelated heads score about the composition_baseline attribute (1/√hidden, RMS)",
    "composition_mean": "mean composition score over all (head, head_b) pairs of the layer pair",
}


def _dataset(ckpt, params, ctx, out, views, ops, group, which, compose) -> xr.Dataset:
    VLL, OLL = ("mlp_view", "layer", "layer_b"), ("operator", "layer", "layer_b")
    dims = {"mlp_matched_cos": VLL, "mlp_same_index_cos": VLL, "mlp_frac_fixed": ("layer", "layer_b"),
            "mlp_matched_null_mean": ("mlp_view", "layer"), "mlp_matched_null_std": ("mlp_view", "layer"),
            "head_matched_cos": OLL, "head_same_index_cos": OLL, "head_different_index_cos": OLL,
            "head_unmatched_cos": OLL,
            "head_assignment": ("layer", "layer_b", "head"),
            "head_matched_null_mean": ("operator", "layer"), "head_matched_null_std": ("operator", "layer"),
            "head_matched": OLL + ("head",),
            "composition_score": ("composition", "layer", "layer_b", "head", "head_b"),
            "composition_mean": ("composition", "layer", "layer_b")}
    n = ckpt.n_layers
    ds = xr.Dataset({k: (dims[k], v) for k, v in out.items()},
                    coords={"mlp_view": views, "operator": list(ops), "layer": np.arange(n),
                            "layer_b": np.arange(n), "head": np.arange(ckpt.n_heads),
                            "head_b": np.arange(ckpt.n_heads), "composition": list(KINDS) if compose else []})
    for k, text in _DESC.items():
        ds[k].attrs["description"] = text
    for k in ("mlp_same_index_cos", "head_same_index_cos", "head_different_index_cos"):
        ds[k].attrs["pairing"] = PAIRING["index"]
    ds.attrs.update(provenance(ckpt, "gauge", params, ctx))
    ds.attrs.update({
        "symmetry_group": describe_group(group),
        "symmetry_notes": group.notes,
        "gauge_operators": ",".join(op for op in OPERATORS if op in ops),
        "gauge_pairs": which,
        "gauge_qk_norm": "folded" if params.fold_norms and "q_norm" in ckpt.families else
                         ("present, not folded" if "q_norm" in ckpt.families else "none"),
    })
    if compose:
        hidden = ckpt.hidden
        m, se = composition_null(hidden, ckpt.head_dim, draws=256, seed=params.seed,
                                 compute_dtype=compute_dtype(params))
        ds.attrs.update({"composition_baseline": composition_baseline(hidden), "composition_null_mean": m,
                         "composition_null_stderr": se})
    if params.pairs == "auto" and which == "adjacent":
        ds.attrs["gauge_pairs_note"] = (f"adjacent pairs only (all pairs: {all_pairs_work(ckpt):.2g} multiply-adds "
                                        f"> {AUTO_ALL_PAIRS_WORK:.0e}; ask for them with pairs='all')")
    return ds
