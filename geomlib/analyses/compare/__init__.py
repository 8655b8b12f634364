"""``compare``: two checkpoints layer against layer (``layer`` of A, ``layer_b`` of B), gauge-aware.

Not a registered analysis (it reads two models, not one): :func:`geomlib.compare`
(:mod:`geomlib.store.compare`) validates these parameters, caches the result and
calls :mod:`.compute` (torch, scipy).  This module is torch-free: it only
declares the parameters, the variables' descriptions and the cache schema.

Two kinds of result, told apart by ``attrs["comparison"]``:

``"layer-to-layer"``
    Same model_type and the same hidden size, head layout and MLP width (the
    depths may differ): every weight of A's layer L can be paired with B's
    layer L', so the gauge analysis' matched cosines (neurons and heads
    matched under the architecture's symmetry group) are computed across the
    two models, beside the index-paired raw cosines and the norm gains'.
``"depth-normalized profile"``
    Same model_type, other sizes: no weight of one can be paired with one of
    the other, so each model's own ``gauge`` analysis is computed and its
    adjacent-layer quantities are set side by side on relative depth.  Not a
    layer-to-layer comparison.
"""

from __future__ import annotations

from ..params import Param, null_draws, precision, seed

NAME = "compare"
#: bump when the meaning or layout of a stored variable changes: old compare entries recompute
SCHEMA_VERSION = 1
TITLE = "two checkpoints layer against layer: raw, matched (gauge-aware) and γ cosines, with a rotation null"

PARAMS: tuple[Param, ...] = (
    Param("pairs", "auto", str, "layer pairs (L of A, L' of B) compared: auto = all when the neuron similarities "
          "of all pairs cost seconds (as the gauge analysis' auto rule), else corresponding; corresponding = each "
          "layer of A with the layer of B at the same relative depth; all = every pair",
          choices=("auto", "corresponding", "all")),
    null_draws(1, "residual-side rotations of B's depth-corresponding layer per layer of A; the band's std is "
               "pooled over layers", pooled=True),
    seed(),
    Param("fold_norms", True, bool, "compare W·diag(γ): norm gains folded into the matrices they feed"),
    # a memory budget: it changes how often B's layers are read, never a number, so it is not in the cache key
    Param("block_mib", 256, int, "memory budget in MiB for the layers of A held while B's layers are read past "
          "them", min=1, in_key=False),
    precision("the neuron and head similarities and the null rotations (cosines are re-summed in float64 for "
              "the matching found; raw and γ cosines are float64)"),
)

COMPARISONS = ("layer-to-layer", "depth-normalized profile")

_NOT_PAIRED = ("DEPTH-NORMALIZED PROFILE, not a layer-to-layer comparison: the two models have different sizes, "
               "so no weight of one is paired with one of the other; ")

