"""Names of the views and export formats (no plotting import: the CLI parser uses them)."""

VIEW_NAMES = ("cos", "operator", "gamma", "entropy")
IMAGE_FORMATS = ("png", "svg", "pdf")
DATA_FORMATS = ("netcdf", "csv")
FORMATS = IMAGE_FORMATS + DATA_FORMATS
