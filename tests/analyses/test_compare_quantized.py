"""Quantization as the compare's first use: demo:minilm-l6 (float32) against its GGUF re-quantizations.

Known answers: an F32 GGUF is the same weights, so every diagonal cosine is 1; a quantized layer's raw
cosine with its float self is the cosine computed here directly from the two files' tensors; coarser
quantization moves every layer further (Q4_0 < Q8_0 < 1).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import geomlib
from geomlib.io.requantize import requantize

SOURCE = "demo:minilm-l6"
pytestmark = pytest.mark.slow  # the real demo model: tens of seconds


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    root = tmp_path_factory.mktemp("quant")
    paths = {t: requantize(SOURCE, root / f"minilm.{t}.gguf", t, progress=False) for t in ("F32", "Q8_0", "Q4_0")}
    out = {t: geomlib.compare(SOURCE, str(p), root / "cache", progress=False, threads=1) for t, p in paths.items()}
    return paths, out


def _diag(da):
    n = da.sizes["layer"]
    moved = np.moveaxis(da.values, (da.dims.index("layer"), da.dims.index("layer_b")), (-2, -1))
    return moved[..., np.arange(n), np.arange(n)]


def test_an_f32_requantization_is_the_same_model(quantized):
    _, cmp = quantized
    ds = cmp["F32"]
    for v in ("raw_cos", "mlp_matched_cos", "head_matched_cos", "gamma_cos"):
        np.testing.assert_allclose(_diag(ds[v]), 1.0, atol=1e-12, err_msg=v)
    assert ds.attrs["identity_a"] != ds.attrs["identity_b"]  # two files, one set of weights


def test_raw_cos_of_a_quantized_layer_is_the_direct_cosine(quantized):
    paths, cmp = quantized
    ds = cmp["Q8_0"]
    with geomlib.open_model(SOURCE) as a, geomlib.open_model(str(paths["Q8_0"])) as b:
        for L in (0, a.n_layers - 1):
            wa, wb = a.layer(L, dtype=torch.float64), b.layer(L, dtype=torch.float64)
            for fam in ds["family"].values:
                x, y = wa[str(fam)].ravel(), wb[str(fam)].ravel()
                direct = float(x @ y / (x.norm() * y.norm()))
                assert float(ds["raw_cos"].sel(family=fam).isel(layer=L, layer_b=L)) == pytest.approx(direct,
                                                                                                     abs=1e-12)


def test_coarser_quantization_moves_every_layer_further(quantized):
    _, cmp = quantized
    for v in ("raw_cos", "mlp_matched_cos", "head_matched_cos"):
        q8, q4 = _diag(cmp["Q8_0"][v]), _diag(cmp["Q4_0"][v])
        assert (q4 < q8).all() and (q8 < 1).all(), v
        # Q8_0 keeps ~0.55% relative error per matrix (cos ≈ 1 − 1.5e-5), Q4_0 ~9% (cos ≈ 0.996)
        assert q8.min() > 0.9999 and 0.98 < q4.min() < 0.999, v
