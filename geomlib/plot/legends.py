"""Per-panel legends: each panel with several named traces gets its own plotly legend, inside its plot area.

Plotly places a legend in paper coordinates, not per subplot, so its place is computed from the
subplot's axis domains, here, after they are final (:func:`geomlib.plot.paper.finish` moves them).
Which corner it takes is kept in the legend's own ``xanchor`` / ``yanchor``, so placing it again
after the domains changed needs nothing else.
"""

from __future__ import annotations

import plotly.graph_objects as go

#: how far in from the plot area's edges a legend sits, in paper coordinates
PAD_X, PAD_Y = 0.006, 0.02
CORNERS = ("top right", "top left", "bottom right", "bottom left")


def style(corner: str, font_size: float = 9) -> dict:
    """A legend's look, anchored at ``corner`` of its panel: small text, a semi-transparent box."""
    if corner not in CORNERS:
        raise ValueError(f"legend corner {corner!r} is not one of {', '.join(CORNERS)}")
    v, h = corner.split()
    return dict(xref="paper", yref="paper", xanchor=h, yanchor=v, bgcolor="rgba(255,255,255,0.7)",
                bordercolor="rgba(0,0,0,0.15)", borderwidth=1, font=dict(size=font_size), tracegroupgap=0,
                itemwidth=30, orientation="v")


def legend_for(idx: int) -> str:
    """The legend id of subplot number ``idx`` (1-based, row-major): ``legend2`` for the first.

    The same as :func:`geomlib.plot.spec.legend_id` of a panel's column in a one-row figure, and
    in a paper column's grid (panel k is subplot k + 1 there too).
    """
    return f"legend{idx + 1}"


def subplot_of(lid: str) -> int | None:
    """The subplot number a legend id belongs to (None for the default ``legend``)."""
    tail = lid[len("legend"):]
    return int(tail) - 1 if lid.startswith("legend") and tail.isdigit() and int(tail) >= 2 else None


def ids(fig: go.Figure) -> list[str]:
    """The per-panel legend ids declared in ``fig``'s layout."""
    return [k for k in fig.layout.to_plotly_json() if subplot_of(k) is not None]


def place(fig: go.Figure) -> go.Figure:
    """Move every panel legend to its corner of its subplot's current domains; returns ``fig``."""
    for lid in ids(fig):
        idx = subplot_of(lid)
        sfx = "" if idx == 1 else str(idx)
        leg = fig.layout[lid]
        x0, x1 = fig.layout["xaxis" + sfx].domain or (0, 1)
        y0, y1 = fig.layout["yaxis" + sfx].domain or (0, 1)
        leg.update(x=x1 - PAD_X if leg.xanchor == "right" else x0 + PAD_X,
                   y=y1 - PAD_Y if leg.yanchor == "top" else y0 + PAD_Y)
    return fig


def font(fig: go.Figure, size: float) -> None:
    """Every panel legend's text at ``size`` (paper exports use smaller text)."""
    for lid in ids(fig):
        fig.layout[lid].font.size = size


__all__ = ["CORNERS", "font", "ids", "legend_for", "place", "style", "subplot_of"]
