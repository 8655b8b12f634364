"""Per-head attention entropy from a real forward pass over a built-in text.

``attn_entropy[layer, head]`` is the mean over query positions of the Shannon
entropy (nats) of that head's attention distribution, measured while the model
reads a fixed text with its own tokenizer.  The same per-query entropies are
also averaged over contiguous windows of query positions
(:func:`text_windows`), so that what is fitted to the mean (the phases of
:mod:`geomlib.analyses.phases`) can be bootstrapped over stretches of text.  It is the one forward-pass measurement of
geomlib: it needs the whole model (transformers builds it) and the tokenizer,
where every other analysis reads weights one layer at a time.

Text windows
    The token stream of the single forward pass is cut into ``W`` contiguous
    windows of query positions, ``W = min(16, max(1, n_tokens // 32))``
    (:data:`WINDOW_TOKENS`, :data:`MAX_WINDOWS`): 16 windows of 32 tokens at
    the default ``max_tokens=512``, 15 for the ~480 tokens SmolLM2 reads of
    the built-in text, longer windows (never more than 16) for longer texts.
    32 tokens is a sentence or two, long enough that a window's mean is not
    one token's accident; 16 windows give the bootstrap more than 10⁸
    distinct resamples.  A window's queries still attend to every earlier
    token (one pass, the same context as the mean), so the windows share
    context and differ in the text their queries read; the first window also
    holds the short-context queries, whose entropy is bounded by
    ``log(i + 1)``.  The window means, weighted by their token counts, give
    the overall mean back.

The text
    By default the opening paragraphs of chapter I ("Down the Rabbit-Hole") of
    Lewis Carroll's *Alice's Adventures in Wonderland* (1865, public domain),
    shipped as ``geomlib/data/alice.txt`` (about 400 words, ~480 tokens with
    SmolLM2's tokenizer) and read with :mod:`importlib.resources`.  Pass
    ``text=`` (a string, or a path to a UTF-8 file) to measure another one;
    its sha256 is recorded so results from different texts are never mixed.
    A text that cannot be read (not UTF-8, binary, blank, fewer than
    :data:`MIN_TOKENS` tokens) is refused by :func:`check_text`, which the
    ``heads`` analysis runs before any analysis starts.

How the model is run
    * ``AutoModel`` (the base model, no LM head), ``attn_implementation="eager"``
      because SDPA/flash kernels never materialize the attention probabilities,
      float32 weights, ``use_safetensors=True`` (never a pickle), never
      ``trust_remote_code``, ``local_files_only=True`` (nothing is downloaded).
    * The attention maps are not collected for the whole model: a forward hook
      on every attention module reduces its ``(1, heads, q, k)`` probabilities
      to ``heads`` numbers as soon as the layer has run, so memory holds one
      layer's map at a time.  Transformers 5 eager attention modules return
      ``(output, weights)`` whatever ``output_attentions`` says; the modules
      are found through the model's own ``_can_record_outputs["attentions"]``
      declaration (what ``output_attentions=True`` itself hooks).
    * Safetensors checkpoints whose float32 weights exceed ``max_memory``
      (default a quarter of physical RAM) are loaded with
      ``device_map="auto"``: accelerate keeps what fits in memory and streams
      the rest from disk layer by layer during the forward pass.
    * GGUF files are loaded by transformers, which dequantizes **every** tensor
      into a float32 state dict before building the model, so peak memory is
      about twice the float32 weights and cannot be offloaded; a GGUF whose
      float32 weights exceed the budget is refused with a
      :class:`~geomlib.errors.GeomlibError` that says how to skip the analysis.
      The tokenizer is rebuilt from the GGUF's ``tokenizer.ggml.*`` metadata.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import inspect
import logging
import math
import os
import tempfile
import warnings
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..device import resolve_device
from ..errors import (
    CorruptCheckpointError,
    GeomlibError,
    InvalidArgumentError,
    SourceNotFoundError,
    UnsupportedSourceError,
)
from ..metrics.attention import attention_entropy as _row_entropy
from ..validate import positive_int
from .checkpoint import Checkpoint
from .text import (  # noqa: F401 - re-exported: the text rules are part of the forward pass' interface
    MAX_CONTROL_SHARE,
    MAX_WINDOWS,
    MIN_TOKENS,
    TEXT_RESOURCE,
    TEXT_SOURCE,
    WINDOW_TOKENS,
    builtin_text,
    resolve_text,
    text_windows,
)

#: share of physical RAM the float32 weights may take before layers are offloaded to disk
DEFAULT_RAM_SHARE = 0.25
#: share of free GPU memory the float32 weights may take on CUDA
GPU_SHARE = 0.8
#: transformers' GGUF loader holds the dequantized state dict and the model at once
GGUF_PEAK_FACTOR = 2
#: files any one of which lets AutoTokenizer build a tokenizer from an HF directory
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "vocab.txt",
    "vocab.json",
    "spiece.model",
    "sentencepiece.bpe.model",
)
_SKIP = ("skip the forward pass with heads={'forward_pass': False} "
         "(--no-heads.forward-pass on the command line)")


@dataclass(frozen=True)
class EntropyResult:
    """Per-head attention entropy of one model on one text.

    Attributes
    ----------
    values : (n_layers, n_heads) float64 ndarray
        Mean over query positions of the Shannon entropy (nats) of each head's
        attention distribution.  Causal models: query ``i`` sees ``i + 1``
        keys, so ``0 <= values <= mean_i log(i + 1) <= log(n_tokens)``.
    n_tokens : int
        Tokens the model read (after truncation to ``max_tokens`` and to the
        model's maximum positions; special tokens the tokenizer adds included).
    text_sha256 : str
        sha256 of the UTF-8 text before tokenization.
    text_source : str
        :data:`TEXT_SOURCE` for the built-in text, else ``"user text"`` or the file name.
    method : str
        One line saying how the numbers were made.
    device : str
        Where the forward pass ran (``"cpu"``, ``"cuda:0"``).
    offloaded : bool
        Whether some layers were offloaded (memory budget exceeded).
    windows : (W, n_layers, n_heads) float64 ndarray or None
        Mean entropy over the query positions of each text window
        (:func:`text_windows`); ``values`` is their mean weighted by
        ``window_edges`` differences (up to rounding).  None only for results
        built by hand.
    window_edges : (W + 1,) int64 ndarray or None
        Query positions of the windows: window ``w`` is ``edges[w]:edges[w + 1]``.
    """

    values: np.ndarray
    n_tokens: int
    text_sha256: str
    text_source: str
    method: str
    device: str
    offloaded: bool
    windows: np.ndarray | None = None
    window_edges: np.ndarray | None = None

    def attrs(self) -> dict[str, str | int]:
        """Provenance as netCDF-safe attributes (prefixed ``entropy_``)."""
        return {
            "entropy_method": self.method,
            "entropy_n_tokens": int(self.n_tokens),
            "entropy_text_sha256": self.text_sha256,
            "entropy_text_source": self.text_source,
            "entropy_device": self.device,
            "entropy_offloaded": int(self.offloaded),
        }


# -- arguments -------------------------------------------------------------------------------
def _physical_ram() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 8 << 30


def _float32_bytes(ckpt: Checkpoint) -> int:
    """Bytes the checkpoint's tensors take once loaded in float32 (from headers; nothing is read)."""
    store = ckpt._store
    return 4 * sum(math.prod(store.info(n).shape) for n in store.names())


# -- tokenizer ----------------------------------------------------------------------------------
def _gguf_has_tokenizer(ckpt: Checkpoint, path: Path) -> bool:
    # the store's reader already parsed the metadata: parsing SmolLM2's 49k-token vocabulary again costs ~4 s
    reader = getattr(ckpt._store, "_reader", None)
    if reader is None:
        import gguf

        reader = gguf.GGUFReader(path, "r")
    return "tokenizer.ggml.model" in reader.fields and "tokenizer.ggml.tokens" in reader.fields


#: tokenizers already built, per checkpoint: the heads pre-flight builds one to count the text's tokens and
#: the forward pass reuses it (rebuilding a GGUF's tokenizer from its metadata takes seconds)
_TOKENIZERS: "weakref.WeakKeyDictionary[Checkpoint, object]" = weakref.WeakKeyDictionary()


def _load_tokenizer(ckpt: Checkpoint, where: Path, gguf_file: str | None):
    cached = _TOKENIZERS.get(ckpt)
    if cached is not None:
        return cached
    from transformers import AutoTokenizer

    label = ckpt.source
    check_tokenizer(ckpt)
    kw = {"gguf_file": gguf_file} if gguf_file is not None else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, local_files_only=True, trust_remote_code=False, **kw)
    except GeomlibError:
        raise
    except Exception as exc:  # transformers raises ValueError/OSError/KeyError with multi-line texts
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise CorruptCheckpointError(
            f"the tokenizer of {label} could not be loaded by transformers ({first}); attention entropy needs it: "
            f"fix the tokenizer files, or {_SKIP}"
        ) from None
    _TOKENIZERS[ckpt] = tokenizer
    return tokenizer


