"""TaskRunner: concurrent pieces of an analysis, warnings recorded in submission order, errors raised."""

from __future__ import annotations

import threading
import time
import warnings

import numpy as np
import pytest
import torch

import geomlib
from geomlib.analyses.concurrent import TaskRunner
from geomlib.analyses.gauge.compute import task_workers
from geomlib.errors import GeomlibWarning
from tests.analyses.test_gauge import _model
from tests.factories.hf import save_model


def _warner(msg, delay, seen):
    def fn():
        time.sleep(delay)  # later tasks finish first: the record must still follow submission order
        seen.add(threading.current_thread().name)
        warnings.warn(msg, GeomlibWarning)
    return fn


@pytest.mark.parametrize("workers", [1, 2])
def test_warnings_are_recorded_in_submission_order_and_quiet_tasks_are_dropped(workers):
    got, seen, groups = [], set(), []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing may leak past the runner as a warning
        with TaskRunner(workers, got.append, on_group_done=lambda: groups.append(1)) as r:
            for g in range(3):
                r.submit([(_warner(f"g{g} a", 0.03 * (3 - g), seen), False),
                          (_warner(f"g{g} null", 0.0, seen), True),
                          (_warner(f"g{g} b", 0.0, seen), False)])
    assert got == [f"g{g} {t}" for g in range(3) for t in ("a", "b")]
    assert len(groups) == 3
    assert len(seen) == workers  # inline on the caller (1) or on both pool threads (2)


def test_a_failing_task_raises_in_the_caller_and_warnings_filters_come_back():
    before = list(warnings.filters)

    def boom():
        raise ValueError("task failed")

    with pytest.raises(ValueError, match="task failed"), TaskRunner(2, lambda m: None) as r:
        r.submit([(boom, False), (lambda: None, False)])
    assert warnings.filters == before


def test_workers_follow_threads_and_the_memory_of_concurrent_costs():
    class Facts:
        intermediate = 3072  # 75 MB per float64 cost: one matching per thread

    assert task_workers(Facts, 1) == 1 and task_workers(Facts, 2) == 2
    Facts.intermediate = 9728  # 757 MB per cost: the pieces run in order, each on every thread
    assert task_workers(Facts, 2) == 1


def test_gauge_on_two_threads_equals_one_thread(tmp_path):
    """The concurrent pair pieces give the serial run's numbers and warnings, in the same order."""
    model = _model(n_layers=4)
    with torch.no_grad():
        model.layers[1].mlp.gate_proj.weight.zero_()  # a zero family: a warning from inside the matching tasks
    save_model(model, tmp_path / "m", torch.float64)
    runs = {}
    for t in (1, 2):
        with pytest.warns(GeomlibWarning):
            runs[t] = geomlib.compute(str(tmp_path / "m"), "gauge", tmp_path / f"c{t}", progress=False, threads=t,
                                      gauge={"null_draws": 2, "pairs": "all"})
    one, two = runs[1], runs[2]
    assert one.attrs["gauge_threads"] == 1 and two.attrs["gauge_threads"] == 2
    for v in one.data_vars:
        np.testing.assert_array_equal(one[v].values, two[v].values, err_msg=v)
    assert one.attrs["warnings"] == two.attrs["warnings"] and "'gate' is zero" in one.attrs["warnings"]


def test_weights_on_two_threads_equals_one_thread(tmp_path):
    """The per-layer pass's concurrent families give the serial numbers and warnings, in the same order."""
    from geomlib.analyses.weights.compute import pass_workers
    from geomlib.model.checkpoint import open_model
    from tests.factories.hf import make_checkpoint

    path, _ = make_checkpoint(tmp_path, "qwen3", n_layers=4)
    with open_model(str(path)) as ck:
        assert pass_workers(ck, 2) == 2 and pass_workers(ck, 1) == 1
    runs = {}
    for t in (1, 2):
        runs[t] = geomlib.compute(str(path), "weights", tmp_path / f"c{t}", progress=False, threads=t,
                                  weights={"null_draws": 3, "scrambled_null": True})
    one, two = runs[1], runs[2]
    assert one.attrs["weights_threads"] == 1 and two.attrs["weights_threads"] == 2
    for v in one.data_vars:
        np.testing.assert_array_equal(one[v].values, two[v].values, err_msg=v)
    assert one.attrs.get("warnings") == two.attrs.get("warnings")


def test_heads_on_two_threads_equals_one_thread(tmp_path):
    """Per-head spectra and operator Grams computed a layer (pair) per worker: the serial numbers exactly."""
    from tests.factories.hf import make_checkpoint

    path, _ = make_checkpoint(tmp_path, "qwen3", n_layers=4)
    runs = [geomlib.compute(str(path), "heads", tmp_path / f"c{t}", progress=False, threads=t,
                            heads={"forward_pass": False, "null_draws": 4}) for t in (1, 2)]
    assert [r.attrs["heads_threads"] for r in runs] == [1, 2]
    for v in runs[0].data_vars:
        np.testing.assert_array_equal(runs[0][v].values, runs[1][v].values, err_msg=v)
