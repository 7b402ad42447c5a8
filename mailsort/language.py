"""The language of a message: which one a reply should be written in.

py3langid tells it, restricted to the languages clients of this tool plausibly write in. Two things
make it cheap enough for a sync of thousands of messages (see _Scorer and _identifier): the texts of
a batch walk py3langid's automaton together, and py3langid's model — shipped LZMA-compressed, which
costs over half a second to unpack in every process — is unpacked once into the user cache directory.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable, Sequence

log = logging.getLogger(__name__)

LANGUAGES = ("en", "it", "es", "ru", "de", "fr", "pt", "nl", "pl", "uk", "ca", "ro", "sv", "da", "no",
             "fi", "cs", "el", "tr", "hu", "bg", "sr", "hr", "sk", "sl", "lt", "lv", "et")
COMMON_LANGUAGES = ("en", "it", "es", "ru", "de", "fr", "pt")
SHORT_SAMPLE = 80  # characters; below this, only COMMON_LANGUAGES are considered
LANGUAGE_SAMPLE = 400  # characters the language is told from: plenty (the same answers as 1,000 on the
# corpus), and the cost grows with every byte
NO_EVIDENCE = -1e30  # py3langid's score when no feature of the text is known


def language_text(subject: str, text: str) -> str:
    """What the language of a message is told from."""
    return subject + "\n" + text


def detect_languages(texts: Iterable[str]) -> list[str]:
    """detect_language for many texts, at a fraction of the cost: one after the other, the language
    model's tables stay in the CPU caches, and the scoring is shared (see _Scorer)."""
    texts = list(texts)
    scorer = _scorer()
    if scorer is None:
        return [detect_language(text) for text in texts]
    samples = [_sample(text) for text in texts]
    scored = [s for s in samples if len(s) >= 3]
    picks = iter(scorer.picks(scorer.scores(scored), [len(s) < SHORT_SAMPLE for s in scored]) if scored else ())
    return [next(picks) if len(s) >= 3 else "und" for s in samples]


def detect_language(text: str) -> str:
    """ISO 639-1 code of the text's language (py3langid restricted to plausible mail languages)."""
    sample = _sample(text)
    if len(sample) < 3:
        return "und"
    scorer = _scorer()
    if scorer is not None:
        return scorer.best(sample, short=len(sample) < SHORT_SAMPLE)
    ranked = _identifier().rank(sample)
    if ranked[0][1] < NO_EVIDENCE:  # not one known n-gram ("Hola"): the model's answer would be arbitrary
        return "und"
    if len(sample) < SHORT_SAMPLE:
        # a line or two is too little to tell Serbian from Russian or Danish from English; prefer the
        # languages clients of this tool actually write in
        common = [lang for lang, _ in ranked if lang in COMMON_LANGUAGES]
        if common:
            return common[0]
    return ranked[0][0]


