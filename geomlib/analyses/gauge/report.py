"""Report sections of the gauge analysis (torch-free).

Besides the matched-vs-null tables, the report re-asks the seeds' questions
with heads matched instead of paired by index (seed 001's operator cosines,
seed 002's spectral rescale fit) and ends with the list of seed verdicts that
change once the symmetries are handled.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from ..phases import adjacent, phase_mean, phase_order
from ..report import band_verdict, check_anchor
from ..weights.report import reference_null
from . import MLP_VIEW_OF

BEYOND = "shared structure beyond the symmetry"


def _verdict(value: float, m: float, s: float) -> str:
    return band_verdict(value, m, s, BEYOND, "below the null", "inside the null band: matching alone explains it")


def _block(ds: xr.Dataset, var: str, dim: str, title: str) -> list[str]:
    if var not in ds or not ds.sizes.get(dim):
        return []
    order = phase_order(ds)
    out = ["", f"=== {title} ===",
           f" {dim:>10} {'phase':>6} {'matched':>9} {'index-paired':>13} {'null (± 2σ)':>17}  verdict"]
    matched = phase_mean(adjacent(ds[var]), order)
    same = phase_mean(adjacent(ds[var.replace("matched", "same_index")]), order)
    stem = var.removesuffix("_cos")
    nm = phase_mean(ds[f"{stem}_null_mean"].isel(layer=slice(0, -1)), order)
    ns = phase_mean(ds[f"{stem}_null_std"].isel(layer=slice(0, -1)), order)
    for c in ds[dim].values.tolist():
        for p in order:
            v = float(matched.sel({dim: c, "phase": p}))
            if not np.isfinite(v):
                continue  # a phase with no adjacent pair inside it
            m, s = float(nm.sel({dim: c, "phase": p})), float(ns.sel({dim: c, "phase": p}))
            band = f"{m:.3f} ± {2 * s:.3f}" if np.isfinite(m) else "—"
            out.append(f" {str(c):>10} {p:>6} {v:>9.4f} {float(same.sel({dim: c, 'phase': p})):>13.4f} {band:>17}  "
                       + _verdict(v, m, s))
    return out


def _nanmean(x) -> float:
    """Mean of the finite entries; NaN (without numpy's empty-slice warning) when there is none."""
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else float("nan")


def _overall(ds: xr.Dataset, var: str, coord: dict) -> tuple[float, float, float]:
    """Mean adjacent value of ``var`` and of its null band (mean, std) over all adjacent pairs."""
    stem = var.removesuffix("_cos")
    v = _nanmean(adjacent(ds[var].sel(coord)).values)
    m = _nanmean(ds[f"{stem}_null_mean"].sel(coord).isel(layer=slice(0, -1)).values)
    s = _nanmean(ds[f"{stem}_null_std"].sel(coord).isel(layer=slice(0, -1)).values)
    return v, m, s


def matched_seed001(ds: xr.Dataset, anchor: int) -> list[str]:
    """Seed 001's layer -> anchor operator cosines, heads matched instead of paired by index."""
    anchor = check_anchor(ds, anchor)
    if "head_matched_cos" not in ds or not ds.sizes.get("operator"):
        return []
    to_anchor = ds["head_matched_cos"].sel(layer_b=anchor)
    if not np.isfinite(to_anchor.drop_sel(layer=anchor).values).any():
        return ["", f"=== Matched heads vs anchor L={anchor} [seed 001, matched heads] ===",
                " not available: only adjacent pairs were matched (" + str(ds.attrs.get("gauge_pairs_note", "")) + ")"]
    ops = ds["operator"].values.tolist()
    out = ["", f"=== Does a head's operator keep its shape to anchor L={anchor} once heads are matched? Operator "
               "cos, mean over heads, matched vs index-paired (norm gains folded) [seed 001, matched heads] ===",
           f" {'L':>3} {'phase':>6}" + "".join(f" {op + ' matched':>12} {op + ' by index':>12}" for op in ops)]
    same = ds["head_same_index_cos"].sel(layer_b=anchor)
    for L in range(ds.sizes["layer"]):
        out.append(f" {L:>3} {str(ds.phase.values[L]):>6}" + "".join(
            f" {float(to_anchor.sel(operator=op, layer=L)):>12.4f} {float(same.sel(operator=op, layer=L)):>12.4f}"
            for op in ops))
    return out


def matched_rescale(ds: xr.Dataset, anchor: int) -> dict[str, tuple[float, float]] | None:
    """Seed 002's scalar rescale residual onto the anchor, index-paired vs matched heads, per operator.

    Head h of the anchor is paired with head ``head_assignment[anchor, L, h]``
    of layer L; the spectra are the heads analysis' ``head_singvals``.
    Returns operator -> (index-paired mean residual, matched mean residual),
    or None when either analysis or the anchor's matchings are missing.
    """
    anchor = check_anchor(ds, anchor)
    if "head_singvals" not in ds or "head_assignment" not in ds:
        return None
    n = ds.sizes["layer"]
    assign = ds["head_assignment"].sel(layer=anchor).values  # (layer_b, head)
    if (assign[[L for L in range(n) if L != anchor]] < 0).any():
        return None
    res = {}
    for op in ds["head_singvals"]["operator"].values.tolist():
        sv = ds["head_singvals"].sel(operator=op).values  # (layer, head, rank)
        y = sv[anchor]  # (head, rank)

        def resid(x):
            T = (x * y).sum(-1) / (y * y).sum(-1)
            return np.linalg.norm(x - T[:, None] * y, axis=-1) / np.linalg.norm(x, axis=-1)

        with np.errstate(invalid="ignore", divide="ignore"):  # a zero spectrum: NaN, left out of the mean
            paired = [resid(sv[L]) for L in range(n) if L != anchor]
            matched = [resid(sv[L][assign[L]]) for L in range(n) if L != anchor]
        res[op] = _nanmean(paired), _nanmean(matched)
    return res


def _seed002_word(r: float) -> str:
    return ("SUPPORTED" if r < 0.1 else "PARTIALLY SUPPORTED" if r < 0.3 else "REJECTED") if np.isfinite(r) else "—"


def composition_section(ds: xr.Dataset) -> list[str]:
    if "composition_mean" not in ds or not ds.sizes.get("composition"):
        return []
    base, null = ds.attrs.get("composition_baseline", np.nan), ds.attrs.get("composition_null_mean", np.nan)
    out = ["", "=== How strongly do earlier heads feed later ones? Q/K/V-composition (Elhage et al. 2021), mean and "
               "max over head pairs, adjacent pairs, by phase ===",
           f" unrelated heads: mean {null:.4f} (RMS {base:.4f} = 1/√hidden); invariant to each head's GL(d)",
           f" {'kind':>5} {'phase':>6} {'mean':>8} {'max':>8}  verdict"]
    order = phase_order(ds)
    mean = phase_mean(adjacent(ds["composition_mean"]), order)
    mx = phase_mean(adjacent(ds["composition_score"].max(("head", "head_b"))), order)
    for k in ds["composition"].values.tolist():
        for p in order:
            v = float(mean.sel(composition=k, phase=p))
            if not np.isfinite(v):
                continue
            out.append(f" {k:>5} {p:>6} {v:>8.4f} {float(mx.sel(composition=k, phase=p)):>8.4f}  "
                       + ("above unrelated heads" if v > 1.5 * null else "about what unrelated heads give"))
    return out


def _beyond(value: float, m: float, s: float) -> bool | None:
    return None if not (np.isfinite(value) and np.isfinite(m) and np.isfinite(s)) else bool(value > m + 2 * s)




def verdict_changes(ds: xr.Dataset, anchor: int) -> list[str]:
    """Each seed verdict as the seed computes it, next to the same question with the symmetries handled."""
    anchor = check_anchor(ds, anchor)
    rows: list[tuple[str, str, object, str, object]] = []  # question, seed's answer, its flag, gauge's, its flag
    if "aligned_cos" in ds and "mlp_matched_cos" in ds and ds.sizes.get("mlp_view"):
        views = ds["mlp_view"].values.tolist()
        for fam in ("up_proj", "down_proj", "gate_proj"):
            cands = MLP_VIEW_OF[fam]
            view = next((v for v in cands if v in views), None)
            if view is None or fam not in ds["family"].values.tolist():
                continue
            ref = reference_null(ds, fam)
            a = adjacent(ds["aligned_cos"].sel(family=fam)).values
            m = ds["aligned_null_mean"].sel(null=ref, family=fam).values[:-1]
            s = ds["aligned_null_std"].sel(null=ref, family=fam).values[:-1]
            ok = np.isfinite(a) & np.isfinite(m) & np.isfinite(s)
            hit = int((a[ok] > m[ok] + 2 * s[ok]).sum())
            seed_txt = (f"aligned cos above the {ref} null in {hit}/{ok.sum()} adjacent pairs" if ok.any()
                        else "no null draws")
            v, nm, ns = _overall(ds, "mlp_matched_cos", {"mlp_view": view})
            rows.append((f"000 {fam}: do adjacent layers share structure?", seed_txt,
                         bool(hit >= ok.sum() / 2) if ok.any() else None,
                         f"matched {view} cos {v:.4f} vs rotation null {nm:.4f} ± {2 * ns:.4f}", _beyond(v, nm, ns)))
    if "head_cos" in ds and "head_matched_cos" in ds:
        for op in ds["operator"].values.tolist():
            if op not in ds["head_cos"]["operator"].values.tolist():
                continue
            adj = _nanmean(adjacent(ds["head_cos"].sel(operator=op).mean("head")).values)
            m = float(ds["head_null_mean"].sel(operator=op, metric="cos"))
            s = float(ds["head_null_std"].sel(operator=op, metric="cos"))
            v, nm, ns = _overall(ds, "head_matched_cos", {"operator": op})
            rows.append((f"001 {op}: are adjacent layers' operators shared?",
                         f"index-paired cos {adj:.4f} vs random heads {m:.4f} ± {2 * s:.4f}", _beyond(adj, m, s),
                         f"matched {v:.4f} vs rotation null {nm:.4f} ± {2 * ns:.4f}", _beyond(v, nm, ns)))
    for op, (paired, matched) in (matched_rescale(ds, anchor) or {}).items():
        rows.append((f"002 {op}: are spectra rescaled copies of L={anchor}'s?",
                     f"mean residual {paired:.3f}", _seed002_word(paired),
                     f"heads matched: {matched:.3f}", _seed002_word(matched)))
    word = {True: "yes", False: "no", None: "n/a"}
    out = ["", f"=== Which seed verdicts change once the gauge is handled? (anchor L={anchor}) ===",
           " [seed] question: the seed's way (index-paired) -> gauge-aware (matched, against a null from the "
           "symmetries)"]
    for q, seed_txt, seed_flag, gauge_txt, gauge_flag in rows:
        change = ("n/a" if seed_flag is None or gauge_flag is None else
                  "CHANGES" if seed_flag != gauge_flag else "same")
        out.append(f" [{q[:3]}] {q[4:]} {word.get(seed_flag, seed_flag)} ({seed_txt}) -> "
                   f"{word.get(gauge_flag, gauge_flag)} ({gauge_txt}): {change}")
    out += [" [003] per-family scales ‖W‖_F are not gauge-invariant for q/k and v/o (a GL(d) or a scale traded",
            "       inside a head), up/down (per-neuron scales under SwiGLU) or any matrix a norm feeds (γ trades",
            "       with its columns): only folded, operator-level scales compare across layers",
            " [004] γ directions: γ trades with the columns it feeds, so its direction alone is gauge-dependent;",
            "       the folded maps W·diag(γ) are what the matched comparisons above use"]
    return out


def sections(ds: xr.Dataset, anchor: int = -1) -> list[str]:
    anchor = check_anchor(ds, anchor)  # not a modulo: 40 on a 30-layer model is an error, not layer 10
    lines = ["", f"Symmetry group used: {ds.attrs.get('symmetry_group', '?')}"]
    if ds.attrs.get("gauge_pairs_note"):
        lines.append(f"Pairs: {ds.attrs['gauge_pairs_note']}")
    if ds.attrs.get("gauge_qk_norm") == "folded":
        lines.append("QK-norm: q_norm/k_norm gains folded into the QK operators (W_Qᵀ diag(γ_q γ_k) W_K); the "
                     "operators' overall scale is removed by the norm, so only cosines are reported")
    lines += _block(ds, "mlp_matched_cos", "mlp_view",
                    "Do adjacent layers' MLPs share structure once neurons are matched? Matched vs index-paired "
                    "cos, adjacent pairs, by phase, against the residual-rotation null")
    lines += _block(ds, "head_matched_cos", "operator",
                    "Do adjacent layers' heads share operators once heads are matched? Matched vs index-paired "
                    "operator cos, adjacent pairs, by phase, against the residual-rotation null")
    if "head_matched_cos" in ds and ds.sizes.get("operator"):
        gain = adjacent(ds["head_matched_cos"] - ds["head_same_index_cos"]).mean("layer")
        lines.append(" seed 001 paired heads by index; matching raises the adjacent operator cos by "
                     + ", ".join(f"{op} {float(gain.sel(operator=op)):+.4f}" for op in ds["operator"].values.tolist()))
    lines += matched_seed001(ds, anchor)
    fit = matched_rescale(ds, anchor)
    if fit:
        lines += ["", f"=== Are spectra rescaled copies of anchor L={anchor}'s once heads are matched? Mean scalar "
                      "rescale residual [seed 002, matched heads] ==="]
        lines += [f" {op}: index-paired {p:.4f} ({_seed002_word(p)}), matched {m:.4f} ({_seed002_word(m)})"
                  for op, (p, m) in fit.items()]
    lines += composition_section(ds)
    lines += verdict_changes(ds, anchor)
    return lines
