"""Range modes (``Selection.scale``) and ``mask_diagonal`` of the L x L heatmaps, with answers known by construction."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from geomlib.plot import ranges, views
from geomlib.plot.spec import FIELDS, Selection, build_panel

from .test_views_gauge import gauge_ds

N = 6


def _small(lo=0.01, hi=0.03, seed=0):
    """A symmetric L x L matrix with 1 on the diagonal and off-diagonal values spanning [lo, hi]."""
    rng = np.random.default_rng(seed)
    a = rng.uniform(lo, hi, (N, N))
    a = (a + a.T) / 2
    a[0, 1] = a[1, 0] = lo
    a[0, 2] = a[2, 0] = hi
    np.fill_diagonal(a, 1.0)
    return a


def test_selection_has_the_new_fields_with_defaults():
    s = Selection()
    assert s.scale == "symmetric" and s.mask_diagonal is True
    assert "scale" in FIELDS and "mask_diagonal" in FIELDS and ranges.SCALES == ("symmetric", "robust", "z")
    # the dashboard builds its Selection positionally from the first seven fields
    assert Selection(-1, "q_proj", "all", "qk", -1, "cos", None) == s
    with pytest.raises(ValueError, match="scale"):
        Selection(scale="log")


def test_symmetric_and_robust_ranges_by_construction():
    z = _small()
    assert ranges.symmetric(z) == pytest.approx((-0.03, 0.03))  # the diagonal's 1s do not set the range
    lo, hi = ranges.robust(z)
    assert 0.01 <= lo < hi <= 0.03
    off = z[~np.eye(N, dtype=bool)]
    assert (lo, hi) == pytest.approx(tuple(np.percentile(off, [2, 98])))


def test_z_of_a_value_equal_to_its_null_mean_is_zero():
    z = np.full((3, 3), 0.2)
    out = ranges.zscore(z, np.array([0.2, 0.1, np.nan]), np.array([0.05, 0.05, np.nan]))
    assert out[0, 1] == 0.0 and out[1, 0] == 0.0  # pair (0, 1): null of layer 0
    assert out[1, 2] == pytest.approx(2.0)  # pair (1, 2): (0.2 - 0.1) / 0.05


def test_heat_scale_modes_and_masked_diagonal():
    z = _small()
    s = ranges.heat_scale(z, Selection(), "cos")
    assert np.isnan(np.diag(s["z"])).all() and (s["zmin"], s["zmax"]) == pytest.approx((-0.03, 0.03))
    assert s["colorbar"]["title"]["text"] == "cos"
    s = ranges.heat_scale(z, Selection(mask_diagonal=False), "cos")
    assert (np.diag(s["z"]) == 1).all() and s["zmax"] == pytest.approx(0.03)
    s = ranges.heat_scale(z, Selection(scale="robust"), "cos")
    assert 0.01 <= s["zmin"] < s["zmax"] <= 0.03
    s = ranges.heat_scale(z, Selection(scale="z"), "cos")  # no null: symmetric, and said
    assert s["zmax"] == pytest.approx(0.03) and "no null" in s["colorbar"]["title"]["text"]
    s = ranges.heat_scale(z, Selection(scale="z"), "cos", null=(0.02, 0.01), null_name="toy null")
    np.testing.assert_allclose(s["z"][~np.eye(N, dtype=bool)], (z[~np.eye(N, dtype=bool)] - 0.02) / 0.01)
    assert s["zmax"] == pytest.approx(1.0) and "toy null" in s["colorbar"]["title"]["text"]


def _cos_ds(z):
    L = np.arange(N)
    cos = xr.DataArray(z[None], dims=("family", "layer", "layer_b"), coords=dict(family=["q_proj"], layer=L,
                                                                                 layer_b=L))
    return xr.Dataset(dict(cos=cos), coords=dict(phase=("layer", ["A"] * N)),
                      attrs=dict(analyses="weights", source="toy", arch="llama", n_layers=N))


def test_the_cos_heatmap_follows_scale_and_mask():
    ds = _cos_ds(_small())
    panel = views.get("cos").panels[0]
    t = build_panel(panel, ds, Selection().resolved(ds)).traces[0]
    assert (t.zmin, t.zmax) == pytest.approx((-0.03, 0.03)) and t.z[0][0] is None  # masked: NaN -> None
    t = build_panel(panel, ds, Selection(scale="robust").resolved(ds)).traces[0]
    assert 0.01 <= t.zmin < t.zmax <= 0.03
    t = build_panel(panel, ds, Selection(scale="z").resolved(ds)).traces[0]  # no aligned null in this dataset
    assert "no null" in t.colorbar.title.text and t.zmax == pytest.approx(0.03)
    assert {"scale", "mask_diagonal"} <= set(panel.depends)


@pytest.mark.parametrize("view,panel,null", [("matched", 0, "rotation null"), ("heads_matched", 0, "matched-head null")])
def test_gauge_heatmaps_in_z_mode_use_their_null(view, panel, null):
    ds = gauge_ds()
    spec = views.get(view)
    t = build_panel(spec.panels[panel], ds, spec.selection(ds, Selection(scale="z"))).traces[0]
    assert null in t.colorbar.title.text and t.zmin == -t.zmax
    var, dim, coord = (("mlp_matched", "mlp_view", "mean") if view == "matched" else ("head_matched", "operator", "qk"))
    m = ds[f"{var}_null_mean"].sel({dim: coord}).values
    s = ds[f"{var}_null_std"].sel({dim: coord}).values
    raw = ds[f"{var}_cos"].sel({dim: coord}).values
    assert np.asarray(t.z, dtype=float)[0, 1] == pytest.approx((raw[0, 1] - m[0]) / s[0])


def test_operator_heatmap_scales_to_its_data(smol):
    spec = views.get("operator")
    t = build_panel(spec.panels[0], smol, spec.selection(smol, Selection())).traces[0]
    z = smol.head_cos.sel(operator="qk").mean("head").values
    assert t.zmax == pytest.approx(np.abs(z[~np.eye(len(z), dtype=bool)]).max()) and t.zmax < 0.5
    t = build_panel(spec.panels[0], smol, spec.selection(smol, Selection(scale="z"))).traces[0]
    assert "random-head null" in t.colorbar.title.text


@pytest.mark.parametrize("head", [-1, 2])
def test_operator_z_uses_the_null_of_what_is_shown(smol, head):
    """A mean over H heads against the null of a mean of H random heads (σ/√H), as its verdict; one head: σ."""
    spec = views.get("operator")
    t = build_panel(spec.panels[0], smol, spec.selection(smol, Selection(scale="z", head=head))).traces[0]
    H = smol.sizes["head"]
    m, s = (float(smol[v].sel(operator="qk", metric="cos")) for v in ("head_null_mean", "head_null_std"))
    da = smol.head_cos.sel(operator="qk")
    raw = (da.mean("head") if head < 0 else da.sel(head=head)).values
    sd = s / np.sqrt(H) if head < 0 else s
    assert np.asarray(t.z, dtype=float)[3, 4] == pytest.approx((raw[3, 4] - m) / sd)
    assert (f"σ/√{H}" in t.colorbar.title.text) == (head < 0)


def test_adjacent_only_heatmaps_say_why_most_cells_are_empty(smol):
    spec = views.get("cos")
    delta = build_panel(spec.panels[1], smol, spec.selection(smol, Selection()))
    assert "adjacent pairs only: computed for (L, L+1)" in delta.title
    cos = build_panel(spec.panels[0], smol, spec.selection(smol, Selection()))
    assert "adjacent pairs only" not in cos.title
    ds = gauge_ds(pairs="adjacent")
    heat = build_panel(views.get("matched").panels[0], ds, views.get("matched").selection(ds, Selection()))
    assert "adjacent pairs only: computed for (L, L+1)" in heat.title
