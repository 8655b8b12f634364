"""Report sections of the heads analysis (torch-free)."""

from __future__ import annotations

import numpy as np
import xarray as xr

from ..phases import adjacent, phase_mean, phase_order
from ..report import band_verdict, check_anchor, check_operator


def _band(ds: xr.Dataset, kind: str, metric: str) -> tuple[float, float]:
    m = float(ds["head_null_mean"].sel(operator=kind).sel(metric=metric))
    s = float(ds["head_null_std"].sel(operator=kind).sel(metric=metric))
    return m, s


def _band_text(m: float, s: float) -> str:
    return "no null draws" if not np.isfinite(m) else f"null {m:+.3f} ± {2 * s:.3f}"


def _beside(value: float, m: float, s: float, higher: str, lower: str) -> str:
    """Where ``value`` falls against the random-head null band mean ± 2σ."""
    return band_verdict(value, m, s, higher, lower, "inside the null band: indistinguishable from random heads")


QK_NORM_NOTE = ("not reported: q_norm/k_norm normalise each head's queries and keys, so the scale of W_Q and W_K "
                "(and of their operator) does not reach the logits")


def qk_scale_meaningless(ds: xr.Dataset, kind: str) -> bool:
    """QK-norm (Qwen3, Gemma3) removes the QK operator's scale: T, operator norms and their correlations."""
    return kind.startswith("qk") and "q_norm" in str(ds.attrs.get("families", "")).split(",")


