"""Make an exported figure paper-ready: paper sizes, no interaction hints, text that fits, a caption below.

:func:`finish` takes a standalone figure (one view, one row) and

* sizes it for one or two paper columns (``width="column"`` 3.5 in, ``"page"`` 7.2 in; at 96 CSS
  pixels an inch, so a PNG at :func:`png_scale` is 300 dpi) or keeps the screen size (``None``);
* drops interaction hints ("(click a cell)") from every title;
* wraps the title, the subplot titles and the provenance caption to the width they have;
* puts the caption below the x-axis tick labels and titles, growing the bottom margin to hold it,
  and the top margin to hold the wrapped titles, so nothing is cut at the page edge;
* keeps each colour bar, with its tick labels and title, in a strip of its own panel's column;
* keeps each panel's legend inside its own plot area, in smaller text at paper widths.
"""

from __future__ import annotations

import re

import plotly.graph_objects as go

from . import legends

#: paper widths in inches
PAPER = {"column": 3.5, "page": 7.2}
CSS_DPI, DPI = 96, 300
WIDTHS = (None, *PAPER)
#: the plot area's height at screen size (the dashboard's row less its margins)
SCREEN_PLOT_HEIGHT = 330
_HINT = re.compile(r"\s*\((?:click|double-click|hover|drag)\b[^)]*\)", re.IGNORECASE)
#: a hint that ends a parenthesis: "(colour: phase; click a point)"
_TAIL_HINT = re.compile(r";\s*(?:click|double-click|hover|drag)\b[^);]*(?=\))", re.IGNORECASE)


def strip_hints(text: str) -> str:
    """``text`` without interaction hints such as "(click a cell)" or "(click a cell for the pair's detail)"."""
    return _TAIL_HINT.sub("", _HINT.sub("", text or ""))


def png_scale(width: str | None) -> float:
    """The PNG scale: 300 dpi at a paper width, 1 (screen pixels) otherwise."""
    return DPI / CSS_DPI if width in PAPER else 1.0


def wrap(text: str, chars: int) -> str:
    """Greedy wrap of ``text`` (plotly markup, ``<br>`` line breaks kept) to about ``chars`` characters a line."""
    out = []
    for line in (text or "").split("<br>"):
        if len(_plain(line)) <= chars:
            out.append(line)
            continue
        cur = ""
        for word in line.split(" "):  # a break inside <b>…</b> is fine for plotly
            if cur and len(_plain(cur)) + 1 + len(_plain(word)) > chars:
                out.append(cur)
                cur = word
            else:
                cur = f"{cur} {word}" if cur else word
        out.append(cur)
    return "<br>".join(out)


def _plain(text: str) -> str:
    return re.sub(r"<[^>]+>", "", text)


def _lines(text: str) -> int:
    return (text or "").count("<br>") + 1


def _chars(px: float, font: float) -> int:
    """About how many characters of size ``font`` fit in ``px`` pixels."""
    return max(int(px / (0.56 * font)), 12)


