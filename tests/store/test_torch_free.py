"""Reading results needs no torch: ``import geomlib; geomlib.load(...)`` on the committed demo cache."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import sys
import geomlib
ds = geomlib.load("demo:smollm2-135m", cache_dir=sys.argv[1])
assert {"weights", "heads"} <= set(ds.attrs["analyses"].split(","))
assert ds.head_cos.sel(operator="ov").dims == ("layer", "layer_b", "head")
from geomlib.analyses import names, report
report.render(ds)
heavy = sorted(m for m in ("torch", "transformers", "safetensors", "gguf") if m in sys.modules)
print("HEAVY", ",".join(heavy))
"""


def test_load_and_report_import_no_torch():
    out = subprocess.run([sys.executable, "-c", PROBE, str(ROOT / "cache")], capture_output=True, text=True,
                         cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "HEAVY", out.stdout
