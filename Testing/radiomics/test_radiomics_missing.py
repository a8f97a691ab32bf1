"""Without pyradiomics the rest of psmadose runs; asking for radiomics then fails with an InputError that says
how to install it (pip extra, Slicer's pip_install, the SlicerRadiomics extension). Runs with or without
pyradiomics installed: the import is blocked through sys.modules."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import SimpleITK as sitk
from psmadose.case import Case, Segment
from psmadose.clinical import validate_clinical
from psmadose.errors import InputError
from psmadose.features import radiomics as psmadose_radiomics
from psmadose.structures import StructureType


@pytest.fixture
def no_radiomics(monkeypatch):
    for name in [n for n in sys.modules if n == "radiomics" or n.startswith("radiomics.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "radiomics", None)  # None in sys.modules: import raises ImportError
    psmadose_radiomics._EXTRACTORS.clear()
    yield
    psmadose_radiomics._EXTRACTORS.clear()


def tiny_case() -> Case:
    pet = np.ones((4, 5, 6), dtype=np.float32)
    mask = np.zeros(pet.shape, dtype=bool)
    mask[1:3, 1:4, 2:5] = True
    clinical, _ = validate_clinical({
        "age_years": 71, "weight_kg": 82, "height_cm": 176, "egfr_ml_min_1_73m2": 75, "psa_ng_ml": 120,
        "alp_u_l": 140, "ldh_u_l": 250, "hemoglobin_g_dl": 12.1, "prior_taxane_lines": 1, "prior_arpi": True,
        "pet_tracer": "18F-DCFPyL", "pet_uptake_time_min": 120, "planned_activity_gbq": 7.4, "planned_cycles": 4})
    return Case("tiny", sitk.GetImageFromArray(pet), pet, [Segment("kidney_left", StructureType.KIDNEY, mask,
                                                                   (1, 0, 0))], clinical)


def test_missing_radiomics_raises_input_error_with_install_hint(no_radiomics):
    extractor = psmadose_radiomics.RadiomicsExtractor()  # constructing and hashing need no pyradiomics
    assert not psmadose_radiomics.available()
    assert not extractor.available()
    assert len(extractor.settings_sha256) == 64
    for call in (lambda: extractor.extract_case(tiny_case()), lambda: extractor.extract_naive(tiny_case()),
                 extractor.feature_names):
        with pytest.raises(InputError) as raised:
            call()
        message = str(raised.value)
        assert "pip install psmadose[radiomics]" in message
        assert "slicer.util.pip_install('pyradiomics-bhklab')" in message
        assert "SlicerRadiomics" in message
        assert "\n" not in message  # one line for the CLI's 'error: ...'


def test_uptake_features_run_without_radiomics(no_radiomics):
    from psmadose.features import extract_features

    frame = extract_features(tiny_case())
    assert list(frame["segment"]) == ["kidney_left"]
