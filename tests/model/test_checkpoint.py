"""``Checkpoint`` behaviour that is not architecture-specific."""

from __future__ import annotations

import pytest
import torch

import geomlib
from geomlib.errors import InvalidArgumentError
from tests.factories.hf import make_checkpoint


@pytest.fixture
def gqa(tmp_path):
    """A 3-layer Qwen3-like checkpoint: GQA (4 heads / 2 kv heads), heads*head_dim != hidden."""
    path, model = make_checkpoint(tmp_path, "qwen3", n_layers=3)
    with geomlib.open_model(path) as ckpt:
        yield ckpt, model


def test_head_views_follow_gqa_grouping(gqa):
    ckpt, model = gqa
    att = model.layers[1].self_attn
    w = ckpt.layer(1)
    d = ckpt.head_dim
    assert ckpt.n_heads * d != ckpt.hidden  # the case where heads*d != hidden
    for h in range(ckpt.n_heads):
        kv = h // (ckpt.n_heads // ckpt.n_kv_heads)
        assert torch.equal(ckpt.head(w, "q_proj", h), att.q_proj.weight.detach()[h * d:(h + 1) * d].double())
        assert torch.equal(ckpt.head(w, "k_proj", h), att.k_proj.weight.detach()[kv * d:(kv + 1) * d].double())
        assert torch.equal(ckpt.head(w, "v_proj", h), att.v_proj.weight.detach()[kv * d:(kv + 1) * d].double())
        assert torch.equal(ckpt.head(w, "o_proj", h), att.o_proj.weight.detach()[:, h * d:(h + 1) * d].double())
    assert ckpt.head(w, "q_proj", 0).shape == (d, ckpt.hidden)
    assert ckpt.head(w["o_proj"], "o_proj", 3).shape == (ckpt.hidden, d)


def test_head_view_argument_errors(gqa):
    ckpt, _ = gqa
    w = ckpt.layer(0)
    with pytest.raises(InvalidArgumentError, match="no per-head view"):
        ckpt.head(w, "up_proj", 0)
    with pytest.raises(InvalidArgumentError, match="heads 0..3"):
        ckpt.head(w, "q_proj", 4)


def test_layer_subset_dtype_and_negative_index(gqa):
    ckpt, model = gqa
    got = ckpt.layer(-1, families=["k_proj", "q_norm"], dtype=torch.float32)
    assert set(got) == {"k_proj", "q_norm"}
    assert got["k_proj"].dtype == torch.float32
    assert torch.equal(got["q_norm"], model.layers[2].self_attn.q_norm.weight.detach())
    assert ckpt.layer(0, families="v_proj").keys() == {"v_proj"}


def test_layer_reads_only_what_was_asked(gqa):
    ckpt, _ = gqa
    before = list(ckpt._store.tensors_read)
    ckpt.layer(2, families=["q_proj", "down_proj"])
    new = ckpt._store.tensors_read[len(before):]
    assert sorted(new) == ["layers.2.mlp.down_proj.weight", "layers.2.self_attn.q_proj.weight"]


def test_fused_tensor_is_read_once_per_layer(tmp_path):
    path, _ = make_checkpoint(tmp_path, "gpt2", n_layers=2)
    with geomlib.open_model(path) as ckpt:
        ckpt.layer(1, families=["q_proj", "k_proj", "v_proj"])
        assert ckpt._store.tensors_read == ["h.1.attn.c_attn.weight"]


def test_iter_layers_streams_every_layer_in_order(gqa):
    ckpt, _ = gqa
    seen = [(L, tuple(sorted(w))) for L, w in ckpt.iter_layers(families=["o_proj"], progress=False)]
    assert seen == [(0, ("o_proj",)), (1, ("o_proj",)), (2, ("o_proj",))]


def test_device_auto_and_cpu(gqa):
    ckpt, _ = gqa
    want = "cuda" if torch.cuda.is_available() else "cpu"
    assert ckpt.layer(0, families="q_proj", device="auto")["q_proj"].device.type == want
    assert ckpt.layer(0, families="q_proj", device="cpu")["q_proj"].device.type == "cpu"
    with pytest.raises(InvalidArgumentError, match="not a torch device"):
        ckpt.layer(0, device="tpu-please")


@pytest.mark.parametrize("bad", [torch.int32, "float64", None])
def test_non_float_dtype_is_refused(gqa, bad):
    ckpt, _ = gqa
    with pytest.raises(InvalidArgumentError, match="floating dtype"):
        ckpt.layer(0, dtype=bad)


def test_summary_is_flat_and_serialisable(gqa):
    ckpt, _ = gqa
    s = ckpt.summary()
    assert s["n_layers"] == 3 and s["n_kv_heads"] == 2 and s["arch"] == "qwen3"
    assert all(isinstance(v, (str, int, float)) for v in s.values())
    assert len(s["identity"]) == 64
    assert "qwen3" in repr(ckpt) and "layers=3" in repr(ckpt)


def test_identity_is_stable_and_tracks_the_files(tmp_path):
    a, _ = make_checkpoint(tmp_path, "llama", n_layers=2, name="a")
    b, _ = make_checkpoint(tmp_path, "llama", n_layers=2, name="b")  # same seed, same bytes
    c, _ = make_checkpoint(tmp_path, "llama", n_layers=3, name="c")
    ia, ib, ic = (geomlib.open_model(p).identity for p in (a, b, c))
    assert ia == ib
    assert ia != ic
    assert geomlib.open_model(a).identity == ia


def test_import_geomlib_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, geomlib; assert 'torch' not in sys.modules, 'torch imported'; print(geomlib.__version__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_identity_sees_the_weights_not_the_file_layout(tmp_path):
    single, _ = make_checkpoint(tmp_path, "llama", n_layers=2, name="single")
    sharded, _ = make_checkpoint(tmp_path, "llama", n_layers=2, name="sharded", max_shard_size="8KB")
    finetune, _ = make_checkpoint(tmp_path, "llama", n_layers=2, name="finetune", seed=1)  # same shapes
    a, b, c = (geomlib.open_model(p) for p in (single, sharded, finetune))
    assert a.identity == b.identity
    assert a.identity != c.identity
    assert a.summary()["identity"] == a.identity


def test_identity_changes_when_one_tensor_changes(tmp_path):
    from safetensors.torch import load_file, save_file

    path, _ = make_checkpoint(tmp_path, "llama", n_layers=2)
    before = geomlib.open_model(path).identity
    tensors = load_file(path / "model.safetensors")
    tensors["layers.1.mlp.up_proj.weight"] = tensors["layers.1.mlp.up_proj.weight"] * 1.01
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})
    assert geomlib.open_model(path).identity != before


def test_public_names_after_the_move_to_geomlib_model():
    import geomlib.model

    assert geomlib.open_model is geomlib.model.open_model
    assert geomlib.Checkpoint is geomlib.model.Checkpoint
    assert geomlib.model.checkpoint.Checkpoint is geomlib.Checkpoint