def seed001(ds: xr.Dataset, anchor: int, kind: str = "qk") -> list[str]:
    anchor, kind = check_anchor(ds, anchor), check_operator(ds, kind)
    n = ds.sizes["layer"]
    K = kind.upper()
    cos_mat = ds["head_cos"].sel(operator=kind).mean("head")
    out = ["", f"=== Does head h's {K} operator keep its shape from layer to layer? Operator cos-sim, mean over "
           f"{ds.sizes['head']} index-paired heads [seed 001] ==="]
    diag = float(np.nanmean(np.diag(cos_mat.values)))
    adj = adjacent(cos_mat).values
    m, s = _band(ds, kind, "cos")
    out.append(f" diagonal (1 by construction): {diag:.4f}")
    out.append(f" adjacent layers: mean {np.nanmean(adj):+.4f} min {np.nanmin(adj):+.4f} max {np.nanmax(adj):+.4f}"
               f"   [{_band_text(m, s)}]")
    out.append(f" layer -> anchor L={anchor}:   (T = optimal scalar onto the anchor, resid = √(1 − cos²))")
    out.append(f" {'L':>3} {'phase':>6} {'cos':>8} {'T_opt':>8} {'resid':>8}")
    c = ds["head_cos"].sel(operator=kind).sel(layer_b=anchor)
    T = ds["head_T"].sel(operator=kind).sel(layer_b=anchor).mean("head")
    r = ds["head_resid"].sel(operator=kind).sel(layer_b=anchor).mean("head")
    no_scale = qk_scale_meaningless(ds, kind)
    if no_scale:
        out.append(f" T_opt: {QK_NORM_NOTE}")
    for L in range(n):
        t = "       —" if no_scale else f"{float(T.sel(layer=L)):+8.3f}"
        out.append(f" {L:>3} {str(ds.phase.values[L]):>6} {float(c.sel(layer=L).mean()):+8.4f} "
                   f"{t} {float(r.sel(layer=L)):8.4f}")
    out.append(f" long range: cos(0, last) = {float(cos_mat[0, -1]):+.3f}, cos(mid, last) = "
               f"{float(cos_mat[n // 2, -1]):+.3f}")
    out += ["", f"=== Do the {K} operators' leading eigenvalues keep their signs? Agreement vs anchor L={anchor} "
                "(pairs eigenvalues by magnitude rank: an arbitrary pairing) [seed 001] ==="]
    thirds = np.array_split(np.arange(n), 3)
    sm, ss = _band(ds, kind, "sign_agree")
    for t in ds.topk.values:
        a = ds["head_sign_agree"].sel(operator=kind).sel(layer_b=anchor, topk=t)
        parts = " ".join(f"{name} {float(a.sel(layer=idx).mean()):.3f}"
                         for name, idx in zip(("early", "mid", "late"), thirds) if len(idx))
        out.append(f" top-{int(t):>3}: mean {float(a.mean()):.3f}  by depth: {parts}")
    out.append(f" random heads at top-{int(ds.attrs.get('eigvec_k', 8))}: {_band_text(sm, ss)}")
    fp = ds["head_frac_pos"].sel(operator=kind).mean("head").values
    out.append(f" fraction of positive eigenvalues per layer: min {np.nanmin(fp):.3f} max {np.nanmax(fp):.3f} "
               "(1/2 by construction for full-rank factors: not a finding)")
    k = int(ds.attrs.get("eigvec_k", 8))
    out += ["", f"=== Do the {K} operators' top-{k} eigensubspaces stay put? Principal angles vs anchor L={anchor} "
                "[seed 001] ==="]
    out.append(f" {'L':>3} {'meanCosPA':>10} {'minCosPA':>10} {'max_top1':>10}")
    for L in range(n):
        out.append(f" {L:>3} {float(ds['head_pa_mean'].sel(operator=kind).sel(layer=L, layer_b=anchor).mean()):>10.4f} "
                   f"{float(ds['head_pa_min'].sel(operator=kind).sel(layer=L, layer_b=anchor).mean()):>10.4f} "
                   f"{float(ds['head_top1_overlap'].sel(operator=kind).sel(layer=L, layer_b=anchor).max()):>10.4f}")
    pm, ps = _band(ds, kind, "pa_mean")
    gaps = ds["head_eigengap"].sel(operator=kind)
    near = int((gaps < 1e-3).sum())
    out.append(f" random top-{k} subspaces: mean cos {_band_text(pm, ps)}; {near} (layer, head) with a relative "
               f"eigengap < 1e-3 at the top-{k} boundary (their subspaces are not well defined)")
    to_anchor = c.mean("head").drop_sel(layer=anchor).values
    mean_to_anchor = float(np.nanmean(to_anchor))
    out += ["", f"=== Verdict: is the {K} operator shared across layers? [seed 001] ==="]
    out.append(f" mean operator cos-sim to anchor: {mean_to_anchor:+.4f}; adjacent: {np.nanmean(adj):+.4f}; "
               f"{_band_text(m, s)}")
    seed_word = ("STRONG" if mean_to_anchor > 0.9 else "MEDIUM" if mean_to_anchor > 0.5 else
                 "WEAK" if mean_to_anchor > 0.1 else "REJECTED")
    out.append(f" seed 001's scale: {seed_word}; against the null: "
               + _beside(float(np.nanmean(adj)), m, s, "adjacent operators share structure beyond random heads",
                         "adjacent operators are anti-aligned beyond random heads"))
    return out


