"""MRML volume and segmentation nodes -> psmadose ``Case`` (on the PET grid, LPS), and case files -> nodes.

Geometry comes from each node's IJK-to-RAS matrix (oblique directions included), hardened through a linear
parent transform if there is one; RAS is turned into LPS by negating the first two rows. Segments are looked
up by NAME, never by segment ID. A segment stored on another grid than the PET is brought onto the PET grid
by nearest-neighbour resampling with the core's own ``psmadose.images.resample_to``, exactly as
``psmadose.case.read_case`` does for files, so a case gives the same voxels from disk and from the scene.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import slicer
import vtk
from psmadose.case import Case, Segment, check_segment_list, no_typed_segments_error, skipped_segment_warning
from psmadose.clinical import validate_clinical
from psmadose.errors import InputError
from psmadose.images import (
    check_ct_hu,
    check_pet_suv,
    geometry_from_ijk_to_lps,
    ijk_to_lps,
    image_from_array,
    overlaps,
    resample_to,
    same_grid,
)
from psmadose.segmentation import STRUCTURE_COLORS, STRUCTURE_TYPE_TAG, read_segmentation
from psmadose.structures import StructureType, resolve_structure_type
from vtk.util import numpy_support

log = logging.getLogger(__name__)

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
BINARY_LABELMAP = "Binary labelmap"


def _arrayFromVtkMatrix(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def _vtkMatrixFromArray(array: np.ndarray) -> vtk.vtkMatrix4x4:
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(array[r, c]))
    return matrix


def _toWorldMatrix(node) -> np.ndarray:
    """4x4 local-to-world (RAS) matrix of a transformable node; refuses non-linear transforms."""
    parent = node.GetParentTransformNode()
    if parent is None:
        return np.eye(4)
    if not parent.IsTransformToWorldLinear():
        raise InputError(f"{node.GetName()}: is under a non-linear transform ({parent.GetName()}); harden the "
                         "transform (Data module, right-click > Harden transform) before predicting")
    matrix = vtk.vtkMatrix4x4()
    parent.GetMatrixTransformToWorld(matrix)
    return _arrayFromVtkMatrix(matrix)


def volumeIjkToRas(volumeNode) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(matrix)
    return _toWorldMatrix(volumeNode) @ _arrayFromVtkMatrix(matrix)


def imageFromArrayAndIjkToRas(arrayKji: np.ndarray, ijkToRas: np.ndarray) -> sitk.Image:
    """SimpleITK image (LPS) from a (k, j, i) array and its 4x4 IJK-to-RAS matrix."""
    spacing, origin, direction = geometry_from_ijk_to_lps(RAS_TO_LPS @ np.asarray(ijkToRas, dtype=float))
    return image_from_array(np.ascontiguousarray(arrayKji), spacing=spacing, origin=origin, direction=direction)


def imageFromVolumeNode(volumeNode, what: str = "volume") -> sitk.Image:
    """Copy of a scalar volume node's voxels as a SimpleITK image in LPS (pixel type kept)."""
    if volumeNode is None:
        raise InputError(f"no {what} volume selected")
    imageData = volumeNode.GetImageData()
    if imageData is None or imageData.GetPointData().GetScalars() is None:
        raise InputError(f"{volumeNode.GetName()}: the {what} volume has no voxels; load the image again")
    if imageData.GetNumberOfScalarComponents() != 1:
        raise InputError(f"{volumeNode.GetName()}: the {what} must be a scalar volume, it has "
                         f"{imageData.GetNumberOfScalarComponents()} components")
    dims = imageData.GetDimensions()
    array = numpy_support.vtk_to_numpy(imageData.GetPointData().GetScalars()).reshape(dims[::-1]).copy()
    return imageFromArrayAndIjkToRas(array, volumeIjkToRas(volumeNode))


def checkPetLooksLikeSuv(petNode) -> str | None:
    """None when the PET looks like SUV (g/mL); otherwise the reason, with the fix (for the GUI)."""
    try:
        check_pet_suv(imageFromVolumeNode(petNode, "PET"), petNode.GetName() if petNode else "PET")
    except InputError as exc:
        return str(exc)
    return None


def _ctImage(ctNode, pet: sitk.Image) -> sitk.Image:
    ct = imageFromVolumeNode(ctNode, "CT")
    check_ct_hu(ct, pet, ctNode.GetName())
    return ct


def segmentNames(segmentationNode) -> list[str]:
    segmentation = segmentationNode.GetSegmentation()
    return [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())]


def segmentIdByName(segmentationNode, name: str) -> str:
    """The ID of the segment called ``name`` (IDs are not names); KeyError if there is none."""
    segmentation = segmentationNode.GetSegmentation()
    for i in range(segmentation.GetNumberOfSegments()):
        if segmentation.GetNthSegment(i).GetName() == name:
            return segmentation.GetNthSegmentID(i)
    raise KeyError(name)


