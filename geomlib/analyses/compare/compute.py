"""Two checkpoints of one layout compared layer against layer, streamed: a chunk of A's layers, B's read past it.

For each pair (layer L of A, layer L' of B): the index-paired raw cosine of every
weight matrix and of the norm gains (float64), then, with the gains folded, B's
MLP neurons matched to A's (:func:`~geomlib.metrics.matching.match_neurons`) and
B's heads to A's (:func:`~geomlib.metrics.head_matching.match_heads`) under the
architecture's symmetry group, exactly as the gauge analysis matches two layers
of one model.  Each layer of A also gets the residual-rotation null against its
depth-corresponding layer of B.  Memory: ``block_mib`` of A's layers and one
layer of B (two while a pair's pieces run), whatever the depths.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial

import numpy as np
import torch
import xarray as xr

from ... import __version__
from ...arch import MATRIX_FAMILIES, NORM_FAMILIES
from ...arch.symmetry import symmetry_group
from ...errors import InvalidArgumentError
from ...metrics.gauge_nulls import residual_rotation_null
from ...metrics.head_matching import match_heads
from ...metrics.matching import fold_norms, fold_qk_norms, match_neurons
from ...metrics.nulls import pooled_std
from ...metrics.similarity import norm64, row_chunks
from ...model.checkpoint import Checkpoint
from ...threads import current_threads
from ..base import PAIRING, RunContext
from ..gauge.compute import AUTO_ALL_PAIRS_WORK, describe_group, head_backgrounds, mlp_views, run_pairs, split_layer
from ..heads import operators_of
from ..params import Params, compute_dtype
from ..streaming import layers_within
from . import DESCRIPTIONS, NAME, SCHEMA_VERSION, corresponding

#: architecture facts that must agree for weights to be paired (the depths may differ)
SHAPE_FACTS = ("hidden", "n_heads", "n_kv_heads", "head_dim", "intermediate")
MATCHED = ("mlp_matched_cos", "mlp_frac_fixed", "head_matched_cos", "head_unmatched_cos", "head_matched",
           "head_assignment", "mlp_matched_null_mean", "mlp_matched_null_std", "head_matched_null_mean",
           "head_matched_null_std")


def shape_mismatch(a: Checkpoint, b: Checkpoint) -> str | None:
    """Why the weights of ``a`` and ``b`` cannot be paired (a size differs), or None when they can.

    Raises
    ------
    InvalidArgumentError
        Different model types, or one type with different symmetry groups (nothing to compare at all).
    """
    if a.arch != b.arch:
        raise InvalidArgumentError(f"{a.source} is a {a.arch} model and {b.source} a {b.arch} model; compare "
                                   "needs two checkpoints of one model_type (e.g. two llama checkpoints)")
    diff = [f"{k} {getattr(a, k)} vs {getattr(b, k)}" for k in SHAPE_FACTS if getattr(a, k) != getattr(b, k)]
    if diff:
        return ", ".join(diff)
    ga, gb = describe_group(symmetry_group(a.arch, a.config)), describe_group(symmetry_group(b.arch, b.config))
    if ga != gb:
        raise InvalidArgumentError(f"{a.source} and {b.source} are both {a.arch} but their symmetry groups differ "
                                   f"({ga} vs {gb}); compare checkpoints whose configs agree on activation, "
                                   "rotary embedding and norms")
    return None


def all_pairs_work(a: Checkpoint, b: Checkpoint) -> float:
    """Multiply-adds of the neuron similarities of every (L, L') pair (the dominant cost of ``pairs="all"``)."""
    if "up_proj" not in a.families:
        return 0.0
    return float(a.n_layers) * b.n_layers * float(a.intermediate) ** 2 * a.hidden


def resolve_pairs(a: Checkpoint, b: Checkpoint, pairs: str) -> str:
    """``"corresponding"`` or ``"all"``; ``"auto"``: all when :func:`all_pairs_work` is affordable (as gauge)."""
    if pairs != "auto":
        return pairs
    return "all" if all_pairs_work(a, b) <= AUTO_ALL_PAIRS_WORK else "corresponding"


@dataclass
class _Layer:
    """One layer as a pair needs it: raw matrices (compute dtype) and their float64 norms, effective gains
    (float64), and the gain-folded MLP and attention dicts the matchings use."""

    raw: dict
    norms: dict
    gains: dict
    mlp: dict
    att: dict
    finite: bool


def _cos64(x: torch.Tensor, y: torch.Tensor, nx: float, ny: float) -> float:
    """⟨x, y⟩ / (nx ny) accumulated in float64 over row blocks (no layer-sized float64 copy); NaN for bad norms."""
    if not (math.isfinite(nx) and math.isfinite(ny) and nx > 0 and ny > 0):
        return math.nan
    dot = 0.0
    for s in row_chunks(x):
        dot += float((x[s].double() * y[s].double()).sum())
    return max(-1.0, min(1.0, dot / (nx * ny)))


def _norm(t: torch.Tensor) -> float:
    n = norm64(t)
    return n if math.isfinite(n) and n > 0 else math.nan


def _identical(x: dict, y: dict) -> bool:
    return x.keys() == y.keys() and all(torch.equal(x[f], y[f]) for f in x)


def run(ckpt_a: Checkpoint, ckpt_b: Checkpoint, params: Params, ctx: RunContext) -> xr.Dataset:
    """The layer-to-layer comparison of two checkpoints of one layout as a Dataset.

    Parameters
    ----------
    ckpt_a, ckpt_b : Checkpoint
        Same model_type, hidden size, head layout and MLP width (:func:`shape_mismatch` is None); their
        depths ``n_a``, ``n_b`` may differ.
    params : Params
        Validated :data:`geomlib.analyses.compare.PARAMS`.

    Returns
    -------
    xarray.Dataset
        Dims ``family`` (F), ``norm`` (N), ``mlp_view`` (V), ``operator`` (O), ``layer`` (n_a),
        ``layer_b`` (n_b), ``head`` (H): ``raw_cos`` (F, n_a, n_b), ``gamma_cos`` (N, n_a, n_b),
        ``mlp_*`` (V, n_a, n_b), ``head_*`` (O, n_a, n_b), ``head_matched`` (O, n_a, n_b, H),
        ``head_assignment`` (n_a, n_b, H), nulls (V or O, n_a) and ``null_layer_b`` (n_a,); float64.
        Pairs not compared (``pairs="corresponding"``) are NaN (assignment −1).
    """
    why = shape_mismatch(ckpt_a, ckpt_b)
    if why is not None:
        raise InvalidArgumentError(f"the weights of {ckpt_a.source} and {ckpt_b.source} cannot be paired ({why}); "
                                   "use geomlib.compare, which compares such models by depth-normalized profiles")
    na, nb, H = ckpt_a.n_layers, ckpt_b.n_layers, ckpt_a.n_heads
    which = resolve_pairs(ckpt_a, ckpt_b, params.pairs)
    corr = corresponding(na, nb)
    group = symmetry_group(ckpt_a.arch, ckpt_a.config)
    fams = [f for f in ckpt_a.families if f in ckpt_b.families]
    if set(fams) != set(ckpt_a.families) or set(fams) != set(ckpt_b.families):
        ctx.warn(f"the two checkpoints hold different weight families ({','.join(ckpt_a.families)} vs "
                 f"{','.join(ckpt_b.families)}): only those in both ({','.join(fams)}) are compared")
    mats = [f for f in fams if f in MATRIX_FAMILIES]
    gains = [f for f in fams if f in NORM_FAMILIES]
    has_mlp = all(f in fams for f in ("up_proj", "down_proj"))
    ops = operators_of(fams)
    views = mlp_views(fams, group.mlp_neuron_scale) if has_mlp else []
    cdt = compute_dtype(params)
    offset = ckpt_a.norm_offset
    match_mlp = partial(match_neurons, scale=group.mlp_neuron_scale, compute_dtype=cdt)
    match_att = partial(match_heads, n_heads=H, n_kv_heads=ckpt_a.n_kv_heads, head_dim=ckpt_a.head_dim,
                        head_perm=group.head_perm, operators=tuple(ops), compute_dtype=cdt)

    nan = np.nan
    F, N, V, O = len(mats), len(gains), len(views), len(ops)
    out = {
        "raw_cos": np.full((F, na, nb), nan), "gamma_cos": np.full((N, na, nb), nan),
        "mlp_matched_cos": np.full((V, na, nb), nan), "mlp_same_index_cos": np.full((V, na, nb), nan),
        "mlp_frac_fixed": np.full((na, nb), nan),
        "head_matched_cos": np.full((O, na, nb), nan), "head_same_index_cos": np.full((O, na, nb), nan),
        "head_different_index_cos": np.full((O, na, nb), nan), "head_unmatched_cos": np.full((O, na, nb), nan),
        "head_matched": np.full((O, na, nb, H), nan), "head_assignment": np.full((na, nb, H), -1, dtype=np.int64),
        "mlp_matched_null_mean": np.full((V, na), nan), "mlp_matched_null_std": np.full((V, na), nan),
        "head_matched_null_mean": np.full((O, na), nan), "head_matched_null_std": np.full((O, na), nan),
        "null_layer_b": np.array(corr, dtype=np.int64),
    }

    def loader(ckpt: Checkpoint, who: str):
        def load(L: int) -> _Layer:
            w = ckpt.layer(L, fams, dtype=cdt, device=ctx.device)
            # one scan before the folds and matchings: linear_sum_assignment raises on NaN, and a matching pairs
            # every unit of the layer, so one bad family makes all of the layer's matched values NaN
            bad = [f for f, t in w.items() if not bool(torch.isfinite(t).all())]
            if bad:
                ctx.warn(f"model {who} ({ckpt.source}) layer {L} has NaN or Inf weights in {'/'.join(bad)}: its "
                         f"raw cos in {'/'.join(bad)} and all its matched values are NaN")
            folded = w
            if params.fold_norms:
                folded = fold_qk_norms(fold_norms(w, group.norm_folds, offset), ckpt.head_dim, offset)
            mlp, att = split_layer(folded)
            raw = {f: w[f] for f in mats if f in w}
            return _Layer(raw, {f: _norm(t) for f, t in raw.items()},
                          {f: offset + w[f].double() for f in gains if f in w}, mlp, att, not bad)
        return load

    load_a, load_b = loader(ckpt_a, "A"), loader(ckpt_b, "B")

    def raw_task(L1: int, L2: int, x: _Layer, y: _Layer) -> None:
        for i, f in enumerate(mats):
            if f in x.raw and f in y.raw:
                out["raw_cos"][i, L1, L2] = _cos64(x.raw[f], y.raw[f], x.norms[f], y.norms[f])
        for i, f in enumerate(gains):
            if f in x.gains and f in y.gains:
                g1, g2 = x.gains[f], y.gains[f]
                out["gamma_cos"][i, L1, L2] = _cos64(g1, g2, _norm(g1), _norm(g2))

    def mlp_task(L1: int, L2: int, x: _Layer, y: _Layer) -> None:
        m = match_mlp(x.mlp, y.mlp)
        same = _identical(x.mlp, y.mlp)  # the identity matching, cos exactly 1 (float32 rounding not reported)
        for i, v in enumerate(views):
            for k, val in (("mlp_matched_cos", m.matched_cos[v]), ("mlp_same_index_cos", m.same_index_cos[v])):
                out[k][i, L1, L2] = 1.0 if same and math.isfinite(val) else val
        out["mlp_frac_fixed"][L1, L2] = 1.0 if same and math.isfinite(m.frac_fixed) else m.frac_fixed

    def heads_task(L1: int, L2: int, x: _Layer, y: _Layer) -> None:
        h = match_att(x.att, y.att)
        same = _identical(x.att, y.att)
        one = lambda val: 1.0 if same and math.isfinite(val) else val  # noqa: E731
        for i, op in enumerate(ops):
            out["head_matched_cos"][i, L1, L2] = one(h.matched_cos[op])
            out["head_same_index_cos"][i, L1, L2] = one(h.same_index_cos[op])
            diff, bg = head_backgrounds(h, op)
            out["head_different_index_cos"][i, L1, L2] = diff
            out["head_unmatched_cos"][i, L1, L2] = diff if same else bg  # identity matching: the off-diagonal
            per = h.matched[op].cpu().numpy()
            out["head_matched"][i, L1, L2] = np.where(np.isfinite(per), 1.0, per) if same else per
        out["head_assignment"][L1, L2] = np.arange(H) if same else h.perm.numpy()

    def mlp_null_task(L1: int, x: _Layer, y: _Layer) -> None:
        band = residual_rotation_null(x.mlp, y.mlp, match_mlp, params.null_draws, params.seed + L1, cdt, quiet=False)
        for i, v in enumerate(views):
            out["mlp_matched_null_mean"][i, L1], out["mlp_matched_null_std"][i, L1] = band.mean[v], band.std[v]

    def heads_null_task(L1: int, x: _Layer, y: _Layer) -> None:
        band = residual_rotation_null(x.att, y.att, match_att, params.null_draws, params.seed + L1, cdt, quiet=False)
        for i, op in enumerate(ops):
            out["head_matched_null_mean"][i, L1], out["head_matched_null_std"][i, L1] = band.mean[op], band.std[op]

    def tasks(L1: int, L2: int, x: _Layer, y: _Layer) -> list:
        """The pair's independent pieces, ``(fn, quiet)``, in the order their warnings are recorded."""
        todo = [(partial(raw_task, L1, L2, x, y), False)]
        if not (x.finite and y.finite):
            return todo  # NaN in, NaN out: the matchings would only warn
        null = corr[L1] == L2 and params.null_draws
        if has_mlp:
            todo.append((partial(mlp_task, L1, L2, x, y), False))
        if ops:
            todo.append((partial(heads_task, L1, L2, x, y), False))
        if ops and null:
            todo.append((partial(heads_null_task, L1, x, y), True))  # its warnings repeat the matching's
        if has_mlp and null:
            todo.append((partial(mlp_null_task, L1, x, y), True))
        return todo

    def stream():
        """``(L, x, L', y)`` for every pair compared: a chunk of A's layers held, each B layer read once per chunk."""
        if which == "corresponding":
            last = (None, None)
            for L in range(na):
                if last[0] != corr[L]:
                    last = (corr[L], load_b(corr[L]))
                yield L, load_a(L), corr[L], last[1]
            return
        per_layer = sum(math.prod(ckpt_a.block_axis(f)) for f in fams) * cdt.itemsize
        per_layer *= 2 if params.fold_norms else 1  # the raw matrices and their folded copies
        chunk = layers_within(params.block_mib * 2**20, per_layer, na)
        for c0 in range(0, na, chunk):
            held = {L: load_a(L) for L in range(c0, min(na, c0 + chunk))}
            for L2 in range(nb):
                y = load_b(L2)
                for L1, x in held.items():
                    yield L1, x, L2, y

    total = na * nb if which == "all" else na
    run_pairs(ckpt_a, ctx, stream(), tasks, total, "compare matching")
    for stem in ("mlp_matched_null", "head_matched_null"):  # one band width per view, pooled over A's layers
        out[f"{stem}_std"] = pooled_std(out[f"{stem}_std"], out[f"{stem}_mean"], params.null_draws)
    ds = _dataset(ckpt_a, ckpt_b, out, mats, gains, views, ops)
    ds.attrs.update(pair_provenance(ckpt_a, ckpt_b, params, ctx, "layer-to-layer"))
    ds.attrs.update({
        "symmetry_group": describe_group(group),
        "symmetry_notes": group.notes,
        "compare_pairs": which,
        "compare_operators": ",".join(ops),
        "compare_qk_norm": "folded" if params.fold_norms and "q_norm" in fams else
                           ("present, not folded" if "q_norm" in fams else "none"),
    })
    if which == "corresponding":
        ds.attrs["compare_pairs_note"] = (
            "only depth-corresponding pairs (layer, null_layer_b[layer]) were compared, the others are NaN"
            + (f" (all pairs: {all_pairs_work(ckpt_a, ckpt_b):.2g} multiply-adds > {AUTO_ALL_PAIRS_WORK:.0e}; ask "
               "for them with pairs='all')" if params.pairs == "auto" else ""))
    return ds


def _dataset(a: Checkpoint, b: Checkpoint, out: dict, mats, gains, views, ops) -> xr.Dataset:
    LL = ("layer", "layer_b")
    dims = {"raw_cos": ("family",) + LL, "gamma_cos": ("norm",) + LL, "mlp_frac_fixed": LL,
            "head_matched": ("operator",) + LL + ("head",), "head_assignment": LL + ("head",),
            "null_layer_b": ("layer",)}
    for k in out:
        if k not in dims:
            lead = "mlp_view" if k.startswith("mlp") else "operator"
            dims[k] = (lead, "layer") if "null" in k else (lead,) + LL
    ds = xr.Dataset({k: (dims[k], v) for k, v in out.items()},
                    coords={"family": list(mats), "norm": list(gains), "mlp_view": list(views),
                            "operator": list(ops), "layer": np.arange(a.n_layers), "layer_b": np.arange(b.n_layers),
                            "head": np.arange(a.n_heads)})
    for k, v in ds.data_vars.items():
        v.attrs["description"] = DESCRIPTIONS[k]
        if "layer_b" in v.dims:
            v.attrs["pairing"] = PAIRING["matched" if k in MATCHED else "index"]
    return ds


def pair_provenance(a: Checkpoint, b: Checkpoint, params: Params, ctx: RunContext, comparison: str) -> dict:
    """The attrs of a compare entry: both checkpoints' facts (``*_a``, ``*_b``), versions, parameters, time,
    device, threads and warnings; ``source``/``identity`` are A's (the cache directory the entry lives in)."""
    attrs = {f"{k}_a": v for k, v in a.summary().items()}
    attrs.update({f"{k}_b": v for k, v in b.summary().items()})
    attrs.update({
        "source": a.source, "identity": a.identity, "analysis": NAME, "comparison": comparison,
        "schema_version": SCHEMA_VERSION, "geomlib_version": __version__, "torch_version": ctx.torch_version,
        "params": json.dumps(params.key_dict(), sort_keys=True),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": str(ctx.device), "threads": current_threads(), "warnings": "\n".join(ctx.warnings),
    })
    return attrs


__all__ = ["SHAPE_FACTS", "all_pairs_work", "pair_provenance", "resolve_pairs", "run", "shape_mismatch"]
