"""Export a view as a figure (PNG, SVG, PDF) or as the data it shows (netCDF, CSV), with provenance.

Images are rendered by kaleido, which drives a Chromium: Debian's ``chromium``
is found by itself (or ``BROWSER_PATH``).  Starting a browser costs seconds,
so one kaleido server is kept for the session and several figures are written
in one batch.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import xarray as xr

from ..errors import InvalidArgumentError, MissingDependencyError
from .layout import caption, standalone
from .views import VIEWS, Selection

from .names import DATA_FORMATS, FORMATS, IMAGE_FORMATS
__all__ = ["DATA_FORMATS", "FORMATS", "IMAGE_FORMATS", "browser_path", "render", "render_many", "view_data", "write"]

MIME = {"png": "image/png", "svg": "image/svg+xml", "pdf": "application/pdf", "netcdf": "application/x-netcdf",
        "csv": "text/csv"}
SUFFIX = {"png": ".png", "svg": ".svg", "pdf": ".pdf", "netcdf": ".nc", "csv": ".csv"}

_server_started = False


def _check(view: str, fmt: str) -> None:
    if view not in VIEWS:
        raise InvalidArgumentError(f"view {view!r} is not one of {', '.join(VIEWS)}; pick one of those")
    if fmt not in FORMATS:
        raise InvalidArgumentError(f"format {fmt!r} is not one of {', '.join(FORMATS)}; pick one of those")


def browser_path() -> str | None:
    """The Chromium kaleido will use, or None."""
    env = os.environ.get("BROWSER_PATH")
    if env and Path(env).exists():
        return env
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    try:  # a browser fetched by `plotly_get_chrome` / kaleido.get_chrome (Binder)
        from choreographer.browsers.chromium import Chromium

        found = Chromium.find_browser(skip_local=False)
        return str(found) if found else None
    except Exception:
        return None


def _ensure_server() -> None:
    global _server_started
    if browser_path() is None:
        raise MissingDependencyError(
            "figure export needs a Chromium for kaleido and none was found; install Debian's chromium "
            "(apt-get install chromium), set BROWSER_PATH, or run plotly_get_chrome"
        )
    if not _server_started:
        import kaleido

        kaleido.start_sync_server(silence_warnings=True)
        _server_started = True


def view_data(ds: xr.Dataset, view: str, sel: Selection) -> xr.Dataset:
    """The variables a view shows, for the selected family / operator, with provenance attrs."""
    s = sel.resolved(ds)
    keep = {
        "cos": ["cos", "aligned_cos", "delta", "aligned_null_mean", "aligned_null_std"],
        "operator": [f"{s.operator}_{v}" for v in ("cos", "pa_mean", "T", "singvals", "sign_agree", "rescale_T",
                                                    "rescale_resid", "null_mean", "null_std")],
        "gamma": ["gamma_norm", "gamma_pca_explained", "gamma_pca_scores", "gamma_proj_top1", "gamma_resid_top1"],
        "entropy": ["attn_entropy"],
    }[view]
    out = ds[[v for v in keep if v in ds]]
    if "family" in out.dims and view == "cos":
        out = out.sel(family=s.family)
    out.attrs = {k: v for k, v in ds.attrs.items()}
    out.attrs["export_view"] = view
    out.attrs["export_caption"] = caption(ds, view, sel).replace("<br>", " | ")
    return out


def _data_bytes(data: xr.Dataset, fmt: str) -> bytes:
    if fmt == "netcdf":
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "view.nc"
            data.to_netcdf(path, engine="netcdf4")
            return path.read_bytes()
    import pandas as pd

    # one long table: variables have different dimensions, so a row is (variable, its coordinates, value)
    buf = io.StringIO()
    for line in str(data.attrs["export_caption"]).split(" | "):
        buf.write(f"# {line}\n")
    frames = []
    for v in data.data_vars:
        df = data[v].reset_coords(drop=True).to_dataframe(name="value").reset_index()
        df.insert(0, "variable", v)
        frames.append(df)
    table = pd.concat(frames, ignore_index=True)
    for col in table.columns:
        if col not in ("variable", "value") and table[col].dtype.kind == "f":
            table[col] = table[col].astype("Int64")  # integer coordinates, empty where a variable lacks the dim
    table.to_csv(buf, index=False)
    return buf.getvalue().encode()


def render(ds: xr.Dataset, view: str, sel: Selection, fmt: str) -> bytes:
    """The bytes of one export."""
    return render_many(ds, [(view, sel, fmt)])[0]


def render_many(ds: xr.Dataset, jobs: list[tuple[str, Selection, str]]) -> list[bytes]:
    """Several exports; images share one browser."""
    for view, _, fmt in jobs:
        _check(view, fmt)
    out: list[bytes] = []
    for view, sel, fmt in jobs:
        if fmt in DATA_FORMATS:
            out.append(_data_bytes(view_data(ds, view, sel), fmt))
        else:
            _ensure_server()
            import plotly.io as pio

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "kopts ignored when using a server"
                out.append(pio.to_image(standalone(ds, view, sel), format=fmt))
    return out


def write(ds: xr.Dataset, view: str, sel: Selection, fmt: str | None, path: str | os.PathLike) -> Path:
    """Export one view to ``path`` (format from the suffix when ``fmt`` is None), atomically."""
    path = Path(path)
    if fmt is None:
        by_suffix = {v: k for k, v in SUFFIX.items()}
        fmt = by_suffix.get(path.suffix.lower())
        if fmt is None:
            raise InvalidArgumentError(
                f"cannot tell the format of {path.name}; use a suffix among {', '.join(SUFFIX.values())} or pass "
                "--format"
            )
    data = render(ds, view, sel, fmt)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path
