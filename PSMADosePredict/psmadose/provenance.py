"""Library versions for provenance, read from package metadata without importing the packages."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

LIBRARIES = ("numpy", "scipy", "scikit-learn", "pandas", "SimpleITK", "skops", "slicerio", "icrp107-database")


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in ("psmadose",) + LIBRARIES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "not installed"
    return versions