class _Scorer:
    """py3langid's scores for a batch of texts, with its model, without its per-byte Python loop.

    py3langid walks each text's bytes through an automaton in a Python loop (about half a microsecond a
    byte) and scores each text with its own numpy calls. Here the texts of a batch walk the automaton in
    lockstep — one numpy step per byte position moves every text still that long — and the feature
    counts of the whole batch are scored in one go. The numbers are py3langid's up to float rounding
    (the sums run in another order); `_scorer()` checks the answers against rank() before using it."""

    LOCKSTEP_MIN = 8  # texts still walking below which the rest is walked in Python (numpy calls cost more)

    def __init__(self, identifier) -> None:
        import numpy as np
        from py3langid.langid import RAW_FLOOR

        if getattr(identifier, "_norm_probs", True):
            raise TypeError("only the raw (not normalised) scores are supported")
        self.np = np
        self.identifier = identifier
        self.floor = RAW_FLOOR
        self.moves = np.frombuffer(identifier.tk_nextmove, dtype=np.uint32) if identifier.tk_nextmove.itemsize == 4 \
            else np.array(identifier.tk_nextmove, dtype=np.int64)
        self.rowbase = np.array(identifier._rowbase, dtype=np.int64)
        self.output = np.array(identifier.tk_output, dtype=np.int64)
        self.emits = np.append(self.output, -1).astype(np.int32)  # the feature each state emits (-1: none)
        # gathered thousands of rows at a time: C order keeps a row's numbers together (py3langid's
        # table is in Fortran order, where they are 400 KB apart: a third of the scoring time)
        self.table = np.ascontiguousarray(identifier.nb_ptc, dtype=np.float32)
        labels = list(identifier.nb_classes)
        first = [labels.index(label) == i for i, label in enumerate(labels)]  # rank keeps a label's first column
        self.labels = labels
        self.usable = np.array(first)
        self.common = np.array([ok and label in COMMON_LANGUAGES for ok, label in zip(first, labels)])

    def _visits(self, encoded: Sequence[bytes]):
        """(text, feature) of every feature the automaton emits, over all texts (unsorted, repeats kept)."""
        np = self.np
        n = len(encoded)
        lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=n)
        order = np.argsort(-lengths, kind="stable")  # longest first: the texts still walking are a prefix
        ordered = lengths[order]
        walking = int(ordered[self.LOCKSTEP_MIN - 1]) if n >= self.LOCKSTEP_MIN else 0  # steps taken in lockstep
        texts: list = []
        features: list = []
        states = np.zeros(n, dtype=np.int64)
        if walking:
            # byte j of the i-th longest text at [j, i] (zeros past its end are never read): the texts
            # cut or padded to one length and joined make it in one go
            rows = b"".join([encoded[i][:walking].ljust(walking, b"\0") for i in order.tolist()])
            matrix = np.frombuffer(rows, dtype=np.uint8).reshape(n, walking).T.copy()
            active = np.searchsorted(-ordered, -np.arange(walking), side="right")  # texts longer than j
            # the state of each text after byte j - 1 in row j (row 0: the start; -1: the text has ended)
            visited = np.full((walking + 1, n), -1, dtype=np.int32)
            visited[0] = 0
            moves, rowbase = self.moves, self.rowbase
            for j in range(walking):
                k = active[j]
                visited[j + 1, :k] = moves[rowbase[visited[j, :k]] + matrix[j, :k]]
            states = visited[walking].astype(np.int64)  # where the texts still walking are (see the tails)
            emitted = self.emits[visited[1:]]  # (an ended text's -1 picks the -1 at the end of `emits`)
            where = np.nonzero(emitted >= 0)
            texts.append(order[where[1]])
            features.append(emitted[where])
        nextmove, base, out = self.identifier.tk_nextmove, self.identifier._rowbase, self.identifier.tk_output
        for column in range(n):  # the tails beyond the lockstep walk (all of each text when the batch is small)
            length = int(ordered[column])
            if length <= walking:
                break
            i = int(order[column])
            state, found = int(states[column]), []
            for letter in encoded[i][walking:]:
                state = nextmove[base[state] + letter]
                if out[state] >= 0:
                    found.append(out[state])
            if found:
                texts.append(np.full(len(found), i, dtype=np.int64))
                features.append(np.array(found, dtype=np.int64))
        if not texts:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return np.concatenate(texts), np.concatenate(features)

    def scores(self, samples: Sequence[str]):
        """identifier._decide(sample) for each sample, as rows of one array."""
        np, idf = self.np, self.identifier
        encoded = [idf._encode(sample) for sample in samples]
        out = np.full((len(samples), len(self.labels)), self.floor, dtype=np.float32)
        texts, features = self._visits(encoded)
        if texts.size:
            keys, counts = np.unique(texts * len(self.output) + features, return_counts=True)
            texts, features = np.divmod(keys, len(self.output))
            weighted = self.table.take(features, axis=0)
            weighted *= np.log1p(counts.astype(np.float32))[:, None]
            starts = np.flatnonzero(np.concatenate(([True], texts[1:] != texts[:-1])))
            out[texts[starts]] = np.add.reduceat(weighted, starts, axis=0) + idf.nb_pc
        for i, j in idf._alias_pairs:
            out[:, i] = np.maximum(out[:, i], out[:, j])
            out[:, j] = self.floor
        return out

    def picks(self, scores, shorts: Sequence[bool]) -> list[str]:
        """The language of each row of `scores` (a sample of fewer than SHORT_SAMPLE characters where
        `shorts` says so), as detect_language tells it from rank(), for all rows in a few numpy calls."""
        np = self.np
        rows = np.arange(len(scores))
        masked = np.where(self.usable, scores, -np.inf)
        top = masked.argmax(axis=1)
        # a line or two is too little to tell Serbian from Russian or Danish from English; prefer the
        # languages clients of this tool actually write in
        common = np.where(self.common, scores, -np.inf).argmax(axis=1) if self.common.any() else top
        chosen = np.where(np.asarray(shorts, dtype=bool), common, top)
        # not one known n-gram ("Hola"): the model's answer would be arbitrary
        known = ~(masked[rows, top] < NO_EVIDENCE)
        return [self.labels[i] if ok else "und" for i, ok in zip(chosen.tolist(), known.tolist())]

    def best(self, sample: str, short: bool) -> str:
        return self.picks(self.scores([sample]), [short])[0]


