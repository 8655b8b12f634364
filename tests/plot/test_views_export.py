"""Panels, the linked figure, standalone views and exports, on the committed demo datasets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from geomlib.errors import InvalidArgumentError, MissingDependencyError
from geomlib.plot import export, views
from geomlib.plot.layout import build_figure, caption, standalone
from geomlib.plot.names import FORMATS, VIEW_NAMES
from geomlib.plot.views import Selection

SELECTIONS = [Selection(), Selection(anchor=3, family="post_attn_ln", phase="A", operator="ov", head=2,
                                     op_metric="pa_mean", pair=(1, 2))]


@pytest.mark.parametrize("sel", SELECTIONS)
def test_trace_counts_do_not_depend_on_the_data(smol, minilm, sel):
    # the dashboard updates traces in place: every panel must keep its number of traces
    a, _ = build_figure(smol, sel)
    b, _ = build_figure(minilm, sel)
    weights_only = minilm[[v for v in minilm.data_vars if not v.startswith(("head_", "attn"))]]
    c, _ = build_figure(weights_only.assign_attrs(minilm.attrs, analyses="weights"), sel)
    assert len(a.data) == len(b.data) == len(c.data)
    assert [t.type for t in a.data] == [t.type for t in c.data]


def test_hover_names_values_and_layers(smol):
    fig, index = build_figure(smol, Selection(family="k_proj"))
    heat = fig.data[index[VIEW_NAMES.index("cos")][0][0]]
    assert "layer %{y}" in heat.hovertemplate and "layer_b %{x}" in heat.hovertemplate and "k_proj" in \
        heat.hovertemplate
    assert np.asarray(heat.z).flags["C_CONTIGUOUS"]
    want = smol.cos.sel(family="k_proj").values.copy()
    np.fill_diagonal(want, np.nan)  # mask_diagonal (default): the trivial 1s take no colour
    np.testing.assert_allclose(np.asarray(heat.z, dtype=float), want)


def test_standalone_views_carry_provenance(smol):
    for view in VIEW_NAMES:
        fig = standalone(smol, view, Selection())
        texts = " ".join(a.text or "" for a in fig.layout.annotations)
        assert smol.attrs["identity"][:16] in texts and "geomlib" in texts and "Q4_1" in texts
    assert views.names() == VIEW_NAMES


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


def test_check_path_before_any_work(tmp_path):
    assert export.check_path(tmp_path / "fig.PDF") == "pdf"
    assert export.check_path(tmp_path / "data.nc") == "netcdf"
    assert export.check_path(tmp_path / "whatever.bin", "csv") == "csv"
    with pytest.raises(InvalidArgumentError, match="cannot tell the format of fig.bmp.*--format"):
        export.check_path(tmp_path / "fig.bmp")
    with pytest.raises(InvalidArgumentError, match="does not exist"):
        export.check_path(tmp_path / "no" / "such" / "fig.png")
    with pytest.raises(InvalidArgumentError, match="format 'gif'"):
        export.check_path(tmp_path / "fig.png", "gif")
    for err in (lambda: export.check_path(tmp_path / "x.bmp"), lambda: export.check_path(tmp_path / "a" / "x.png")):
        with pytest.raises(InvalidArgumentError) as exc:
            err()
        assert "\n" not in str(exc.value)


def test_operator_data_follows_the_operator_and_narrows_on_request(smol, tmp_path):
    sel = Selection(operator="ov", head=3, pair=(4, 9))
    full = export.view_data(smol, "operator", sel)
    assert "operator" not in full.dims and str(full["operator"].values) == "ov"
    assert full.sizes["head"] == 9 and full.sizes["layer_b"] == 30
    np.testing.assert_allclose(full.head_cos.values, smol.head_cos.sel(operator="ov").values)

    path = export.write(smol, "operator", sel, None, tmp_path / "pair.nc", narrow_pair=True)
    pair = xr.open_dataset(path, engine="netcdf4").load()
    assert "layer_b" not in pair.dims and pair.attrs["export_pair"] == "4,9"
    assert pair.sizes["layer"] == 2 and list(pair.layer.values) == [4, 9]  # the spectra of both layers
    np.testing.assert_allclose(pair.head_cos.values, smol.head_cos.sel(operator="ov", layer=4, layer_b=9).values)

    path = export.write(smol, "operator", sel, None, tmp_path / "head.nc", narrow_head=True)
    head = xr.open_dataset(path, engine="netcdf4").load()
    assert "head" not in head.dims and int(head["head"]) == 3 and head.sizes["layer_b"] == 30
    np.testing.assert_allclose(head.head_sign_agree.values, smol.head_sign_agree.sel(operator="ov", head=3).values)

    both = export.render(smol, "operator", sel, "csv", narrow_head=True, narrow_pair=True).decode().splitlines()
    row = next(ln for ln in both if ln.startswith("head_cos,"))
    assert float(row.split(",")[1]) == pytest.approx(float(smol.head_cos.sel(operator="ov", layer=4, layer_b=9,
                                                                              head=3)))
    # "mean" narrows nothing: the view averages every head
    mean = export.view_data(smol, "operator", Selection(head=-1, pair=(4, 9)), narrow_head=True)
    assert mean.sizes["head"] == 9


def test_data_of_views_that_do_not_follow_a_field_is_not_narrowed_by_it(smol):
    ent = export.view_data(smol, "entropy", Selection(head=2, pair=(1, 2)), narrow_head=True, narrow_pair=True)
    assert ent.attn_entropy.dims == ("layer", "head") and "export_pair" not in ent.attrs
    gamma = export.view_data(smol, "gamma", Selection(family="q_proj"))  # the γ view shows a norm family
    assert str(gamma["family"].values) == "input_ln" and "family" not in gamma.dims
    assert {"gamma_proj_top1", "gamma_resid_top1"} <= set(gamma.data_vars)


def test_data_export_of_a_view_without_data_says_what_to_compute(minilm):
    weights_only = minilm[[v for v in minilm.data_vars if not v.startswith(("head_", "attn"))]]
    with pytest.raises(InvalidArgumentError, match="heads analysis is not cached.*--analyses heads"):
        export.view_data(weights_only.assign_attrs(minilm.attrs, analyses="weights"), "entropy", Selection())


def test_check_path_refuses_every_path_write_would_fail_on(tmp_path):
    (tmp_path / "fig.png").mkdir()
    (tmp_path / "notes.txt").write_text("x")
    cases = [
        ("", None, "output path is empty"),
        (tmp_path / "fig.png", None, "is a directory"),
        (tmp_path, "png", "is a directory"),
        (tmp_path / "notes.txt" / "fig.png", None, "is a file, not a directory"),
    ]
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        (ro / "probe").touch()
    except OSError:  # not root: a read-only directory is unwritable
        cases.append((ro / "fig.png", None, "not writable"))
    else:  # root writes anywhere but sysfs
        (ro / "probe").unlink()
        if Path("/sys").is_dir():
            cases.append((Path("/sys") / "fig.png", None, "not writable"))
    for path, fmt, words in cases:
        with pytest.raises(InvalidArgumentError, match=words) as exc:
            export.check_path(path, fmt)
        assert "\n" not in str(exc.value)
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith((".geomlib-probe", "tmp"))]


def test_write_checks_the_path_before_rendering(smol, tmp_path, monkeypatch):
    def must_not_render(*args, **kwargs):
        raise AssertionError("rendered before the path was checked")

    monkeypatch.setattr(export, "render", must_not_render)
    (tmp_path / "fig.png").mkdir()
    for path in (tmp_path / "no" / "fig.png", tmp_path / "fig.png", tmp_path / "fig.bmp"):
        with pytest.raises(InvalidArgumentError):
            export.write(smol, "cos", Selection(), None, path)


def test_write_leaves_no_temporary_file_when_the_target_cannot_be_replaced(smol, tmp_path, monkeypatch):
    """A directory appearing at the path after the check: one sentence, and the temporary file is removed."""
    out = tmp_path / "view.csv"
    real_render = export.render

    def render_then_block(*args, **kwargs):
        data = real_render(*args, **kwargs)
        out.mkdir()  # the path changes between the check and the write
        return data

    monkeypatch.setattr(export, "render", render_then_block)
    with pytest.raises(InvalidArgumentError, match="cannot write") as exc:
        export.write(smol, "cos", Selection(), None, out)
    assert "\n" not in str(exc.value)
    assert not list(tmp_path.glob(".*.tmp"))
