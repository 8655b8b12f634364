"""The gauge-aware views (``matched``, ``heads_matched``) on a small constructed Dataset: values, notes, exports."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from geomlib.plot import export, views
from geomlib.plot.layout import build_figure, panels, standalone
from geomlib.plot.names import VIEW_NAMES
from geomlib.plot.spec import Selection, build_panel
from geomlib.plot.views.heads_matched import composition_kind
from geomlib.plot.views.matched import mlp_view

N, H, HIDDEN = 5, 3, 64
MLP_VIEWS = ["gate", "up_down", "mean"]
KINDS = ["q", "k", "v"]


def _sym(rng, *lead):
    """Stacks of symmetric L x L matrices with 1 on the diagonal."""
    a = rng.uniform(-0.4, 0.6, (*lead, N, N))
    a = (a + np.swapaxes(a, -1, -2)) / 2
    a[..., np.arange(N), np.arange(N)] = 1.0
    return a


def gauge_ds(pairs: str = "all", composition: bool = True, seed: int = 0) -> xr.Dataset:
    """What ``geomlib.load`` gives for a model with the gauge analysis (and the composition scores)."""
    rng = np.random.default_rng(seed)
    V, O = len(MLP_VIEWS), 2
    data = {
        "mlp_matched_cos": (("mlp_view", "layer", "layer_b"), _sym(rng, V)),
        "mlp_same_index_cos": (("mlp_view", "layer", "layer_b"), _sym(rng, V) * 0.1),
        "mlp_frac_fixed": (("layer", "layer_b"), rng.uniform(0, 1, (N, N))),
        "mlp_matched_null_mean": (("mlp_view", "layer"), rng.uniform(0, 0.1, (V, N))),
        "mlp_matched_null_std": (("mlp_view", "layer"), rng.uniform(0, 0.01, (V, N))),
        "head_matched_cos": (("operator", "layer", "layer_b"), _sym(rng, O)),
        "head_same_index_cos": (("operator", "layer", "layer_b"), _sym(rng, O) * 0.5),
        "head_unmatched_cos": (("operator", "layer", "layer_b"), _sym(rng, O) * 0.1),
        "head_different_index_cos": (("operator", "layer", "layer_b"), _sym(rng, O) * 0.1),
        "head_assignment": (("layer", "layer_b", "head"),
                            np.stack([[rng.permutation(H) for _ in range(N)] for _ in range(N)])),
        "head_matched_null_mean": (("operator", "layer"), rng.uniform(0, 0.05, (O, N))),
        "head_matched_null_std": (("operator", "layer"), rng.uniform(0, 0.005, (O, N))),
        "head_matched": (("operator", "layer", "layer_b", "head"), rng.uniform(0, 1, (O, N, N, H))),
    }
    for k in ("mlp_matched_null_mean", "mlp_matched_null_std", "head_matched_null_mean", "head_matched_null_std"):
        data[k][1][:, -1] = np.nan  # a null band for (layer, layer + 1): none for the last layer
    attrs = dict(source="toy:gauge", arch="llama", n_layers=N, n_heads=H, hidden=HIDDEN, dtype="F32",
                 identity="0123456789abcdef0123", analyses="gauge", phase_method="none",
                 gauge_params='{"pairs": "%s"}' % pairs)
    coords = dict(mlp_view=MLP_VIEWS, operator=["qk", "ov"], layer=np.arange(N), layer_b=np.arange(N),
                  head=np.arange(H), phase=("layer", ["A"] * N), phase_b=("layer_b", ["A"] * N))
    if composition:
        score = rng.uniform(0, 0.3, (len(KINDS), N, N, H, H))
        i, j = np.indices((N, N))
        score[:, i >= j] = np.nan  # earlier layer into later layer_b only
        data["composition_score"] = (("composition", "layer", "layer_b", "head", "head_b"), score)
        data["composition_mean"] = (("composition", "layer", "layer_b"), score.mean((-2, -1)))
        coords.update(composition=KINDS, head_b=np.arange(H))
        attrs["composition_baseline"] = 1 / np.sqrt(HIDDEN)
    ds = xr.Dataset(data, coords=coords, attrs=attrs)
    if pairs == "adjacent":
        i, j = np.indices((N, N))
        far = xr.DataArray(np.abs(i - j) >= 2, dims=("layer", "layer_b"))
        for v in ds.data_vars:
            if {"layer", "layer_b"} <= set(ds[v].dims) and ds[v].dtype.kind == "f":
                ds[v] = ds[v].where(~far)
    return ds


@pytest.fixture(scope="module")
def ds():
    return gauge_ds()


def _panels(ds, view, sel):
    spec = views.get(view)
    s = spec.selection(ds, sel)
    return [build_panel(p, ds, s) for p in spec.panels]


def _z(trace):
    return np.array(trace.z, dtype=float)


def test_the_gauge_aware_views_lead_the_page():
    assert VIEW_NAMES[:2] == ("matched", "heads_matched") and views.names() == VIEW_NAMES
    assert views.title("matched").startswith("1 · ") and views.title("heads_matched").startswith("2 · ")
    for v in ("cos", "operator"):  # the seed-faithful views say what they are
        assert "index-paired (gauge-confounded)" in views.get(v).title


# -- matched -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family,view", [("q_proj", "mean"), ("gate_proj", "gate"), ("up_proj", "up_down"),
                                         ("down_proj", "up_down"), ("input_ln", "mean")])
def test_the_mlp_view_follows_the_family(ds, family, view):
    assert mlp_view(ds, family) == view
    heat, same, line = _panels(ds, "matched", Selection(family=family))
    raw = Selection(family=family, mask_diagonal=False)
    heat_raw, same_raw, _ = _panels(ds, "matched", raw)
    np.testing.assert_allclose(_z(heat_raw.traces[0]), ds.mlp_matched_cos.sel(mlp_view=view).values)
    np.testing.assert_allclose(_z(same_raw.traces[0]), ds.mlp_same_index_cos.sel(mlp_view=view).values)
    assert np.isnan(np.diag(_z(heat.traces[0]))).all() and np.isnan(np.diag(_z(same.traces[0]))).all()
    assert view in heat.title and view in same.title and view in line.title


def test_up_and_down_views_when_the_activation_has_no_sign_symmetry(ds):
    split = ds.assign_coords(mlp_view=["up", "down", "mean"])
    assert mlp_view(split, "up_proj") == "up" and mlp_view(split, "down_proj") == "down"
    assert mlp_view(split, "gate_proj") == "mean"  # no gate in this model


def test_matched_heatmaps_share_a_colour_scale_and_have_colour_bars(ds):
    heat, same, _ = _panels(ds, "matched", Selection())
    a, b = heat.traces[0], same.traces[0]
    assert (a.zmin, a.zmax) == (b.zmin, b.zmax) and a.zmin == -a.zmax
    off = ~np.eye(N, dtype=bool)
    want = max(np.abs(ds.mlp_matched_cos.sel(mlp_view="mean").values[off]).max(),
               np.abs(ds.mlp_same_index_cos.sel(mlp_view="mean").values[off]).max())
    assert a.zmax == pytest.approx(want)
    assert a.showscale and b.showscale and a.colorbar.x < b.colorbar.x  # each bar in its own panel's column
    assert heat.x["domain"][1] < a.colorbar.x < same.x["domain"][0]
    assert "index-paired (gauge-confounded)" in same.title and "adjacent pairs only" not in heat.title


def test_matched_adjacent_line_and_null_band(ds):
    *_, line = _panels(ds, "matched", Selection(family="gate_proj"))
    band, null, matched, same = line.traces
    v = "gate"
    adj = [ds.mlp_matched_cos.sel(mlp_view=v, layer=L, layer_b=L + 1).item() for L in range(N - 1)]
    np.testing.assert_allclose(np.array(matched.y, dtype=float), adj)
    np.testing.assert_allclose(np.array(same.y, dtype=float),
                               [ds.mlp_same_index_cos.sel(mlp_view=v, layer=L, layer_b=L + 1).item()
                                for L in range(N - 1)])
    m = ds.mlp_matched_null_mean.sel(mlp_view=v).values[:-1]
    s = ds.mlp_matched_null_std.sel(mlp_view=v).values[:-1]
    np.testing.assert_allclose(np.array(null.y, dtype=float), m)
    np.testing.assert_allclose(np.array(band.y, dtype=float), np.concatenate([m + 2 * s, (m - 2 * s)[::-1]]))
    assert band.fill == "toself" and list(matched.x) == list(range(N - 1))


def test_adjacent_pairs_only_is_said(ds):
    adj = gauge_ds("adjacent")
    heat, same, line = _panels(adj, "matched", Selection())
    assert "adjacent pairs only" in heat.title and "adjacent pairs only" in same.title and not line.note
    hm, _, comp, _ = _panels(adj, "heads_matched", Selection())
    assert "adjacent pairs only" in hm.title and "adjacent pairs only" in comp.title
    far = _panels(adj, "heads_matched", Selection(pair=(0, 3)))
    assert far[1].note == "pair (0, 3) not matched (adjacent pairs only)"
    assert far[3].note == "no composition for pair (0, 3) (adjacent pairs only)"


# -- heads_matched -----------------------------------------------------------------------------------------
def test_head_matched_heatmap_follows_the_operator(ds):
    for op in ("qk", "ov"):
        heat = _panels(ds, "heads_matched", Selection(operator=op, mask_diagonal=False))[0]
        np.testing.assert_allclose(_z(heat.traces[0]), ds.head_matched_cos.sel(operator=op).values)
        assert op.upper() in heat.title and heat.traces[0].showscale


def test_per_head_bars_of_the_pair(ds):
    sel = Selection(operator="ov", pair=(1, 2), head=1)
    bars = _panels(ds, "heads_matched", sel)[1]
    bar, mean, band = bars.traces
    np.testing.assert_allclose(np.array(bar.y, dtype=float), ds.head_matched.sel(operator="ov", layer=1, layer_b=2))
    np.testing.assert_array_equal(np.asarray(bar.customdata), ds.head_assignment.sel(layer=1, layer_b=2).values)
    assert list(bar.marker.color).count("#ff7f0e") == 1 and bar.marker.color[1] == "#ff7f0e"
    np.testing.assert_allclose(np.array(mean.y, dtype=float),
                               [ds.head_matched_cos.sel(operator="ov", layer=1, layer_b=2).item()] * 2)
    m = ds.head_matched_null_mean.sel(operator="ov", layer=1).item()
    s = ds.head_matched_null_std.sel(operator="ov", layer=1).item()
    np.testing.assert_allclose(np.array(band.y, dtype=float), [m - 2 * s, m - 2 * s, m + 2 * s, m + 2 * s])
    assert "pair (1, 2)" in bars.title
    far = _panels(ds, "heads_matched", Selection(operator="ov", pair=(0, 3)))[1]
    assert np.isnan(np.array(far.traces[2].y, dtype=float)).all()  # the null is for adjacent pairs only


@pytest.mark.parametrize("operator,family,kind", [("qk", "q_proj", "q"), ("qk", "k_proj", "k"), ("qk", "up_proj", "k"),
                                                  ("ov", "q_proj", "v"), ("ov", "v_proj", "v")])
def test_composition_follows_operator_and_family(ds, operator, family, kind):
    sel = Selection(operator=operator, family=family, pair=(3, 1))
    assert composition_kind(ds, sel) == kind
    _, _, mean, pair = _panels(ds, "heads_matched", sel)
    np.testing.assert_allclose(_z(mean.traces[0]), ds.composition_mean.sel(composition=kind).values)
    # a pair below the diagonal shows the earlier layer's heads into the later one's
    np.testing.assert_allclose(_z(pair.traces[0]), ds.composition_score.sel(composition=kind, layer=1, layer_b=3))
    assert f"{kind.upper()}-composition" in mean.title and "1 → 3" in pair.title
    assert f"{1 / np.sqrt(HIDDEN):.3f}" in mean.title and f"{1 / np.sqrt(HIDDEN):.3f}" in pair.title


def test_composition_colours_pivot_on_the_baseline(ds):
    mean = _panels(ds, "heads_matched", Selection())[2].traces[0]
    z = ds.composition_mean.sel(composition="q").values
    b = 1 / np.sqrt(HIDDEN)
    assert mean.zmin == pytest.approx(min(np.nanmin(z), b)) and mean.zmax == pytest.approx(max(np.nanmax(z), b))
    stops = {round(float(p), 9): c for p, c in mean.colorscale}
    assert stops[round((b - mean.zmin) / (mean.zmax - mean.zmin), 9)] == "#f7f7f7"


def test_composition_of_a_layer_with_itself_is_a_note(ds):
    pair = _panels(ds, "heads_matched", Selection(pair=(2, 2)))[3]
    assert "layer 2 with itself" in pair.note and [t.type for t in pair.traces] == ["heatmap"]


def test_baseline_falls_back_to_the_hidden_size(ds):
    no_attr = ds.copy()
    no_attr.attrs = {k: v for k, v in ds.attrs.items() if k != "composition_baseline"}
    mean = _panels(no_attr, "heads_matched", Selection())[2]
    assert f"{1 / np.sqrt(HIDDEN):.3f}" in mean.title


# -- placeholders --------------------------------------------------------------------------------------------
def test_placeholders_when_the_composition_is_not_there_yet():
    old = gauge_ds(composition=False).drop_vars("head_matched")
    hm = _panels(old, "heads_matched", Selection())
    assert hm[0].note == "" and hm[0].traces[0].z is not None
    assert [p.note for p in hm[1:]] == ["head_matched not in the cached analyses",
                                        "composition_mean not in the cached analyses",
                                        "composition_score not in the cached analyses"]
    assert [[t.type for t in p.traces] for p in hm] == [list(p.traces) for p in views.get("heads_matched").panels]
    assert not [p for p in _panels(old, "matched", Selection()) if p.note]


def test_placeholders_without_the_gauge_analysis(ds):
    other = ds.assign_attrs(analyses="weights,heads")
    grid = panels(other, Selection(), ("matched", "heads_matched"))
    assert {p.note for row in grid for p in row} == {"gauge analysis not computed"}
    assert not any(p.pair_box for row in grid for p in row)
    # and a figure of every view builds (the index-paired views say what they lack)
    fig, index = build_figure(other, Selection())
    assert len(index) == len(VIEW_NAMES)


def test_missing_operator_is_said(ds):
    qk = ds.sel(operator=["qk"])
    assert _panels(qk, "heads_matched", Selection(operator="ov"))[0].note == "no operator 'ov' in this model"


# -- figure and exports -----------------------------------------------------------------------------------------
def test_standalone_figures_carry_the_values(ds):
    sel = Selection(family="up_proj", operator="ov", pair=(0, 2), mask_diagonal=False)
    fig = standalone(ds, "matched", sel)
    heat = next(t for t in fig.data if t.type == "heatmap")
    np.testing.assert_allclose(_z(heat), ds.mlp_matched_cos.sel(mlp_view="up_down").values)
    texts = " ".join(a.text or "" for a in fig.layout.annotations)  # the exported title is an annotation
    assert "1 · gauge-aware MLPs" in texts and ds.attrs["identity"][:16] in texts
    fig, index = build_figure(ds, sel, ("heads_matched",))
    comp = fig.data[index[0][3][0]]
    np.testing.assert_allclose(_z(comp), ds.composition_score.sel(composition="v", layer=0, layer_b=2))
    xa = comp.xaxis.replace("x", "xaxis") if comp.xaxis != "x" else "xaxis"
    assert list(fig.layout[xa].domain)[1] < comp.colorbar.x  # the heatmap leaves its colour bar room
    boxes = [s for s in fig.layout.shapes if s.type == "rect" and s.line.color == "black"]
    assert len(boxes) == 2 and {(s.x0, s.y0) for s in boxes} == {(1.5, -0.5)}  # the pair on both L x L heatmaps


def test_netcdf_export_of_each_view(ds, tmp_path):
    sel = Selection(family="gate_proj", operator="ov", pair=(1, 3))
    nc = export.write(ds, "matched", sel, None, tmp_path / "matched.nc")
    back = xr.open_dataset(nc, engine="netcdf4").load()
    assert set(back.data_vars) == {"mlp_matched_cos", "mlp_same_index_cos", "mlp_matched_null_mean",
                                   "mlp_matched_null_std", "mlp_frac_fixed"}
    np.testing.assert_allclose(back.mlp_matched_cos.values, ds.mlp_matched_cos.values)  # every mlp_view
    assert back.attrs["export_view"] == "matched" and back.attrs["identity"] == ds.attrs["identity"]
    nc = export.write(ds, "heads_matched", sel, None, tmp_path / "heads.nc")
    back = xr.open_dataset(nc, engine="netcdf4").load()
    # the operator the view follows is narrowed to; the composition keeps its kinds
    np.testing.assert_allclose(back.head_matched_cos.values, ds.head_matched_cos.sel(operator="ov").values)
    np.testing.assert_allclose(back.composition_score.values, ds.composition_score.values)
    assert "head_assignment" in back and "head_unmatched_cos" in back
    pair = export.view_data(ds, "heads_matched", sel, narrow_pair=True)
    np.testing.assert_allclose(pair.head_matched.values, ds.head_matched.sel(operator="ov", layer=1, layer_b=3))
    assert pair.attrs["export_pair"] == "1,3"


def test_csv_export_of_each_view(ds, tmp_path):
    csv = export.write(ds, "heads_matched", Selection(), "csv", tmp_path / "heads.csv").read_text()
    lines = csv.splitlines()
    assert lines[0].startswith("# geomlib") and "view heads_matched" in csv
    table = pd.read_csv(io.StringIO(csv), comment="#")
    rows = table[table.variable == "composition_score"]
    assert len(rows) == len(KINDS) * N * N * H * H
    row = rows[(rows["composition"] == "k") & (rows["layer"] == 0) & (rows["layer_b"] == 4) & (rows["head"] == 2)
               & (rows["head_b"] == 1)]
    assert row.value.item() == pytest.approx(ds.composition_score.sel(composition="k", layer=0, layer_b=4, head=2,
                                                                       head_b=1).item())
    csv = export.write(ds, "matched", Selection(), "csv", tmp_path / "matched.csv").read_text()
    table = pd.read_csv(io.StringIO(csv), comment="#")
    got = table[(table.variable == "mlp_matched_cos") & (table.mlp_view == "mean") & (table.layer == 1)
                & (table.layer_b == 3)].value.item()
    assert got == pytest.approx(ds.mlp_matched_cos.sel(mlp_view="mean", layer=1, layer_b=3).item())


def test_png_export_of_each_view(ds):
    if export.browser_path() is None:
        pytest.skip("no Chromium for kaleido")
    out = export.render_many(ds, [(v, Selection(pair=(1, 3)), "png") for v in ("matched", "heads_matched")])
    assert all(b.startswith(b"\x89PNG") for b in out)


def test_export_without_the_gauge_analysis_is_one_clear_error(ds):
    from geomlib.errors import InvalidArgumentError

    bare = xr.Dataset(coords=dict(layer=np.arange(N), layer_b=np.arange(N)),
                      attrs=dict(ds.attrs, analyses="weights"))
    with pytest.raises(InvalidArgumentError, match="the gauge analysis is not cached"):
        export.view_data(bare, "matched", Selection())
