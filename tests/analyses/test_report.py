"""``geomlib compute / list / report`` (in process, through ``geomlib.cli.main``) and the committed demo datasets."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

import geomlib
from geomlib.analyses.phases import apply_phases
from geomlib.analyses.report import render
from geomlib.errors import GeomlibWarning
from geomlib.store import cache
from tests.factories import synthetic
from tests.factories.tokenizers import make_checkpoint_with_tokenizer

ROOT = Path(__file__).resolve().parents[2]
NO_FORWARD = "--no-heads.forward-pass"


@pytest.fixture
def model(tmp_path):
    path, _ = synthetic.build(tmp_path / "tiny", 5, dtype=torch.bfloat16)
    return path


def stored_params(c: Path) -> dict[str, dict]:
    """analysis -> the parameters recorded in its cache file under ``c`` (one file per analysis)."""
    rows = cache.entries(c)
    assert len({e.analysis for e in rows}) == len(rows), [e.path for e in rows]
    return {e.analysis: json.loads(e.attrs["params"]) for e in rows}


def test_compute_list_report(model, tmp_path, run_cli):
    c = tmp_path / "cache"
    res = run_cli("compute", model, "--cache", c, "--weights.null-draws", "2", "--heads.null-draws", "2", NO_FORWARD,
                  "-q")
    assert res.code == 0, res.err
    assert len(list(c.rglob("weights-*.nc"))) == 1 and len(list(c.rglob("heads-*.nc"))) == 1
    res = run_cli("list", "--cache", c)
    assert res.code == 0 and "tiny" in res.out and "llama, 5 layers" in res.out
    res = run_cli("report", model, "--cache", c, "--phases", "A:0,B:2,C:4")
    assert res.code == 0, res.err
    text = res.out
    for heading in (
        "Is each layer's matrix the previous one's up to scale?",  # was: adjacent-layer raw cos-sim
        "Per-family summary",
        "How does each family's scale evolve with depth?",  # was: scale track
        "PCA of the log-scale",
        "Do adjacent layers agree once a rotation of the residual side is allowed?",  # was: aligned vs raw
        "Per-phase mean delta",
        "Is the aligned cos-sim above what unrelated matrices give? Null bands",
        "Do the input_ln norm gains change direction or only scale with depth?",  # was: γ directions of input_ln
        "Does head h's QK operator keep its shape from layer to layer?",  # was: seed 001 (QK) operator cos-sim
        "Verdict: is the QK operator shared across layers? [seed 001]",
        "Verdict: are QK spectra rescaled copies across depth? [seed 002]",
        "Does head h's OV operator keep its shape from layer to layer?",  # seed 001 (OV)
        "Verdict: is the OV operator shared across layers? [seed 001]",
        "Do the OV spectra keep their shape σ/σ_max across layers?",  # seed 002 (OV)
        "Verdict: are OV spectra rescaled copies across depth? [seed 002]",
    ):
        assert heading in text, heading
    for tag in ("[seed 000]", "[seed 001]", "[seed 002]", "[seed 003]", "[seed 004]"):
        assert tag in text, tag
    assert "phases (user): A=0-1, B=2-3, C=4-4" in text
    res = run_cli("report", model, "--cache", c, "--n-phases", "2")  # automatic phases, their number given
    assert res.code == 0, res.err
    assert "phases (changepoint:weights:user-k): A=0-" in res.out
    # every verdict sits beside its null band
    lines = text.splitlines()
    table = lines[lines.index(next(ln for ln in lines if ln.startswith("=== Is the aligned cos-sim above"))):]
    weight_rows = [ln for ln in table[:12] if ln.strip().split(" ")[0].endswith("_proj")]
    assert len(weight_rows) == 7 and all("±" in ln for ln in weight_rows)
    for kind in ("QK", "OV"):
        verdict = lines[lines.index(f"=== Verdict: is the {kind} operator shared across layers? [seed 001] ===") + 1]
        assert "null" in verdict and "±" in verdict
        verdict = lines[lines.index(f"=== Verdict: are {kind} spectra rescaled copies across depth? [seed 002] ===")
                        + 2]
        assert "random heads" in verdict and "±" in verdict


def test_report_computes_when_missing_and_reuses_otherwise(model, tmp_path, run_cli):
    c = tmp_path / "cache"
    res = run_cli("report", model, "--cache", c, "--weights.null-draws", "0", "--heads.null-draws", "0", NO_FORWARD,
                  "--gauge.null-draws", "0", "-q")
    assert res.code == 0, res.err
    assert res.out.startswith("geomlib report:")
    files = sorted(c.rglob("*.nc"))
    assert [f.name.split("-")[0] for f in files] == ["gauge", "heads", "spectra", "weights"]
    mtimes = [f.stat().st_mtime_ns for f in files]
    assert run_cli("report", model, "--cache", c).code == 0
    assert [f.stat().st_mtime_ns for f in files] == mtimes
    assert sorted(c.rglob("*.nc")) == files


def test_missing_tokenizer_computes_the_rest_and_warns_once(model, tmp_path, run_cli):
    """No tokenizer: heads is computed without the forward pass, said once; nothing else is affected."""
    c = tmp_path / "cache"
    with pytest.warns(GeomlibWarning) as record:
        res = run_cli("compute", model, "--cache", c, "--weights.null-draws", "2", "--heads.null-draws", "2", "-q")
    assert res.code == 0, res.err
    assert "Traceback" not in res.err and "error" not in res.err
    said = [str(w.message) for w in record if issubclass(w.category, GeomlibWarning)]
    assert len(said) == 1, said  # once, and no other warning
    assert said[0].startswith("attn_entropy not computed: ") and "no tokenizer" in said[0]
    assert "--no-heads.forward-pass" in said[0]  # how to silence it
    # the CLI lists it once among the warnings
    assert res.out.count("attn_entropy not computed") == 1 and "warnings:" in res.out
    assert len(list(c.rglob("weights-*.nc"))) == 1 and len(list(c.rglob("heads-*.nc"))) == 1
    ds = geomlib.load(model, cache_dir=c)
    # the missing part: NaN, labelled, recorded, and the key says what was computed
    assert np.isnan(ds.attn_entropy).all()
    desc = ds.attn_entropy.attrs["description"]
    assert desc.startswith("not computed (") and "no tokenizer" in desc
    assert ds.attrs["heads_not_computed"].startswith("attn_entropy: ") and "no tokenizer" in ds.attrs[
        "heads_not_computed"]
    assert stored_params(c)["heads"]["forward_pass"] is False
    assert ds.attrs["warnings"].count("attn_entropy not computed") == 1
    # nothing else failed: every weights and per-head variable is there and finite where it should be
    for fam in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "input_ln"):
        assert np.isfinite(ds.cos.sel(family=fam)).all(), fam
    # the scrambled null is opt-in (scrambled_null=True): NaN by default
    drawn = ds.aligned_null_mean.sel(null=["gaussian", "permutation"], family="q_proj", layer=range(4))
    assert np.isfinite(drawn).all()
    assert np.isnan(ds.aligned_null_mean.sel(null="scrambled")).all()
    for v in ("head_cos", "head_gram", "head_T", "head_singvals", "head_sym_eigs", "head_shape_cos",
              "head_rescale_resid", "head_null_mean"):
        assert np.isfinite(ds[v]).all(), v
    assert list(ds.operator.values) == ["qk", "ov"]
    assert "weights_not_computed" not in ds.attrs or ds.attrs["weights_not_computed"] == ""


@pytest.mark.parametrize(
    "args, words",
    [
        (["compute", "/no/such/model"], "not an existing file"),
        (["compute", "{model}", "--weights.precision", "float16"], "argument --weights.precision: invalid choice"),
        (["compute", "{model}", "--heads.null-draws", "1"], "heads parameter null_draws=1 is not allowed"),
        (["compute", "{model}", "--phases", "9"], "phase boundaries"),
        (["compute", "{model}", "--phases", "x,y"], "--phases"),
        (["compute", "{model}", "--n-phases", "9"], "n_phases=9"),
        (["report", "{model}", "--phases", "seed", "--n-phases", "2"], "automatic phases only"),
        (["compute", "{model}", "--device", "cuda:7"] if not torch.cuda.is_available() else
         ["compute", "{model}", "--device", "tpu"], "device"),
        (["report", "{model}", "--heads.null-draws", "-3"], "heads parameter null_draws=-3"),
        (["compute", "{model}", "--heads.max-memory", "0"], "heads parameter max_memory=0"),
        (["compute", "{model}", "--heads.k", "0"], "heads parameter k=0"),
        (["compute", "{model}", "--heads.max-tokens", "1"], "max_tokens=1"),
        (["compute", "{model}", "--heads.text", "/no/such/text.txt"], "no such file"),
        (["compute", "{model}", "--weights.block-mib", "0"], "weights parameter block_mib=0"),
        (["compute", "{model}", "--analyses", "weights,vibes"], "choose from weights"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(model, tmp_path, run_cli, args, words):
    c = tmp_path / "cache"
    res = run_cli(*[a.format(model=model) for a in args], "--cache", c, NO_FORWARD, "-q")
    res.one_error_line(words)
    assert not list(c.rglob("*.nc")) if c.exists() else True


@pytest.mark.parametrize("old", [["--null-draws", "0"], ["--no-dynamic"], ["--k", "4"], ["--max-tokens", "8"],
                                 ["--aligned-pairs", "all"], ["--text", "t.txt"]])
def test_old_flat_flags_are_gone(model, tmp_path, run_cli, old):
    c = tmp_path / "cache"
    res = run_cli("compute", model, "--cache", c, "-q", *old)
    assert res.code == 2 and "Traceback" not in res.err
    assert f"unrecognized arguments: {old[0]}" in res.err
    assert not c.exists()


def test_compute_help_lists_each_analysis_flags(run_cli):
    res = run_cli("compute", "--help")
    assert res.code == 0
    for flag in ("--analyses", "--weights.null-draws", "--weights.aligned-pairs", "--weights.seed",
                 "--weights.block-mib", "--heads.null-draws", "--heads.k", "--heads.forward-pass",
                 "--no-heads.forward-pass", "--heads.text", "--heads.max-tokens", "--heads.max-memory"):
        assert flag in res.out, flag
    assert "--null-draws" not in res.out.replace("s.null-draws", "")  # only namespaced forms


@pytest.mark.parametrize("heads_draws, weights_draws", [("0", "0"), ("0", "2"), ("2", "0")])
def test_analysis_flags_reach_their_analysis(model, tmp_path, run_cli, heads_draws, weights_draws):
    c = tmp_path / "cache"
    res = run_cli("compute", model, "--cache", c, "--heads.null-draws", heads_draws, "--weights.null-draws",
                  weights_draws, "--heads.k", "4", "--weights.aligned-pairs", "all", NO_FORWARD, "-q")
    assert res.code == 0, res.err
    p = stored_params(c)
    assert p["heads"]["null_draws"] == int(heads_draws) and p["weights"]["null_draws"] == int(weights_draws)
    assert p["heads"]["k"] == 4 and p["heads"]["forward_pass"] is False
    assert p["weights"]["aligned_pairs"] == "all"
    assert "k" not in p["weights"] and "aligned_pairs" not in p["heads"]
    ds = geomlib.load(model, cache_dir=c)
    assert json.loads(ds.attrs["heads_params"]) == p["heads"]
    assert json.loads(ds.attrs["weights_params"]) == p["weights"]
    # the numbers follow: no draws, NaN bands; draws, finite bands
    assert np.isnan(ds.head_null_mean).all() == (heads_draws == "0")
    assert np.isnan(ds.aligned_null_mean.sel(family="q_proj", layer=range(4))).all() == (weights_draws == "0")


def test_flags_of_an_unselected_analysis_are_dropped(model, tmp_path, run_cli):
    c = tmp_path / "cache"
    res = run_cli("compute", model, "--cache", c, "--analyses", "weights", "--weights.null-draws", "0",
                  "--heads.k", "4", "-q")
    assert res.code == 0, res.err
    assert [p.name.split("-")[0] for p in c.rglob("*.nc")] == ["weights"]


def test_max_memory_flag_reaches_the_forward_pass_and_not_the_key(tmp_path, run_cli):
    path, _ = make_checkpoint_with_tokenizer(tmp_path / "m", "llama", n_layers=2)
    c = tmp_path / "cache"
    common = ("--cache", c, "--analyses", "heads", "--heads.null-draws", "0", "--heads.max-tokens", "32", "-q")
    res = run_cli("compute", path, "--heads.max-memory", "1", *common)  # 1 byte: every layer offloaded
    assert res.code == 0, res.err
    (f,) = c.rglob("heads-*.nc")
    small = cache.read(f)
    assert small.attrs["entropy_offloaded"] == 1 and "offloaded" in small.attrs["entropy_device"]
    assert "max_memory" not in json.loads(small.attrs["params"])
    mtime = f.stat().st_mtime_ns
    # without the budget: the same cache entry (served, not recomputed) ...
    assert run_cli("compute", path, *common).code == 0
    assert list(c.rglob("*.nc")) == [f] and f.stat().st_mtime_ns == mtime
    # ... and recomputed in memory, the same key and the same numbers
    assert run_cli("compute", path, "--force", *common).code == 0
    assert list(c.rglob("*.nc")) == [f]
    full = cache.read(f)
    assert full.attrs["entropy_offloaded"] == 0 and full.attrs["cache_key"] == small.attrs["cache_key"]
    assert np.isfinite(full.attn_entropy).all()
    np.testing.assert_allclose(full.attn_entropy.values, small.attn_entropy.values, rtol=1e-12, atol=1e-12)


def test_list_on_empty_cache(tmp_path, run_cli):
    res = run_cli("list", "--cache", tmp_path / "none")
    assert res.code == 0 and "no cached datasets" in res.out


def test_render_is_torch_free_on_a_cached_dataset(model, tmp_path):
    geomlib.compute(model, cache_dir=tmp_path, progress=False, weights={"null_draws": 0},
                    heads={"null_draws": 0, "forward_pass": False})
    code = ("import sys, geomlib\nfrom geomlib.analyses.report import render\n"
            f"text = render(geomlib.load({str(model)!r}, cache_dir={str(tmp_path)!r}))\n"
            "print(text[:40])\n"
            "assert 'Verdict: is the QK operator shared' in text and 'Null bands' in text\n"
            "assert 'torch' not in sys.modules\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("geomlib report:")
    for f in sorted(tmp_path.rglob("*.nc")):  # one analysis file alone renders too
        ds = xr.open_dataset(f, engine="netcdf4").load()
        ds.attrs["analyses"] = ds.attrs["analysis"]
        assert render(apply_phases(ds)).startswith("geomlib report:"), f.name


# --- the committed demo datasets ------------------------------------------------------------------------

DEMOS = ("demo:minilm-l6", "demo:smollm2-135m")


def committed(source: str, analysis: str) -> cache.Entry:
    hits = [e for e in cache.entries(ROOT / "cache") if e.source == source and e.analysis == analysis]
    assert len(hits) == 1, f"want one committed {analysis} dataset for {source} in cache/, found {hits}"
    return hits[0]


@pytest.mark.parametrize("source", DEMOS)
def test_committed_demo_datasets_are_current(source):
    """Every demo has one entry per default analysis, at the registry's schema version (load would skip it)."""
    from geomlib.analyses import registry

    for a in registry.defaults():
        e = committed(source, a)
        assert registry.is_current(a, e.schema_version), (source, a, e.schema_version)
    ds = geomlib.load(source, cache_dir=ROOT / "cache")
    assert ds.attrs["analyses"] == ",".join(registry.defaults())