def finish(fig: go.Figure, cols: int, caption: str, title: str, width: str | None = None, rows: int = 1) -> go.Figure:
    """Lay out a standalone figure of ``rows`` x ``cols`` panels (see the module docstring); returns it."""
    if width is not None and width not in PAPER:
        raise ValueError(f"width {width!r} is not one of {', '.join(PAPER)}")
    paper = width is not None
    W = round(PAPER[width] * CSS_DPI) if paper else int(fig.layout.width or 1600)
    base, sub, cap, big = (8, 8, 6.5, 10) if paper else (12, 11, 9, 14)
    left, right = (4.5 * base, 8) if paper else (50, 20)
    usable = W - left - right
    # subplot titles: no hints, wrapped to their panel's width
    captions = {caption}
    panel_px = usable * (1 - 0.06 * (cols - 1)) / cols
    sub_lines = 1
    anns = []
    for a in fig.layout.annotations:
        a = a.to_plotly_json()
        if a.get("text") in captions:
            continue
        if a.get("yanchor") == "bottom" and a.get("xref") == "paper":  # a subplot title
            a["text"] = wrap(strip_hints(a["text"]), _chars(panel_px, sub))
            a["font"] = dict(size=sub)
            sub_lines = max(sub_lines, _lines(a["text"]))
        anns.append(a)
    title = wrap(strip_hints(title), _chars(usable, big))
    top = 10 + _lines(title) * big * 1.5 + sub_lines * sub * 1.35 + 12
    # below the plot area: tick labels, then the axis title, then the caption
    axis_block = 2.9 * base + 16
    cap_text = wrap(caption, _chars(W - 12, cap))
    bottom = axis_block + _lines(cap_text) * cap * 1.4 + 12
    anns.append(dict(text=cap_text, xref="paper", yref="paper", x=0, y=0, xanchor="left", yanchor="top",
                     xshift=-left + 6, yshift=-axis_block, align="left", showarrow=False,
                     font=dict(size=cap, color="#555")))
    row_h = min(max(usable / cols * 0.95, 140), 300) if paper else SCREEN_PLOT_HEIGHT
    plot_h = row_h
    if rows > 1:  # each further row needs room for its subplot titles and the x labels of the row above
        gap_px = axis_block + sub_lines * sub * 1.35 + 10
        plot_h = row_h * rows + gap_px * (rows - 1)
        _row_domains(fig, anns, rows, cols, row_h, gap_px, plot_h)
    # the title as an annotation: plotly anchors a multi-line annotation by its box, a title by its first line
    anns.append(dict(text=title, xref="paper", yref="paper", x=0.5, y=1, xanchor="center", yanchor="bottom",
                     yshift=sub_lines * sub * 1.35 + 10, showarrow=False, font=dict(size=big), name="title"))
    fig.layout.annotations = anns  # assigned: update_layout would merge into the old ones
    fig.update_layout(width=W, height=round(top + plot_h + bottom),
                      margin=dict(l=left, r=right, t=top, b=bottom, autoexpand=False),
                      title=dict(text=""),
                      font=dict(size=base))
    fig.update_xaxes(title_font=dict(size=base), tickfont=dict(size=base), title_standoff=4)
    fig.update_yaxes(title_font=dict(size=base), tickfont=dict(size=base), title_standoff=4)
    _colorbars(fig, W - left - right, base)
    legends.font(fig, base * 0.85 if paper else 9)
    legends.place(fig)  # after the domains moved: each legend stays inside its own panel
    return fig


def _row_domains(fig: go.Figure, anns: list, rows: int, cols: int, row_h: float, gap_px: float,
                 plot_h: float) -> None:
    """Rows ``row_h`` px high, ``gap_px`` apart: their y domains, subplot titles (``anns``) and colour bars."""
    tops = []
    for r in range(rows):
        top = 1 - r * (row_h + gap_px) / plot_h
        bottom = max(top - row_h / plot_h, 0.0)
        tops.append(top)
        for c in range(cols):
            ya = fig.get_subplot(r + 1, c + 1).yaxis
            ya.domain = [bottom, top]
            name = "y" + ya.plotly_name[5:]
            for t in fig.data:
                if t.type == "heatmap" and (t.yaxis or "y") == name:
                    t.colorbar.update(y=(top + bottom) / 2, len=0.95 * (top - bottom), yanchor="middle")
    # subplot titles sit at the top of their row's old domain: move them, row by row
    titles = [a for a in anns if a.get("yanchor") == "bottom" and a.get("xref") == "paper"]
    old = sorted({round(a["y"], 6) for a in titles}, reverse=True)
    for a in titles:
        a["y"] = tops[min(old.index(round(a["y"], 6)), rows - 1)]


def _colorbars(fig: go.Figure, usable: float, base: float) -> None:
    """Each heatmap's colour bar in a strip at the right of its panel's column, wide enough for its labels."""
    strip = (12 + 5.2 * base) / usable  # bar, tick labels, title (paper coordinates)
    for t in fig.data:
        if t.type != "heatmap" or not t.showscale:
            continue
        axis = fig.layout["xaxis" + (t.xaxis or "x")[1:]]
        d0, d1 = axis.domain
        x1 = d0 + (d1 - d0) / 0.83  # the column's right end (the panel left 17 % of it to the bar)
        axis.domain = [d0, max(x1 - strip, d0 + 0.5 * (x1 - d0))]
        t.colorbar.update(x=axis.domain[1] + 4 / usable, xanchor="left", thickness=max(6, base * 0.8),
                          tickfont=dict(size=base * 0.9), title=dict(side="right", font=dict(size=base * 0.9)))


__all__ = ["PAPER", "WIDTHS", "finish", "png_scale", "strip_hints", "wrap"]
