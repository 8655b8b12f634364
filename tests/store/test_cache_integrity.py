"""A cache that cannot lie: checksummed entries, damaged files named and repaired, unwritable or full caches refused
before any computation, nothing partial left behind (real corrupted bytes, real read-only and full filesystems)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import xarray as xr

import geomlib
from geomlib.errors import CacheError, CorruptCacheEntryError
from geomlib.store import cache
from tests.factories import synthetic
from tests.factories.cli import CliResult

ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args: str, env: dict | None = None, cmd: list[str] | None = None) -> subprocess.CompletedProcess:
    full = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(cmd or [sys.executable, "-m", "geomlib", *args], capture_output=True, text=True,
                          env=full, cwd=ROOT, timeout=300)


def one_line_error(r: subprocess.CompletedProcess) -> str:
    return CliResult.of(r).one_error_line()


def files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def compute_weights(model: Path, root: Path, **kw) -> xr.Dataset:
    return geomlib.compute(model, analyses=["weights"], cache_dir=root, progress=False,
                           weights={"null_draws": 0}, **kw)


@pytest.fixture
def two_models(tmp_path):
    """Two tiny models, each with a cached weights entry under one root: ``(root, [(model, entry path)] * 2)``."""
    root = tmp_path / "cache"
    out = []
    for name, seed in (("alpha", 0), ("beta", 1)):
        model, _ = synthetic.build(tmp_path / name, 3, seed=seed, dtype=torch.float32)
        compute_weights(model, root)
        (entry,) = [e.path for e in cache.entries(root) if e.source == str(model)]
        out.append((model, entry))
    return root, out


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


# ---------------------------------------------------------------------------------------------- bit rot
@pytest.mark.parametrize("where", ["superblock", "metadata", "middle", "last byte"])
def test_bit_rot_is_named_and_the_other_entries_keep_working(two_models, where):
    root, [(a_model, a_path), (b_model, b_path)] = two_models
    size = a_path.stat().st_size
    # the HDF5 superblock is at 0, the root group's metadata just after it: flips there are what crashed the
    # netCDF library; data flips are silent without a checksum
    flip(a_path, {"superblock": 9, "metadata": 200, "middle": size // 2, "last byte": size - 1}[where])

    r = run_cli("list", "--cache", str(root))
    assert r.returncode == 0 and "Traceback" not in r.stderr
    assert str(b_path) in r.stdout and str(a_path) not in r.stdout
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith("geomlib: warning: ") and str(a_path) in line and "checksum mismatch" in line

    with pytest.raises(CorruptCacheEntryError, match=rf"{a_path.name} is damaged: .*checksum mismatch") as err:
        geomlib.load(a_model, "weights", cache_dir=root)
    assert "\n" not in str(err.value) and "geomlib cache clean" in str(err.value)
    assert geomlib.load(b_model, "weights", cache_dir=root)["cos"].notnull().any()  # the neighbour is untouched

    v = run_cli("cache", "verify", "--cache", str(root))
    assert v.returncode == 1 and f"damaged  {a_path}: " in v.stdout and "1 intact, 1 damaged entry" in v.stdout

    # compute repairs it: the damaged file is recomputed in place, with a note
    compute_weights(a_model, root)
    assert cache.verify(a_path) is None
    assert run_cli("cache", "verify", "--cache", str(root)).returncode == 0


def test_clean_removes_damaged_entries_and_leftovers_only(two_models):
    root, [(a_model, a_path), (_, b_path)] = two_models
    flip(a_path, 200)
    orphan = cache.record_path(a_path.with_name("weights-0000000000000000.nc"))
    orphan.write_text("{}")
    dead = _dead_writer_tmp(b_path.parent)
    probe = _dead_writer_tmp(root)  # a writability probe of a killed run, at the root
    dry = run_cli("cache", "clean", "--dry-run", "--cache", str(root))
    assert dry.returncode == 0 and "would remove 4 files" in dry.stdout and a_path.exists()
    r = run_cli("cache", "clean", "--cache", str(root))
    assert r.returncode == 0, r.stderr
    assert not a_path.exists() and not cache.record_path(a_path).exists() and not orphan.exists()
    assert not dead.exists() and not probe.exists()
    assert [e.path for e in cache.entries(root)] == [b_path] and cache.verify(b_path) is None
    assert not a_path.parent.exists()  # the emptied model directory went too
    assert "nothing to clean" in run_cli("cache", "clean", "--cache", str(root)).stdout


def test_an_entry_without_a_checksum_record_is_never_parsed(two_models):
    root, [(a_model, a_path), _] = two_models
    cache.record_path(a_path).unlink()
    good, bad = cache.scan(root)
    assert [d.path for d in bad] == [a_path] and "no checksum record" in bad[0].reason
    assert bad[0].source is None and bad[0].analysis == "weights"
    with pytest.raises(CorruptCacheEntryError, match="no checksum record"):
        cache.read(a_path)


def test_intact_bytes_that_do_not_parse_are_damaged_not_a_crash(tmp_path):
    path = tmp_path / "m-0123456789ab" / "weights-0123456789abcdef.nc"
    path.parent.mkdir()
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + os.urandom(4000))  # an HDF5 signature over garbage
    digest = __import__("hashlib").sha256(path.read_bytes()).hexdigest()
    cache.record_path(path).write_text(json.dumps({"sha256": digest, "size": path.stat().st_size,
                                                   "source": "m", "analysis": "weights"}))
    (bad,) = cache.scan(tmp_path)[1]
    assert "cannot be parsed" in bad.reason and bad.source == "m"
    r = run_cli("list", "--cache", str(tmp_path))
    assert r.returncode == 0 and "cannot be parsed" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("bad_attr", [{"schema_version": "one"}, {"params": "{not json"}])
def test_malformed_attributes_are_damaged(tmp_path, bad_attr):
    ds = xr.Dataset({"x": ("layer", [1.0, 2.0])}, attrs={"analysis": "weights", "cache_key": "k", "source": "m",
                                                       "schema_version": 1, "params": "{}", **bad_attr})
    path = cache.write_atomic(ds, tmp_path / "m-0123456789ab" / "weights-k.nc")
    good, bad = cache.scan(tmp_path)
    assert good == [] and [d.path for d in bad] == [path] and "malformed" in bad[0].reason


def test_schema_version_that_is_not_a_number_does_not_break_load(two_models):
    root, [(a_model, a_path), (b_model, _)] = two_models
    ds = cache.read(a_path)
    ds.attrs["schema_version"] = "x1"
    cache.write_atomic(ds, a_path)
    assert geomlib.load(b_model, "weights", cache_dir=root)["cos"].notnull().any()
    with pytest.raises(CorruptCacheEntryError, match="schema_version 'x1'"):
        geomlib.load(a_model, "weights", cache_dir=root)


# ------------------------------------------------------------------------------------------ temporaries
def _dead_writer_tmp(directory: Path) -> Path:
    """A temporary file named after a process that has exited (what a killed writer leaves)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    path = directory / f"{cache._TMP_PREFIX}{cache._HOST}-{child.pid}-{'a' * 32}.nc"
    path.write_bytes(b"partial")
    return path


