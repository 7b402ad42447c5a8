#!/usr/bin/env python3
"""Benchmark the classifier against the targets of issue 4.

    python scripts/bench_classify.py [--model PATH] [--n 10000] [--no-train] [--json]

Measures, with the shipped model unless --model says otherwise:

  batch      classifying N messages (subject + body from training_data/, cycled) in one predict()
             call, best of 3 after a warm-up: messages per second               (target >= 5,000/s)
  cold       a fresh `python` process that imports mailsort.classify, loads the model and
             classifies one message, as a `mailsort classify` run or a `sync` worker does, best
             of 3: wall time from spawning the process to the first verdict, and the CPU time
             the process used by then; also which of scikit-learn / scipy it imported (a
             FORMAT 2 model needs neither)
  load       load_classifier() in that process (importing joblib, verifying the digest,
             unpacking the arrays); and "model only", the same with joblib already imported
                                                                                (target < 0.5 s)
  size       the .joblib file                                                   (target < 20 MB)
  train      a full training run on training_data/train.jsonl with valid.jsonl (5-fold grouped
             cross-validation for the threshold, then the final fit), as `mailsort train` and
             scripts/train_default.py do it                                     (target < 2 min)

Prints the figures and whether each meets its target; exit status 1 when one does not.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mailsort.classify.data import load_examples  # noqa: E402
from mailsort.classify.model import load_classifier, shipped_model_path  # noqa: E402

DATA = ROOT / "training_data"

LOAD_PROBE = """
import json, sys, time
spawned = float(sys.argv[3])
t0 = time.monotonic()
import mailsort.classify as c
if sys.argv[2] == "warm":
    import io, joblib
t1 = time.monotonic()
classifier = c.load_classifier(sys.argv[1])
t2 = time.monotonic()
verdict = classifier.predict([("Site down", "Hello, the website shows error 500 on every page.")])[0]
t3 = time.monotonic()
print(json.dumps({"import_mailsort": t1 - t0, "load": t2 - t1, "first_predict": t3 - t2,
                  "first_verdict": t3 - spawned, "cpu": time.process_time(),
                  "label": verdict.label, "sklearn": "sklearn" in sys.modules,
                  "scipy": "scipy" in sys.modules}))
"""


def corpus() -> list:
    examples = []
    for name in ("train", "valid", "test"):
        path = DATA / f"{name}.jsonl"
        if path.exists():
            examples += load_examples(path)
    if not examples:
        raise SystemExit(f"bench_classify: no corpus in {DATA}")
    return examples


def bench_batch(model: Path, n: int) -> dict:
    classifier = load_classifier(model)
    examples = corpus()
    pairs = [(examples[i % len(examples)].subject, examples[i % len(examples)].body) for i in range(n)]
    classifier.predict(pairs[:200])  # warm-up: lazy tables, thread pool
    times = []
    for _ in range(3):
        t = time.perf_counter()
        verdicts = classifier.predict(pairs)
        times.append(time.perf_counter() - t)
    assert len(verdicts) == n
    chars = sum(len(s) + len(b) for s, b in pairs)
    return {"n": n, "seconds": min(times), "per_second": n / min(times), "mean_chars": chars / n}


def bench_load(model: Path, runs: int = 3) -> dict:
    """Fresh processes (time.monotonic is system-wide on Linux, so the child can measure from the
    parent's spawn)."""
    out: dict[str, list[dict]] = {}
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    for mode in ("cold", "warm"):
        out[mode] = []
        for _ in range(runs):
            done = subprocess.run([sys.executable, "-c", LOAD_PROBE, str(model), mode, str(time.monotonic())],
                                  capture_output=True, text=True, env=env, timeout=120, check=True)
            out[mode].append(json.loads(done.stdout))
    cold = out["cold"]
    return {
        "first_verdict_seconds": min(r["first_verdict"] for r in cold),
        "first_verdict_cpu_seconds": min(r["cpu"] for r in cold),
        "import_mailsort_seconds": min(r["import_mailsort"] for r in cold),
        "cold_seconds": min(r["load"] for r in cold),
        "first_predict_seconds": min(r["first_predict"] for r in cold),
        "model_only_seconds": min(r["load"] for r in out["warm"]),
        "imports_sklearn": any(r["sklearn"] for r in cold),
        "imports_scipy": any(r["scipy"] for r in cold),
    }


def bench_train() -> dict:
    from mailsort.classify.train import fit

    train, valid = load_examples(DATA / "train.jsonl"), load_examples(DATA / "valid.jsonl")
    t = time.perf_counter()
    fit(train, 0, valid=valid)
    return {"examples": len(train), "valid": len(valid), "seconds": time.perf_counter() - t}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=shipped_model_path())
    parser.add_argument("--n", type=int, default=10_000, help="messages in the batch (default 10,000)")
    parser.add_argument("--no-train", action="store_true", help="skip the training run")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON document")
    args = parser.parse_args()

    print(f"model {args.model}; {os.cpu_count()} CPUs", file=sys.stderr)
    figures: dict = {"model": str(args.model)}
    figures["size_bytes"] = args.model.stat().st_size
    figures["load"] = bench_load(args.model)
    figures["batch"] = bench_batch(args.model, args.n)
    if not args.no_train:
        figures["train"] = bench_train()

    checks = {
        "batch": figures["batch"]["per_second"] >= 5000,
        "load": figures["load"]["model_only_seconds"] < 0.5,
        "size": figures["size_bytes"] < 20 * 2**20,
    }
    if "train" in figures:
        checks["train"] = figures["train"]["seconds"] < 120
    figures["targets_met"] = checks
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        def ok(name: str) -> str:
            return "ok" if checks[name] else "MISSED"

        b, ld = figures["batch"], figures["load"]
        print(f"batch  {b['n']:,} messages in {b['seconds']:.3f} s: {b['per_second']:,.0f} messages/s "
              f"(mean {b['mean_chars']:.0f} characters)  target >= 5,000/s: {ok('batch')}")
        print(f"cold   fresh process to first verdict {ld['first_verdict_seconds']:.3f} s "
              f"({ld['first_verdict_cpu_seconds']:.2f} s CPU): import mailsort.classify "
              f"{ld['import_mailsort_seconds']:.3f} s, load {ld['cold_seconds']:.3f} s, first predict "
              f"{ld['first_predict_seconds']:.3f} s; imports scikit-learn: {ld['imports_sklearn']}, "
              f"scipy: {ld['imports_scipy']}")
        print(f"load   model only {ld['model_only_seconds']:.3f} s  target < 0.5 s: {ok('load')}")
        print(f"size   {figures['size_bytes'] / 2**20:.2f} MB  target < 20 MB: {ok('size')}")
        if "train" in figures:
            t = figures["train"]
            print(f"train  {t['examples']:,} examples (+{t['valid']} validation) in {t['seconds']:.1f} s  "
                  f"target < 120 s: {ok('train')}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
