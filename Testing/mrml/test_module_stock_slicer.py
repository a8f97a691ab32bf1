"""The module in a Python that has only what a stock 3D Slicer 5.10 ships: it loads and says what is missing.

How the environment is made (issue 14, finding 1). A child Python is started with ``-S`` (no site-packages, no
``.pth`` files, so not even the editable psmadose install of the development venv) and a ``PYTHONPATH`` of:

1. a folder of symbolic links to the distributions Slicer 5.10 bundles that are installed in this venv — numpy,
   scipy, SimpleITK, pydicom, pillow, packaging, requests and its dependencies, six — plus slicer-core and vtk
   (Slicer's MRML); each link covers the files the distribution's RECORD lists, dist-info included, so
   ``importlib.metadata`` sees exactly these distributions and nothing else. scikit-learn, pandas, matplotlib,
   jsonschema, slicerio, skops, highdicom, icrp107-database and radioactivedecay are really absent: the test
   checks that none of them can be found, rather than blocking their import with a hook;
2. the module folder (as Slicer's module path);
3. stand-ins for the four GUI-only modules the module file imports and slicer-core does not have, because they
   need PythonQt: ``qt``, ``slicer.i18n``, ``slicer.parameterNodeWrapper`` and ``slicer.ScriptedLoadableModule``
   (a few lines each, written below; they do nothing but let the file be imported). Everything else — the module
   file, PSMADosePredictLib, ``slicer``/MRML from slicer-core, importlib.metadata — is the real code.

The child imports the real ``PSMADosePredict.py`` and its Lib, asks the module what is missing, creates the module
object, and loads the Sample Data recipe through the module's file reader in testing mode (which must refuse
cleanly, with one logged line, instead of raising). It must import nothing of the core's dependencies, and a
``psmadose`` placed in site-packages (as a pip install would; Slicer appends module folders behind site-packages)
must not shadow the module's own.

Not covered here (needs Slicer's GUI): the widget's dependency panel and Install button, the confirmation dialog,
and ``slicer.util.pip_install`` itself (docs/SLICER.md).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = [pytest.mark.mrml, pytest.mark.process]

MODULE_DIR = Path(__file__).resolve().parents[2] / "PSMADosePredict"
SLICER_BUNDLED = ("numpy", "scipy", "SimpleITK", "pydicom", "pillow", "packaging", "requests", "urllib3", "idna",
                  "certifi", "charset-normalizer", "six")
SLICER_CORE = ("slicer-core", "vtk")
NOT_IN_SLICER = ("sklearn", "pandas", "matplotlib", "jsonschema", "slicerio", "skops", "highdicom",
                 "icrp107_database", "radioactivedecay")
EXPECTED_MISSING = ["scikit-learn", "skops", "jsonschema", "matplotlib", "pandas", "slicerio", "icrp107-database"]

STAND_INS = {
    "qt.py": '"""Stand-in for PythonQt\'s qt module (GUI only; not in slicer-core)."""\n',
    "slicer/i18n.py": textwrap.dedent('''\
        """Stand-in for slicer.i18n (needs Qt): no translation."""


        def tr(text):
            return text


        def translate(context, text):
            return text
        '''),
    "slicer/parameterNodeWrapper.py": textwrap.dedent('''\
        """Stand-in for slicer.parameterNodeWrapper (needs Qt): the decorator returns the class as it is."""


        def parameterNodeWrapper(classtype):
            return classtype


        class Choice:
            def __init__(self, choices):
                self.choices = choices


        class WithinRange:
            def __init__(self, minimum, maximum):
                self.minimum, self.maximum = minimum, maximum
        '''),
    "slicer/ScriptedLoadableModule.py": textwrap.dedent('''\
        """Stand-in for slicer.ScriptedLoadableModule (needs Qt): base classes that only keep their parent."""


        class ScriptedLoadableModule:
            def __init__(self, parent):
                self.parent = parent


        class ScriptedLoadableModuleLogic:
            def __init__(self, parent=None):
                pass


        class ScriptedLoadableModuleWidget:
            def __init__(self, parent=None):
                self.parent = parent


        class ScriptedLoadableModuleTest:
            pass
        '''),
}

