"""Retraining with the user's corrections, guarded so a bad batch of corrections cannot ship.

The user's corrections (mail they moved between the Critical and Routine folders) are added to the
authored corpus with a higher weight. The new model is scored on the fixed validation split — the
same one for every candidate, never trained on — and accepted only if it still catches critical
mail (recall >= 0.95) and is not clearly worse overall (macro-F1 at most one point below the
current model's). Installing keeps the previous model beside the new one for rollback.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from mailsort.classify.data import Example
from mailsort.classify.evaluate import evaluate
from mailsort.classify.model import Classifier, card_path
from mailsort.classify.text import document
from mailsort.classify.train import MIN_RECALL, Params, fit
from mailsort.errors import ModelError, UsageError

MAX_F1_DROP = 0.01


@dataclass(frozen=True)
class RetrainOutcome:
    """What retraining produced and whether it may replace the current model (and why)."""

    accepted: bool
    reason: str
    new: Classifier
    old_metrics: dict | None
    new_metrics: dict


def merge_corrections(
    base: Sequence[Example], user: Sequence[Example], user_weight: float
) -> list[Example]:
    """Base corpus plus corrections; where they disagree about a message, the user wins.

    A correction replaces any base example with the same id or the same text (subject and new
    body as the model reads them). Corrections without an explicit weight get `user_weight`.
    """
    user = [e if e.weight != 1.0 else replace(e, weight=user_weight) for e in user]
    user_ids = {e.id for e in user}
    user_docs = {document(e.subject, e.body) for e in user}
    kept = [
        e for e in base
        if e.id not in user_ids and document(e.subject, e.body) not in user_docs
    ]
    return kept + user


def retrain(
    base_train: Sequence[Example],
    base_valid: Sequence[Example],
    user_examples: Sequence[Example],
    current: Classifier | None,
    *,
    user_weight: float = 3.0,
    force: bool = False,
    seed: int = 0,
    params: Params = Params(),
    progress: Callable[[str], None] | None = None,
) -> RetrainOutcome:
    """Fit on base_train + corrections, judge on base_valid against `current` (see module doc)."""
    if not base_valid:
        raise UsageError("retraining needs a validation set to judge the new model on")
    if user_weight <= 0:
        raise UsageError(f"user_weight must be positive, got {user_weight}")
    examples = merge_corrections(base_train, user_examples, user_weight)
    new = fit(examples, seed, valid=base_valid, params=params, progress=progress)
    new_metrics = evaluate(new, base_valid)
    old_metrics = evaluate(current, base_valid) if current is not None else None
    new.card["retrain"] = {
        "user_examples": len(user_examples),
        "user_weight": user_weight,
        "validation": {"n": new_metrics["n"], "macro_f1": new_metrics["macro_f1"],
                       "critical_recall": new_metrics["critical"]["recall"]},
    }

    recall = new_metrics["critical"]["recall"] or 0.0
    f1 = new_metrics["macro_f1"] or 0.0
    problems = []
    if recall < MIN_RECALL:
        problems.append(f"critical recall {recall:.3f} < {MIN_RECALL}")
    if old_metrics is not None:
        old_f1 = old_metrics["macro_f1"] or 0.0
        if f1 < old_f1 - MAX_F1_DROP:
            problems.append(f"macro-F1 {f1:.3f} is more than {MAX_F1_DROP * 100:.0f} point "
                            f"below the current model's {old_f1:.3f}")
        versus = f" (current model: macro-F1 {old_f1:.3f}, " \
                 f"recall {old_metrics['critical']['recall'] or 0.0:.3f})"
    else:
        versus = " (no current model)"
    summary = f"new model on {new_metrics['n']} validation examples: macro-F1 {f1:.3f}, " \
              f"critical recall {recall:.3f}{versus}"
    if not problems:
        return RetrainOutcome(True, "accepted: " + summary, new, old_metrics, new_metrics)
    if force:
        return RetrainOutcome(True, "forced despite " + "; ".join(problems) + ": " + summary,
                              new, old_metrics, new_metrics)
    return RetrainOutcome(False, "refused: " + "; ".join(problems) + ": " + summary,
                          new, old_metrics, new_metrics)


def prev_path(path: str | Path) -> Path:
    """Where the previous model is kept: `<name>.prev.joblib` (card `<name>.prev.json`)."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix or '.joblib'}")


