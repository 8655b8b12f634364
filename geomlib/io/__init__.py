"""File formats and model sources: safetensors, GGUF, HF hub/cache, bundled demos.

Nothing here knows about architectures; :mod:`geomlib.arch` maps tensor names
to families.
"""

from .demo import DEFAULT_DEMO, DEMOS, demo_path
from .gguf_store import GGUF_ARCHS, GGUFStore
from .hub import open_hub
from .safetensors_store import SafetensorsStore
from .source import Opened, open_source
from .store import TensorInfo, TensorStore

__all__ = [
    "DEFAULT_DEMO",
    "DEMOS",
    "GGUF_ARCHS",
    "GGUFStore",
    "Opened",
    "SafetensorsStore",
    "TensorInfo",
    "TensorStore",
    "demo_path",
    "open_hub",
    "open_source",
]
