"""Peak memory of ``compute`` does not grow with depth (read a layer, reduce it, drop it)."""

from __future__ import annotations

from tests.factories.memory import growth_with_depth


def test_peak_memory_with_four_times_the_layers_grows_far_less_than_four_times(tmp_path):
    g4, g16, layer_f64_mib = growth_with_depth(tmp_path, "weights", "weights={'null_draws': 2, 'block_mib': 4}",
                                               hidden=512, heads=8, kv=4, inter=1536)
    # holding every layer would add 12 layers (~300 MiB in float64) between the two runs
    assert g16 < 1.5 * g4 + 0.5 * layer_f64_mib, (g4, g16, layer_f64_mib)
    assert g16 - g4 < 3 * layer_f64_mib, (g4, g16, layer_f64_mib)
