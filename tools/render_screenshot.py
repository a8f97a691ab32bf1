"""Render the dose-coloured segmentation of a virtual patient offscreen with VTK (docs screenshot).

    python tools/render_screenshot.py [--case CASE_DIR] [--out PSMADosePredict/Resources/Screenshots/dose_overlay.png]

Without --case, the 'demo' virtual patient is simulated into a temporary folder (no download). Each segment
becomes a surface (vtkDiscreteFlyingEdges3D, smoothed) coloured by its predicted dose with the documented
colormap (psmadose.dose_colors), in front of a coronal PET MIP, viewed from anterior (patient's left on the
right). Uses an offscreen render window (EGL/OSMesa builds of VTK, or X if present).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import vtk
from psmadose.case import read_case
from psmadose.dose_colors import DOSE_COLOR_RANGE_GY_PER_GBQ, dose_to_rgb
from psmadose.modelfile import load_model
from psmadose.predict import REFERENCE_ORGAN_COLOR, predict_case
from psmadose.simulate.cohort import simulate_cohort
from vtk.util import numpy_support

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "PSMADosePredict" / "Resources" / "Screenshots" / "dose_overlay.png"


def image_from_kji(array: np.ndarray, spacing_ijk, vtk_type) -> vtk.vtkImageData:
    image = vtk.vtkImageData()
    image.SetDimensions(*array.shape[::-1])
    image.SetSpacing(*spacing_ijk)
    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(np.ascontiguousarray(array).ravel(), deep=True,
                                                               array_type=vtk_type))
    return image


def segment_actor(mask: np.ndarray, spacing_ijk, color) -> vtk.vtkActor:
    surface = vtk.vtkDiscreteFlyingEdges3D()
    surface.SetInputData(image_from_kji(mask.astype(np.uint8), spacing_ijk, vtk.VTK_UNSIGNED_CHAR))
    surface.SetValue(0, 1)
    smooth = vtk.vtkWindowedSincPolyDataFilter()
    smooth.SetInputConnection(surface.GetOutputPort())
    smooth.SetNumberOfIterations(15)
    smooth.SetPassBand(0.1)
    smooth.NormalizeCoordinatesOn()
    normals = vtk.vtkPolyDataNormals()
    normals.SetInputConnection(smooth.GetOutputPort())
    mapper = vtk.vtkPolyDataMapper()
    mapper.SetInputConnection(normals.GetOutputPort())
    mapper.ScalarVisibilityOff()
    actor = vtk.vtkActor()
    actor.SetMapper(mapper)
    actor.GetProperty().SetColor(*color)
    actor.GetProperty().SetSpecular(0.2)
    return actor


def mip_actor(pet: np.ndarray, spacing_ijk) -> vtk.vtkActor:
    """Coronal PET MIP (max over j, inverted grey) as a textured plane behind the body."""
    mip = pet.max(axis=1)  # (k, i)
    top = float(np.percentile(mip, 99.5))
    grey = (255 * (1 - np.clip(mip / top, 0, 1))).astype(np.uint8)
    texture_image = vtk.vtkImageData()
    texture_image.SetDimensions(mip.shape[1], mip.shape[0], 1)
    texture_image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(grey.ravel(), deep=True,
                                                                       array_type=vtk.VTK_UNSIGNED_CHAR))
    texture = vtk.vtkTexture()
    texture.SetInputData(texture_image)
    texture.InterpolateOn()
    size = np.array(pet.shape[::-1]) * np.array(spacing_ijk)
    plane = vtk.vtkPlaneSource()
    plane.SetOrigin(0, size[1], 0)
    plane.SetPoint1(size[0], size[1], 0)
    plane.SetPoint2(0, size[1], size[2])
    mapper = vtk.vtkPolyDataMapper()
    mapper.SetInputConnection(plane.GetOutputPort())
    actor = vtk.vtkActor()
    actor.SetMapper(mapper)
    actor.SetTexture(texture)
    actor.GetProperty().LightingOff()
    return actor


def scalar_bar() -> vtk.vtkScalarBarActor:
    low, high = DOSE_COLOR_RANGE_GY_PER_GBQ
    table = vtk.vtkLookupTable()
    table.SetScaleToLog10()
    table.SetRange(low, high)
    table.SetNumberOfTableValues(256)
    for index, dose in enumerate(np.geomspace(low, high, 256)):
        table.SetTableValue(index, *dose_to_rgb(float(dose)), 1.0)
    bar = vtk.vtkScalarBarActor()
    bar.SetLookupTable(table)
    bar.SetTitle("Gy/GBq")
    ticks = vtk.vtkDoubleArray()
    for tick in (0.1, 0.3, 1, 3, 10, 30):
        ticks.InsertNextValue(tick)
    bar.SetUseCustomLabels(True)
    bar.SetCustomLabels(ticks)
    bar.SetLabelFormat("%g")
    bar.SetPosition(0.86, 0.1)
    bar.SetWidth(0.1)
    bar.SetHeight(0.8)
    for prop in (bar.GetTitleTextProperty(), bar.GetLabelTextProperty()):
        prop.SetColor(0.1, 0.1, 0.1)
        prop.ItalicOff()
        prop.ShadowOff()
    return bar


def render(case_dir: Path, out: Path, size=(700, 900)) -> Path:
    case = read_case(case_dir)
    result = predict_case(case, load_model())
    doses = {p.segment: p.predicted_gy_per_gbq for p in result.predictions}
    spacing = tuple(case.pet.GetSpacing())
    renderer = vtk.vtkRenderer()
    renderer.SetBackground(1, 1, 1)
    renderer.AddViewProp(mip_actor(case.pet_array, spacing))
    for segment in case.segments:
        dose = doses.get(segment.name)
        renderer.AddActor(segment_actor(segment.mask, spacing,
                                        dose_to_rgb(dose) if dose is not None else REFERENCE_ORGAN_COLOR))
    renderer.AddViewProp(scalar_bar())
    text = vtk.vtkTextActor()
    text.SetInput("Predicted 177Lu-PSMA dose per segment (virtual patient; model not clinically validated)")
    text.GetTextProperty().SetColor(0.1, 0.1, 0.1)
    text.GetTextProperty().SetFontSize(14)
    text.SetPosition(10, 10)
    renderer.AddViewProp(text)
    window = vtk.vtkRenderWindow()
    window.SetOffScreenRendering(1)
    window.SetSize(*size)
    window.AddRenderer(renderer)
    camera = renderer.GetActiveCamera()
    # Anterior view: LPS index space, camera at -y looking +y, head up (+z): patient's left on the right.
    centre = np.array(case.pet_array.shape[::-1]) * np.array(spacing) / 2
    camera.SetFocalPoint(*centre)
    camera.SetPosition(centre[0], centre[1] - 2000, centre[2])
    camera.SetViewUp(0, 0, 1)
    renderer.ResetCamera()
    camera.Zoom(1.3)
    window.Render()
    grab = vtk.vtkWindowToImageFilter()
    grab.SetInput(window)
    grab.Update()
    writer = vtk.vtkPNGWriter()
    out.parent.mkdir(parents=True, exist_ok=True)
    writer.SetFileName(str(out))
    writer.SetInputConnection(grab.GetOutputPort())
    writer.Write()
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", type=Path, help="case folder (default: simulate the demo virtual patient)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    case_dir = args.case
    if case_dir is None:
        cohort = Path(tempfile.mkdtemp(prefix="psmadose-shot-")) / "cohort"
        simulate_cohort(cohort, "demo", workers=1)
        case_dir = cohort / "vp001"
    print(render(case_dir, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
