"""The trained classifier, its verdicts, and how it is stored and verified.

A model is two files: `<name>.joblib` (written by joblib.dump) and `<name>.json` (the model card).
Since FORMAT 2 the .joblib holds plain values and numpy arrays only — per feature view its
analyser, n-gram range, accent stripping, vocabulary (uint64 n-gram hashes), idf (float32) and
logistic-regression weights (float64), plus the intercept and the decision threshold — exported
from the fitted scikit-learn pipeline when training ends (`Classifier.from_pipeline`). Loading and
classifying need numpy and joblib, not scikit-learn or scipy (see `scorer`): a `sync` worker
starts classifying about 2 s of CPU sooner. Once a model file is verified, its arrays are also kept
unpacked in the cache directory (see the end of this module): later processes read that copy
without importing joblib.

Unpickling runs code, so a model file is only unpickled after the card vouches for it: the card
must exist and the file's sha256 must equal the card's.

FORMAT 1 files (a pickled scikit-learn Pipeline, written by earlier versions — a user's retrained
model may be one) still load: the card's scikit-learn major.minor must be ours (pickles do not
carry across sklearn releases reliably), the pipeline is unpickled (importing scikit-learn) and
converted to the arrays above in memory; `mailsort train` rewrites it as FORMAT 2. Converting keeps
a user's corrections working after an upgrade instead of failing on every sync until they retrain.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from mailsort.classify.scorer import LinearScorer
from mailsort.classify.text import document
from mailsort.errors import ModelError

#: Bumped when the stored object's layout changes (1: pickled sklearn Pipeline; 2: arrays).
FORMAT = 2
CRITICAL = "critical"
ROUTINE = "routine"


@dataclass(frozen=True)
class Verdict:
    """The model's answer for one message: its label and the probability it is critical."""

    label: str
    p_critical: float

    @property
    def critical(self) -> bool:
        return self.label == CRITICAL


@dataclass(eq=False)
class Classifier:
    """A linear scorer (documents -> P(critical)), its decision threshold and its card.

    The threshold is not 0.5: it is chosen on held-out data so that critical recall stays high
    (a missed outage costs far more than a routine mail flagged as critical).
    """

    scorer: LinearScorer
    threshold: float
    card: dict = field(default_factory=dict)

    @classmethod
    def from_pipeline(cls, pipeline: Any, threshold: float, card: dict | None = None) -> Classifier:
        """The classifier of a fitted scikit-learn pipeline (see `scorer.LinearScorer.from_pipeline`):
        it scores as `pipeline.predict_proba(docs)[:, 1]` does, without scikit-learn."""
        return cls(LinearScorer.from_pipeline(pipeline), float(threshold), dict(card or {}))

    def scores(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """P(critical) for each (subject, body)."""
        if not pairs:
            return np.zeros(0)
        docs = [document(subject or "", body or "") for subject, body in pairs]
        return self.scorer.proba(docs)

    def predict(self, pairs: Sequence[tuple[str, str]]) -> list[Verdict]:
        """Verdicts for a batch of (subject, body) pairs (one call: vectorised, fast)."""
        threshold = self.threshold
        # Python floats (the same doubles): comparing and rounding numpy scalars one by one cost
        # as much as the arithmetic that scored them
        return [
            Verdict(CRITICAL if p >= threshold else ROUTINE, round(p, 4))
            for p in self.scores(pairs).tolist()
        ]

    def explain(self, subject: str, body: str, k: int = 8) -> list[tuple[str, float]]:
        """The k features that pushed this message's verdict hardest, strongest first.

        Each is (readable feature, contribution to the log-odds of "critical"): positive pushes
        towards critical, negative towards routine. Overlapping character n-grams are merged
        into the longest one so the list reads as words, not as "ack", "hack", "acke".
        """
        verdict = self.predict([(subject, body)])[0]
        sign = 1.0 if verdict.critical else -1.0
        doc = document(subject or "", body or "")
        ranked = sorted(self.scorer.contributions(doc), key=lambda kv: -sign * kv[1])
        out: list[tuple[str, float]] = []
        for label, c in ranked:
            if sign * c <= 0 or len(out) >= k:
                break
            text = label.split(":", 1)[-1]
            if any(text in seen.split(":", 1)[-1] for seen, _ in out):
                continue  # a piece of a feature already shown
            out.append((label, round(c, 4)))
        return out

    def save(self, path: str | Path) -> Path:
        """Write `<name>.joblib` (FORMAT 2, compressed) and `<name>.json` (the card); returns the
        card path.

        Both are written to temporary files and renamed, so a reader never sees half a model.
        """
        import joblib

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"format": FORMAT, "threshold": float(self.threshold), **self.scorer.to_payload()}
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            joblib.dump(payload, tmp, compress=("zlib", 3))
            data = Path(tmp).read_bytes()
            card = dict(self.card)
            card.setdefault("created", datetime.now(timezone.utc).isoformat(timespec="seconds"))
            card["format"] = FORMAT
            card["threshold"] = self.threshold
            card["versions"] = {
                "python": platform.python_version(),
                "sklearn": _version("scikit-learn"),  # what trained it; not needed to load it
                "numpy": np.__version__,
                "scipy": _version("scipy"),
                "joblib": joblib.__version__,
            }
            card["file"] = {
                "name": path.name,
                "sha256": hashlib.sha256(data).hexdigest(),
                "bytes": len(data),
            }
            card_path = path.with_suffix(".json")
            _write_atomic(card_path, json.dumps(card, indent=2, ensure_ascii=False) + "\n")
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        self.card = card
        return card_path