def segmentTag(segment, key: str) -> str | None:
    value = vtk.reference("")
    return str(value) if segment.GetTag(key, value) else None


def segmentStructureTypes(segmentationNode, overrides: dict[str, str] | None = None) -> dict[str, str | None]:
    """Structure type of every segment by name ("kidney", "tumour", ...; None = not recognised, skipped).

    Same precedence as the core: explicit override, then the ``PSMADosePredict.StructureType`` tag, then the name.
    """
    overrides = overrides or {}
    types: dict[str, str | None] = {}
    segmentation = segmentationNode.GetSegmentation()
    for i in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(i)
        name = segment.GetName()
        tag = segmentTag(segment, STRUCTURE_TYPE_TAG)
        structure_type = resolve_structure_type(name, {STRUCTURE_TYPE_TAG: tag} if tag else None, overrides)
        types[name] = structure_type.value if structure_type else None
    return types


def segmentMaskImage(segmentationNode, segmentId: str) -> sitk.Image | None:
    """The segment's binary labelmap on its own grid as a uint8 SimpleITK image (LPS); None when empty.

    Shared labelmaps (several segments in one layer) are separated with the segment's label value, and the
    labelmap extent (which need not start at 0) becomes the image origin.
    """
    segment = segmentationNode.GetSegmentation().GetSegment(segmentId)
    image = segment.GetRepresentation(BINARY_LABELMAP)
    if image is None:
        return None
    extent = image.GetExtent()
    if extent[1] < extent[0] or image.GetPointData().GetScalars() is None:
        return None
    matrix = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)
    imageToRas = _toWorldMatrix(segmentationNode) @ _arrayFromVtkMatrix(matrix)
    # Shift the origin to the first voxel of the extent so that array index 0 is voxel extent[0].
    shift = np.eye(4)
    shift[:3, 3] = (extent[0], extent[2], extent[4])
    dims = image.GetDimensions()
    labels = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(dims[::-1])
    mask = (labels == segment.GetLabelValue()).astype(np.uint8)
    if not mask.any():
        return None
    return imageFromArrayAndIjkToRas(mask, imageToRas @ shift)


def _segmentsOnPetGrid(segmentationNode, pet: sitk.Image, overrides: dict[str, str],
                       warnings: list[str]) -> list[Segment]:
    source = segmentationNode.GetName()
    if not segmentationNode.GetSegmentation().ContainsRepresentation(BINARY_LABELMAP):
        # Segments imported as surfaces: create the labelmaps the way Slicer does (reference geometry).
        segmentationNode.CreateBinaryLabelmapRepresentation()
    names = segmentNames(segmentationNode)
    check_segment_list(names, source, overrides)  # the same checks as a segmentation file gets
    types = segmentStructureTypes(segmentationNode, overrides)
    segments = []
    for name in names:
        if types[name] is None:
            warnings.append(skipped_segment_warning(name))
            continue
        structure_type = StructureType(types[name])
        segmentId = segmentIdByName(segmentationNode, name)
        maskImage = segmentMaskImage(segmentationNode, segmentId)
        if maskImage is None:
            raise InputError(f"{source}: segment {name!r} is empty; delete it or draw it")
        if same_grid(maskImage, pet):
            mask = sitk.GetArrayFromImage(maskImage).astype(bool)
        else:
            if not overlaps(maskImage, pet):
                raise InputError(f"{source}: segment {name!r} lies outside the PET field of view; check that "
                                 "the segmentation belongs to this PET")
            mask = sitk.GetArrayFromImage(resample_to(maskImage, pet, nearest=True)).astype(bool)
            if not mask.any():
                raise InputError(f"{source}: segment {name!r} lies outside the PET field of view (or is smaller "
                                 "than a PET voxel); check its position or remove it")
        color = tuple(float(c) for c in segmentationNode.GetSegmentation().GetSegment(segmentId).GetColor())
        segments.append(Segment(name, structure_type, mask, color or STRUCTURE_COLORS[structure_type.value]))
    if not segments:
        raise no_typed_segments_error(source, names)
    return segments


