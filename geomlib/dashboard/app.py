"""The dashboard application.

For now it browses checkpoints: pick a bundled demo or type any source, and see
the architecture facts geomlib reads from headers alone.  The geometry views
arrive with the cached analyses.
"""

from __future__ import annotations

import html

import ipywidgets as W
import traitlets

from ..errors import GeomlibError
from ..io.demo import DEFAULT_DEMO, DEMOS, PREFIX

_LABELS = {
    "arch": "architecture",
    "n_layers": "layers",
    "n_heads": "attention heads",
    "n_kv_heads": "key/value heads",
    "head_dim": "head dim",
    "hidden": "hidden size",
    "intermediate": "MLP size",
    "families": "weight families",
    "dtype": "storage dtype",
    "quantization": "quantization",
    "format": "format",
    "identity": "identity (sha256)",
}


def facts_table(summary: dict[str, object]) -> str:
    """An HTML table of a checkpoint summary (values escaped)."""
    rows = "".join(
        f"<tr><th style='text-align:left;padding-right:1em'>{html.escape(label)}</th>"
        f"<td class='geomlib-{key}'>{html.escape(str(summary.get(key, '')))}</td></tr>"
        for key, label in _LABELS.items()
    )
    warn = ""
    if summary.get("quantization") not in (None, "none"):
        warn = (
            "<p class='geomlib-quantized' style='color:#a15c00'>Quantized weights "
            f"({html.escape(str(summary['quantization']))}): every number includes quantization noise.</p>"
        )
    return f"<table class='geomlib-facts'>{rows}</table>{warn}"


class ModelBrowser(W.VBox):
    """Choose a model source and show its facts.

    Traits
    ------
    source : str
        The model source; setting it (from Python or the widgets) reopens the
        checkpoint and redraws the facts table.
    error : str
        The last error as one readable line, empty when the source opened.
    """

    source = traitlets.Unicode(DEFAULT_DEMO)
    error = traitlets.Unicode("")

    def __init__(self, source: str = DEFAULT_DEMO, **kwargs) -> None:
        self._picker = W.Dropdown(
            options=[(f"{PREFIX}{n} - {d.description}", PREFIX + n) for n, d in DEMOS.items()],
            description="demo",
            layout=W.Layout(width="60em"),
        )
        # continuous_update=False: the value changes on Enter / blur, not per keystroke
        self._path = W.Text(placeholder="or a path, .gguf file or org/name, then Enter", description="source",
                            continuous_update=False, layout=W.Layout(width="60em"))
        self._facts = W.HTML()
        self._status = W.HTML()
        title = W.HTML("<h2>geomlib: layer geometry of transformer weights</h2>")
        super().__init__([title, self._picker, self._path, self._status, self._facts], **kwargs)
        self._picker.observe(lambda ch: setattr(self, "source", ch["new"]), "value")
        self._path.observe(lambda ch: ch["new"].strip() and setattr(self, "source", ch["new"].strip()), "value")
        self.source = source
        self._render()

    @traitlets.observe("source")
    def _on_source(self, change) -> None:
        self._render()

    def _render(self) -> None:
        from ..checkpoint import open_model  # torch is imported only when a model is opened

        self._status.value = f"<i>opening {html.escape(self.source)} ...</i>"
        try:
            with open_model(self.source) as ckpt:
                summary = ckpt.summary()
        except GeomlibError as exc:
            self.error = str(exc)
            self._status.value = f"<span class='geomlib-error' style='color:#b00020'>{html.escape(str(exc))}</span>"
            return
        self.error = ""
        self._status.value = f"<b class='geomlib-source'>{html.escape(self.source)}</b>"
        self._facts.value = facts_table(summary)
        if self.source in self._picker.options or self.source in dict(self._picker.options).values():
            self._picker.value = self.source

    @property
    def facts_html(self) -> str:
        return self._facts.value


def build_app(source: str = DEFAULT_DEMO) -> W.Widget:
    """The whole dashboard, ready to ``display``."""
    return ModelBrowser(source)
