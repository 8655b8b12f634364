"""Peak memory of ``compute`` does not grow with depth (read a layer, reduce it, drop it)."""

from __future__ import annotations

import torch

from tests.factories import synthetic
from tests.factories.memory import compute_growth_mib


def _growth_mib(path, cache) -> float:
    return compute_growth_mib(path, cache, "weights", "weights={'null_draws': 2, 'block_mib': 4}")


def test_peak_memory_with_four_times_the_layers_grows_far_less_than_four_times(tmp_path):
    kw = dict(hidden=512, heads=8, kv=4, inter=1536, dtype=torch.bfloat16)
    shallow, _ = synthetic.build(tmp_path / "l4", 4, **kw)
    deep, _ = synthetic.build(tmp_path / "l16", 16, **kw)
    layer_f64_mib = sum(torch.Size(s).numel() for s in synthetic.shapes(synthetic.config(1, 512, 8, 4, 1536)).values()) \
        * 8 / 2**20
    g4, g16 = _growth_mib(shallow, tmp_path / "c4"), _growth_mib(deep, tmp_path / "c16")
    # holding every layer would add 12 layers (~300 MiB in float64) between the two runs
    assert g16 < 1.5 * g4 + 0.5 * layer_f64_mib, (g4, g16, layer_f64_mib)
    assert g16 - g4 < 3 * layer_f64_mib, (g4, g16, layer_f64_mib)
