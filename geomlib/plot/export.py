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
from ..validate import unwritable
from . import views
from .layout import caption, standalone
from .names import DATA_FORMATS, FORMATS, IMAGE_FORMATS
from .paper import WIDTHS, png_scale
from .spec import SELECTS, Selection

__all__ = ["DATA_FORMATS", "FORMATS", "IMAGE_FORMATS", "browser_path", "check_path", "render", "render_many",
           "view_data", "write"]

MIME = {"png": "image/png", "svg": "image/svg+xml", "pdf": "application/pdf", "netcdf": "application/x-netcdf",
        "csv": "text/csv"}
SUFFIX = {"png": ".png", "svg": ".svg", "pdf": ".pdf", "netcdf": ".nc", "csv": ".csv"}

_server_started = False


def _check(view: str, fmt: str | None = None) -> None:
    if view not in views.names():
        raise InvalidArgumentError(f"view {view!r} is not one of {', '.join(views.names())}; pick one of those")
    if fmt is not None and fmt not in FORMATS:
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


def _pick(da: xr.DataArray, dim: str, value) -> xr.DataArray:
    if value not in da[dim].values:
        have = ", ".join(str(v) for v in da[dim].values)
        raise InvalidArgumentError(f"{dim} {value!r} is not in this model's data ({have}); choose one of those")
    return da.sel({dim: value})


def view_data(ds: xr.Dataset, view: str, sel: Selection, *, narrow_head: bool = False,
              narrow_pair: bool = False) -> xr.Dataset:
    """The variables a view shows, narrowed to its selection, with provenance attrs.

    The variables are those the view's panels read plus its ``export_vars``.
    Each is narrowed along the dimensions the view follows: ``family`` and
    ``operator`` to the selected one when a panel depends on that field (the
    coordinate stays as a scalar).  Optionally further, where the view depends
    on them:

    narrow_head : bool
        Only the selected head (``head`` becomes a scalar coordinate).  With
        ``sel.head == -1`` ("mean") every head is kept: the per-head values
        are what the view averages, and the mean is one line of xarray away.
    narrow_pair : bool
        Only the selected (layer, layer_b) pair: a (layer, layer_b) variable
        loses both dimensions (the pair is in the ``export_pair`` attribute),
        a per-layer variable keeps the pair's two layers.
    """
    _check(view)
    spec = views.get(view)
    s = spec.selection(ds, sel)
    follows = spec.depends
    a, b = s.pair
    out = {}
    for v in spec.variables:
        if v not in ds:
            continue
        da = ds[v]
        for f in SELECTS:
            if f in follows and f in da.dims:
                da = _pick(da, f, getattr(s, f))
        if narrow_head and "head" in follows and s.head >= 0 and "head" in da.dims:
            da = _pick(da, "head", s.head)
        if narrow_pair and "pair" in follows and "layer" in da.dims:
            if "layer_b" in da.dims:
                da = _pick(_pick(da, "layer", a), "layer_b", b)
                # scalar layer coordinates would clash with the per-layer variables' layer dimension
                da = da.drop_vars([c for c in ("layer", "layer_b", "phase", "phase_b") if c in da.coords])
            else:
                da = da.sel(layer=list(dict.fromkeys((a, b))))
        out[v] = da
    if not out:
        need = [a for a in dict.fromkeys(a for p in spec.panels for a in p.requires)
                if a not in str(ds.attrs.get("analyses", "")).split(",")]
        raise InvalidArgumentError(
            f"the {view} view has no data for {ds.attrs.get('source')}: the {', '.join(need) or 'needed'} analysis is "
            f"not cached; compute it (geomlib compute {ds.attrs.get('source')} --analyses {','.join(need)}) or "
            "export another view"
        )
    data = xr.Dataset(out)
    data.attrs = dict(ds.attrs)
    data.attrs["export_view"] = view
    if narrow_pair and "pair" in follows:
        data.attrs["export_pair"] = f"{a},{b}"
    data.attrs["export_caption"] = caption(ds, view, sel).replace("<br>", " | ")
    return data


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
        da = data[v].reset_coords(drop=True)
        # a variable narrowed to one value (one head of one pair) has no dimension left: a one-row frame
        df = da.to_dataframe(name="value").reset_index() if da.ndim else pd.DataFrame({"value": [da.item()]})
        df.insert(0, "variable", v)
        frames.append(df)
    table = pd.concat(frames, ignore_index=True)
    for col in table.columns:
        if col not in ("variable", "value") and table[col].dtype.kind == "f":
            table[col] = table[col].astype("Int64")  # integer coordinates, empty where a variable lacks the dim
    table.to_csv(buf, index=False)
    return buf.getvalue().encode()


