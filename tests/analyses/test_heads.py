"""The heads analysis end to end (forward_pass=False here; entropy has its own tests)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import geomlib
from tests.factories import synthetic


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """4 layers, GQA 4/2, heads*d != hidden: 1 = layer 0 with W_Q x 2.5; 2 has W_K = W_Q per head; 3 random."""

    def plant(L, fresh, prev):
        if L == 1:
            out = {k: v.clone() for k, v in prev[0].items()}
            out["q_proj"] = 2.5 * out["q_proj"]
            return out
        if L == 2:
            d = 8
            # each kv head's k rows equal the first query head of its group: W_K = W_Q for heads 0 and 2
            fresh["k_proj"] = torch.cat([fresh["q_proj"][0:d], fresh["q_proj"][2 * d:3 * d]])
            return fresh
        return fresh

    path, layers = synthetic.build(tmp_path_factory.mktemp("h") / "m", 4, plant, hidden=24, heads=4, kv=2,
                                   head_dim=8)
    ds = geomlib.compute(path, analyses=["heads"], cache_dir=tmp_path_factory.mktemp("c"), progress=False,
                         heads={"forward_pass": False, "null_draws": 16, "precision": "float64"})
    return ds, layers


def test_scalar_multiple_layer_known_answers(planted):
    ds, _ = planted
    qk = ds.sel(operator="qk")
    np.testing.assert_allclose(qk.head_cos.sel(layer=1, layer_b=0).values, 1.0, atol=1e-12)
    np.testing.assert_allclose(qk.head_T.sel(layer=1, layer_b=0).values, 2.5, rtol=1e-12)
    np.testing.assert_allclose(qk.head_T.sel(layer=0, layer_b=1).values, 1 / 2.5, rtol=1e-12)
    np.testing.assert_allclose(qk.head_rescale_T.sel(layer=1, layer_b=0).values, 2.5, rtol=1e-10)
    assert float(abs(qk.head_rescale_resid.sel(layer=1, layer_b=0)).max()) < 1e-12
    np.testing.assert_allclose(qk.head_pa_mean.sel(layer=1, layer_b=0).values, 1.0, atol=1e-8)
    np.testing.assert_allclose(qk.head_shape_cos.sel(layer=1, layer_b=0).values, 1.0, atol=1e-12)
    # OV did not change
    np.testing.assert_allclose(ds.head_cos.sel(operator="ov", layer=1, layer_b=0).values, 1.0, atol=1e-12)


def test_wk_equal_wq_heads_are_psd_and_agree_with_themselves(planted):
    ds, _ = planted
    d = 8
    for h in (0, 2):  # the query heads whose kv head was set to their own W_Q
        lam = ds.head_sym_eigs.sel(operator="qk", layer=2, head=h).values
        assert (lam[:d] > 0).all() and np.abs(lam[d:]).max() < 1e-9 * lam[0]
    np.testing.assert_array_equal(ds.head_sign_agree.sel(operator="qk", layer=2, layer_b=2).values, 1.0)


def test_gram_matches_dense_for_every_pair(planted):
    ds, layers = planted
    d, group = 8, 2
    for h in (0, 3):
        g = []
        for L in range(4):
            Wq, Wk = layers[L]["q_proj"], layers[L]["k_proj"]
            g.append(Wq[h * d:(h + 1) * d].T @ Wk[(h // group) * d:(h // group + 1) * d])
        for a in range(4):
            for b in range(4):
                want = float((g[a] * g[b]).sum())
                got = float(ds.head_gram.sel(operator="qk", layer=a, layer_b=b, head=h))
                assert got == pytest.approx(want, rel=1e-9, abs=1e-9)


def test_schema_and_nulls(planted):
    ds, _ = planted
    assert ds.head_cos.dims == ("operator", "layer", "layer_b", "head")
    assert list(ds.operator.values) == ["qk", "ov"] and ds.attrs["operators"] == "qk,ov"
    assert ds.head_sym_eigs.dims == ("operator", "layer", "head", "eig")
    assert ds.head_singvals.dims == ("operator", "layer", "head", "rank")
    assert ds.head_sign_agree.dims == ("operator", "layer", "layer_b", "head", "topk")
    assert ds.head_null_mean.dims == ("operator", "metric") and ds.head_corr_opnorm_entropy.dims == ("operator",)
    assert not any(v.startswith(("qk_", "ov_")) for v in ds.data_vars)  # no per-operator prefixes left
    assert ds.sizes["head"] == 4 and ds.sizes["eig"] == 16 and ds.sizes["rank"] == 8
    assert list(ds.topk.values) == [2, 4, 8, 16]
    np.testing.assert_allclose(ds.head_frac_pos.values, 0.5)
    assert list(ds.metric.values) == ["cos", "shape_cos", "rescale_resid", "pa_mean", "pa_min", "top1_overlap",
                                      "sign_agree"]
    m = ds.head_null_mean.sel(operator="qk").to_series()
    # random heads: operators nearly orthogonal, but spectra share a shape (seed 002's trap)
    assert abs(m["cos"]) < 0.1 and m["shape_cos"] > 0.9
    # switched off on purpose: NaN, labelled and recorded, but no warning (nothing went wrong)
    assert np.isnan(ds.attn_entropy).all() and "not computed" in ds.attn_entropy.attrs["description"]
    assert ds.attrs["heads_not_computed"] == "attn_entropy: forward_pass=False"
    assert json.loads(ds.attrs["heads_params"])["forward_pass"] is False
    assert "1/2 by construction" in ds.attrs["frac_pos_note"]


def test_large_hidden_small_d_runs_without_hidden_squared_memory(tmp_path):
    """hidden = 8192, d = 4: a hidden x hidden float64 matrix would be 512 MiB per head."""
    path, _ = synthetic.build(tmp_path / "wide", 3, hidden=8192, heads=2, kv=1, head_dim=4, inter=8,
                              dtype=torch.float32)
    code = (
        "import json, sys, time, geomlib\n"
        "def hwm():\n"
        "    return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM'))\n"
        f"geomlib.open_model({str(path)!r}).layer(0)\n"
        "import geomlib.analyses.heads.compute\n"
        "base = hwm(); t = time.time()\n"
        f"geomlib.compute({str(path)!r}, analyses=['heads'], cache_dir={str(tmp_path / 'c')!r}, progress=False,"
        " heads={'forward_pass': False, 'null_draws': 4})\n"
        "print(json.dumps({'mib': (hwm() - base) / 1024, 's': time.time() - t}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["mib"] < 200, r
