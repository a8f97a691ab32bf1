"""Structure types of segments and how they are recognised from segment names."""

from __future__ import annotations

import re
from enum import Enum


class StructureType(str, Enum):
    TUMOUR = "tumour"
    KIDNEY = "kidney"
    PAROTID = "parotid"
    SUBMANDIBULAR = "submandibular"
    LACRIMAL = "lacrimal"
    # Reference organs: segmented to describe the patient (tumour-to-liver ratio, tumour sink), no dose predicted.
    LIVER = "liver"
    SPLEEN = "spleen"

    @property
    def model_group(self) -> str | None:
        """Name of the dose model that predicts this structure type, or None for reference organs."""
        return _MODEL_GROUP.get(self)

    @property
    def is_predicted(self) -> bool:
        return self.model_group is not None


_MODEL_GROUP = {
    StructureType.TUMOUR: "tumour",
    StructureType.KIDNEY: "kidney",
    StructureType.PAROTID: "salivary",
    StructureType.SUBMANDIBULAR: "salivary",
    StructureType.LACRIMAL: "salivary",
}

MODEL_GROUPS = ("tumour", "kidney", "salivary")
# The structure types each dose model predicts: the one definition (model, training, calibration, reports).
GROUP_STRUCTURE_TYPES = {group: tuple(t.value for t, g in _MODEL_GROUP.items() if g == group) for group in MODEL_GROUPS}

# Order matters: the first pattern that matches the start of the lower-case name wins.
_NAME_RULES: tuple[tuple[re.Pattern, StructureType], ...] = (
    (re.compile(r"^kidney"), StructureType.KIDNEY),
    (re.compile(r"^parotid"), StructureType.PAROTID),
    (re.compile(r"^submandibular"), StructureType.SUBMANDIBULAR),
    (re.compile(r"^lacrimal"), StructureType.LACRIMAL),
    (re.compile(r"^(lesion|tumo.*r|met|node)"), StructureType.TUMOUR),
    (re.compile(r"^liver"), StructureType.LIVER),
    (re.compile(r"^spleen"), StructureType.SPLEEN),
)


def structure_type_from_name(name: str) -> StructureType | None:
    """Structure type guessed from a segment name (case-insensitive), or None when not recognised."""
    key = name.strip().lower()
    for pattern, structure_type in _NAME_RULES:
        if pattern.match(key):
            return structure_type
    return None


def parse_structure_type(value: str) -> StructureType:
    try:
        return StructureType(value.strip().lower().replace("tumor", "tumour"))
    except ValueError:
        allowed = ", ".join(t.value for t in StructureType)
        from .errors import InputError

        raise InputError(f"unknown structure type {value!r}; use one of: {allowed}") from None


def resolve_structure_type(name: str, tags: dict[str, str] | None = None,
                           overrides: dict[str, str] | None = None) -> StructureType | None:
    """The type of a segment: an explicit override, else its PSMADosePredict.StructureType tag, else its name."""
    from .segmentation import STRUCTURE_TYPE_TAG

    if overrides and overrides.get(name):
        return parse_structure_type(overrides[name])
    if tags and tags.get(STRUCTURE_TYPE_TAG):
        return parse_structure_type(tags[STRUCTURE_TYPE_TAG])
    return structure_type_from_name(name)
