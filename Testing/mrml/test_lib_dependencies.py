"""The dependency check of the module (PSMADosePredictLib.dependencies): pure logic on given installed versions,
the real requirements file against the lock file and the bundled model card, and sys.path / sys.modules helpers."""

from __future__ import annotations

import json
import types
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from PSMADosePredictLib import dependencies
from PSMADosePredictLib.dependencies import (
    SLICER_PROVIDED,
    checkRequirements,
    constraintLines,
    foreignCoreProblem,
    forgetModules,
    missingRequirements,
    pipArguments,
    preferBundledPackages,
    readRequirements,
)

pytestmark = pytest.mark.mrml

REPO = Path(__file__).resolve().parents[2]
SLICER_5_10 = {"numpy": "2.2.6", "scipy": "1.15.3", "simpleitk": "2.5.0", "pydicom": "2.4.4", "pillow": "11.1.0",
               "packaging": "24.2", "requests": "2.32.3"}


def test_stock_slicer_misses_exactly_the_core_packages():
    missing = checkRequirements(installed=SLICER_5_10)
    assert [m.name for m in missing] == ["scikit-learn", "skops", "jsonschema", "matplotlib", "pandas", "slicerio",
                                         "icrp107-database"]
    assert missing[0].describe() == "scikit-learn ==1.9.1 (not installed)"


def test_versions_names_markers_and_slicer_packages(tmp_path):
    path = tmp_path / "requirements.txt"
    path.write_text("# comment\nScikit_Learn==1.9.1  # pinned\npandas>=2.0\nwinonly==1.0; sys_platform == 'nt_x'\n"
                    "numpy==99.0\n\n", encoding="utf-8")
    requirements = readRequirements(path)
    assert [r.name for r in requirements] == ["Scikit_Learn", "pandas", "winonly", "numpy"]
    installed = {"scikit-learn": "1.5.0", "pandas": "3.1.1", "numpy": "1.26.4"}
    missing = missingRequirements(requirements, installed)
    # wrong version reported; satisfied range, inapplicable marker and Slicer's numpy (even too old) skipped
    assert [(m.name, m.installedVersion) for m in missing] == [("Scikit_Learn", "1.5.0")]
    assert "version 1.5.0 is installed" in missing[0].describe()
    path.write_text("==1.0 scikit-learn\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 1"):
        readRequirements(path)


def test_everything_installed_means_nothing_to_install():
    installed = dict(SLICER_5_10)
    for requirement in readRequirements():
        installed[requirement.name.lower()] = str(next(iter(requirement.specifier)).version)
    assert checkRequirements(installed=installed) == []


def test_requirements_are_the_lock_files_versions_and_the_bundled_models():
    lock = {}
    for line in (REPO / "requirements-lock.txt").read_text(encoding="utf-8").splitlines():
        if "==" in line:
            name, version = line.split("==")
            lock[name.strip().lower()] = version.strip()
    card = json.loads(next((REPO / "PSMADosePredict" / "psmadose" / "models").glob("*/model_card.json"))
                      .read_text(encoding="utf-8"))
    built_with = {k.lower(): v for k, v in card["library_versions"].items()}
    for requirement in readRequirements():
        (spec,) = requirement.specifier
        assert spec.operator == "==", f"{requirement} is not pinned"
        assert lock[requirement.name.lower()] == spec.version, requirement
        if requirement.name.lower() in built_with:
            assert built_with[requirement.name.lower()] == spec.version, requirement
    names = {r.name.lower() for r in readRequirements()}
    assert {"scikit-learn", "skops"} <= names  # the model file needs them
    assert not names & {n.lower() for n in SLICER_PROVIDED}  # Slicer's packages are never installed
    assert "highdicom" not in names  # would replace Slicer's pydicom 2.4 with pydicom 3


def test_pip_gets_slicer_packages_as_constraints(tmp_path):
    assert constraintLines(SLICER_5_10) == ["numpy==2.2.6", "scipy==1.15.3", "SimpleITK==2.5.0",
                                            "pydicom==2.4.4", "pillow==11.1.0"]
    assert constraintLines(dict(SLICER_5_10, simpleitk="2.4.0-g5d51a")) == [
        "numpy==2.2.6", "scipy==1.15.3", "pydicom==2.4.4", "pillow==11.1.0"]  # not PEP 440: pip would refuse
    missing = checkRequirements(installed=SLICER_5_10)
    constraints = tmp_path / "with space" / "c.txt"
    assert pipArguments(missing[0], constraints) == ["scikit-learn==1.9.1", "-c", str(constraints)]
    Requirement(pipArguments(missing[0], constraints)[0])  # a valid requirement string


def test_bundled_core_goes_first_on_sys_path(tmp_path):
    module = tmp_path / "PSMADosePredict"
    path = ["/site-packages", str(module), "/other", str(module) + "/"]
    preferBundledPackages(module, path)
    assert path == [str(module), "/site-packages", "/other"]


def test_foreign_core_is_reported(tmp_path):
    module = tmp_path / "PSMADosePredict"
    (module / "psmadose").mkdir(parents=True)
    ours = types.SimpleNamespace(__file__=str(module / "psmadose" / "__init__.py"))
    theirs = types.SimpleNamespace(__file__=str(tmp_path / "site-packages" / "psmadose" / "__init__.py"))
    assert foreignCoreProblem(module, {"psmadose": ours}) is None
    assert foreignCoreProblem(module, {}) is None
    assert "restart Slicer" in foreignCoreProblem(module, {"psmadose": theirs})


def test_reload_forgets_lib_and_core_modules():
    modules = {"psmadose": 1, "psmadose.predict": 2, "psmadoseX": 3, "PSMADosePredictLib.logic": 4, "numpy": 5}
    assert forgetModules(("psmadose", "PSMADosePredictLib"), modules) == ["PSMADosePredictLib.logic", "psmadose",
                                                                          "psmadose.predict"]
    assert modules == {"psmadoseX": 3, "numpy": 5}


def test_requirements_file_is_packaged_with_the_module():
    assert dependencies.REQUIREMENTS_FILE == REPO / "PSMADosePredict" / "Resources" / "requirements.txt"
    cmake = (REPO / "PSMADosePredict" / "CMakeLists.txt").read_text(encoding="utf-8")
    assert "Resources/requirements.txt" in cmake and "Resources/SampleData/*.json" in cmake
