"""Issue 11: predicted doses do not depend on image formation or contours; textbook phantoms built outside the
simulator get published-range doses. The thresholds are the issue's targets; figures for the full check (20
patients) are in the bundled model card, these tests run the same code on fewer cases."""

from __future__ import annotations

import json

import pytest
from psmadose.modelfile import load_model
from psmadose.phantom import RENDERINGS, Rendering, build_phantom
from psmadose.robustness import phantom_summary
from psmadose.structures import StructureType


@pytest.fixture(scope="module")
def phantoms():
    return phantom_summary(load_model().model_set)


def test_textbook_phantoms_get_published_range_doses_whatever_the_rendering(phantoms):
    # Published cycle-1 ranges (REFERENCES: kidney 0.43-0.82 Gy/GBq across series; parotid 0.39-1.90) widened to
    # the targets: kidney 0.3-1.0, parotid 0.3-1.6; one organ varies <= 1.3x over blur 0-10 mm, texture
    # (cortex/medulla, lobular), voxel size and noise, with the resolution stated or not.
    for block in phantoms.values():
        for segment, organ in block["organs"].items():
            if segment.startswith("kidney"):
                assert 0.3 <= organ["min"] and organ["max"] <= 1.0, (segment, organ)
                assert organ["max_over_min"] <= 1.3, (segment, organ)
            if segment.startswith("parotid"):
                assert 0.3 <= organ["min"] and organ["max"] <= 1.6, (segment, organ)
                assert organ["max_over_min"] <= 1.3, (segment, organ)


def test_phantom_keeps_textbook_means_under_every_texture():
    # Independent check of the phantom itself (no blur, no noise): the interior of a uniform kidney is exactly its
    # textbook SUV (Li et al. 2017), and every texture holds the same total kidney activity, so every rendering
    # has the same right answer.
    from scipy import ndimage

    totals = {}
    for texture in ("uniform", "cortex", "lobular"):
        case = build_phantom(Rendering(blur_fwhm_mm=0.0, noise_sd_at_liver=0.0, texture=texture))
        kidney = next(s for s in case.segments if s.structure_type == StructureType.KIDNEY)
        if texture == "uniform":
            interior = ndimage.binary_erosion(kidney.mask, iterations=2)
            assert float(case.pet_array[interior].mean()) == pytest.approx(20.0, rel=1e-6)
        around = ndimage.binary_dilation(kidney.mask, iterations=2)
        totals[texture] = float((case.pet_array[around] - 0.6).sum())  # background SUV 0.6
    assert totals["cortex"] == pytest.approx(totals["uniform"], rel=0.01)
    assert totals["lobular"] == pytest.approx(totals["uniform"], rel=0.01)
    assert len({r.label for r in RENDERINGS}) == len(RENDERINGS)


@pytest.mark.slow  # ~40 s: simulates, re-renders and predicts; CI runs the slow tier
def test_robustness_command_on_one_held_out_patient(cli, tmp_path):
    out = tmp_path / "robustness"
    result = cli("robustness", "--patients", "1", "--workers", "1", "--out", out)
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "robustness.json").read_text())
    kidney = report["per_structure_type"]["kidney"]
    # Elasticity to the kidney's own uptake: the target 0.9-1.1 (median), each 0.7-1.3.
    own = kidney["own uptake x1.1"]
    assert 0.9 <= own["elasticity_median"] <= 1.1
    assert 0.7 <= own["elasticity_min"] and own["elasticity_max"] <= 1.3
    # Image formation and drawing: the targets (median change <= 5 %, contours <= 10 %).
    for variant in ("noise x0.5", "noise x2", "PSF 5 mm", "PSF 8 mm", "voxels 3 mm", "voxels 5 mm"):
        assert kidney[variant]["median_abs_change"] <= 0.05, variant
    for variant in ("organs 1 voxel loose", "organs 1 voxel tight"):
        assert kidney[variant]["median_abs_change"] <= 0.10, variant
    assert "Robustness of psmadose-virtual-v2" in result.stdout
    assert (out / "robustness.txt").is_file()
