"""Hostile headers cost bounded memory and time: every count and length is checked before it is used.

A header is a few bytes that announce sizes: a GGUF ``block_count`` of 2**32-1
once built a 3.7 GiB tensor-name map, a tensor count of 2**63 or an array
length of 2**40 made gguf's reader walk the file item by item, a config with
``num_hidden_layers`` = 2**31 looped for ever, an index tensor was sized by a
config's head count.  Each open that must not blow up runs in a child process
with its own clock and peak-RSS counter (and an address-space limit, so that
a regression fails with MemoryError instead of swapping the machine); the
rest, which cannot loop or allocate, are checked in process.
"""

from __future__ import annotations

import json
import os
import resource
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import geomlib
from geomlib.errors import CorruptCheckpointError, GeomlibError
from tests.factories.gguf import write_gguf
from tests.factories.hf import make_checkpoint, tiny_model
from tests.factories.synthetic import build

MAX_SECONDS = 10
MAX_GROWTH_MB = 300
ROOT = Path(__file__).resolve().parents[2]

# Opens one source and prints what happened.  Everything the open needs is imported before the
# baseline, so the growth measured is the open's own.
_CHILD = r"""
import json, resource, sys, time
import gguf, torch  # noqa: F401
import geomlib
import geomlib.model.checkpoint  # noqa: F401

def vm_size():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))

limit = vm_size() + (1 << 30)  # a runaway allocation fails here rather than swapping the machine
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
try:
    geomlib.open_model(sys.argv[1]).close()
    out = {"kind": "opened", "geomlib": False, "message": ""}
except BaseException as exc:
    out = {"kind": type(exc).__name__, "geomlib": isinstance(exc, geomlib.GeomlibError), "message": str(exc)}
out["seconds"] = time.perf_counter() - t0
out["grown_mb"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
print(json.dumps(out))
"""


def _env() -> dict[str, str]:
    return dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))


def bounded_refusal(source: Path, *words: str) -> str:
    """Open ``source`` in a child: a CorruptCheckpointError within the time and memory bounds; its message."""
    r = subprocess.run([sys.executable, "-c", _CHILD, str(source)], capture_output=True, text=True,
                       env=_env(), cwd=source.parent, timeout=120)
    assert r.returncode == 0 and r.stdout.strip(), r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["kind"] == "CorruptCheckpointError", out
    assert out["seconds"] < MAX_SECONDS, out
    assert out["grown_mb"] < MAX_GROWTH_MB, out
    msg = out["message"]
    assert "\n" not in msg, msg
    for w in words:
        assert w in msg, (w, msg)
    return msg


def refused(source: Path, *words: str, cls: type[GeomlibError] = CorruptCheckpointError) -> str:
    """Open ``source`` in process (for inputs that cannot loop or allocate): ``cls``, one line, ``words``."""
    with pytest.raises(cls) as ei:
        geomlib.open_model(source)
    msg = str(ei.value)
    assert "\n" not in msg, msg
    for w in words:
        assert w in msg, (w, msg)
    return msg


def _limit_memory() -> None:
    """In a CLI child: an address-space cap, so that a regression fails instead of exhausting the machine."""
    resource.setrlimit(resource.RLIMIT_AS, (CLI_ADDRESS_SPACE, CLI_ADDRESS_SPACE))


CLI_ADDRESS_SPACE = 6 << 30


def cli_refuses(source: Path, tmp_path: Path, *words: str) -> None:
    """``geomlib info`` and ``geomlib compute`` exit 2 with one error line and leave the cache empty."""
    cache = tmp_path / "cache"
    for cmd in (["info", source], ["compute", source, "--cache", cache, "-q", "--no-heads.forward-pass"]):
        r = subprocess.run([sys.executable, "-m", "geomlib", *map(str, cmd)], capture_output=True, text=True,
                           env=_env(), cwd=tmp_path, timeout=120, preexec_fn=_limit_memory)
        assert r.returncode == 2, (cmd, r.returncode, r.stderr[-3000:])
        assert "Traceback" not in r.stderr and r.stdout == "", r.stderr[-3000:]
        lines = r.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("geomlib: error: "), r.stderr[-3000:]
        for w in words:
            assert w in lines[0], (w, lines[0])
    assert not cache.exists() or not any(cache.rglob("*")), sorted(cache.rglob("*"))


