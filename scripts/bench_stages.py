#!/usr/bin/env python3
"""Per-stage CPU cost of the worker's per-message path (ms per message, process CPU time).

    python scripts/bench_stages.py [REPO] [--n 5000] [--prof STAGE]   (REPO: this checkout by default)

Same messages as scripts/bench_sync.py (tests/sync_support.realistic_message), cut as the sync
fetches them (header + first 8192 bytes of TEXT). Stages:
  parse      message._parts(_fields_of(raw)) for each message (no language)
  language   language.detect_languages over the parsed messages
  parse_many message.parse_many (= parse + language)
  document   classify.text.document(subject, text)
  model      classifier.predict (document + scoring), in batches of 250
  decide     compute.Context.decide (policy.decide with the history)
  to_json    Decision.to_json
  row        compute.Context.row (journal row)
  decide_one compute.decide_one (decide + to_json + row + Outcome), no replies rendered
  compute    compute.compute_batch, batches of 250 (the whole worker path, no replies rendered)
Run it twice (or A/B against a git worktree of another commit, given as REPO) — figures move ~5% between runs; CPU time is
fairly robust to other load, wall time is not.
"""
import argparse, random, sys, time, tempfile, types
from pathlib import Path

ap = argparse.ArgumentParser()
ap.add_argument("repo", nargs="?", default=str(Path(__file__).resolve().parents[1]))
ap.add_argument("--n", type=int, default=5000)
ap.add_argument("--prof", default="")
ap.add_argument("--stages", default="parse,language,parse_many,document,model,decide,to_json,row,decide_one,compute")
args = ap.parse_args()
sys.path[:0] = [args.repo, args.repo + "/tests", args.repo + "/scripts"]
from datetime import timedelta
from sync_support import realistic_message
import bench_sync as b
from mailsort.imap import FetchedMessage
from mailsort.compute import Context, PassHistory, compute_batch, SnapshotHistory, parse_fetched, decide_one
from mailsort.config import load_config
from mailsort.calendar import WorkCalendar
from mailsort.policy import Settings
from mailsort.classify.model import load_classifier
from mailsort.classify.text import document
from mailsort import message as M
from mailsort.language import detect_languages, language_text, _scorer

rng = random.Random(7)
N = args.n
def cut(raw):
    i = raw.find(b"\r\n\r\n"); j = raw.find(b"\n\n")
    k = i + 4 if i >= 0 else j + 2
    return raw[:k + 8192]
items = [FetchedMessage(n + 1, (), b.NOW, cut(realistic_message(n, rng, b.NOW))) for n in range(N)]
cfg = load_config(b.write_config(Path(tempfile.mkdtemp()), types.SimpleNamespace(port=1), "x", "y", smtp_port=2))
acct = cfg.accounts[0]
clf = load_classifier(); _scorer()
settings = Settings.from_config(cfg, acct, None)
cal = WorkCalendar.from_config(cfg.calendar)
ctx = Context(lambda: clf, lambda: settings, cal, b.NOW, SnapshotHistory({}, frozenset(), frozenset()), timedelta(hours=4), "bench")
compute_batch(ctx, "INBOX", 1, items[:50], PassHistory())  # warm up
msgs = [p for p in parse_fetched(items, "INBOX") if hasattr(p, "subject")]
verd = clf.predict([(m.subject, m.text) for m in msgs])
parts = [M._parts(M._fields_of(m.raw), m.uid, "INBOX") for m in items]
texts = [language_text(p["subject"], p["text"]) for p in parts if isinstance(p, dict)]

def stage(name):
    if name == "parse":
        for m in items: M._parts(M._fields_of(m.raw), m.uid, "INBOX")
    elif name == "language":
        for i in range(0, len(texts), 250): detect_languages(texts[i:i + 250])
    elif name == "parse_many":
        for i in range(0, N, 250): M.parse_many([(m.uid, m.raw) for m in items[i:i + 250]], "INBOX")
    elif name == "document":
        for m in msgs: document(m.subject, m.text)
    elif name == "model":
        for i in range(0, len(msgs), 250): clf.predict([(m.subject, m.text) for m in msgs[i:i + 250]])
    elif name == "decide":
        ph = PassHistory()
        for m, v in zip(msgs, verd): ctx.decide(m, v, ph)
    elif name == "to_json":
        for d in decs: d.to_json()
    elif name == "row":
        for m, d, j in zip(msgs, decs, jsons): ctx.row("INBOX", 1, m, d, j, b.NOW)
    elif name == "decide_one":
        ph = PassHistory()
        for m, v in zip(msgs, verd): decide_one(ctx, "INBOX", 1, m, v, ph, b.NOW)
    elif name == "compute":
        for i in range(0, N, 250): compute_batch(ctx, "INBOX", 1, items[i:i + 250], PassHistory())

ph = PassHistory()
decs = [ctx.decide(m, v, ph)[0] for m, v in zip(msgs, verd)]
jsons = [d.to_json() for d in decs]
out = {}
for name in args.stages.split(","):
    best = None
    for _ in range(3):
        t = time.process_time(); stage(name); c = (time.process_time() - t) / N * 1000
        best = c if best is None else min(best, c)
    out[name] = round(best, 4)
print(" ".join(f"{k}={v}" for k, v in out.items()))
if args.prof:
    import cProfile, pstats
    pr = cProfile.Profile(); pr.enable(); stage(args.prof); pr.disable()
    pstats.Stats(pr).sort_stats("tottime").print_stats(35)
