"""Compare-mode figures on real computed Datasets (two tiny checkpoints, geomlib.compute and geomlib.compare)."""

from __future__ import annotations

import numpy as np
import pytest

import geomlib
from geomlib.errors import InvalidArgumentError
from geomlib.plot.comparison import cross_figure, side_by_side
from tests.factories import synthetic


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    root = tmp_path_factory.mktemp("cmp")
    a, _ = synthetic.build(root / "a", n_layers=3, seed=0)
    b, _ = synthetic.build(root / "b", n_layers=3, seed=1)
    kw = dict(cache_dir=root / "cache", progress=False, threads=1)
    return (geomlib.compute(str(a), ["gauge"], **kw), geomlib.compute(str(b), ["gauge"], **kw),
            geomlib.compare(str(a), str(b), **kw), geomlib.compare(str(a), str(a), **kw))


def test_side_by_side_shows_both_and_their_difference(two):
    a, b, _, _ = two
    fig = side_by_side(a, b, "mlp_matched_cos", {"mlp_view": "mean"})
    za, zb, zd = (np.array(t.z, dtype=float) for t in fig.data)
    np.testing.assert_array_equal(za, a["mlp_matched_cos"].sel(mlp_view="mean").values)
    np.testing.assert_array_equal(zb, b["mlp_matched_cos"].sel(mlp_view="mean").values)
    np.testing.assert_allclose(zd, za - zb)
    assert np.allclose(np.diag(zd), 0)  # every layer is 1 with itself in both models
    assert fig.data[2].zmid == 0 and fig.data[2].colorbar.title.text == "difference"
    assert fig.data[0].zmin == fig.data[1].zmin and fig.data[0].zmax == fig.data[1].zmax  # one scale for both
    off = ~np.eye(len(za), dtype=bool)
    assert fig.data[0].zmax == max(za[off].max(), zb[off].max()) < 1  # the trivial diagonal does not set it
    with pytest.raises(InvalidArgumentError, match="no variable"):
        side_by_side(a, b, "cos")


def test_cross_figure_of_a_model_with_itself_is_one_on_the_diagonal(two):
    _, _, ab, aa = two
    fig = cross_figure(aa)
    assert [t.name for t in fig.data] == ["mlp_matched_cos", "head_matched_cos", "raw_cos"]
    for t in fig.data:
        np.testing.assert_allclose(np.diag(np.array(t.z, dtype=float)), 1.0, atol=1e-12)
        assert t.colorbar.title.text == "cos"
    other = cross_figure(ab)
    assert np.diag(np.array(other.data[0].z, dtype=float)).max() < 1  # independent random models
