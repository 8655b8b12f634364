"""Exported figures checked as pictures: the caption below the axis labels, nothing cut, colour bars, paper sizes.

PNG and SVG are rasterised (kaleido; Chromium for SVG) and compared with renders of the same figure
with one element hidden: the difference locates that element's pixels.  No PDF rasteriser is installed
(no poppler, pymupdf or cairosvg), so a PDF is checked for a page that holds the whole figure and for
vector text; its layout is the one the PNG and SVG checks look at.
"""

from __future__ import annotations

import copy
import io
import re
import subprocess
import warnings

import numpy as np
import pytest

from geomlib.plot import export, views
from geomlib.plot.layout import standalone
from geomlib.plot.paper import PAPER, strip_hints
from geomlib.plot.spec import Selection

pytestmark = pytest.mark.skipif(export.browser_path() is None, reason="figure export needs a Chromium")


def _png(fig, scale=1.0) -> np.ndarray:
    import plotly.io as pio
    from PIL import Image

    export._ensure_server()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        data = pio.to_image(fig, format="png", scale=scale)
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=int)


def _svg_png(fig, tmp_path, name) -> np.ndarray:
    """The figure as SVG (kaleido), rasterised by Chromium at its own size."""
    import plotly.io as pio
    from PIL import Image

    export._ensure_server()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        svg = tmp_path / f"{name}.svg"
        svg.write_bytes(pio.to_image(fig, format="svg"))
    out = tmp_path / f"{name}.png"
    subprocess.run([export.browser_path(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--screenshot={out}", f"--window-size={fig.layout.width},{fig.layout.height}",
                    svg.as_uri()], check=True, capture_output=True, timeout=120)
    return np.asarray(Image.open(out).convert("RGB"), dtype=int)


def _hide_caption(fig):
    f = copy.deepcopy(fig)
    for a in f.layout.annotations:
        if a.text and a.text.startswith("geomlib "):
            a.font.color = "rgba(0,0,0,0)"
    return f


def _hide_x_labels(fig):
    f = copy.deepcopy(fig)
    f.update_xaxes(showticklabels=False, title_text="")
    return f


def _hide_bars(fig):
    f = copy.deepcopy(fig)
    f.update_traces(showscale=False, selector=dict(type="heatmap"))
    return f


def _rows(a, b) -> np.ndarray:
    return np.nonzero((np.abs(a - b).sum(-1) > 30).any(1))[0]


def _check_picture(full, no_caption, no_labels, no_bars):
    # the caption's rows lie below the lowest tick label / axis title row
    cap, labels = _rows(full, no_caption), _rows(full, no_labels)
    assert cap.size and labels.size
    assert labels.max() < cap.min(), (labels.max(), cap.min())
    # nothing is cut at the page edge: the outermost rows and columns are background
    for edge in (full[:2], full[-2:], full[:, :2], full[:, -2:]):
        assert (edge >= 245).all(), "something touches the page edge"
    # colour bars: a column strip of graded colours where the bars were hidden
    diff = (np.abs(full - no_bars).sum(-1) > 30)
    cols = np.nonzero(diff.sum(0) > 0.3 * full.shape[0] * 0.4)[0]
    assert cols.size
    graded = max(len({tuple(p) for p in full[diff[:, c], c]}) for c in cols)
    assert graded >= 20  # many distinct colours down one column


@pytest.mark.parametrize("view,width", [(v, w) for v in ("cos", "operator", "matched") for w in (None, "page")]
                         + [("cos", "column"), ("heads_matched", "column")])
def test_png_caption_below_labels_nothing_cut_colour_bars(smol, view, width):
    fig = standalone(smol, view, Selection(), width)
    scale = 2 if width else 1
    full = _png(fig, scale)
    _check_picture(full, _png(_hide_caption(fig), scale), _png(_hide_x_labels(fig), scale), _png(_hide_bars(fig), scale))


def test_svg_caption_below_labels_nothing_cut_colour_bars(smol, tmp_path):
    fig = standalone(smol, "cos", Selection(), "page")
    _check_picture(_svg_png(fig, tmp_path, "full"), _svg_png(_hide_caption(fig), tmp_path, "nocap"),
                   _svg_png(_hide_x_labels(fig), tmp_path, "nolab"), _svg_png(_hide_bars(fig), tmp_path, "nobar"))


@pytest.mark.parametrize("width,inches", [("column", 3.5), ("page", 7.2)])
def test_paper_widths_png_at_300_dpi_and_vector_pdf(smol, width, inches):
    png = export.render(smol, "cos", Selection(), "png", width=width)
    from PIL import Image

    im = Image.open(io.BytesIO(png))
    assert abs(im.size[0] - inches * 300) <= 3 and PAPER[width] == inches
    pdf = export.render(smol, "cos", Selection(), "pdf", width=width)
    fig = standalone(smol, "cos", Selection(), width)
    box = [float(v) for v in re.search(rb"/MediaBox\s*\[([^\]]*)\]", pdf).group(1).split()]
    # the page holds the whole figure (72 pt an inch, 96 CSS px an inch): nothing is cut at its edges
    assert box[2] == pytest.approx(fig.layout.width * 0.75, abs=1.5)
    assert box[3] == pytest.approx(fig.layout.height * 0.75, abs=1.5)
    assert box[2] == pytest.approx(inches * 72, abs=1.5)
    assert b"/Font" in pdf  # text stays text (vector fonts), not pixels
    if width == "column":  # four panels in one paper column: two a row
        assert len({round(a.y, 3) for a in fig.layout.annotations if a.yanchor == "bottom" and a.name != "title"
                    and a.xref == "paper"}) == 2


def test_default_export_size_is_unchanged(smol):
    from PIL import Image

    im = Image.open(io.BytesIO(export.render(smol, "cos", Selection(), "png")))
    assert im.size[0] == 1600


def test_exported_titles_drop_interaction_hints(smol):
    assert strip_hints("QK cos · mean (click a cell)") == "QK cos · mean"
    assert strip_hints("per-head operators (click a cell for the pair's detail)") == "per-head operators"
    assert strip_hints("γ PCA (colour: phase; click a point)") == "γ PCA (colour: phase)"
    for view in ("operator", "gamma", "cos"):
        for width in (None, "page"):
            fig = standalone(smol, view, Selection(), width)
            texts = [fig.layout.title.text] + [a.text for a in fig.layout.annotations]
            assert any(views.title(view).split(" (click")[0] in (t or "") for t in texts)
            assert not any("click" in (t or "") for t in texts), (view, width)


def test_bad_width_is_refused(smol, tmp_path):
    from geomlib.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match="width"):
        export.write(smol, "cos", Selection(), None, tmp_path / "x.png", width="poster")
