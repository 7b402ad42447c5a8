"""P(critical) from stored arrays: the trained pipeline's arithmetic, with numpy only.

The model is linear, so scoring needs no scikit-learn: for each feature view (character n-grams,
word n-grams) tf = 1 + log(count) of each vocabulary n-gram, times its idf, l2-normalised within
the view, dotted with the view's slice of the logistic regression's weights; the views' sums plus
the intercept are the log-odds, and the sigmoid of that is `Pipeline.predict_proba(docs)[:, 1]`
(equal to 1e-5 in the tests; float32 features, float64 weights, as in the pipeline).

No sparse matrix either: per view the cells of a batch are (row, column, value) arrays from
`ngrams`, and a sum per row gives the dot products. Importing scikit-learn costs about
1.5 s of CPU and scipy.sparse 0.4 s more; every `sync` worker process used to pay that before
its first verdict.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from mailsort.classify.ngrams import THREADS, Cells, Ngrams, Table, doc_chunks

ANALYZERS = ("char_wb", "word")


@dataclass(eq=False)
class View:
    """One feature view: how it cuts text, its vocabulary and idf, and its weights."""

    name: str
    ngrams: Ngrams
    vocab: np.ndarray  # uint64 n-gram hashes, sorted (a column is an index into this)
    idf: np.ndarray  # float32, one per column
    coef: np.ndarray  # float64, the logistic regression's weight of each column

    @cached_property
    def table(self) -> Table:
        """The hash -> column lookup, built on first use (about 20 ms for 90,000 n-grams).

        Frequent n-grams (low idf) are placed first, in their home slots: most n-grams of a
        message are then found by the first probe."""
        return Table(self.vocab, np.argsort(self.idf, kind="stable"))

    def cells(self, docs: Sequence[str]) -> Cells:
        return self.ngrams.cells(docs, self.table, self.idf)

    def logits(self, docs: Sequence[str]) -> np.ndarray:
        """This view's share of the log-odds of each document."""
        cells = self.cells(docs)
        # normalised in float32 first, as the pipeline's features are: same numbers to 1e-15
        weights = self.coef[cells.cols]
        weights *= cells.normalised()
        # a sum per row's run of cells (the rows are sorted): np.bincount adds them one after
        # the other through memory, a tenth of the scoring time; the sums differ from its in the
        # last bits (pairwise order), some 1e-16 of the log-odds
        per_row = np.bincount(cells.rows, minlength=cells.n_rows) if cells.per_row is None else cells.per_row
        out = np.zeros(cells.n_rows)
        filled = per_row > 0
        if filled.any():
            starts = np.cumsum(per_row) - per_row
            out[filled] = np.add.reduceat(weights, starts[filled])
        return out


