"""The n-gram TF-IDF features as a scikit-learn transformer, for training.

`NgramHasher` is what `train.build_pipeline` puts in its FeatureUnion (one per view: character
and word n-grams); `fit` chooses the vocabulary and the idf. The hashing and the TF-IDF values come
from `ngrams`, the numpy-only module the classifier scores with, so there is one implementation
of the features. A fitted pipeline is exported to arrays (`scorer.LinearScorer.from_pipeline`)
before it is saved: this module and scikit-learn are needed to train, not to classify.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, TransformerMixin

from mailsort.classify.ngrams import THREADS, Ngrams, Table, doc_chunks


class NgramHasher(BaseEstimator, TransformerMixin):
    """TF-IDF over hashed character or word n-grams; fit keeps the frequent ones.

    Parameters mirror TfidfVectorizer: `analyzer` ("char_wb" or "word"), `ngram_range`,
    `min_df` (documents), `max_df` (share of documents: n-grams in more are dropped, they are
    function words and greetings, which the model would otherwise learn as style), `max_features`
    (the most frequent kept), `strip_accents` (bool).
    Input documents should already be lowercased (see `text.document`).
    Fitted attributes: `vocab_` (sorted uint64 n-gram hashes) and `idf_` (float32).
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
    # compress), everything else is a couple of numpy arrays. Format-1 model files hold pickled
    # instances of this class: keep the attribute names.

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.pop("_table", None)
        return state

    def _lookup_table(self) -> Table:
        table = self.__dict__.get("_table")
        if table is None:
            table = self._table = Table(self.vocab_)
        return table

    def _ngrams(self) -> Ngrams:
        """How this view cuts documents into n-grams (shared with the scorer)."""
        return Ngrams(self.analyzer, tuple(self.ngram_range), bool(self.strip_accents))

    # -- sklearn API ---------------------------------------------------------------------------

    def fit(self, X: Sequence[str], y: object = None) -> NgramHasher:
        if self.analyzer not in ("char_wb", "word"):
            raise ValueError(f"analyzer must be 'char_wb' or 'word', not {self.analyzer!r}")
        grams = self._ngrams()
        docs = list(X)
        per_chunk = []
        for part in doc_chunks(docs):
            texts = [grams.prepare(d) for d in docs[part]]
            if not texts:
                continue
            rows, h, _, _, _ = grams.hash(texts)
            if not h.size:
                continue
            order = np.lexsort((h, rows))  # (row, hash) pairs, to count each once per document
            rows, h = rows[order], h[order]
            new = np.concatenate(([True], (rows[1:] != rows[:-1]) | (h[1:] != h[:-1])))
            per_chunk.append(h[new])
        n_docs = len(docs)
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

    def _csr(self, docs: Sequence[str]) -> sp.csr_matrix:
        """The l2-normalised TF-IDF rows of `docs`, in canonical CSR form."""
        cells = self._ngrams().cells(docs, self._lookup_table(), self.idf_)
        indptr = np.zeros(cells.n_rows + 1, dtype=np.int64)
        np.cumsum(np.bincount(cells.rows, minlength=cells.n_rows), out=indptr[1:])
        return sp.csr_matrix(
            (cells.normalised(), cells.cols.astype(np.int32), indptr),
            shape=(cells.n_rows, len(self.vocab_)),
        )

    def transform(self, X: Sequence[str]) -> sp.csr_matrix:
        docs = list(X)
        parts = [docs[s] for s in doc_chunks(docs)]
        if len(parts) > 1:
            with ThreadPoolExecutor(THREADS) as pool:
                return sp.vstack(list(pool.map(self._csr, parts)), format="csr")
        return self._csr(parts[0])

    def get_feature_names_out(self, input_features: object = None) -> np.ndarray:
        """Hash identifiers (the strings are not stored); `ngrams` gives readable names."""
        return np.array([f"{self.analyzer}:{h:016x}" for h in self.vocab_], dtype=object)

    def ngrams(self, doc: str) -> list[tuple[str, int]]:
        """The n-grams of one document that are in the vocabulary, with their column."""
        return self._ngrams().readable(doc, self._lookup_table())
