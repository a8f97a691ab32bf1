"""Simulated cases and prediction outputs read by Slicer's own storage node (slicer-core) and by slicerio."""

from __future__ import annotations

import numpy as np
import pytest
import slicerio
from psmadose.case import read_case
from psmadose.modelfile import load_model
from psmadose.predict import predict_case, write_dose_segmentation

from .mrml_helpers import load_segmentation_with_slicer

pytestmark = pytest.mark.mrml


def test_southampton_poc_segmentations_read_by_slicer_and_slicerio(poc_cohort, mrml_scene):
    cases = sorted(p for p in poc_cohort.iterdir() if p.is_dir())
    assert len(cases) == 9
    n_lesions = n_salivary = n_kidneys = 0
    for case_dir in cases:
        path = case_dir / "segmentation.seg.nrrd"
        in_slicer = load_segmentation_with_slicer(path, mrml_scene)
        seg = slicerio.read_segmentation(str(path))
        in_slicerio = {s["name"]: int(slicerio.segment_mask(seg, s).sum()) for s in seg["segments"]}
        case = read_case(case_dir)
        expected = {s.name: s.n_voxels for s in case.segments}
        # Same names and voxel counts through three independent readers (Slicer, slicerio, psmadose).
        assert {n: v["n_voxels"] for n, v in in_slicer.items()} == expected == in_slicerio
        n_lesions += sum(n.startswith("lesion") for n in in_slicer)
        n_salivary += sum(n.startswith(("parotid", "submandibular")) for n in in_slicer)
        n_kidneys += sum(n.startswith("kidney") for n in in_slicer)
    # The preset's contract: the size of the Southampton proof of concept (SNMMI 2026).
    assert (n_lesions, n_salivary, n_kidneys) == (57, 36, 18)


def test_dose_segmentation_read_by_slicer_with_dose_colours(demo_case, tmp_path, mrml_scene):
    from psmadose.dose_colors import dose_to_rgb

    case = read_case(demo_case)
    result = predict_case(case, load_model())
    path = tmp_path / "dose_segmentation.seg.nrrd"
    write_dose_segmentation(path, case, result)
    in_slicer = load_segmentation_with_slicer(path, mrml_scene)
    assert set(in_slicer) == {s.name for s in case.segments}
    for prediction in result.predictions:
        assert np.allclose(in_slicer[prediction.segment]["color"], dose_to_rgb(prediction.predicted_gy_per_gbq),
                           atol=1e-5)
        assert in_slicer[prediction.segment]["n_voxels"] == case.segment(prediction.segment).n_voxels
