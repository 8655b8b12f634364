"""How much of each geometry metric survives quantization: demo:minilm-l6 (float32) against GGUF re-quantizations.

The float32 demo model is re-quantized with ``geomlib requantize`` (the ``gguf`` package's own quantizers,
llama.cpp's layout) to each type asked for (default Q8_0 and Q4_0); then

1. ``geomlib compare`` of the float model with each re-quantization: every layer against its own quantized
   self (the diagonal), raw, matched and γ cosines: how close the weights stay;
2. the float model's own analyses (weights, heads, gauge) against the re-quantization's: for each metric,
   the Pearson correlation over all its entries (how much of its structure survives) and the largest absolute
   change, next to the metric's own spread over the model (its standard deviation), which is the scale on
   which a researcher reads it.

The heads analysis' attention entropies need a forward pass, which a re-quantized GGUF without a tokenizer
cannot run: they are left out.  Prints a Markdown table and writes it to
``benchmarks/results/quantization_table.md`` (the README quotes it).

    .venv/bin/python scripts/quantization_table.py                       # Q8_0 and Q4_0, ~2 min on 2 cores
    .venv/bin/python scripts/quantization_table.py --types Q8_0,Q5_0,Q4_0 --cache /tmp/qcache
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SOURCE = "demo:minilm-l6"
#: (analysis variable, how it is sliced, label): the metrics a researcher reads off the dashboard
METRICS = (
    ("cos", "offdiag", "weights: cos of every layer pair (index-paired)"),
    ("aligned_cos", "adjacent", "weights: aligned cos, adjacent layers"),
    ("scale", "all", "weights: ‖W‖ per layer"),
    ("resid_eff_rank", "all", "weights: effective rank of W_{L+1} − W_L"),
    ("head_cos", "offdiag", "heads: per-head QK/OV operator cos (index-paired)"),
    ("head_pa_mean", "offdiag", "heads: principal-angle cos of top-k subspaces"),
    ("head_singvals", "all", "heads: operator singular values"),
    ("mlp_matched_cos", "offdiag", "gauge: matched MLP cos (neurons matched)"),
    ("mlp_frac_fixed", "offdiag", "gauge: fraction of neurons matched to their own index"),
    ("head_matched_cos", "offdiag", "gauge: matched head operator cos"),
    ("composition_mean", "upper", "gauge: mean Q/K/V-composition score"),
)


def _values(da, how: str) -> np.ndarray:
    v = da.values
    if how == "all":
        return v.ravel()
    n = da.sizes["layer"]
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    L, Lb = da.dims.index("layer"), da.dims.index("layer_b")
    v = np.moveaxis(v, (L, Lb), (-2, -1))
    mask = {"offdiag": i != j, "adjacent": j == i + 1, "upper": j > i}[how]
    return v[..., mask].ravel()


def survival(f32, q, name: str, how: str) -> tuple[float, float, float, int]:
    """(Pearson r, max |Δ|, std of the float values, entries) over the entries finite in both."""
    a, b = _values(f32[name], how), _values(q[name].reindex_like(f32[name]), how)
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    if a.size < 2:
        return np.nan, np.nan, np.nan, int(a.size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        r = float(np.corrcoef(a, b)[0, 1])
    return r, float(np.abs(a - b).max()), float(a.std()), int(a.size)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--types", default="Q8_0,Q4_0", help="re-quantization types (default: Q8_0,Q4_0)")
    ap.add_argument("--cache", type=Path, help="cache directory (default: a temporary one)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "quantization_table.md")
    args = ap.parse_args()

    import geomlib
    from geomlib.io.requantize import requantize

    tmp = Path(tempfile.mkdtemp(prefix="geomlib-quant-"))
    cache = args.cache or tmp / "cache"
    types = [t.strip().upper() for t in args.types.split(",") if t.strip()]
    base = geomlib.compute(SOURCE, ["weights", "heads", "gauge"], cache, progress=False)
    cmp, own = {}, {}
    for t in types:
        path = requantize(SOURCE, tmp / f"minilm.{t}.gguf", t, progress=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the forward pass is switched off for a GGUF without a tokenizer
            own[t] = geomlib.compute(str(path), ["weights", "heads", "gauge"], cache, progress=False,
                                     heads={"forward_pass": False})
        cmp[t] = geomlib.compare(SOURCE, str(path), cache, progress=False)

    lines = [f"Each layer of {SOURCE} (float32) against the same layer re-quantized (mean over the 6 layers; "
             "1 = unchanged):", "",
             "| | " + " | ".join(types) + " |", "|---|" + "---|" * len(types)]
    n = base.sizes["layer"]
    d = np.arange(n)
    rows = (("raw cos (index-paired)", "raw_cos", None), ("matched MLP cos", "mlp_matched_cos", "mean"),
            ("matched head cos, QK", "head_matched_cos", "qk"), ("matched head cos, OV", "head_matched_cos", "ov"),
            ("γ cos (norm gains)", "gamma_cos", None))
    for label, var, pick in rows:
        cells = []
        for t in types:
            da = cmp[t][var]
            if pick is not None:
                da = da.sel({da.dims[0]: pick})
            v = np.moveaxis(da.values, (da.dims.index("layer"), da.dims.index("layer_b")), (-2, -1))[..., d, d]
            cells.append(f"{np.nanmean(v):.5f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", f"Each metric of {SOURCE}'s own analyses against the re-quantized model's: Pearson r over all "
              "its entries (1 = its structure survives) and the largest change, next to the metric's spread "
              "(std over the float model's entries):", "",
              "| metric | entries | spread | " + " | ".join(f"{t} r | {t} max Δ" for t in types) + " |",
              "|---|---|---|" + "---|---|" * len(types)]
    for var, how, label in METRICS:
        if var not in base or any(var not in own[t] for t in types):
            continue
        cells, n_ent, spread = [], 0, np.nan
        for t in types:
            r, dmax, spread, n_ent = survival(base, own[t], var, how)
            cells += [f"{r:.4f}", f"{dmax:.2g}"]
        lines.append(f"| {label} | {n_ent} | {spread:.2g} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
