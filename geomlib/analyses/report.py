"""``geomlib report``: each analysis' tables as text, every verdict beside its null band.

Takes a Dataset (from :func:`geomlib.load`) and returns a string; needs no torch.
The header is here; each registered analysis contributes its own sections
(:meth:`geomlib.analyses.Analysis.report`), named by the question they answer.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import xarray as xr

from ..errors import InvalidArgumentError
from .phases import _require, phase_order

ROOT2 = math.sqrt(2.0)


def _f(x: float, spec: str = "+.4f", width: int = 10) -> str:
    return f"{'—':>{width}}" if x is None or not np.isfinite(x) else f"{x:{spec}}".rjust(width)


def _present(ds: xr.Dataset, fams) -> list[str]:
    # which families the model has: weights attrs list them; the heads analysis alone has none
    have = set(str(ds.attrs.get("families_present", "")).split(","))
    return [f for f in fams if f in have]


def _header(ds: xr.Dataset) -> list[str]:
    a = ds.attrs
    q = a.get("quantization", "none")
    lines = [
        f"geomlib report: {a.get('source')} ({a.get('arch')}, {a.get('n_layers')} layers, "
        f"{a.get('n_heads')}/{a.get('n_kv_heads')} heads, storage {a.get('dtype')})",
        f"identity {str(a.get('identity', ''))[:16]}…, geomlib {a.get('geomlib_version')}; "
        + "; ".join(f"{an} computed {a.get(an + '_created')} on {a.get(an + '_device')}"
                    for an in str(a.get("analyses", "")).split(",") if an),
        f"phases ({a.get('phase_method')}): " + ", ".join(
            f"{p}={int(ds.layer[ds.phase == p].min())}-{int(ds.layer[ds.phase == p].max())}" for p in phase_order(ds)),
    ]
    if a.get("phase_bootstrap"):
        # the boundaries' stability under resampling the text (or the sentence saying why it is unknown)
        lines.append(f"phase boundary uncertainty: {a['phase_bootstrap']}")
    if q not in (None, "none"):
        lines.append(f"NOTE: weights are quantized ({q}); every number below includes quantization noise.")
    if a.get("warnings"):
        lines.append("warnings:")
        lines += [f"  - {w}" for w in str(a["warnings"]).splitlines()]
    return lines


def check_anchor(ds: xr.Dataset, anchor: int) -> int:
    """``anchor`` as a layer index ``0..n-1`` (negative counts from the end), or one sentence.

    Every report section that compares layers to an anchor calls it, so a bad
    anchor is refused with the range instead of surfacing as xarray's KeyError
    (or, with a modulo, silently wrapping onto another layer).
    """
    _require(ds, "the report", dataset=True, dims=("layer",))
    n = ds.sizes["layer"]
    if isinstance(anchor, bool) or not isinstance(anchor, numbers.Integral):
        raise InvalidArgumentError(f"anchor layer {anchor!r} is not an integer; use 0..{n - 1} or -1")
    if not -n <= anchor < n:
        raise InvalidArgumentError(f"anchor layer {anchor} is out of range for {n} layers; use 0..{n - 1} or -1")
    return int(anchor) % n


def check_operator(ds: xr.Dataset, kind: str, var: str = "head_cos") -> str:
    """``kind`` if ``ds[var]`` has that operator (``"qk"``, ``"ov"``), else one sentence naming those it has."""
    _require(ds, "the heads report", variables=(var,), fix="compute the heads analysis (analyses=['heads'])")
    have = [str(o) for o in ds[var]["operator"].values] if "operator" in ds[var].dims else []
    if kind not in have:
        raise InvalidArgumentError(
            f"operator {kind!r} is not in this dataset's {var}; use one of {', '.join(have) or 'none (no operators)'}"
        )
    return kind


def band_verdict(value: float, m: float, s: float, above: str, below: str, inside: str) -> str:
    """Where ``value`` falls against a null band mean ± 2σ, in the caller's words ("no null band" if undefined)."""
    if not (np.isfinite(value) and np.isfinite(m) and np.isfinite(s)):
        return "no null band"
    if value > m + 2 * s:
        return above
    if value < m - 2 * s:
        return below
    return inside


def _table(title: str, cols: list[str], rows: list[tuple[str, list[str]]], first: str = "L") -> list[str]:
    out = ["", f"=== {title} ==="]
    out.append(f" {first:>6}" + "".join(f" {c:>12}" for c in cols))
    for label, cells in rows:
        out.append(f" {label:>6}" + "".join(f" {c:>12}" for c in cells))
    return out


def render(ds: xr.Dataset, anchor: int = -1) -> str:
    """The full text report: the header, then each registered analysis' sections, where computed."""
    from . import registry

    anchor = check_anchor(ds, anchor)
    _require(ds, "the report", coords=("phase",), fix="label the layers first with apply_phases(ds) "
             "(geomlib.compute and geomlib.load do it)")
    lines = _header(ds)
    present = str(ds.attrs.get("analyses", "")).split(",")
    # the headline first: analyses that compare matched units, then the index-paired (seed-faithful) ones
    order = sorted(registry.names(), key=lambda name: registry.get(name).pairing != "matched")
    for name in order:
        if name in present:
            lines += registry.get(name).report(ds, anchor)
    lines += ["", "Footnote: [seed 00N] marks the research script whose question a section answers; "
                  "index-paired metrics pair neuron i (head h) of one layer with neuron i (head h) of the other."]
    return "\n".join(lines) + "\n"
