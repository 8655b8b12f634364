"""Weight-level geometry of a whole checkpoint, streamed layer by layer.

Two passes over the file, each holding O(1) layers (or O(layers x block)):

1. **per-layer pass** (:func:`_adjacent_pass`): norms, adjacent-pair residual
   statistics, adjacent aligned cosines and their null baselines, norm-gain
   vectors.  Only the previous layer is kept, in the narrowest dtype that holds
   its values exactly.
2. **Gram pass** (:func:`_gram_pass`): the all-pairs Frobenius cosine of each
   family from an L x L Gram accumulated over row blocks read from every layer.

With ``cos_pairs="adjacent"`` the Gram pass is skipped (one read of the file;
the cosine of non-adjacent pairs is NaN).  Optionally (``aligned_pairs="all"``) a third pass computes the aligned cosine
of every pair, holding as many layers as the memory budget allows.

The result is a dict of plain arrays; :func:`build_dataset` attaches names and
coordinates once.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
import xarray as xr

from ...arch.families import FAMILIES, MATRIX_FAMILIES, NORM_FAMILIES, RESIDUAL_AXIS
from ...errors import GeomlibWarning, InvalidArgumentError
from ...metrics import (
    NULL_KINDS,
    aligned_cos,
    cos_from_gram,
    direction_pca,
    gaussian_aligned_null,
    residual_stats,
    scale_track_pca,
    scrambled_aligned_null,
)

# imported from the modules: the package namespace re-exports an older set
from ...metrics.nulls import permutation_aligned_null, pooled_std
from ...metrics.pca import centered_gains, direction_pca_shuffle_null
from ...metrics.similarity import frob_norm, norm64
from ...model.checkpoint import Checkpoint
from ...store.provenance import provenance
from ..base import RunContext
from ..concurrent import TaskRunner, one_torch_thread
from ..params import Params, compute_dtype, storage_dtype
from ..streaming import layers_within, n_pairs, pairs

ADJ_KEYS = ("resid_norm", "scalar_fit", "improve_frac", "resid_eff_rank", "resid_spec_entropy")
#: index of each null along the ``null`` dimension
NULL_INDEX = {k: j for j, k in enumerate(NULL_KINDS)}
#: the per-layer pass computes families concurrently while one layer (float32) is at most this many bytes
#: (Qwen3-0.6B: 60 MB; Qwen3-4B: 400 MB, computed one family at a time on all threads)
PASS_LAYER_BYTES = 256 * 2**20


@dataclass
class _Accumulator:
    n_layers: int
    fam_index: dict[str, int]
    ctx: RunContext

    def __post_init__(self) -> None:
        F, n = len(self.fam_index), self.n_layers
        nan = np.nan
        self.scale = np.full((F, n), nan)
        self.cos = np.full((F, n, n), nan)
        self.adj = {k: np.full((F, n), nan) for k in ADJ_KEYS}
        self.spectrum_method = np.full((F, n), "", dtype=object)
        self.aligned = np.full((F, n, n), nan)
        self.null_mean = np.full((len(NULL_KINDS), F, n), nan)
        self.null_std = np.full((len(NULL_KINDS), F, n), nan)
        self.gamma: dict[str, list[torch.Tensor | None]] = {}
        self.runner: TaskRunner | None = None

    def warn(self, message: str) -> None:
        # inside the per-layer pass, through its task runner: a task's warning keeps its task's place
        (self.runner.warn if self.runner is not None else self.ctx.warn)(message)


def pass_workers(ckpt: Checkpoint, threads: int, params: Params | None = None) -> int:
    """Families of one layer computed at once in the per-layer pass: one per torch thread while a layer is small.

    Each worker holds its family's pair (two matrices) and their temporaries; the main thread reads the
    next layer meanwhile, so about three layers are alive: allowed while one layer (float32) fits in
    :data:`PASS_LAYER_BYTES`.  Without factorizations (no residual spectrum, no aligned cos-sim) a pair
    is a few dot products and the pass is reading: it keeps every thread for the reads instead.
    """
    if threads <= 1:
        return 1
    if params is not None and not params.residual_spectrum and params.aligned_pairs == "none":
        return 1
    layer = sum(math.prod(ckpt.block_axis(f)) for f in ckpt.families if f in MATRIX_FAMILIES) * 4
    return threads if layer <= PASS_LAYER_BYTES else 1


def _adjacent_pass(ckpt: Checkpoint, acc: _Accumulator, params: Params, ctx: RunContext) -> None:
    for f in ckpt.families:
        if f in NORM_FAMILIES:
            acc.gamma[f] = [None] * ckpt.n_layers
    workers = pass_workers(ckpt, torch.get_num_threads(), params)
    bar = ctx.bar(range(ckpt.n_layers), desc="per-layer pass", unit="layer")
    ckpt.prefetch(0)
    with one_torch_thread(workers > 1), TaskRunner(workers, ctx.warn) as runner:
        acc.runner = runner
        try:
            _stream_layers(ckpt, acc, params, bar, runner)
        finally:
            acc.runner = None


def _stream_layers(ckpt: Checkpoint, acc: _Accumulator, params: Params, bar, runner: TaskRunner) -> None:
    """Read each layer (this thread), record its norms, and hand each family's pair to the runner."""
    device, offset = acc.ctx.device, ckpt.norm_offset
    keep, cdt = storage_dtype(ckpt), compute_dtype(params)
    nulls = params.aligned_pairs != "none" and bool(params.null_draws)
    prev: dict[str, tuple[torch.Tensor, float]] = {}  # family -> (the previous layer's matrix, its norm)
    seen_shapes: set[tuple[str, tuple[int, ...]]] = set()
    for L in bar:
        ckpt.prefetch(L + 1)  # the disk reads the next layer while this one is computed
        tasks = []
        for f in ckpt.families:
            i = acc.fam_index[f]
            got = ckpt.layer(L, [f], dtype=keep, device=device).get(f)
            if got is None:
                acc.warn(f"layer {L} has no {f} although other layers do: its {f} values are NaN")
                prev.pop(f, None)
                continue
            W = got
            if f in NORM_FAMILIES:
                W = got.to(torch.float64) + offset  # effective gain (Gemma stores w and applies 1 + w)
                acc.gamma[f][L] = W.cpu()
            norm = frob_norm(W, cdt)  # float64 sums of chunks or float32 partials: the layer is not cast whole
            finite = math.isfinite(norm)  # a NaN or Inf entry makes the norm NaN or Inf: no separate scan
            norm = norm if finite else math.nan
            acc.scale[i, L] = norm
            if not finite:
                acc.warn(f"layer {L} {f} has NaN or Inf weights: its metrics are NaN")
            elif norm == 0:
                acc.warn(f"layer {L} {f} is all zeros: its cosines are NaN")
            elif f in MATRIX_FAMILIES:
                acc.aligned[i, L, L] = 1.0  # max_R <W R, W>/|W|² = 1, attained at R = I
            if f in prev:
                key = (f, tuple(W.shape))
                gaussian = f in MATRIX_FAMILIES and nulls and key not in seen_shapes
                if gaussian:
                    seen_shapes.add(key)
                tasks.append((partial(_pair_task, acc, ckpt, params, f, L, *prev[f], W, norm, gaussian), False))
            prev[f] = (W, norm)  # a NaN layer still pairs, to NaN, with the next one
            del W, got
        runner.submit(tasks)