def render(ds: xr.Dataset, view: str, sel: Selection, fmt: str, *, narrow_head: bool = False,
           narrow_pair: bool = False, width: str | None = None) -> bytes:
    """The bytes of one export (``narrow_*``: see :func:`view_data`; images are not narrowed).

    ``width`` sizes a figure: None (screen size, 1 px a CSS pixel), "column" (3.5 in) or "page"
    (7.2 in), a PNG then at 300 dpi; PDF and SVG keep their text as vector fonts.
    """
    return render_many(ds, [(view, sel, fmt)], narrow_head=narrow_head, narrow_pair=narrow_pair, width=width)[0]


def render_many(ds: xr.Dataset, jobs: list[tuple[str, Selection, str]], *, narrow_head: bool = False,
                narrow_pair: bool = False, width: str | None = None) -> list[bytes]:
    """Several exports; images share one browser (``width``: see :func:`render`)."""
    if width not in WIDTHS:
        raise InvalidArgumentError(f"width {width!r} is not one of {', '.join(w for w in WIDTHS if w)} (or None)")
    for view, _, fmt in jobs:
        _check(view, fmt)
    out: list[bytes] = []
    for view, sel, fmt in jobs:
        if fmt in DATA_FORMATS:
            data = view_data(ds, view, sel, narrow_head=narrow_head, narrow_pair=narrow_pair)
            out.append(_data_bytes(data, fmt))
        else:
            _ensure_server()
            import plotly.io as pio

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "kopts ignored when using a server"
                scale = png_scale(width) if fmt == "png" else 1
                out.append(pio.to_image(standalone(ds, view, sel, width), format=fmt, scale=scale))
    return out


def check_path(path: str | os.PathLike, fmt: str | None = None) -> str:
    """The format of an export to ``path``, checked before any work is done.

    Everything that would make :func:`write` fail after rendering is refused
    here, so that a mistyped path costs nothing.

    Parameters
    ----------
    path : str or path-like
        The file to write; replaced if it exists.
    fmt : str, optional
        One of :data:`FORMATS`; default: from the suffix of ``path``.

    Returns
    -------
    str
        The format.

    Raises
    ------
    InvalidArgumentError
        An empty path; a path that is a directory; a format that can be told
        neither from ``fmt`` nor from the suffix; a directory that does not
        exist, is not a directory, or cannot be written to.
    """
    if not os.fspath(path):
        raise InvalidArgumentError(
            f"the output path is empty; pass a file name with one of the suffixes {', '.join(SUFFIX.values())}"
        )
    path = Path(path)
    if path.is_dir():
        raise InvalidArgumentError(
            f"cannot write {path}: it is a directory; pass a file path such as {path / ('view' + SUFFIX.get(fmt or '', '.png'))}"
        )
    if fmt is None:
        fmt = {v: k for k, v in SUFFIX.items()}.get(path.suffix.lower())
        if fmt is None:
            raise InvalidArgumentError(
                f"cannot tell the format of {path.name}: expected a suffix among {', '.join(SUFFIX.values())}; "
                "rename the file or pass --format"
            )
    elif fmt not in FORMATS:
        raise InvalidArgumentError(f"format {fmt!r} is not one of {', '.join(FORMATS)}; pick one of those")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.exists():
        raise InvalidArgumentError(
            f"cannot write {path}: its directory {parent} does not exist; create it first or choose another path"
        )
    if not parent.is_dir():
        raise InvalidArgumentError(
            f"cannot write {path}: {parent} is a file, not a directory; choose a path inside a directory"
        )
    _check_writable(path, parent)
    return fmt


def _check_writable(path: Path, parent: Path) -> None:
    """Refuse a directory :func:`write` could not create its temporary file in."""
    why = "permission denied" if not os.access(parent, os.W_OK | os.X_OK) else unwritable(parent)
    if why is not None:
        raise InvalidArgumentError(
            f"cannot write {path}: its directory {parent} is not writable ({why}); choose a directory you can "
            "write to"
        )


def write(ds: xr.Dataset, view: str, sel: Selection, fmt: str | None, path: str | os.PathLike, *,
          narrow_head: bool = False, narrow_pair: bool = False, width: str | None = None) -> Path:
    """Export one view to ``path`` (format from the suffix when ``fmt`` is None), atomically.

    ``narrow_head`` / ``narrow_pair`` narrow a data export to the selected head / pair
    (see :func:`view_data`); figures always show the whole view.  ``width``: see :func:`render`.
    """
    path = Path(path)
    fmt = check_path(path, fmt)  # before rendering: a figure takes seconds (a browser starts)
    if width not in WIDTHS:
        raise InvalidArgumentError(f"width {width!r} is not one of {', '.join(w for w in WIDTHS if w)} (or None)")
    data = render(ds, view, sel, fmt, narrow_head=narrow_head, narrow_pair=narrow_pair, width=width)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as exc:  # the path changed since it was checked, or the disk is full
        tmp.unlink(missing_ok=True)
        raise InvalidArgumentError(
            f"cannot write {path} ({exc.strerror or exc.__class__.__name__}); free space or choose another path"
        ) from None
    return path
