#!/usr/bin/env python3
"""Merge training_data/parts/*.jsonl into train / valid / test splits, deterministically.

- every line is validated (a bad one stops the build, naming file:line);
- exact duplicates and near duplicates (Jaccard >= 0.8 over character 5-gram shingles of the
  normalised subject + new text, within a language) are dropped, keeping one per cluster
  (authored batches before `generated`, then the smallest id); near duplicates with *different*
  labels are contrast pairs and are kept;
- whole batches (`source`) are held out per language, so test measures generalisation to writing
  styles the model never saw; `generated` batches always stay in train;
- the held-out batches are pinned in `training_data/splits.json`: a batch named there keeps its
  split whatever else is added to the corpus, so new training data can never push an old test
  batch into training (or the reverse) and reported figures stay comparable. For a language
  without pinned batches, test gets the subset of batches closest above 20 % and valid about
  12 % where the language has enough batches. When new batches dilute a language's pinned test
  share below 20 %, the smallest subset of unpinned batches that restores it joins test (same
  rule, over the deficit). `--pin` writes the resulting assignment back to the manifest;
- pairs that are still similar (Jaccard >= 0.5) across splits lose their train/valid member, so
  nothing near a test example is trained on.

Prints counts by language, label and split (and with `--markdown` the tables for the README:
by language and label, and one row per batch).
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mailsort.classify.data import Example, load_examples, save_examples  # noqa: E402
from mailsort.classify.text import clean_body, clean_subject, normalise, strip_accents  # noqa: E402
from mailsort.errors import UsageError  # noqa: E402

DUP_JACCARD = 0.8
LEAK_JACCARD = 0.5
TEST_SHARE = 0.20
VALID_SHARE = 0.12
MIN_BATCHES_FOR_VALID = 5
SPLITS = ("train", "valid", "test")
MANIFEST = "splits.json"


def dedup_text(ex: Example) -> str:
    """What "the same message" means: subject and new text, normalised, without accents."""
    return strip_accents(normalise(clean_subject(ex.subject) + " \n " + clean_body(ex.body)))


def shingles(text: str, n: int = 5) -> set[str]:
    text = f" {text} "
    if len(text) <= n:
        return {text}
    return {text[i : i + n] for i in range(len(text) - n + 1)}


def jaccard_pairs(texts: list[str], threshold: float) -> list[tuple[int, int, float]]:
    """All pairs (i < j) with shingle Jaccard >= threshold (sparse product; fine for ~1,000s)."""
    vocab: dict[str, int] = {}
    rows, cols = [], []
    for i, t in enumerate(texts):
        for s in shingles(t):
            rows.append(i)
            cols.append(vocab.setdefault(s, len(vocab)))
    m = sp.csr_matrix((np.ones(len(rows), np.int32), (rows, cols)), shape=(len(texts), len(vocab)))
    sizes = np.asarray(m.sum(axis=1)).ravel()
    inter = (m @ m.T).tocoo()
    out = []
    for i, j, v in zip(inter.row, inter.col, inter.data, strict=True):
        if i < j:
            jac = v / (sizes[i] + sizes[j] - v)
            if jac >= threshold:
                out.append((int(i), int(j), float(jac)))
    return out


def is_generated(source: str) -> bool:
    return source.rstrip("/").rsplit("/", 1)[-1] == "generated"


def _h(seed: int, text: str) -> str:
    return hashlib.sha256(f"{seed}:{text}".encode()).hexdigest()


def pick_batches(sizes: dict[str, int], target: float, seed: int) -> list[str]:
    """The subset of batches whose total is the smallest at or above `target` (hash tie-break)."""
    names = sorted(sizes, key=lambda s: _h(seed, s))
    best: tuple | None = None
    for r in range(1, len(names) + 1):
        for combo in itertools.combinations(names, r):
            total = sum(sizes[s] for s in combo)
            if total + 1e-9 < target:
                continue
            key = (total, r, [_h(seed, s) for s in combo])
            if best is None or key < best[0]:
                best = (key, combo)
    return list(best[1]) if best else []


def assign_splits(
    examples: list[Example], seed: int, pinned: dict[str, str] | None = None
) -> dict[str, str]:
    """source -> split, per language (see the module docstring); `pinned` maps source -> split."""
    pinned = pinned or {}
    by_lang: dict[str, Counter] = defaultdict(Counter)
    for e in examples:
        by_lang[e.lang][e.source] += 1
    split_of: dict[str, str] = {}
    for lang, sizes in sorted(by_lang.items()):
        total = sum(sizes.values())
        for s in sizes:
            split_of[s] = pinned.get(s, "train") if not is_generated(s) else "train"
        movable = {s: n for s, n in sizes.items() if not is_generated(s) and s not in pinned}
        held = {s for s in sizes if split_of[s] != "train"}
        if len(movable) + len(held) < 2:
            print(f"warning: {lang} has {len(movable) + len(held)} authored batch(es); "
                  "no held-out split", file=sys.stderr)
            continue
        in_test = sum(n for s, n in sizes.items() if split_of[s] == "test")
        deficit = TEST_SHARE * total - in_test
        if deficit > 1e-9 and movable:
            test = pick_batches(movable, deficit, seed)
            trained = [s for s in sizes if split_of[s] == "train" and s not in test]
            if not trained:  # always leave something to train on
                test = test[:-1]
            for s in test:
                split_of[s] = "test"
        has_valid = any(split_of[s] == "valid" for s in sizes)
        rest = {s: n for s, n in movable.items() if split_of[s] == "train"}
        if not has_valid and len(movable) >= MIN_BATCHES_FOR_VALID and len(rest) >= 3:
            for s in pick_batches(rest, VALID_SHARE * total, seed + 1):
                split_of[s] = "valid"
    return split_of


def read_manifest(path: Path) -> dict[str, str]:
    """source -> split from the manifest ({"test": [...], "valid": [...]}); {} when absent."""
    if not path.exists():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    out: dict[str, str] = {}
    for split in ("valid", "test"):
        for source in data.get(split, []):
            if source in out:
                raise UsageError(f"{path}: {source} is pinned to both {out[source]} and {split}")
            out[source] = split
    return out


def write_manifest(path: Path, split_of: dict[str, str]) -> None:
    data = {
        "about": "Held-out writing batches, pinned: scripts/build_corpus.py keeps each in its split.",
        "valid": sorted(s for s, sp in split_of.items() if sp == "valid"),
        "test": sorted(s for s, sp in split_of.items() if sp == "test"),
    }
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parts", type=Path, default=ROOT / "training_data" / "parts")
    ap.add_argument("--out", type=Path, default=ROOT / "training_data")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--markdown", action="store_true", help="also print the README table")
    ap.add_argument("--manifest", type=Path, default=None,
                    help=f"pinned held-out batches (default: OUT/{MANIFEST})")
    ap.add_argument("--pin", action="store_true",
                    help="write the resulting held-out batches to the manifest")
    args = ap.parse_args(argv)
    manifest = args.manifest or args.out / MANIFEST

    files = sorted(args.parts.glob("*.jsonl"))
    if not files:
        print(f"no parts in {args.parts}", file=sys.stderr)
        return 2
    examples: list[Example] = []
    ids: dict[str, Path] = {}
    try:
        pinned = read_manifest(manifest)
        for f in files:
            for e in load_examples(f):
                if e.id in ids:
                    raise UsageError(f"{f}: id {e.id!r} also in {ids[e.id]}")
                ids[e.id] = f
                examples.append(e)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    examples.sort(key=lambda e: (e.lang, e.source, e.id))
    n_read = len(examples)

    # exact and near duplicates, per language
    texts = [dedup_text(e) for e in examples]
    by_lang: dict[str, list[int]] = defaultdict(list)
    for i, e in enumerate(examples):
        by_lang[e.lang].append(i)
    parent = list(range(len(examples)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    similar: list[tuple[int, int, float]] = []
    for lang, idx in by_lang.items():
        for a, b, jac in jaccard_pairs([texts[i] for i in idx], LEAK_JACCARD):
            i, j = idx[a], idx[b]
            similar.append((i, j, jac))
            if jac >= DUP_JACCARD and examples[i].label == examples[j].label:
                parent[find(i)] = find(j)
    clusters: dict[int, list[int]] = defaultdict(list)
    for i in range(len(examples)):
        clusters[find(i)].append(i)
    keep = set()
    for members in clusters.values():
        members.sort(key=lambda i: (is_generated(examples[i].source), examples[i].id))
        keep.add(members[0])
    n_dup = len(examples) - len(keep)

    missing = sorted(set(pinned) - {e.source for e in examples})
    if missing:
        print(f"warning: pinned batch(es) not in the corpus: {', '.join(missing)}", file=sys.stderr)
    split_of = assign_splits([examples[i] for i in sorted(keep)], args.seed, pinned)
    if args.pin:
        write_manifest(manifest, split_of)
    split = {i: split_of[examples[i].source] for i in keep}
    leaks = 0
    rank = {"test": 0, "valid": 1, "train": 2}
    for i, j, _ in similar:
        if i in split and j in split and split[i] != split[j]:
            loser = i if rank[split[i]] > rank[split[j]] else j
            del split[loser]
            leaks += 1

    out: dict[str, list[Example]] = {s: [] for s in SPLITS}
    for i in sorted(split):
        out[split[i]].append(examples[i])
    for s in SPLITS:
        save_examples(out[s], args.out / f"{s}.jsonl")

    print(f"read {n_read} examples from {len(files)} files; dropped {n_dup} duplicates "
          f"(Jaccard >= {DUP_JACCARD}) and {leaks} near copies across splits "
          f"(Jaccard >= {LEAK_JACCARD})")
    table = Counter((e.lang, e.label, s) for s in SPLITS for e in out[s])
    langs = sorted({e.lang for e in examples})
    header = "| lang | label | " + " | ".join(SPLITS) + " | total | test share |"
    lines = [header, "|" + "---|" * (len(SPLITS) + 4)]
    for lang in langs:
        for label in ("critical", "routine"):
            row = [table[(lang, label, s)] for s in SPLITS]
            tot = sum(row)
            if tot:
                lines.append(f"| {lang} | {label} | " + " | ".join(map(str, row))
                             + f" | {tot} | {row[2] / tot:.0%} |")
    totals = [len(out[s]) for s in SPLITS]
    lines.append("| all | both | " + " | ".join(map(str, totals)) + f" | {sum(totals)} | "
                 f"{totals[2] / max(sum(totals), 1):.0%} |")
    print("\n".join(lines))
    print("\nheld-out batches:")
    for s in ("valid", "test"):
        names = sorted({e.source for e in out[s]})
        print(f"  {s}: " + ", ".join(names))
    gen = sum(1 for s in SPLITS for e in out[s] if is_generated(e.source))
    print(f"\ntemplate-generated (batch 'generated'): {gen} of {sum(totals)} "
          f"({gen / max(sum(totals), 1):.1%})")
    for lang in langs:
        for s in ("test",):
            labels = {e.label for e in out[s] if e.lang == lang}
            if labels != {"critical", "routine"}:
                print(f"warning: {lang} {s} split lacks a label ({sorted(labels)})",
                      file=sys.stderr)
    if args.markdown:
        print("\n" + "\n".join(lines))
        print("\n" + batch_table(out))
    return 0


def batch_table(out: dict[str, list[Example]]) -> str:
    """Markdown: one row per batch (source) with its counts by label and its split."""
    rows: dict[str, Counter] = defaultdict(Counter)
    split_of: dict[str, str] = {}
    lang_of: dict[str, str] = {}
    for split, examples in out.items():
        for e in examples:
            rows[e.source][e.label] += 1
            split_of[e.source] = split
            lang_of[e.source] = e.lang
    lines = ["| batch (source) | file | lang | origin | critical | routine | split |",
             "|---|---|---|---|---|---|---|"]
    for source in sorted(rows, key=lambda s: (lang_of[s], s)):
        name = source.rstrip("/").rsplit("/", 1)[-1]
        origin = "template generator" if is_generated(source) else "authored"
        lines.append(f"| `{source}` | `parts/{lang_of[source]}-{name}.jsonl` | {lang_of[source]} | "
                     f"{origin} | {rows[source]['critical']} | {rows[source]['routine']} | "
                     f"{split_of[source]} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
