"""Which Python packages PSMADosePredict still needs in this Python, found without importing them.

3D Slicer 5.10 ships numpy, scipy, SimpleITK, pydicom and pillow but not scikit-learn, pandas, matplotlib,
jsonschema, slicerio, skops or icrp107-database, which the core needs. ``Resources/requirements.txt`` pins
the versions the bundled model was built and tested with. This module compares it with the distributions
installed (``importlib.metadata``: nothing is imported, so a broken or half-installed package cannot crash
the module) and prepares the pip arguments; the module asks the user once and runs ``slicer.util.pip_install``.

It imports only the standard library and ``packaging`` (shipped with Slicer and with pip); never psmadose,
slicer, vtk or qt, so the module can report what is missing before anything else can be imported.
"""

from __future__ import annotations

import importlib.metadata
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

try:
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name
    from packaging.version import InvalidVersion, Version
except ImportError:  # a Python without the standalone packaging distribution still has pip's copy
    from pip._vendor.packaging.requirements import InvalidRequirement, Requirement
    from pip._vendor.packaging.utils import canonicalize_name
    from pip._vendor.packaging.version import InvalidVersion, Version

MODULE_DIR = Path(__file__).resolve().parents[1]
REQUIREMENTS_FILE = MODULE_DIR / "Resources" / "requirements.txt"

# Shipped by Slicer itself and used by its own modules (DICOM, Segment Editor, ...): never installed, upgraded or
# downgraded by this module. Their installed versions are passed to pip as constraints, so installing the
# requirements cannot change them either (pip then fails with a message instead of breaking Slicer).
SLICER_PROVIDED = ("numpy", "scipy", "SimpleITK", "pydicom", "pillow")


@dataclass(frozen=True)
class MissingRequirement:
    """A line of requirements.txt that this Python does not satisfy."""

    requirement: str  # as written in requirements.txt, e.g. "scikit-learn==1.9.1"
    name: str  # distribution name as written, e.g. "scikit-learn"
    installedVersion: str | None  # None: not installed

    def describe(self) -> str:
        wanted = self.requirement[len(self.name):].strip() or "any version"
        if self.installedVersion is None:
            return f"{self.name} {wanted} (not installed)"
        return f"{self.name} {wanted} (version {self.installedVersion} is installed)"


def readRequirements(path: str | Path = REQUIREMENTS_FILE) -> list[Requirement]:
    """Requirements of a requirements.txt (comments and blank lines skipped; options are not supported)."""
    path = Path(path)
    requirements = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            requirements.append(Requirement(line))
        except InvalidRequirement as exc:
            raise ValueError(f"{path}, line {number}: {line!r} is not a requirement ({exc})") from None
    return requirements


def installedVersions(distributions: Iterable | None = None) -> dict[str, str]:
    """Installed distribution versions by canonical name (PEP 503), read from metadata without importing.

    The first distribution found on ``sys.path`` wins, as for imports.
    """
    versions: dict[str, str] = {}
    for dist in distributions if distributions is not None else importlib.metadata.distributions():
        name = dist.metadata["Name"] if dist.metadata else None
        if name:
            versions.setdefault(canonicalize_name(name), dist.version)
    return versions


def missingRequirements(requirements: Iterable[Requirement],
                        installed: Mapping[str, str]) -> list[MissingRequirement]:
    """The requirements not met by ``installed`` (canonical name -> version), in file order.

    A requirement whose environment marker does not apply here is ignored. A package Slicer provides is never
    reported as installable: if one is missing or too old, ``slicerProvidedProblems`` says so.
    """
    slicerProvided = {canonicalize_name(n) for n in SLICER_PROVIDED}
    missing = []
    for requirement in requirements:
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        key = canonicalize_name(requirement.name)
        if key in slicerProvided:
            continue
        version = installed.get(key)
        if version is None or (requirement.specifier and not requirement.specifier.contains(version,
                                                                                           prereleases=True)):
            missing.append(MissingRequirement(str(requirement), requirement.name, version))
    return missing


def slicerProvidedProblems(installed: Mapping[str, str]) -> list[str]:
    """Packages Slicer should provide but this Python lacks (not fixed here: they belong to Slicer)."""
    return [f"{name} is not installed; it comes with 3D Slicer — reinstall Slicer"
            for name in SLICER_PROVIDED if canonicalize_name(name) not in installed]


def checkRequirements(path: str | Path = REQUIREMENTS_FILE,
                      installed: Mapping[str, str] | None = None) -> list[MissingRequirement]:
    """What ``pip_install`` still has to install for the module to work (empty: nothing)."""
    return missingRequirements(readRequirements(path), installed if installed is not None else installedVersions())


def constraintLines(installed: Mapping[str, str]) -> list[str]:
    """pip constraints pinning the packages Slicer provides to their installed versions.

    A version that is not PEP 440 (possible for a package Slicer builds itself) is left out: pip would reject the
    whole constraints file. None of the requirements depends on such a package (SimpleITK, pydicom).
    """
    lines = []
    for name in SLICER_PROVIDED:
        version = installed.get(canonicalize_name(name))
        if version is None:
            continue
        try:
            Version(version)
        except InvalidVersion:
            continue
        lines.append(f"{name}=={version}")
    return lines


def pipArguments(missing: MissingRequirement, constraintsFile: str | Path) -> list[str]:
    """Arguments of one ``slicer.util.pip_install`` call (a list: paths with spaces stay one argument)."""
    return [missing.requirement, "-c", str(constraintsFile)]


def missingReport(missing: Iterable[MissingRequirement]) -> str:
    """Plain-text list for the panel and the confirmation dialog."""
    return "\n".join(f"  - {m.describe()}" for m in missing)


def preferBundledPackages(moduleDir: str | Path = MODULE_DIR, path: list[str] | None = None) -> None:
    """Put the module folder first on ``sys.path`` so the bundled psmadose wins over a pip-installed one.

    Slicer *appends* each module folder to ``sys.path`` (qSlicerCorePythonManager::appendPythonPath), behind
    site-packages, where ``pip install psmadose`` puts another copy (possibly another version, with another
    model). The module and its model card must come from the same folder.
    """
    path = sys.path if path is None else path
    folder = os.path.normcase(os.path.abspath(str(moduleDir)))
    for entry in [p for p in path if p and os.path.normcase(os.path.abspath(p)) == folder]:
        path.remove(entry)
    path.insert(0, str(moduleDir))


def foreignCoreProblem(moduleDir: str | Path = MODULE_DIR, modules: Mapping | None = None) -> str | None:
    """A message when ``psmadose`` was already imported from elsewhere (e.g. by another extension), else None."""
    modules = sys.modules if modules is None else modules
    module = modules.get("psmadose")
    origin = getattr(module, "__file__", None) if module is not None else None
    if not origin:
        return None
    bundled = Path(moduleDir).resolve() / "psmadose"
    if Path(origin).resolve().parent != bundled:
        return (f"psmadose was already imported from {Path(origin).parent}, not from this module ({bundled}); "
                "restart Slicer so that the module's own copy is used")
    return None


def forgetModules(prefixes: Iterable[str] = ("psmadose", "PSMADosePredictLib"),
                  modules: dict | None = None) -> list[str]:
    """Drop packages from ``sys.modules`` so that the next import re-reads their source (module Reload)."""
    modules = sys.modules if modules is None else modules
    prefixes = tuple(prefixes)
    names = [n for n in list(modules) if any(n == p or n.startswith(p + ".") for p in prefixes)]
    for name in names:
        del modules[name]
    return sorted(names)
