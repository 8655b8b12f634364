"""Architecture adapters keyed by the Hugging Face ``config.model_type``."""

from __future__ import annotations

from ..errors import UnsupportedArchitectureError
from . import bert, gemma, gpt2, gpt_neox, llama, mistral, mpnet, phi3, qwen2, qwen3
from .base import Adapter

_ALL: tuple[Adapter, ...] = (
    llama.ADAPTER,
    mistral.ADAPTER,
    qwen2.ADAPTER,
    qwen3.ADAPTER,
    *gemma.ADAPTERS,
    gpt2.ADAPTER,
    gpt_neox.ADAPTER,
    phi3.ADAPTER,
    bert.ADAPTER,
    mpnet.ADAPTER,
)

REGISTRY: dict[str, Adapter] = {mt: a for a in _ALL for mt in a.model_types}


def supported_model_types() -> list[str]:
    """Every ``model_type`` geomlib can read, sorted."""
    return sorted(REGISTRY)


def get_adapter(model_type: object, where: str = "the config") -> Adapter:
    """The adapter for ``model_type``.

    Raises
    ------
    UnsupportedArchitectureError
        With the list of supported model types.
    """
    try:
        return REGISTRY[model_type]  # type: ignore[index]
    except (KeyError, TypeError):
        raise UnsupportedArchitectureError(
            f"{where} has model_type {model_type!r}, which geomlib has no adapter for; "
            f"supported: {', '.join(supported_model_types())}"
        ) from None
