"""Installed package versions, asked of the package metadata in one place (no import of the package).

The export records them in quantization.json, the GPU setup checks for CUDA wheels, the runtime
names its TFLite interpreter's version and the Space deploy pins its requirements with them.
Standard library only.
"""

from __future__ import annotations

import importlib.metadata
import platform
from collections.abc import Iterable


def package_version(distribution: str) -> str | None:
    """The installed version of a pip distribution ("numpy" -> "1.26.4"), or None when it is not installed."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def package_versions(distributions: Iterable[str], *, python: bool = True) -> dict[str, str]:
    """{distribution: version} of those installed, in the order given (Python's own first with `python`)."""
    versions = {"python": platform.python_version()} if python else {}
    for distribution in distributions:
        version = package_version(distribution)
        if version is not None:
            versions[distribution] = version
    return versions
