"""A config that disagrees with the tensors in the file is refused when the checkpoint is opened.

Layer counts are checked against the layer indices in the tensor names, and
sizes against the stored shapes, from headers alone and before any work: too
high a count used to fail mid-computation with a LinAlgError, too low a one
used to give a silent partial result.  Each refusal is one sentence naming
what the config says and what the file holds, and the CLI turns it into exit
status 2 with nothing written to the cache.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

import geomlib
from geomlib.errors import CorruptCheckpointError
from tests.factories.gguf import write_gguf
from tests.factories.hf import make_checkpoint, tiny_model
from tests.factories.synthetic import build

N = 4  # layers in the files


def _edit_config(path: Path, **changes) -> Path:
    cfg_path = path / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.update(changes)
    cfg_path.write_text(json.dumps(cfg))
    return path


def _refused(source, *words: str) -> str:
    """Open ``source``: CorruptCheckpointError, one line, holding every word; the message."""
    with pytest.raises(CorruptCheckpointError) as ei:
        geomlib.open_model(source)
    msg = str(ei.value)
    assert "\n" not in msg and msg.count("; ") == 1, msg  # one sentence: the facts; the fix
    for w in words:
        assert w in msg, (w, msg)
    return msg


@pytest.fixture
def single(tmp_path) -> Path:
    """A 4-layer llama (hidden 32, heads 4/2, head_dim 8, intermediate 48) as one safetensors file."""
    return build(tmp_path / "single", N)[0]


@pytest.fixture(scope="module")
def sharded(tmp_path_factory) -> Path:
    """A 4-layer llama in several shards with an index (each test copies it before editing)."""
    path, _ = make_checkpoint(tmp_path_factory.mktemp("sharded"), "llama", n_layers=N, max_shard_size="20KB")
    assert (path / "model.safetensors.index.json").exists() and len(list(path.glob("model-*.safetensors"))) > 1
    return path


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


# -- the layer count ------------------------------------------------------------------------------------


# Absurd counts (2**31 layers, a block_count of 2**32-1) are in tests/io/test_hostile_headers.py, opened in a
# child process under a memory limit: in this process a regression would exhaust the machine's memory.
@pytest.mark.parametrize("claimed", [N + 2, N - 2, 1], ids=["too-high", "too-low", "one"])
def test_layer_count_disagreeing_with_the_tensors_is_refused(single, claimed):
    _edit_config(single, num_hidden_layers=claimed)
    msg = _refused(single, f"num_hidden_layers = {claimed}", "layers 0..3 (4 layers)",
                   "set num_hidden_layers to 4 in config.json")
    assert str(single) in msg


@pytest.mark.parametrize("claimed", [N + 2, N - 2])
def test_sharded_layer_count_disagreeing_is_refused(sharded, tmp_path, claimed):
    path = _edit_config(_copy(sharded, tmp_path / "m"), num_hidden_layers=claimed)
    _refused(path, f"num_hidden_layers = {claimed}", "layers 0..3 (4 layers)")


def test_the_matching_count_still_opens(single, sharded):
    # guards the tests above against a check that refuses everything
    assert geomlib.open_model(single).n_layers == N
    assert geomlib.open_model(sharded).n_layers == N


def test_a_layer_missing_in_the_middle_is_refused(tmp_path):
    """Layers 0, 1, 3 of 4: the count matches the largest index, but a layer has no tensors at all."""
    path, _ = build(tmp_path / "gap", N, plant=lambda L, fresh, prev: {} if L == 2 else fresh)
    _refused(path, "num_hidden_layers = 4", "layers 0..1, 3 (3 layers)", "missing")


def test_a_lone_layer_far_past_the_count_is_refused(single):
    """``layers.1000000`` beside 0..3: the file holds more than the config says."""
    from safetensors.torch import load_file, save_file

    f = single / "model.safetensors"
    tensors = load_file(f)
    tensors["model.layers.1000000.input_layernorm.weight"] = tensors["model.layers.0.input_layernorm.weight"].clone()
    save_file(tensors, str(f))
    _refused(single, "num_hidden_layers = 4", "layers 0..3, 1000000 (5 layers)")


def test_gpt2_names_its_own_key(tmp_path):
    path, _ = make_checkpoint(tmp_path, "gpt2", n_layers=3)
    _edit_config(path, n_layer=5)
    _refused(path, "n_layer = 5", "set n_layer to 3")


def test_other_models_in_the_file_are_not_counted(tmp_path):
    """Layers under another prefix (a vision tower) are not the language model's."""
    from safetensors.torch import load_file, save_file

    path, _ = build(tmp_path / "mm", N)
    f = path / "model.safetensors"
    tensors = load_file(f)
    for L in range(N + 3):
        tensors[f"vision_tower.layers.{L}.input_layernorm.weight"] = tensors["model.norm.weight"].clone()
    save_file(tensors, str(f))
    assert geomlib.open_model(path).n_layers == N


