"""The n-gram features of a batch: the fast batch path (whitespace and accents handled with numpy,
the hash table, the counting) must give the cells that each document alone gives."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailsort.classify.ngrams import Ngrams, Table

VIEWS = [Ngrams("char_wb", (2, 5), True), Ngrams("char_wb", (1, 3), False),
         Ngrams("word", (1, 2), False), Ngrams("word", (1, 3), True)]

# what the batch path must get right: whitespace other than " " and runs of it, empty and blank
# documents, combining marks (removed by strip_accents, also between two spaces), compatibility
# characters that NFKD splits ("ﬁ", "¨" -> " " + mark), a sentinel inside a document, astral
# characters
TRICKY = ["il sito è giù", "", "   ", "a\tb\n\nc\u00a0d\u2003e\u2028f", "  padded  ", "naïve café",
          "e\u0301 a \u0308 b", "ﬁne ¨x ǅ", "zero\x00byte", "emoji 😀 𝐁old", "ёж й", "x",
          "Ошибка 500 на сайте", "the site is down, error 503"]


def reference_cells(view: Ngrams, docs: list[str], table: Table, idf: np.ndarray):
    """Cells computed one document at a time from `prepare` and `hash`, counted with a Counter."""
    rows, cols, values = [], [], []
    norms = np.zeros(len(docs), dtype=np.float32)
    for i, doc in enumerate(docs):
        _, h, _, _, _ = view.hash([view.prepare(doc)])
        col = table.lookup(h)
        counts = Counter(int(c) for c in col if c >= 0)
        cs = np.array(sorted(counts), dtype=np.int64)
        v = (np.log(np.array([counts[c] for c in cs], dtype=np.float32)) + np.float32(1.0)) * idf[cs]
        rows += [i] * len(cs)
        cols += list(cs)
        values.append(v.astype(np.float32))
        if len(cs):  # summed as the scorer always has (reduceat; reduce would differ in the last bit)
            norms[i] = np.sqrt(np.add.reduceat(v * v, [0])[0])
    return np.array(rows), np.array(cols), np.concatenate(values) if values else np.zeros(0), norms


def vocabulary(view: Ngrams, docs: list[str], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Most of the batch's own n-grams (some left out, so that misses are tested too)."""
    _, h, _, _, _ = view.hash([view.prepare(d) for d in docs])
    vocab = np.unique(h)
    rng = np.random.default_rng(seed)
    vocab = vocab[rng.random(len(vocab)) < 0.8]
    return vocab, (rng.random(len(vocab)) * 4 + 1).astype(np.float32)


@pytest.mark.parametrize("view", VIEWS, ids=lambda v: f"{v.analyzer}{v.ngram_range}{'-strip' if v.strip_accents else ''}")
def test_batch_cells_equal_each_document_alone(view: Ngrams) -> None:
    docs = TRICKY * 3
    vocab, idf = vocabulary(view, docs, 1)
    table = Table(vocab)
    cells = view.cells(docs, table, idf)
    rows, cols, values, norms = reference_cells(view, docs, table, idf)
    np.testing.assert_array_equal(cells.rows, rows)
    np.testing.assert_array_equal(cells.cols, cols)
    np.testing.assert_array_equal(cells.values, values)  # float32, bit for bit
    np.testing.assert_array_equal(cells.norms, norms)
    assert len(rows) > 50


@settings(max_examples=40, deadline=None)
@given(st.lists(st.text(alphabet=st.sampled_from(list("ab cé\t\u00a0\u0301\u0483\x00😀ﬁ¨,.-'")), max_size=30),
                min_size=1, max_size=12))
def test_batch_cells_equal_each_document_alone_on_any_text(docs: list[str]) -> None:
    for view in VIEWS:
        vocab, idf = vocabulary(view, docs, 2)
        table = Table(vocab)
        cells = view.cells(docs, table, idf)
        rows, cols, values, norms = reference_cells(view, docs, table, idf)
        np.testing.assert_array_equal(cells.rows, rows)
        np.testing.assert_array_equal(cells.cols, cols)
        np.testing.assert_array_equal(cells.values, values)
        np.testing.assert_array_equal(cells.norms, norms)


@pytest.mark.parametrize("ordered", [False, True])
def test_table_finds_every_key_and_nothing_else(ordered: bool) -> None:
    rng = np.random.default_rng(3)
    # 0 and 1 are the keys of empty slots: as vocabulary entries and as queries they must work
    vocab = np.unique(np.concatenate([rng.integers(0, 2**64, 5000, dtype=np.uint64),
                                      np.array([0, 1], dtype=np.uint64)]))
    order = rng.permutation(len(vocab)) if ordered else None
    table = Table(vocab, order)
    others = rng.integers(0, 2**64, 20000, dtype=np.uint64)
    others = others[~np.isin(others, vocab)]
    queries = np.concatenate([vocab, others, vocab[::7]])
    expected = np.concatenate([np.arange(len(vocab)), np.full(len(others), -1), np.arange(len(vocab))[::7]])
    np.testing.assert_array_equal(table.lookup(queries), expected)
    valid = rng.random(len(queries)) < 0.9  # what is not valid is not looked up
    col, found = table.search(queries, valid)
    np.testing.assert_array_equal(found, valid & (expected >= 0))
    np.testing.assert_array_equal(col[found], expected[found])
    empty = Table(np.zeros(0, dtype=np.uint64))
    np.testing.assert_array_equal(empty.lookup(np.array([0, 1, 2], dtype=np.uint64)), [-1, -1, -1])


def test_the_kind_table_says_of_every_bmp_character_what_str_and_re_say() -> None:
    """The one lookup the batch path makes per character, against the plain per-character tests."""
    import re

    from mailsort.classify.ngrams import _MARK, _ODD_SPACE, _WORD_CHAR, _kinds
    from mailsort.classify.text import COMBINING_RANGES

    table = _kinds()
    for code in range(0x10000):
        char = chr(code)
        want = (_ODD_SPACE if char.isspace() and char != " " else 0) \
            | (_MARK if any(lo <= code <= hi for lo, hi in COMBINING_RANGES) else 0) \
            | (_WORD_CHAR if re.fullmatch(r"\w", char) else 0)
        assert table[code] == want, hex(code)