def test_temporaries_of_dead_writers_are_swept_at_once(tmp_path):
    d = tmp_path / "m-0123456789ab"
    d.mkdir()
    dead = _dead_writer_tmp(d)
    live = d / f"{cache._TMP_PREFIX}{cache._HOST}-{os.getpid()}-{'b' * 32}.nc"
    remote = d / f"{cache._TMP_PREFIX}otherhost-1-{'c' * 32}.nc"
    old_remote = d / f"{cache._TMP_PREFIX}otherhost-2-{'d' * 32}.nc"
    for p in (live, remote, old_remote):
        p.write_bytes(b"partial")
    day_ago = time.time() - 25 * 3600
    os.utime(old_remote, (day_ago, day_ago))
    cache.write_atomic(xr.Dataset({"x": ("layer", [1.0])}), d / "weights-k.nc")
    assert not dead.exists() and not old_remote.exists()  # a dead writer's file and a day-old one
    assert live.exists() and remote.exists()  # a live writer's, and a recent one from a host we cannot check


# ------------------------------------------------------------------------------------ unwritable or full
@pytest.fixture
def model(tmp_path):
    path, _ = synthetic.build(tmp_path / "tiny", 3, dtype=torch.float32)
    return path


def test_cache_path_that_is_a_file(model, tmp_path):
    target = tmp_path / "not-a-dir"
    target.write_text("x")
    line = one_line_error(run_cli("compute", str(model), "--analyses", "weights", env={"GEOMLIB_CACHE": str(target)}))
    assert f"the cache directory {target} ($GEOMLIB_CACHE) is a file, not a directory" in line
    assert "GEOMLIB_CACHE" in one_line_error(run_cli("list", env={"GEOMLIB_CACHE": str(target)}))
    assert target.read_text() == "x"
    with pytest.raises(CacheError, match="is a file"):
        compute_weights(model, target)