def seed002(ds: xr.Dataset, anchor: int, kind: str = "qk") -> list[str]:
    anchor, kind = check_anchor(ds, anchor), check_operator(ds, kind)
    n, H = ds.sizes["layer"], ds.sizes["head"]
    K = kind.upper()
    sc = ds["head_shape_cos"].sel(operator=kind)
    iu = np.triu_indices(n, 1)
    per_head = np.array([np.nanmean(sc.sel(head=h).values[iu]) for h in range(H)])
    m, s = _band(ds, kind, "shape_cos")
    out = ["", f"=== Do the {K} spectra keep their shape σ/σ_max across layers? Per-head mean pairwise cos "
               "[seed 002] ===",
           f" mean {per_head.mean():.4f} std {per_head.std():.4f} min {per_head.min():.4f} max {per_head.max():.4f}"
           f"   [{_band_text(m, s)}]",
           " " + _beside(float(per_head.mean()), m, s, "shapes agree more than random heads' do",
                         "shapes agree less than random heads' do")]
    out += ["", f"=== Is layer L's {K} spectrum a rescaled copy of anchor L={anchor}'s? Scalar rescale fit "
                "[seed 002] ==="]
    out.append(f" {'L':>3} {'mean resid':>10} {'max resid':>10} {'mean T':>8}")
    rr = ds["head_rescale_resid"].sel(operator=kind).sel(layer_b=anchor)
    TT = ds["head_rescale_T"].sel(operator=kind).sel(layer_b=anchor)
    no_scale = qk_scale_meaningless(ds, kind)
    if no_scale:
        out.append(f" mean T: {QK_NORM_NOTE}; the residual (the shape) stays meaningful")
    for L in range(n):
        t = "—" if no_scale else f"{float(TT.sel(layer=L).mean()):.3f}"
        out.append(f" {L:>3} {float(rr.sel(layer=L).mean()):>10.4f} {float(rr.sel(layer=L).max()):>10.4f} {t:>8}")
    rv = rr.values
    rm, rs = _band(ds, kind, "rescale_resid")
    out.append(f" overall mean residual {np.nanmean(rv):.4f}, max {np.nanmax(rv):.4f}; frac < 0.10: "
               f"{np.mean(rv < 0.10):.3f}, < 0.20: {np.mean(rv < 0.20):.3f}   [random heads: {_band_text(rm, rs)}]")
    ent = ds["attn_entropy"] if "attn_entropy" in ds else None
    if qk_scale_meaningless(ds, kind):
        out.append(f" corr(T, entropy), corr(op_norm, entropy): {QK_NORM_NOTE}")
    elif ent is not None and np.isfinite(ent.values).any():
        cT = float(ds["head_corr_T_entropy"].sel(operator=kind).sel(layer_b=anchor))
        cO = float(ds["head_corr_opnorm_entropy"].sel(operator=kind))
        out.append(f" corr(T_L^h, entropy_L^h) = {cT:+.3f} (the seed expected negative: larger T, sharper, lower "
                   f"entropy); corr(op_norm, entropy) = {cO:+.3f}")
    else:
        out.append(" attention entropy not available: correlations skipped (the forward pass was skipped or had no "
                   "tokenizer)")
    out += ["", f"=== Do the heads of one layer share a {K} spectrum shape? Cross-head similarity [seed 002] ==="]
    ch = ds["head_cross_head_shape_cos"].sel(operator=kind).values
    out.append(" " + " ".join(f"{L}:{x:.3f}" for L, x in enumerate(ch)))
    mean_resid = float(np.nanmean(rv))
    seed_verdict = ("HYPOTHESIS SUPPORTED" if mean_resid < 0.1 else
                    "PARTIALLY SUPPORTED" if mean_resid < 0.3 else "HYPOTHESIS REJECTED for pure scalar rescale")
    out += ["", f"=== Verdict: are {K} spectra rescaled copies across depth? [seed 002] ===",
            f" seed 002's rule on mean residual {mean_resid:.3f}: {seed_verdict}",
            " against random heads of the same shapes (" + _band_text(rm, rs) + "): "
            + _beside(mean_resid, rm, rs, "residual larger than for random heads: the rescale fits worse than chance",
                      "residual below random heads: a shared spectrum shape beyond what random spectra give")]
    return out


def entropy_section(ds: xr.Dataset) -> list[str]:
    if "attn_entropy" not in ds or not np.isfinite(ds["attn_entropy"].values).any():
        return []
    e = ds["attn_entropy"]
    out = ["", "=== How focused is each layer's attention? Entropy (nats, mean over query positions and heads) ==="]
    out.append(" " + " ".join(f"{L}:{float(x):.2f}" for L, x in enumerate(e.mean("head").values)))
    out.append(" by phase: " + ", ".join(f"{p} {float(v):.3f}" for p, v in
                                         zip(phase_order(ds), phase_mean(e.mean("head"), phase_order(ds)).values)))
    return out



def sections(ds: xr.Dataset, anchor: int = -1) -> list[str]:
    anchor = check_anchor(ds, anchor)  # the sections select layer_b=anchor: -1 must become a label
    lines = entropy_section(ds)
    for op in ds["operator"].values.tolist():
        lines += seed001(ds, anchor, op) + seed002(ds, anchor, op)
    return lines