def _pair_task(acc: _Accumulator, ckpt: Checkpoint, params: Params, f: str, L: int, a: torch.Tensor,
               a_norm: float, W: torch.Tensor, norm: float, gaussian: bool) -> None:
    """Everything of the pair (L − 1, L) in family f: residual statistics, aligned cos-sim, its nulls.

    ``gaussian``: this pair draws the Gaussian band of its family's shape (the first pair of that shape).
    """
    i, cdt = acc.fam_index[f], compute_dtype(params)
    stats = residual_stats(a, W, spectrum=f in MATRIX_FAMILIES and params.residual_spectrum,
                           exact_max_dim=params.exact_spectrum_max_dim, compute_dtype=cdt,
                           norms=(a_norm, norm) if cdt == torch.float64 else None)
    if params.cos_pairs == "adjacent" and f in MATRIX_FAMILIES:  # no Gram pass: the only ones
        acc.cos[i, L - 1, L] = acc.cos[i, L, L - 1] = stats["cos"]
    for k in ADJ_KEYS:
        acc.adj[k][i, L - 1] = stats[k]
    acc.spectrum_method[i, L - 1] = stats["spectrum_method"]
    if stats["spectrum_method"] == "zero-residual" and f in MATRIX_FAMILIES:
        acc.warn(f"layers {L - 1} and {L} {f} are identical up to scale: residual spectrum is NaN")
    if f not in MATRIX_FAMILIES or params.aligned_pairs == "none":
        return
    ax = RESIDUAL_AXIS[f]
    # a NaN, Inf or zero layer (already warned, its norm NaN or 0): aligned cos and the pair's nulls stay NaN
    # without the casts and null draws; the Gaussian band depends on the shape only, so it is still drawn
    usable = all(math.isfinite(x) and x > 0 for x in (a_norm, norm))
    if usable:
        a_c, w_c = a.to(cdt), W.to(cdt)  # no copy when the storage dtype is the compute dtype
        acc.aligned[i, L - 1, L] = acc.aligned[i, L, L - 1] = aligned_cos(a_c, w_c, ax, cdt, (a_norm, norm))
    if not params.null_draws:
        return
    if not usable:
        if gaussian:
            _gaussian_null(acc, ckpt, params, i, W, ax)
        return
    if params.scrambled_null:
        j = NULL_INDEX["scrambled"]
        m, s = scrambled_aligned_null(a_c, w_c, ax, params.null_draws, params.seed + L, cdt)
        acc.null_mean[j, i, L - 1], acc.null_std[j, i, L - 1] = m, s
    _permutation_null(acc, ckpt, f, a_c, w_c, L, params)
    if gaussian:
        _gaussian_null(acc, ckpt, params, i, W, ax)


