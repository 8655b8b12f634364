"""scripts/train_demo_sweep.py: the offline demo sweep's training run (short schedules, in subprocesses)."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "train_demo_sweep.py"
SHORT = ("--steps", "20", "--save-at", "0,10,20")
STEPS = (0, 10, 20)


def train(out: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the script (offline, from a temp working directory) and return the finished process."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HUB_CACHE=str(out.parent / "hf-empty"))
    return subprocess.run([sys.executable, str(SCRIPT), str(out), *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=out.parent)


def weights(out: Path, step: int) -> bytes:
    return (out / f"step-{step:05d}" / "model.safetensors").read_bytes()


@pytest.fixture(scope="module")
def short_run(tmp_path_factory) -> Path:
    """One short run (seed 0), shared by the tests that only read it."""
    out = tmp_path_factory.mktemp("short") / "sweep"
    proc = train(out, *SHORT, "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and proc.stderr == "", (proc.stdout, proc.stderr)  # --quiet: nothing printed
    return out


def test_same_seed_writes_identical_weights_and_another_seed_does_not(short_run, tmp_path):
    again = tmp_path / "again"
    proc = train(again, *SHORT)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "3 checkpoints" in proc.stderr  # the summary line, not --quiet
    for step in STEPS:
        assert weights(again, step) == weights(short_run, step), step
    assert (again / "sweep.json").read_bytes() == (short_run / "sweep.json").read_bytes()

    other = tmp_path / "other-seed"
    proc = train(other, "--steps", "1", "--save-at", "0,1", "--seed", "1", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert weights(other, 0) != weights(short_run, 0)  # the initialisation follows the seed
    assert json.loads((other / "sweep.json").read_text())["training"]["seed"] == 1


def test_sweep_json_lists_the_checkpoints_in_order_and_the_loss_falls(short_run):
    sweep = json.loads((short_run / "sweep.json").read_text())
    ckpts = sweep["checkpoints"]
    assert [c["step"] for c in ckpts] == list(STEPS)
    assert [c["path"] for c in ckpts] == [f"step-{s:05d}" for s in STEPS]
    assert len({c["label"] for c in ckpts}) == len(STEPS)
    # only the complete checkpoints and sweep.json: no temporary left behind
    assert sorted(p.name for p in short_run.iterdir()) == sorted([c["path"] for c in ckpts] + ["sweep.json"])
    for c in ckpts:
        d = short_run / c["path"]
        assert {"model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json"} <= {
            p.name for p in d.iterdir()}
        assert 0 < c["loss"] < 10 and 0 < c["heldout_loss"] < 20
    # step 0 is an untrained model: about log(vocab) nats; 20 steps bring the loss well below it
    vocab = sweep["model"]["vocab_size"]
    assert abs(ckpts[0]["loss"] - math.log(vocab)) < 0.5
    assert ckpts[-1]["loss"] < ckpts[0]["loss"] - 0.5
    training = sweep["training"]
    assert training["seed"] == 0 and training["steps"] == 20 and training["save_at"] == list(STEPS)
    assert {"torch", "transformers", "tokenizers"} <= set(sweep["versions"])
    assert sweep["data"]["train_tokens"] + sweep["data"]["heldout_tokens"] == sweep["data"]["tokens"]


def test_checkpoints_open_in_geomlib_and_transformers_offline(short_run):
    from transformers import AutoTokenizer

    import geomlib

    sweep = json.loads((short_run / "sweep.json").read_text())
    n_layers = sweep["model"]["num_hidden_layers"]
    text = (Path(geomlib.__file__).parent / "data" / "alice.txt").read_text(encoding="utf-8")
    for c in sweep["checkpoints"]:
        d = short_run / c["path"]
        with geomlib.open_model(d) as ckpt:
            assert ckpt.arch == "llama" and ckpt.n_layers == n_layers
            assert (ckpt.n_heads, ckpt.n_kv_heads, ckpt.hidden) == (4, 2, sweep["model"]["hidden_size"])
            assert ckpt.dtype == "F32" and ckpt.quantization is None
            assert {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"} <= set(ckpt.families)
        tok = AutoTokenizer.from_pretrained(d, local_files_only=True)
        ids = tok(text)["input_ids"]
        assert max(ids) < sweep["model"]["vocab_size"] and tok.decode(ids) == text
        assert len(ids) == sweep["data"]["tokens"]


@pytest.mark.parametrize(
    "args, words",
    [
        ((), ["OUT"]),
        (("--steps", "0"), ["--steps", "between 1 and", "got 0"]),
        (("--steps", "ten"), ["--steps", "integer"]),
        (("--save-at", "0,30", "--steps", "20"), ["--save-at", "30"]),
        (("--save-at", "0,,10"), ["--save-at"]),
        (("--save-at", "5,5"), ["twice"]),
        (("--seed", "-1"), ["--seed"]),
        (("--bogus",), ["--bogus"]),
    ],
)
def test_bad_arguments_exit_2_with_one_line(tmp_path, args, words):
    out = tmp_path / "out"
    argv = [sys.executable, str(SCRIPT), *([str(out)] if args else []), *args]  # () : OUT missing
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    _one_error_line(proc, *words)
    assert not out.exists() or not any(out.iterdir())


def test_bad_out_directory_exit_2(tmp_path):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "something").write_text("x")
    _one_error_line(train(busy, *SHORT), "not empty")
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    _one_error_line(train(a_file, *SHORT), "not a directory")


def test_interrupted_run_leaves_only_complete_checkpoints(tmp_path):
    """Ctrl-C: exit 130 with one line, the checkpoints saved so far complete, no temporary, no sweep.json."""
    out = tmp_path / "interrupted"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    proc = subprocess.Popen([sys.executable, str(SCRIPT), str(out), "--steps", "400", "--quiet"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        while not (out / "step-00000").exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and len(stderr.splitlines()) == 1 and "interrupted" in stderr
    names = sorted(p.name for p in out.iterdir())
    assert names and all(n.startswith("step-") for n in names), names  # no .partial, no sweep.json
    for n in names:
        assert {"model.safetensors", "config.json", "tokenizer.json"} <= {p.name for p in (out / n).iterdir()}


def _one_error_line(proc: subprocess.CompletedProcess, *words: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("train_demo_sweep: error: "), lines[0]
    for w in words:
        assert w in lines[0], (w, lines[0])


# The full default run is trained by tests/store/test_demo_sweep.py, which checks that it reproduces the
# committed demo sweep (identities: byte-identical weights) and what its manifest says of the loss.
