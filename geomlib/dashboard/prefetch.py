"""Panels one control step away, built while the kernel is idle.

A family never shown before costs the kernel its panels (about 20 ms for the
index-paired view, more for the spectra) before the browser can redraw; a
researcher's next step is nearly always one control away from what is shown
(another family, the other operator, the next anchor).  After each change the
dashboard builds those panels of the views in the window into its per-model
memo (``Dashboard._memo``), one panel per turn of the kernel's event loop, so
a message from the page waits for at most one panel.

It runs only where an asyncio loop is running (a Jupyter or Voila kernel); a
Dashboard driven from a plain script or a test builds panels on demand only.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Iterator

#: seconds of quiet after a change before prefetching starts, and between two panels
START_S = 0.25
STEP_S = 0.005
#: anchor steps the slider's keys make (arrows: 1, page keys: 5)
ANCHOR_STEPS = (-1, 1, -5, 5)
#: panels remembered per model (each a few KiB: a layer x layer heatmap, a few curves)
MEMO_PANELS = 512


def running_loop() -> asyncio.AbstractEventLoop | None:
    """The asyncio event loop running here (a kernel's), or None (a plain script or test)."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class Prefetch:
    """Mixin of :class:`~geomlib.dashboard.app.Dashboard`: fills its panel memo ahead of the next change."""

    _prefetch_handle = None

    def _neighbours(self) -> Iterator[tuple[str, int, tuple, object]]:
        """(view, panel, key, resolved selection) of each panel of a view in the window one control step away."""
        sel = self.selection()
        n = self._ds.sizes["layer"]
        # the commonest steps first: the anchor slider's keys, then another family, operator, metric, head
        a = sel.anchor % n
        steps = [("anchor", a + d) for d in ANCHOR_STEPS if 0 <= a + d < n]
        steps += [("family", f) for f in self._family.options if f != sel.family]
        steps += [("operator", op) for _, op in self._operator.options if op != sel.operator]
        steps += [("op_metric", m) for _, m in self._metric.options if m != sel.op_metric]
        steps += [("head", h) for _, h in self._head.options if h != sel.head]
        # only the views the window shows: the others are rebuilt after those are sent, off the path a change
        # is waited on, and building them too kept the kernel busy (one panel at a time) for seconds.  Each
        # panel whose key the step changes (a view's resolve may map one field through another: the
        # composition family follows the operator)
        shown = [v for v in self._specs if self.views[v].in_view > 0]
        for field, value in steps:
            moved = replace(sel, **{field: value})
            for v in shown:
                res = self._view_selection(v, moved)
                for c, p in enumerate(self._specs[v].panels):
                    key = self._key(p, res)
                    if key != self._last.get((v, c)):  # the key shown now
                        yield v, c, key, res

    def _prefetch_restart(self) -> None:
        """Start over from the selection shown now (called after every change and model switch)."""
        if self._prefetch_handle is not None:
            self._prefetch_handle.cancel()
            self._prefetch_handle = None
        loop = running_loop()
        if loop is None:
            return  # no kernel event loop: panels are built when asked for
        todo = self._neighbours()
        model = id(self._ds)

        def step() -> None:
            self._prefetch_handle = None
            if id(self._ds) != model:
                return
            for v, c, key, res in todo:
                if (v, c, key) in self._memo:
                    continue
                if len(self._memo) >= MEMO_PANELS:
                    return  # never evict panels for ones that may not be asked for
                try:
                    self._panel(v, c, key, res)
                except Exception:  # noqa: BLE001 - a panel that fails is built (and reported) when shown
                    pass
                self._prefetch_handle = loop.call_later(STEP_S, step)
                return

        self._prefetch_handle = loop.call_later(START_S, step)