# -- sizes --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("change, fact, fam", [
    (dict(hidden_size=64), "hidden=64", "q_proj"),
    (dict(num_attention_heads=8), "heads=8/2", "q_proj"),
    (dict(num_key_value_heads=1), "heads=4/1", "k_proj"),
    (dict(head_dim=16), "head_dim=16", "q_proj"),
    (dict(intermediate_size=96), "intermediate=96", "gate_proj"),
], ids=["hidden", "heads", "kv-heads", "head-dim", "intermediate"])
@pytest.mark.parametrize("layout", ["single", "sharded"])
def test_sizes_disagreeing_with_the_shapes_are_refused(single, sharded, tmp_path, layout, change, fact, fam):
    path = single if layout == "single" else _copy(sharded, tmp_path / "m")
    _edit_config(path, **change)
    _refused(path, fact, f"layer 0 {fam}", "shape", "do not match config.json")


def test_fused_qkv_of_the_wrong_size_is_refused_as_a_whole(tmp_path):
    """GPT-NeoX fuses q, k, v: the stored tensor is compared with the three together."""
    path, _ = make_checkpoint(tmp_path, "gpt_neox", n_layers=2)
    _edit_config(path, num_attention_heads=2, head_dim=8)  # 2 heads of 8: 48 fused rows, the file has 96
    _refused(path, "q_proj+k_proj+v_proj (stored together as", "[96, 32]", "implies [48, 32]")


# -- GGUF: metadata against the blk.N tensors -----------------------------------------------------------


@pytest.fixture(scope="module")
def llama3():
    return tiny_model("llama", 3)


def _drop_block(w, block: int) -> None:
    """Make ``write_gguf``'s writer skip every tensor of ``block``."""
    add = w.add_tensor
    w.add_tensor = lambda name, *a, **k: None if name.startswith(f"blk.{block}.") else add(name, *a, **k)


@pytest.mark.parametrize("claimed", [5, 2])
def test_gguf_block_count_disagreeing_with_the_tensors_is_refused(tmp_path, llama3, claimed):
    path = write_gguf(tmp_path / "m.gguf", llama3, "llama", edit=lambda w: w.add_block_count(claimed))
    msg = _refused(path, f"llama.block_count = {claimed}", "blocks 0..2 (3 blocks)", "re-convert")
    assert "config.json" not in msg


def test_gguf_with_a_block_missing_is_refused(tmp_path, llama3):
    path = write_gguf(tmp_path / "m.gguf", llama3, "llama", edit=lambda w: _drop_block(w, 1))
    _refused(path, "llama.block_count = 3", "blocks 0, 2 (2 blocks)")


@pytest.mark.parametrize("edit, fact", [
    (lambda w: w.add_embedding_length(64), "hidden=64"),
    (lambda w: w.add_head_count(8), "heads=8/2"),
    (lambda w: w.add_feed_forward_length(96), "intermediate=96"),
], ids=["embedding_length", "head_count", "feed_forward_length"])
def test_gguf_sizes_disagreeing_with_the_shapes_are_refused(tmp_path, llama3, edit, fact):
    path = write_gguf(tmp_path / "m.gguf", llama3, "llama", edit=edit)
    msg = _refused(path, fact, "shape", "GGUF metadata", "re-convert")
    assert "config.json" not in msg


# -- the CLI: exit 2, one line, nothing cached --------------------------------------------------------------


def _limit_memory() -> None:
    # a regression that computes on a wrong config must fail here, not exhaust a shared machine
    resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))


def _cli(*args, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    return subprocess.run([sys.executable, "-m", "geomlib", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300, preexec_fn=_limit_memory)


def _assert_cli_refuses(source: Path, tmp_path: Path, *words: str) -> None:
    cache = tmp_path / "cache"
    for cmd in (["info", source], ["compute", source, "--cache", cache, "-q", "--no-heads.forward-pass"]):
        r = _cli(*cmd, cwd=tmp_path)
        assert r.returncode == 2, (cmd, r.returncode, r.stderr[-2000:])
        assert "Traceback" not in r.stderr and r.stdout == "", r.stderr
        lines = r.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("geomlib: error: "), r.stderr
        for w in words:
            assert w in lines[0], (w, lines[0])
    assert not cache.exists() or not any(cache.rglob("*")), sorted(cache.rglob("*"))


@pytest.mark.parametrize("claimed", [N + 2, N - 2], ids=["too-high", "too-low"])
def test_cli_refuses_a_wrong_layer_count_before_any_work(single, tmp_path, claimed):
    _edit_config(single, num_hidden_layers=claimed)
    _assert_cli_refuses(single, tmp_path, f"num_hidden_layers = {claimed}", "(4 layers)")


def test_cli_refuses_a_wrong_hidden_size_in_a_sharded_checkpoint(sharded, tmp_path):
    path = _edit_config(_copy(sharded, tmp_path / "m"), hidden_size=64)
    _assert_cli_refuses(path, tmp_path, "hidden=64", "shape")


def test_cli_refuses_a_gguf_whose_block_count_disagrees(tmp_path, llama3):
    path = write_gguf(tmp_path / "m.gguf", llama3, "llama", edit=lambda w: w.add_block_count(2))
    _assert_cli_refuses(path, tmp_path, "llama.block_count = 2", "(3 blocks)")
