"""Does adding radiomics beat uptake + clinical features? Patient-grouped 5-fold CV on a virtual cohort.

    python tools/compare_radiomics.py [--preset southampton-poc] [--cohort DIR]

Prints, per model group, the best grouped-CV MAPE of the learned candidates with uptake + clinical features and
with radiomics added (feature selection inside the folds), beside the population-mean baseline. On the 9-patient
`southampton-poc` preset radiomics overfit; the training cohort's figures are in the bundled model card.
Virtual patients only.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from psmadose.features.radiomics import DEFAULT_PARAMS_PATH
from psmadose.features.table import features_for_cases, list_cases
from psmadose.simulate.cohort import simulate_cohort
from psmadose.training import train_models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="southampton-poc")
    parser.add_argument("--cohort", type=Path, default=None, help="an existing cohort instead of simulating")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cohort = args.cohort
        if cohort is None:
            cohort = Path(tmp) / "cohort"
            simulate_cohort(cohort, args.preset, workers=args.workers)
        table = features_for_cases(list_cases(cohort), require_doses=True, workers=args.workers,
                                   radiomics_params=DEFAULT_PARAMS_PATH)
    _, card = train_models(table, feature_sets=("uptake", "radiomics"))
    print(f"cohort: {cohort.name if args.cohort else args.preset} ({table['case_id'].nunique()} virtual patients)")
    print(f"{'group':<10}{'n':>6}{'uptake+clinical':>18}{'+ radiomics':>14}{'baseline':>10}  selected")
    for group, m in card["metrics"].items():
        print(f"{group:<10}{m['n']:>6}{100 * m['best_mape_uptake']:>17.1f}%{100 * m['best_mape_radiomics']:>13.1f}%"
              f"{100 * m['baseline_mape']:>9.1f}%  {m['selected']}")


if __name__ == "__main__":
    main()