CHILD = textwrap.dedent('''\
    import importlib.util, json, logging, sys, types
    records = []
    logging.basicConfig(level=logging.INFO)
    logging.getLogger().addHandler(type("H", (logging.Handler,), {"emit": lambda self, r: records.append(r)})())
    result = {"notInSlicer": {m: importlib.util.find_spec(m) is not None for m in NOT_IN_SLICER}}

    import slicer
    slicer.app = types.SimpleNamespace(connect=lambda *args: None, testingEnabled=lambda: True)

    from PSMADosePredictLib import dependencies
    result["libMissing"] = [m.name for m in dependencies.checkRequirements()]

    spec = importlib.util.spec_from_file_location("PSMADosePredict", MODULE_FILE)
    module = importlib.util.module_from_spec(spec)
    sys.modules["PSMADosePredict"] = module
    spec.loader.exec_module(module)
    missing = module.missingDependencies()
    result["moduleMissing"] = [m.name for m in missing]
    result["message"] = module.dependencyMessage(missing)
    parent = types.SimpleNamespace()
    module.PSMADosePredict(parent)
    result["title"], result["categories"], result["contributors"] = parent.title, parent.categories, parent.contributors
    result["sysPath0"] = sys.path[0]

    reader = module.PSMADosePredictFileReader(types.SimpleNamespace(loadedNodes=[]))
    result["canLoad"] = reader.canLoadFile(module.VIRTUAL_PATIENT_RECIPE)
    result["readerLoaded"] = reader.load({"fileName": module.VIRTUAL_PATIENT_RECIPE})
    result["errors"] = [r.getMessage() for r in records if r.levelno >= logging.ERROR]
    heavy = {"psmadose", "sklearn", "pandas", "matplotlib", "jsonschema", "skops", "slicerio"}
    result["imported"] = sorted({m.split(".")[0] for m in sys.modules} & heavy)
    import psmadose  # its __init__ needs no third-party package
    result["psmadoseFile"] = psmadose.__file__
    print("RESULT " + json.dumps(result))
    ''')


def link_distribution(name: str, site: Path) -> None:
    dist = importlib.metadata.distribution(name)
    tops = {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
    for top in sorted(tops - {"__pycache__"}):
        target = Path(dist.locate_file(top))
        if target.exists() and not (site / top).exists():
            (site / top).symlink_to(target, target_is_directory=target.is_dir())


@pytest.fixture(scope="module")
def stock_slicer_python(tmp_path_factory):
    root = tmp_path_factory.mktemp("stock-slicer")
    site, standIns = root / "site-packages", root / "gui-stand-ins"
    site.mkdir()
    # Another psmadose in site-packages (as after "pip install psmadose"), which Slicer puts before module folders.
    (site / "psmadose").mkdir()
    (site / "psmadose" / "__init__.py").write_text('"""A pip-installed psmadose that must not be used."""\n')
    for name in SLICER_BUNDLED + SLICER_CORE:
        link_distribution(name, site)
    for relative, text in STAND_INS.items():
        (standIns / relative).parent.mkdir(parents=True, exist_ok=True)
        (standIns / relative).write_text(text, encoding="utf-8")
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
    env.update(PYTHONPATH=os.pathsep.join([str(site), str(MODULE_DIR), str(standIns)]), PYTHONNOUSERSITE="1",
               OMP_NUM_THREADS="1")
    return env


def run_child(env) -> dict:
    script = f"NOT_IN_SLICER = {NOT_IN_SLICER!r}\nMODULE_FILE = {str(MODULE_DIR / 'PSMADosePredict.py')!r}\n" + CHILD
    done = subprocess.run([sys.executable, "-S", "-c", script], env=env, capture_output=True, text=True,
                          timeout=300)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, f"child failed:\n{done.stdout}\n{done.stderr}"
    return json.loads(lines[-1][len("RESULT "):])


def test_module_loads_and_reports_what_is_missing(stock_slicer_python):
    result = run_child(stock_slicer_python)
    assert result["notInSlicer"] == {m: False for m in NOT_IN_SLICER}, "the environment is not a stock Slicer"
    assert result["libMissing"] == EXPECTED_MISSING
    assert result["moduleMissing"] == EXPECTED_MISSING
    for name in EXPECTED_MISSING:
        assert name in result["message"]
    assert "numpy, scipy, SimpleITK, pydicom and pillow are left as they are" in result["message"]
    assert result["title"] == "PSMA Dose Predict" and result["categories"] == ["Nuclear Medicine"]
    assert all("(" in c and c.endswith(")") for c in result["contributors"])  # "Name (Organization)"
    assert Path(result["sysPath0"]) == MODULE_DIR  # the bundled psmadose comes first...
    assert Path(result["psmadoseFile"]) == MODULE_DIR / "psmadose" / "__init__.py"  # ...over a pip-installed one
    assert result["imported"] == []  # nothing of the core or its dependencies was imported

    # Sample Data's loader refuses cleanly without the packages: one logged line, no exception.
    assert result["canLoad"] is True and result["readerLoaded"] is False
    assert len(result["errors"]) == 1 and "Python packages it needs are not installed" in result["errors"][0]


def test_batch_script_says_what_to_install(stock_slicer_python, tmp_path):
    """The headless batch script in the same stock-Slicer Python: exit 2 and one line, no traceback."""
    done = subprocess.run([sys.executable, "-S", str(MODULE_DIR / "PSMADosePredictLib" / "batch_cli.py"),
                           "--cases", str(tmp_path), "--out", str(tmp_path / "out")],
                          env=stock_slicer_python, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: missing Python packages scikit-learn==1.9.1")
    assert "requirements.txt" in lines[0] and not (tmp_path / "out").exists()