#: ``attrs["description"]`` of every variable of a layer-to-layer compare
DESCRIPTIONS: dict[str, str] = {
    "raw_cos": "Frobenius cosine ⟨W_A[layer], W_B[layer_b]⟩/(‖·‖‖·‖) of the weights as stored, entry i with entry "
               "i (index-paired, gauge-confounded: any neuron or head relabelling of either model moves it), "
               "accumulated in float64",
    "gamma_cos": "cosine of the effective norm gains (the architecture's offset applied, e.g. Gemma's 1 + w) of "
                 "A's layer and B's layer_b, index-paired (a gain can trade with the columns it feeds)",
    "mlp_matched_cos": "cosine of A's layer and B's layer_b MLPs after matching B's neurons to A's (one "
                       "permutation for gate/up/down, plus the per-neuron sign/scale the activation allows; gate: "
                       "rows; up_down: the rank-1 maps down_i up_iᵀ; mean: their mean, what the matching "
                       "maximised), norm gains folded; invariant to every symmetry of either layer; 1 for a "
                       "relabelled, rescaled copy",
    "mlp_same_index_cos": "the same quantities pairing neuron i of A with neuron i of B (index-paired)",
    "mlp_frac_fixed": "fraction of neurons the matching pairs with their own index",
    "head_matched_cos": "mean over heads of the operator cosine (QK: W_Qᵀ W_K, OV: W_O W_V) after matching B's "
                        "heads to A's (joint QK and OV assignment, GQA-consistent); invariant to each head's GL(d) "
                        "and to head order",
    "head_same_index_cos": "mean operator cosine pairing head h of A with head h of B (index-paired)",
    "head_different_index_cos": "mean operator cosine over pairs of heads with different indices (index-paired "
                                "background)",
    "head_unmatched_cos": "mean operator cosine over the head pairs the matching did not pair (the invariant "
                          "background of head_matched_cos)",
    "head_matched": "operator cosine of head h of A's layer with the head of B's layer_b it is matched to (the "
                    "per-head terms of head_matched_cos)",
    "head_assignment": "head h of A's layer is matched to head head_assignment[layer, layer_b, h] of B's layer_b "
                       "(-1: not compared)",
    "mlp_matched_null_mean": "mlp_matched_cos of A's layer against B's layer null_layer_b after a Haar rotation of "
                             "that B layer's residual side (keeps each layer's internal structure and symmetry "
                             "group, destroys only the shared residual basis), mean over null_draws",
    "mlp_matched_null_std": "standard deviation of one rotation draw, pooled over A's layers (null_draws ≥ 2: root "
                            "mean of the per-layer sample variances; one draw: von Neumann's successive-difference "
                            "estimate over layers)",
    "head_matched_null_mean": "head_matched_cos of A's layer against B's layer null_layer_b after a Haar rotation "
                              "of that B layer's residual side, mean over null_draws",
    "head_matched_null_std": "standard deviation of one rotation draw, pooled over A's layers (as "
                             "mlp_matched_null_std)",
    "null_layer_b": "the layer of B each layer of A's null used: the one at the same relative depth, "
                    "⌊layer (n_b − 1) / (n_a − 1) + ½⌋ (the diagonal when the depths are equal)",
}

#: ``attrs["description"]`` of every variable of a depth-normalized profile
PROFILE_DESCRIPTIONS: dict[str, str] = {
    "mlp_adjacent_matched_cos": _NOT_PAIRED + "each model's own gauge mlp_matched_cos of its layers (L, L+1), "
                                "placed at relative depth (L + ½)/(n − 1) (the midpoint of the two layers' depths) "
                                "and interpolated linearly onto the grid of the deeper model's pair midpoints "
                                "(constant beyond a model's first and last pair)",
    "mlp_adjacent_null_mean": _NOT_PAIRED + "each model's own residual-rotation null mean of that adjacent pair, "
                              "on the same depth grid",
    "mlp_adjacent_null_std": _NOT_PAIRED + "each model's own pooled null std, on the same depth grid",
    "mlp_adjacent_z": _NOT_PAIRED + "(mlp_adjacent_matched_cos − null mean) / null std of each model: how far its "
                      "adjacent layers' MLPs share structure beyond matching alone",
    "head_adjacent_matched_cos": _NOT_PAIRED + "each model's own gauge head_matched_cos of its layers (L, L+1), on "
                                 "the depth grid",
    "head_adjacent_null_mean": _NOT_PAIRED + "each model's own residual-rotation null mean of head_matched_cos, on "
                               "the depth grid",
    "head_adjacent_null_std": _NOT_PAIRED + "each model's own pooled null std of head_matched_cos, on the depth grid",
    "head_adjacent_z": _NOT_PAIRED + "(head_adjacent_matched_cos − null mean) / null std of each model",
    "n_layers": _NOT_PAIRED + "each model's number of layers n (its n − 1 adjacent pairs lie at depths "
                "(L + ½)/(n − 1))",
}


def corresponding(n_a: int, n_b: int) -> list[int]:
    """The layer of B at the relative depth of each layer of A: ``⌊L (n_b − 1) / (n_a − 1) + ½⌋``.

    Identity when ``n_a == n_b``; A's single layer maps to B's first.
    """
    if n_a <= 1:
        return [0] * n_a
    return [int(L * (n_b - 1) / (n_a - 1) + 0.5) for L in range(n_a)]  # halves up, not to even


__all__ = ["COMPARISONS", "DESCRIPTIONS", "NAME", "PARAMS", "PROFILE_DESCRIPTIONS", "SCHEMA_VERSION", "TITLE",
           "corresponding"]
