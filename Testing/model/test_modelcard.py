"""The model card has a schema, and every view reads it through psmadose.modelcard (issue 17: the report printed
the training cohort as a Python dict, read a key no code writes and never showed coverage; Slicer showed held-out
figures where the report showed cross-validation). Tested against the real bundled card, not a hand-made one."""

from __future__ import annotations

import copy
import json
import re
from html import unescape

import pytest
from psmadose.errors import InputError
from psmadose.modelcard import summarize, summary_text, validate_card
from psmadose.modelfile import CARD_FILE, bundled_model_dir, write_card


@pytest.fixture(scope="module")
def card() -> dict:
    return json.loads((bundled_model_dir() / CARD_FILE).read_text(encoding="utf-8"))


def test_bundled_card_follows_the_schema(card):
    assert validate_card(card, "bundled") is card


@pytest.mark.parametrize("edit,field", [
    (lambda c: c["metrics"]["kidney"].update(mape="16 %"), "metrics.kidney.mape"),
    (lambda c: c.pop("intended_use"), "(card): 'intended_use' is a required"),
    (lambda c: c["trained_on"].update(n_patients=0), "trained_on.n_patients"),
    (lambda c: c.update(sha256="not-a-hash"), "sha256"),
    (lambda c: c.update(feature_families=["uptake", "astrology"]), "feature_families.1"),
])
def test_a_card_off_the_schema_is_refused_naming_the_field(card, tmp_path, edit, field):
    bad = copy.deepcopy(card)
    edit(bad)
    with pytest.raises(InputError, match=re.escape(f"field {field}")):
        write_card(tmp_path, bad)
    assert not (tmp_path / CARD_FILE).exists()  # refused before writing


def _model_card_html(card: dict) -> str:
    """The model-card section exactly as the prediction report renders it (its Jinja2 macro)."""
    from psmadose.html import environment

    return str(environment().get_template("_macros.html.j2").module.model_card(summarize(card)))


def test_report_shows_both_accuracies_with_what_they_were_measured_on(card):
    html = _model_card_html(card)
    summary = summarize(card)
    assert "{'" not in html and "'data':" not in html  # no Python dict reprs
    assert summary.trained_on in unescape(html)
    assert "Accuracy on held-out patients" in html and "Cross-validation accuracy" in html
    assert "seed 9001" in html  # the held-out cohort named
    # coverage is shown, from the keys the card has (coverage_80_cv for CV, coverage_80 for held-out)
    kidney_cv = card["metrics"]["kidney"]["coverage_80_cv"]
    kidney_heldout = card["validation"]["metrics"]["kidney"]["coverage_80"]
    assert f"{100 * kidney_cv:.1f} %" in html and f"{100 * kidney_heldout:.1f} %" in html


def test_slicer_summary_and_report_agree(card):
    """The Slicer panel text (DosePredictLogic.cardSummary -> summary_text) shows the same figures as the report,
    each with what it was measured on."""
    text = summary_text(card, "bundled")
    heldout = card["validation"]["metrics"]
    for group in ("kidney", "parotid", "tumour"):
        assert f"{group} (" in text and f"MAPE {100 * heldout[group]['mape']:.0f}%" in text
    assert "parotid (physics_ridge)" in text  # per-type held-out rows name the model that predicts them
    assert "Held-out accuracy, measured on: held-out virtual cohort" in text
    assert "Cross-validation accuracy, measured on: patient-grouped" in text
    assert f"Trained on: {card['trained_on']['n_patients']} patients" in text