def _encode(tokenizer, content: str, limit: int) -> torch.Tensor:
    """``(1, n)`` ids of ``content``, truncated to ``limit`` tokens (special tokens the tokenizer adds included)."""
    enc = tokenizer(content, truncation=True, max_length=limit, return_tensors="pt")
    return enc["input_ids"][:, :limit]


def _too_few_tokens(n_tokens: int, text_label: str, source: str) -> InvalidArgumentError:
    return InvalidArgumentError(
        f"the {text_label} is {n_tokens} token(s) long for {source}'s tokenizer, and attention entropy needs at "
        f"least {MIN_TOKENS} (a few hundred is typical); pass a longer text"
    )


def check_text(ckpt: Checkpoint, text: str | os.PathLike | None = None, max_tokens: int = 512,
               progress: bool = True) -> int:
    """Fail now, in one sentence, if ``text`` cannot be read by the forward pass of ``ckpt``.

    Checks what :func:`attention_entropy` would refuse only after building the
    model: a file that is missing, a directory, unreadable, not UTF-8, binary
    or blank, and a text of fewer than :data:`MIN_TOKENS` tokens for the
    model's own tokenizer.  Loads the tokenizer (no weights), which the
    forward pass on the same ``ckpt`` then reuses.

    Parameters
    ----------
    ckpt : Checkpoint
    text, max_tokens, progress
        As for :func:`attention_entropy`.

    Returns
    -------
    int
        Tokens the forward pass will read, before the model's own cap on
        positions (which only the built model knows).

    Raises
    ------
    InvalidArgumentError
        A text that cannot be read, or is too short.
    SourceNotFoundError
        A text file that does not exist, or a checkpoint without a tokenizer.
    """
    content, text_label = resolve_text(text)
    max_tokens = positive_int("max_tokens", max_tokens, MIN_TOKENS)
    where, gguf_file = _model_location(ckpt)
    with _transformers_output(progress), _shared_gguf_parse(ckpt):
        tokenizer = _load_tokenizer(ckpt, where, gguf_file)
        n_tokens = int(_encode(tokenizer, content, max_tokens).shape[1])
    if n_tokens < MIN_TOKENS:
        raise _too_few_tokens(n_tokens, text_label, ckpt.source)
    return n_tokens


