"""Phase labels: the seeds' rule reproduced exactly, user boundaries validated, automatic phases fitted."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from geomlib.errors import InvalidArgumentError
from geomlib.analyses.phases import apply_phases, check_phase_spec, phase_labels, seed_phase

# seed 000's tables, written out as ranges (not computed by the code under test)
QWEN3_32B = {"A": range(0, 7), "B": range(7, 10), "C": range(10, 32), "D": range(32, 47), "E": range(47, 59),
             "tail": range(59, 64)}
QWEN3_4B = {"A": range(0, 7), "B": range(7, 10), "C": range(10, 24), "D": range(24, 34), "tail": range(34, 36)}


@pytest.mark.parametrize("n, table, method", [(64, QWEN3_32B, "preset:Qwen3-32B"), (36, QWEN3_4B, "preset:Qwen3-4B")])
def test_presets_reproduce_seed_tables(n, table, method):
    labels, got_method, starts = phase_labels(n)
    assert got_method == method
    for name, layers in table.items():
        assert all(labels[L] == name for L in layers)
    assert starts == [r.start for r in table.values()]


@pytest.mark.parametrize("n", [6, 24, 30, 48, 100])
def test_fractional_rule(n):
    labels, method, _ = phase_labels(n)
    assert method == "fractional"
    for L in range(n):
        f = L / n
        want = "A" if f < 0.11 else "B" if f < 0.15 else "C" if f < 0.5 else "D" if f < 0.75 else "E" if f < 0.92 \
            else "tail"
        assert labels[L] == want == seed_phase(L, n)


def test_user_boundaries_override_presets():
    labels, method, starts = phase_labels(64, [3, 40])
    assert method == "user" and starts == [0, 3, 40]
    assert labels[:3] == ["A"] * 3 and labels[3:40] == ["B"] * 37 and labels[40:] == ["C"] * 24
    labels, _, _ = phase_labels(10, [5], names=["early", "late"])
    assert labels == ["early"] * 5 + ["late"] * 5


@pytest.mark.parametrize("bad, names", [([0, 12], None), ([5], ["x"]), ([3, 4], ["a", "a", "b"])])
def test_bad_boundaries_fail_with_one_sentence(bad, names):
    with pytest.raises(InvalidArgumentError) as err:
        phase_labels(12, bad, names)
    assert "\n" not in str(err.value)


# --- phases on a dataset: automatic (change points), seed, user ------------------------------------


def layered(n, **variables):
    """A bare dataset over ``layer`` / ``layer_b`` with the given (dims, values) variables."""
    ds = xr.Dataset({k: v for k, v in variables.items()}, coords={"layer": np.arange(n), "layer_b": np.arange(n)})
    ds["cos"] = (("layer", "layer_b"), np.eye(n))
    return ds


def steps(starts, n, p, noise, seed, base=2.0):
    """Piecewise-constant (layer, p) profile with a new level per segment, plus Gaussian noise."""
    rng = np.random.default_rng(seed)
    X = np.empty((n, p))
    level = base + rng.random(p)
    for a, b in zip(starts, list(starts[1:]) + [n]):
        level = level + rng.choice([-1.0, 1.0], size=p) * (0.5 + rng.random(p))
        X[a:b] = level
    return X + noise * rng.standard_normal((n, p))


def weight_vars(starts, n, seed):
    fams = ["q_proj", "k_proj", "v_proj", "input_ln", "q_norm"]
    scale = np.exp(steps(starts, n, len(fams), 0.05, seed).T)
    scale[-1] = np.nan  # a family this model lacks
    proj = np.full((len(fams), n), np.nan)
    proj[3] = steps(starts, n, 1, 0.05, seed + 1)[:, 0]
    return {"scale": (("family", "layer"), scale), "gamma_proj_top1": (("family", "layer"), proj),
            "family": fams}


@pytest.mark.parametrize("seed", range(3))
def test_auto_segments_the_entropy_profile(seed):
    planted = [0, 5, 8, 20]
    ent = steps(planted, 28, 9, 0.08, seed)
    w = weight_vars([0, 14], 28, seed)  # different structure: entropy must win
    ds = layered(28, attn_entropy=(("layer", "head"), ent), **{k: v for k, v in w.items() if k != "family"})
    ds = ds.assign_coords(family=w["family"], head=np.arange(9))
    out = apply_phases(ds)
    assert out.attrs["phase_method"] == "changepoint:entropy:ebic"
    assert list(out.attrs["phase_starts"]) == planted
    assert out.attrs["phase_names"] == "A,B,C,D"
    assert list(out.phase.values) == ["A"] * 5 + ["B"] * 3 + ["C"] * 12 + ["D"] * 8
    assert list(out.phase_b.values) == list(out.phase.values)
    assert "EBIC(k) = N·ln(SSE_k/N) + (k·p + k − 1)·ln(N) + 2·ln C(m − 1, k − 1)" in out.attrs["phase_criterion"]
    assert "k=4" in out.attrs["phase_criterion"] and "9 heads" in out.attrs["phase_profile"]
    assert out.attrs["phase_ebic"].shape == out.attrs["phase_sse"].shape == (8,)
    assert int(np.nanargmin(out.attrs["phase_ebic"])) == 3
    # the coordinate carries the same record
    assert out.phase.attrs["method"] == "changepoint:entropy:ebic" and list(out.phase.attrs["starts"]) == planted


def test_auto_with_a_given_number_of_phases_or_names():
    ent = steps([0, 6, 15], 24, 4, 0.05, 7)
    ds = layered(24, attn_entropy=(("layer", "head"), ent))
    two = apply_phases(ds, n_phases=2)
    assert two.attrs["phase_method"] == "changepoint:entropy:user-k"
    assert len(two.attrs["phase_starts"]) == 2 and two.attrs["phase_names"] == "A,B"
    assert "given by the user" in two.attrs["phase_criterion"]
    named = apply_phases(ds, "auto", names=["early", "mid", "late"])  # the names set the number
    assert named.attrs["phase_method"] == "changepoint:entropy:user-k"
    assert list(named.attrs["phase_starts"]) == [0, 6, 15] and named.attrs["phase_names"] == "early,mid,late"


def test_entropy_with_missing_layers_and_heads_is_still_used():
    ent = steps([0, 6, 15], 24, 4, 0.05, 3)
    ent[9:12] = np.nan  # layers the forward pass did not measure
    ent[:, 2] = np.nan  # a head never measured
    out = apply_phases(layered(24, attn_entropy=(("layer", "head"), ent)))
    assert out.attrs["phase_method"] == "changepoint:entropy:ebic"
    assert list(out.attrs["phase_starts"]) == [0, 6, 15]
    assert "finite in 21/24 layers" in out.attrs["phase_profile"]


@pytest.mark.parametrize("entropy", ["absent", "sparse", "flat"])
def test_fallback_to_the_weight_profile(entropy):
    n, planted = 30, [0, 9, 21]
    w = weight_vars(planted, n, 11)
    vars_ = {k: v for k, v in w.items() if k != "family"}
    if entropy == "sparse":  # measured in too few layers to place boundaries
        e = np.full((n, 4), np.nan)
        e[:10] = steps([0, 4], 10, 4, 0.05, 1)
        vars_["attn_entropy"] = (("layer", "head"), e)
    elif entropy == "flat":
        vars_["attn_entropy"] = (("layer", "head"), np.full((n, 4), 1.5))
    out = apply_phases(layered(n, **vars_).assign_coords(family=w["family"]))
    assert out.attrs["phase_method"] == "changepoint:weights:ebic"
    assert list(out.attrs["phase_starts"]) == planted
    prof = out.attrs["phase_profile"]
    assert prof.startswith("weights (") and "z-scored" in prof
    assert {"absent": "no attn_entropy", "sparse": "finite in 10/30 layers", "flat": "does not vary"}[entropy] in prof
    assert "ln scale q_proj" in prof and "gamma_proj_top1 input_ln" in prof and "q_norm" not in prof
    assert "(z-scored)" in out.attrs["phase_criterion"]
    assert apply_phases(layered(n, **vars_).assign_coords(family=w["family"]), n_phases=4).attrs[
        "phase_method"] == "changepoint:weights:user-k"


def test_nothing_to_segment_falls_back_to_the_seed_rule():
    out = apply_phases(layered(10))
    assert out.attrs["phase_method"] == "fractional"
    assert "nothing to segment" in out.attrs["phase_profile"] and "fractional rule" in out.attrs["phase_criterion"]
    assert list(out.phase.values) == [seed_phase(L, 10) for L in range(10)]
    with pytest.raises(InvalidArgumentError, match="needs a profile"):
        apply_phases(layered(10), n_phases=2)


@pytest.mark.parametrize("n, table, method", [(64, QWEN3_32B, "preset:Qwen3-32B"), (36, QWEN3_4B, "preset:Qwen3-4B")])
def test_seed_reproduces_the_presets_whatever_the_data(n, table, method):
    ent = steps([0, n // 2], n, 3, 0.05, 0)  # a profile that auto would follow
    ds = layered(n, attn_entropy=(("layer", "head"), ent))
    out = apply_phases(ds, "seed")
    assert out.attrs["phase_method"] == method
    assert list(out.attrs["phase_starts"]) == [r.start for r in table.values()]
    for name, layers in table.items():
        assert all(out.phase.values[L] == name for L in layers)
    assert "phase_ebic" not in out.attrs and "measured on" in out.attrs["phase_criterion"]
    assert apply_phases(ds).attrs["phase_method"] == "changepoint:entropy:ebic"


def test_reapplying_replaces_every_phase_attribute():
    ds = layered(20, attn_entropy=(("layer", "head"), steps([0, 10], 20, 2, 0.05, 0)))
    auto = apply_phases(ds)
    assert "phase_ebic" in auto.attrs
    user = apply_phases(auto, [5], names=["x", "y"])
    assert user.attrs["phase_method"] == "user" and list(user.attrs["phase_starts"]) == [0, 5]
    assert "phase_ebic" not in user.attrs and "phase_sse" not in user.attrs
    assert user.attrs["phase_criterion"] == "boundaries given by the user"
    assert "phase_ebic" not in ds.attrs  # the input is not modified


def test_phase_attributes_survive_netcdf(tmp_path):
    ds = layered(20, attn_entropy=(("layer", "head"), steps([0, 10], 20, 2, 0.05, 0)))
    out = apply_phases(ds, n_phases=9)  # k_max grows to 9; nothing is infeasible with 20 layers
    out.to_netcdf(tmp_path / "p.nc", engine="netcdf4")
    back = xr.open_dataset(tmp_path / "p.nc", engine="netcdf4").load()
    assert back.attrs["phase_method"] == "changepoint:entropy:user-k"
    np.testing.assert_array_equal(back.attrs["phase_starts"], out.attrs["phase_starts"])
    np.testing.assert_allclose(back.attrs["phase_ebic"], out.attrs["phase_ebic"])
    assert back.phase.attrs["criterion"] == out.attrs["phase_criterion"]


@pytest.mark.parametrize(
    "spec, names, n_phases, words",
    [
        ("bogus", None, None, "not a phase spec"),
        ([3], None, 2, "automatic phases only"),
        ("seed", None, 3, "automatic phases only"),
        ("seed", ["a", "b"], None, "cannot rename"),
        ("auto", None, 7, "at most 6"),
        ("auto", None, 0, "n_phases=0 is not allowed; pass an integer of at least 1"),
        ("auto", ["a", "a"], None, "distinct"),
        ("auto", ["a", "b"], 3, "n_phases=3"),
        ([0, 12], None, None, "must lie in"),
    ],
)
def test_bad_phase_specs_fail_before_any_work(spec, names, n_phases, words):
    with pytest.raises(InvalidArgumentError) as err:
        check_phase_spec(12, spec, names, n_phases)
    assert words in str(err.value) and "\n" not in str(err.value)
