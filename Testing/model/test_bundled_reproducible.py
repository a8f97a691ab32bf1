"""The bundled model is reproduced by its build command (slow: simulates 500 patients and retrains).

What must match anywhere: the selected candidates, the metrics and the predictions on a fixed cohort (to 1e-6
relative). The bytes of model.skops only where they can: same library versions *and* same CPU features (SIMD paths
change the last bits of floating-point sums; a rebuild on another machine gave another sha256 with metrics equal
to 1e-13).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from psmadose.features.table import features_for_cases, list_cases
from psmadose.modelfile import BUNDLED_MODEL_SHA256, CARD_FILE, bundled_model_dir, load_model
from psmadose.provenance import library_versions

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

pytestmark = pytest.mark.slow


def test_build_command_reproduces_the_bundled_model(tmp_path):
    from build_bundled_model import build_platform

    card = json.loads((bundled_model_dir() / CARD_FILE).read_text())
    subprocess.run([sys.executable, str(ROOT / "tools" / "build_bundled_model.py"), "--no-install", "--keep",
                    str(tmp_path)], check=True, capture_output=True, timeout=3600)
    rebuilt = json.loads((tmp_path / "model" / CARD_FILE).read_text())
    same_libraries = {k: v for k, v in card["library_versions"].items() if k != "psmadose"} == {
        k: v for k, v in library_versions().items() if k != "psmadose"}
    if same_libraries and card.get("build_platform") == build_platform():
        assert rebuilt["sha256"] == BUNDLED_MODEL_SHA256 == card["sha256"]
    assert card["sha256"] == BUNDLED_MODEL_SHA256
    assert rebuilt["selected"] == card["selected"]
    tolerance = 1e-6 if same_libraries else 0.02  # other library versions may change details, not the science
    for group, metrics in card["metrics"].items():
        for key in ("mape", "r2", "baseline_mape", "physics_mape"):
            assert rebuilt["metrics"][group][key] == pytest.approx(metrics[key], rel=tolerance, abs=1e-12), (group, key)
    # Predictions of both models on a fixed cohort (the first held-out patients).
    table = features_for_cases(list_cases(tmp_path / "validation")[:5], workers=1)
    bundled = load_model().model_set.predict(table)["predicted_gy_per_gbq"].to_numpy()
    again = load_model(tmp_path / "model", trust=True).model_set.predict(table)["predicted_gy_per_gbq"].to_numpy()
    assert np.allclose(again, bundled, rtol=tolerance, atol=0)
