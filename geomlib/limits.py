"""Numerical limits shared by the metrics and the analyses' defaults (torch-free, imported by both)."""

#: the smaller matrix side above which residual spectra are estimated by randomized subspace iteration
EXACT_SPECTRUM_MAX_DIM = 8192