@dataclass(eq=False)
class LinearScorer:
    """Documents -> P(critical): the feature views and the logistic regression's intercept."""

    views: tuple[View, ...]
    intercept: float

    def decision(self, docs: Sequence[str]) -> np.ndarray:
        """Log-odds of "critical" for each document (the pipeline's decision_function)."""
        docs = list(docs)
        for view in self.views:
            _ = view.table  # build the lookup tables before any thread needs them
        parts = [docs[s] for s in doc_chunks(docs)]
        if len(parts) > 1:
            with ThreadPoolExecutor(THREADS) as pool:
                return np.concatenate(list(pool.map(self._decision_part, parts)))
        return self._decision_part(parts[0])

    def _decision_part(self, docs: list[str]) -> np.ndarray:
        out = np.full(len(docs), self.intercept, dtype=np.float64)
        for view in self.views:
            out += view.logits(docs)
        return out

    def proba(self, docs: Sequence[str]) -> np.ndarray:
        """P(critical) for each document: the sigmoid of the log-odds."""
        return 0.5 * (1.0 + np.tanh(0.5 * self.decision(docs)))  # = 1/(1+e^-d), no overflow

    def contributions(self, doc: str) -> list[tuple[str, float]]:
        """Each vocabulary n-gram of `doc` as ("view:n-gram", its term of the log-odds), views in
        order and columns ascending within a view."""
        out: list[tuple[str, float]] = []
        for view in self.views:
            cells = view.cells([doc])
            if not cells.cols.size:
                continue
            names: dict[int, str] = {}
            for gram, col in view.ngrams.readable(doc, view.table):
                names.setdefault(col, gram.strip() or repr(gram))
            values = cells.normalised().astype(np.float64) * view.coef[cells.cols]
            out += [(f"{view.name}:{names.get(int(c), f'#{int(c)}')}", float(v))
                    for c, v in zip(cells.cols, values, strict=True)]
        return out

    # -- storage -------------------------------------------------------------------------------

    def to_payload(self) -> dict:
        """Plain values and numpy arrays (nothing that needs this package's classes to unpickle)."""
        return {
            "intercept": float(self.intercept),
            "views": [
                {
                    "name": v.name,
                    "analyzer": v.ngrams.analyzer,
                    "ngram_range": [int(v.ngrams.ngram_range[0]), int(v.ngrams.ngram_range[1])],
                    "strip_accents": bool(v.ngrams.strip_accents),
                    "vocab": np.ascontiguousarray(v.vocab, dtype=np.uint64),
                    "idf": np.ascontiguousarray(v.idf, dtype=np.float32),
                    "coef": np.ascontiguousarray(v.coef, dtype=np.float64),
                }
                for v in self.views
            ],
        }

    @classmethod
    def from_payload(cls, payload: dict) -> LinearScorer:
        """The scorer stored by `to_payload`; ValueError when the payload is not one."""
        try:
            views = []
            for v in payload["views"]:
                lo, hi = (int(n) for n in v["ngram_range"])
                vocab = np.asarray(v["vocab"])
                idf = np.asarray(v["idf"])
                coef = np.asarray(v["coef"])
                if (v["analyzer"] not in ANALYZERS or not 1 <= lo <= hi
                        or vocab.dtype != np.uint64 or idf.dtype != np.float32
                        or coef.dtype != np.float64
                        or not vocab.ndim == idf.ndim == coef.ndim == 1
                        or not len(vocab) == len(idf) == len(coef)):
                    raise ValueError(f"view {v.get('name')!r} is malformed")
                views.append(View(str(v["name"]),
                                  Ngrams(v["analyzer"], (lo, hi), bool(v["strip_accents"])),
                                  vocab, idf, coef))
            return cls(tuple(views), float(payload["intercept"]))
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"missing or mistyped field: {exc}") from None

    @classmethod
    def from_pipeline(cls, pipeline: Any) -> LinearScorer:
        """Export a fitted `train.build_pipeline()` pipeline (FeatureUnion of NgramHashers, then a
        binary LogisticRegression). Duck-typed: this does not import scikit-learn."""
        union = pipeline.named_steps["features"]
        model = pipeline.named_steps["model"]
        coef = np.asarray(model.coef_, dtype=np.float64)
        if coef.ndim != 2 or coef.shape[0] != 1:
            raise ValueError("the model is not a binary linear classifier")
        coef = coef[0]
        weights = union.transformer_weights or {}
        views, offset = [], 0
        for name, vec in union.transformer_list:
            n = len(vec.vocab_)
            views.append(View(
                name,
                Ngrams(vec.analyzer, (int(vec.ngram_range[0]), int(vec.ngram_range[1])),
                       bool(vec.strip_accents)),
                np.ascontiguousarray(vec.vocab_, dtype=np.uint64),
                np.ascontiguousarray(vec.idf_, dtype=np.float32),
                coef[offset : offset + n] * float(weights.get(name, 1.0)),
            ))
            offset += n
        if offset != len(coef):
            raise ValueError(f"the features have {offset} columns, the model {len(coef)}")
        return cls(tuple(views), float(np.ravel(model.intercept_)[0]))
