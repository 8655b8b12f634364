"""Figures of the analyses: plotly panels, the linked multi-view figure, exports.

Used by the dashboard and by ``geomlib export``; like xarray's ``plot``, it
reads Datasets and never computes.  Needs the dashboard extra (plotly, kaleido).
"""

from .names import DATA_FORMATS, FORMATS, IMAGE_FORMATS, VIEW_NAMES

__all__ = ["DATA_FORMATS", "FORMATS", "IMAGE_FORMATS", "VIEW_NAMES"]
