#!/usr/bin/env python
"""Train a small Llama-style model on geomlib's bundled text and save it at several steps: the offline demo sweep.

What it is for
--------------
``geomlib sweep`` compares many checkpoints of one model (a ``checkpoint``
dim, plus the compare of consecutive checkpoints).  Its offline demo needs a
real training run whose checkpoints differ for a reason, without the hub: this
script makes one on the CPU, deterministically, from nothing but the public
domain text shipped with geomlib (``geomlib/data/alice.txt``, the opening of
*Alice's Adventures in Wonderland*, chapter I).  The sweep dataset computed
from its output is small and committed; the checkpoints are not (about 2.5 MB
each): this script regenerates them.

What it does
------------
1. Trains a byte-level BPE tokenizer (320 tokens: the 256 bytes, 63 merges
   and ``<|endoftext|>``) on the text with the ``tokenizers`` library.
2. Builds a ``LlamaForCausalLM`` from a ``LlamaConfig`` (never from the hub):
   6 layers, hidden 96, 4 query heads and 2 KV heads (GQA, head_dim 24), SwiGLU
   intermediate 256, RoPE, RMSNorm, tied embeddings, 512 positions; about
   640k parameters, float32.
3. Trains it with AdamW on random 512-token windows of the first 90 % of the
   tokens (the last 10 % are held out), 400 steps of 2 windows by default, with
   a linear warm-up and a cosine decay of the learning rate.
4. Saves the weights at log-spaced steps (0, 12, 25, 50, 100, 200, 400 by
   default) as ``OUT/step-NNNNN/`` (``model.safetensors`` in float32,
   ``config.json``, ``generation_config.json``, ``tokenizer.json``,
   ``tokenizer_config.json``: a Hugging Face directory that
   ``geomlib.open_model`` and ``AutoTokenizer`` read offline), each written into
   a temporary directory first and renamed when complete; then ``OUT/sweep.json``
   (last, so a run that stopped early has none) lists the checkpoints in order
   with their loss on the training split and on the held-out split, the
   hyper-parameters, the seed and the library versions.

Deterministic: fixed seeds, ``torch.use_deterministic_algorithms(True)``, one
thread, a seeded batch order: two runs with the same seed and the same software
on the same machine write byte-identical ``model.safetensors`` files (a
different CPU or library version may round differently).  Weights at a step
depend on ``--steps`` (the learning-rate schedule spans the whole run), not on
``--save-at``.

How long
--------
About 70 s for the default 400 steps (one CPU thread whatever the machine's
core count: measured 68-88 s on a 2-core AMD EPYC, 130 s when that core was
shared with two other busy processes), under 10 s for ``--steps 20``; about
0.5 GB of memory.  ``geomlib compute`` then takes about 11 s per checkpoint
(weights, heads, gauge).  Step 0 is the untrained model, whose RMSNorm gains
are all 1: its gain-vector (gamma) PCA is NaN, with geomlib warnings saying so.

Usage
-----
    python scripts/train_demo_sweep.py OUT [--steps N] [--save-at 0,25,...] [--seed S] [--quiet]

OUT must be absent or empty.  Bad arguments exit with status 2 and one line
``train_demo_sweep: error: ...``.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.resources
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

# Nothing here ever reaches the hub; the tokenizer trainer runs single-threaded (core-count independent).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ["TOKENIZERS_PARALLELISM"] = "false"

PROG = "train_demo_sweep"
REPO = Path(__file__).resolve().parents[1]
TEXT_PATH = REPO / "geomlib" / "data" / "alice.txt"
SPECIAL_TOKEN = "<|endoftext|>"
FORMAT = 1

DEFAULT_STEPS = 400
DEFAULT_SEED = 0
#: log-spaced save points: 0 and steps / 2**k for k = 0..MAX_HALVINGS (those >= 1)
MAX_HALVINGS = 5

#: the model (a LlamaConfig's fields, vocab_size filled in from the tokenizer)
MODEL = dict(
    hidden_size=96,
    intermediate_size=256,  # 2.67 x hidden, SwiGLU
    num_hidden_layers=6,
    num_attention_heads=4,
    num_key_value_heads=2,  # GQA
    max_position_embeddings=512,  # = the training window, so every position geomlib's forward pass reads is trained
    rms_norm_eps=1e-5,
    initializer_range=0.02,
    tie_word_embeddings=True,  # as SmolLM2 (geomlib's demo model); the per-layer families are what geomlib reads
    attention_dropout=0.0,
    hidden_act="silu",
)
#: the optimisation
TRAIN = dict(
    vocab_size=320,  # 256 bytes + 63 BPE merges + <|endoftext|>
    seq_len=512,
    batch_size=2,
    heldout_fraction=0.1,
    lr=1e-3,
    min_lr_ratio=0.1,
    warmup_fraction=1 / 8,
    betas=(0.9, 0.95),
    weight_decay=0.1,  # on matrices only (not the RMSNorm gains)
    grad_clip=1.0,
)


class UsageError(Exception):
    """Bad input: reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage block
        self.exit(2, f"{PROG}: error: {message} (see --help)\n")


