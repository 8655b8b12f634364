"""Bad inputs are refused before any work: one ``geomlib: error:`` line, exit 2, nothing computed or written.

Each case goes through the real command line in a subprocess.  "Before any
work" is checked from what the run leaves behind rather than from timings
alone: without ``-q`` geomlib prints its thread-count line once every
pre-flight check has passed and before the first analysis runs, so a run
whose stderr is the error line alone never started an analysis; and the cache
directory gets no entry (the weights analysis, which runs first, would have
written one).  One test times a case on the demo model, whose analyses take
minutes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.factories.cli import CliResult
from tests.factories.tokenizers import make_checkpoint_with_tokenizer


def geomlib_cli(*args, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "geomlib", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)


def refused(r: subprocess.CompletedProcess, *words: str) -> str:
    """Exit 2, nothing on stdout, exactly one stderr line (the error, so no analysis started), no traceback."""
    return CliResult.of(r).one_error_line(*words)


def nothing_cached(cache: Path) -> bool:
    return not cache.exists() or not any(cache.rglob("*.nc"))


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A tiny llama with a tokenizer: the forward pass is on by default."""
    path, _ = make_checkpoint_with_tokenizer(tmp_path_factory.mktemp("model"))
    return path


# -- --heads.text ----------------------------------------------------------------------------------------
def _write(kind: str, where: Path) -> Path:
    p = where / f"text-{kind}"
    if kind == "empty":
        p.write_bytes(b"")
    elif kind == "whitespace":
        p.write_bytes(b"  \n\t\r\n   \n")
    elif kind == "nul":
        p.write_bytes(b"\x00" * 4096)
    elif kind == "random":
        p.write_bytes(os.urandom(4096))
    elif kind == "latin1":
        p.write_bytes("café au lait, the cat sat on the mat".encode("latin-1"))
    elif kind == "utf16":
        p.write_bytes("Alice was beginning to get very tired of sitting by her sister".encode("utf-16"))
    elif kind == "controls":
        p.write_bytes(b"\x1b[31mred\x1b[0m" * 50)
    elif kind == "directory":
        p.mkdir()
    elif kind == "one-token":
        p.write_text("Alice", encoding="utf-8")  # one word of the tokenizer's vocabulary
    # "missing": not created
    return p


@pytest.mark.parametrize("kind, words", [
    ("empty", ["empty", "0 characters"]),
    ("whitespace", ["empty", "only whitespace"]),
    ("nul", ["looks binary", "NUL", "UTF-8"]),
    ("random", ["text-random"]),  # binary (NUL bytes) or, without a NUL, not UTF-8: see below
    ("latin1", ["not UTF-8", "0xe9", "offset 3", "save it as UTF-8"]),
    ("utf16", ["looks binary", "UTF-16"]),
    ("controls", ["looks binary", "control characters"]),
    ("directory", ["is a directory", "text="]),
    ("missing", ["no such file"]),
    ("one-token", ["1 token(s)", "at least 2", "longer text"]),
])
def test_bad_text_is_refused_before_any_analysis(model, tmp_path, kind, words):
    text, cache = _write(kind, tmp_path), tmp_path / "cache"
    r = geomlib_cli("compute", model, "--cache", cache, "--heads.text", text, cwd=tmp_path)
    line = refused(r, *words)
    if kind == "random":
        assert "looks binary" in line or "not UTF-8" in line, line
    assert nothing_cached(cache)  # the weights analysis (first in line) did not run either


