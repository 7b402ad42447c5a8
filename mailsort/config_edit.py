"""Editing the config's `[[calendar.absence]]` list without hand-editing TOML (`mailsort away` / `back`).

Text in, text out: every function takes the file's text and returns the new text, and never touches the
disk or the clock, so the CLI can show a diff (`--dry-run`) or write the file. tomlkit keeps the user's
comments, blank lines and key order; only the absence entries that change are rewritten.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import tomlkit
from tomlkit.exceptions import TOMLKitError
from tomlkit.items import AoT, Array

from .config import Absence
from .errors import ConfigError, UsageError


@dataclass(frozen=True)
class Edit:
    """The outcome of an edit: the new text, what was done (one sentence), and the absences after it."""

    text: str
    message: str
    absences: tuple[Absence, ...]


def parse_date(value: str, what: str) -> date:
    """An ISO date from the command line ('2026-12-24'), or a UsageError naming the argument."""
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise UsageError(f"{what}: {value!r} is not a date; write it as YYYY-MM-DD, e.g. 2026-12-24") from None


def absences_of(text: str) -> tuple[Absence, ...]:
    """The absences in the config text, in date order."""
    _, entries = _entries(_parse(text))
    return tuple(sorted((a for _, a in entries), key=lambda a: (a.start, a.end)))


def add_absence(text: str, start: date, end: date, note: str = "") -> Edit:
    """Append an absence; refused when END is before START or it overlaps one already in the file."""
    if end < start:
        raise UsageError(f"the absence would end ({end}) before it starts ({start}); give START then END")
    doc = _parse(text)
    container, entries = _entries(doc)
    for _, other in entries:
        if start <= other.end and other.start <= end:
            raise UsageError(f"{describe(Absence(start, end, note))} overlaps the absence {describe(other)} already "
                             "in the config; change that one (`mailsort back` ends the current one) or pick other dates")
    if isinstance(container, Array):  # the inline form: absence = [{ start = ..., end = ... }]
        entry: Any = tomlkit.inline_table()
    else:
        entry = tomlkit.table()
    entry["start"] = start
    entry["end"] = end
    if note:
        entry["note"] = note
    if container is None:
        calendar = doc.get("calendar")
        if calendar is None:
            calendar = tomlkit.table()
            doc["calendar"] = calendar
        entry.add(tomlkit.nl())
        aot = tomlkit.aot()
        aot.append(entry)
        calendar["absence"] = aot
    else:
        if isinstance(entry, tomlkit.items.Table):
            entry.add(tomlkit.nl())
        container.append(entry)
    new = tomlkit.dumps(doc)
    return Edit(new, f"added the absence {describe(Absence(start, end, note))}", absences_of(new))


def end_absence(text: str, today: date) -> Edit:
    """Back early: the absence that covers `today` now ends yesterday, or goes if it starts today.
    With no absence covering today nothing changes (and the message says so)."""
    doc = _parse(text)
    container, entries = _entries(doc)
    current = [(i, a) for i, a in entries if a.start <= today <= a.end]
    if not current:
        return Edit(text, f"no absence covers {today}; nothing to change", absences_of(text))
    index, absence = current[0]
    assert container is not None
    if absence.start >= today:
        del container[index]
        if len(container) == 0:
            del doc["calendar"]["absence"]
        message = f"removed the absence {describe(absence)}: it had not started before today"
    else:
        yesterday = today - timedelta(days=1)
        container[index]["end"] = yesterday
        message = f"the absence {describe(absence)} now ends {yesterday} (welcome back)"
    new = tomlkit.dumps(doc)
    return Edit(new, message, absences_of(new))


def describe(absence: Absence) -> str:
    note = f" ({absence.note})" if absence.note else ""
    return f"{absence.start} to {absence.end}{note}"


def diff(old: str, new: str, name: str) -> str:
    """A unified diff of the change, for --dry-run."""
    return "".join(difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True),
                                        fromfile=name, tofile=f"{name} (after)"))


# ------------------------------------------------------------------------------------------ internals


def _parse(text: str) -> tomlkit.TOMLDocument:
    try:
        return tomlkit.parse(text)
    except TOMLKitError as exc:
        raise ConfigError(f"the config is not valid TOML ({exc})") from None


def _entries(doc: tomlkit.TOMLDocument) -> tuple[AoT | Array | None, list[tuple[int, Absence]]]:
    """The container of the absences (None when there is none yet) and each entry as (index, Absence)."""
    calendar = doc.get("calendar")
    if calendar is None:
        return None, []
    if not hasattr(calendar, "get"):
        raise ConfigError("calendar: expected a table")
    container = calendar.get("absence")
    if container is None:
        return None, []
    if not isinstance(container, (AoT, Array)):
        raise ConfigError("calendar.absence: expected a list of [[calendar.absence]] tables")
    entries = []
    for i, item in enumerate(container):
        where = f"calendar.absence[{i}]"
        if not hasattr(item, "get"):
            raise ConfigError(f"{where}: expected a table with start and end")
        start, end, note = item.get("start"), item.get("end"), item.get("note", "")
        for key, value in (("start", start), ("end", end)):
            if not isinstance(value, date) or hasattr(value, "hour"):
                raise ConfigError(f"{where}.{key}: expected a date such as 2026-12-24")
        entries.append((i, Absence(_plain(start), _plain(end), str(note))))
    return container, entries


def _plain(value: date) -> date:
    """tomlkit's Date item -> a plain date (so comparisons and reprs are the ordinary ones)."""
    return date(value.year, value.month, value.day)
