"""The ``weights`` analysis: weight-level geometry between layers, streamed layer by layer.

Raw and Procrustes-aligned cosines, adjacent residuals and their spectra, the
scale track and its PCA, norm-gain (γ) directions, with null baselines.  The
computation lives in :mod:`.compute` (torch); this module only declares it.
"""

from __future__ import annotations

from ...limits import EXACT_SPECTRUM_MAX_DIM
from ..base import Analysis
from ..params import Param, block_mib, null_draws, seed


class Weights(Analysis):
    name = "weights"
    title = "weight geometry: raw and aligned cos-sim, residuals, scale track, γ directions"
    schema_version = 2  # 2: the permutation null of aligned_cos; γ shuffle nulls and mean-removed γ PCA
    params = (
        Param("aligned_pairs", "adjacent", str, "pairs whose Procrustes-aligned cos-sim is computed",
              choices=("adjacent", "all")),
        null_draws(8, "aligned cos-sim: Gaussian, scrambled and permutation; γ directions: coordinate shuffle"),
        seed(),
        block_mib("the blocks of the Gram pass and the layers held by the all-pairs aligned pass"),
        Param("exact_spectrum_max_dim", EXACT_SPECTRUM_MAX_DIM, int,
              "residual spectra of matrices whose smaller side exceeds this are estimated (randomized)", min=0),
    )

    def run(self, ckpt, params, ctx):
        from .compute import run

        return run(ckpt, params, ctx)

    def report(self, ds, anchor=-1):
        from .report import sections

        return sections(ds)


__all__ = ["Weights"]
