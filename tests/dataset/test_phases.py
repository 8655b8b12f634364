"""Phase labels: the seeds' rule reproduced exactly, user boundaries validated."""

from __future__ import annotations

import pytest

from geomlib.errors import InvalidArgumentError
from geomlib.dataset.phases import phase_labels, seed_phase

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
