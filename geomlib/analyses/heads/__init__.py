"""The ``heads`` analysis: per-head QK and OV operators between layers, and attention entropy.

Operator gram/cos, eigen-structure, principal angles, singular-value spectra
and their rescale fits, with random-head nulls; the forward pass measures
attention entropy.  Per-head variables carry an ``operator`` dimension
(``qk``, ``ov``): ``ds.head_cos.sel(operator="ov")``.  The computation lives in
:mod:`.compute` (torch); this module only declares it.
"""

from __future__ import annotations

from ...errors import GeomlibError, UnsupportedArchitectureError
from ..base import Analysis
from ..params import Param, block_mib, null_draws, precision, seed

#: operator -> the families it is made of
OPERATORS = {"qk": ("q_proj", "k_proj"), "ov": ("o_proj", "v_proj")}


def operators_of(families) -> list[str]:
    """The per-head operators a model with ``families`` has."""
    return [op for op, need in OPERATORS.items() if all(f in families for f in need)]


class Heads(Analysis):
    name = "heads"
    title = "per-head QK/OV operators: gram, eigen-structure, principal angles, spectra; attention entropy"
    # 2: per-head variables head_* with an operator dimension; 3: attn_entropy_windows (window, layer, head)
    # 4: precision (the all-pairs operator Gram in float32 by default)
    schema_version = 4
    params = (
        Param("k", 8, int, "eigenvectors of the symmetric part kept per head for principal angles", min=1),
        null_draws(32, "random-Gaussian heads"),
        seed(),
        block_mib("the layers held by the all-pairs operator gram"),
        Param("forward_pass", True, bool, "run the model on a text to measure attention entropy"),
        Param("text", None, str, "UTF-8 text file for the forward pass (default: built-in public-domain text)",
              path=True),
        # 2 is geomlib.model.forward.MIN_TOKENS (that module imports torch; this one must not)
        Param("max_tokens", 512, int, "tokens of the text read by the forward pass", min=2,
              forbid={1: "one token attends only to itself, so every head's entropy would be 0 whatever the "
                         "model; pass at least 2 (a few hundred is typical)"}),
        Param("max_memory", None, int, "RAM budget in bytes for the forward pass' float32 weights "
              "(default: a quarter of RAM); larger safetensors models are offloaded, larger GGUF refused",
              min=1, in_key=False),
        precision("the all-pairs operator Gram (the per-head spectra are float64 either way)"),
    )

    def preflight(self, ckpt, params, ctx):
        if not operators_of(ckpt.families):
            raise UnsupportedArchitectureError(
                f"{ckpt.source} has no q/k or o/v projections, so it has no per-head operators; "
                "compute the other analyses only (e.g. analyses=['weights'])"
            )
        if not params.forward_pass:
            ctx.skip("attn_entropy", "forward_pass=False", warn=False)
            return params
        from pathlib import Path

        from ...model.forward import check_memory_budget, check_text, check_tokenizer, resolve_text

        # every input of the forward pass is checked here, before any analysis runs: the pass itself
        # comes after the weights analysis and this one's operators, minutes into a large model
        text = Path(params.text) if params.text else None
        resolve_text(text)  # a binary, non-UTF-8 or blank file is refused even where there is no tokenizer
        try:
            check_tokenizer(ckpt)
        except GeomlibError as exc:  # an optional input is missing: compute the rest, say so once
            ctx.skip("attn_entropy", str(exc))
            return params.replace(forward_pass=False)
        check_memory_budget(ckpt, params.max_memory)  # a GGUF over the RAM budget is refused before any work
        check_text(ckpt, text, params.max_tokens, ctx.progress)  # too few tokens (loads the tokenizer, kept)
        return params

    def run(self, ckpt, params, ctx):
        from .compute import run

        return run(ckpt, params, ctx)

    def report(self, ds, anchor=-1):
        from .report import sections

        return sections(ds, anchor)


__all__ = ["Heads", "OPERATORS", "operators_of"]
