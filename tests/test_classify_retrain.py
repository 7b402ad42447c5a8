"""Retraining: accepted when at least as good, refused when worse, previous model kept."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from classify_support import synthetic

from mailsort.classify.model import Classifier, load_classifier
from mailsort.classify.retrain import install_model, merge_corrections, prev_path, retrain, rollback_model
from mailsort.classify.train import fit
from mailsort.errors import ModelError, UsageError


@pytest.fixture(scope="module")
def corpus() -> tuple[list, list, Classifier]:
    data = synthetic(20)
    valid = [e for e in data if e.source.endswith("style3")]
    train = [e for e in data if not e.source.endswith("style3")]
    return train, valid, fit(train, valid=valid, seed=0)


def test_good_corrections_are_accepted(corpus) -> None:
    train, valid, current = corpus
    user = [replace(e, id=f"user-{e.id}", source="user/corrections") for e in synthetic(3, seed=7)]
    out = retrain(train, valid, user, current)
    assert out.accepted, out.reason
    assert out.reason.startswith("accepted")
    assert out.new_metrics["critical"]["recall"] >= 0.95
    assert out.old_metrics is not None
    assert out.new.card["retrain"]["user_examples"] == len(user)


def test_flipped_labels_are_refused(corpus) -> None:
    train, valid, current = corpus
    user = [replace(e, id=f"bad-{e.id}", label="routine" if e.critical else "critical",
                    source="user/corrections") for e in train]
    out = retrain(train, valid, user, current, user_weight=5.0)
    assert not out.accepted
    assert out.reason.startswith("refused")
    assert "recall" in out.reason or "macro-F1" in out.reason
    forced = retrain(train, valid, user, current, user_weight=5.0, force=True)
    assert forced.accepted and forced.reason.startswith("forced")


def test_first_model_needs_only_recall(corpus) -> None:
    train, valid, _ = corpus
    assert retrain(train, valid, [], None).accepted


def test_needs_a_validation_set(corpus) -> None:
    train, _, current = corpus
    with pytest.raises(UsageError):
        retrain(train, [], [], current)


def test_corrections_replace_conflicting_base_examples(corpus) -> None:
    train, _, _ = corpus
    victim = train[0]
    fix = replace(victim, id="user-1", label="routine" if victim.critical else "critical", source="user")
    merged = merge_corrections(train, [fix], 3.0)
    assert victim not in merged
    assert [e for e in merged if e.id == "user-1"][0].weight == 3.0
    assert len(merged) == len(train)


def test_install_keeps_previous_and_rolls_back(corpus, tmp_path: Path) -> None:
    train, valid, current = corpus
    path = tmp_path / "default.joblib"
    install_model(current, path)
    assert not prev_path(path).exists()
    newer = fit(train[: len(train) // 2] + train[len(train) // 2 :: 2], seed=1)
    install_model(newer, path)
    prev = prev_path(path)
    assert prev.name == "default.prev.joblib" and prev.with_suffix(".json").exists()
    assert load_classifier(prev).threshold == current.threshold
    assert load_classifier(path).threshold == newer.threshold
    rollback_model(path)
    assert load_classifier(path).threshold == current.threshold
    assert load_classifier(prev).threshold == newer.threshold


def test_rollback_without_previous(tmp_path: Path) -> None:
    with pytest.raises(ModelError):
        rollback_model(tmp_path / "none.joblib")
