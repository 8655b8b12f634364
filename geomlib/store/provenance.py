"""The provenance every cached analysis carries in its ``attrs`` (netCDF-safe types only).

Torch-free: the versions come from the run context.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from .. import __version__

if TYPE_CHECKING:  # pragma: no cover
    from ..analyses.base import RunContext
    from ..analyses.params import Params
    from ..model.checkpoint import Checkpoint


def provenance(ckpt: "Checkpoint", analysis: str, params: "Params", ctx: "RunContext") -> dict:
    """Checkpoint facts and identity, versions, parameters, time, device, threads and the warnings in ``ctx``.

    ``threads`` is torch's thread count while the analysis ran (see :mod:`geomlib.threads`); it says how the
    numbers were computed, not what they are, so it is not part of the cache key.
    """
    from ..analyses import registry
    from ..threads import current_threads

    attrs = dict(ckpt.summary())
    attrs.update({
        "analysis": analysis,
        "schema_version": registry.get(analysis).schema_version,
        "geomlib_version": __version__,
        "torch_version": ctx.torch_version,
        "params": json.dumps(params.key_dict(), sort_keys=True),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": str(ctx.device),
        "threads": current_threads(),
        "warnings": "\n".join(ctx.warnings),
        "families_present": ",".join(ckpt.families),
        "not_computed": "\n".join(f"{part}: {why}" for part, why in ctx.skipped.items()),
    })
    if ckpt.quantization:
        attrs["quantization_note"] = (
            f"weights are stored quantized ({ckpt.quantization}); every metric includes quantization noise"
        )
    return attrs