_SCORER: "_Scorer | None | bool" = False


def _scorer() -> "_Scorer | None":
    """The fast path when this py3langid has the internals it relies on (checked once against rank)."""
    global _SCORER
    if _SCORER is False:
        identifier = _identifier()
        _SCORER = None
        if hasattr(identifier, "_decide") and hasattr(identifier, "nb_classes"):
            try:
                scorer = _Scorer(identifier)
                probes = ["Il sito non funziona da stamattina, potete controllare?", "Сайт не работает с утра",
                          "xq", "The shop has been down since this morning, every page shows an error."]
                scores = scorer.scores(probes)
                expected = [identifier._decide(p) for p in probes]
                if all(_same_scores(row, want) for row, want in zip(scores, expected)):
                    _SCORER = scorer
            except Exception:  # another py3langid: the plain rank() path is always right
                _SCORER = None
    return _SCORER  # type: ignore[return-value]


def _same_scores(got, want) -> bool:
    import numpy as np

    return bool(np.allclose(got, want, rtol=1e-4, atol=1e-3))  # the same sums in another order: rounding apart


_IDENTIFIER = None


def _identifier():
    """py3langid's identifier restricted to LANGUAGES, from the unpacked copy when there is one."""
    global _IDENTIFIER
    if _IDENTIFIER is None:
        identifier = _from_cache()
        if identifier is None:
            from py3langid.langid import MODEL_FILE, LanguageIdentifier

            # py3langid 0.2/0.3 name the loader from_pickled_model; 0.4 renamed it from_model_file
            load = getattr(LanguageIdentifier, "from_model_file", None) or LanguageIdentifier.from_pickled_model
            identifier = load(MODEL_FILE, norm_probs=False)
            identifier.set_languages(list(LANGUAGES))
            _to_cache(identifier)
        _IDENTIFIER = identifier
    return _IDENTIFIER


# The unpacked model: py3langid 0.4's arrays after set_languages, one .npy file each (about 45 MB in
# all) in a directory of the user cache, named after the packed file it came from (a new py3langid, a
# new name). The files are mapped, not read: a process starts using the model at once (the 39 MB
# automaton is paged in as the texts walk it), and every process and worker shares the same pages.
# np.load without pickle: the cache is data, never code. Any trouble with it falls back to the packed file.
_CACHE_FIELDS = ("ptc", "pc", "classes", "nextmove", "row", "output")