def check_tokenizer(ckpt: Checkpoint) -> None:
    """Fail now, in one sentence, if ``ckpt`` has no tokenizer to read the text with.

    Cheap (file names or GGUF metadata only); lets callers refuse before any
    expensive work rather than after it.
    """
    where, gguf_file = _model_location(ckpt)
    if gguf_file is not None:
        ok = _gguf_has_tokenizer(ckpt, where / gguf_file)
        what = "no tokenizer.ggml.* metadata in the GGUF"
    else:
        ok = any((where / f).is_file() for f in TOKENIZER_FILES)
        what = f"no tokenizer files ({', '.join(TOKENIZER_FILES[:3])}...) in {where}"
    if not ok:
        raise SourceNotFoundError(
            f"{ckpt.source} has no tokenizer ({what}), and attention entropy tokenizes a text with the model's "
            f"own tokenizer; add the tokenizer, or {_SKIP}"
        )


# -- model --------------------------------------------------------------------------------------
#: where transformers' own Python warnings come from: ignored while progress is off
_QUIET_MODULES = r"(transformers|tokenizers|accelerate|huggingface_hub)(\.|$)"
#: plain-logging loggers transformers drives while loading (accelerate says "Some parameters are on the meta
#: device because they were offloaded to the disk" through Python's last-resort handler when offloading)
_QUIET_LOGGERS = ("accelerate",)


