"""The dose colour legend is drawn by Slicer's own colour legend displayable manager, offscreen, on slicer-core.

vtkMRMLColorLegendDisplayableManager takes the colour node of the legend's *primary display node*; a
segmentation display node has none unless it is set, and then the legend actor stays hidden and VTK logs
"UpdateActor failed: No color node is set in primary display node" (issue 14, finding 4). The first test
reproduces that with the real displayable manager; the second checks that ``showDoseLegend`` makes the actor
visible and that the rendered slice view contains the legend's dose colours (pixels read back from the render
window). VTK's EGL fallback renders without a display.
"""

from __future__ import annotations

import numpy as np
import pytest
import slicer
import vtk
from psmadose.dose_colors import dose_to_rgb
from PSMADosePredictLib.results import (
    LEGEND_DOSES_GY_PER_GBQ,
    createDoseLegendColorNode,
    restoreOriginalColors,
    showDoseLegend,
)
from vtk.util import numpy_support

pytestmark = pytest.mark.mrml

WIDTH, HEIGHT = 400, 300


class SliceView:
    """A red slice view: slice node, offscreen render window and the slice-view displayable managers."""

    def __init__(self, mrml_app, scene):
        # Displayable managers start only once the scene has an interaction node (Slicer's layout creates it).
        if scene.GetFirstNodeByClass("vtkMRMLInteractionNode") is None:
            interaction = slicer.vtkMRMLInteractionNode()
            interaction.SetSingletonTag("Singleton")
            scene.AddNode(interaction)
        self.sliceNode = slicer.vtkMRMLSliceNode()
        self.sliceNode.SetName("Red")
        self.sliceNode.SetLayoutName("Red")
        self.sliceNode.SetSingletonTag("Red")  # kept when the scene is cleared between tests
        self.sliceNode.SetDimensions(WIDTH, HEIGHT, 1)
        scene.AddNode(self.sliceNode)
        self.window = vtk.vtkRenderWindow()
        self.window.SetOffScreenRendering(1)
        self.window.SetSize(WIDTH, HEIGHT)
        self.renderer = vtk.vtkRenderer()
        self.renderer.SetBackground(0, 0, 0)
        self.window.AddRenderer(self.renderer)
        self.interactor = vtk.vtkRenderWindowInteractor()
        self.interactor.SetRenderWindow(self.window)
        factory = slicer.vtkMRMLSliceViewDisplayableManagerFactory.GetInstance()
        factory.SetMRMLApplicationLogic(mrml_app.app_logic)
        if not factory.IsDisplayableManagerRegistered("vtkMRMLColorLegendDisplayableManager"):
            assert factory.RegisterDisplayableManager("vtkMRMLColorLegendDisplayableManager")
        self.group = factory.InstantiateDisplayableManagers(self.renderer)
        self.group.SetMRMLDisplayableNode(self.sliceNode)
        self.legendManager = self.group.GetDisplayableManagerByClassName("vtkMRMLColorLegendDisplayableManager")
        assert self.legendManager is not None

    def pixels(self) -> np.ndarray:
        self.window.Render()
        grabber = vtk.vtkWindowToImageFilter()
        grabber.SetInput(self.window)
        grabber.Update()
        return numpy_support.vtk_to_numpy(grabber.GetOutput().GetPointData().GetScalars())[:, :3].astype(float)

    def close(self):
        self.group.SetMRMLDisplayableNode(None)
        self.window.Finalize()


@pytest.fixture(scope="module")
def slice_view(mrml_app):
    # One view for the module: displayable managers created after a scene clear do not find the interaction node.
    view = SliceView(mrml_app, mrml_app.scene)
    yield view
    view.close()


def segmentation(scene):
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "doses")
    node.CreateDefaultDisplayNodes()
    node.GetSegmentation().AddEmptySegment("", "kidney_left", [0.2, 0.3, 0.4])
    return node


def test_slicer_hides_a_legend_whose_primary_display_node_has_no_color_node(slice_view, mrml_scene, vtk_log):
    """The bug, shown with Slicer's own displayable manager: colour node on the legend node only."""
    vtk_log.expect_errors()
    node = segmentation(mrml_scene)
    legend = mrml_scene.AddNewNodeByClass("vtkMRMLColorLegendDisplayNode")
    node.AddAndObserveDisplayNodeID(legend.GetID())
    legend.SetAndObservePrimaryDisplayNode(node.GetDisplayNode())
    legend.SetAndObserveColorNodeID(createDoseLegendColorNode(mrml_scene).GetID())
    legend.SetVisibility(True)
    pixels = slice_view.pixels()
    actor = slice_view.legendManager.GetColorLegendActor(legend)
    assert actor is not None and not actor.GetVisibility()
    assert not pixels.any()
    assert any("No color node is set in primary display node" in e for e in vtk_log.errors())


def test_dose_legend_is_drawn_in_the_slice_view(slice_view, mrml_scene):
    node = segmentation(mrml_scene)
    segmentColor = node.GetSegmentation().GetNthSegment(0).GetColor()
    legend = showDoseLegend(node, mrml_scene)
    pixels = slice_view.pixels()
    actor = slice_view.legendManager.GetColorLegendActor(legend)
    assert actor is not None and actor.GetVisibility()
    assert actor.GetTitle() == "Predicted dose (Gy/GBq)"
    # Each swatch of the legend is on screen: some pixel within 8/255 of each dose colour.
    for dose in LEGEND_DOSES_GY_PER_GBQ:
        expected = 255.0 * np.array(dose_to_rgb(dose))
        assert np.abs(pixels - expected).max(axis=1).min() <= 8, f"no {dose} Gy/GBq swatch on screen"
    # Segment colours are per segment: the colour node on the display node does not change them.
    assert node.GetSegmentation().GetNthSegment(0).GetColor() == segmentColor
    # Labels are the colour names, one per swatch.
    lut = actor.GetLookupTable()
    assert [lut.GetAnnotation(i) for i in range(len(LEGEND_DOSES_GY_PER_GBQ))] == \
        [f"{d:g} Gy/GBq" for d in LEGEND_DOSES_GY_PER_GBQ]

    # Predicting again reuses the legend; restoring the original colours hides it and gives the display node
    # its previous colour node back.
    assert showDoseLegend(node, mrml_scene) is legend
    restoreOriginalColors(node)
    slice_view.pixels()
    assert not actor.GetVisibility()
    assert not node.GetDisplayNode().GetColorNodeID()
