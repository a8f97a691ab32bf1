"""Structure type from segment names (psmadose.structures).

Expected types come from the name table of DESIGN.md ("Data contracts"): kidney* -> KIDNEY, parotid* -> PAROTID,
submandibular* -> SUBMANDIBULAR, lacrimal* -> LACRIMAL, lesion*|tumo*r*|met*|node* -> TUMOUR, matched
case-insensitively; liver*/spleen* are the reference organs of psmadose.structures; anything else is not
recognised (None).
"""

from __future__ import annotations

import pytest
from psmadose.errors import InputError
from psmadose.structures import StructureType, parse_structure_type, structure_type_from_name


@pytest.mark.parametrize("name, expected", [
    ("Kidney_Left", StructureType.KIDNEY),
    ("kidney_right", StructureType.KIDNEY),
    ("parotid R", StructureType.PAROTID),
    ("Submandibular", StructureType.SUBMANDIBULAR),
    ("lacrimal_l", StructureType.LACRIMAL),
    ("lesion 3", StructureType.TUMOUR),
    ("Tumor_2", StructureType.TUMOUR),
    ("tumour", StructureType.TUMOUR),
    ("TUMOUR_07", StructureType.TUMOUR),
    ("met_bone", StructureType.TUMOUR),
    ("node_ln1", StructureType.TUMOUR),
    ("  lesion_01  ", StructureType.TUMOUR),  # surrounding blanks are ignored
    ("liver", StructureType.LIVER),
    ("Spleen", StructureType.SPLEEN),
    ("bladder", None),
    ("heart", None),
    ("left kidney", None),  # the type is read from the start of the name
    ("", None),
])
def test_structure_type_from_name(name, expected):
    assert structure_type_from_name(name) is expected


@pytest.mark.parametrize("structure_type, group", [
    # DESIGN.md "Model": one model per structure type group (tumour, kidney, salivary); reference organs none.
    (StructureType.TUMOUR, "tumour"),
    (StructureType.KIDNEY, "kidney"),
    (StructureType.PAROTID, "salivary"),
    (StructureType.SUBMANDIBULAR, "salivary"),
    (StructureType.LACRIMAL, "salivary"),
    (StructureType.LIVER, None),
    (StructureType.SPLEEN, None),
])
def test_model_groups(structure_type, group):
    assert structure_type.model_group == group
    assert structure_type.is_predicted is (group is not None)


@pytest.mark.parametrize("text, expected", [
    ("tumour", StructureType.TUMOUR), ("Tumor", StructureType.TUMOUR), (" KIDNEY ", StructureType.KIDNEY),
    ("lacrimal", StructureType.LACRIMAL),
])
def test_parse_structure_type(text, expected):
    assert parse_structure_type(text) is expected


def test_parse_structure_type_rejects_unknown():
    with pytest.raises(InputError) as info:
        parse_structure_type("bladder")
    assert "bladder" in str(info.value)
    assert "kidney" in str(info.value)  # lists the allowed values
