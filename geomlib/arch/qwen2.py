"""Qwen2 / Qwen2.5: Llama's layout with q/k/v biases (read with ``Checkpoint.biases``)."""

from .base import Adapter, llama_plan

ADAPTER = Adapter(name="qwen2", model_types=("qwen2",), layer_root="layers.{L}", plan=llama_plan())
