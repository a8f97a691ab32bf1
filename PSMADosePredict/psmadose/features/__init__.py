"""Feature extraction: per-segment uptake metrics, per-patient burden and clinical covariates.

``extract_features(case)`` returns one row per recognised segment. Feature families are separate modules
(``uptake``, ``patient``); radiomics will join as another family with its own settings file, and the model
card lists which families a model needs.
"""

from .table import FEATURE_FAMILIES, extract_features, features_for_cases

__all__ = ["FEATURE_FAMILIES", "extract_features", "features_for_cases"]
