"""The Voila dashboard's widgets.  The notebook only builds and displays :func:`build_app`.

Nothing in geomlib imports this package; it depends on everything else.
"""

from .app import ModelBrowser, build_app

__all__ = ["ModelBrowser", "build_app"]
