#!/usr/bin/env python3
"""Train the shipped model: models/default.joblib + models/default.json.

Trains on training_data/train.jsonl (threshold chosen on grouped cross-validation of train plus
valid.jsonl), evaluates on test.jsonl — whole writing styles the model never saw — and writes the
test metrics by language into the model card. Fixed seed: the same corpus gives the same model.

--transfer also measures how the features carry across languages and styles and stores the
numbers in the card: (1) train without de/fr/pt, score every de/fr/pt example; (2) leave one
source (batch) out at a time over the whole corpus.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mailsort.classify.data import Example, digest, load_examples  # noqa: E402
from mailsort.classify.evaluate import evaluate, score_predictions  # noqa: E402
from mailsort.classify.train import Params, choose_threshold, fit  # noqa: E402

DATA = ROOT / "training_data"
MAIN_LANGS = ("en", "it", "es", "ru")
SMALL_LANGS = ("de", "fr", "pt")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def table(report: dict, title: str) -> str:
    lines = [f"{title}: n={report['n']} macro-F1={report['macro_f1']} "
             f"critical recall={report['critical']['recall']} precision={report['critical']['precision']}",
             "  lang     n  macro-F1  crit-recall  crit-prec  confusion [[tn, fp], [fn, tp]]"]
    for lang, m in report["by_language"].items():
        lines.append(f"  {lang:4s} {m['n']:5d}  {m['macro_f1']!s:8s}  {m['critical_recall']!s:11s}  "
                     f"{m['critical_precision']!s:9s}  {m['confusion']}")
    return "\n".join(lines)


def transfer(everything: list[Example], params: Params, seed: int) -> dict:
    """Cross-language and leave-one-source-out scores (each model with its own threshold)."""
    out: dict = {}
    train = [e for e in everything if e.lang not in SMALL_LANGS]
    held = [e for e in everything if e.lang in SMALL_LANGS]
    if held:
        log(f"transfer: training on {len(train)} {'/'.join(MAIN_LANGS)} examples, scoring {len(held)} de/fr/pt")
        clf = fit(train, seed, params=params)
        r = evaluate(clf, held)
        out["without_de_fr_pt"] = {"n": r["n"], "macro_f1": r["macro_f1"],
                                   "critical_recall": r["critical"]["recall"],
                                   "by_language": r["by_language"]}
        log(table(r, "trained without de/fr/pt, scored on de/fr/pt"))
    # leave one source out: out-of-source scores for every example, one shared threshold
    from mailsort.classify.text import document
    from mailsort.classify.train import build_pipeline

    sources = sorted({e.source for e in everything})
    log(f"leave-one-source-out over {len(sources)} sources")
    docs = [document(e.subject, e.body) for e in everything]
    y = np.array([e.critical for e in everything])
    src = np.array([e.source for e in everything])
    pipe = build_pipeline(params, seed)
    X = pipe.named_steps["features"].fit_transform(docs)
    scores = np.zeros(len(everything))
    from sklearn.base import clone

    for s in sources:
        test = src == s
        m = clone(pipe.named_steps["model"]).fit(X[~test], y[~test])
        scores[test] = m.predict_proba(X[test])[:, 1]
    th = choose_threshold(y, scores, params.target_recall)
    r = score_predictions(y, scores >= th, [e.lang for e in everything])
    per_source = {}
    for s in sources:
        sel = src == s
        per_source[s] = score_predictions(y[sel], scores[sel] >= th, [s] * int(sel.sum()))["by_language"][s]
    out["leave_one_source_out"] = {"threshold": round(th, 4), "n": r["n"], "macro_f1": r["macro_f1"],
                                   "critical_recall": r["critical"]["recall"],
                                   "by_language": r["by_language"],
                                   "worst_sources": sorted(
                                       ({"source": s, "macro_f1": m["macro_f1"],
                                         "critical_recall": m["critical_recall"]}
                                        for s, m in per_source.items()),
                                       key=lambda d: d["macro_f1"] or 0)[:8]}
    log(table(r, f"leave-one-source-out (one threshold {th:.3f})"))
    for d in out["leave_one_source_out"]["worst_sources"]:
        log(f"  weakest: {d['source']}: macro-F1 {d['macro_f1']}, recall {d['critical_recall']}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--out", type=Path, default=ROOT / "models" / "default.joblib")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--transfer", action="store_true", help="also run the transfer experiments")
    args = ap.parse_args(argv)

    train = load_examples(args.data / "train.jsonl")
    valid = load_examples(args.data / "valid.jsonl")
    test = load_examples(args.data / "test.jsonl")
    params = Params()
    t0 = time.perf_counter()
    clf = fit(train, args.seed, valid=valid, params=params, progress=log)
    seconds = time.perf_counter() - t0
    report = evaluate(clf, test)
    valid_report = evaluate(clf, valid)
    log(table(report, "held-out test split"))
    clf.card["metrics"] = {"test": report, "valid": valid_report}
    clf.card["evaluation_data"] = {
        "test": {"digest": digest(test), "size": len(test),
                 "sources": sorted({e.source for e in test})},
        "valid": {"digest": digest(valid), "size": len(valid),
                  "sources": sorted({e.source for e in valid})},
    }
    if args.transfer:
        clf.card["experiments"] = transfer(train + valid + test, params, args.seed)
    clf.save(args.out)
    size = args.out.stat().st_size
    print(json.dumps({
        "model": str(args.out), "bytes": size, "train_seconds": round(seconds, 1),
        "threshold": round(clf.threshold, 4), "test": {
            "macro_f1": report["macro_f1"], "critical_recall": report["critical"]["recall"],
            "by_language": {k: {"macro_f1": v["macro_f1"], "critical_recall": v["critical_recall"]}
                            for k, v in report["by_language"].items()}},
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
