"""N-gram TF-IDF features computed with numpy, for speed.

Why not sklearn's TfidfVectorizer: its char_wb analyser walks every n-gram in Python and manages
about 2,000 short messages a second on a small machine; `sync` and the benchmark want well over
5,000. Here every n-gram is a substring hash computed for a whole batch at once (polynomial
hashing mod 2**64 over code points, prefix sums, no Python loop per n-gram), and the vocabulary
is a sorted array of the 64-bit hashes kept at fit time, looked up through an open-addressing
table built on load (no Python dict: the model loads fast and stays small).

The numbers equal TfidfVectorizer's with `sublinear_tf=True`, smooth idf and l2 norm (checked in
the tests): `analyzer="char_wb"` takes n-grams inside words padded with one space each side, as
sklearn's char_wb does; `analyzer="word"` takes word n-grams over `\\w+` tokens.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, TransformerMixin

from mailsort.classify.text import strip_accents

_P = 0x100000001B3  # odd, so it has an inverse mod 2**64
_P_INV = pow(_P, -1, 2**64)
_MIX = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing for table slots
_SPACE = 32
_SENTINEL = 0  # separates documents in a batch
_CHUNK_CHARS = 400_000  # characters hashed at a time: bounds memory, feeds the threads
_THREADS = 2  # numpy releases the GIL in the heavy steps; two cores is the target machine
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


class _Table:
    """Open-addressing (linear probing) map from 64-bit hash to column, vectorised."""

    def __init__(self, vocab: np.ndarray) -> None:
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


class NgramHasher(BaseEstimator, TransformerMixin):
    """TF-IDF over hashed character or word n-grams; fit keeps the frequent ones.

    Parameters mirror TfidfVectorizer: `analyzer` ("char_wb" or "word"), `ngram_range`,
    `min_df` (documents), `max_df` (share of documents: n-grams in more are dropped, they are
    function words and greetings, which the model would otherwise learn as style), `max_features`
    (the most frequent kept), `strip_accents` (bool).
    Input documents should already be lowercased (see `text.document`).
    """

    def __init__(
        self,
        analyzer: str = "char_wb",
        ngram_range: tuple[int, int] = (2, 5),
        min_df: int = 2,
        max_features: int | None = None,
        strip_accents: bool = False,
        max_df: float = 1.0,
    ) -> None:
        self.analyzer = analyzer
        self.ngram_range = ngram_range
        self.min_df = min_df
        self.max_features = max_features
        self.strip_accents = strip_accents
        self.max_df = max_df

    # -- pickling: the lookup table is rebuilt on load (it is big and random, so it would not
    # compress), everything else is a couple of numpy arrays

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.pop("_table", None)
        return state

    def _lookup_table(self) -> _Table:
        table = self.__dict__.get("_table")
        if table is None:
            table = self._table = _Table(self.vocab_)
        return table

    # -- text to hashes ----------------------------------------------------------------------

    def _prepare(self, doc: str) -> str:
        if self.strip_accents:
            doc = strip_accents(doc)
        return " " + " ".join(doc.split()) + " "

    def _hash(
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

    def _chunks(self, docs: Sequence[str]) -> Iterator[list[str]]:
        texts: list[str] = []
        size = 0
        for doc in docs:
            t = self._prepare(doc)
            texts.append(t)
            size += len(t) + 1
            if size >= _CHUNK_CHARS:
                yield texts
                texts, size = [], 0
        if texts or not docs:
            yield texts

    def _counts_chunk(self, texts: list[str]) -> sp.csr_matrix:
        """Counts of vocabulary n-grams for one chunk, in canonical CSR form."""
        n_rows, n_cols = len(texts), len(self.vocab_)
        if not texts:
            return sp.csr_matrix((0, n_cols), dtype=np.float32)
        rows, h, _, _, _ = self._hash(texts)
        col = self._lookup_table().lookup(h)
        hit = col >= 0
        key = rows[hit].astype(np.int64) * n_cols + col[hit]
        key.sort()
        if key.size:
            first = np.concatenate(([True], key[1:] != key[:-1]))
            idx = np.flatnonzero(first)
            counts = np.diff(np.append(idx, key.size)).astype(np.float32)
            uniq = key[idx]
        else:
            counts = np.zeros(0, np.float32)
            uniq = key
        r, c = np.divmod(uniq, n_cols) if n_cols else (uniq, uniq)
        indptr = np.zeros(n_rows + 1, dtype=np.int64)
        np.cumsum(np.bincount(r, minlength=n_rows), out=indptr[1:])
        return sp.csr_matrix((counts, c.astype(np.int32), indptr), shape=(n_rows, n_cols))

    # -- sklearn API ---------------------------------------------------------------------------

    def fit(self, X: Sequence[str], y: object = None) -> NgramHasher:
        if self.analyzer not in ("char_wb", "word"):
            raise ValueError(f"analyzer must be 'char_wb' or 'word', not {self.analyzer!r}")
        per_chunk = []
        n_docs = 0
        for texts in self._chunks(X):
            rows, h, _, _, _ = self._hash(texts)
            n_docs += len(texts)
            if not h.size:
                continue
            order = np.lexsort((h, rows))  # (row, hash) pairs, to count each once per document
            rows, h = rows[order], h[order]
            new = np.concatenate(([True], (rows[1:] != rows[:-1]) | (h[1:] != h[:-1])))
            per_chunk.append(h[new])
        allh = np.concatenate(per_chunk) if per_chunk else np.zeros(0, np.uint64)
        uniq, df = np.unique(allh, return_counts=True)
        keep = (df >= self.min_df) & (df <= self.max_df * n_docs)
        uniq, df = uniq[keep], df[keep]
        if self.max_features is not None and len(uniq) > self.max_features:
            order = np.lexsort((uniq, -df))[: self.max_features]  # by df, ties by hash
            order.sort()
            uniq, df = uniq[order], df[order]
        self.vocab_ = uniq
        self.idf_ = (np.log((1.0 + n_docs) / (1.0 + df)) + 1.0).astype(np.float32)
        self.n_features_out_ = len(uniq)
        self.__dict__.pop("_table", None)
        return self

    def transform(self, X: Sequence[str]) -> sp.csr_matrix:
        chunks = list(self._chunks(X))
        if len(chunks) > 1:
            with ThreadPoolExecutor(_THREADS) as pool:
                parts = list(pool.map(self._counts_chunk, chunks))
            m = sp.vstack(parts, format="csr")
        else:
            m = self._counts_chunk(chunks[0])
        if m.nnz:
            m.data = np.log(m.data, dtype=np.float32) + np.float32(1.0)  # sublinear tf
            m.data *= self.idf_[m.indices]
            sq = np.add.reduceat(m.data * m.data, m.indptr[:-1][np.diff(m.indptr) > 0])
            norms = np.ones(m.shape[0], dtype=np.float32)
            norms[np.diff(m.indptr) > 0] = np.sqrt(sq)
            m.data /= np.repeat(norms, np.diff(m.indptr))
        return m

    def get_feature_names_out(self, input_features: object = None) -> np.ndarray:
        """Hash identifiers (the strings are not stored); `ngrams` gives readable names."""
        return np.array([f"{self.analyzer}:{h:016x}" for h in self.vocab_], dtype=object)

    def ngrams(self, doc: str) -> list[tuple[str, int]]:
        """The n-grams of one document that are in the vocabulary, with their column."""
        _, h, starts, lens, joined = self._hash([self._prepare(doc)], positions=True)
        if starts is None or lens is None:
            return []
        col = self._lookup_table().lookup(h)
        hit = col >= 0
        return [
            (joined[s : s + k], int(c))
            for s, k, c in zip(starts[hit], lens[hit], col[hit], strict=True)
        ]
