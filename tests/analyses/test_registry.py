"""Adding an analysis is one object: registered here, in the test, it reaches the CLI, compute, load,
the report and the dashboard's model label without any other file knowing of it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr

import geomlib
from geomlib.analyses import Analysis, Param, RunContext, registry
from geomlib.cli import build_parser, main
from geomlib.errors import InvalidArgumentError
from geomlib.store.provenance import provenance
from tests.factories.hf import make_checkpoint


class ToyNorms(Analysis):
    """‖W_q‖ per layer times a factor: a tiny analysis written the way the README says."""

    name = "toy"
    title = "toy: scaled q_proj norms"
    schema_version = 1
    default = False
    params = (Param("factor", 1.0, float, "multiplies every norm", min=0.0),)

    def run(self, ckpt, params, ctx):
        vals = np.full(ckpt.n_layers, np.nan)
        for L in ctx.bar(range(ckpt.n_layers), desc="toy", unit="layer"):
            w = ckpt.layer(L, ["q_proj"], dtype=torch.float64, device=ctx.device)["q_proj"]
            vals[L] = params.factor * float(torch.linalg.vector_norm(w))
        ds = xr.Dataset({"toy_norm": (("layer",), vals)}, coords={"layer": np.arange(ckpt.n_layers)})
        ds.attrs.update(provenance(ckpt, self.name, params, ctx))
        return ds

    def report(self, ds, anchor=-1):
        return ["", "=== How large is each layer's q_proj? (toy) ==="] + [
            f" {L}: {float(v):.4f}" for L, v in enumerate(ds["toy_norm"].values)]


@pytest.fixture
def toy():
    registry.register(ToyNorms())
    yield
    registry.unregister("toy")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path, m = make_checkpoint(tmp_path_factory.mktemp("toy"), "llama", torch.float32, n_layers=3)
    return path, m


def test_toy_analysis_reaches_every_consumer(toy, model, tmp_path, capsys):
    path, m = model
    cache = tmp_path / "cache"
    # CLI help lists its flag, generated from the declaration
    help_text = build_parser()._subparsers._group_actions[0].choices["compute"].format_help()
    assert "--toy.factor" in help_text and "toy: scaled q_proj norms" in help_text
    # not a default: plain compute leaves it out
    assert "toy" not in registry.defaults()
    # the CLI computes it with its own parameter namespace
    rc = main(["compute", str(path), "--analyses", "toy", "--toy.factor", "2", "--cache", str(cache), "-q"])
    assert rc == 0, capsys.readouterr().err
    assert "toy cached" in capsys.readouterr().out
    ds = geomlib.load(str(path), "toy", cache)
    want = [2 * float(m.layers[L].self_attn.q_proj.weight.detach().double().norm()) for L in range(3)]
    np.testing.assert_allclose(ds["toy_norm"].values, want, rtol=1e-12)
    assert ds.attrs["toy_params"] == '{"factor": 2.0}'
    # compute() takes it by name with a dict; load() finds the entry by those parameters
    ds1 = geomlib.compute(str(path), "toy", cache, progress=False, toy={"factor": 1.0})
    np.testing.assert_allclose(ds1["toy_norm"].values, np.array(want) / 2, rtol=1e-12)
    assert float(geomlib.load(str(path), "toy", cache, toy={"factor": 2.0})["toy_norm"][0]) == pytest.approx(want[0])
    # the report iterates the registry
    rc = main(["report", str(path), "--analyses", "toy", "--cache", str(cache), "-q"])
    assert rc == 0
    assert "How large is each layer's q_proj? (toy)" in capsys.readouterr().out
    # the dashboard's model catalog (torch-free) labels the model with it
    from geomlib.dashboard.data import catalog

    (entry,) = catalog([cache])
    assert "toy" in entry.analyses and "toy" in entry.label


def test_toy_parameters_are_validated_before_any_work(toy, model, tmp_path, capsys):
    path, _ = model
    rc = main(["compute", str(path), "--analyses", "toy", "--toy.factor", "-1", "--cache", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "toy parameter factor=-1.0" in err
    assert not (tmp_path / "c").exists()


def test_unregistered_analysis_is_unknown(model, tmp_path):
    path, _ = model
    with pytest.raises(InvalidArgumentError, match="not all known; choose from weights, heads, gauge"):
        geomlib.compute(str(path), "toy", tmp_path, progress=False)
    with pytest.raises(InvalidArgumentError, match="unknown keyword"):
        geomlib.compute(str(path), "weights", tmp_path, progress=False, toy={"factor": 1.0})


@pytest.mark.parametrize("name", ["device", "threads", "Weights", "2x", ""])
def test_bad_names_are_refused(name):
    class Bad(Analysis):
        pass

    Bad.name = name
    with pytest.raises(InvalidArgumentError, match="not allowed"):
        registry.register(Bad())


def test_duplicate_registration_is_refused():
    with pytest.raises(InvalidArgumentError, match="already registered"):
        registry.register(type(registry.get("weights"))())


def test_run_context_records_each_warning_once():
    ctx = RunContext.create("cpu", progress=False)
    with pytest.warns(geomlib.errors.GeomlibWarning):
        ctx.warn("layer 3 is odd")
    ctx.warn("layer 3 is odd")
    ctx.skip("attn_entropy", "no tokenizer", warn=False)
    assert ctx.warnings == ["layer 3 is odd"] and ctx.skipped == {"attn_entropy": "no tokenizer"}
    assert ctx.for_analysis().warnings == [] and ctx.for_analysis().device == ctx.device