def _int(name: str, text: str, lo: int = 0, hi: int | None = None) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise UsageError(f"{name} must be an integer, got {text!r}") from None
    if value < lo or (hi is not None and value > hi):
        bound = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
        raise UsageError(f"{name} must be {bound}, got {value}")
    return value


def default_save_at(steps: int) -> list[int]:
    """0 and ``steps / 2**k`` rounded (k = 0..5, those >= 1): 0, 12, 25, 50, 100, 200, 400 for 400 steps."""
    return sorted({0} | {round(steps / 2**k) for k in range(MAX_HALVINGS + 1) if round(steps / 2**k) >= 1})


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = _Parser(
        prog=PROG,
        description="Train a small Llama-style model on geomlib's bundled text (CPU, deterministic) and save it "
        "at several steps, with OUT/sweep.json listing them: the offline demo sweep of `geomlib sweep`.",
    )
    p.add_argument("out", metavar="OUT", help="output directory (absent or empty)")
    p.add_argument("--steps", default=str(DEFAULT_STEPS), help=f"optimiser steps (default {DEFAULT_STEPS})")
    p.add_argument("--save-at", default=None, metavar="S0,S1,...",
                   help="comma-separated steps to save at, each in 0..STEPS "
                        "(default: 0 and STEPS/2^k, k=0..5: 0,12,25,50,100,200,400 for 400 steps)")
    p.add_argument("--seed", default=str(DEFAULT_SEED), help=f"seed of the initialisation and batch order (default {DEFAULT_SEED})")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar and no summary")
    args = p.parse_args(argv)

    args.steps = _int("--steps", args.steps, lo=1, hi=10**7)
    args.seed = _int("--seed", args.seed, lo=0, hi=2**62)
    if args.save_at is None:
        args.save_at = default_save_at(args.steps)
    else:
        items = args.save_at.split(",")
        if not args.save_at.strip() or any(not s.strip() for s in items):
            raise UsageError(f"--save-at must be comma-separated step numbers, got {args.save_at!r}")
        steps = [_int("--save-at step", s, lo=0, hi=args.steps) for s in items]
        if len(set(steps)) != len(steps):
            raise UsageError(f"--save-at lists a step twice: {args.save_at!r}")
        args.save_at = sorted(steps)

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"OUT {str(out)!r} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        raise UsageError(f"OUT {str(out)!r} is not empty; remove it or pick another directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise UsageError(f"cannot write into OUT {str(out)!r}: {exc.strerror or exc}") from None
    args.out = out
    return args


# -- data ------------------------------------------------------------------------------------------
def read_text() -> tuple[str, str]:
    """The bundled text and where it came from (the repository's file, else the installed geomlib's)."""
    if TEXT_PATH.is_file():
        return TEXT_PATH.read_text(encoding="utf-8"), "geomlib/data/alice.txt"
    return importlib.resources.files("geomlib").joinpath("data/alice.txt").read_text(encoding="utf-8"), \
        "geomlib/data/alice.txt (installed package)"


