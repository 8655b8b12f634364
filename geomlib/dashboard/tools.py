"""The dashboard's tools row: compute a new model into the cache, export a view (a mixin of the Dashboard).

``geomlib compute`` runs in a subprocess (:mod:`.compute`), so the page stays live and the compute can be
cancelled; an export is rendered by :mod:`geomlib.plot.export` and offered as a download link (the way
files leave a Voila page).
"""

from __future__ import annotations

import base64
import html
import importlib.util

import ipywidgets as W

from ..errors import GeomlibError
from ..plot import export
from .compute import ComputeJob
from .data import cache_dirs, catalog


class Tools:
    """Compute box and export row; mixed into :class:`~geomlib.dashboard.Dashboard` (uses its state)."""

    def _build_tools(self) -> None:
        self._src = W.Text(placeholder="path, .gguf, org/name or demo:…", description="compute",
                           layout=W.Layout(width="34em"))
        self._go = W.Button(description="compute", icon="play", button_style="primary")
        self._cancel = W.Button(description="cancel", icon="stop", disabled=True)
        self._compute_msg = W.HTML()  # one line: progress, then "cached", the reason it failed, or "cancelled"
        self._job: ComputeJob | None = None
        self._go.on_click(lambda _: self.compute(self._src.value.strip(), wait=False))
        self._cancel.on_click(lambda _: self.cancel())
        self._compute_box = W.VBox([W.HBox([self._src, self._go, self._cancel]), self._compute_msg])
        self._view = W.Dropdown(options=list(self._specs), description="export", layout=W.Layout(width="14em"))
        self._fmt = W.Dropdown(options=list(export.FORMATS), value="png", layout=W.Layout(width="8em"))
        self._save = W.Button(description="export", icon="download")
        self._links = W.HTML()
        self._save.on_click(lambda _: self.export_to_link(self._view.value, self._fmt.value))
        self._export_box = W.HBox([self._view, self._fmt, self._save, self._links])

    def compute(self, source: str, wait: bool = True) -> None:
        """Compute ``source`` (every default analysis) into the first cache root, then show it.

        ``geomlib compute`` runs in a subprocess (see :mod:`.compute`): the box shows its progress, then one
        line (the reason a source is refused, or "cancelled"); the model shown changes only once the new
        one is cached.  ``wait=False`` (the button) returns at once, so Cancel can stop it.
        """
        if self._job is not None and self._job.running():
            return
        if not source:
            self._compute_line(GeomlibError("type a model source first: a path, a .gguf file, org/name or "
                                            "demo:NAME").args[0], error=True)
            return
        if importlib.util.find_spec("torch") is None:  # a browse-only install (Binder): say so, start nothing
            self._compute_line("computing needs the compute extra: pip install 'geomlib[compute]'", error=True)
            return
        self.busy = True
        self._freeze(True)
        self._cancel.disabled = False
        self._compute_line(f"computing {source} …")
        target = (self._roots or cache_dirs() or [None])[0]
        self._job = ComputeJob(source, target, lambda line: self._compute_line(line), self._computed)
        if wait:
            self._job.wait()

    def cancel(self) -> None:
        """Stop a running compute; nothing half-written is left in the cache."""
        if self._job is not None:
            self._job.cancel()

    def _compute_line(self, text: str, error: bool = False) -> None:
        style = "color:#b00020" if error else "color:#444"
        self._compute_msg.value = (f"<span class='geomlib-compute-msg{' geomlib-compute-error' if error else ''}' "
                                   f"style='{style}'>{html.escape(text)}</span>")

    def _computed(self, ok: bool, message: str) -> None:
        try:
            if ok:
                self._entries = catalog(self._roots if self._roots is not None else cache_dirs())
                self._model.options = [(e.label, e.source) for e in self._entries]
                source = self._job.source
                self._compute_line(f"{source}: cached")
                self.source = source
            else:
                self._compute_line(message, error=message != "cancelled")
        finally:
            self._cancel.disabled = True
            self._freeze(False)
            self.busy = False

    def export_to_link(self, view: str, fmt: str) -> bytes | None:
        """Render one export and offer it as a download link (the way files leave a Voila page)."""
        self._freeze(True)
        try:
            data = export.render(self._ds, view, self.selection(), fmt)
        except GeomlibError as exc:
            self._set_error(exc)
            return None
        finally:
            self._freeze(False)
        name = f"{self.source.replace(':', '-').replace('/', '-')}-{view}{export.SUFFIX[fmt]}"
        b64 = base64.b64encode(data).decode()
        self._links.value = (f"<a class='geomlib-download' download='{html.escape(name)}' "
                             f"href='data:{export.MIME[fmt]};base64,{b64}'>download {html.escape(name)}</a>")
        return data


__all__ = ["Tools"]
