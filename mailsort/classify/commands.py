"""What `mailsort classify`, `evaluate` and `train` do, minus the command line.

cli.py parses options and prints; the reading of .eml files, the choice of the model paths and the
text rendering of an evaluation live here so they can be tested and reused (scripts/retrain.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mailsort.classify.model import Classifier, shipped_model_path, user_model_path
from mailsort.errors import UsageError

#: The project's corpus in a source checkout (an installed wheel does not carry it: give --data).
# The base corpus: mailsort/training_data in an installed wheel, training_data/ in a source checkout.
_INSTALLED_CORPUS = Path(__file__).resolve().parents[1] / "training_data"
CORPUS_DIR = _INSTALLED_CORPUS if _INSTALLED_CORPUS.is_dir() else Path(__file__).resolve().parents[2] / "training_data"


@dataclass(frozen=True)
class FileVerdict:
    """One classified file, in the `classify --json` shape of DESIGN.md."""

    file: str
    label: str
    p_critical: float
    language: str

    def to_json(self) -> dict:
        return {"file": self.file, "label": self.label, "p_critical": self.p_critical,
                "language": self.language}


def parse_files(named: Sequence[tuple[str, bytes]]) -> list:
    """(name, raw bytes) -> Messages; a file that is not mail at all is a UsageError naming it."""
    from mailsort.message import UnparseableMessage, parse

    out = []
    for name, raw in named:
        try:
            out.append(parse(raw))
        except UnparseableMessage as exc:
            raise UsageError(f"{name}: not a mail message ({exc})") from None
    return out


def classify_files(named: Sequence[tuple[str, bytes]], classifier: Classifier) -> list[FileVerdict]:
    """Parse every file first (so a bad file stops the run before any output), then classify them
    all in one batch."""
    messages = parse_files(named)
    verdicts = classifier.predict([(m.subject, m.text) for m in messages])
    return [FileVerdict(name, v.label, v.p_critical, m.language)
            for (name, _), m, v in zip(named, messages, verdicts, strict=True)]


def render_evaluation(report: dict, model: str, data: str) -> str:
    """The `evaluate` report as text: per-class and per-language scores, then confusion matrices."""

    def fmt(x: float | None, width: int = 6) -> str:
        return f"{'-' if x is None else f'{x:.3f}':>{width}}"

    rows = [("all", report["n"], report["macro_f1"], report["critical"], report["routine"])]
    for lang, m in report["by_language"].items():
        rows.append((lang, m["n"], m["macro_f1"], m["critical"], m["routine"]))
    lines = [
        f"model {model} (threshold {report.get('threshold', '?')})",
        f"data  {data}: {report['n']} examples; macro-F1 {fmt(report['macro_f1'], 0)}, "
        f"accuracy {fmt(report['accuracy'], 0)}",
        "",
        f"{'':21} | {'critical':^23} | {'routine':^23}",
        f"{'lang':<5}{'n':>6}  {'macro-F1':>8} | {'precision':>9} {'recall':>6} {'F1':>6} | "
        f"{'precision':>9} {'recall':>6} {'F1':>6}",
    ]
    for name, n, f1, c, r in rows:
        lines.append(f"{name:<5}{n:6d}  {fmt(f1, 8)} | {fmt(c['precision'], 9)} {fmt(c['recall'])} {fmt(c['f1'])} | "
                     f"{fmt(r['precision'], 9)} {fmt(r['recall'])} {fmt(r['f1'])}")
    lines += ["", "confusion (rows: true label; columns: predicted)",
              "                  predicted routine  predicted critical"]
    matrices = [("all", report["confusion"])] + [(k, v["confusion"]) for k, v in report["by_language"].items()]
    for name, ((tn, fp), (fn, tp)) in matrices:
        lines.append(f"{name:<5} routine  {tn:18d}  {fp:18d}")
        lines.append(f"{'':<5} critical {fn:18d}  {tp:18d}")
    return "\n".join(line.rstrip() for line in lines)


def default_corpus(name: str) -> Path:
    """training_data/<name>.jsonl of a source checkout, or a UsageError saying to give it."""
    path = CORPUS_DIR / f"{name}.jsonl"
    if not path.is_file():
        option = "--data" if name == "train" else "--valid"
        raise UsageError(f"no {name} split at {path} (installed without the corpus?): give {option} FILE")
    return path


def train_paths(out: Path | None, configured: Path | None) -> tuple[Path, Path | None]:
    """(where the new model goes, which model it must not be worse than).

    The new model goes to --out, else to the configured model ([classifier] model), else to the
    user's model in the user data dir — never onto the shipped model unless --out names it. It is
    judged against the model already at that place, or, when there is none yet, against the model
    mailsort uses now ($MAILSORT_MODEL, the user's or the shipped one); None when there is none.
    """
    import os

    from mailsort.classify.model import default_model_path

    target = out
    if target is None:
        env = os.environ.get("MAILSORT_MODEL")
        target = configured or (Path(env).expanduser() if env else None) or user_model_path()
        if _same(target, shipped_model_path()):
            raise UsageError(f"refusing to overwrite the shipped model {target} by default; "
                             "name it with --out to do that on purpose")
    if target.suffix != ".joblib":
        raise UsageError(f"--out: {target} should end in .joblib (its model card goes beside it as .json)")
    if target.exists():
        return target, target
    in_use = [p for p in (default_model_path(), shipped_model_path()) if p.exists()]
    return target, (in_use[0] if in_use else None)


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False
