"""Model storage: save/load round trip, and refusing files the card does not vouch for."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from classify_support import synthetic

from mailsort.classify.model import Classifier, Verdict, default_model_path, load_classifier
from mailsort.classify.train import fit
from mailsort.errors import ModelError


@pytest.fixture(scope="module")
def model() -> Classifier:
    return fit(synthetic(16), seed=0)


@pytest.fixture()
def saved(model: Classifier, tmp_path: Path) -> Path:
    path = tmp_path / "m.joblib"
    model.save(path)
    return path


PAIRS = [("Site down", "error 500 on every page"), ("", "ho dimenticato la password"),
         ("Сайт", "сайт взломали"), ("factura", "una pregunta sobre vuestra última factura")]


def test_round_trip_gives_the_same_verdicts(model: Classifier, saved: Path) -> None:
    loaded = load_classifier(saved)
    assert loaded.threshold == model.threshold
    assert loaded.predict(PAIRS) == model.predict(PAIRS)
    assert all(isinstance(v, Verdict) and 0.0 <= v.p_critical <= 1.0 for v in loaded.predict(PAIRS))


def test_card_describes_the_model(saved: Path) -> None:
    card = json.loads(saved.with_suffix(".json").read_text())
    assert card["file"]["name"] == "m.joblib"
    assert len(card["file"]["sha256"]) == 64
    assert card["file"]["bytes"] == saved.stat().st_size
    assert set(card["versions"]) >= {"python", "sklearn", "numpy", "joblib"}
    assert card["training"]["size"] == 16 * 2 * 4
    assert len(card["training"]["digest"]) == 64
    assert 0.0 < card["threshold"] < 1.0
    assert card["created"]


def test_tampered_file_is_refused(saved: Path) -> None:
    data = bytearray(saved.read_bytes())
    data[len(data) // 2] ^= 0xFF
    saved.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="sha256"):
        load_classifier(saved)


def test_replaced_file_is_refused_before_unpickling(saved: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    # a pickle that would create a file if it were ever loaded
    import pickle

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    saved.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(ModelError):
        load_classifier(saved)
    assert not marker.exists()


def test_missing_card_is_refused(saved: Path) -> None:
    saved.with_suffix(".json").unlink()
    with pytest.raises(ModelError, match="card"):
        load_classifier(saved)


def test_missing_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no model"):
        load_classifier(tmp_path / "nothing.joblib")


def test_other_sklearn_version_is_refused(saved: Path) -> None:
    card_path = saved.with_suffix(".json")
    card = json.loads(card_path.read_text())
    card["versions"]["sklearn"] = "0.24.2"
    card_path.write_text(json.dumps(card))
    with pytest.raises(ModelError, match="scikit-learn 0.24.2"):
        load_classifier(saved)


def test_error_messages_are_one_line(saved: Path) -> None:
    saved.write_bytes(b"junk")
    with pytest.raises(ModelError) as info:
        load_classifier(saved)
    assert "\n" not in str(info.value)


def test_default_model_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MAILSORT_MODEL", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))  # no retrained user model here
    assert default_model_path() == Path(__file__).resolve().parents[1] / "models" / "default.joblib"
    monkeypatch.setenv("MAILSORT_MODEL", str(tmp_path / "x.joblib"))
    assert default_model_path() == tmp_path / "x.joblib"


def test_predict_empty_batch(model: Classifier) -> None:
    assert model.predict([]) == []


def test_explain_names_readable_features(model: Classifier) -> None:
    reasons = model.explain("Site down", "the website is down, every page shows error 500", k=5)
    assert 0 < len(reasons) <= 5
    assert all(isinstance(name, str) and isinstance(w, float) for name, w in reasons)
    assert all(w > 0 for _, w in reasons)  # all pushed towards the verdict (critical)
    text = " ".join(name for name, _ in reasons)
    assert any(word in text for word in ("down", "500", "error", "website", "page"))
