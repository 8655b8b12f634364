"""Llama (and every GGUF of arch ``llama``): the reference pre-norm decoder layout."""

from .base import Adapter, llama_plan

ADAPTER = Adapter(name="llama", model_types=("llama",), layer_root="layers.{L}", plan=llama_plan())