# -- GGUF -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def llama3():
    return tiny_model("llama", 3)


#: bytes of zeros stored as the first tensor's data: a header walk that runs past the real header reads
#: them as endless well-formed empty entries (a 24-byte tensor info, a 4-byte array item)
ZEROS = 8 << 20


def _with_zeros(w) -> None:
    w.add_tensor("zeros", np.zeros(ZEROS // 4, np.float32))


def _gguf(tmp_path: Path, model, name: str = "m.gguf", edit=None, zeros: bool = False) -> Path:
    def both(w):
        if zeros:
            _with_zeros(w)
        if edit is not None:
            edit(w)
    return write_gguf(tmp_path / name, model, "llama", edit=both)


def _field_value_offset(path: Path, key: str) -> int:
    """Offset of the value of metadata ``key`` (after its key string and type)."""
    import gguf

    f = gguf.GGUFReader(path, "r").fields[key]
    return f.offset + 8 + len(key.encode()) + 4


def _tensor_info_offset(path: Path, name: str) -> int:
    import gguf

    return next(t.field.offset for t in gguf.GGUFReader(path, "r").tensors if t.name == name)


def _patch(path: Path, offset: int, fmt: str, *values) -> Path:
    with path.open("r+b") as f:
        f.seek(offset)
        f.write(struct.pack(fmt, *values))
    return path


def test_valid_gguf_opens_within_the_bounds_too(tmp_path, llama3):
    """The harness's baseline: the unpatched file with the zero tensor opens, cheaply."""
    path = _gguf(tmp_path, llama3, zeros=True)
    r = subprocess.run([sys.executable, "-c", _CHILD, str(path)], capture_output=True, text=True, env=_env(),
                       timeout=300)
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["kind"] == "opened", out
    assert out["seconds"] < MAX_SECONDS and out["grown_mb"] < MAX_GROWTH_MB, out


@pytest.mark.parametrize("claimed, writer", [
    (2**32 - 1, "add_block_count"),
    (2**63, "uint64"),
], ids=["u32-max", "u64-2**63"])
def test_gguf_block_count_is_checked_before_the_name_map_is_built(tmp_path, llama3, claimed, writer):
    def edit(w):
        if writer == "uint64":
            w.kv_data[0].pop("llama.block_count")
            w.add_uint64("llama.block_count", claimed)
        else:
            w.add_block_count(claimed)
    bounded_refusal(_gguf(tmp_path, llama3, edit=edit), f"llama.block_count = {claimed}", "(3 blocks)")


def test_gguf_tensor_count_of_2_63_is_refused(tmp_path, llama3):
    path = _patch(_gguf(tmp_path, llama3, zeros=True), 8, "<Q", 2**63)
    bounded_refusal(path, "9223372036854775808 tensors", str(path))


def test_gguf_key_count_of_2_63_is_refused(tmp_path, llama3):
    path = _patch(_gguf(tmp_path, llama3, zeros=True), 16, "<Q", 2**63)
    bounded_refusal(path, "9223372036854775808 metadata keys")


def test_gguf_key_length_of_2_40_is_refused(tmp_path, llama3):
    path = _patch(_gguf(tmp_path, llama3, zeros=True), 24, "<Q", 2**40)
    bounded_refusal(path, "1099511627776 bytes of key")


def test_gguf_string_length_of_2_40_is_refused(tmp_path, llama3):
    path = _gguf(tmp_path, llama3, zeros=True)
    _patch(path, _field_value_offset(path, "general.name"), "<Q", 2**40)
    bounded_refusal(path, "1099511627776 bytes of string")


@pytest.mark.parametrize("zeros", [False, True], ids=["small-file", "zeros-follow"])
def test_gguf_array_length_of_2_40_is_refused(tmp_path, llama3, zeros):
    """gguf's reader loops once per announced item, past the end of the file too (empty reads)."""
    path = _gguf(tmp_path, llama3, zeros=zeros, edit=lambda w: w.add_array("test.array", [1, 2, 3]))
    _patch(path, _field_value_offset(path, "test.array") + 4, "<Q", 2**40)
    bounded_refusal(path, "1099511627776 array items")


def test_gguf_tensor_with_2_32_dimensions_is_refused(tmp_path, llama3):
    path = _gguf(tmp_path, llama3, zeros=True)
    at = _tensor_info_offset(path, "blk.0.attn_q.weight") + 8 + len("blk.0.attn_q.weight")
    _patch(path, at, "<I", 2**32 - 1)
    bounded_refusal(path, "4294967295 dimensions")


def test_gguf_tensor_of_2_80_elements_is_refused(tmp_path, llama3):
    """Dimensions whose product wraps around 2**64 (to 0 in gguf's uint64 arithmetic)."""
    path = _gguf(tmp_path, llama3)
    at = _tensor_info_offset(path, "blk.0.attn_q.weight") + 8 + len("blk.0.attn_q.weight") + 4
    _patch(path, at, "<QQ", 2**40, 2**40)
    bounded_refusal(path, "corrupt")


def test_gguf_tensor_with_a_zero_dimension_is_refused(tmp_path, llama3):
    path = _gguf(tmp_path, llama3)
    at = _tensor_info_offset(path, "blk.0.attn_q.weight") + 8 + len("blk.0.attn_q.weight") + 4
    _patch(path, at, "<Q", 0)
    refused(path, "layer 0 q_proj", "shape [32, 0]", "GGUF metadata")


@pytest.mark.parametrize("key", ["llama.block_count", "llama.embedding_length", "llama.attention.head_count"])
@pytest.mark.parametrize("value", ["3", 3.0, True, -1, 0], ids=["string", "float", "bool", "negative", "zero"])
def test_gguf_count_of_the_wrong_kind_is_refused(tmp_path, llama3, key, value):
    def edit(w):
        w.kv_data[0].pop(key)
        add = {str: w.add_string, float: w.add_float32, bool: w.add_bool, int: w.add_int32}[type(value)]
        add(key, value)
    msg = refused(_gguf(tmp_path, llama3, edit=edit), key, "positive integer")
    assert "config.json" not in msg


@pytest.mark.parametrize("key, words", [
    ("llama.embedding_length", ["shape", "GGUF metadata"]),
    ("llama.feed_forward_length", ["shape", "GGUF metadata"]),
    # hidden // heads is then 0: the head size derived from it is not a positive integer
    ("llama.attention.head_count", ["attention.key_length = 0", "positive integer"]),
])
def test_gguf_size_of_2_32_is_refused_without_allocating(tmp_path, llama3, key, words):
    def edit(w):
        w.kv_data[0].pop(key)
        w.add_uint32(key, 2**32 - 1)
    bounded_refusal(_gguf(tmp_path, llama3, edit=edit), *words)


def test_cli_refuses_a_hostile_gguf(tmp_path, llama3):
    path = _gguf(tmp_path, llama3, edit=lambda w: w.add_block_count(2**32 - 1))
    cli_refuses(path, tmp_path, "llama.block_count = 4294967295")


# -- safetensors ------------------------------------------------------------------------------------------------


def _rewrite_header(f: Path, edit=None, raw: bytes | None = None, length: int | None = None) -> Path:
    """Replace ``f``'s JSON header by ``edit(header)`` (or by ``raw`` bytes), keeping the data bytes."""
    data = f.read_bytes()
    n = int.from_bytes(data[:8], "little")
    body = data[8 + n:]
    if raw is None:
        header = json.loads(data[8 : 8 + n])
        edit(header)
        raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    f.write_bytes(struct.pack("<Q", len(raw) if length is None else length) + raw + body)
    return f


@pytest.fixture
def llama_dir(tmp_path) -> Path:
    return build(tmp_path / "llama", 2, dtype=torch.float32)[0]


Q = "model.layers.0.self_attn.q_proj.weight"


@pytest.mark.parametrize("length", [2**40, 2**63 - 1], ids=["2**40", "2**63"])
def test_safetensors_header_length_far_past_the_file_is_refused(llama_dir, length):
    f = llama_dir / "model.safetensors"
    _patch(f, 0, "<Q", length)
    bounded_refusal(llama_dir, str(f), "header")


def test_safetensors_header_length_just_past_the_file_is_refused(llama_dir):
    f = llama_dir / "model.safetensors"
    _patch(f, 0, "<Q", f.stat().st_size + 1)
    bounded_refusal(llama_dir, str(f), "truncated")


def test_safetensors_shape_of_2_40_elements_past_the_file_is_refused(llama_dir):
    f = llama_dir / "model.safetensors"

    def edit(h):
        begin = h[Q]["data_offsets"][0]
        h[Q].update(shape=[2**20, 2**20], data_offsets=[begin, begin + 4 * 2**40])
    _rewrite_header(f, edit)
    bounded_refusal(llama_dir, str(f), "truncated")


def test_safetensors_shape_of_2_40_elements_in_a_short_range_is_refused(llama_dir):
    f = _rewrite_header(llama_dir / "model.safetensors", lambda h: h[Q].update(shape=[2**40]))
    bounded_refusal(llama_dir, str(f), "[1099511627776]", "not 4398046511104 bytes long")


@pytest.mark.parametrize("shape", [[2**40, 0], [0, 32]], ids=["huge-by-zero", "zero-rows"])
def test_safetensors_empty_tensor_of_any_shape_is_refused_by_its_shape(llama_dir, shape):
    def edit(h):
        begin = h[Q]["data_offsets"][0]
        h[Q].update(shape=shape, data_offsets=[begin, begin])
    _rewrite_header(llama_dir / "model.safetensors", edit)
    bounded_refusal(llama_dir, "layer 0 q_proj", f"shape {shape}", "do not match config.json")


def test_safetensors_empty_fused_tensor_builds_no_row_index(tmp_path):
    """GPT-NeoX's fused qkv of shape [2**40, 0]: the row selector used to index ``arange(2**40)``."""
    path, _ = make_checkpoint(tmp_path, "gpt_neox", n_layers=2)
    name = "layers.0.attention.query_key_value.weight"

    def edit(h):
        key = next(k for k in h if k.endswith(name))
        begin = h[key]["data_offsets"][0]
        h[key].update(shape=[2**40, 0], data_offsets=[begin, begin])
    _rewrite_header(path / "model.safetensors", edit)
    bounded_refusal(path, "q_proj+k_proj+v_proj", "[1099511627776, 0]")


def test_safetensors_negative_dimension_is_refused(llama_dir):
    def edit(h):
        begin = h[Q]["data_offsets"][0]
        h[Q].update(shape=[-32, -32], data_offsets=[begin, begin + 4096])
    _rewrite_header(llama_dir / "model.safetensors", edit)
    refused(llama_dir, "not non-negative integers")


@pytest.mark.parametrize("raw", [
    b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    b'{"a": {"dtype": "F32", "shape": [' + b"9" * 5000 + b'], "data_offsets": [0, 4]}}',
], ids=["nested-100k-deep", "5000-digit-integer"])
def test_safetensors_header_json_that_python_cannot_parse_is_refused(llama_dir, raw):
    f = _rewrite_header(llama_dir / "model.safetensors", raw=raw)
    bounded_refusal(llama_dir, str(f), "unreadable safetensors header")


def test_cli_refuses_a_hostile_safetensors_header(llama_dir, tmp_path):
    _rewrite_header(llama_dir / "model.safetensors", raw=b"[" * 100_000 + b"]" * 100_000)
    cli_refuses(llama_dir, tmp_path, "unreadable safetensors header")


# -- config.json ------------------------------------------------------------------------------------------------


def _set_config(path: Path, text: str | None = None, **changes) -> Path:
    cfg_path = path / "config.json"
    if text is None:
        cfg = json.loads(cfg_path.read_text())
        cfg.update(changes)
        text = json.dumps(cfg)
    cfg_path.write_text(text)
    return path


@pytest.mark.parametrize("n", [2**31, 2**64], ids=["2**31", "2**64"])
def test_config_layer_count_is_checked_before_it_is_looped_over(llama_dir, n):
    bounded_refusal(_set_config(llama_dir, num_hidden_layers=n), f"num_hidden_layers = {n}", "(2 layers)")


def test_config_head_count_sizes_no_index_before_the_file_confirms_it(tmp_path):
    """GPT-NeoX builds index tensors of n_heads * head_dim rows: 2**31 heads must not allocate 2**31 rows."""
    path, _ = make_checkpoint(tmp_path, "gpt_neox", n_layers=2)
    bounded_refusal(_set_config(path, num_attention_heads=2**31, head_dim=1), "shape", "heads=2147483648")


@pytest.mark.parametrize("key", ["hidden_size", "intermediate_size", "num_attention_heads"])
def test_config_size_of_2_40_is_refused_by_the_shapes(llama_dir, key):
    changes = {key: 2**40}
    if key == "num_attention_heads":
        changes["num_key_value_heads"] = 2**40
    bounded_refusal(_set_config(llama_dir, **changes), "shape", "do not match config.json")


@pytest.mark.parametrize("key", ["num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size"])
@pytest.mark.parametrize("value", ["4", 4.0, True, -4, 0, None, float("inf"), [4], {"n": 4}],
                         ids=["string", "float", "bool", "negative", "zero", "null", "inf", "list", "object"])
def test_config_value_of_the_wrong_kind_is_refused(llama_dir, key, value):
    refused(_set_config(llama_dir, **{key: value}), key, "positive integer")


@pytest.mark.parametrize("text", [
    "[" * 100_000 + "]" * 100_000,
    '{"model_type": "llama", "num_hidden_layers": ' + "9" * 5000 + "}",
], ids=["nested-100k-deep", "5000-digit-integer"])
def test_config_json_that_python_cannot_parse_is_refused(llama_dir, text):
    refused(_set_config(llama_dir, text), "config.json", "not valid JSON")


def test_config_json_of_gigabytes_is_refused_unread(llama_dir):
    cfg = llama_dir / "config.json"
    with cfg.open("r+b") as f:
        f.truncate(1 << 32)  # sparse: 4 GiB that take no disk
    bounded_refusal(llama_dir, "config.json", "4294967296 bytes")


def test_index_json_that_python_cannot_parse_is_refused(tmp_path):
    path, _ = make_checkpoint(tmp_path, "llama", n_layers=3, max_shard_size="20KB")
    (path / "model.safetensors.index.json").write_text("[" * 100_000 + "]" * 100_000)
    refused(path, "model.safetensors.index.json", "not a valid safetensors index")


def test_index_with_a_shard_name_that_is_not_a_string_is_refused(tmp_path):
    path, _ = make_checkpoint(tmp_path, "llama", n_layers=3, max_shard_size="20KB")
    idx = path / "model.safetensors.index.json"
    index = json.loads(idx.read_text())
    index["weight_map"][next(iter(index["weight_map"]))] = ["model-00001-of-00002.safetensors"]
    idx.write_text(json.dumps(index))
    refused(path, "not a valid safetensors index")


def test_cli_refuses_a_config_with_2_31_layers(llama_dir, tmp_path):
    cli_refuses(_set_config(llama_dir, num_hidden_layers=2**31), tmp_path, "num_hidden_layers = 2147483648")
