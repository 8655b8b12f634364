"""The ``geomlib`` command line: ``info``, exit codes, help and version.

Most cases run ``geomlib.cli.main`` in this process (the ``run_cli`` fixture of
tests/conftest.py); a handful run the installed console script and ``python -m
geomlib`` as a user runs them, to check the real entry points and exit status.
Success prints the facts and exits 0; every bad source exits 2 with exactly
one ``geomlib: error: ...`` line on stderr and never a traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import geomlib
from tests.factories.cli import CliResult
from tests.factories.hf import make_checkpoint
from tests.factories.hub import COMMIT, cache_repo


def _script() -> str:
    """The console script of the environment running the tests (not some other install)."""
    here = Path(sys.executable).parent / "geomlib"
    found = str(here) if here.exists() else shutil.which("geomlib")
    assert found, "the geomlib console script is not installed; run `pip install -e .`"
    return found


def run(*args: str, tmp_path: Path, module: bool = False, **env: str) -> subprocess.CompletedProcess:
    """Run the real CLI in a subprocess, offline, against an empty HF cache unless ``env`` says otherwise."""
    empty = tmp_path / "empty-hf-cache"
    empty.mkdir(exist_ok=True)
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(empty), **env}
    cmd = [sys.executable, "-m", "geomlib", *args] if module else [_script(), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=300, cwd=tmp_path)


def assert_one_error_line(proc: subprocess.CompletedProcess, *words: str) -> str:
    return CliResult.of(proc).one_error_line(*words)


@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory) -> Path:
    path, _ = make_checkpoint(tmp_path_factory.mktemp("cli"), "llama", torch.bfloat16, n_layers=3)
    return path


# -- the real entry points (subprocesses) ------------------------------------------------------------
def test_info_prints_the_facts(ckpt_dir, tmp_path):
    proc = run("info", str(ckpt_dir), tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    table = dict(line.split(None, 1) for line in proc.stdout.splitlines())
    assert table["source"] == str(ckpt_dir)
    assert table["arch"] == "llama" and table["format"] == "safetensors"
    assert (table["n_layers"], table["n_heads"], table["n_kv_heads"]) == ("3", "4", "2")
    assert (table["hidden"], table["head_dim"], table["intermediate"]) == ("32", "8", "48")
    assert table["dtype"] == "BF16" and table["quantization"] == "none"


def test_info_python_dash_m(ckpt_dir, tmp_path):
    proc = run("info", str(ckpt_dir), "--json", tmp_path=tmp_path, module=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["arch"] == "llama"


def test_bad_source_exits_2_with_one_line_from_the_console_script(tmp_path):
    assert_one_error_line(run("info", str(tmp_path / "missing"), tmp_path=tmp_path),
                          "not an existing file or directory")


def test_version(tmp_path):
    for module in (False, True):
        proc = run("--version", tmp_path=tmp_path, module=module)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == f"geomlib {geomlib.__version__}"


def test_usage_error_exits_2_without_traceback_from_the_console_script(tmp_path):
    proc = run(tmp_path=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "usage: geomlib" in proc.stderr


# -- in-process ----------------------------------------------------------------------------------------
def test_info_json_matches_the_library(ckpt_dir, run_cli):
    res = run_cli("info", ckpt_dir, "--json")
    assert res.code == 0, res.err
    facts = json.loads(res.out)
    with geomlib.open_model(ckpt_dir) as ckpt:
        assert facts == json.loads(json.dumps(ckpt.summary()))
    assert facts["n_layers"] == 3 and isinstance(facts["n_layers"], int)
    assert facts["families"].split(",")[:4] == ["q_proj", "k_proj", "v_proj", "o_proj"]


def test_info_table_in_process_matches_the_console_script(ckpt_dir, run_cli):
    res = run_cli("info", ckpt_dir)
    assert res.code == 0, res.err
    table = dict(line.split(None, 1) for line in res.out.splitlines())
    assert table["source"] == str(ckpt_dir) and table["arch"] == "llama" and table["dtype"] == "BF16"


def test_info_hub_id_from_cache(ckpt_dir, run_cli, tmp_path):
    cache = tmp_path / "hf"
    cache_repo(cache, "org/tiny", {p.name: p.read_bytes() for p in ckpt_dir.iterdir()})
    with geomlib.open_model(ckpt_dir) as ckpt:
        identity = ckpt.identity
    for extra, env in [(("--hf-cache", str(cache)), {}), ((), {"HF_HUB_CACHE": str(cache)})]:
        res = run_cli("info", f"org/tiny@{COMMIT}", "--json", *extra, **env)
        assert res.code == 0, res.err
        facts = json.loads(res.out)
        assert facts["source"] == f"org/tiny@{COMMIT}" and facts["identity"] == identity


def test_info_demo(run_cli):
    res = run_cli("info", "demo:minilm-l6", "--json")
    assert res.code == 0, res.err
    facts = json.loads(res.out)
    assert (facts["arch"], facts["n_layers"], facts["n_heads"], facts["hidden"]) == ("bert", 6, 12, 384)


BAD = ["missing", "no-config", "pickle", "truncated", "arch", "uncached-hub", "bad-demo", "empty"]


@pytest.fixture(scope="module")
def bad_sources(ckpt_dir, tmp_path_factory) -> dict[str, tuple[str, list[str]]]:
    """name -> (source argument, words its error line must contain)."""
    root = tmp_path_factory.mktemp("bad")
    (root / "no-config").mkdir()
    (root / "model.bin").write_bytes(b"\x80\x04K\x01.")  # pickle of the int 1
    cut = root / "cut"
    shutil.copytree(ckpt_dir, cut)
    data = (cut / "model.safetensors").read_bytes()
    (cut / "model.safetensors").write_bytes(data[:-100])
    arch = root / "arch"
    shutil.copytree(ckpt_dir, arch)
    cfg = json.loads((arch / "config.json").read_text())
    (arch / "config.json").write_text(json.dumps(cfg | {"model_type": "mamba"}))
    cases = {
        "missing": (str(root / "missing"), ["not an existing file or directory"]),
        "no-config": (str(root / "no-config"), ["no config.json"]),
        "pickle": (str(root / "model.bin"), ["pickle", "arbitrary code"]),
        "truncated": (str(cut), ["truncated", "model.safetensors"]),
        "arch": (str(arch), ["mamba", "llama", "gpt2"]),
        "uncached-hub": ("org/absent", ["HF_HUB_OFFLINE", "org/absent"]),
        "bad-demo": ("demo:nope", ["demo:minilm-l6"]),
        "empty": ("", ["empty"]),
    }
    assert sorted(cases) == sorted(BAD)
    return cases


@pytest.mark.parametrize("case", BAD)
def test_bad_source_exits_2_with_one_line(bad_sources, case, run_cli):
    source, words = bad_sources[case]
    run_cli("info", source).one_error_line(*words)


@pytest.mark.parametrize("case", ["missing", "truncated"])
def test_bad_source_with_json_is_reported_the_same(bad_sources, case, run_cli):
    """Errors go to stderr as text even with --json: stdout stays empty, not half a JSON document."""
    source, words = bad_sources[case]
    run_cli("info", source, "--json").one_error_line(*words)


def test_usage_errors_exit_2_without_traceback(run_cli):
    for args in ((), ("info",), ("frobnicate",)):
        res = run_cli(*args)
        assert res.code == 2, args
        assert "Traceback" not in res.err and "usage: geomlib" in res.err


def test_version_in_process(run_cli):
    res = run_cli("--version")
    assert res.code == 0 and res.out.strip() == f"geomlib {geomlib.__version__}"


def test_help(run_cli):
    res = run_cli("info", "--help")
    assert res.code == 0 and "--hf-cache" in res.out and "--json" in res.out
