"""Reply deadlines (a help-desk SLA): every client message is answered within N *working* hours.

Pure: functions of the handled messages, the calendar and `now`. Only open time counts, so with
Mon-Fri 09:00-17:30 and 24 hours a message from Friday 17:00 is due Wednesday 15:30 (the arithmetic is
`WorkCalendar.add_open_time`). A message counts as answered when a mail in the Sent folder names its
Message-ID in In-Reply-To or References; mailsort's own automatic replies (Auto-Submitted) do not count,
since an acknowledgement is not an answer.

The sync pass reads the Sent folder's headers, calls `answered_ids` / `first_answers` and records
`store.set_answered`; then `classify_due` says what is overdue (to label) and what goes in the digest
sent once per opening (`digest_due`, `digest_text`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Iterable, Sequence
from zoneinfo import ZoneInfo

from .calendar import HORIZON_DAYS, NeverOpenError, WorkCalendar
from .store import HandledMessage

CLIENT_LABELS = ("critical", "routine")  # set-aside rows and other labels have no deadline
# A first sync of an old mailbox must not turn years of mail into an overdue list: mail handled more
# than this long after it arrived is backlog (the same limit as policy's age limit for replies).
BACKLOG_AGE = timedelta(days=3)
# The sync pass tracks unanswered mail (Overdue label, digest) for this long after it arrived: a "thanks!"
# that never needed an answer must not sit in every digest forever (nor in `mailsort due`, but with --all).
TRACK_FOR = timedelta(days=30)
_ID = re.compile(r"<[^<>\s]+>")


@dataclass(frozen=True)
class DueItem:
    """One open message with its deadline."""

    message: HandledMessage
    due_at: datetime | None  # None: a critical message without a deadline (listed, never overdue)

    @property
    def arrived(self) -> datetime:
        return self.message.arrived_at or self.message.handled_at

    @property
    def critical(self) -> bool:
        return self.message.label == "critical"


@dataclass(frozen=True)
class DueReport:
    """What needs an answer at `now`. The three lists are disjoint, each ordered by deadline:
    `overdue` (deadline passed), `due_today` (due by `cutoff`, the end of the working day the owner is
    in or starts next) and `critical_open` (the other unanswered critical messages)."""

    now: datetime
    cutoff: datetime
    overdue: tuple[DueItem, ...] = ()
    due_today: tuple[DueItem, ...] = ()
    critical_open: tuple[DueItem, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.overdue or self.due_today or self.critical_open)


# ------------------------------------------------------------------------------------------ deadlines


def due_at(arrived: datetime, calendar: WorkCalendar, hours: float) -> datetime:
    """The deadline: `hours` of open time after arrival (mail from a closed time waits for the opening)."""
    return calendar.add_open_time(arrived, timedelta(hours=hours))


def needs_answer(message: HandledMessage) -> bool:
    """Client mail (critical or routine), not a robot, list or our own mail, not old backlog."""
    if message.label not in CLIENT_LABELS:
        return False
    if str(message.decision.get("situation", "")).endswith("_robot") or message.decision.get("robot"):
        return False
    arrived = message.arrived_at
    return arrived is None or message.handled_at - arrived <= BACKLOG_AGE


def deadline_of(message: HandledMessage, calendar: WorkCalendar, hours: float | None) -> datetime | None:
    """The stored deadline, else (with `hours`) one computed from the arrival; None: no deadline."""
    if not needs_answer(message):
        return None
    if message.due_at is not None:
        return message.due_at
    if hours is None:
        return None
    try:
        return due_at(message.arrived_at or message.handled_at, calendar, hours)
    except NeverOpenError:
        return None


def is_answered(message: HandledMessage, now: datetime) -> bool:
    """Answered at or before `now` (a later answer does not count when `--now` looks at the past)."""
    return message.answered_at is not None and message.answered_at <= now


def day_cutoff(now: datetime, calendar: WorkCalendar) -> datetime:
    """The end of today's working time; after hours (or on a closed day), of the next working day."""
    local = now.astimezone(calendar.tz)
    ends = [p.end for p in calendar.periods_on(local.date()) if p.end > now]
    if ends:
        return max(ends)
    try:
        opening = calendar.next_opening(now).astimezone(calendar.tz)
    except NeverOpenError:
        return now
    return max(p.end for p in calendar.periods_on(opening.date()))


