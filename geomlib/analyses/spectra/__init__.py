"""The ``spectra`` analysis: per-layer singular-value spectra of every matrix family, and their heavy tails.

WeightWatcher's layer metrics (Martin & Mahoney): the singular values of each
weight matrix, the power-law exponent ``α`` of the tail of the density of
``λ = σ²`` (Clauset–Shalizi–Newman fit), its ``x_min`` and KS distance, the
stable rank and the spectral norm, with the same fit on seeded Gaussian
matrices of each family's shape (Marchenko–Pastur: no heavy tail) as the null.
Per layer, not between layers: no pairing.  The computation lives in
:mod:`.compute` (torch); this module only declares it.
"""

from __future__ import annotations

from ...limits import MIN_TAIL
from ..base import Analysis
from ..params import PRECISIONS, Param, null_draws, seed


class Spectra(Analysis):
    name = "spectra"
    title = "spectra: per-layer singular values, ESD power-law α (WeightWatcher), stable rank"
    schema_version = 1
    # the committed demo sweep records weights, heads and gauge; a sweep computes spectra when it is named
    sweep_default = False
    params = (
        # float64 by default: one SVD per matrix is cheap next to the other analyses, and the smallest
        # singular values of the log-log plot are where float32 loses digits
        Param("precision", "float64", str, "dtype of the SVDs (float32: σ within 1e-5·σ₁ of float64, α within "
              "1e-3 where the same x_min is chosen; see tests/analyses/test_spectra.py)", choices=PRECISIONS),
        Param("min_tail", MIN_TAIL, int, "fewest eigenvalues in the fitted power-law tail", min=2),
        null_draws(8, "seeded Gaussian matrices of each family's shape whose α and stable rank are the null "
                   "(Marchenko–Pastur: what no learned structure gives)"),
        seed(),
    )

    def run(self, ckpt, params, ctx):
        from .compute import run

        return run(ckpt, params, ctx)

    def report(self, ds, anchor=-1):
        from .report import sections

        return sections(ds)


__all__ = ["Spectra"]
