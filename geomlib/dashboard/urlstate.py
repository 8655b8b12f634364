"""The dashboard's state in the page URL's query string, so that a link opens the same view.

``?model=demo:minilm-l6&family=k_proj&anchor=3&pair=1,4&head=2&operator=ov&metric=pa_mean&phase=B``;
compare mode ``?mode=compare&a=…&b=…&cvar=mlp_matched_cos&cpick=mean``; the training view
``?mode=training&sweep=demo-tiny-llama&tmetric=moved_mlp_matched_cos&tlayer=3``.

Voila hands the kernel the request's query string as ``$QUERY_STRING``;
:func:`parse` reads it, :func:`validate` checks each value against the model
shown (a bad value is dropped with one line saying why, never an error), and
:class:`URLSync` writes the state back into the address bar
(``history.replaceState``: no reload, no history entry per click).
"""

from __future__ import annotations

import os
from urllib.parse import parse_qsl, urlencode

import anywidget
import traitlets

from ..plot.spec import SCALES

#: the query keys, in the order a link spells them
KEYS = ("model", "family", "anchor", "pair", "head", "operator", "metric", "phase", "scale", "mask",
        # compare mode (A, B, variable, its picked coordinate) and the training view (sweep, metric, layer)
        "mode", "a", "b", "cvar", "cpick", "sweep", "tmetric", "tlayer")
#: metric names a link may use (the toggle says "angles" for the principal angles)
METRIC_ALIASES = {"cos": "cos", "pa_mean": "pa_mean", "angles": "pa_mean"}


def parse(query: str | None) -> dict[str, str]:
    """The known keys of a query string (a leading ``?`` allowed; the last of a repeated key wins)."""
    q = (query or "").lstrip("?")
    return {k: v.strip() for k, v in parse_qsl(q, keep_blank_values=False) if k in KEYS and v.strip()}


def serialize(state: dict) -> str:
    """The query string of a state (keys in :data:`KEYS` order; ``:`` and ``,`` kept readable)."""
    items = [(k, str(state[k])) for k in KEYS if state.get(k) not in (None, "")]
    return urlencode(items, safe=":,/@")


def request_query() -> str:
    """The query string of the page a Voila kernel serves ("" outside Voila).

    Voila puts it in ``$QUERY_STRING``; a pre-heated kernel (``preheat_kernel``) runs the notebook before
    any page asks for it, so there this waits for the request (``voila.utils.wait_for_request``).
    """
    if os.environ.get("VOILA_PREHEAT", "False") != "False":
        try:
            from voila.utils import wait_for_request

            wait_for_request()
        except Exception:  # no request info to be had: the default view, never a crash
            return ""
    return os.environ.get("QUERY_STRING", "")


def as_int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def validate(params: dict[str, str], *, n_layers: int, families, phases, heads: int, operators,
             ) -> tuple[dict, list[str]]:
    """Dashboard trait values from a link's (non-model) parameters, and one line per value ignored."""
    out, bad = {}, []

    def no(key, why):
        bad.append(f"{key}={params[key]!r} ignored: {why}")

    if "family" in params:
        (out.__setitem__("family", params["family"]) if params["family"] in families
         else no("family", f"this model's families are {', '.join(families)}"))
    if "phase" in params:
        (out.__setitem__("phase", params["phase"]) if params["phase"] in phases
         else no("phase", f"this model's phases are {', '.join(phases)}"))
    if "operator" in params:
        op = params["operator"].lower()
        out["operator"] = op if op in operators else no("operator", f"one of {', '.join(operators)}")
    if "metric" in params:
        m = METRIC_ALIASES.get(params["metric"].lower())
        out["op_metric"] = m if m else no("metric", "one of cos, angles")
    if "scale" in params:
        sc = params["scale"].lower()
        out["scale"] = sc if sc in SCALES else no("scale", f"one of {', '.join(SCALES)}")
    if "mask" in params:
        mk = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}.get(params["mask"].lower())
        out["mask_diagonal"] = mk if mk is not None else no("mask", "1 or 0")
    if "anchor" in params:
        a = as_int(params["anchor"])
        out["anchor"] = a if a is not None and 0 <= a < n_layers else no("anchor", f"a layer 0–{n_layers - 1}")
    if "head" in params:
        h = -1 if params["head"].lower() == "mean" else as_int(params["head"])
        ok = h is not None and -1 <= h < heads
        out["head"] = h if ok else no("head", f"'mean' or a head 0–{heads - 1}" if heads else "this model has no heads")
    if "pair" in params:
        parts = [as_int(p) for p in params["pair"].split(",")]
        ok = len(parts) == 2 and all(p is not None and 0 <= p < n_layers for p in parts)
        out["pair"] = tuple(parts) if ok else no("pair", f"two layers L,LB in 0–{n_layers - 1}")
    return {k: v for k, v in out.items() if v is not None}, bad


def state_of(app) -> dict:
    """The query parameters of what a :class:`~geomlib.dashboard.Dashboard` shows."""
    return {"model": app.source, "family": app.family, "anchor": app.anchor,
            "pair": None if tuple(app.pair) == (-1, -1) else f"{app.pair[0]},{app.pair[1]}",
            "head": "mean" if app.head < 0 else app.head, "operator": app.operator, "metric": app.op_metric,
            "phase": app.phase, "scale": None if app.scale == "symmetric" else app.scale,
            "mask": None if app.mask_diagonal else 0, **_mode_state(app)}


def _mode_state(app) -> dict:
    mode = getattr(app, "mode", "model")
    if mode == "compare" and getattr(app, "_compare_w", None) is not None:
        c = app._compare_w
        return {"mode": mode, "a": c.a, "b": c.b, "cvar": c.var, "cpick": c.pick or None}
    if mode == "training" and getattr(app, "_training_w", None) is not None:
        t = app._training_w
        return {"mode": mode, "sweep": t.sweep, "tmetric": t.metric, "tlayer": t.layer}
    return {"mode": None if mode == "model" else mode}


_ESM = r"""
export default {
  render({ model, el }) {
    el.className = "geomlib-urlstate";
    const write = () => {
      const q = model.get("query");
      const url = window.location.pathname + (q ? "?" + q : "") + window.location.hash;
      if (url !== window.location.pathname + window.location.search + window.location.hash) {
        window.history.replaceState(window.history.state, "", url);
      }
    };
    write();
    model.on("change:query", write);
  },
};
"""


class URLSync(anywidget.AnyWidget):
    """Writes ``query`` into the page's address bar whenever it changes (no reload)."""

    _esm = _ESM
    query = traitlets.Unicode("").tag(sync=True)
