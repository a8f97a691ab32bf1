"""Model files: skops round trip, hash verification, explicit trust, foreign and tampered files."""

from __future__ import annotations

import json
import pickle
import zipfile

import numpy as np
import pytest
import skops.io as sio
from psmadose.errors import InputError
from psmadose.modelfile import (
    BUNDLED_MODEL_SHA256,
    CARD_FILE,
    MODEL_FILE,
    bundled_model_dir,
    load_model,
    save_model,
)
from psmadose.training import train_models
from sklearn.svm import SVR

from .test_model import synthetic_table


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    model_set, card = train_models(synthetic_table(20, 4), candidates=("population_mean", "physics_ridge"))
    directory = tmp_path_factory.mktemp("model")
    save_model(model_set, card, directory)
    return directory


def test_round_trip_gives_the_same_predictions(model_dir):
    table = synthetic_table(3, 2, seed=9)
    loaded = load_model(model_dir, trust=True)
    model_set, _ = train_models(synthetic_table(20, 4), candidates=("population_mean", "physics_ridge"))
    assert np.allclose(loaded.model_set.predict(table)["predicted_gy_per_gbq"],
                       model_set.predict(table)["predicted_gy_per_gbq"])
    assert not loaded.bundled


def test_saving_twice_gives_identical_bytes(model_dir, tmp_path):
    # Determinism: the same training data give the same model bytes (fixed zip timestamps).
    model_set, card = train_models(synthetic_table(20, 4), candidates=("population_mean", "physics_ridge"))
    save_model(model_set, card, tmp_path)
    assert (tmp_path / MODEL_FILE).read_bytes() == (model_dir / MODEL_FILE).read_bytes()


def test_a_model_that_is_not_bundled_needs_explicit_trust(model_dir):
    with pytest.raises(InputError, match="--trust-model"):
        load_model(model_dir)


