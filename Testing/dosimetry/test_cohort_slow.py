"""Slow tier: a randomised-site virtual cohort (``validation`` preset: voxel sizes, PET resolution and contouring
habits vary) with post-therapy SPECT at 4/24/96 h, dosimetry per patient against the simulator's true doses.
Kidney bias must stay within the issue's 10 % target with 3 time points."""

from __future__ import annotations

import numpy as np
import pytest
from psmadose.case import read_doses
from psmadose.dosimetry import Settings, compute
from psmadose.dosimetry.run import doses_table


@pytest.mark.slow
def test_validation_cohort_kidney_bias_within_ten_percent(tmp_path):
    from psmadose.simulate.cohort import simulate_cohort

    cohort = simulate_cohort(tmp_path / "cohort", "validation", n_patients=6, spect_times_h=[4, 24, 96], workers=1)
    errors: dict[str, list[float]] = {}
    for case in sorted(p for p in cohort.iterdir() if p.is_dir()):
        result = compute(case, Settings(method="lde"))
        table = doses_table(result).set_index("segment")
        for name, truth in read_doses(case / "doses.csv").items():
            kind = table.loc[name, "structure_type"]
            errors.setdefault(kind, []).append(table.loc[name, "reference_gy_per_gbq"] / truth - 1)
    for kind, values in sorted(errors.items()):
        print(f"{kind}: bias {np.mean(values):+.3f}, spread {np.std(values):.3f}, n={len(values)}")
    assert abs(np.mean(errors["kidney"])) < 0.10 and np.std(errors["kidney"]) < 0.15
    assert abs(np.median(errors["tumour"])) < 0.10
