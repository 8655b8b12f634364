"""The views of the dashboard and of ``geomlib export``, one module each, in one registry.

Each module declares ``VIEW``, a :class:`~geomlib.plot.spec.ViewSpec` (title
and panels, each panel a builder plus what it reads, requires, follows and
what a click on it sets).  The modules named in
:data:`geomlib.plot.names.VIEW_NAMES` are registered in that order on import;
:func:`register` adds another at run time (it then shows up in the dashboards
built afterwards and in :mod:`geomlib.plot.export`).

Adding a view: write ``views/<name>.py`` declaring ``VIEW`` and add ``<name>``
to ``VIEW_NAMES``.
"""

from __future__ import annotations

from importlib import import_module

from ..names import VIEW_NAMES
from ..spec import Panel, PanelSpec, Selection, Unavailable, ViewSpec, build_panel

_REGISTRY: dict[str, ViewSpec] = {}


def register(view: ViewSpec) -> ViewSpec:
    """Add ``view`` after the registered ones; its name must be new."""
    if not isinstance(view, ViewSpec):
        raise TypeError(f"register() takes a ViewSpec, not {type(view).__name__}")
    if view.name in _REGISTRY and _REGISTRY[view.name] is not view:
        raise ValueError(f"a view named {view.name!r} is already registered; unregister it first")
    _REGISTRY[view.name] = view
    return view


def unregister(name: str) -> None:
    """Remove a view (tests register toy views and remove them)."""
    _REGISTRY.pop(name, None)


def get(name: str) -> ViewSpec:
    """The registered view ``name`` (KeyError when there is none)."""
    return _REGISTRY[name]


def names() -> tuple[str, ...]:
    """Registered view names, in page order."""
    return tuple(_REGISTRY)


def title(name: str) -> str:
    """The numbered title shown above a view (its number is its place on the page)."""
    return f"{names().index(name) + 1} · {_REGISTRY[name].title}"


for _name in VIEW_NAMES:
    _view = import_module(f".{_name}", __name__).VIEW
    assert _view.name == _name, (_view.name, _name)  # a view module is named after its view
    register(_view)
del _name, _view

__all__ = ["Panel", "PanelSpec", "Selection", "Unavailable", "ViewSpec", "build_panel", "get", "names", "register",
           "title", "unregister"]
