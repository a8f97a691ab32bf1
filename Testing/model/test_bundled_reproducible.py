"""The bundled model is reproduced by its build command (slow: simulates 500 patients and retrains)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from psmadose.modelfile import BUNDLED_MODEL_SHA256, CARD_FILE, bundled_model_dir
from psmadose.provenance import library_versions

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_build_command_reproduces_the_bundled_model(tmp_path):
    card = json.loads((bundled_model_dir() / CARD_FILE).read_text())
    subprocess.run([sys.executable, str(ROOT / "tools" / "build_bundled_model.py"), "--no-install", "--keep",
                    str(tmp_path)], check=True, capture_output=True, timeout=3600)
    rebuilt = json.loads((tmp_path / "model" / CARD_FILE).read_text())
    same_libraries = {k: v for k, v in card["library_versions"].items() if k != "psmadose"} == {
        k: v for k, v in library_versions().items() if k != "psmadose"}
    if same_libraries:
        # Same code and library versions: the model file is byte-identical.
        assert rebuilt["sha256"] == BUNDLED_MODEL_SHA256 == card["sha256"]
    for group, metrics in card["metrics"].items():
        for key in ("mape", "r2", "baseline_mape"):
            if same_libraries:
                assert rebuilt["metrics"][group][key] == metrics[key], (group, key)
            else:  # other library versions may change floating-point details, not the science
                assert rebuilt["metrics"][group][key] == pytest.approx(metrics[key], abs=0.02), (group, key)