def classify_due(messages: Sequence[HandledMessage], now: datetime, calendar: WorkCalendar,
                 hours: float | None = None) -> DueReport:
    """Sort the unanswered messages into overdue / due today / critical still open.

    A message is overdue once `now` is past its deadline (due 15:30: not at 15:29, at 15:31 yes).
    Deadlines are the stored `due_at`; with `hours`, messages stored without one get one from their
    arrival. Messages that arrived after `now` are ignored, so `--now` can replay the past."""
    cutoff = day_cutoff(now, calendar)
    overdue: list[DueItem] = []
    today: list[DueItem] = []
    critical: list[DueItem] = []
    for message in messages:
        if (message.arrived_at or message.handled_at) > now or is_answered(message, now):
            continue
        deadline = deadline_of(message, calendar, hours)
        if deadline is None:
            if needs_answer(message) and message.label == "critical":
                critical.append(DueItem(message, None))
            continue
        item = DueItem(message, deadline)
        if now > deadline:
            overdue.append(item)
        elif deadline <= cutoff:
            today.append(item)
        elif item.critical:
            critical.append(item)
    order = lambda item: (item.due_at or item.arrived, item.message.message_id)  # noqa: E731
    return DueReport(now, cutoff, tuple(sorted(overdue, key=order)), tuple(sorted(today, key=order)),
                     tuple(sorted(critical, key=order)))


def newly_overdue(report: DueReport) -> tuple[HandledMessage, ...]:
    """Overdue messages that do not carry the Overdue label yet (label them, then set_overdue_labelled)."""
    return tuple(item.message for item in report.overdue if not item.message.overdue_labelled)


def overdue_to_clear(messages: Iterable[HandledMessage], now: datetime) -> tuple[HandledMessage, ...]:
    """Messages labelled Overdue that have since been answered: the label can come off."""
    return tuple(m for m in messages if m.overdue_labelled and is_answered(m, now))


def next_overdue_change(messages: Iterable[HandledMessage], now: datetime, calendar: WorkCalendar,
                        hours: float | None) -> datetime | None:
    """The first moment at or after `now` from which `newly_overdue(classify_due(...))` or
    `overdue_to_clear` can answer differently for these messages, time being the only thing that
    changes: an open message's deadline passes, a message that arrived after `now` (a replay of the
    past) comes into view, the answer to a labelled message is reached. None: never. `now` itself when
    something is newly overdue already. Lets a sync pass skip the deadline work until then."""
    moments: list[datetime] = []
    for message in messages:
        if message.overdue_labelled:
            if message.answered_at is not None and message.answered_at > now:
                moments.append(message.answered_at)
            continue
        if message.answered_at is not None:
            continue
        arrived = message.arrived_at or message.handled_at
        if arrived > now:
            moments.append(arrived)
            continue
        deadline = deadline_of(message, calendar, hours)
        if deadline is not None:
            moments.append(max(deadline, now))
    return min(moments, default=None)


# ------------------------------------------------------------------------------------------ answers


def message_ids(text: str | Iterable[str] | None) -> list[str]:
    """The Message-IDs in an In-Reply-To / References value ('<a@x> <b@y>'), in order; a bare id
    without angle brackets (some clients write them so) is taken as it is."""
    if text is None:
        return []
    if not isinstance(text, str):
        return [i for part in text for i in message_ids(part)]
    found = _ID.findall(text)
    if found:
        return found
    bare = text.strip()
    return [f"<{bare}>"] if bare and " " not in bare and "@" in bare else []


def _is_automatic(auto_submitted: str | None) -> bool:
    return bool(auto_submitted) and auto_submitted.strip().lower().split(";")[0] != "no"


def answered_ids(sent_headers: Iterable[Sequence[Any]]) -> set[str]:
    """Message-IDs answered by the mails in Sent, from their (In-Reply-To, References) header values.

    A third item, when given, is the mail's Auto-Submitted header: automatic replies (ours among them)
    are not answers and are skipped."""
    ids: set[str] = set()
    for headers in sent_headers:
        in_reply_to, references = headers[0], headers[1]
        if len(headers) > 2 and _is_automatic(headers[2]):
            continue
        ids.update(message_ids(in_reply_to))
        ids.update(message_ids(references))
    return ids


def first_answers(sent: Iterable[tuple[str | None, Any, datetime, str | None]]) -> dict[str, datetime]:
    """{Message-ID: time of the first human answer} from (In-Reply-To, References, Date, Auto-Submitted)
    of the mails in Sent: what `store.set_answered` wants, so reply times are not rounded to the sync."""
    first: dict[str, datetime] = {}
    for in_reply_to, references, when, auto_submitted in sent:
        if when is None or _is_automatic(auto_submitted):
            continue
        for mid in set(message_ids(in_reply_to)) | set(message_ids(references)):
            if mid not in first or when < first[mid]:
                first[mid] = when
    return first


def newly_answered(messages: Iterable[HandledMessage], answered: set[str] | dict[str, datetime]
                   ) -> tuple[HandledMessage, ...]:
    """The stored, still unanswered messages whose Message-ID is among the answered ones."""
    return tuple(m for m in messages if m.answered_at is None and m.message_id and m.message_id in answered)