@contextlib.contextmanager
def _transformers_output(enabled: bool) -> Iterator[None]:
    """With ``enabled`` False (``progress=False``, the CLI's ``-q``), nothing transformers says reaches the terminal.

    Its loading bars, its log records (the model's LOAD REPORT of unexpected or
    missing keys, tokenizer notices), those of accelerate (offloading) and the
    Python warnings of both are switched off for the duration of the call, and every switch is restored afterwards, so
    a caller's own transformers settings survive.  Failures still surface:
    they are raised, and turned into one-sentence GeomlibErrors by the callers.
    """
    import functools

    from transformers import modeling_gguf_pytorch_utils as gguf_utils
    from transformers.utils import logging as hf_logging

    if enabled:
        yield
        return
    bars, verbosity = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    others = {name: logging.getLogger(name).level for name in _QUIET_LOGGERS}
    # the GGUF loader calls a module-level tqdm that ignores transformers' switch (and tqdm reads
    # TQDM_DISABLE only at import): hand it a disabled tqdm for the duration of the call
    gguf_tqdm = getattr(gguf_utils, "tqdm", None)
    hf_logging.disable_progress_bar()
    # above CRITICAL: the LOAD REPORT is a warning, and -q means no transformers line at all
    hf_logging.set_verbosity(hf_logging.CRITICAL + 1)
    for name in others:
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)
    if gguf_tqdm is not None:
        gguf_utils.tqdm = functools.partial(gguf_tqdm, disable=True)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=_QUIET_MODULES)
            yield
    finally:
        if bars:
            hf_logging.enable_progress_bar()
        hf_logging.set_verbosity(verbosity)
        for name, level in others.items():
            logging.getLogger(name).setLevel(level)
        if gguf_tqdm is not None:
            gguf_utils.tqdm = gguf_tqdm


@contextlib.contextmanager
def _shared_gguf_parse(ckpt: Checkpoint) -> Iterator[None]:
    """Let transformers reuse the GGUF this checkpoint already parsed, for the duration of the call.

    transformers' GGUF path builds a fresh ``gguf.GGUFReader`` for the config, the tokenizer and the
    weights (parsing SmolLM2's 49k-token vocabulary in Python each time, ~4 s) and rebuilds
    ``gguf.get_tensor_name_map`` once per tensor (~13 ms each, 5 s for 272 tensors).  The reader is
    read-only (a read-only memmap) and the name map is a pure function of (arch, blocks), so both
    are shared; everything is restored on exit.
    """
    reader = getattr(ckpt._store, "_reader", None) if ckpt.format == "gguf" else None
    if reader is None:
        yield
        return
    import functools

    import gguf

    path = Path(ckpt.origin["resolved"]).resolve()
    real_reader, real_map = gguf.GGUFReader, gguf.get_tensor_name_map

    def reader_for(p, *args, **kwargs):
        mode = args[0] if args else kwargs.get("mode", "r")
        if mode == "r" and Path(p).resolve() == path:
            return reader
        return real_reader(p, *args, **kwargs)

    gguf.GGUFReader = reader_for
    gguf.get_tensor_name_map = functools.lru_cache(maxsize=8)(real_map)
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = real_reader, real_map


