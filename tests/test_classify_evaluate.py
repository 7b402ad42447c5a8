"""evaluate(): the `evaluate --json` shape of DESIGN.md, with numbers that add up."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from classify_support import synthetic

from mailsort.classify.evaluate import evaluate, metrics, write_report
from mailsort.classify.model import Classifier
from mailsort.classify.train import fit


@pytest.fixture(scope="module")
def model() -> Classifier:
    return fit(synthetic(16, seed=1), seed=0)


def test_shape_and_consistency(model: Classifier) -> None:
    data = synthetic(8, seed=2)
    r = evaluate(model, data)
    json.dumps(r)  # serialisable as is
    assert set(r) >= {"n", "macro_f1", "accuracy", "critical", "routine", "by_language", "confusion"}
    for cls in ("critical", "routine"):
        assert set(r[cls]) >= {"precision", "recall", "f1"}
    assert r["n"] == len(data)
    (tn, fp), (fn, tp) = r["confusion"]
    assert tn + fp + fn + tp == len(data)
    assert tp + fn == sum(e.critical for e in data)
    assert r["critical"]["recall"] == pytest.approx(tp / (tp + fn), abs=1e-4)
    assert r["accuracy"] == pytest.approx((tp + tn) / len(data), abs=1e-4)
    assert set(r["by_language"]) == {"en", "it", "es", "ru"}
    for lang, m in r["by_language"].items():
        assert set(m) >= {"n", "macro_f1", "critical_recall", "critical_precision", "accuracy", "confusion"}
        assert m["n"] == sum(e.lang == lang for e in data)
        assert sum(map(sum, m["confusion"])) == m["n"]
    assert sum(m["n"] for m in r["by_language"].values()) == r["n"]


def test_metrics_by_hand() -> None:
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0], dtype=bool)
    p = np.array([1, 1, 1, 0, 1, 0, 0, 0, 0, 0], dtype=bool)
    m = metrics(y, p)
    assert m["confusion"] == [[5, 1], [1, 3]]
    assert m["critical"] == {"precision": 0.75, "recall": 0.75, "f1": 0.75, "support": 4}
    assert m["routine"]["recall"] == pytest.approx(5 / 6, abs=1e-4)
    assert m["macro_f1"] == pytest.approx((0.75 + 2 * 5 / (2 * 5 + 2)) / 2, abs=1e-4)


def test_rates_without_a_class_are_null() -> None:
    m = metrics(np.zeros(3, dtype=bool), np.zeros(3, dtype=bool))
    assert m["critical"]["recall"] is None
    assert m["macro_f1"] == 1.0  # only the class present counts


def test_wrong_labels_score_badly(model: Classifier) -> None:
    data = synthetic(8, seed=2)
    flipped = [replace(e, label="routine" if e.critical else "critical") for e in data]
    assert evaluate(model, flipped)["macro_f1"] < 0.3 < evaluate(model, data)["macro_f1"]


def test_report_writes_pngs(model: Classifier, tmp_path: Path) -> None:
    paths = write_report(model, synthetic(6, seed=3), tmp_path / "report")
    names = {p.name for p in paths}
    assert {"confusion.png", "precision_recall.png", "confusion_ru.png"} <= names
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
