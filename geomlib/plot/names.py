"""Names of the built-in views and of the export formats (no plotting import: the CLI parser uses them).

A view is one module of :mod:`geomlib.plot.views` declaring ``VIEW``, a
:class:`~geomlib.plot.spec.ViewSpec` of the same name; this list gives their
order on the page, and is the one place a new view module is named.
"""

#: the gauge-aware views lead; the index-paired (gauge-confounded) ones follow
VIEW_NAMES = ("matched", "heads_matched", "cos", "operator", "gamma", "entropy", "spectra", "anchor_spectra")
IMAGE_FORMATS = ("png", "svg", "pdf")
DATA_FORMATS = ("netcdf", "csv")
FORMATS = IMAGE_FORMATS + DATA_FORMATS
