"""Published reference doses, as data with their citations: organ-at-risk limits and tumour dose figures.

The one place the report, the planning aids, the CLI and the Slicer module take them from (no plotting imports:
the Slicer adapter reads limits without loading matplotlib).
"""

from __future__ import annotations

from dataclasses import dataclass

ORGAN_AT_RISK_TYPES = ("kidney", "parotid", "submandibular", "lacrimal")
TUMOUR_TYPE = "tumour"


@dataclass(frozen=True)
class DoseLimit:
    """A reference absorbed-dose limit for one structure type."""

    structure_type: str  # "kidney", "parotid", ...
    value: float
    unit: str  # "Gy"
    basis: str  # "cumulative": summed over all cycles, mean absorbed dose to the organ
    label: str  # short text drawn next to the line in figures
    source: str  # citation and caveats


# Sources: the project's REFERENCES.md (kidney, tumour) and the QUANTEC parotid paper (salivary glands).
DOSE_LIMITS: list[DoseLimit] = [
    DoseLimit(
        structure_type="kidney",
        value=23.0,
        unit="Gy",
        basis="cumulative",
        label="kidney 23 Gy (external-beam-derived)",
        source=(
            "Kidney 23 Gy cumulative mean absorbed dose, as used for 177Lu-PSMA-617 by Fendler et al. 2016; "
            "taken over from external-beam radiotherapy experience. No 177Lu-specific kidney threshold is "
            "established."
        ),
    ),
    DoseLimit(
        structure_type="parotid",
        value=25.0,
        unit="Gy",
        basis="cumulative",
        label="parotid 25 Gy (external-beam reference)",
        source=(
            "QUANTEC parotid constraint (Deasy et al., Int J Radiat Oncol Biol Phys "
            "2010;76(3 Suppl):S58-S63): severe xerostomia is usually avoided if both parotid glands "
            "receive a mean dose below ~25 Gy (or one gland below ~20 Gy) in fractionated external-beam "
            "radiotherapy. An external-beam-derived reference, not a 177Lu-specific threshold: no "
            "salivary-gland dose limit is established for 177Lu-PSMA, whose low dose rate and heterogeneous "
            "uptake differ from external beam. No reference is drawn for submandibular or lacrimal glands."
        ),
    ),
]
"""Reference limits drawn in the report; cumulative over all planned cycles."""


@dataclass(frozen=True)
class TumourDoseReference:
    """A published tumour dose per injected activity, shown as an annotation (not a threshold)."""

    value_gy_per_gbq: float
    sd_gy_per_gbq: float
    label: str
    short_label: str  # tick label in figures
    source: str


TUMOUR_DOSE_REFERENCES: list[TumourDoseReference] = [
    TumourDoseReference(
        4.0,
        2.9,
        "non-responders 4.0 Gy/GBq",
        "non-resp. 4.0",
        "Volter et al. 2021, 177Lu-PSMA-617: mean tumour dose 4.0 +- 2.9 Gy/GBq in non-responders "
        "(group mean, not a threshold).",
    ),
    TumourDoseReference(
        10.2,
        12.0,
        "responders 10.2 Gy/GBq",
        "resp. 10.2",
        "Volter et al. 2021, 177Lu-PSMA-617: mean tumour dose 10.2 +- 12.0 Gy/GBq in responders "
        "(group mean, not a threshold).",
    ),
]


def dose_limit_for(structure_type: str) -> DoseLimit | None:
    """The reference limit of a structure type ("kidney", "parotid", ...), or None when none is sourced."""
    key = _structure_key(structure_type)
    for limit in DOSE_LIMITS:
        if limit.structure_type == key:
            return limit
    return None


def _structure_key(value) -> str:
    value = getattr(value, "value", value)  # StructureType enum or plain string
    return str(value or "").strip().lower().replace("tumor", "tumour")
