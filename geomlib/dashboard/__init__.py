"""The Voila dashboard: the notebook only builds and displays :func:`build_app`.

Nothing in geomlib imports this package.  Viewing cached results needs no
torch; only the "compute" box imports it.
"""

from .app import Dashboard, build_app

__all__ = ["Dashboard", "build_app"]