def _cache_path() -> Path | None:
    try:
        import py3langid
        from py3langid.langid import MODEL_DIR, MODEL_FILE
    except ImportError:
        return None
    try:
        packed = (Path(MODEL_DIR) / MODEL_FILE).stat()
    except OSError:
        return None
    import hashlib

    version = getattr(py3langid, "__version__", "0")
    key = hashlib.sha256(f"{packed.st_size} {packed.st_mtime_ns} {' '.join(LANGUAGES)}".encode()).hexdigest()[:16]
    name = f"py3langid-{version}-{key}"
    from .config import cache_dir

    return cache_dir() / name


def _from_cache():
    path = _cache_path()
    if path is None or not path.is_dir():
        return None
    try:
        import numpy as np
        from py3langid.langid import LanguageIdentifier

        arrays = {name: np.load(path / f"{name}.npy", mmap_mode="r", allow_pickle=False) for name in _CACHE_FIELDS}
        if arrays["nextmove"].dtype.kind != "u" or arrays["row"].dtype.kind != "u" or arrays["ptc"].ndim != 2:
            raise ValueError("unexpected layout")
        # (a memoryview: indexed from Python, as py3langid and the tails of _Scorer._visits do, it gives ints)
        return LanguageIdentifier(arrays["ptc"], np.array(arrays["pc"]), arrays["classes"].tolist(),
                                  memoryview(arrays["nextmove"]), arrays["output"].tolist(), norm_probs=False,
                                  tk_row=arrays["row"].tolist())
    except Exception as exc:  # an old or damaged copy: the packed model is always right
        log.debug("language model cache %s unusable (%s); unpacking the packed model", path, exc)
        return None


def _to_cache(identifier) -> None:
    """Keep an unpacked copy for the next process (py3langid 0.4 layout only; silently skipped when
    the cache directory is not writable). Written aside, then renamed into place: a process never
    maps a half-written copy."""
    path = _cache_path()
    tk_row = getattr(identifier, "tk_row", None)
    if path is None or tk_row is None or not hasattr(identifier.tk_nextmove, "itemsize"):
        return
    import shutil
    import tempfile

    import numpy as np

    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for old in path.parent.glob("py3langid-*"):  # copies for another py3langid, or damaged
            if old == path:
                continue
            if old.is_dir():
                shutil.rmtree(old)
            else:
                old.unlink(missing_ok=True)
        if path.exists():
            shutil.rmtree(path)
        code = {2: np.uint16, 4: np.uint32, 8: np.uint64}
        tmp = tempfile.mkdtemp(dir=path.parent, prefix=".py3langid-")
        arrays = {"ptc": np.asarray(identifier.nb_ptc), "pc": np.asarray(identifier.nb_pc),
                  "classes": np.array(identifier.nb_classes),
                  "nextmove": np.frombuffer(identifier.tk_nextmove, dtype=code[identifier.tk_nextmove.itemsize]),
                  "row": np.frombuffer(tk_row, dtype=code[tk_row.itemsize]),
                  "output": np.asarray(identifier.tk_output, dtype=np.int32)}
        for name, array in arrays.items():
            np.save(Path(tmp) / f"{name}.npy", array, allow_pickle=False)
        os.replace(tmp, path)
        tmp = None
    except (OSError, ValueError, KeyError) as exc:
        log.debug("cannot keep an unpacked language model in %s: %s", path.parent, exc)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _sample(text: str) -> str:
    """What the language is told from: `_strip_quoted(text)[:LANGUAGE_SAMPLE].strip()`, without a
    look at the lines after the sample (a mail's text often ends in a long quoted history)."""
    lines = text.splitlines()
    if ">" in text:
        kept, size = [], -1  # size: of "\n".join(kept)
        for line in lines:
            if not line.lstrip().startswith(">"):
                kept.append(line)
                size += len(line) + 1
                if size >= LANGUAGE_SAMPLE:
                    break  # the sample is complete
        lines = kept
    return "\n".join(lines)[:LANGUAGE_SAMPLE].strip()


def _strip_quoted(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith(">"))