# ------------------------------------------------------------------------------------------ digest


def digest_due(last_digest: datetime | None, now: datetime, calendar: WorkCalendar) -> bool:
    """True once per working period: we are open and no digest went out since this period opened."""
    if not calendar.is_open(now):
        return False
    opening = calendar.last_opening(now)
    if opening is None:
        return False
    return last_digest is None or last_digest < opening


def next_digest(after: datetime, calendar: WorkCalendar) -> datetime | None:
    """The first opening after `after`: until then `digest_due` keeps the answer it had at `after`
    (it can only turn true at an opening). Openings as `last_opening` sees them (periods of a day, not
    merged). None when the calendar never opens again."""
    day = after.astimezone(calendar.tz).date()
    for offset in range(HORIZON_DAYS + 2):
        for period in calendar.periods_on(day + timedelta(days=offset)):
            if period.start > after:
                return period.start
    return None


def digest_text(report: DueReport, now: datetime, tz: ZoneInfo) -> tuple[str, str]:
    """(subject, body) of the owner's digest: plain English, times in the calendar's zone."""
    local_now = now.astimezone(tz)
    counts = []
    if report.overdue:
        counts.append(f"{len(report.overdue)} overdue")
    if report.due_today:
        counts.append(f"{len(report.due_today)} due today")
    if report.critical_open:
        counts.append(f"{len(report.critical_open)} critical open")
    subject = f"mailsort: {', '.join(counts) if counts else 'nothing overdue or due today'} — {_day(local_now)}"

    lines = [f"Client mail waiting for an answer, as of {_day(local_now)} {_time(local_now)} ({tz.key}).", ""]
    if report.empty:
        lines.append("Nothing is overdue, nothing is due today and no critical message is open.")
    sections = (
        ("Overdue", report.overdue, "was due"),
        (f"Due today (by {_time(report.cutoff.astimezone(tz))})", report.due_today, "due"),
        ("Critical, still open", report.critical_open, "due"),
    )
    for title, items, verb in sections:
        if not items:
            continue
        lines.append(f"{title}: {len(items)}")
        for item in items:
            lines.extend(_item_lines(item, verb, local_now, tz))
        lines.append("")
    lines.append("A message counts as answered once a reply that names it (In-Reply-To or References) "
                 "is in your Sent folder.")
    return subject, "\n".join(lines).rstrip() + "\n"


def _item_lines(item: DueItem, verb: str, local_now: datetime, tz: ZoneInfo) -> list[str]:
    m = item.message
    who = f"{m.sender_name} <{m.sender}>" if m.sender_name else (m.sender or "unknown sender")
    client = f" [{m.client}]" if m.client else ""
    tag = "CRITICAL " if m.label == "critical" else ""
    line = f"    from {who}{client}, arrived {_when(item.arrived.astimezone(tz), local_now)}"
    if item.due_at is not None:
        deadline = item.due_at.astimezone(tz)
        line += f"; {verb} {_when(deadline, local_now)}"
        if local_now > deadline:
            line += f", {_duration(local_now - deadline)} ago"
    return [f"  - {tag}{m.subject or '(no subject)'}", line]


def _day(t: datetime) -> str:
    return f"{t:%a} {t.day} {t:%b %Y}"


def _time(t: datetime) -> str:
    return f"{t:%H:%M}"


def _when(t: datetime, now: datetime) -> str:
    if t.date() == now.date():
        return f"today {_time(t)}"
    if t.date() == now.date() - timedelta(days=1):
        return f"yesterday {_time(t)}"
    if t.date() == now.date() + timedelta(days=1):
        return f"tomorrow {_time(t)}"
    return f"{t:%a} {t.day} {t:%b} {_time(t)}"


def _duration(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min"


def report_json(report: DueReport, tz: ZoneInfo) -> dict[str, Any]:
    """The `mailsort due --json` document."""

    def item(i: DueItem) -> dict[str, Any]:
        m = i.message
        return {"account": m.account, "message_id": m.message_id, "sender": m.sender, "subject": m.subject,
                "label": m.label, "client": m.client, "arrived_at": i.arrived.astimezone(tz).isoformat(),
                "due_at": i.due_at.astimezone(tz).isoformat() if i.due_at else None,
                "overdue_labelled": m.overdue_labelled}

    return {"now": report.now.astimezone(tz).isoformat(), "due_today_until": report.cutoff.astimezone(tz).isoformat(),
            "overdue": [item(i) for i in report.overdue], "due_today": [item(i) for i in report.due_today],
            "critical_open": [item(i) for i in report.critical_open]}