def test_a_good_text_file_still_runs(model, tmp_path):
    text = tmp_path / "ok.txt"
    text.write_text("Alice was beginning to get very tired of sitting by her sister on the bank.\n", encoding="utf-8")
    r = geomlib_cli("compute", model, "--analyses", "heads", "--cache", tmp_path / "c", "--heads.text", text,
                    "--heads.null-draws", "0", "-q", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert list((tmp_path / "c").rglob("heads-*.nc"))


@pytest.mark.parametrize("value, words", [
    ("1", ["max_tokens=1", "every head's entropy would be 0", "at least 2"]),
    ("0", ["max_tokens=0", "at least 2"]),
    ("-3", ["max_tokens=-3", "at least 2"]),
    ("many", ["--heads.max-tokens", "invalid int value"]),
])
def test_too_few_max_tokens_is_refused_before_any_analysis(model, tmp_path, value, words):
    cache = tmp_path / "cache"
    refused(geomlib_cli("compute", model, "--cache", cache, "--heads.max-tokens", value, cwd=tmp_path), *words)
    assert nothing_cached(cache)


def test_two_tokens_is_the_real_minimum(model, tmp_path):
    """2 tokens run the whole pipeline (query 1 attends over two keys); 1 is refused above."""
    r = geomlib_cli("compute", model, "--analyses", "heads", "--cache", tmp_path / "c", "--heads.max-tokens", "2",
                    "--heads.null-draws", "0", "-q", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    import geomlib

    ds = geomlib.load(model, "heads", cache_dir=tmp_path / "c")
    assert int(ds.attrs["entropy_n_tokens"]) == 2


@pytest.mark.slow
def test_a_one_token_text_on_the_demo_fails_in_seconds_not_minutes(tmp_path):
    """The token count needs the model's tokenizer, loaded in the pre-flight: still before the analyses.

    Computing the demo's three analyses takes minutes on two cores (the weights analysis alone about
    30 s); the refusal costs the imports, opening the GGUF and building its tokenizer.
    """
    text = _write("one-token", tmp_path)
    text.write_text("a", encoding="utf-8")
    cache = tmp_path / "cache"
    t0 = time.perf_counter()
    r = geomlib_cli("compute", "demo:smollm2-135m", "--cache", cache, "--heads.text", text, cwd=tmp_path)
    elapsed = time.perf_counter() - t0
    refused(r, "1 token(s)", "demo:smollm2-135m")
    assert nothing_cached(cache)
    assert elapsed < 30, elapsed


# -- geomlib export -o -------------------------------------------------------------------------------------
def _unwritable_dir(tmp_path: Path) -> Path | None:
    """A directory this process cannot create files in: a read-only one, or (as root) sysfs."""
    d = tmp_path / "read-only"
    d.mkdir()
    d.chmod(0o555)
    candidates = [d, Path("/sys")]
    for c in candidates:
        try:
            (c / ".geomlib-test-probe").touch()
        except OSError:
            return c
        (c / ".geomlib-test-probe").unlink()
    return None


@pytest.mark.parametrize("case, words", [
    ("missing-dir", ["does not exist", "create it first"]),
    ("dir-is-a-file", ["is a file, not a directory"]),
    ("existing-directory", ["is a directory", "view.png"]),
    ("unknown-suffix", ["cannot tell the format of fig.bmp", "--format"]),
    ("no-suffix", ["cannot tell the format of fig", "--format"]),
    ("empty", ["output path is empty"]),
    ("unwritable", ["not writable", "choose a directory you can write to"]),
])
def test_bad_export_path_is_refused_before_loading_or_computing(model, tmp_path, case, words):
    """The cache is empty: had the path not been checked first, export would compute the model into it."""
    if case == "missing-dir":
        out = tmp_path / "no" / "such" / "fig.png"
    elif case == "dir-is-a-file":
        (tmp_path / "notes.txt").write_text("x")
        out = tmp_path / "notes.txt" / "fig.png"
    elif case == "existing-directory":
        out = tmp_path / "fig.png"
        out.mkdir()
    elif case == "unknown-suffix":
        out = tmp_path / "fig.bmp"
    elif case == "no-suffix":
        out = tmp_path / "fig"
    elif case == "empty":
        out = ""
    else:
        where = _unwritable_dir(tmp_path)
        if where is None:
            pytest.skip("every directory is writable here")
        out = where / "fig.png"
    cache = tmp_path / "cache"
    r = geomlib_cli("export", model, "--cache", cache, "--view", "cos", "-o", out, cwd=tmp_path)
    refused(r, *words)
    assert nothing_cached(cache)
    assert not list(tmp_path.rglob(".*.tmp"))  # nothing was rendered and left half-written


# -- layer and head flags of export/report -----------------------------------------------------------------
@pytest.mark.parametrize("flags, words", [
    (["export", "--anchor", "99", "-o", "{out}"], ["--anchor 99 is out of range for 3 layers"]),
    (["export", "--head", "17", "-o", "{out}"], ["--head 17 is out of range for 4 heads"]),
    (["export", "--pair", "1,9", "-o", "{out}"], ["--pair 1,9 is out of range for 3 layers"]),
    (["report", "--anchor", "-4"], ["--anchor -4 is out of range for 3 layers"]),
])
def test_layer_and_head_flags_are_checked_against_the_headers_before_computing(model, tmp_path, flags, words):
    cache = tmp_path / "cache"
    args = [f.format(out=tmp_path / "fig.png") for f in flags]
    refused(geomlib_cli(args[0], model, "--cache", cache, *args[1:], cwd=tmp_path), *words)
    assert nothing_cached(cache)