def train_tokenizer(text: str, vocab_size: int):
    """A byte-level BPE trained on ``text`` (deterministic: the trainer is single-threaded here)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=[SPECIAL_TOKEN], show_progress=False)
    tk.train_from_iterator([text], trainer)
    return tk


# -- training --------------------------------------------------------------------------------------
def lr_factor(step: int, steps: int) -> float:
    """Linear warm-up over ``warmup_fraction`` of the run, then cosine decay to ``min_lr_ratio``."""
    warmup = max(1, int(steps * TRAIN["warmup_fraction"]))
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    lo = TRAIN["min_lr_ratio"]
    return lo + (1 - lo) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def evaluate(model, ids, n_train: int) -> tuple[float, float]:
    """Mean next-token cross-entropy (nats) of the model on the training split and on the held-out split.

    The whole text is read in ``seq_len`` windows at a stride of half a window, each token scored once, in the
    first window that gives it at least half a window of context (all of the first window's tokens): so a
    token is never scored without the context it was trained with, and the held-out tokens (the text's last
    ones) are scored after the training tokens before them.
    """
    import torch
    import torch.nn.functional as F

    T = TRAIN["seq_len"]
    n = len(ids)
    losses = torch.full((n,), float("nan"), dtype=torch.float64)  # losses[i]: predicting token i (i >= 1)
    model.eval()
    with torch.no_grad():
        scored = 1  # tokens 1..scored-1 have a loss
        for begin in range(0, n, T // 2):
            end = min(begin + T, n)
            logits = model(input_ids=ids[begin:end].unsqueeze(0)).logits[0, :-1]
            ce = F.cross_entropy(logits.double(), ids[begin + 1:end], reduction="none")
            losses[scored:end] = ce[scored - begin - 1:]
            scored = end
            if end == n:
                break
    model.train()
    return float(losses[1:n_train].mean()), float(losses[n_train:].mean())


def save_checkpoint(model, hf_tokenizer, out: Path, step: int) -> Path:
    """Write ``OUT/step-NNNNN`` through a temporary sibling directory renamed when complete."""
    name = f"step-{step:05d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.partial-", dir=out))
    try:
        model.save_pretrained(tmp)
        hf_tokenizer.save_pretrained(tmp)
        _umask_modes(tmp)
        if not (tmp / "model.safetensors").is_file():  # pragma: no cover - a transformers that shards 2.5 MB
            raise RuntimeError(f"save_pretrained wrote no model.safetensors in {tmp}")
        os.rename(tmp, out / name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out / name


def _umask_modes(directory: Path) -> None:
    """Give ``directory`` (mkdtemp: 0700) and its files (some written 0600) the modes the umask gives new ones."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(directory, 0o777 & ~umask)
    for f in directory.iterdir():
        os.chmod(f, 0o666 & ~umask)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run(args: argparse.Namespace) -> dict:
    import tokenizers
    import torch
    import transformers
    from tqdm.auto import tqdm
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()  # save_pretrained's "Writing model shards" bar
    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set (the script imported into a process that ran torch code)
        pass
    torch.use_deterministic_algorithms(True)

    t0 = time.perf_counter()
    text, text_source = read_text()
    tk = train_tokenizer(text, TRAIN["vocab_size"])
    eos = tk.token_to_id(SPECIAL_TOKEN)
    hf_tokenizer = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token=SPECIAL_TOKEN, eos_token=SPECIAL_TOKEN,
                                           model_max_length=MODEL["max_position_embeddings"])
    ids = torch.tensor(tk.encode(text).ids, dtype=torch.long)
    n_heldout = max(1, int(len(ids) * TRAIN["heldout_fraction"]))
    n_train = len(ids) - n_heldout
    T, B = TRAIN["seq_len"], TRAIN["batch_size"]
    if n_train < T + 1:  # pragma: no cover - the bundled text is ~1170 tokens
        raise RuntimeError(f"the text is {len(ids)} tokens, too short for {T}-token windows")

    config = LlamaConfig(vocab_size=tk.get_vocab_size(), bos_token_id=eos, eos_token_id=eos, **MODEL)
    torch.manual_seed(args.seed)
    model = LlamaForCausalLM(config).to(torch.float32)
    model.train()
    decay = [p for p in model.parameters() if p.ndim >= 2]  # the tied embedding counted once
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": TRAIN["weight_decay"]},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=TRAIN["lr"], betas=TRAIN["betas"], eps=1e-8)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, args.steps))
    batches = torch.Generator().manual_seed(args.seed + 1)  # the batch order, apart from the initialisation's stream
    offsets = torch.arange(T)

    checkpoints = []
    save_at = set(args.save_at)
    bar = tqdm(total=args.steps, desc="training", unit="step", disable=args.quiet, file=sys.stderr,
               dynamic_ncols=True)
    batch_loss = float("nan")
    try:
        for step in range(args.steps + 1):
            if step in save_at:
                train_loss, heldout_loss = evaluate(model, ids, n_train)
                path = save_checkpoint(model, hf_tokenizer, args.out, step)
                checkpoints.append(dict(label=f"step {step}", step=step, path=path.name,
                                        loss=round(train_loss, 6), heldout_loss=round(heldout_loss, 6)))
                bar.set_postfix(loss=f"{batch_loss:.3f}", eval=f"{train_loss:.3f}", heldout=f"{heldout_loss:.3f}",
                                refresh=False)
            if step == args.steps:
                break
            starts = torch.randint(0, n_train - T + 1, (B,), generator=batches)  # windows inside the split
            x = ids[starts[:, None] + offsets]
            loss = model(input_ids=x, labels=x).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), TRAIN["grad_clip"])
            opt.step()
            opt.zero_grad(set_to_none=True)
            sched.step()
            batch_loss = loss.detach().item()
            if not math.isfinite(batch_loss):  # pragma: no cover - a diverging schedule
                raise RuntimeError(f"the training loss is {batch_loss} at step {step}")
            bar.set_postfix(loss=f"{batch_loss:.3f}", refresh=False)
            bar.update(1)
    finally:
        bar.close()

    first = args.out / checkpoints[0]["path"]
    sweep = dict(
        format=FORMAT,
        description="Offline demo sweep of `geomlib sweep`: a small Llama-style model trained on the CPU on "
                    "geomlib's bundled public-domain text, saved at log-spaced steps by "
                    "scripts/train_demo_sweep.py (deterministic; checkpoints regenerated, not committed).",
        checkpoints=checkpoints,
        loss="mean next-token cross-entropy (nats) of the saved weights on the training split; heldout_loss: on "
             "the last 10 % of the tokens (after the training tokens before them); each token scored once with at "
             "least half a window of context (the first window's tokens: what precedes them)",
        model=dict(architecture="LlamaForCausalLM", n_parameters=sum(p.numel() for p in model.parameters()),
                   dtype="float32", **MODEL, vocab_size=tk.get_vocab_size()),
        training=dict(seed=args.seed, steps=args.steps, save_at=args.save_at, optimizer="AdamW",
                      schedule="linear warm-up, cosine decay", warmup_steps=max(1, int(args.steps * TRAIN["warmup_fraction"])),
                      tokens_per_step=B * T, deterministic=True, threads=1,
                      **{k: (list(v) if isinstance(v, tuple) else v) for k, v in TRAIN.items() if k != "vocab_size"}),
        data=dict(text=text_source, text_sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(),
                  characters=len(text), tokens=len(ids), train_tokens=n_train, heldout_tokens=n_heldout,
                  tokenizer=f"byte-level BPE trained on the text ({tk.get_vocab_size()} tokens), tokenizers "
                            f"{tokenizers.__version__}",
                  tokenizer_sha256=_sha256(first / "tokenizer.json")),
        versions=dict(torch=torch.__version__, transformers=transformers.__version__,
                      tokenizers=tokenizers.__version__, python=sys.version.split()[0]),
    )
    tmp = args.out / f".sweep.json.partial-{os.getpid()}"
    tmp.write_text(json.dumps(sweep, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, args.out / "sweep.json")
    sweep["_wall_s"] = time.perf_counter() - t0
    return sweep


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    try:
        sweep = run(args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; {args.out} holds the checkpoints saved so far and no sweep.json",
              file=sys.stderr)
        return 130
    except (OSError, RuntimeError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    if not args.quiet:
        c = sweep["checkpoints"]
        print(f"{PROG}: {len(c)} checkpoints in {args.out} in {sweep['_wall_s']:.0f} s; loss "
              f"{c[0]['loss']:.3f} -> {c[-1]['loss']:.3f} (held-out {c[0]['heldout_loss']:.3f} -> "
              f"{c[-1]['heldout_loss']:.3f}); see {args.out / 'sweep.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