def _model_location(ckpt: Checkpoint) -> tuple[Path, str | None]:
    """``(directory, gguf file name or None)`` that transformers loads from."""
    resolved = Path(ckpt.origin["resolved"])
    if ckpt.format == "gguf":
        return resolved.parent, resolved.name
    if getattr(ckpt._store, "lazy", False):
        # a hub checkpoint downloads shards on demand: the identity touches every one of them
        _ = ckpt.identity
    where = resolved.parent if resolved.is_file() else resolved
    if not (where / "config.json").is_file():
        raise SourceNotFoundError(
            f"{ckpt.source} resolved to {where}, which has no config.json for transformers to build the model "
            f"from; download the full model directory, or {_SKIP}"
        )
    return where, None


def _budget(max_memory: int | None) -> int:
    return int(max_memory if max_memory is not None else _physical_ram() * DEFAULT_RAM_SHARE)


def _check_gguf_budget(ckpt: Checkpoint, budget: int) -> None:
    need = _float32_bytes(ckpt)
    if need * GGUF_PEAK_FACTOR > budget:
        raise UnsupportedSourceError(
            f"{ckpt.source} takes {need / 2**30:.1f} GiB in float32 and transformers dequantizes a whole GGUF "
            f"in memory (about {GGUF_PEAK_FACTOR}x that at peak), more than the {budget / 2**30:.1f} GiB budget; "
            f"raise the budget (heads={{'max_memory': BYTES}}, --heads.max-memory BYTES), use the safetensors "
            f"checkpoint (which can be offloaded), or {_SKIP}"
        )


def check_memory_budget(ckpt: Checkpoint, max_memory: int | None = None) -> None:
    """Fail now, in one sentence, if the forward pass would not fit: a GGUF over the RAM budget.

    Cheap (headers only); lets callers refuse before any expensive work.
    """
    _, gguf_file = _model_location(ckpt)
    if gguf_file is not None:
        _check_gguf_budget(ckpt, _budget(max_memory))


def _load_model(ckpt: Checkpoint, where: Path, gguf_file: str | None, dev: torch.device, budget: int,
                offload_dir: str):
    """Build the eager float32 base model; ``(model, input device, offloaded)``."""
    from transformers import AutoModel

    kw = dict(attn_implementation="eager", dtype=torch.float32, local_files_only=True, trust_remote_code=False)
    need = _float32_bytes(ckpt)
    gpu_budget = 0
    if dev.type == "cuda":
        free, _ = torch.cuda.mem_get_info(dev)
        gpu_budget = int(free * GPU_SHARE)
    offloaded = False
    if gguf_file is not None:
        _check_gguf_budget(ckpt, budget)
        kw["gguf_file"] = gguf_file
    else:
        kw["use_safetensors"] = True
        if dev.type == "cuda" and need <= gpu_budget:
            kw["device_map"] = {"": dev.index or 0}
        elif dev.type == "cuda" or need > budget:
            # accelerate places whole layers: what fits the budgets stays resident, the rest is read from
            # offload_dir (or straight from the safetensors files) when its layer runs
            max_memory: dict[int | str, int] = {"cpu": int(budget)}
            if dev.type == "cuda":
                max_memory[dev.index or 0] = gpu_budget
            kw.update(device_map="auto", max_memory=max_memory, offload_folder=offload_dir)
    try:
        model = AutoModel.from_pretrained(where, **kw)
    except GeomlibError:
        raise
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise CorruptCheckpointError(
            f"transformers could not build {ckpt.source} for the attention-entropy forward pass ({first}); "
            f"{_SKIP}"
        ) from None
    model.eval()
    device_map = getattr(model, "hf_device_map", None)
    if device_map:
        places = {str(v) for v in device_map.values()}
        offloaded = bool(places & {"cpu", "disk"}) if dev.type == "cuda" else "disk" in places
        first_param = next((p for p in model.parameters() if p.device.type != "meta"), None)
        in_dev = first_param.device if first_param is not None else torch.device("cpu")
        # the embedding runs first: its device is where the ids must go
        emb = model.get_input_embeddings()
        emb_w = getattr(emb, "weight", None)
        if emb_w is not None and emb_w.device.type != "meta":
            in_dev = emb_w.device
        return model, in_dev, offloaded
    if dev.type == "cuda":
        if need <= gpu_budget:
            model.to(dev)
        else:
            dev = torch.device("cpu")  # GGUF too large for the GPU: it is already in RAM, run it there
    return model, dev, offloaded


