"""Every bad source is refused with one clear sentence of the right :class:`GeomlibError` subclass.

Each case asserts the exception class, that it derives from
:class:`geomlib.GeomlibError` (so callers and the CLI can catch one type), the
key words a user needs, and that the message is a single line.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

import geomlib
from geomlib.errors import (
    CorruptCheckpointError,
    InvalidArgumentError,
    SourceNotFoundError,
    UnsafeFormatError,
    UnsupportedArchitectureError,
    UnsupportedSourceError,
)
from tests.factories.hf import make_checkpoint


def refused(source, cls: type[Exception], *words: str) -> str:
    """Open ``source``, expect ``cls``; return the message after checking its form and words."""
    with pytest.raises(cls) as ei:
        geomlib.open_model(source)
    err = ei.value
    assert isinstance(err, geomlib.GeomlibError)
    msg = str(err)
    assert msg and "\n" not in msg, msg
    for w in words:
        assert w.lower() in msg.lower(), (w, msg)
    return msg


@pytest.fixture
def ckpt_dir(tmp_path) -> Path:
    path, _ = make_checkpoint(tmp_path, "llama", n_layers=2)
    return path


def _edit_config(path: Path, **changes) -> None:
    cfg = json.loads((path / "config.json").read_text())
    cfg.update(changes)
    (path / "config.json").write_text(json.dumps(cfg))


class _Trap:
    """Unpickling this creates ``path``: proof that a pickle was loaded."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _trap_bytes(marker: Path) -> bytes:
    payload = pickle.dumps(_Trap(marker))
    # guard the guard: these very bytes create a file when unpickled (the control
    # path has the marker's length, so swapping it in keeps the pickle valid)
    control = marker.with_name(marker.name[:-1] + "#")
    pickle.loads(payload.replace(str(marker).encode(), str(control).encode())).close()
    assert control.exists()
    control.unlink()
    return payload


# -- paths that are not models -----------------------------------------------------------


def test_missing_path(tmp_path):
    missing = tmp_path / "no" / "such" / "model"
    msg = refused(missing, SourceNotFoundError, "not an existing file or directory", "check the path")
    assert str(missing) in msg
    # a str source that cannot be a hub id says the same
    refused(str(missing), SourceNotFoundError, str(missing), "not an existing")


def test_missing_relative_path_is_not_taken_for_a_hub_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    refused("./models/llama", SourceNotFoundError, "not an existing file or directory")


def test_empty_string_is_not_the_current_directory(ckpt_dir, monkeypatch):
    """``""`` (an unset variable) must not silently open whatever model is in the cwd."""
    monkeypatch.chdir(ckpt_dir)
    refused("", SourceNotFoundError, "empty")
    refused("   ", SourceNotFoundError, "empty")


def test_directory_without_config(tmp_path):
    (tmp_path / "weights.txt").write_text("nothing")
    msg = refused(tmp_path, SourceNotFoundError, "no config.json", "model.safetensors", ".gguf")
    assert str(tmp_path) in msg


def test_directory_with_config_but_no_weights(ckpt_dir):
    (ckpt_dir / "model.safetensors").unlink()
    refused(ckpt_dir, SourceNotFoundError, "no weights", "model.safetensors")


def test_safetensors_file_without_config_beside_it(ckpt_dir):
    (ckpt_dir / "config.json").unlink()
    refused(ckpt_dir / "model.safetensors", SourceNotFoundError, "no config.json", "model.safetensors")


def test_file_of_unknown_kind(tmp_path):
    f = tmp_path / "model.txt"
    f.write_text("hello")
    refused(f, UnsupportedSourceError, "neither a .gguf nor a .safetensors")


# -- configs -----------------------------------------------------------------------------


def test_unsupported_model_type_lists_supported(ckpt_dir):
    _edit_config(ckpt_dir, model_type="mamba")
    msg = refused(ckpt_dir, UnsupportedArchitectureError, "'mamba'", "supported")
    for mt in ("llama", "gpt2", "qwen3", "bert"):
        assert mt in msg


def test_config_without_model_type(ckpt_dir):
    cfg = json.loads((ckpt_dir / "config.json").read_text())
    del cfg["model_type"]
    (ckpt_dir / "config.json").write_text(json.dumps(cfg))
    refused(ckpt_dir, UnsupportedArchitectureError, "model_type None", "llama")