def _version(dist: str) -> str | None:
    """An installed distribution's version, read from its metadata (no import)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def shipped_model_path() -> Path:
    """The model that comes with mailsort: mailsort/models/default.joblib in an installed wheel,
    models/default.joblib in a source checkout (an editable install)."""
    here = Path(__file__).resolve()
    installed = here.parents[1] / "models" / "default.joblib"
    return installed if installed.exists() else here.parents[2] / "models" / "default.joblib"


def user_model_path() -> Path:
    """Where `mailsort train` puts the user's own model by default (the user data dir), so that
    retraining never overwrites the shipped model and survives upgrades."""
    import platformdirs

    return Path(platformdirs.user_data_dir("mailsort")) / "models" / "user.joblib"


def default_model_path() -> Path:
    """$MAILSORT_MODEL, else the user's retrained model when there is one, else the shipped model."""
    env = os.environ.get("MAILSORT_MODEL")
    if env:
        return Path(env).expanduser()
    user = user_model_path()
    return user if user.is_file() else shipped_model_path()


def card_path(path: str | Path) -> Path:
    """The model card that goes with a model file."""
    return Path(path).with_suffix(".json")


def read_card(path: str | Path) -> dict:
    """The card of a model file, or ModelError saying what is wrong with it."""
    cpath = card_path(path)
    try:
        card = json.loads(cpath.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"model card {cpath} is missing; refusing to load {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"model card {cpath} is unreadable: {exc}") from None
    if not isinstance(card, dict) or not isinstance(card.get("file"), dict):
        raise ModelError(f"model card {cpath} has no 'file' section; refusing to load {path}")
    return card


def load_classifier(path: str | Path | None = None) -> Classifier:
    """Load a model after verifying it against its card (see the module docstring).

    Raises ModelError with a one-line message for a missing file or card, a sha256 mismatch
    (tampered or half-copied file), an unknown format, a FORMAT 1 file from another
    scikit-learn, or an unreadable file.
    """
    path = Path(path) if path is not None else default_model_path()
    if not path.is_file():
        raise ModelError(f"no model at {path}; train one with 'mailsort train'")
    card = read_card(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read model {path}: {exc.strerror}") from None
    if hashlib.sha256(data).hexdigest() != card["file"].get("sha256"):
        raise ModelError(
            f"model {path} does not match the sha256 in its card; "
            "it was modified or copied incompletely — retrain or restore it"
        )
    fmt = card.get("format", 1)
    if fmt not in (1, FORMAT):
        raise ModelError(
            f"model {path} has format {fmt!r}, this mailsort reads formats 1 and {FORMAT}; "
            "retrain it with 'mailsort train'"
        )
    if fmt == 1:
        import sklearn  # a pickled pipeline: only the scikit-learn that wrote it can read it

        built = str(card.get("versions", {}).get("sklearn", "?"))
        if built.split(".")[:2] != sklearn.__version__.split(".")[:2]:
            raise ModelError(
                f"model {path} was built with scikit-learn {built}, this is {sklearn.__version__}; "
                "retrain it with 'mailsort train'"
            )
    digest = card["file"]["sha256"]
    payload = _read_unpacked(digest) if fmt == FORMAT else None
    if payload is None:
        import io

        import joblib

        try:
            payload = joblib.load(io.BytesIO(data))  # the verified bytes, not the file again
        except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad model
            raise ModelError(f"model {path} cannot be loaded: {type(exc).__name__}: {exc}") from None
        if fmt == FORMAT and isinstance(payload, dict):
            _write_unpacked(digest, payload)
    if not isinstance(payload, dict) or payload.get("format") != fmt:
        raise ModelError(f"model {path} has an unknown format; retrain it")
    try:
        if fmt == 1:
            scorer = LinearScorer.from_pipeline(payload["pipeline"])
        else:
            scorer = LinearScorer.from_payload(payload)
        threshold = float(payload["threshold"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ModelError(f"model {path} is malformed ({exc}); retrain it") from None
    return Classifier(scorer, threshold, card)


# ------------------------------------------------------------------------------------ unpacked copy

# A FORMAT 2 model's arrays, kept uncompressed in the cache directory as an .npz named after the
# sha256 of the model file they came from (so only after that file was verified against its card is
# its copy looked for). Reading it takes a few milliseconds, without joblib (its import and the
# decompression cost a tenth of a second in every process that classifies). np.load without pickle:
# the copy is data, never code, and the zip's checksums catch a damaged one, which is then ignored.


def _unpacked_path(digest: str) -> Path:
    from mailsort.config import cache_dir

    return cache_dir() / f"model-{digest[:32]}.npz"


def _read_unpacked(digest: str) -> dict | None:
    path = _unpacked_path(digest)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            views = [{**view, **{k: data[f"{k}{i}"] for k in ("vocab", "idf", "coef")}}
                     for i, view in enumerate(meta["views"])]
        return {"format": FORMAT, "threshold": meta["threshold"], "intercept": meta["intercept"], "views": views}
    except Exception:  # noqa: BLE001 - damaged or from another layout: the model file is always right
        return None


def _write_unpacked(digest: str, payload: dict) -> None:
    """Keep the copy for the next process (written aside and renamed; skipped when the cache directory
    is not writable, or the payload is not the plain layout)."""
    path = _unpacked_path(digest)
    tmp = None
    try:
        views = payload["views"]
        arrays = {f"{k}{i}": np.asarray(view[k]) for i, view in enumerate(views) for k in ("vocab", "idf", "coef")}
        meta = {"threshold": float(payload["threshold"]), "intercept": float(payload["intercept"]),
                "views": [{k: v for k, v in view.items() if k not in ("vocab", "idf", "coef")} for view in views]}
        path.parent.mkdir(parents=True, exist_ok=True)
        for old in path.parent.glob("model-*.npz"):  # one copy is enough: the model in use changes rarely
            old.unlink(missing_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".model-", suffix=".npz")
        with os.fdopen(fd, "wb") as out:
            np.savez(out, meta=np.array(json.dumps(meta)), **arrays)
        os.replace(tmp, path)
        tmp = None
    except (OSError, ValueError, KeyError, TypeError):
        pass
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