@pytest.mark.slow
@pytest.mark.parametrize("analysis", ["weights", "heads", "gauge", "spectra"])
@pytest.mark.parametrize("source", DEMOS)
def test_committed_demo_dataset_reproduces(tmp_path, source, analysis):
    """Recompute each demo with its committed parameters: the same key, and the same data (integers and NaN
    exactly, floats to 1e-9: a BLAS reduction's order depends on its thread count)."""
    entry = committed(source, analysis)
    params = json.loads(entry.attrs["params"])
    geomlib.compute(source, analyses=[analysis], cache_dir=tmp_path, progress=False, device="cpu",
                    **{analysis: params})
    (fresh,) = list(tmp_path.rglob(f"{analysis}-*.nc"))
    assert fresh.name == entry.path.name and fresh.parent.name == entry.path.parent.name  # same identity and key
    old, new = cache.read(entry.path), cache.read(fresh)
    assert sorted(new.data_vars) == sorted(old.data_vars)
    assert sorted(new.coords) == sorted(old.coords)
    for c in old.coords:
        np.testing.assert_array_equal(new[c].values, old[c].values, err_msg=c)
    for v in old.data_vars:
        assert new[v].dims == old[v].dims and new[v].dtype == old[v].dtype, v
        if new[v].dtype.kind == "f":
            # NaN where NaN; otherwise equal up to rounding, which BLAS threading reorders: the float32 paths
            # (precision="float32", the default) move by ~1e-7 of the values' scale, within their documented 1e-5;
            # a band's pooled std (differences of near-equal draws) moves by as much in absolute terms
            np.testing.assert_allclose(new[v].values, old[v].values, rtol=1e-5, atol=1e-6, err_msg=v)
        else:
            np.testing.assert_array_equal(new[v].values, old[v].values, err_msg=v)
        assert new[v].attrs == old[v].attrs, v
    for k in ("params", "cache_key", "identity", "schema_version", "warnings", "quantization"):
        assert new.attrs.get(k) == old.attrs.get(k), k
    # the committed weights entries predate the not_computed attribute: absent means nothing was skipped
    assert new.attrs.get("not_computed", "") == old.attrs.get("not_computed", "")
    if source == "demo:smollm2-135m":
        assert new.attrs["quantization"] == "Q4_1"


