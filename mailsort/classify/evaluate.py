"""Scores of a classifier on labelled examples, in the `evaluate --json` shape of DESIGN.md.

The headline numbers are macro-F1 (both classes count, whatever their share) and critical recall
(the share of critical mail we catch: missing one is the costly error), overall and per language,
because a model that is good in English and blind in Russian is not good.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mailsort.classify.data import Example
from mailsort.classify.model import Classifier
from mailsort.errors import UsageError


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 4) if b else None


def _f1(p: float | None, r: float | None) -> float:
    if not p or not r:
        return 0.0
    return round(2 * p * r / (p + r), 4)


def metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """Counts and rates for boolean arrays (True = critical).

    Rates whose denominator is zero are None (JSON null): "no critical mail in this language"
    is not a recall of 0. macro-F1 averages the classes present in `y_true`.
    """
    y_true = np.asarray(y_true, dtype=bool)
    y_pred = np.asarray(y_pred, dtype=bool)
    tp = int(np.sum(y_true & y_pred))
    fp = int(np.sum(~y_true & y_pred))
    fn = int(np.sum(y_true & ~y_pred))
    tn = int(np.sum(~y_true & ~y_pred))
    out: dict = {"n": int(y_true.size)}
    for name, (hit, miss_true, miss_pred) in {
        "critical": (tp, fn, fp),
        "routine": (tn, fp, fn),
    }.items():
        p = _ratio(hit, hit + miss_pred)
        r = _ratio(hit, hit + miss_true)
        out[name] = {"precision": p, "recall": r, "f1": _f1(p, r), "support": hit + miss_true}
    present = [c for c in ("critical", "routine") if out[c]["support"]]
    out["macro_f1"] = (
        round(sum(out[c]["f1"] for c in present) / len(present), 4) if present else None
    )
    out["accuracy"] = _ratio(tp + tn, y_true.size)
    out["confusion"] = [[tn, fp], [fn, tp]]
    return out


def score_predictions(y_true: np.ndarray, y_pred: np.ndarray, langs: Sequence[str]) -> dict:
    """The full report for predictions already made (used by training on held-out scores)."""
    overall = metrics(y_true, y_pred)
    langs_arr = np.asarray(langs)
    by_language = {}
    for lang in sorted(set(langs)):
        sel = langs_arr == lang
        m = metrics(np.asarray(y_true)[sel], np.asarray(y_pred)[sel])
        by_language[lang] = {
            "n": m["n"],
            "macro_f1": m["macro_f1"],
            "critical_recall": m["critical"]["recall"],
            "critical_precision": m["critical"]["precision"],
            "accuracy": m["accuracy"],
            "confusion": m["confusion"],
            "critical": m["critical"],
            "routine": m["routine"],
        }
    return {
        "n": overall["n"],
        "macro_f1": overall["macro_f1"],
        "accuracy": overall["accuracy"],
        "critical": overall["critical"],
        "routine": overall["routine"],
        "by_language": by_language,
        "confusion": overall["confusion"],
    }


def evaluate(classifier: Classifier, examples: Sequence[Example]) -> dict:
    """Score `classifier` on `examples`; confusion matrices are [[tn, fp], [fn, tp]]."""
    scores = classifier.scores([(e.subject, e.body) for e in examples])
    y_true = np.array([e.critical for e in examples], dtype=bool)
    out = score_predictions(y_true, scores >= classifier.threshold, [e.lang for e in examples])
    out["threshold"] = round(float(classifier.threshold), 4)
    return out


def write_report(classifier: Classifier, examples: Sequence[Example], out_dir: str | Path) -> list[Path]:
    """PNG charts: confusion matrix overall and per language, and the precision-recall curve.

    matplotlib is imported here, with the Agg backend, so classifying never pays for it and no
    display is needed. Without matplotlib (the `report` extra) this is a UsageError saying so.
    """
    try:
        import matplotlib
    except ImportError:
        raise UsageError("the report needs matplotlib: pip install 'mailsort[report]'") from None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--report: cannot create {out_dir}: {exc.strerror or exc}") from None
    scores = classifier.scores([(e.subject, e.body) for e in examples])
    y_true = np.array([e.critical for e in examples], dtype=bool)
    report = score_predictions(y_true, scores >= classifier.threshold, [e.lang for e in examples])
    written: list[Path] = []

    def confusion_png(matrix: list[list[int]], title: str, name: str) -> None:
        fig, ax = plt.subplots(figsize=(3.6, 3.2), dpi=100)
        arr = np.array(matrix)
        ax.imshow(arr, cmap="Blues")
        for (i, j), v in np.ndenumerate(arr):
            ax.text(j, i, str(v), ha="center", va="center",
                    color="white" if v > arr.max() / 2 else "black")
        ax.set_xticks([0, 1], ["routine", "critical"])
        ax.set_yticks([0, 1], ["routine", "critical"])
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(title, fontsize=9)
        fig.tight_layout()
        path = out_dir / name
        fig.savefig(path)
        plt.close(fig)
        written.append(path)

    confusion_png(report["confusion"],
                  f"all (n={report['n']}, macro-F1={report['macro_f1']})", "confusion.png")
    for lang, m in report["by_language"].items():
        confusion_png(m["confusion"], f"{lang} (n={m['n']}, macro-F1={m['macro_f1']})",
                      f"confusion_{lang}.png")

    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(y_true[order])
    precision = tp / np.arange(1, len(order) + 1)
    recall = tp / max(int(y_true.sum()), 1)
    fig, ax = plt.subplots(figsize=(4.5, 3.6), dpi=100)
    ax.plot(recall, precision, lw=1.5)
    m = report["critical"]
    if m["recall"] is not None and m["precision"] is not None:
        ax.plot([m["recall"]], [m["precision"]], "o", color="crimson",
                label=f"threshold {classifier.threshold:.3f}")
        ax.legend(loc="lower left")
    ax.axvline(0.95, color="grey", ls=":", lw=1)
    ax.set_xlabel("critical recall")
    ax.set_ylabel("critical precision")
    ax.set_xlim(0, 1.01)
    ax.set_ylim(0, 1.01)
    ax.set_title("precision-recall (critical)", fontsize=9)
    fig.tight_layout()
    path = out_dir / "precision_recall.png"
    fig.savefig(path)
    plt.close(fig)
    written.append(path)
    return written
