"""Panels, the linked figure, standalone views and exports, on the committed demo datasets."""

from __future__ import annotations

import xarray as xr
from pathlib import Path

import numpy as np
import pytest

from geomlib.dataset import cached
from geomlib.errors import InvalidArgumentError, MissingDependencyError
from geomlib.plot import export
from geomlib.plot.layout import build_figure, caption, standalone
from geomlib.plot.names import FORMATS, VIEW_NAMES
from geomlib.plot.views import VIEWS, Selection

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def smol():
    return cached("demo:smollm2-135m", ROOT / "cache")


@pytest.fixture(scope="module")
def minilm():
    return cached("demo:minilm-l6", ROOT / "cache")


SELECTIONS = [Selection(), Selection(anchor=3, family="post_attn_ln", phase="A", operator="ov", head=2,
                                     op_metric="pa_mean", pair=(1, 2))]


@pytest.mark.parametrize("sel", SELECTIONS)
def test_trace_counts_do_not_depend_on_the_data(smol, minilm, sel):
    # the dashboard updates traces in place: every panel must keep its number of traces
    a, _ = build_figure(smol, sel)
    b, _ = build_figure(minilm, sel)
    weights_only = minilm[[v for v in minilm.data_vars if not v.startswith(("qk_", "ov_", "attn"))]]
    c, _ = build_figure(weights_only.assign_attrs(minilm.attrs), sel)
    assert len(a.data) == len(b.data) == len(c.data)


def test_hover_names_values_and_layers(smol):
    fig, index = build_figure(smol, Selection(family="k_proj"))
    heat = fig.data[index[0][0][0]]
    assert "layer %{y}" in heat.hovertemplate and "layer_b %{x}" in heat.hovertemplate and "k_proj" in \
        heat.hovertemplate
    assert np.asarray(heat.z).flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(np.asarray(heat.z, dtype=float), smol.cos.sel(family="k_proj").values)


def test_standalone_views_carry_provenance(smol):
    for view in VIEW_NAMES:
        fig = standalone(smol, view, Selection())
        texts = " ".join(a.text or "" for a in fig.layout.annotations)
        assert smol.attrs["identity"][:16] in texts and "geomlib" in texts and "Q4_1" in texts
    assert tuple(VIEWS) == VIEW_NAMES


def test_images_in_every_format_in_one_batch(smol):
    jobs = [(v, Selection(), f) for v in ("cos", "operator") for f in ("png", "svg", "pdf")]
    out = export.render_many(smol, jobs)
    magic = {"png": b"\x89PNG", "pdf": b"%PDF"}
    for (_, _, fmt), data in zip(jobs, out):
        if fmt == "svg":
            assert b"<svg" in data[:400]
        else:
            assert data.startswith(magic[fmt])


def test_data_exports(smol, tmp_path):
    sel = Selection(family="v_proj", anchor=4)
    nc = export.write(smol, "cos", sel, None, tmp_path / "cos.nc")
    back = xr.open_dataset(nc, engine="netcdf4").load()
    np.testing.assert_allclose(back.cos.values, smol.cos.sel(family="v_proj").values)
    assert "anchor 4" in back.attrs["export_caption"] and back.attrs["identity"] == smol.attrs["identity"]
    csv = export.write(smol, "entropy", sel, "csv", tmp_path / "entropy.csv").read_text()
    lines = csv.splitlines()
    assert lines[0].startswith("# geomlib") and "identity" in lines[0]
    header = next(ln for ln in lines if not ln.startswith("#"))
    assert header.split(",")[:3] == ["variable", "layer", "head"]
    assert len([ln for ln in lines if ln.startswith("attn_entropy,")]) == 30 * 9


def test_export_argument_errors(smol, tmp_path):
    with pytest.raises(InvalidArgumentError, match="cannot tell the format"):
        export.write(smol, "cos", Selection(), None, tmp_path / "fig.bmp")
    with pytest.raises(InvalidArgumentError, match="view 'nope'"):
        export.render(smol, "nope", Selection(), "png")
    with pytest.raises(InvalidArgumentError, match="format 'gif'"):
        export.render(smol, "cos", Selection(), "gif")
    assert set(FORMATS) == {"png", "svg", "pdf", "netcdf", "csv"}


def test_missing_browser_is_reported_clearly(smol, monkeypatch):
    # the finder is replaced because this machine has a Chromium; the message is what is under test
    monkeypatch.setattr(export, "browser_path", lambda: None)
    monkeypatch.setattr(export, "_server_started", False)
    with pytest.raises(MissingDependencyError, match="needs a Chromium.*apt-get install chromium"):
        export.render(smol, "cos", Selection(), "svg")
    assert export.render(smol, "cos", Selection(), "csv").startswith(b"# geomlib")  # data exports still work


def test_caption_names_the_selection(smol):
    text = caption(smol, "operator", Selection(operator="ov", head=3, pair=(2, 5)))
    assert "operator ov" in text and "head 3" in text and "pair (2, 5)" in text