def test_report_on_the_demo_runs_from_the_committed_cache(tmp_path, run_cli):
    c = tmp_path / "cache"
    shutil.copytree(ROOT / "cache", c)
    res = run_cli("report", "demo:smollm2-135m", "--cache", c)
    assert res.code == 0, res.err
    assert "NOTE: weights are quantized (Q4_1)" in res.out
    assert "30 layers" in res.out and "Null bands" in res.out
    assert "phases (changepoint:entropy:ebic)" in res.out  # found automatically from the entropy profile
    assert "Verdict: is the QK operator shared across layers?" in res.out
    assert "Verdict: are QK spectra rescaled copies across depth?" in res.out
    assert "How focused is each layer's attention?" in res.out  # the committed entropy is there
    assert "Do adjacent layers' MLPs share structure once neurons are matched?" in res.out  # gauge, committed
    assert "Which seed verdicts change once the gauge is handled?" in res.out
    assert sorted(p.name for p in c.rglob("*.nc")) == sorted(p.name for p in (ROOT / "cache").rglob("*.nc"))


def test_qk_scales_are_not_reported_under_qk_norm(tmp_path):
    """Qwen3's q_norm/k_norm remove the QK operator's scale: T and the scale correlations are withheld."""
    from geomlib.analyses.report import render
    from tests.factories.hf import make_checkpoint

    path, _ = make_checkpoint(tmp_path, "qwen3", n_layers=3)
    ds = geomlib.compute(str(path), ["heads", "gauge"], tmp_path / "c", progress=False,
                         heads={"forward_pass": False, "null_draws": 2}, gauge={"null_draws": 2})
    text = render(ds)
    assert "T_opt: not reported: q_norm/k_norm" in text
    assert "corr(T, entropy), corr(op_norm, entropy): not reported" in text
    assert "q_norm/k_norm gains folded into the QK operators" in text
    ov = text[text.index("Does head h's OV operator"):]
    assert "not reported" not in ov.split("===")[2]  # the OV table keeps its T column