# -- attention modules -----------------------------------------------------------------------------
def _attention_specs(model) -> list[tuple[type | None, str | None, int, str | None]]:
    """``(class, class-name suffix, output index, layer-name filter)`` of the modules whose output holds
    the self-attention probabilities, from the model's ``_can_record_outputs`` (what transformers itself
    hooks for ``output_attentions``); empty on transformers versions without it."""
    declared = getattr(type(model), "_can_record_outputs", None) or {}
    spec = declared.get("attentions")
    if spec is None:
        return []
    out = []
    for s in spec if isinstance(spec, list) else [spec]:
        if isinstance(s, type):
            out.append((s, None, 1, None))
        elif isinstance(s, str):
            out.append((None, s, 1, None))
        else:  # transformers.utils.output_capturing.OutputRecorder
            out.append((getattr(s, "target_class", None), getattr(s, "class_name", None),
                        int(getattr(s, "index", 1)), getattr(s, "layer_name", None)))
    return out


def _attention_modules(model) -> list[tuple[str, torch.nn.Module, int]]:
    """Every self-attention module in execution (registration) order, with its output index."""
    found = []
    for name, module in model.named_modules():
        for cls, class_name, index, layer_name in _attention_specs(model):
            if not ((cls is not None and isinstance(module, cls)) or (class_name and name.endswith(class_name))):
                continue
            if layer_name is not None and f".{layer_name.strip('.')}." not in f".{name}.":
                continue
            found.append((name, module, index))
            break
    return found


def _forward_kwargs(model) -> dict:
    params = inspect.signature(model.forward).parameters
    # no KV cache: a single pass never reuses it, and it would hold every layer's keys and values
    return {"use_cache": False} if "use_cache" in params else {}


def _reduce(probs: torch.Tensor, edges: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """One layer's map reduced to per-head entropies: the mean over queries and over each text window.

    Parameters
    ----------
    probs : (heads, q, k) tensor
    edges : (W + 1,) int ndarray
        From :func:`text_windows` (``edges[-1] == q``).

    Returns
    -------
    mean : (heads,) float64 CPU tensor
        Taken on the map's device exactly as :func:`geomlib.metrics.attention.mean_entropy`
        takes it, so ``attn_entropy`` keeps its bits.
    windows : (W, heads) float64 CPU tensor
    """
    ent = _row_entropy(probs)  # (heads, q): a few kB, unlike the map
    windows = torch.stack([ent[:, a:b].mean(dim=-1) for a, b in zip(edges[:-1].tolist(), edges[1:].tolist())])
    return ent.mean(dim=-1).cpu(), windows.cpu()


def _run_hooks(model, ids: torch.Tensor, bar, edges: np.ndarray) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One forward pass; each attention module's map is reduced to per-head entropies inside its hook."""
    modules = _attention_modules(model)
    per_module: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[] for _ in modules]
    handles = []

    def make_hook(i: int, index: int):
        def hook(module, args, output):
            probs = output[index] if isinstance(output, (tuple, list)) else None
            if probs is None:
                raise CorruptCheckpointError(
                    f"attention module {modules[i][0]} returned no attention probabilities; transformers did not "
                    "run eager attention for this model, so its entropy cannot be measured"
                )
            # (batch=1, heads, q, k) -> (heads,) and (heads, q), in float64, now: the map itself is not kept
            per_module[i].append(_reduce(probs.detach()[0], edges))
            bar.update(1)

        return hook

    try:
        for i, (_, module, index) in enumerate(modules):
            handles.append(module.register_forward_hook(make_hook(i, index)))
        with torch.no_grad():
            model(input_ids=ids, **_forward_kwargs(model))
    finally:
        for h in handles:
            h.remove()
    if any(len(v) != 1 for v in per_module):
        counts = sorted({len(v) for v in per_module})
        raise CorruptCheckpointError(
            f"the attention modules of {type(model).__name__} ran {counts} times in one forward pass instead of "
            "once each; geomlib cannot attribute their maps to layers"
        )
    return [v[0] for v in per_module]


