"""Hashed character and word n-grams and their TF-IDF values, with numpy only.

This module is the one hashing implementation: the scikit-learn transformer used in training
(`features.NgramHasher`) and the scorer that classifies mail (`scorer.LinearScorer`) both call it,
so the features a model was trained on are the features it is scored with. It imports neither
scikit-learn nor scipy: a process that only classifies mail (every `sync` worker) never pays their
import (about 2 s of CPU).

Why not sklearn's TfidfVectorizer: its char_wb analyser walks every n-gram in Python and manages
about 2,000 short messages a second on a small machine; `sync` and the benchmark want well over
5,000. Here every n-gram is a substring hash computed for a whole batch at once (polynomial
hashing mod 2**64 over code points, one numpy pass per n-gram length, no Python loop per
n-gram), and the vocabulary is a sorted array of the 64-bit hashes kept at fit time, looked up
through an open-addressing table built on load (no Python dict: the model loads fast and stays
small).

The values equal TfidfVectorizer's with `sublinear_tf=True`, smooth idf and l2 norm (checked in
the tests): `analyzer="char_wb"` takes n-grams inside words padded with one space each side, as
sklearn's char_wb does; `analyzer="word"` takes word n-grams over `\\w+` tokens.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from mailsort.classify.text import COMBINING_RANGES, strip_accents

_P = 0x100000001B3  # odd, so it has an inverse mod 2**64
_P_INV = pow(_P, -1, 2**64)
_MIX = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing for table slots
_SPACE = 32
_SENTINEL = 0  # separates documents in a batch
CHUNK_CHARS = 400_000  # characters hashed at a time: bounds memory, feeds the threads
THREADS = 2  # numpy releases the GIL in the heavy steps; two cores is the target machine
_WORD = re.compile(r"\w+")
_SPACE_CHAR = re.compile(r"\s")
_ODD_SPACE, _MARK, _WORD_CHAR = np.uint8(1), np.uint8(2), np.uint8(4)
_kind_table: list[np.ndarray] = []
# 1 + log(count) in float32 for small counts: a lookup instead of a log per cell (np.log gives
# the same float32 for a value wherever it sits in an array, so the numbers do not change)
_TF = np.log(np.arange(256, dtype=np.float32)[1:])
_TF = np.concatenate(([np.float32(0)], _TF + np.float32(1.0)))


def _kinds() -> np.ndarray:
    """What the n-grams need to know of each BMP code point (no whitespace and no mark of
    COMBINING_RANGES lies above it; other code points are read as U+FFFF, neither): _ODD_SPACE
    for whitespace other than " " (str.split() splits on all of it), _MARK for the combining
    marks `text.strip_accents` removes, _WORD_CHAR for a word character (regex \\w). One table,
    so that a batch is looked up once for all three. Built once, on demand."""
    if not _kind_table:
        chars = "".join(map(chr, range(0x10000)))
        table = np.zeros(0x10000, dtype=np.uint8)
        for m in _WORD.finditer(chars):
            table[m.start() : m.end()] = _WORD_CHAR
        # (regex \s is str.isspace(): both are CPython's Py_UNICODE_ISSPACE; a tenth of the time of a loop)
        table[[m.start() for m in _SPACE_CHAR.finditer(chars) if m.start() != _SPACE]] |= _ODD_SPACE
        for lo, hi in COMBINING_RANGES:
            table[lo : hi + 1] |= _MARK
        _kind_table.append(table)
    return _kind_table[0]


def _kinds_of(cp: np.ndarray) -> np.ndarray:
    return _kinds()[np.minimum(cp, 0xFFFF, dtype=np.intp)]  # index-ready in the same pass


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


def _codepoints(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


def _tf(counts: np.ndarray) -> np.ndarray:
    """1 + log(count) (sublinear tf) in float32."""
    if counts.size and counts.max() < len(_TF):
        return _TF[counts]
    return np.log(counts.astype(np.float32)) + np.float32(1.0)


class Table:
    """Open-addressing (linear probing) map from 64-bit hash to column, vectorised.

    A slot is a (key, column) record, so one gather reads both (one cache line per n-gram where
    two arrays took two). Sized for a load factor of at most 1/2: a quarter took more time in
    cache misses than it saved in probes. `order` (optional, a permutation of the columns) places
    columns in that order, so that those listed first sit in their home slot: given the columns
    by falling document frequency, most n-grams of a text are found by the first probe.
    """

    SLOT = np.dtype([("key", np.uint64), ("col", np.int32)], align=True)

    def __init__(self, vocab: np.ndarray, order: np.ndarray | None = None) -> None:
        vocab = np.asarray(vocab, dtype=np.uint64)
        bits = max(4, int(np.ceil(np.log2(max(len(vocab), 1) * 2))))  # load factor <= 1/2
        size = 1 << bits
        self.shift = np.uint64(64 - bits)
        self.mask = size - 1
        self.slots = np.zeros(size, dtype=self.SLOT)
        self.keys, self.cols = self.slots["key"], self.slots["col"]  # views
        self.cols[:] = -1
        pos = ((vocab * _MIX) >> self.shift).astype(np.int64)
        pending = np.arange(len(vocab), dtype=np.int64) if order is None else np.asarray(order, np.int64)
        while pending.size:
            p = pos[pending]
            free = self.cols[p] == -1
            cand, pc = pending[free], p[free]
            _, first = np.unique(pc, return_index=True)  # the first contender in order wins
            win = cand[first]
            self.keys[pos[win]] = vocab[win]
            self.cols[pos[win]] = win
            placed = np.zeros(len(vocab), dtype=bool)
            placed[win] = True
            pending = pending[~placed[pending]]
            pos[pending] = (pos[pending] + 1) & self.mask
        # an empty slot's key (0) has home slot 0, so no hash whose home it is can match it;
        # slot 0, if empty, gets a key whose home is elsewhere (find's first probe relies on it)
        if self.cols[0] == -1:
            self.keys[0] = 1

    def search(self, h: np.ndarray, valid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(column, found) for each hash: `found` where it is in the vocabulary (and `valid`,
        when given: the others are not looked up further), `column` meaningful there only.

        Whole-length arrays and a mask, not lists of indices: a gather per index list (numpy's
        take) cost more than the arithmetic of hashing.
        """
        pos = h * _MIX
        pos >>= self.shift
        pos = pos.view(np.int64)  # < 2**bits: the same numbers, no conversion pass
        slot = self.slots[pos]
        found = slot["key"] == h
        if valid is not None:
            found &= valid
        col = slot["col"]
        # not in its home slot: probe on while the slot is taken (an empty one ends the search;
        # from the second probe on, a hash can equal an empty slot's key: its column -1 drops it)
        todo = np.flatnonzero(~found if valid is None else valid > found)
        p = pos[todo]
        while todo.size:
            taken = self.cols[p] >= 0
            todo, p = todo[taken], (p[taken] + 1) & self.mask
            c = self.cols[p]
            hit = (self.keys[p] == h[todo]) & (c >= 0)
            col[todo[hit]] = c[hit]
            found[todo[hit]] = True
            todo, p = todo[~hit], p[~hit]
        return col, found

    def lookup(self, h: np.ndarray) -> np.ndarray:
        """Column of each hash, -1 when it is not in the vocabulary."""
        col, found = self.search(h)
        col[~found] = -1
        return col


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
    (1 + log count) * idf in float32; `norms` is the l2 norm of each row (0 for an empty row);
    `per_row` (optional) the number of cells of each row.
    """

    n_rows: int
    rows: np.ndarray
    cols: np.ndarray
    values: np.ndarray
    norms: np.ndarray
    per_row: np.ndarray | None = None

    def normalised(self) -> np.ndarray:
        """The values divided by their row's norm: TfidfVectorizer's numbers."""
        if self.per_row is None:
            return self.values / self.norms[self.rows]
        return self.values / np.repeat(self.norms, self.per_row)  # a copy per run, not a gather


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

    def _batch(self, docs: Sequence[str], tags: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Code points of the prepared `docs` joined, each followed by a sentinel, and for each
        code point its document's tag (`tags[i]` for `docs[i]`) and, for a word view, its kind
        (see `_kinds`: looked up here already).

        This is `prepare` for a whole batch, with numpy instead of a split and a join per
        document (a tenth of the scoring time, most often for nothing: `text.document` already
        collapses whitespace). The n-grams are those of `prepare`'s texts; the one difference,
        an empty document padded by one space instead of two, has none either way.
        """
        if self.strip_accents:  # NFKD here (the marks go below), as `text.strip_accents` does
            docs = [d if d.isascii() else unicodedata.normalize("NFKD", d) for d in docs]
        # the separators are spaces and a sentinel, which NFKD and the steps below leave alone
        cp = _codepoints(" " + " \x00 ".join(docs) + " \x00")
        tag = np.repeat(tags, [len(d) + 3 for d in docs])
        kind = _kinds_of(cp)
        odd = kind & (_MARK | _ODD_SPACE)
        kind = kind if self.analyzer == "word" else None
        if odd.any():  # marks to strip, whitespace other than " " (a space then: no word either)
            if self.strip_accents:
                keep = (odd & _MARK) == 0
                cp, tag, odd = cp[keep], tag[keep], odd[keep]
                kind = None if kind is None else kind[keep]
            cp = np.where((odd & _ODD_SPACE) != 0, np.uint32(_SPACE), cp)
        space = cp == _SPACE
        run = space[1:] & space[:-1]
        if run.any():  # a run of whitespace: its first character stands for it
            keep = np.concatenate(([True], ~run))
            cp, tag = cp[keep], tag[keep]
            kind = None if kind is None else kind[keep]
        return cp, tag, kind

    def _blocks(
        self, cp: np.ndarray, kind: np.ndarray | None = None
    ) -> Iterator[tuple[int, np.ndarray | None, np.ndarray | None, np.ndarray | None, np.ndarray]]:
        """(n, start, end, valid, hash) of the n-grams of the joined, prepared text `cp` (code
        points; `kind`, see `_kinds`, when known), one block per n, starts ascending.

        Character n-grams: the hash of the n characters from every position (`start` None: the
        position is the index), `valid` where they form an n-gram. Word n-grams: `start` and
        `end` (exclusive) of each run of n words; they may span two documents (callers drop
        those); character n-grams never do (a sentinel is a break, and breaks only begin or end
        them).

        The hash of text[l:r] is sum((c_j + 1) * P**(r-1-j)) mod 2**64, xor n << 56. Character
        n-grams are hashed incrementally (h_n[i] = h_(n-1)[i] * P + c_(i+n-1) + 1: two passes
        per n); word hashes come from prefix sums S[k] = sum_{j<k} (c_j+1) * P^-j, as
        P^(r-1) * (S[r] - S[l]) is the same number for text[l:r] whatever its length.
        """
        lo, hi = self.ngram_range
        n = len(cp)
        if self.analyzer == "word":
            word = ((_kinds_of(cp) if kind is None else kind) & _WORD_CHAR) != 0  # runs of \\w
            # where a word begins or ends, one pass: the changes, alternately (outside a word
            # before the text and after it)
            edge = np.flatnonzero(np.diff(word, prepend=False, append=False)) if n else np.zeros(0, np.intp)
            begins, ends = edge[0::2], edge[1::2]
            s = np.empty(n + 1, dtype=np.uint64)
            s[0] = 0
            np.cumsum((cp.astype(np.uint64) + np.uint64(1)) * _powers(n, _P_INV), out=s[1:])
            wh = _powers(n, _P)[ends - 1] * (s[ends] - s[begins])  # each word
            for k in range(lo, hi + 1):
                m = len(begins) - k + 1
                if m <= 0:
                    return
                acc = wh[:m].copy()
                for j in range(1, k):  # combine word hashes, so punctuation between is ignored
                    acc = acc * np.uint64(_P) + wh[j : j + m]
                acc ^= np.uint64(k << 56)
                yield k, begins[:m], ends[k - 1 :], None, acc
            return
        nb = cp != _SPACE  # breaks are spaces and sentinels
        nb &= cp != _SENTINEL
        h1 = cp.astype(np.uint64)
        h1 += np.uint64(1)
        hk = h1
        inner = None  # inner[i]: no break strictly inside the n-gram at i
        for k in range(1, hi + 1):
            m = n - k + 1
            if m <= 0:
                return
            if k > 1:
                hk = hk[:m] * np.uint64(_P)  # a new array: the last one's prefix is not touched
                hk += h1[k - 1 :]
            if k >= 3:
                inner = nb[1 : m + 1] if inner is None else inner[:m] & nb[k - 2 : k - 2 + m]
            if k < lo:
                continue
            # char_wb: no break strictly inside; bigrams: not two breaks; unigrams: word characters
            if k > 2:
                valid = inner
            elif k == 2:
                valid = nb[:-1] | nb[1:]
            else:
                valid = nb
            yield k, None, None, valid, hk ^ np.uint64(k << 56)

    def hash(
        self, texts: list[str], positions: bool = False
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None, str]:
        """Row and hash of every n-gram of the prepared `texts` (+ start and length on request),
        by n, then by position."""
        joined = "\x00".join(texts) + "\x00"
        row_of = np.repeat(np.arange(len(texts), dtype=np.int32), [len(t) + 1 for t in texts])
        rows, hashes, starts, lens = [], [], [], []
        for k, start, end, valid, h in self._blocks(_codepoints(joined)):
            if start is None:  # character n-grams
                at = np.flatnonzero(valid)
                h, r, span = h[at], row_of[at], np.full(len(at), k, dtype=np.int64)
            else:  # a word n-gram must lie in one document
                r = row_of[start]
                same = r == row_of[end - 1]
                at, h, r, span = start[same], h[same], r[same], (end - start)[same]
            rows.append(r)
            hashes.append(h)
            starts.append(at)
            lens.append(span)
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
        empty = np.zeros(0, np.intp)
        if not n_rows:
            return Cells(0, empty, empty, np.zeros(0, np.float32), np.zeros(0, np.float32), empty)
        # one sortable key per (row, column) found; 32 bits when they fit: sorting is the main cost
        kind = np.uint32 if n_rows * n_cols < 2**32 else np.int64
        row_key = np.arange(n_rows, dtype=kind) * kind(n_cols)  # the key of (row, column 0)
        cp, base, kind_of = self._batch(docs, row_key)  # base: per character, its row's key
        keys = []
        for _, start, end, valid, h in self._blocks(cp, kind_of):
            col, found = table.search(h, valid)
            if start is None:
                key = base[: len(h)] + (col.view(np.uint32) if kind is np.uint32 else col)
            else:
                key = base[start]
                found &= key == base[end - 1]  # a word n-gram must lie in one document
                key += col.view(np.uint32) if kind is np.uint32 else col
            keys.append(key[found])
        key = np.concatenate(keys) if keys else np.zeros(0, kind)
        if not key.size:
            return Cells(n_rows, empty, empty, np.zeros(0, np.float32), np.zeros(n_rows, np.float32),
                         np.zeros(n_rows, np.intp))
        key.sort()
        first = np.empty(key.size, dtype=bool)
        first[0] = True
        np.not_equal(key[1:], key[:-1], out=first[1:])
        idx = np.flatnonzero(first)
        counts = np.diff(idx, append=key.size)
        uniq = key[idx]
        # where each row's keys begin (n_rows binary searches), not a division per cell
        bounds = np.searchsorted(uniq, np.append(row_key, kind(n_rows * n_cols)))
        per_row = np.diff(bounds)
        rows = np.repeat(np.arange(n_rows), per_row)
        cols = (uniq - np.repeat(row_key, per_row)).astype(np.intp)  # index-ready
        values = idf[cols]  # times a tf of 1 (most cells): exactly the idf
        repeated = np.flatnonzero(counts > 1)
        values[repeated] *= _tf(counts[repeated])
        filled = per_row > 0
        norms = np.zeros(n_rows, dtype=np.float32)
        norms[filled] = np.sqrt(np.add.reduceat(values * values, bounds[:-1][filled]))  # float32, as before
        return Cells(n_rows, rows, cols, values, norms, per_row)

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
