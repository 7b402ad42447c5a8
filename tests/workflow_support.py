"""Helpers for the client-workflow tests: a Mon-Fri 09:00-17:30 calendar and handled-message rows."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from mailsort.calendar import WorkCalendar
from mailsort.config import Absence, TimeRange
from mailsort.store import HandledMessage

MADRID = ZoneInfo("Europe/Madrid")
WEEKDAYS_9_1730 = {i: ((TimeRange(9 * 60, 17 * 60 + 30),) if i < 5 else ()) for i in range(7)}


def calendar(absences: tuple[Absence, ...] = ()) -> WorkCalendar:
    return WorkCalendar(MADRID, WEEKDAYS_9_1730, {}, absences)


def at(text: str) -> datetime:
    """'2026-11-27 17:00' in Madrid (or any ISO text with an offset)."""
    t = datetime.fromisoformat(text)
    return t if t.tzinfo else t.replace(tzinfo=MADRID)


_uids = iter(range(1, 1_000_000))


def row(arrived: str, *, label: str = "routine", sender: str = "ana@acme.example", message_id: str | None = None,
        answered: str | None = None, due: str | None = None, open_at_arrival: bool | None = None,
        client: str | None = "Acme", situation: str | None = None, subject: str = "Help", name: str = "Ana",
        overdue_labelled: bool = False, language: str = "en", handled: str | None = None) -> HandledMessage:
    uid = next(_uids)
    arrived_at = at(arrived)
    if open_at_arrival is None:
        open_at_arrival = calendar().is_open(arrived_at)
    if situation is None:
        situation = f"{label}_{'open' if open_at_arrival else 'closed'}"
    return HandledMessage(
        account="work", folder="INBOX", uidvalidity=1, uid=uid, message_id=message_id or f"<m{uid}@acme.example>",
        sender=sender, sender_name=name, subject=subject, language=language, label=label, p_critical=0.9 if label == "critical" else 0.1,
        client=client, arrived_at=arrived_at, handled_at=at(handled) if handled else arrived_at,
        open_at_arrival=open_at_arrival, decision={"situation": situation, "actions": []},
        answered_at=at(answered) if answered else None, due_at=at(due) if due else None,
        overdue_labelled=overdue_labelled,
    )
