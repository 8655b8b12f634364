"""Figures of the analyses: views declared as data, the per-view figures, exports.

A view is one module of :mod:`geomlib.plot.views` declaring a
:class:`~geomlib.plot.spec.ViewSpec` (title and panels; a panel is a builder
plus the variables it reads, the analyses it requires, the selection fields it
follows and what a click on it sets).  Used by the dashboard and by
``geomlib export``; like xarray's ``plot``, it reads Datasets and never
computes.  Needs the dashboard extra (plotly, kaleido), except
:mod:`geomlib.plot.names`, which the CLI's parser reads.
"""

from .names import DATA_FORMATS, FORMATS, IMAGE_FORMATS, VIEW_NAMES

__all__ = ["DATA_FORMATS", "FORMATS", "IMAGE_FORMATS", "VIEW_NAMES"]
