"""The provenance every cached analysis carries in its ``attrs`` (netCDF-safe types only)."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import torch

from .. import __version__
from ..checkpoint import Checkpoint


def provenance(ckpt: Checkpoint, analysis: str, schema_version: int, params, device: str,
               warnings: list[str]) -> dict:
    """Checkpoint facts and identity, versions, parameters, time, device and recorded warnings."""
    attrs = dict(ckpt.summary())
    attrs.update({
        "analysis": analysis,
        "schema_version": schema_version,
        "geomlib_version": __version__,
        "torch_version": torch.__version__.split("+")[0],
        "params": json.dumps(params.as_dict(), sort_keys=True),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": str(device),
        "warnings": "\n".join(warnings),
        "families_present": ",".join(ckpt.families),
    })
    if ckpt.quantization:
        attrs["quantization_note"] = (
            f"weights are stored quantized ({ckpt.quantization}); every metric includes quantization noise"
        )
    return attrs
