"""Mistral: Llama's module layout under its own model type."""

from .base import Adapter, llama_plan

ADAPTER = Adapter(name="mistral", model_types=("mistral",), layer_root="layers.{L}", plan=llama_plan())
