"""The ``gauge`` analysis: layers compared modulo the symmetries the network really has.

MLP neurons and attention heads are matched between layers (one permutation
for gate/up/down, a GQA-consistent head assignment, each head's operators
invariant to its GL(d)), norm gains folded into the matrices they feed, and
every matched cosine is set against a null that keeps each layer's internal
structure and destroys only the shared residual basis.  The index-paired
metrics of the ``weights`` and ``heads`` analyses stay as they are, labelled.
The computation lives in :mod:`.compute` (torch, scipy).
"""

from __future__ import annotations

from ..base import Analysis
from ..params import Param, block_mib, null_draws, precision, seed

#: weight family -> the ``mlp_view`` coordinates that stand for it, first present wins
MLP_VIEW_OF = {"gate_proj": ("gate",), "up_proj": ("up", "up_down"), "down_proj": ("down", "up_down")}


class Gauge(Analysis):
    name = "gauge"
    title = "gauge-aware: matched MLP neurons and heads between layers, against a residual-rotation null"
    schema_version = 3  # 3: precision (float32 similarities), one null draw per pair with a pooled std
    default = True
    pairing = "matched"
    # two threads' pieces each free 3072² costs and rotated layers: 1.34 -> 0.91 GB peak on Qwen3-0.6B
    maps_large_blocks = True
    params = (
        Param("pairs", "auto", str, "layer pairs that are matched: auto = all pairs when they cost seconds (1e11 "
              "multiply-adds of neuron similarities, e.g. MiniLM-L6), else adjacent",
              choices=("auto", "adjacent", "all")),
        null_draws(1, "residual-side rotations of layer_b per adjacent pair; the band's std is pooled over pairs",
                   pooled=True),
        seed(),
        Param("fold_norms", True, bool, "compare W·diag(γ): norm gains folded into the matrices they feed"),
        block_mib("the layers held when every pair is matched"),
        precision("the neuron and head similarities and the null rotations (cosines are recomputed in float64 "
                  "for the matching found)"),
    )

    def run(self, ckpt, params, ctx):
        from .compute import run

        return run(ckpt, params, ctx)

    def report(self, ds, anchor=-1):
        from .report import sections

        return sections(ds, anchor)


__all__ = ["MLP_VIEW_OF", "Gauge"]
