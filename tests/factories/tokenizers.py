"""Tiny tokenizers trained on geomlib's built-in text, saved next to a checkpoint (no downloads).

A checkpoint from :mod:`tests.factories.hf` has no tokenizer; adding one of
these makes the attention-entropy forward pass runnable on it.
"""

from __future__ import annotations

from pathlib import Path

VOCAB = 128


def word_tokenizer(vocab_size: int = VOCAB):
    """A BPE over whitespace-split words, trained on the built-in text."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    from geomlib.model.forward import builtin_text

    tk = Tokenizer(models.BPE(unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.train_from_iterator([builtin_text()], trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["[UNK]"]))
    assert tk.get_vocab_size() <= vocab_size
    return tk


def save_tokenizer(tk, directory: Path) -> Path:
    """Save ``tk`` into ``directory`` the way ``save_pretrained`` does."""
    from transformers import PreTrainedTokenizerFast

    PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]").save_pretrained(directory)
    return Path(directory)


def make_checkpoint_with_tokenizer(tmp_path: Path, model_type: str = "llama", n_layers: int = 3, **kw):
    """:func:`tests.factories.hf.make_checkpoint` plus a word tokenizer: ``(directory, model)``."""
    from .hf import make_checkpoint

    path, model = make_checkpoint(tmp_path, model_type, n_layers=n_layers, vocab_size=VOCAB, **kw)
    save_tokenizer(word_tokenizer(), path)
    return path, model
