"""Labelled examples: the JSONL format of DESIGN.md, read strictly.

A bad line must stop training with a message that names file:line, not surface later as a
mysterious metric: the corpus is written by hand and by several people.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from mailsort.errors import UsageError

LABELS = ("critical", "routine")
_REQUIRED = ("id", "lang", "subject", "body", "label", "source")


@dataclass(frozen=True)
class Example:
    """One labelled message. `weight` > 1 for the user's own corrections."""

    id: str
    lang: str
    subject: str
    body: str
    label: str
    source: str
    weight: float = 1.0

    @property
    def critical(self) -> bool:
        return self.label == "critical"


def _check(obj: object, where: str) -> Example:
    if not isinstance(obj, dict):
        raise UsageError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    missing = [k for k in _REQUIRED if k not in obj]
    if missing:
        raise UsageError(f"{where}: missing field(s) {', '.join(missing)}")
    for k in _REQUIRED:
        if not isinstance(obj[k], str):
            raise UsageError(f"{where}: field {k!r} must be a string")
    if obj["label"] not in LABELS:
        raise UsageError(f"{where}: label must be 'critical' or 'routine', got {obj['label']!r}")
    if not obj["id"].strip():
        raise UsageError(f"{where}: empty id")
    if not obj["subject"].strip() and not obj["body"].strip():
        raise UsageError(f"{where}: subject and body are both empty")
    weight = obj.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight > 0:
        raise UsageError(f"{where}: weight must be a positive number, got {weight!r}")
    return Example(
        id=obj["id"],
        lang=obj["lang"].strip().lower(),
        subject=obj["subject"],
        body=obj["body"],
        label=obj["label"],
        source=obj["source"],
        weight=float(weight),
    )


def load_examples(path: str | Path) -> list[Example]:
    """Read a JSONL file; UsageError naming file:line on the first bad line or a repeated id."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path}: not UTF-8 ({exc.reason})") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read ({exc.strerror})") from None
    out: list[Example] = []
    seen: dict[str, int] = {}
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{where}: invalid JSON ({exc.msg})") from None
        ex = _check(obj, where)
        if ex.id in seen:
            raise UsageError(f"{where}: id {ex.id!r} already used on line {seen[ex.id]}")
        seen[ex.id] = n
        out.append(ex)
    return out


def to_dict(ex: Example) -> dict:
    """The JSONL object; weight only when it is not the default, to keep corpus files plain."""
    d = asdict(ex)
    if d["weight"] == 1.0:
        del d["weight"]
    return d


def save_examples(examples: Iterable[Example], path: str | Path) -> None:
    """Write JSONL (UTF-8, one object a line, non-ASCII kept readable)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="\n") as fh:
        for ex in examples:
            fh.write(json.dumps(to_dict(ex), ensure_ascii=False) + "\n")


def digest(examples: Iterable[Example]) -> str:
    """sha256 over the examples in order, so a model card says exactly what it was trained on."""
    h = hashlib.sha256()
    for ex in examples:
        h.update(json.dumps(to_dict(ex), ensure_ascii=False, sort_keys=True).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()
