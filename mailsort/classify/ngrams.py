"""Hashed character and word n-grams and their TF-IDF values, with numpy only.

This module is the one hashing implementation: the scikit-learn transformer used in training
(`features.NgramHasher`) and the scorer that classifies mail (`scorer.LinearScorer`) both call it,
so the features a model was trained on are the features it is scored with. It imports neither
scikit-learn nor scipy: a process that only classifies mail (every `sync` worker) never pays their
import (about 2 s of CPU).

Why not sklearn's TfidfVectorizer: its char_wb analyser walks every n-gram in Python and manages
about 2,000 short messages a second on a small machine; `sync` and the benchmark want well over
5,000. Here every n-gram is a substring hash computed for a whole batch at once (polynomial
hashing mod 2**64 over code points, prefix sums, no Python loop per n-gram), and the vocabulary
is a sorted array of the 64-bit hashes kept at fit time, looked up through an open-addressing
table built on load (no Python dict: the model loads fast and stays small).

The values equal TfidfVectorizer's with `sublinear_tf=True`, smooth idf and l2 norm (checked in
the tests): `analyzer="char_wb"` takes n-grams inside words padded with one space each side, as
sklearn's char_wb does; `analyzer="word"` takes word n-grams over `\\w+` tokens.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mailsort.classify.text import strip_accents

_P = 0x100000001B3  # odd, so it has an inverse mod 2**64
_P_INV = pow(_P, -1, 2**64)
_MIX = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing for table slots
_SPACE = 32
_SENTINEL = 0  # separates documents in a batch
CHUNK_CHARS = 400_000  # characters hashed at a time: bounds memory, feeds the threads
THREADS = 2  # numpy releases the GIL in the heavy steps; two cores is the target machine
_WORD = re.compile(r"\w+")
_word_table: list[np.ndarray] = []


def _word_chars() -> np.ndarray:
    """Which code points of the BMP are word characters (regex \\w); built once, on demand."""
    if not _word_table:
        chars = "".join(map(chr, range(0x10000)))
        table = np.zeros(0x10000, dtype=bool)
        for m in _WORD.finditer(chars):
            table[m.start() : m.end()] = True
        _word_table.append(table)
    return _word_table[0]


_pow_cache: dict[int, np.ndarray] = {}


def _powers(n: int, base: int) -> np.ndarray:
    """base**0 .. base**(n-1) mod 2**64, grown on demand and cached."""
    have = _pow_cache.get(base)
    if have is None or len(have) < n:
        size = max(n, 1 << 16, 0 if have is None else 2 * len(have))
        arr = np.full(size, base, dtype=np.uint64)
        arr[0] = 1
        have = np.cumprod(arr, dtype=np.uint64)
        _pow_cache[base] = have
    return have[:n]


class Table:
    """Open-addressing (linear probing) map from 64-bit hash to column, vectorised."""

    def __init__(self, vocab: np.ndarray) -> None:
        vocab = np.asarray(vocab, dtype=np.uint64)
        bits = max(4, int(np.ceil(np.log2(max(len(vocab), 1) * 4))))  # load factor <= 1/4
        size = 1 << bits
        self.shift = np.uint64(64 - bits)
        self.mask = size - 1
        self.keys = np.zeros(size, dtype=np.uint64)
        self.cols = np.full(size, -1, dtype=np.int32)
        pos = ((vocab * _MIX) >> self.shift).astype(np.int64)
        pending = np.arange(len(vocab), dtype=np.int64)
        while pending.size:
            p = pos[pending]
            free = self.cols[p] == -1
            cand, pc = pending[free], p[free]
            _, first = np.unique(pc, return_index=True)
            win = cand[first]
            self.keys[pos[win]] = vocab[win]
            self.cols[pos[win]] = win
            placed = np.zeros(len(vocab), dtype=bool)
            placed[win] = True
            pending = pending[~placed[pending]]
            pos[pending] = (pos[pending] + 1) & self.mask

    def lookup(self, h: np.ndarray) -> np.ndarray:
        """Column of each hash, -1 when it is not in the vocabulary."""
        pos = ((h * _MIX) >> self.shift).astype(np.int64)
        c = self.cols[pos]
        hit = self.keys[pos] == h
        out = np.where(hit & (c >= 0), c, -1).astype(np.int32)
        idx = np.flatnonzero((c >= 0) & ~hit)  # slot taken by another key: probe on
        while idx.size:
            pos[idx] = (pos[idx] + 1) & self.mask
            p = pos[idx]
            c = self.cols[p]
            hit = (c >= 0) & (self.keys[p] == h[idx])
            out[idx[hit]] = c[hit]
            idx = idx[(c >= 0) & ~hit]
        return out


def doc_chunks(docs: Sequence[str]) -> list[slice]:
    """Consecutive slices of `docs` of about CHUNK_CHARS characters each (at least one slice)."""
    out: list[slice] = []
    start = size = 0
    for i, doc in enumerate(docs):
        size += len(doc) + 3
        if size >= CHUNK_CHARS:
            out.append(slice(start, i + 1))
            start, size = i + 1, 0
    if start < len(docs) or not out:
        out.append(slice(start, len(docs)))
    return out


@dataclass(frozen=True)
class Cells:
    """The non-zero TF-IDF cells of a batch of documents, before the l2 norm.

    `rows` ascending and, within a row, `cols` ascending (canonical CSR order); `values` are
    (1 + log count) * idf in float32; `norms` is the l2 norm of each row (0 for an empty row).
    """

    n_rows: int
    rows: np.ndarray
    cols: np.ndarray
    values: np.ndarray
    norms: np.ndarray

    def normalised(self) -> np.ndarray:
        """The values divided by their row's norm: TfidfVectorizer's numbers."""
        return self.values / self.norms[self.rows]


@dataclass(frozen=True)
class Ngrams:
    """How one feature view cuts a document into n-grams, and the n-grams' TF-IDF values."""

    analyzer: str = "char_wb"
    ngram_range: tuple[int, int] = (2, 5)
    strip_accents: bool = False

    def prepare(self, doc: str) -> str:
        """Accents stripped if asked, whitespace runs collapsed, one space padding each end."""
        if self.strip_accents:
            doc = strip_accents(doc)
        return " " + " ".join(doc.split()) + " "

    def hash(
        self, texts: list[str], positions: bool = False
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None, str]:
        """Row and hash of every n-gram of the prepared `texts` (+ start and length on request).

        The texts are joined with a sentinel; the prefix sums S[k] = sum_{j<k} (c_j+1) * P^-j
        give the hash of text[l:r] as P^(r-1) * (S[r] - S[l]) for every (l, r) at once.
        """
        joined = "\x00".join(texts) + "\x00"
        cp = np.frombuffer(joined.encode("utf-32-le"), dtype=np.uint32)
        n = len(cp)
        lengths = np.fromiter((len(t) + 1 for t in texts), dtype=np.int64, count=len(texts))
        row_of = np.repeat(np.arange(len(texts), dtype=np.int32), lengths)
        pw = _powers(n, _P)
        s = np.zeros(n + 1, dtype=np.uint64)
        np.cumsum((cp.astype(np.uint64) + np.uint64(1)) * _powers(n, _P_INV), out=s[1:])
        if self.analyzer == "word":
            brk = ~_word_chars()[np.minimum(cp, 0xFFFF)]  # tokens are runs of \\w characters
        else:
            brk = (cp == _SPACE) | (cp == _SENTINEL)
        lo, hi = self.ngram_range
        rows, hashes, starts, lens = [], [], [], []
        if self.analyzer == "word":
            prev = np.concatenate(([True], brk[:-1]))
            nxt = np.concatenate((brk[1:], [True]))
            begins = np.flatnonzero(~brk & prev)
            ends = np.flatnonzero(~brk & nxt) + 1
            wh = pw[ends - 1] * (s[ends] - s[begins])  # hash of each word
            wrow = row_of[begins]
            for k in range(lo, hi + 1):
                m = len(begins) - k + 1
                if m <= 0:
                    break
                acc = wh[:m].copy()
                for j in range(1, k):  # combine word hashes, so punctuation between is ignored
                    acc = acc * np.uint64(_P) + wh[j : j + m]
                same = wrow[:m] == wrow[k - 1 :]
                rows.append(wrow[:m][same])
                hashes.append(acc[same] ^ np.uint64(k << 56))
                if positions:
                    starts.append(begins[:m][same])
                    lens.append((ends[k - 1 :] - begins[:m])[same])
        else:
            brk_cum = np.zeros(n + 1, dtype=np.int32)
            np.cumsum(brk, out=brk_cum[1:])
            for k in range(lo, hi + 1):
                m = n - k + 1
                if m <= 0:
                    break
                # no break strictly inside the n-gram (char_wb); for bigrams, not two breaks;
                # unigrams: the characters of the words (sklearn also counts the padding space)
                if k > 2:
                    ok = brk_cum[k - 1 : n] == brk_cum[1 : m + 1]
                elif k == 2:
                    ok = ~(brk[:-1] & brk[1:])
                else:
                    ok = ~brk
                h = pw[k - 1 : n] * (s[k : n + 1] - s[:m])
                rows.append(row_of[:m][ok])
                hashes.append(h[ok] ^ np.uint64(k << 56))
                if positions:
                    st = np.flatnonzero(ok)
                    starts.append(st)
                    lens.append(np.full(len(st), k, dtype=np.int64))
        if not rows:
            return np.zeros(0, np.int32), np.zeros(0, np.uint64), None, None, joined
        return (
            np.concatenate(rows),
            np.concatenate(hashes),
            np.concatenate(starts) if positions else None,
            np.concatenate(lens) if positions else None,
            joined,
        )

    def cells(self, docs: Sequence[str], table: Table, idf: np.ndarray) -> Cells:
        """The TF-IDF cells of `docs` (raw documents: this prepares them) over the vocabulary
        whose lookup table and idf are given."""
        n_rows, n_cols = len(docs), len(idf)
        empty = np.zeros(0, np.int64)
        if not n_rows:
            return Cells(0, empty, empty, np.zeros(0, np.float32), np.zeros(0, np.float32))
        rows, h, _, _, _ = self.hash([self.prepare(d) for d in docs])
        col = table.lookup(h)
        hit = col >= 0
        # one sortable key per (row, column); 32 bits when they fit: sorting is the main cost
        kind = np.uint32 if n_rows * n_cols < 2**32 else np.int64
        key = rows[hit].astype(kind) * kind(n_cols) + col[hit].astype(kind)
        if not key.size:
            return Cells(n_rows, empty, empty, np.zeros(0, np.float32), np.zeros(n_rows, np.float32))
        key.sort()
        first = np.empty(key.size, dtype=bool)
        first[0] = True
        np.not_equal(key[1:], key[:-1], out=first[1:])
        idx = np.flatnonzero(first)
        counts = np.diff(np.append(idx, key.size)).astype(np.float32)
        uniq = key[idx]
        r = uniq // kind(n_cols)
        c = uniq - r * kind(n_cols)
        values = np.log(counts) + np.float32(1.0)  # sublinear tf
        values *= idf[c]
        starts = np.flatnonzero(np.concatenate(([True], r[1:] != r[:-1])))
        norms = np.zeros(n_rows, dtype=np.float32)
        norms[r[starts]] = np.sqrt(np.add.reduceat(values * values, starts))  # float32, as before
        return Cells(n_rows, r, c, values, norms)

    def readable(self, doc: str, table: Table) -> list[tuple[str, int]]:
        """The n-grams of one document that are in the vocabulary (as text), with their column."""
        _, h, starts, lens, joined = self.hash([self.prepare(doc)], positions=True)
        if starts is None or lens is None:
            return []
        col = table.lookup(h)
        hit = col >= 0
        return [
            (joined[s : s + k], int(c))
            for s, k, c in zip(starts[hit], lens[hit], col[hit], strict=True)
        ]
