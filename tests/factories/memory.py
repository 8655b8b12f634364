"""Peak memory growth of one ``geomlib.compute`` call, measured in a fresh process.

VmHWM/VmRSS of the child's own address space: unlike ru_maxrss, which Linux carries across
fork+exec and would include the parent's (pytest's) resident size.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PROBE = r"""
import json, sys
import geomlib, netCDF4, torch, xarray
import geomlib.analyses.{analysis}.compute
path, cache = sys.argv[1], sys.argv[2]
geomlib.open_model(path).layer(0)  # imports and first-touch allocations belong to the baseline
def status(key):
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(key + ":"))  # KiB
base = status("VmRSS")
geomlib.compute(path, analyses=[{analysis!r}], cache_dir=cache, progress=False, {kwargs})
print(json.dumps({{"base": base, "peak": status("VmHWM")}}))
"""


def compute_growth_mib(path: Path, cache: Path, analysis: str, kwargs: str) -> float:
    """MiB the peak resident size of ``geomlib.compute(path, analyses=[analysis], ..., <kwargs>)`` rose above
    the baseline (imports and a first layer read); ``kwargs``: the call's further keywords, as source text."""
    code = PROBE.format(analysis=analysis, kwargs=kwargs)
    out = subprocess.run([sys.executable, "-c", code, str(path), str(cache)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout.strip().splitlines()[-1])
    return (r["peak"] - r["base"]) / 1024


def growth_with_depth(tmp_path: Path, analysis: str, kwargs: str, hidden: int, heads: int, kv: int,
                      inter: int) -> tuple[float, float, float]:
    """Peak growth (MiB) of the same compute on a 4-layer and a 16-layer bf16 synthetic model of one shape,
    and the size of one layer in float64 (MiB): what holding every layer would add per layer."""
    import torch

    from tests.factories import synthetic

    kw = dict(hidden=hidden, heads=heads, kv=kv, inter=inter, dtype=torch.bfloat16)
    shallow, _ = synthetic.build(tmp_path / "l4", 4, **kw)
    deep, _ = synthetic.build(tmp_path / "l16", 16, **kw)
    shapes = synthetic.shapes(synthetic.config(1, hidden, heads, kv, inter))
    layer_f64_mib = sum(torch.Size(s).numel() for s in shapes.values()) * 8 / 2**20
    g4 = compute_growth_mib(shallow, tmp_path / "c4", analysis, kwargs)
    g16 = compute_growth_mib(deep, tmp_path / "c16", analysis, kwargs)
    return g4, g16, layer_f64_mib
