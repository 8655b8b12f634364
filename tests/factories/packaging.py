"""What the project's wheel carries besides Python files: the package-data globs of pyproject.toml."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def package_data(package: str = "geomlib") -> list[str]:
    """The globs ``[tool.setuptools.package-data]`` lists for ``package`` (a wheel carries only those non-Python
    files).  Read as text: tomllib is Python 3.11+, and the project supports 3.10."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    section = text.split("[tool.setuptools.package-data]", 1)[1].split("\n[", 1)[0]
    found = re.search(rf"^{re.escape(package)}\s*=\s*(\[[^\]]*\])", section, flags=re.MULTILINE)
    assert found, f"no package-data entry for {package} in pyproject.toml"
    return list(ast.literal_eval(found.group(1)))


def carried(relative: str, package: str = "geomlib") -> bool:
    """Whether a file at ``relative`` inside ``package`` matches one of its package-data globs."""
    return any(Path(relative).match(glob) for glob in package_data(package))
