"""Model storage: save/load round trip, and refusing files the card does not vouch for."""

from __future__ import annotations

import json
from pathlib import Path

import joblib
import numpy as np
import pytest
from classify_support import save_format1, synthetic

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


def test_format2_does_not_depend_on_the_sklearn_version(saved: Path) -> None:
    card_path = saved.with_suffix(".json")
    card = json.loads(card_path.read_text())
    card["versions"]["sklearn"] = "0.24.2"  # arrays, not a pickled estimator: any version reads them
    card_path.write_text(json.dumps(card))
    assert load_classifier(saved).predict(PAIRS)


def test_unknown_format_is_refused_before_unpickling(saved: Path) -> None:
    card_path = saved.with_suffix(".json")
    card = json.loads(card_path.read_text())
    card["format"] = 3
    card_path.write_text(json.dumps(card))
    with pytest.raises(ModelError, match="format 3") as info:
        load_classifier(saved)
    assert "\n" not in str(info.value)


def test_payload_that_is_not_what_the_card_says_is_refused(saved: Path, tmp_path: Path) -> None:
    import hashlib

    import joblib

    for payload, match in [({"format": 1, "threshold": 0.5}, "unknown format"),
                           ({"format": 2, "threshold": 0.5, "views": [{"name": "char"}]}, "malformed")]:
        joblib.dump(payload, saved)
        card_path = saved.with_suffix(".json")
        card = json.loads(card_path.read_text())
        card["file"]["sha256"] = hashlib.sha256(saved.read_bytes()).hexdigest()
        card_path.write_text(json.dumps(card))
        with pytest.raises(ModelError, match=match):
            load_classifier(saved)


# -- FORMAT 1: a pickled scikit-learn pipeline, as earlier versions wrote (a user's retrained model)


@pytest.fixture(scope="module")
def old_pipeline():
    from mailsort.classify.text import document
    from mailsort.classify.train import build_pipeline

    examples = synthetic(16)
    docs = [document(e.subject, e.body) for e in examples]
    return build_pipeline().fit(docs, [e.critical for e in examples])


def test_format1_model_is_converted_on_load(old_pipeline, tmp_path: Path) -> None:
    from mailsort.classify.text import document

    path = save_format1(old_pipeline, 0.42, tmp_path / "old.joblib")
    loaded = load_classifier(path)
    assert loaded.threshold == 0.42 and loaded.card["format"] == 1
    pairs = PAIRS + [(e.subject, e.body) for e in synthetic(8, seed=3)]
    expected = old_pipeline.predict_proba([document(s, b) for s, b in pairs])[:, 1]
    np.testing.assert_allclose(loaded.scores(pairs), expected, rtol=0, atol=1e-5)
    assert loaded.explain("Site down", "the website is down, every page shows error 500")
    # saving it again writes FORMAT 2: arrays only, the same scores
    loaded.save(tmp_path / "new.joblib")
    payload = joblib.load(tmp_path / "new.joblib")
    assert payload["format"] == 2 and "pipeline" not in payload
    assert json.loads((tmp_path / "new.json").read_text())["format"] == 2
    np.testing.assert_allclose(load_classifier(tmp_path / "new.joblib").scores(pairs), expected,
                               rtol=0, atol=1e-5)


def test_format1_from_another_sklearn_is_refused_before_unpickling(old_pipeline, tmp_path: Path) -> None:
    path = save_format1(old_pipeline, 0.5, tmp_path / "old.joblib", sklearn_version="0.24.2")
    with pytest.raises(ModelError, match="scikit-learn 0.24.2") as info:
        load_classifier(path)
    assert "\n" not in str(info.value) and "mailsort train" in str(info.value)


def test_card_without_format_is_read_as_format1(old_pipeline, tmp_path: Path) -> None:
    path = save_format1(old_pipeline, 0.5, tmp_path / "old.joblib")
    card = json.loads(path.with_suffix(".json").read_text())
    del card["format"]
    path.with_suffix(".json").write_text(json.dumps(card))
    assert load_classifier(path).predict(PAIRS)


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


# -- the unpacked copy in the cache directory (read without joblib once the model file is verified)


def test_a_verified_model_is_read_from_its_unpacked_copy_afterwards(saved: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILSORT_CACHE_DIR", str(tmp_path / "cache"))
    first = load_classifier(saved)
    copies = list((tmp_path / "cache").glob("model-*.npz"))
    assert len(copies) == 1
    monkeypatch.setattr(joblib, "load", lambda *a, **k: pytest.fail("the copy was not used"))
    second = load_classifier(saved)
    assert second.scores(PAIRS).tolist() == first.scores(PAIRS).tolist()
    assert (second.threshold, second.card) == (first.threshold, first.card)


def test_a_damaged_copy_is_ignored_and_made_again(saved: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILSORT_CACHE_DIR", str(tmp_path / "cache"))
    expected = load_classifier(saved).scores(PAIRS).tolist()
    copy = next((tmp_path / "cache").glob("model-*.npz"))
    good = copy.read_bytes()
    copy.write_bytes(good[: len(good) // 2] + bytes(len(good) - len(good) // 2))  # zeroed second half
    assert load_classifier(saved).scores(PAIRS).tolist() == expected  # from the model file
    assert len(copy.read_bytes()) == len(good)  # made again …
    monkeypatch.setattr(joblib, "load", lambda *a, **k: pytest.fail("the new copy was not used"))
    assert load_classifier(saved).scores(PAIRS).tolist() == expected  # … and used


def test_the_copy_of_a_tampered_model_is_never_reached(saved: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILSORT_CACHE_DIR", str(tmp_path / "cache"))
    load_classifier(saved)
    saved.write_bytes(saved.read_bytes() + b"x")  # the card no longer vouches for it
    with pytest.raises(ModelError, match="sha256"):
        load_classifier(saved)


def test_an_unusable_cache_directory_changes_nothing(saved: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("x")
    monkeypatch.setenv("MAILSORT_CACHE_DIR", str(blocked / "cache"))
    assert load_classifier(saved).scores(PAIRS).tolist() == load_classifier(saved).scores(PAIRS).tolist()
