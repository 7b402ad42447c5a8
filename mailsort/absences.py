"""Absences (holidays, illness, an accident): who wrote while the owner was away, and when to thank them.

Pure: functions of the handled messages, the absence and the calendar. Coming back from an absence the
owner should get back in touch with every client who wrote meanwhile, first thing, and thank them for
their patience; `writers_during` lists them (one entry per address), `thank_you_due` says when (the
first opening after the absence) and `absence_digest_text` is the owner's checklist.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Iterable
from zoneinfo import ZoneInfo

from .calendar import NeverOpenError, WorkCalendar
from .config import Absence
from .store import HandledMessage

CLIENT_LABELS = ("critical", "routine")


@dataclass(frozen=True)
class Writer:
    """Someone who wrote during an absence, with what they sent."""

    address: str
    name: str
    client: str | None
    language: str
    messages: tuple[HandledMessage, ...]

    @property
    def critical(self) -> int:
        return sum(1 for m in self.messages if m.label == "critical")

    @property
    def first_message_id(self) -> str:
        """The message a thank-you answers (In-Reply-To), so it threads with what the client sent."""
        return self.messages[0].message_id

    @property
    def answered(self) -> bool:
        return all(m.answered_at is not None for m in self.messages)


def during(t: datetime, absence: Absence, tz: ZoneInfo) -> bool:
    """Did `t` fall within the absence (inclusive dates, in the calendar's zone)?"""
    return absence.start <= t.astimezone(tz).date() <= absence.end


def writers_during(messages: Iterable[HandledMessage], absence: Absence, tz: ZoneInfo) -> tuple[Writer, ...]:
    """Everyone whose client mail arrived during the absence, in order of their first message; robots,
    lists and mail set aside are left out."""
    by_address: dict[str, list[HandledMessage]] = {}
    for m in messages:
        arrived = m.arrived_at or m.handled_at
        if m.label not in CLIENT_LABELS or not m.sender or not during(arrived, absence, tz):
            continue
        if str(m.decision.get("situation", "")).endswith("_robot") or m.decision.get("robot"):
            continue
        by_address.setdefault(m.sender.lower(), []).append(m)
    writers = []
    for address, rows in by_address.items():
        rows.sort(key=lambda r: r.arrived_at or r.handled_at)
        name = next((r.sender_name for r in rows if r.sender_name), "")
        client = next((r.client for r in rows if r.client), None)
        language = next((r.language for r in reversed(rows) if r.language and r.language != "und"), "und")
        writers.append(Writer(address, name, client, language, tuple(rows)))
    writers.sort(key=lambda w: (w.messages[0].arrived_at or w.messages[0].handled_at, w.address))
    return tuple(writers)


def thank_you_due(absence: Absence, calendar: WorkCalendar) -> datetime | None:
    """The first opening after the absence (None if the calendar never opens again)."""
    after = datetime.combine(absence.end + timedelta(days=1), time(0), tzinfo=calendar.tz)
    try:
        return calendar.next_opening(after).astimezone(calendar.tz)
    except NeverOpenError:
        return None


def just_ended(absences: Iterable[Absence], now: datetime, calendar: WorkCalendar, last_check: datetime | None
               ) -> Absence | None:
    """The absence whose thank-you time fell in (last_check, now]: what the sync pass acts on once."""
    for absence in absences:
        due = thank_you_due(absence, calendar)
        if due is not None and due <= now and (last_check is None or last_check < due):
            return absence
    return None


def next_thank_you(absences: Iterable[Absence], calendar: WorkCalendar, after: datetime) -> datetime | None:
    """The first thank-you time after `after` (`just_ended` with last_check = `after` turns true then)."""
    dues = (thank_you_due(absence, calendar) for absence in absences)
    return min((due for due in dues if due is not None and due > after), default=None)


def absence_digest_text(absence: Absence, writers: Iterable[Writer], now: datetime, tz: ZoneInfo) -> tuple[str, str]:
    """(subject, body) for the owner on return: who wrote while away, critical ones first."""
    writers = sorted(writers, key=lambda w: (-w.critical, w.messages[0].arrived_at or w.messages[0].handled_at))
    note = f" ({absence.note})" if absence.note else ""
    span = f"{_date(absence.start)} – {_date(absence.end)}"
    count = len(writers)
    subject = (f"mailsort: welcome back — {count} {'person' if count == 1 else 'people'} wrote while you were away"
               if count else "mailsort: welcome back — nobody wrote while you were away")
    lines = [f"While you were away{note}, {span}:", ""]
    if not count:
        lines.append("No client mail arrived.")
    for w in writers:
        who = f"{w.name} <{w.address}>" if w.name else w.address
        client = f" [{w.client}]" if w.client else ""
        n = len(w.messages)
        crit = f", {w.critical} critical" if w.critical else ""
        state = "answered" if w.answered else "not answered yet"
        lines.append(f"  - {who}{client}: {n} message{'s' if n != 1 else ''}{crit}, {state}")
        for m in w.messages:
            arrived = (m.arrived_at or m.handled_at).astimezone(tz)
            tag = "CRITICAL " if m.label == "critical" else ""
            lines.append(f"      {arrived:%a} {arrived.day} {arrived:%b %H:%M}  {tag}{m.subject or '(no subject)'}")
    if count:
        lines += ["", "Get back in touch with them first thing and thank them for their patience."]
    local = now.astimezone(tz)
    lines += ["", f"(written {local:%a} {local.day} {local:%b %Y %H:%M %Z})"]
    return subject, "\n".join(lines) + "\n"


def _date(d: date) -> str:
    return f"{d:%a} {d.day} {d:%b %Y}"