@pytest.mark.parametrize("text", ["{not json", "\xff\xfe garbage", ""], ids=["syntax", "binary", "empty"])
def test_config_not_json(ckpt_dir, text):
    (ckpt_dir / "config.json").write_bytes(text.encode("latin-1"))
    refused(ckpt_dir, CorruptCheckpointError, "config.json", "not valid JSON")


def test_config_not_an_object(ckpt_dir):
    (ckpt_dir / "config.json").write_text("[1, 2, 3]")
    refused(ckpt_dir, CorruptCheckpointError, "config.json", "JSON object")


def test_weights_not_matching_config(ckpt_dir):
    # the tiny llama has hidden 32; 64 makes every matrix the wrong shape
    _edit_config(ckpt_dir, hidden_size=64)
    refused(ckpt_dir, CorruptCheckpointError, "shape", "do not match config.json", "hidden=64")


def test_config_with_nonsense_sizes(ckpt_dir):
    _edit_config(ckpt_dir, num_attention_heads=0)
    refused(ckpt_dir, CorruptCheckpointError, "num_attention_heads=0", "positive integer")


def test_config_of_another_model_type(ckpt_dir):
    """A gpt2 config beside llama weights: the tensor names cannot be found."""
    _edit_config(ckpt_dir, model_type="gpt2", n_layer=2, n_head=4, n_embd=32)
    refused(ckpt_dir, CorruptCheckpointError, "gpt2", "do not belong to this config")


# -- pickles: refused, never loaded ----------------------------------------------------------


@pytest.mark.parametrize("suffix", [".bin", ".pt", ".pth", ".ckpt", ".pkl"])
def test_pickle_file_refused_without_unpickling(tmp_path, suffix):
    marker = tmp_path / "unpickled"
    f = tmp_path / f"model{suffix}"
    f.write_bytes(_trap_bytes(marker))
    refused(f, UnsafeFormatError, "pickle", "arbitrary code", "safetensors", str(f))
    assert not marker.exists()


def test_pytorch_model_bin_directory_refused_without_unpickling(ckpt_dir, tmp_path):
    marker = tmp_path / "unpickled"
    (ckpt_dir / "model.safetensors").unlink()
    (ckpt_dir / "pytorch_model.bin").write_bytes(_trap_bytes(marker))
    msg = refused(ckpt_dir, UnsafeFormatError, "pytorch_model.bin", "pickle", "arbitrary code", "safetensors")
    assert str(ckpt_dir) in msg
    assert not marker.exists()
    # UnsafeFormatError is a kind of UnsupportedSourceError
    assert issubclass(UnsafeFormatError, UnsupportedSourceError)


def test_pickle_only_directory_without_config_refused_as_pickle(tmp_path):
    """A bare ``pytorch_model.bin`` folder: the pickle is the problem, not the missing config."""
    marker = tmp_path / "unpickled"
    d = tmp_path / "model"
    d.mkdir()
    (d / "pytorch_model.bin").write_bytes(_trap_bytes(marker))
    refused(d, UnsafeFormatError, "pytorch_model.bin", "pickle", "arbitrary code")
    assert not marker.exists()


def test_weights_without_config_are_not_called_pickle_only(ckpt_dir, tmp_path):
    """With a .safetensors present, the missing config.json is the problem to report."""
    (ckpt_dir / "pytorch_model.bin").write_bytes(_trap_bytes(tmp_path / "unpickled"))
    (ckpt_dir / "config.json").unlink()
    refused(ckpt_dir, SourceNotFoundError, "no config.json")
    assert not (tmp_path / "unpickled").exists()


def test_safetensors_preferred_over_pickle_copy(ckpt_dir, tmp_path):
    """Repos often ship both; the safetensors file is read and the pickle left alone."""
    marker = tmp_path / "unpickled"
    (ckpt_dir / "pytorch_model.bin").write_bytes(_trap_bytes(marker))
    with geomlib.open_model(ckpt_dir) as ckpt:
        ckpt.layer(0)
    assert not marker.exists()


# -- other kinds of source -----------------------------------------------------------------


