"""Issue 7: external validation across virtual centres (tools/external_validation.py, run for real).

Centre A (18F-DCFPyL, 4 mm) trains; a held-out A cohort and a centre B cohort (68Ga-PSMA-11, 5 mm) are
evaluated. Expected from the simulator's design (render.py: Ga-68 has a wider PSF and other organ contrasts):
organ doses predicted on B are worse than on A, and every B segment is flagged for the unseen tracer.
ComBat (combatlearn, centre A as reference, fitted without any B dose) is kept in the tool because it wins
most of the loss back; this test is what "measurably helps" means.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

# Slow tier (CI runs it: pytest -m slow): trains per centre (~40 s).
pytestmark = pytest.mark.slow

TOOL = Path(__file__).resolve().parents[2] / "tools" / "external_validation.py"


@pytest.fixture(scope="module")
def summary(tmp_path_factory):
    spec = importlib.util.spec_from_file_location("external_validation", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.run(tmp_path_factory.mktemp("extval"), n_train=40, n_test=15, workers=2, combat=True)


def test_protocol_change_costs_organ_accuracy(summary):
    drop = summary["drop"]
    # Kidney and salivary doses rest on organ SUVs that the tracer and PSF change; measured at 60/20 patients:
    # kidney +24, salivary +22 MAPE points. A quarter of that is asserted here with 40/15 patients.
    assert drop["kidney"]["mape_increase"] > 0.06
    assert drop["salivary"]["mape_increase"] > 0.06


def test_combat_harmonisation_wins_back_most_of_the_organ_loss(summary):
    # Measured at 60/20 patients: kidney 45.3 % -> 18.0 % (centre A 21.3 %), salivary 46.4 % -> 23.3 % (24.5 %).
    for group in ("kidney", "salivary"):
        d = summary["drop"][group]
        recovered = (d["mape_external"] - d["mape_external_combat"]) / (d["mape_external"] - d["mape_internal"])
        assert recovered > 0.5, (group, d)
    harmonised = summary["results"]["centre-b-test-combat"]
    assert harmonised["kidney"]["out_of_domain_fraction"] == 1.0  # harmonised features, still an unseen tracer


def test_every_external_segment_is_flagged_and_internal_ones_mostly_not(summary):
    internal, external = summary["results"]["centre-a-test"], summary["results"]["centre-b-test"]
    for group in ("tumour", "kidney", "salivary"):
        assert external[group]["out_of_domain_fraction"] == 1.0  # 68Ga-PSMA-11 never seen in training
        assert internal[group]["out_of_domain_fraction"] < 0.3


def test_the_multivariate_check_sees_the_protocol_shift_and_harmonised_intervals_cover_again(summary):
    # Besides the tracer, the Mahalanobis check alone flags shifted B salivary glands (measured at 40/15: 20 %
    # against 1 % on centre A, none after ComBat). With 40 training patients (80 kidneys for ~30 features) its
    # threshold is too loose to see the kidney or tumour shift; at 60/20 it flagged 14-18 % in every group.
    # Since v2 (issue 11) the check sees the tissue uptake and clinical features only; a tracer's shift of organ
    # uptake (68Ga ~x1.5) is about one between-patient SD, so the Mahalanobis check rarely fires on it: the tracer
    # check flags every B segment instead (test above). It must not fire more after harmonisation.
    external = summary["results"]["centre-b-test"]
    harmonised = summary["results"]["centre-b-test-combat"]
    salivary = "multivariate_out_of_domain_fraction"
    assert harmonised["salivary"][salivary] <= external["salivary"][salivary]
    # Intervals calibrated on A under-cover B; harmonised, they cover again (40/15: tumour 80 % interval 0.46 ->
    # 0.74, kidney 0.67 -> 0.77).
    for group in ("tumour", "kidney"):
        assert harmonised[group]["coverage_80"] > external[group]["coverage_80"] + 0.05, group


def test_summary_says_what_it_was_measured_on(summary, tmp_path):
    assert summary["measured_on"].startswith("virtual patients")
    assert summary["patients"] == {"centre-a-train": 40, "centre-a-test": 15, "centre-b-test": 15}