def _gaussian_null(acc: _Accumulator, ckpt: Checkpoint, params: Params, i: int, W: torch.Tensor, ax: int) -> None:
    """The ``gaussian`` null of family index ``i``: one band per shape, stored for every adjacent pair."""
    # at least two draws, so that the band has a width
    m, s = gaussian_aligned_null(tuple(W.shape), ax, max(2, params.null_draws), params.seed, acc.ctx.device,
                                 compute_dtype(params))
    j = NULL_INDEX["gaussian"]
    acc.null_mean[j, i, : ckpt.n_layers - 1] = m
    acc.null_std[j, i, : ckpt.n_layers - 1] = s


def _permutation_null(acc: _Accumulator, ckpt: Checkpoint, f: str, a: torch.Tensor, W: torch.Tensor, L: int,
                      params: Params) -> None:
    """The ``permutation`` null of pair (L − 1, L): layer L relabelled by random true symmetries.

    Called one family at a time; :func:`~geomlib.metrics.gauge_nulls.permutation_null`
    draws neurons and heads from generators that do not depend on the other
    families, so each draw's gate/up/down (q/k/v/o) share one permutation as
    if the layer were permuted whole.  Seeded ``seed + L`` like the scrambled null.
    """
    i, j = acc.fam_index[f], NULL_INDEX["permutation"]
    try:
        m, s = permutation_aligned_null(a, W, f, params.null_draws, params.seed + L, ckpt.n_heads, ckpt.n_kv_heads,
                                        ckpt.head_dim, compute_dtype=compute_dtype(params))
    except InvalidArgumentError as exc:
        # a head layout the matrices do not follow: no symmetry to draw from, so no band (not a guessed one)
        acc.warn(f"layer {L} {f}: no permutation null ({exc})")
        return
    acc.null_mean[j, i, L - 1], acc.null_std[j, i, L - 1] = m, s


def _gain_cos(ckpt: Checkpoint, acc: _Accumulator) -> None:
    """All-pairs cos of the norm gains, from the vectors kept by the per-layer pass (offset included)."""
    for f in ckpt.families:
        if f in NORM_FAMILIES:
            vecs = acc.gamma[f]
            dim = next(v.numel() for v in vecs if v is not None)
            X = torch.stack([v if v is not None else torch.full((dim,), math.nan, dtype=torch.float64)
                             for v in vecs])
            acc.cos[acc.fam_index[f]] = cos_from_gram(X @ X.T).numpy()


def _matrix_cos_diagonal(ckpt: Checkpoint, acc: _Accumulator) -> None:
    """``cos_pairs="adjacent"``: each matrix family's cos of a layer with itself (1 where the layer is usable)."""
    idx = np.arange(acc.n_layers)
    for f in ckpt.families:
        if f in MATRIX_FAMILIES:
            i = acc.fam_index[f]
            ok = np.isfinite(acc.scale[i]) & (acc.scale[i] > 0)
            acc.cos[i, idx, idx] = np.where(ok, 1.0, np.nan)


