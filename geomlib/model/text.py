"""The text a forward pass reads: the built-in one, or a user's, checked before any model is built; its windows.

Torch-free, so that the ``heads`` analysis can check a text in its pre-flight
without importing torch.  See :mod:`geomlib.model.forward` for what is
measured on it.
"""

from __future__ import annotations

import importlib.resources
import os
import re
from pathlib import Path

import numpy as np

from ..errors import InvalidArgumentError, SourceNotFoundError
from ..validate import positive_int

#: where the built-in text comes from (recorded in provenance)
TEXT_SOURCE = (
    "Lewis Carroll, Alice's Adventures in Wonderland (1865), chapter I 'Down the Rabbit-Hole', "
    "opening paragraphs (public domain)"
)
#: the built-in text, inside the geomlib package
TEXT_RESOURCE = "data/alice.txt"
#: target length of a text window (query positions), see "Text windows" above
WINDOW_TOKENS = 32
#: at most this many windows, however long the text
MAX_WINDOWS = 16
#: fewest tokens a forward pass can measure: query 0 sees only itself, so one token gives every head an
#: entropy of exactly 0 whatever the model; from 2 on, query 1's distribution over two keys carries information
MIN_TOKENS = 2
#: a text with more control characters than this share of its characters is taken for a binary file
MAX_CONTROL_SHARE = 0.01
#: the control characters (Unicode category Cc) plain text does not hold: all of C0 and C1 but tab, the line
#: breaks (U+000A-U+000D) and DOS end-of-file (U+001A)
_CONTROLS = re.compile("[\x00-\x08\x0e-\x19\x1b-\x1f\x7f-\x9f]")


def text_windows(n_tokens: int) -> np.ndarray:
    """Edges of the contiguous query-position windows of an ``n_tokens`` pass.

    Parameters
    ----------
    n_tokens : int
        Tokens read (at least 1).

    Returns
    -------
    edges : (W + 1,) int64 ndarray
        Window ``w`` holds query positions ``edges[w]:edges[w + 1]``, with
        ``W = min(MAX_WINDOWS, max(1, n_tokens // WINDOW_TOKENS))``; lengths
        differ by at most one token (the first ``n_tokens % W`` windows are
        the longer ones, as :func:`numpy.array_split` cuts).
    """
    n = positive_int("n_tokens", n_tokens)
    W = min(MAX_WINDOWS, max(1, n // WINDOW_TOKENS))
    sizes = np.full(W, n // W, dtype=np.int64)
    sizes[: n % W] += 1
    return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)


def builtin_text() -> str:
    """The built-in text (see :data:`TEXT_SOURCE`), exactly as shipped."""
    return importlib.resources.files("geomlib").joinpath(TEXT_RESOURCE).read_text(encoding="utf-8")


def _check_content(content: str, label: str) -> None:
    """Refuse a text that cannot give a meaningful forward pass, before any model is built.

    Blank text tokenizes to (almost) nothing; NUL or many other control characters mean a binary file
    (or a UTF-16 one) was passed, which decodes as UTF-8 yet reads as noise to the tokenizer.
    """
    if not content.strip():
        what = "0 characters" if not content else "only whitespace"
        raise InvalidArgumentError(
            f"the {label} is empty ({what}); attention entropy needs a text of a few hundred tokens, so pass "
            "a plain-text file with some prose or leave the text out for the built-in one"
        )
    if "\x00" in content:
        raise InvalidArgumentError(
            f"the {label} looks binary, not text (it contains NUL characters, as binary and UTF-16 files do); "
            "pass a plain-text file saved as UTF-8"
        )
    controls = len(_CONTROLS.findall(content))
    if controls > MAX_CONTROL_SHARE * len(content):
        raise InvalidArgumentError(
            f"the {label} looks binary, not text ({controls} of its {len(content)} characters are control "
            f"characters); pass a plain-text file saved as UTF-8"
        )


def _read_text_file(path: Path) -> str:
    """The contents of a UTF-8 text file, or one sentence saying why it is not one."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SourceNotFoundError(f"text file {path} does not exist; pass an existing UTF-8 text file") from None
    except IsADirectoryError:
        raise InvalidArgumentError(
            f"text file {path} is a directory; pass a UTF-8 text file (e.g. {path}/text.txt) or leave the text "
            "out for the built-in one"
        ) from None
    except OSError as exc:  # permission denied, a device that cannot be read, ...
        raise InvalidArgumentError(
            f"text file {path} cannot be read ({exc.strerror or exc.__class__.__name__}); pass a readable UTF-8 "
            "text file"
        ) from None
    label = f"text file {path}"
    if b"\x00" in raw:  # before decoding: a binary file is described as binary, not by its first bad byte
        _check_content(raw.decode("latin-1"), label)
    try:
        content = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidArgumentError(
            f"text file {path} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start} cannot be "
            "decoded); save it as UTF-8 or pass another file"
        ) from None
    _check_content(content, label)
    return content


def resolve_text(text: str | os.PathLike | None) -> tuple[str, str]:
    """The text a forward pass reads, checked: ``(text, label for messages and provenance)``.

    Parameters
    ----------
    text : str, path-like or None
        None for the built-in text, a string for itself, a path for a file's contents.

    Raises
    ------
    SourceNotFoundError
        A file that does not exist.
    InvalidArgumentError
        A directory, an unreadable file, bytes that are not UTF-8, a binary file (NUL or more than
        :data:`MAX_CONTROL_SHARE` control characters), a blank text, or an argument of another type.
    """
    if text is None:
        return builtin_text(), TEXT_SOURCE
    if isinstance(text, os.PathLike):
        path = Path(text)
        content, label = _read_text_file(path), f"file {path.name}"
    elif isinstance(text, str):
        content, label = text, "user text"
        _check_content(content, label)
    else:
        raise InvalidArgumentError(
            f"text must be a string, a path to a UTF-8 file or None (the built-in text), not {type(text).__name__}"
        )
    return content, label