def install_model(classifier: Classifier, path: str | Path) -> Path:
    """Save `classifier` at `path`, keeping the model that was there as `<name>.prev.*`."""
    path = Path(path)
    prev = prev_path(path)
    if path.exists() and card_path(path).exists():
        shutil.copy2(path, prev)
        shutil.copy2(card_path(path), card_path(prev))
    classifier.save(path)
    return path


def rollback_model(path: str | Path) -> Path:
    """Put `<name>.prev.*` back in place (the current model becomes the .prev one)."""
    path = Path(path)
    prev = prev_path(path)
    if not (prev.exists() and card_path(prev).exists()):
        raise ModelError(f"no previous model at {prev} to roll back to")
    tmp = path.with_name(f".{path.stem}.swap{path.suffix}")
    pairs = [(path, prev), (card_path(path), card_path(prev))]
    for cur, old in pairs:
        if cur.exists():
            shutil.copy2(cur, tmp)
            shutil.copy2(old, cur)
            shutil.move(tmp, old)
        else:
            shutil.copy2(old, cur)
    return path


# ------------------------------------------------------------------------------------- the train command


@dataclass(frozen=True)
class TrainResult:
    """What `mailsort train` did: the gate's verdict, and where the model went (if anywhere)."""

    outcome: RetrainOutcome
    out: Path
    installed: bool
    dry_run: bool
    current: Path | None
    base_examples: int
    user_examples: int

    @property
    def exit_code(self) -> int:
        """0 when the model was (or, in a dry run, would be) installed; 1 when the gate refused it."""
        return 0 if self.outcome.accepted else 1

    def to_json(self) -> dict:
        return {
            "accepted": self.outcome.accepted,
            "installed": self.installed,
            "dry_run": self.dry_run,
            "reason": self.outcome.reason,
            "out": str(self.out),
            "previous": str(prev_path(self.out)) if self.installed and prev_path(self.out).exists() else None,
            "current": str(self.current) if self.current else None,
            "examples": {"base": self.base_examples, "user": self.user_examples},
            "threshold": round(float(self.outcome.new.threshold), 4),
            "new": _summary(self.outcome.new_metrics),
            "old": _summary(self.outcome.old_metrics) if self.outcome.old_metrics else None,
        }


def _summary(m: dict) -> dict:
    return {"n": m["n"], "macro_f1": m["macro_f1"], "critical_recall": m["critical"]["recall"],
            "critical_precision": m["critical"]["precision"],
            "by_language": {lang: {"n": v["n"], "macro_f1": v["macro_f1"],
                                   "critical_recall": v["critical_recall"]}
                            for lang, v in m["by_language"].items()}}


def train_and_install(
    base_train: Sequence[Example],
    base_valid: Sequence[Example],
    user_examples: Sequence[Example],
    *,
    out: str | Path,
    current: str | Path | None,
    force: bool = False,
    dry_run: bool = False,
    user_weight: float = 3.0,
    progress: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train, judge against the model at `current` (when there is one) and install at `out` if the
    gate accepts (keeping the model that was at `out` as `.prev`). A dry run installs nothing.

    A current model that cannot be loaded (tampered, built by another scikit-learn) stops here with
    its ModelError — it cannot be compared — unless `force` is given.
    """
    from mailsort.classify.model import load_classifier

    out = Path(out)
    current_path = Path(current) if current is not None else None
    old: Classifier | None = None
    if current_path is not None and current_path.exists():
        try:
            old = load_classifier(current_path)
        except ModelError as exc:
            if not force:
                raise ModelError(f"{exc} (the new model cannot be compared with it; "
                                 "--force replaces it without comparing)") from None
            if progress:
                progress(f"ignoring the current model: {exc}")
    else:
        current_path = None
    outcome = retrain(base_train, base_valid, user_examples, old, user_weight=user_weight, force=force,
                      progress=progress)
    installed = False
    if outcome.accepted and not dry_run:
        install_model(outcome.new, out)
        installed = True
    return TrainResult(outcome, out, installed, dry_run, current_path, len(base_train), len(user_examples))