def _run_outputs(model, ids: torch.Tensor, bar, edges: np.ndarray) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One forward pass with ``output_attentions=True``, reduced afterwards (holds every layer's map)."""
    with torch.no_grad():
        out = model(input_ids=ids, output_attentions=True, **_forward_kwargs(model))
    atts = getattr(out, "attentions", None) or ()
    rows = []
    for a in atts:
        if a is None:
            raise CorruptCheckpointError(
                f"{type(model).__name__} returned no attention probabilities; transformers did not run eager "
                "attention for this model, so its entropy cannot be measured"
            )
        rows.append(_reduce(a.detach()[0], edges))
        bar.update(1)
    return rows


# -- public -------------------------------------------------------------------------------------
def attention_entropy(
    ckpt: Checkpoint,
    text: str | os.PathLike | None = None,
    device: str | torch.device | None = "auto",
    max_tokens: int = 512,
    progress: bool = True,
    max_memory: int | None = None,
) -> EntropyResult:
    """Per-layer, per-head attention entropy of ``ckpt`` reading ``text``.

    Parameters
    ----------
    ckpt : Checkpoint
        From :func:`geomlib.open_model`; a safetensors directory (with its
        tokenizer files) or a GGUF file (with ``tokenizer.ggml.*`` metadata).
    text : str, path-like or None
        The text to read: None for the built-in one (:func:`builtin_text`),
        a string for itself, a :class:`os.PathLike` for a UTF-8 file's contents.
    device : str or torch.device or None
        ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda[:n]"``; None is CPU.
    max_tokens : int
        Tokens kept (the tokenizer truncates; also capped at the model's
        maximum positions).  At least 2.
    progress : bool
        tqdm bars: one bar over the stages and the layers of the forward pass.
    max_memory : int, optional
        RAM budget in bytes for the float32 weights; default a quarter of
        physical memory.  Safetensors models above it are offloaded to disk
        layer by layer; GGUF models above it are refused.

    Returns
    -------
    EntropyResult
        ``values`` is the ``(ckpt.n_layers, ckpt.n_heads)`` float64 array of
        mean entropies in nats, ``windows`` the ``(W, n_layers, n_heads)``
        means over each text window (:func:`text_windows`); provenance in the
        other fields.

    Raises
    ------
    SourceNotFoundError
        No tokenizer (files, or GGUF metadata): the message says how to skip
        the analysis (``heads={"forward_pass": False}``).
    UnsupportedSourceError
        A GGUF too large to dequantize within the budget.
    GeomlibError
        Any other failure to build or run the model, in one sentence.
    """
    return _attention_entropy(ckpt, text, device, max_tokens, progress, max_memory, collect="auto")


def _attention_entropy(ckpt, text, device, max_tokens, progress, max_memory, *, collect: str) -> EntropyResult:
    """:func:`attention_entropy`; ``collect`` forces one way of reading the attention maps (tests)."""
    from tqdm.auto import tqdm

    if not isinstance(ckpt, Checkpoint):
        raise InvalidArgumentError(
            f"attention_entropy needs a Checkpoint from geomlib.open_model, not {type(ckpt).__name__}"
        )
    content, text_label = resolve_text(text)
    max_tokens = positive_int("max_tokens", max_tokens, MIN_TOKENS)
    if max_memory is not None:
        max_memory = positive_int("max_memory", max_memory, 1)
    if collect not in ("auto", "hooks", "outputs"):
        raise InvalidArgumentError(f"collect={collect!r}; use 'auto', 'hooks' or 'outputs'")
    dev = resolve_device(device)
    budget = _budget(max_memory)
    where, gguf_file = _model_location(ckpt)

    bar = tqdm(total=2 + ckpt.n_layers, desc=f"attention entropy {ckpt.source}: tokenizer", unit="step",
               disable=not progress, leave=False)
    model = None
    try:
        with _transformers_output(progress), _shared_gguf_parse(ckpt):
            tokenizer = _load_tokenizer(ckpt, where, gguf_file)
            # a text too short for the tokenizer is refused before the model is built (check_text does it
            # earlier still, before the other analyses)
            ids = _encode(tokenizer, content, max_tokens)
            if ids.shape[1] < MIN_TOKENS:
                raise _too_few_tokens(int(ids.shape[1]), text_label, ckpt.source)
            bar.update(1)
            bar.set_description(f"attention entropy {ckpt.source}: model")
            with tempfile.TemporaryDirectory(prefix="geomlib-offload-") as offload_dir:
                model, in_dev, offloaded = _load_model(ckpt, where, gguf_file, dev, budget, offload_dir)
                bar.update(1)
                cfg = model.config
                limit = max_tokens
                for key in ("max_position_embeddings", "n_positions"):
                    v = getattr(cfg, key, None)
                    if isinstance(v, int) and v > 0:
                        limit = min(limit, v)
                if limit != max_tokens:  # the model's positions cap it: truncate as the tokenizer does
                    ids = _encode(tokenizer, content, limit)
                n_tokens = int(ids.shape[1])
                if n_tokens < MIN_TOKENS:  # a model with fewer positions than that: nothing to measure
                    raise _too_few_tokens(n_tokens, text_label, ckpt.source)
                ids = ids.to(in_dev)
                bar.set_description(f"attention entropy {ckpt.source}: forward")
                use_hooks = collect == "hooks" or (collect == "auto" and _attention_specs(model))
                edges = text_windows(n_tokens)
                run = _run_hooks if use_hooks else _run_outputs
                rows = run(model, ids, bar, edges)
                run_device = str(in_dev)
                n_model_heads = getattr(cfg, "num_attention_heads", None) or getattr(cfg, "n_head", None)
    finally:
        bar.close()
        del model
        gc.collect()
        if dev.type == "cuda":
            torch.cuda.empty_cache()

    if len(rows) != ckpt.n_layers or any(m.shape != (ckpt.n_heads,) for m, _ in rows):
        shapes = sorted({tuple(m.shape) for m, _ in rows})
        raise CorruptCheckpointError(
            f"the forward pass of {ckpt.source} gave {len(rows)} attention maps with {shapes} heads "
            f"(transformers' config: {n_model_heads} heads) but the checkpoint has {ckpt.n_layers} layers of "
            f"{ckpt.n_heads} heads; the model transformers built does not match what geomlib read"
        )
    values = torch.stack([m for m, _ in rows]).numpy().astype(np.float64)
    windows = torch.stack([w for _, w in rows], dim=1).numpy().astype(np.float64)  # (W, layers, heads)
    import transformers

    method = (
        f"eager attention, float32 base model (transformers {transformers.__version__}, "
        f"{'GGUF dequantized' if gguf_file else 'safetensors'}); per query the Shannon entropy in nats of its "
        f"attention row, in float64; mean over the {n_tokens} query positions, and over each of "
        f"{len(edges) - 1} contiguous windows of {int(np.diff(edges).min())}-{int(np.diff(edges).max())} of them"
    )
    return EntropyResult(
        values=values,
        n_tokens=n_tokens,
        text_sha256=hashlib.sha256(content.encode("utf-8")).hexdigest(),
        text_source=text_label,
        method=method,
        device=run_device + (" (offloaded)" if offloaded else ""),
        offloaded=offloaded,
        windows=windows,
        window_edges=edges,
    )


__all__ = ["EntropyResult", "TEXT_SOURCE", "attention_entropy", "builtin_text", "check_memory_budget", "check_text",
           "check_tokenizer", "resolve_text", "text_windows", "MIN_TOKENS", "WINDOW_TOKENS", "MAX_WINDOWS"]