def _gram_pass(ckpt: Checkpoint, acc: _Accumulator, params: Params, ctx: RunContext) -> None:
    device = ctx.device
    n = ckpt.n_layers
    budget = params.block_mib * 2**20
    fams = [f for f in ckpt.families if f in MATRIX_FAMILIES]
    plan = []
    for f in fams:
        axis, elems = ckpt.block_axis(f)
        rows = max(1, min(axis, budget // max(1, n * elems * 8)))
        plan += [(f, a, min(a + rows, axis)) for a in range(0, axis, rows)]
    grams = {f: torch.zeros(n, n, dtype=torch.float64, device=device) for f in fams}
    for f, a, b in ctx.bar(plan, desc="all-pairs Gram", unit="block"):
        X = None
        for L in range(n):
            blk = ckpt.read_block(L, f, a, b, dtype=torch.float64, device=device)
            if X is None:
                X = torch.full((n, blk.numel() if blk is not None else 0), math.nan, dtype=torch.float64,
                               device=device)
            if blk is not None:
                X[L] = blk.reshape(-1)
        grams[f] += X @ X.T
    for f in fams:
        acc.cos[acc.fam_index[f]] = cos_from_gram(grams[f]).cpu().numpy()


def _aligned_all_pass(ckpt: Checkpoint, acc: _Accumulator, params: Params, ctx: RunContext) -> None:
    """Aligned cosine of every pair (:func:`~geomlib.analyses.streaming.pairs`)."""
    n, keep, cdt = ckpt.n_layers, storage_dtype(ckpt), compute_dtype(params)
    fams = [f for f in ckpt.families if f in MATRIX_FAMILIES]
    bar = ctx.bar(total=len(fams) * n_pairs(n, diagonal=False), desc="all-pairs aligned", unit="pair")
    for f in fams:
        i, ax = acc.fam_index[f], RESIDUAL_AXIS[f]
        axis, elems = ckpt.block_axis(f)
        chunk = layers_within(params.block_mib * 2**20, axis * elems * keep.itemsize, n)
        load = lambda L, f=f: ckpt.layer(L, [f], dtype=keep, device=ctx.device).get(f)  # noqa: E731
        for L1, w1, L2, w2 in pairs(range(n), chunk, load, diagonal=False):
            if w1 is not None and w2 is not None:
                acc.aligned[i, L1, L2] = acc.aligned[i, L2, L1] = aligned_cos(w1, w2, ax, cdt,
                                                                              (norm64(w1), norm64(w2)))
            bar.update(1)
    bar.close()


def compute_weight_arrays(ckpt: Checkpoint, params: Params, ctx: RunContext) -> dict:
    """Run the passes and return plain arrays (families in :data:`FAMILIES` order)."""
    acc = _Accumulator(ckpt.n_layers, {f: i for i, f in enumerate(FAMILIES)}, ctx)
    with torch.no_grad():
        _adjacent_pass(ckpt, acc, params, ctx)
        _gain_cos(ckpt, acc)
        if params.cos_pairs == "all":
            _gram_pass(ckpt, acc, params, ctx)
        else:
            _matrix_cos_diagonal(ckpt, acc)
        if params.aligned_pairs == "all":
            _aligned_all_pass(ckpt, acc, params, ctx)
    last = slice(0, max(acc.n_layers - 1, 0))  # pair (L, L+1) lives at layer L
    for j, kind in enumerate(NULL_KINDS):
        if kind != "gaussian" and params.null_draws:  # the Gaussian band: one per shape, over all its draws
            acc.null_std[j][:, last] = pooled_std(acc.null_std[j][:, last], acc.null_mean[j][:, last],
                                                  params.null_draws)
    out = {
        "scale": acc.scale,
        "cos": acc.cos,
        "aligned_cos": acc.aligned,
        "aligned_null_mean": acc.null_mean,
        "aligned_null_std": acc.null_std,
        "spectrum_method": acc.spectrum_method,
        **acc.adj,
    }
    out.update(_scale_pca(acc))
    out.update(_gamma(acc, ckpt.n_layers, params))
    return out


def _scale_pca(acc: _Accumulator) -> dict:
    fam = [f for f, i in acc.fam_index.items() if np.all(np.isfinite(acc.scale[i]) & (acc.scale[i] > 0))]
    F, n = len(acc.fam_index), acc.n_layers
    k = min(len(fam), n)
    loadings = np.full((F, k), np.nan)
    if k == 0:
        acc.warn("no family has a finite positive norm in every layer: the scale-track PCA is empty")
        return {"scale_pca_explained": np.zeros(0), "scale_pca_loadings": loadings, "scale_pca_scores": np.zeros((0, n))}
    logs = torch.tensor(np.log(np.stack([acc.scale[acc.fam_index[f]] for f in fam])))
    res = scale_track_pca(logs)
    for j, f in enumerate(fam):
        loadings[acc.fam_index[f]] = res["loadings"][j, :k].numpy()
    return {
        "scale_pca_explained": res["explained"][:k].numpy(),
        "scale_pca_loadings": loadings,
        "scale_pca_scores": res["scores"][:k].numpy(),
        "scale_pca_families": fam,
    }


def _recorded(acc: _Accumulator, label: str, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` with the GeomlibWarnings it emits recorded in provenance (prefixed by ``label``)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", GeomlibWarning)
        out = fn(*args, **kwargs)
    for w in caught:
        if issubclass(w.category, GeomlibWarning):
            acc.warn(f"{label}: {w.message}")
        else:
            warnings.warn(w.message, w.category, stacklevel=2)
    return out


#: γ outputs: name -> per-family shape suffix ("pc": (n,), "layer": (n,), "layer_pc": (n, n))
_GAMMA_VARS = {
    "gamma_norm": "layer",
    "gamma_pca_explained": "pc",
    "gamma_pca_scores": "layer_pc",
    "gamma_proj_top1": "layer",
    "gamma_resid_top1": "layer",
    "gamma_pca_null_mean": "pc",
    "gamma_pca_null_std": "pc",
    "gamma_abs_proj_top1_null_mean": "layer",
    "gamma_abs_proj_top1_null_std": "layer",
    "gamma_centered_pca_explained": "pc",
    "gamma_centered_proj_top1": "layer",
    "gamma_centered_pca_null_mean": "pc",
    "gamma_centered_pca_null_std": "pc",
}


def _gamma(acc: _Accumulator, n: int, params: Params) -> dict:
    """Seed 004's γ direction PCA (raw unit gains), its mean-removed variant and their coordinate-shuffle nulls."""
    F = len(acc.fam_index)
    shape = {"layer": (n,), "pc": (n,), "layer_pc": (n, n)}
    out = {name: np.full((F, *shape[kind]), np.nan) for name, kind in _GAMMA_VARS.items()}
    for f, vecs in acc.gamma.items():
        i = acc.fam_index[f]
        if any(v is None for v in vecs):
            acc.warn(f"{f} is missing in some layers: its γ PCA is NaN")
            continue
        X = torch.stack(vecs)
        norm = torch.linalg.vector_norm(X, dim=1).numpy()
        out["gamma_norm"][i] = np.where(np.isfinite(norm), norm, np.nan)  # an Inf gain: NaN, as its scale
        if not bool(torch.isfinite(X).all()) or bool((out["gamma_norm"][i] == 0).any()):
            acc.warn(f"{f} has a zero or non-finite gain vector: its γ PCA is NaN")
            continue
        res = _recorded(acc, f"{f} γ PCA", direction_pca, X)
        k = res["explained"].numel()
        out["gamma_pca_explained"][i, :k] = res["explained"].numpy()
        out["gamma_pca_scores"][i, :, :k] = res["scores"].numpy()
        out["gamma_proj_top1"][i] = res["proj_top1"].numpy()
        out["gamma_resid_top1"][i] = res["resid_top1"].numpy()
        cen = _recorded(acc, f"{f} mean-removed γ PCA", direction_pca, centered_gains(X))
        out["gamma_centered_pca_explained"][i, :k] = cen["explained"].numpy()
        out["gamma_centered_proj_top1"][i] = cen["proj_top1"].numpy()
        if params.gamma_null_draws:
            # one seed for both: the raw and the mean-removed nulls see the same shuffles (a paired comparison)
            for centered, pre in ((False, "gamma_pca_null"), (True, "gamma_centered_pca_null")):
                nul = _recorded(acc, f"{f} γ shuffle null", direction_pca_shuffle_null, X, params.gamma_null_draws,
                                params.seed, centered=centered)
                out[f"{pre}_mean"][i, :k] = nul["explained_mean"].numpy()
                out[f"{pre}_std"][i, :k] = nul["explained_std"].numpy()
                if not centered:
                    out["gamma_abs_proj_top1_null_mean"][i] = nul["abs_proj_top1_mean"].numpy()
                    out["gamma_abs_proj_top1_null_std"][i] = nul["abs_proj_top1_std"].numpy()
    return out


_DESCRIPTIONS = {
    "scale": "Frobenius norm ‖W_L‖ (norm families: effective gain, Gemma's +1 applied)",
    "cos": "Frobenius cosine ⟨W_L, W_L'⟩/(‖W_L‖‖W_L'‖), every pair (matrix families with cos_pairs='adjacent': "
           "adjacent pairs only, NaN elsewhere)",
    "aligned_cos": "max over orthogonal R on the residual-stream side of ⟨W_L R, W_L'⟩/(‖W_L‖‖W_L'‖) "
                   "= ‖W_Lᵀ W_L'‖_* / (‖W_L‖‖W_L'‖); NaN where not computed and for norm gains",
    "delta": "aligned_cos − cos",
    "aligned_null_mean": "null aligned_cos for pair (layer, layer+1), mean over null_draws seeded draws: "
                         "gaussian = independent Gaussian matrices of the same shape; scrambled = non-residual "
                         "side of W_{L+1} scrambled by a random signed permutation (drawn only with "
                         "scrambled_null=True, else NaN; spectrum and residual-side Gram kept; the sign flips "
                         "are not a symmetry of a gated MLP or of heads, so the layer "
                         "becomes another function); permutation = W_{L+1} relabelled by a random TRUE symmetry, "
                         "the same function: MLP families one neuron permutation shared by gate/up rows and down "
                         "columns, attention q/k/v/o a GQA-consistent head permutation (kv groups permuted, "
                         "query heads permuted within their group and moved with it; q rows and o columns by "
                         "head blocks, k/v rows by kv-head blocks), seeds seed + L+1 as scrambled. The excess "
                         "over the null is read against permutation. Norm gains: NaN for every null (aligned_cos "
                         "is not defined for them, and no per-layer symmetry permutes a gain while keeping the "
                         "residual basis the layers share)",
    "aligned_null_std": "standard deviation of one null draw: gaussian, over its draws; scrambled and permutation, "
                        "pooled over the adjacent pairs of the family (null_draws ≥ 2: root mean of each pair's "
                        "sample variance; one draw: von Neumann's successive-difference estimate over pairs, wider "
                        "when the null drifts with depth). The Monte-Carlo error of a pair's null mean is this over "
                        "√null_draws",
    "resid_norm": "pair (layer, layer+1): ‖W_{L+1}/‖W_{L+1}‖ − W_L/‖W_L‖‖_F (√2 for orthogonal layers)",
    "scalar_fit": "pair (layer, layer+1): √(1 − cos²), the residual after the best scalar fit",
    "improve_frac": "pair (layer, layer+1): (resid_norm − scalar_fit)/resid_norm (seed 003)",
    "resid_eff_rank": "pair (layer, layer+1): exp(entropy of normalized σ² of the residual Δ)",
    "resid_spec_entropy": "pair (layer, layer+1): entropy (nats) of normalized σ² of the residual Δ",
    "spectrum_method": "how the residual spectrum was computed: exact, randomized, zero-residual or none",
    "scale_pca_explained": "variance fraction of each mode of the centered log-scale track",
    "scale_pca_loadings": "loading of each family on each mode (NaN: family not in the PCA)",
    "scale_pca_scores": "diag(S) Vh: each layer's coordinate on each mode",
    "gamma_norm": "‖γ_L‖ of the effective norm gain",
    "gamma_pca_explained": "variance fraction of each PC of the centered unit gain vectors",
    "gamma_pca_scores": "coordinate of each centered unit gain vector on each PC (deterministic signs)",
    "gamma_proj_top1": "unit γ_L · PC1 (uncentered, as seed 004)",
    "gamma_resid_top1": "√(1 − gamma_proj_top1²)",
    "gamma_pca_null_mean": "coordinate-shuffle null of gamma_pca_explained: mean over gamma_null_draws draws (seed) "
                           "of the explained fraction of each PC after independently shuffling the coordinates of "
                           "each layer's γ (norms and value distributions kept, shared axes destroyed)",
    "gamma_pca_null_std": "sample std of gamma_pca_null_mean's draws",
    "gamma_abs_proj_top1_null_mean": "coordinate-shuffle null of |gamma_proj_top1| (PC1's sign is arbitrary in "
                                     "a null): mean over the draws",
    "gamma_abs_proj_top1_null_std": "sample std of gamma_abs_proj_top1_null_mean's draws",
    "gamma_centered_pca_explained": "as gamma_pca_explained for the mean-removed gains γ_L − mean over layers of "
                                    "γ, each normalised to unit length (NaN when a layer equals the mean)",
    "gamma_centered_proj_top1": "as gamma_proj_top1 for the mean-removed gains",
    "gamma_centered_pca_null_mean": "coordinate-shuffle null of gamma_centered_pca_explained (shuffle, then remove "
                                    "the cross-layer mean; the same shuffles as gamma_pca_null_mean)",
    "gamma_centered_pca_null_std": "sample std of gamma_centered_pca_null_mean's draws",
}


def build_dataset(ckpt: Checkpoint, arrays: dict, params: Params, ctx: RunContext) -> xr.Dataset:
    """Attach names, coordinates and provenance to :func:`compute_weight_arrays` output."""
    n = ckpt.n_layers
    fam = list(FAMILIES)
    FL, FLL = ("family", "layer"), ("family", "layer", "layer_b")
    data = {
        "scale": (FL, arrays["scale"]),
        "cos": (FLL, arrays["cos"]),
        "aligned_cos": (FLL, arrays["aligned_cos"]),
        "delta": (FLL, arrays["aligned_cos"] - arrays["cos"]),
        "aligned_null_mean": (("null", "family", "layer"), arrays["aligned_null_mean"]),
        "aligned_null_std": (("null", "family", "layer"), arrays["aligned_null_std"]),
        "spectrum_method": (FL, arrays["spectrum_method"].astype(str)),
        **{k: (FL, arrays[k]) for k in ADJ_KEYS},
        "scale_pca_explained": (("mode",), arrays["scale_pca_explained"]),
        "scale_pca_loadings": (("family", "mode"), arrays["scale_pca_loadings"]),
        "scale_pca_scores": (("mode", "layer"), arrays["scale_pca_scores"]),
        "gamma_norm": (FL, arrays["gamma_norm"]),
        "gamma_pca_explained": (("family", "pc"), arrays["gamma_pca_explained"]),
        "gamma_pca_scores": (("family", "layer", "pc"), arrays["gamma_pca_scores"]),
        "gamma_proj_top1": (FL, arrays["gamma_proj_top1"]),
        "gamma_resid_top1": (FL, arrays["gamma_resid_top1"]),
        **{k: (("family", "pc") if kind == "pc" else FL, arrays[k]) for k, kind in _GAMMA_VARS.items()
           if k.startswith(("gamma_pca_null", "gamma_abs_", "gamma_centered"))},
    }
    coords = {
        "family": fam,
        "layer": np.arange(n),
        "layer_b": np.arange(n),
        "null": list(NULL_KINDS),
        "mode": np.arange(len(arrays["scale_pca_explained"])),
        "pc": np.arange(n),
    }
    ds = xr.Dataset(data, coords=coords)
    for name, text in _DESCRIPTIONS.items():
        if name in ds:
            ds[name].attrs["description"] = text
    for name in ds.data_vars:
        if ds[name].dtype.kind == "f":
            ds[name] = ds[name].astype(np.float64)
    ds.attrs.update(provenance(ckpt, "weights", params, ctx))
    ds.attrs["scale_pca_families"] = ",".join(arrays.get("scale_pca_families", []))
    return ds


def run(ckpt: Checkpoint, params: Params, ctx: RunContext) -> xr.Dataset:
    """The weights analysis of ``ckpt`` as a Dataset."""
    return build_dataset(ckpt, compute_weight_arrays(ckpt, params, ctx), params, ctx)


__all__ = ["build_dataset", "compute_weight_arrays", "run"]
