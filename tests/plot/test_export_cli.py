"""``geomlib export`` through the real console script."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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
