"""Assertions on heatmap values the dashboard and its exports draw."""

from __future__ import annotations

import numpy as np


def close(actual, expected, **kw) -> None:
    """assert_allclose, where an L x L heatmap may blank its trivial diagonal (the plot's ``mask_diagonal``)."""
    actual, expected = np.asarray(actual, dtype=float), np.array(expected, dtype=float)
    if actual.ndim == 2 and actual.shape[0] == actual.shape[1] == expected.shape[0]:
        d = np.isnan(np.diag(actual))
        expected[np.diag_indices_from(expected)] = np.where(d, np.nan, np.diag(expected))
        kw.setdefault("equal_nan", True)
    np.testing.assert_allclose(actual, expected, **kw)
