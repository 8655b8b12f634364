"""Peak memory of ``compute`` does not grow with depth (read a layer, reduce it, drop it)."""

from __future__ import annotations

import json
import subprocess
import sys

import torch

from tests.factories import synthetic

# VmHWM/VmRSS of this process's own address space: unlike ru_maxrss, which Linux carries
# across fork+exec and would include the parent's (pytest's) resident size.
PROBE = r"""
import json, sys
import geomlib, netCDF4, torch, xarray
import geomlib.analyses.weights.compute
path, cache = sys.argv[1], sys.argv[2]
geomlib.open_model(path).layer(0)  # imports and first-touch allocations belong to the baseline
def status(key):
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(key + ":"))  # KiB
base = status("VmRSS")
geomlib.compute(path, analyses=['weights'], cache_dir=cache, progress=False,
                weights={'null_draws': 2, 'block_mib': 4})
print(json.dumps({"base": base, "peak": status("VmHWM")}))
"""


def _growth_mib(path, cache) -> float:
    out = subprocess.run([sys.executable, "-c", PROBE, str(path), str(cache)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout.strip().splitlines()[-1])
    return (r["peak"] - r["base"]) / 1024


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
