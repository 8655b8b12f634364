"""The ``weights`` analysis: weight-level geometry between layers, streamed layer by layer.

Raw and Procrustes-aligned cosines, adjacent residuals and their spectra, the
scale track and its PCA, norm-gain (γ) directions, with null baselines.  The
computation lives in :mod:`.compute` (torch); this module only declares it.
"""

from __future__ import annotations

from ...limits import EXACT_SPECTRUM_MAX_DIM
from ..base import Analysis
from ..params import Param, block_mib, null_draws, precision, seed


class Weights(Analysis):
    name = "weights"
    title = "weight geometry: raw and aligned cos-sim, residuals, scale track, γ directions"
    # 2: the permutation null of aligned_cos; γ shuffle nulls and mean-removed γ PCA
    # 3: float32 factorizations by default (precision), fewer default null draws, aligned_pairs="none"
    schema_version = 3
    params = (
        Param("aligned_pairs", "adjacent", str, "pairs whose Procrustes-aligned cos-sim is computed (none: only "
              "the seeds' raw metrics)", choices=("adjacent", "all", "none")),
        Param("cos_pairs", "all", str, "pairs whose raw cos-sim is computed: all (a second, Gram pass over the "
              "file) or adjacent (one pass, as the seeds)", choices=("all", "adjacent")),
        null_draws(1, "aligned cos-sim, per adjacent pair (permutation, and scrambled when asked; the band's std "
                   "is pooled over pairs) or per shape (Gaussian, at least 2)", pooled=True),
        Param("scrambled_null", False, bool, "also draw the scrambled null of aligned cos-sim (signed permutations; "
              "not a symmetry of the layer, kept for comparison with earlier results)"),
        Param("gamma_null_draws", 32, int, "coordinate-shuffle draws of the γ-direction nulls (cheap); 0 skips them",
              min=0),
        seed(),
        # 64: the Gram pass is as fast with small blocks, and its float64 block is the run's largest allocation
        block_mib("the blocks of the Gram pass and the layers held by the all-pairs aligned pass", 64),
        Param("exact_spectrum_max_dim", EXACT_SPECTRUM_MAX_DIM, int,
              "residual spectra of matrices whose smaller side exceeds this are estimated (randomized)", min=0),
        Param("residual_spectrum", True, bool, "compute the adjacent residuals' spectra (effective rank, entropy)"),
        precision("the cross products and factorizations (nuclear norms, residual spectra)"),
    )

    def run(self, ckpt, params, ctx):
        from .compute import run

        return run(ckpt, params, ctx)

    def report(self, ds, anchor=-1):
        from .report import sections

        return sections(ds)


__all__ = ["Weights"]