def test_tampered_model_is_refused(model_dir, tmp_path):
    for name in (MODEL_FILE, CARD_FILE):
        (tmp_path / name).write_bytes((model_dir / name).read_bytes())
    data = bytearray((tmp_path / MODEL_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / MODEL_FILE).write_bytes(bytes(data))
    with pytest.raises(InputError, match="does not match its model card"):
        load_model(tmp_path, trust=True)


def _with_card(directory, data: bytes):
    """A card as psmadose writes it (content digest, model id naming the file): a forger who knows the format
    gets past the card checks, so the defences behind them are what these tests exercise."""
    import hashlib

    from psmadose.modelfile import bundled_model_dir, write_card

    (directory / MODEL_FILE).write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    card = json.loads((bundled_model_dir() / CARD_FILE).read_text(encoding="utf-8"))
    card.update(sha256=digest, model_id=f"forged-{digest[:12]}")
    write_card(directory, card)
    return directory


class Boom:
    def __reduce__(self):  # would run code if unpickled
        return (exec, ("import pathlib; pathlib.Path('PWNED').write_text('x')",))


def test_a_pickle_is_never_executed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    directory = tmp_path / "m"
    directory.mkdir()
    _with_card(directory, pickle.dumps(Boom()))
    with pytest.raises(InputError, match="not a skops model"):
        load_model(directory, trust=True)
    assert not (tmp_path / "PWNED").exists()


class Foreign:
    def __init__(self):
        self.payload = [1, 2, 3]


def test_foreign_types_are_refused_even_with_trust(tmp_path):
    # A type outside the allow-list is never constructed by skops.
    _with_card(tmp_path, sio.dumps(Foreign()))
    with pytest.raises(InputError, match="types psmadose does not use"):
        load_model(tmp_path, trust=True)
    # A scikit-learn estimator is a type skops trusts, but it is not a psmadose model set.
    _with_card(tmp_path, sio.dumps(SVR().fit(np.ones((3, 1)), [1, 2, 3])))
    with pytest.raises(InputError, match="not a psmadose model set"):
        load_model(tmp_path, trust=True)


def test_a_zip_that_is_not_skops_is_refused(tmp_path):
    path = tmp_path / "x.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("hello.txt", "hi")
    _with_card(tmp_path, path.read_bytes())
    with pytest.raises(InputError):
        load_model(tmp_path, trust=True)


def test_missing_or_broken_card(tmp_path, model_dir):
    with pytest.raises(InputError, match="not a psmadose model directory"):
        load_model(tmp_path, trust=True)
    (tmp_path / MODEL_FILE).write_bytes((model_dir / MODEL_FILE).read_bytes())
    (tmp_path / CARD_FILE).write_text("{broken")
    with pytest.raises(InputError, match="not valid JSON"):
        load_model(tmp_path, trust=True)


def test_bundled_model_hash_is_pinned_and_matches_its_card():
    directory = bundled_model_dir()
    card = json.loads((directory / CARD_FILE).read_text())
    import hashlib

    digest = hashlib.sha256((directory / MODEL_FILE).read_bytes()).hexdigest()
    assert digest == card["sha256"] == BUNDLED_MODEL_SHA256
    loaded = load_model()
    assert loaded.bundled and loaded.sha256 == digest
    assert "not clinically validated" in card["intended_use"]
    assert "virtual patients" in card["intended_use"]
    for group in ("tumour", "kidney", "salivary"):
        metrics = card["metrics"][group]
        assert metrics["mape"] < metrics["baseline_mape"]
        assert {"mae_gy_per_gbq", "r2", "oracle_mape", "n"} <= set(metrics)
    assert "held-out virtual cohort" in card["validation"]["measured_on"]


def test_a_model_from_before_conformal_intervals_is_refused_with_a_retrain_hint(tmp_path):
    from psmadose.modelfile import deterministic_skops_bytes

    model_set, _ = train_models(synthetic_table(20, 4), candidates=("population_mean", "physics_ridge"))
    # The layout of psmadose <= the first issue-7 session: one pooled residual quantile per group, no
    # multivariate domain check.
    model_set.intervals = None
    model_set.interval_log_quantiles = {"kidney": {"80": [-0.1, 0.1], "90": [-0.2, 0.2]}}
    for domain in model_set.domain.values():
        domain.pop("multivariate")
    _with_card(tmp_path, deterministic_skops_bytes(model_set))
    with pytest.raises(InputError, match="written by an older psmadose.*retrain it with 'psmadose train'"):
        load_model(tmp_path, trust=True)


def test_a_model_from_before_feature_names_in_loads_with_this_versions_attributes(tmp_path):
    """Model files written before issue 17 name the correction features ``features_in_`` (a list) and their
    physics estimators have no ``n_features_in_``: a site's trusted model still loads and predicts the same."""
    from psmadose.modelfile import deterministic_skops_bytes

    model_set, _ = train_models(synthetic_table(20, 4), candidates=("physics", "physics_ridge"))
    table = synthetic_table(3, 2, seed=9)
    expected = model_set.predict(table)["predicted_gy_per_gbq"].to_numpy()
    for model in model_set.models.values():
        model.features_in_ = model.feature_names_in_.tolist()
        del model.feature_names_in_, model.n_features_in_
        for estimator in (model.estimator_, getattr(model.estimator_, "baseline_", None)):
            if estimator is not None:
                del estimator.n_features_in_
    _with_card(tmp_path, deterministic_skops_bytes(model_set))
    loaded = load_model(tmp_path, trust=True).model_set
    for group, model in loaded.models.items():
        assert not hasattr(model, "features_in_")
        assert model.feature_names_in_.tolist() == model_set.models[group].features_in_
        assert model.n_features_in_ == len(model.feature_names_in_)
    np.testing.assert_array_equal(loaded.predict(table)["predicted_gy_per_gbq"].to_numpy(), expected)