def caseFromNodes(petNode, segmentationNode, clinical: dict, ctNode=None, *,
                  structureTypes: dict[str, str] | None = None, caseId: str | None = None) -> Case:
    """A validated psmadose ``Case`` from MRML nodes and a clinical dict (keys of clinical.json).

    Raises ``psmadose.errors.InputError`` (a ValueError) with the problem and its fix.
    """
    if petNode is None:
        raise InputError("no PET volume selected; select the PET in SUV (g/mL)")
    if segmentationNode is None:
        raise InputError("no segmentation selected; select or create a segmentation with lesion and organ segments")
    warnings: list[str] = []
    pet = imageFromVolumeNode(petNode, "PET")
    petArray = check_pet_suv(pet, petNode.GetName())
    pet = sitk.Cast(pet, sitk.sitkFloat32)
    ct = _ctImage(ctNode, pet) if ctNode is not None else None
    segments = _segmentsOnPetGrid(segmentationNode, pet, structureTypes or {}, warnings)
    clinicalRecord, clinicalWarnings = validate_clinical(dict(clinical), source="clinical values")
    warnings += clinicalWarnings
    for message in warnings:
        log.warning(message)
    return Case(case_id=caseId or petNode.GetName(), pet=pet, pet_array=petArray, segments=segments,
                clinical=clinicalRecord, ct=ct, warnings=warnings, input_files={})


# ------------------------------------------------------------------------------------- files -> nodes


def _scene(scene=None):
    scene = scene if scene is not None else getattr(slicer, "mrmlScene", None)
    if scene is None:
        raise RuntimeError("no MRML scene (slicer.mrmlScene is not set)")
    return scene


def _storageMessages(storageNode) -> str:
    messages = storageNode.GetUserMessages()
    return (messages.GetAllMessagesAsString() if messages is not None else "") or "no message"


def _readWithStorageNode(scene, node, storage, path: Path, what: str) -> None:
    """Read ``path`` into ``node`` through ``storage``; on failure remove both and raise InputError (VTK only
    logs its errors, so ReadData's return value is the signal)."""
    storage.SetFileName(str(path))
    node.SetAndObserveStorageNodeID(storage.GetID())
    if not storage.ReadData(node):
        message = _storageMessages(storage)
        scene.RemoveNode(node)
        scene.RemoveNode(storage)
        raise InputError(f"{path}: Slicer could not read the {what} ({message})")


def loadVolumeNode(path: Path, name: str | None = None, scene=None):
    """A scalar volume node read by Slicer's own storage node (raises InputError on failure)."""
    scene = _scene(scene)
    path = Path(path)
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name or path.name.split(".")[0])
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetSingleFile(True)
    _readWithStorageNode(scene, node, storage, path, "image")
    node.CreateDefaultDisplayNodes()
    return node


def setBinaryLabelmapFromMask(segmentationNode, segmentId: str, maskKji: np.ndarray, ijkToRas: np.ndarray) -> None:
    """Replace a segment's voxels with a boolean (k, j, i) mask given on the grid ``ijkToRas``."""
    image = slicer.vtkOrientedImageData()
    image.SetDimensions(*maskKji.shape[::-1])
    scalars = numpy_support.numpy_to_vtk(np.ascontiguousarray(maskKji, dtype=np.uint8).ravel(), deep=True,
                                         array_type=vtk.VTK_UNSIGNED_CHAR)
    image.GetPointData().SetScalars(scalars)
    image.SetImageToWorldMatrix(_vtkMatrixFromArray(ijkToRas))
    mode = slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE
    if not slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(image, segmentationNode, segmentId,
                                                                                mode):
        raise RuntimeError(f"could not set the voxels of segment {segmentId}")


def addSegmentFromMask(segmentationNode, name: str, maskKji: np.ndarray, ijkToRas: np.ndarray,
                       color=(0.85, 0.2, 0.2), structureType: str | None = None) -> str:
    segmentId = segmentationNode.GetSegmentation().AddEmptySegment("", name, list(color))
    setBinaryLabelmapFromMask(segmentationNode, segmentId, maskKji, ijkToRas)
    if structureType:
        segmentationNode.GetSegmentation().GetSegment(segmentId).SetTag(STRUCTURE_TYPE_TAG, structureType)
    return segmentId


def loadSegmentationNode(path: Path, name: str | None = None, scene=None):
    """A segmentation node from ``.seg.nrrd`` (Slicer's storage node) or ``labels.nii.gz`` + ``labels.json``."""
    scene = _scene(scene)
    path = Path(path)
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name or path.name.split(".")[0])
    if path.name.endswith(".seg.nrrd"):
        storage = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
        _readWithStorageNode(scene, node, storage, path, "segmentation")
    else:  # label image + labels.json: through the core reader (names from the JSON)
        geometry, rawSegments = read_segmentation(path)
        ijkToLps = ijk_to_lps(geometry)
        for raw in rawSegments:
            kind = resolve_structure_type(raw.name, raw.tags)
            color = raw.color or (STRUCTURE_COLORS[kind.value] if kind else (0.5, 0.5, 0.5))
            addSegmentFromMask(node, raw.name, raw.mask, RAS_TO_LPS @ ijkToLps, color)
    node.CreateDefaultDisplayNodes()
    return node
