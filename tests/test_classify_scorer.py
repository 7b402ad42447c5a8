"""The numpy-only scorer: the same numbers as the scikit-learn pipeline it was exported from, and a
shipped model that loads, classifies and explains without importing scikit-learn or scipy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np
import pytest
from classify_support import ROOT, held_out, real_subset, synthetic

from mailsort.classify.model import Classifier, load_classifier, shipped_model_path
from mailsort.classify.ngrams import CHUNK_CHARS, doc_chunks
from mailsort.classify.text import document
from mailsort.classify.train import Params, build_pipeline


@pytest.fixture(scope="module")
def pipeline():
    """The shipped model's pipeline and parameters, fitted on a slice of the real corpus."""
    examples = real_subset() or synthetic(40)
    docs = [document(e.subject, e.body) for e in examples]
    return build_pipeline(Params()).fit(docs, np.array([e.critical for e in examples]))


def held_out_docs() -> list[str]:
    """Held-out mail, plus an empty document and one without a known n-gram, repeated until the
    batch spans several chunks (so the threaded path is compared too)."""
    docs = [document(e.subject, e.body) for e in held_out()] + ["", "qqqq zzzz xxxx"]
    while sum(len(d) for d in docs) < 1.5 * CHUNK_CHARS:
        docs += docs
    assert len(doc_chunks(docs)) > 1
    return docs


def test_scorer_equals_the_pipeline_on_held_out_mail(pipeline) -> None:
    docs = held_out_docs()
    expected = pipeline.predict_proba(docs)[:, 1]
    classifier = Classifier.from_pipeline(pipeline, 0.5)
    np.testing.assert_allclose(classifier.scorer.proba(docs), expected, rtol=0, atol=1e-5)
    np.testing.assert_allclose(classifier.scorer.decision(docs), pipeline.decision_function(docs),
                               rtol=0, atol=1e-5)
    assert len(np.unique(np.round(expected, 3))) > 50  # real spread of scores, not a constant


def test_saved_and_loaded_scorer_still_equals_the_pipeline(pipeline, tmp_path: Path) -> None:
    path = tmp_path / "m.joblib"
    Classifier.from_pipeline(pipeline, 0.4, {"kind": "test"}).save(path)
    loaded = load_classifier(path)
    examples = held_out()
    pairs = [(e.subject, e.body) for e in examples]
    expected = pipeline.predict_proba([document(s, b) for s, b in pairs])[:, 1]
    np.testing.assert_allclose(loaded.scores(pairs), expected, rtol=0, atol=1e-5)
    assert loaded.threshold == 0.4
    assert [v.critical for v in loaded.predict(pairs)] == list(expected >= 0.4)


def test_features_of_the_transformer_and_the_scorer_are_the_same_cells(pipeline) -> None:
    docs = [document(e.subject, e.body) for e in held_out()[:300]]
    scorer = Classifier.from_pipeline(pipeline, 0.5).scorer
    for (name, vec), view in zip(pipeline.named_steps["features"].transformer_list, scorer.views, strict=True):
        assert view.name == name
        x = vec.transform(docs)
        cells = view.cells(docs)
        np.testing.assert_array_equal(cells.rows, np.repeat(np.arange(len(docs)), np.diff(x.indptr)))
        np.testing.assert_array_equal(cells.cols, x.indices)
        np.testing.assert_array_equal(cells.normalised(), x.data)


def test_shipped_model_classifies_and_explains_without_sklearn_or_scipy() -> None:
    probe = f"""
import sys
from pathlib import Path
from mailsort.classify import load_classifier
classifier = load_classifier(Path({str(shipped_model_path())!r}))
verdicts = classifier.predict([
    ("Site down", "Hello, the website shows error 500 on every page since this morning."),
    ("Photo", "Hello, please add a new photo of Maria to the team page. Thanks"),
])
reasons = classifier.explain("Site down", "the website shows error 500 on every page")
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("sklearn", "scipy"))
print([v.label for v in verdicts], len(reasons), heavy)
assert "sklearn" not in sys.modules and "scipy" not in sys.modules, heavy
"""
    env = {k: v for k, v in os.environ.items() if k != "MAILSORT_MODEL"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['critical', 'routine'] 8 []"


def test_shipped_model_file_holds_plain_values_and_arrays() -> None:
    path = shipped_model_path()
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["format"] == 2
    payload = joblib.load(path)

    def kinds(value: object) -> set[str]:
        if isinstance(value, dict):
            assert all(isinstance(k, str) for k in value)
            return set().union(*(kinds(v) for v in value.values()))
        if isinstance(value, list):
            return set().union(*(kinds(v) for v in value))
        if isinstance(value, np.ndarray):
            return {f"ndarray[{value.dtype}]"}
        assert type(value) in (str, int, float, bool), type(value)
        return {type(value).__name__}

    assert kinds(payload) == {"str", "int", "float", "bool", "ndarray[uint64]", "ndarray[float32]",
                              "ndarray[float64]"}
    assert payload["format"] == 2 and payload["threshold"] == card["threshold"]
    assert [(v["name"], v["analyzer"], v["ngram_range"], v["strip_accents"]) for v in payload["views"]] == [
        ("char", "char_wb", [2, 5], True), ("word", "word", [1, 2], False)]
    assert sum(len(v["vocab"]) for v in payload["views"]) == card["params"]["features"]
    for v in payload["views"]:
        assert np.all(v["vocab"][1:] > v["vocab"][:-1])  # sorted, distinct hashes
        assert len(v["idf"]) == len(v["coef"]) == len(v["vocab"])


@pytest.mark.parametrize(("subject", "body", "label", "words"), [
    ("Site down", "Hello, the website shows error 500 on every page since this morning.", "critical",
     {"down", "error", "site"}),
    ("Сайт", "Сайт не работает, на всех страницах ошибка 500", "critical", {"не работает", "ошибка"}),
    ("Photo", "Hello, please add a new photo of Maria to the team page. Thanks", "routine",
     {"add", "photo", "thanks"}),
])
def test_shipped_model_explains_with_readable_words(subject, body, label, words) -> None:
    classifier = load_classifier(shipped_model_path())
    assert classifier.predict([(subject, body)])[0].label == label
    reasons = classifier.explain(subject, body, k=6)
    assert len(reasons) == 6
    sign = 1 if label == "critical" else -1
    assert all(sign * w > 0 for _, w in reasons)
    assert [abs(w) for _, w in reasons] == sorted((abs(w) for _, w in reasons), reverse=True)
    names = [name.split(":", 1)[1] for name, _ in reasons]
    assert all(name.split(":", 1)[0] in ("char", "word") for name, _ in reasons)
    assert words & set(names), names
    for i, a in enumerate(names):  # a piece of a feature already shown is not shown again
        assert not any(a in b for b in names[:i]), names