def _namespace_cli(setup: str, args: list[str], root: Path) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Run the CLI in a private mount namespace after ``setup`` (mount commands); also return the files the
    command left under ``root``, listed inside the namespace (a tmpfs is gone once it exits)."""
    if shutil.which("unshare") is None:
        pytest.skip("needs util-linux unshare for a private mount namespace")
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True)
    if probe.returncode:
        pytest.skip(f"this kernel refuses private mount namespaces ({probe.stderr.decode().strip()})")
    cli = " ".join(f"'{a}'" for a in [sys.executable, "-m", "geomlib", *args])
    script = textwrap.dedent(f"""
        set -e
        {setup}
        set +e
        {cli} 2>"$ERR"
        rc=$?
        find '{root}' -mindepth 1 > "$LEFT"
        exit $rc
    """)
    err, left = root.parent / "stderr.txt", root.parent / "left.txt"
    r = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": str(ROOT), "ERR": str(err), "LEFT": str(left)}, timeout=300)
    r.stderr = err.read_text() if err.exists() else r.stderr
    return r, [x for x in (left.read_text().splitlines() if left.exists() else []) if x]


def test_read_only_filesystem_is_refused_before_any_work(model, tmp_path):
    root = tmp_path / "ro"
    root.mkdir()
    r, left = _namespace_cli(f"mount --bind '{root}' '{root}' && mount -o remount,bind,ro '{root}'",
                             ["compute", str(model), "--no-heads.forward-pass", "--cache", str(root)], root)
    line = one_line_error(r)  # no progress bar, no thread line: nothing was computed
    assert f"the cache directory {root} is not writable (Read-only file system)" in line
    assert left == []


def test_full_filesystem_is_refused_before_any_work(model, tmp_path):
    root = tmp_path / "full"
    root.mkdir()
    r, left = _namespace_cli(f"mount -t tmpfs -o size=1m tmpfs '{root}'",
                             ["compute", str(model), "--no-heads.forward-pass", "--cache", str(root)], root)
    line = one_line_error(r)
    assert f"the cache directory {root} has " in line and "MB free, and the results need about" in line
    assert left == []


def test_a_write_that_fails_midway_leaves_nothing(model, tmp_path):
    """The up-front checks pass but the file cannot be finished (a file-size limit, as a disk filling up
    meanwhile would): one line, exit 2, no temporary or partial file."""
    root = tmp_path / "cache"
    code = ("import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
            "resource.setrlimit(resource.RLIMIT_FSIZE, (16384, 16384)); from geomlib.cli import main; "
            f"sys.exit(main(['compute', {str(model)!r}, '--analyses', 'weights', '--cache', {str(root)!r}, '-q']))")
    r = run_cli(cmd=[sys.executable, "-c", code])
    line = one_line_error(r)
    assert "could not be written (NetCDF: HDF error, with " in line and "MB free there)" in line
    assert f"the cache entry {root}" in line and "weights-" in line
    assert [p for p in files(root)] == []


def test_immutable_directory_is_refused(model, tmp_path):
    root = tmp_path / "frozen"
    root.mkdir()
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(root)], capture_output=True).returncode:
        pytest.skip("needs chattr +i (root on ext4 or similar)")
    try:
        line = one_line_error(run_cli("compute", str(model), "--no-heads.forward-pass", "--cache", str(root)))
        assert f"the cache directory {root} is not writable (Operation not permitted)" in line
    finally:
        subprocess.run(["chattr", "-i", str(root)], check=True)
    assert files(root) == []


def test_a_read_only_cache_still_serves_what_it_holds(two_models):
    """The writability check runs only when something must be written."""
    root, [(a_model, a_path), _] = two_models
    r, _ = _namespace_cli(f"mount --bind '{root}' '{root}' && mount -o remount,bind,ro '{root}'",
                          ["compute", str(a_model), "--analyses", "weights", "--weights.null-draws", "0",
                           "--cache", str(root), "-q"], root)
    assert r.returncode == 0, r.stderr


def test_clean_never_removes_the_cache_directory_itself(tmp_path):
    root = tmp_path / "cache"
    root.mkdir()
    probe = _dead_writer_tmp(root)
    r = run_cli("cache", "clean", "--cache", str(root))
    assert r.returncode == 0 and "removed 1 file" in r.stdout
    assert not probe.exists() and root.is_dir()


def test_an_unwritable_cache_fails_before_the_checkpoint_is_hashed(model, tmp_path):
    """The identity reads every payload byte the first time: a cache that cannot take the result is refused
    before that read when it holds nothing of the model."""
    from geomlib.io import digest

    root = tmp_path / "frozen"
    root.mkdir()
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(root)], capture_output=True).returncode:
        pytest.skip("needs chattr +i (root on ext4 or similar)")
    try:
        before = digest.hashed_bytes
        with pytest.raises(CacheError, match="is not writable"):
            compute_weights(model, root)
        assert digest.hashed_bytes == before
    finally:
        subprocess.run(["chattr", "-i", str(root)], check=True)
