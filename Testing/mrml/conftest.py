"""Slicer's MRML layer for real, without Qt, through the PyPI package slicer-core.

What Slicer's application does at start-up (qSlicerCoreApplication + qSlicerAbstractCoreModule::logic()),
reproduced by hand because slicer-core has no module manager:

- one ``vtkSlicerApplicationLogic`` with a home/share directory (``vtkSlicerColorLogic`` logs an ERROR
  when the home directory is unset; it looks for ``<home>/<share>/ColorFiles``);
- one ``vtkMRMLScene`` given to the application logic;
- the Colors, Volumes, Segmentations and SubjectHierarchy module logics, each given the application
  logic *before* the scene (as ``qSlicerAbstractCoreModule::logic()`` does; some logics use the
  application logic while registering their nodes) and registered with ``SetModuleLogic``. The
  application logic only keeps weak references: the logics must be kept alive here, otherwise
  ``GetModuleLogic`` returns None and the colour logic removes its default colour nodes;
- ``SetColorLogic`` with the Colors module logic (as ``qSlicerColorsModule::setup()`` does);
- ``slicer.mrmlScene`` and a minimal ``slicer.modules.<name>.logic()`` so that ``slicer.util`` helpers
  (``getNode``, ``addVolumeFromArray``, ``arrayFromSegmentBinaryLabelmap``...) work.

VTK reports errors through its output window instead of raising; a ``vtkStringOutputWindow`` collects
them and the ``mrml_scene`` fixture fails a test that made VTK log an ERROR unless the test declared
it (``vtk_log.expect_errors()``).
"""

from __future__ import annotations

import types

import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")
vtk = pytest.importorskip("vtk")

MODULE_LOGIC_CLASSES = {
    "Colors": "vtkSlicerColorLogic",
    "Volumes": "vtkSlicerVolumesLogic",
    "Segmentations": "vtkSlicerSegmentationsModuleLogic",
    "SubjectHierarchy": "vtkSlicerSubjectHierarchyModuleLogic",
}


class VTKLog:
    """VTK messages (errors, warnings) collected by a vtkStringOutputWindow."""

    def __init__(self):
        self.window = vtk.vtkStringOutputWindow()
        self._start = 0
        self.errors_expected = False

    def mark(self) -> None:
        """Start a new section (the string window cannot be cleared, so remember an offset)."""
        self._start = len(self.window.GetOutput() or "")
        self.errors_expected = False

    def text(self) -> str:
        return (self.window.GetOutput() or "")[self._start:]

    def errors(self) -> list[str]:
        return [block.strip() for block in self.text().split("ERROR: ")[1:]]

    def expect_errors(self) -> None:
        self.errors_expected = True


class MRMLApp:
    """Application logic, scene and module logics, kept alive for the whole session."""

    def __init__(self, home_directory: str):
        self.app_logic = slicer.vtkSlicerApplicationLogic()
        self.app_logic.SetHomeDirectory(home_directory)
        self.app_logic.SetShareDirectory("share")
        self.scene = slicer.vtkMRMLScene()
        self.app_logic.SetMRMLScene(self.scene)
        self.logics = {}
        for name, class_name in MODULE_LOGIC_CLASSES.items():
            logic = getattr(slicer, class_name)()
            logic.SetMRMLApplicationLogic(self.app_logic)  # application logic before scene
            logic.SetMRMLScene(self.scene)
            self.app_logic.SetModuleLogic(name, logic)
            self.logics[name] = logic  # the application logic holds weak references only
        self.app_logic.SetColorLogic(self.logics["Colors"])

    def logic(self, name: str):
        return self.logics[name]


@pytest.fixture(scope="session")
def vtk_log():
    log = VTKLog()
    previous = vtk.vtkOutputWindow.GetInstance()
    vtk.vtkOutputWindow.SetInstance(log.window)
    yield log
    vtk.vtkOutputWindow.SetInstance(previous)


@pytest.fixture(scope="session")
def mrml_app(tmp_path_factory, vtk_log):
    home = tmp_path_factory.mktemp("slicer_home")
    (home / "share" / "ColorFiles").mkdir(parents=True)
    vtk_log.mark()
    app = MRMLApp(str(home))
    if vtk_log.errors():
        pytest.fail("VTK logged errors while setting up the MRML layer:\n" + "\n".join(vtk_log.errors()))

    saved = {name: getattr(slicer, name) for name in ("mrmlScene", "modules") if hasattr(slicer, name)}
    slicer.mrmlScene = app.scene
    if "modules" not in saved:  # only slicer-core: a real Slicer has its own slicer.modules
        slicer.modules = types.SimpleNamespace(**{
            name.lower(): types.SimpleNamespace(logic=(lambda logic=logic: logic))
            for name, logic in app.logics.items()})
    yield app
    for name in ("mrmlScene", "modules"):
        if name in saved:
            setattr(slicer, name, saved[name])
        elif hasattr(slicer, name):
            delattr(slicer, name)
    app.scene.Clear(1)


@pytest.fixture
def mrml_scene(mrml_app, vtk_log):
    """The session's scene, cleared after each test; fails the test if VTK logged an unexpected ERROR."""
    scene = mrml_app.scene
    assert scene.GetNumberOfNodesByClass("vtkMRMLDisplayableNode") == 0, "scene was not cleared"
    vtk_log.mark()
    yield scene
    errors = vtk_log.errors()
    expected = vtk_log.errors_expected
    scene.Clear(0)  # removes all but singleton nodes (selection, interaction, subject hierarchy, colours)
    vtk_log.mark()
    if errors and not expected:
        pytest.fail("VTK logged errors during the test:\n" + "\n".join(errors))
