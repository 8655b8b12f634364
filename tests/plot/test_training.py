"""The training-dynamics figure of a sweep, on the committed demo sweep (known values read back)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from geomlib.errors import InvalidArgumentError
from geomlib.plot.training import metrics, movement, training_figure
from geomlib.store.sweep import load_sweep

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ds():
    return load_sweep("demo-tiny-llama", ROOT / "cache")


def test_metrics_are_the_moved_variables_with_data(ds):
    got = metrics(ds)
    assert "moved_mlp_matched_cos" in got and "moved_head_matched_cos" in got and "moved_raw_cos" in got
    assert all(v.startswith("moved_") for v in got)


def test_movement_picks_or_averages_the_leading_coordinate(ds):
    mlp, label = movement(ds, "moved_mlp_matched_cos")
    assert label == "mlp_matched_cos (mean)" and mlp.dims == ("checkpoint", "layer")
    np.testing.assert_array_equal(mlp.values, ds["moved_mlp_matched_cos"].sel(mlp_view="mean").values)
    qk, _ = movement(ds, "moved_head_matched_cos", "qk")
    np.testing.assert_array_equal(qk.values, ds["moved_head_matched_cos"].sel(operator="qk").values)
    both, label = movement(ds, "moved_head_matched_cos")
    assert "mean over operator" in label
    np.testing.assert_allclose(both.values, ds["moved_head_matched_cos"].mean("operator").values)
    with pytest.raises(InvalidArgumentError, match="not a operator"):
        movement(ds, "moved_head_matched_cos", "xy")
    with pytest.raises(InvalidArgumentError, match="not a variable of this sweep"):
        movement(ds, "cos")


def test_figure_shows_the_heatmap_with_a_colour_bar_and_the_layer_trajectory(ds):
    fig = training_figure(ds, "moved_mlp_matched_cos", layer=2)
    heat, line = fig.data[0], fig.data[1]
    vals = ds["moved_mlp_matched_cos"].sel(mlp_view="mean").values
    assert np.array(heat.z, dtype=float).shape == (ds.sizes["layer"], ds.sizes["checkpoint"])
    np.testing.assert_allclose(np.array(heat.z, dtype=float)[2, 1:], vals[1:, 2])
    assert heat.colorbar.title.text == "cos vs previous checkpoint" and heat.showscale is not False
    assert list(heat.x)[-1] == "step 400"  # the label already names its step
    np.testing.assert_allclose(np.array(line.y, dtype=float)[1:], vals[1:, 2])
    assert list(line.x) == list(ds["step"].values)
    assert any(t.name == "training loss" for t in fig.data)  # the manifest recorded the loss
    with pytest.raises(InvalidArgumentError, match="out of range"):
        training_figure(ds, layer=6)