@pytest.mark.parametrize("source", [123, None, 4.5, b"/tmp/model", ["a/b"]], ids=repr)
def test_non_path_source(source):
    refused(source, UnsupportedSourceError, "must be a path or a string", type(source).__name__)


def test_unknown_demo_lists_demos():
    msg = refused("demo:nope", InvalidArgumentError, "'demo:nope'", "not a bundled demo")
    assert "demo:minilm-l6" in msg and "demo:smollm2-135m" in msg


def test_demo_minilm_opens():
    with geomlib.open_model("demo:minilm-l6") as ckpt:
        assert (ckpt.arch, ckpt.n_layers, ckpt.n_heads, ckpt.hidden) == ("bert", 6, 12, 384)
        assert ckpt.format == "safetensors" and ckpt.dtype == "F32"
        W = ckpt.layer(5)
        assert W["q_proj"].shape == (384, 384) and W["q_proj"].dtype == torch.float64
        assert ckpt.origin["demo"].startswith("all-MiniLM-L6-v2")


def test_multiple_safetensors_without_index(ckpt_dir):
    (ckpt_dir / "extra.safetensors").write_bytes((ckpt_dir / "model.safetensors").read_bytes())
    (ckpt_dir / "model.safetensors").rename(ckpt_dir / "weights.safetensors")
    refused(ckpt_dir, UnsupportedSourceError, "several .safetensors", "model.safetensors.index.json")


# -- arguments of Checkpoint.layer -------------------------------------------------------------


@pytest.fixture
def ckpt(ckpt_dir):
    with geomlib.open_model(ckpt_dir) as c:
        yield c


@pytest.mark.parametrize("L", [2, -3, 100, 1.0, "0", True, None])
def test_layer_out_of_range(ckpt, L):
    with pytest.raises(InvalidArgumentError) as ei:
        ckpt.layer(L)
    msg = str(ei.value)
    assert isinstance(ei.value, geomlib.GeomlibError) and "\n" not in msg
    assert "out of range" in msg and "0..1" in msg and repr(L) in msg
    with pytest.raises(InvalidArgumentError):
        ckpt.biases(L)
    with pytest.raises(InvalidArgumentError):
        ckpt.layer_nbytes(L)


def test_negative_layer_counts_from_the_end(ckpt):
    a, b = ckpt.layer(-1), ckpt.layer(1)
    assert all(torch.equal(a[k], b[k]) for k in a) and a.keys() == b.keys()


@pytest.mark.parametrize("families", ["attention", ["q_proj", "wq"], ("mlp",)])
def test_unknown_family(ckpt, families):
    with pytest.raises(InvalidArgumentError) as ei:
        ckpt.layer(0, families=families)
    msg = str(ei.value)
    assert isinstance(ei.value, geomlib.GeomlibError) and "\n" not in msg
    assert "unknown famil" in msg and "q_proj" in msg and "down_proj" in msg


def test_bad_dtype(ckpt):
    with pytest.raises(InvalidArgumentError, match="floating dtype"):
        ckpt.layer(0, dtype=torch.int32)


def test_errors_are_standard_exceptions_too():
    """Callers that catch built-in kinds (FileNotFoundError, ValueError) keep working."""
    assert issubclass(SourceNotFoundError, FileNotFoundError)
    for cls in (UnsupportedSourceError, CorruptCheckpointError, InvalidArgumentError, UnsupportedArchitectureError):
        assert issubclass(cls, ValueError) and issubclass(cls, geomlib.GeomlibError)


def test_missing_relative_path_that_looks_like_a_hub_id_says_both(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(SourceNotFoundError) as err:
        geomlib.open_model("models/llama")
    msg = str(err.value)
    assert "HF_HUB_OFFLINE" in msg and "nor is there a local path 'models/llama'" in msg
    assert "\n" not in msg


def test_directory_with_one_uppercase_gguf_opens_it(tmp_path):
    from tests.factories.gguf import write_gguf
    from tests.factories.hf import tiny_model

    write_gguf(tmp_path / "d" / "MODEL.GGUF", tiny_model("qwen2", n_layers=1), "qwen2")
    assert geomlib.open_model(tmp_path / "d").arch == "qwen2"
