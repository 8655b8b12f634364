"""Numerical limits shared by the metrics and the analyses' defaults (torch-free, imported by both)."""

#: the smaller matrix side above which residual spectra are estimated by randomized subspace iteration
EXACT_SPECTRUM_MAX_DIM = 8192

#: fewest eigenvalues a power-law tail is fitted to (spectra analysis): a handful of points fits any exponent
MIN_TAIL = 10
