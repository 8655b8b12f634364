"""``geomlib export`` through the real console script."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.factories.cli import CliResult

ROOT = Path(__file__).resolve().parents[2]


def cli(*args):
    exe = Path(sys.executable).with_name("geomlib")
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True)


@pytest.fixture(scope="module")
def demo_cache(tmp_path_factory):
    dest = tmp_path_factory.mktemp("cache")
    shutil.copytree(ROOT / "cache", dest, dirs_exist_ok=True)
    return dest


@pytest.mark.parametrize("fmt, magic", [("pdf", b"%PDF"), ("png", b"\x89PNG"), ("svg", b"<")])
def test_export_figure(demo_cache, tmp_path, fmt, magic):
    out = tmp_path / f"fig.{fmt}"
    r = cli("export", "demo:smollm2-135m", "--cache", demo_cache, "--view", "cos", "--family", "q_proj",
            "--format", fmt, "-o", out)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes().startswith(magic)
    assert not list(demo_cache.rglob(".tmp-*"))


def test_export_data_with_selection(demo_cache, tmp_path):
    out = tmp_path / "op.csv"
    r = cli("export", "demo:smollm2-135m", "--cache", demo_cache, "--view", "operator", "--operator", "ov",
            "--head", "3", "--pair", "4,9", "-o", out)
    assert r.returncode == 0, r.stderr
    head = out.read_text().splitlines()[0]
    assert "operator ov" in head and "head 3" in head and "pair (4, 9)" in head


def test_export_pair_and_head_narrow_the_data(demo_cache, tmp_path):
    import xarray as xr

    out = tmp_path / "op.nc"
    r = cli("export", "demo:smollm2-135m", "--cache", demo_cache, "--view", "operator", "--operator", "ov",
            "--head", "3", "--pair", "4,9", "-o", out)
    assert r.returncode == 0, r.stderr
    ds = xr.open_dataset(out, engine="netcdf4").load()
    assert "layer_b" not in ds.dims and "head" not in ds.dims and ds.attrs["export_pair"] == "4,9"
    assert int(ds["head"]) == 3 and str(ds["operator"].values) == "ov"
    r = cli("export", "demo:smollm2-135m", "--cache", demo_cache, "--view", "operator", "--pair", "4,9", "-o", out)
    assert r.returncode == 0, r.stderr
    ds = xr.open_dataset(out, engine="netcdf4").load()
    assert "layer_b" not in ds.dims and ds.sizes["head"] == 9  # --pair alone keeps every head


@pytest.mark.parametrize(
    "args, words",
    [
        (["--family", "nope_proj"], "--family 'nope_proj'"),
        (["--anchor", "40"], "--anchor 40"),
        (["--head", "x"], "--head 'x'"),
        (["--phase", "Z"], "--phase 'Z'"),
        (["-o", "{tmp}/fig.bmp"], "cannot tell the format"),
        (["-o", "{tmp}/no/such/dir/fig.png"], "does not exist"),
    ],
)
def test_bad_export_arguments_exit_2_with_one_line(demo_cache, tmp_path, args, words):
    args = [a.format(tmp=tmp_path) for a in args]
    if "-o" not in args:
        args += ["-o", str(tmp_path / "fig.png")]
    r = cli("export", "demo:smollm2-135m", "--cache", demo_cache, *args)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and "Traceback" not in r.stderr
    assert not (tmp_path / "fig.png").exists()


@pytest.mark.parametrize("width, inches", [("column", 3.5), ("page", 7.2)])
def test_export_width_sizes_the_png_for_a_paper(demo_cache, tmp_path, width, inches):
    from PIL import Image

    out = tmp_path / "fig.png"
    r = cli("export", "demo:smollm2-135m", "--cache", demo_cache, "--view", "matched", "--width", width, "-o", out)
    assert r.returncode == 0, r.stderr
    assert abs(Image.open(out).size[0] - inches * 300) <= 3  # 300 dpi


def test_scale_and_mask_flags_reach_the_exported_figure(demo_cache, monkeypatch, tmp_path):
    from geomlib import cli as cli_mod
    from geomlib.plot import export as export_mod
    from geomlib.plot.layout import standalone

    seen = {}
    monkeypatch.setattr(export_mod, "write", lambda ds, view, sel, fmt, path, **kw: seen.update(sel=sel, kw=kw,
                                                                                                  ds=ds) or path)
    out = tmp_path / "fig.png"
    assert cli_mod.main(["export", "demo:smollm2-135m", "--cache", str(demo_cache), "--view", "cos",
                         "--scale", "z", "--no-mask-diagonal", "--width", "page", "-o", str(out)]) == 0
    sel = seen["sel"]
    assert sel.scale == "z" and sel.mask_diagonal is False and seen["kw"]["width"] == "page"
    assert cli_mod.main(["export", "demo:smollm2-135m", "--cache", str(demo_cache), "-o", str(out)]) == 0
    assert seen["sel"].scale == "symmetric" and seen["sel"].mask_diagonal is True and seen["kw"]["width"] is None
    # the z scale changes the exported heatmap's colour range (z-scores against the null, not cosines)
    ds = seen["ds"]
    z = standalone(ds, "cos", sel, "page").data[1]
    plain = standalone(ds, "cos", seen["sel"], "page").data[1]
    assert z.type == plain.type == "heatmap" and (z.zmin, z.zmax) != (plain.zmin, plain.zmax)
    assert z.zmax > 1 and plain.zmax <= 1 and "z of" in z.colorbar.title.text
    assert np.isfinite(np.asarray(z.z, dtype=float).diagonal()).any()  # --no-mask-diagonal: the diagonal kept


def test_export_choices_match_the_plot_package():
    from geomlib.cli import EXPORT_SCALES, EXPORT_WIDTHS
    from geomlib.plot.paper import PAPER
    from geomlib.plot.spec import SCALES

    assert EXPORT_SCALES == SCALES and EXPORT_WIDTHS == tuple(PAPER)


@pytest.mark.parametrize("args, words", [(["--width", "poster"], "--width"), (["--scale", "log"], "--scale"),
                                         (["--mask-diagonal=no"], "--mask-diagonal")])
def test_bad_width_or_scale_exit_2_with_one_line_and_nothing_written(demo_cache, tmp_path, args, words):
    out = tmp_path / "fig.png"
    r = CliResult.of(cli("export", "demo:smollm2-135m", "--cache", demo_cache, *args, "-o", out))
    r.one_error_line(words)
    assert not out.exists() and not list(tmp_path.iterdir())
