"""The words of the dashboard's controls: hover help (what each selects) and status labels."""

#: the head control's "mean over heads" choice (the spectra panel then shows the heads' mean spectrum)
MEAN_LABEL = "mean over heads"
#: each control's hover help: the definition of what it selects
TIPS = {
    "model": "the cached model shown (architecture, layers, quantization and the analyses cached for it)",
    "anchor": "anchor layer: marked on every depth axis and heatmap row; click a depth axis or cell to move it",
    "family": "weight family of the weight views (a projection matrix, or a norm gain γ)",
    "phase": "a depth phase (fitted from the layer geometry) to shade on every depth axis; 'all': none",
    "operator": "per-head operator of the operator view: QK = W_Q W_Kᵀ (attention scores), "
                "OV = W_V W_O (what a head writes)",
    "op_metric": "heatmap metric of the operator view: cos = operator cosine similarity, angles = mean cosine of "
                 "the top-k principal angles between the operators' subspaces",
    "head": "attention head shown in the operator view; 'mean over heads' averages the heads (the spectra panel "
            "then shows the heads' mean spectrum)",
    "scale": "colour range of the heatmaps: symmetric = ±max |off-diagonal value| (white at 0); robust = the "
             "2nd–98th percentile; z = z-score against the view's null (where it has one)",
    "mask_diagonal": "blank the diagonal of layer × layer heatmaps (a layer against itself is 1 by construction "
                     "and would set the colour range)",
    "compute": "a model to compute and cache: a directory, a .gguf file, a hub id org/name[@rev] or demo:NAME",
    "go": "compute every default analysis of the source into the cache, then show it",
    "cancel": "stop the running compute; nothing half-written is left in the cache",
    "view": "which view to export",
    "format": "export format: png/svg/pdf for the figure, netcdf/csv for the data it shows",
    "export": "render the chosen view in the chosen format and offer it as a download link",
    "mode_model": "one model's views: gauge-aware comparisons first, then the seeds' index-paired metrics",
    "mode_compare": "two models, or two checkpoints of a sweep, side by side on one layer × layer variable, with "
                    "their difference",
    "mode_training": "a cached sweep: how far each layer moved between checkpoints, and one layer's trajectory",
}
#: the range control's choices
SCALE_LABELS = {"symmetric": "symmetric ±max", "robust": "robust 2–98 %", "z": "z vs null"}
OPERATOR_TIPS = {"qk": "QK: the attention-score operator W_Q W_Kᵀ of each head",
                 "ov": "OV: the output-value operator W_V W_O of each head"}
METRIC_TIPS = {"cos": "cosine similarity of the operators", "pa_mean": "mean cosine of the top-k principal angles"}
#: what the page shows while a change is applied (``busy``)
BUSY_HTML = ("<span class='geomlib-busy' style='color:#555'><i class='fa fa-spinner fa-spin'></i> "
             "updating…</span>")
