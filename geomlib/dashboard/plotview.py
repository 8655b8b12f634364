"""A small anywidget around plotly.js: the dashboard's one figure, updated by patches.

plotly's ``FigureWidget`` answers every update with a diff of the whole layout
and of every trace sent back to the kernel; with 13 linked panels that costs
more than the redraw itself.  This widget sends plotly.js once, the figure
once per model, then only what changed: trace objects for data that changed,
``relayout`` keys for overlays (moving a shape redraws that shape alone).
Clicks come back as one small message.  Its script is ``plotview.js``.

What plotly would redraw on every data change but need not, the page draws
itself, from the same figure: overlays (anchor lines, phase bands, selections),
the heatmaps' colour bars and the panels' legends (a click hides a trace, a
double click shows it alone).  Exported figures keep plotly's own.

The views being looked at redraw first: each view tells the kernel how much of
the window it fills (``in_view``; the kernel rebuilds and sends the most
visible first) and whether it is near it (``near``); the page redraws one
view per frame, in the order the patches came, so the first is on screen
before the next is drawn; a view far out of sight keeps its patches, merged,
until it comes within a window's height of the viewport or the page has had
no change for 1.5 s.
"""

from __future__ import annotations

import base64
import json
import math
from functools import lru_cache
from pathlib import Path

import anywidget
import numpy as np
import traitlets
from plotly.utils import PlotlyJSONEncoder

_ESM = (Path(__file__).parent / "plotview.js").read_text(encoding="utf-8")


#: plotly.js config of every view: no logo, nothing that sends the figure or its data to a cloud service
CONFIG = {
    "displaylogo": False,
    "responsive": False,
    "showLink": False,
    "showSendToCloud": False,
    "showEditInChartStudio": False,
    "modeBarButtonsToRemove": ["sendDataToCloud", "editInChartStudio"],
}


@lru_cache(maxsize=1)
def _plotly_js() -> str:
    import plotly

    return (Path(plotly.__file__).parent / "package_data" / "plotly.min.js").read_text(encoding="utf-8")


def to_json_safe(obj):
    """Plain JSON types for widget messages: numpy arrays as (nested) lists, NaN and ±inf as null.

    Lists rather than plotly's base64 typed arrays keep ``gd.data`` readable as plain numbers in
    the page (the browser tests read it); the arrays here are small.
    """
    if isinstance(obj, dict):
        if "bdata" in obj and "dtype" in obj:  # plotly's own base64 typed-array encoding (to_plotly_json)
            arr = np.frombuffer(base64.b64decode(obj["bdata"]), dtype=np.dtype(obj["dtype"]))
            if obj.get("shape"):
                arr = arr.reshape([int(n) for n in str(obj["shape"]).split(",")])
            return to_json_safe(arr)
        return {str(k): to_json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind == "f":
            return to_json_safe(obj.tolist())
        if obj.dtype.kind in "iub":
            return obj.tolist()
        return [to_json_safe(v) for v in obj.tolist()]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, (np.floating,)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    return json.loads(json.dumps(obj, cls=PlotlyJSONEncoder))


class PlotView(anywidget.AnyWidget):
    """Traits: ``figure`` (the whole figure, per model), ``overlays`` (its shapes, drawn over it), ``patch``
    (changes); from the browser ``click``, ``in_view`` (the share of the window it fills) and ``near``."""

    _esm = _ESM
    _plotly = traitlets.Unicode().tag(sync=True)
    name = traitlets.Unicode("").tag(sync=True)
    config = traitlets.Dict(default_value=CONFIG).tag(sync=True)
    figure = traitlets.Dict().tag(sync=True)
    overlays = traitlets.List().tag(sync=True)
    patch = traitlets.Dict().tag(sync=True)
    click = traitlets.Dict().tag(sync=True)
    #: the share of the browser's window the view fills, 0 to 1 (set by the browser; 1 without one)
    in_view = traitlets.Float(1.0).tag(sync=True)
    #: whether the view is within a window's height of the viewport (set by the browser; True without one): the
    #: page redraws a view that is not only once it comes near, or after a quiet spell
    near = traitlets.Bool(True).tag(sync=True)

    def __init__(self, carry_plotly: bool = True, **kwargs) -> None:
        # plotly.js travels once per page: the first view carries it, the others wait for it
        super().__init__(_plotly=_plotly_js() if carry_plotly else "", **kwargs)
        self._seq = 0

    def show(self, fig) -> None:
        """Send a whole figure (a new model, or a first draw); its shapes go to the overlay layer."""
        spec = to_json_safe(fig.to_plotly_json())
        shapes = spec.get("layout", {}).pop("shapes", [])
        with self.hold_sync():
            self.overlays = shapes
            self.figure = spec

    def set_overlays(self, shapes: list[dict]) -> None:
        self.overlays = to_json_safe(shapes)

    def send(self, traces: dict[int, str], relayout: dict) -> None:
        """Send changed traces (index -> a full trace as JSON text) and relayout keys, as one patch.

        The traces travel as text, encoded once by the caller (the dashboard keeps them with its panels):
        a nested dict would be walked for binary buffers and encoded again on every send.
        """
        if not traces and not relayout:
            return
        self._seq += 1
        self.patch = {"seq": self._seq, "traces": {str(i): t for i, t in traces.items()},
                      "relayout": to_json_safe(relayout)}
