"""The per-message CPU path of a sync (compute.decide_one): its journal row and its Outcome are those of
the plain definitions (store.journal_params of the HandledMessage; records built with their __init__),
and the pass history it keeps makes a sender answered once."""

from __future__ import annotations

import json
import pickle
from dataclasses import fields
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from mailsort.calendar import WorkCalendar
from mailsort.compute import Context, Judged, Outcome, PassHistory, SnapshotHistory, decide_one
from mailsort.config import parse_config
from mailsort.policy import Settings
from mailsort.store import HandledMessage, journal_params

from mails import message

TZ = ZoneInfo("Europe/Madrid")
OPEN = datetime(2026, 11, 25, 11, 0, tzinfo=TZ)       # Wednesday 11:00
CLOSED = datetime(2026, 11, 27, 21, 0, tzinfo=TZ)     # Friday 21:00
IN_ABSENCE = datetime(2026, 12, 28, 11, 0, tzinfo=TZ)
WITHIN = timedelta(hours=24)


def context(now: datetime, history: SnapshotHistory | None = None) -> Context:
    cfg = parse_config({
        "calendar": {"timezone": "Europe/Madrid", "hours": {d: ["09:00-17:30"] for d in ("mon", "tue", "wed", "thu", "fri")},
                     "absence": [{"start": date(2026, 12, 24), "end": date(2027, 1, 6), "note": "Christmas"}]},
        "replies": {"owner_name": "Ana"},
        "notify": {"kind": "command", "command": "cat"},
        "account": [{"name": "work", "addresses": ["me@example.org"], "imap": {"host": "127.0.0.1", "security": "none"}}],
        "client": [{"name": "Acme", "domains": ["acme.example"], "language": "es"}],
    })
    settings = Settings.from_config(cfg, cfg.accounts[0])
    return Context(lambda: None, lambda: settings, WorkCalendar.from_config(cfg.calendar), now,
                   history or SnapshotHistory({}, frozenset(), frozenset()), WITHIN, "work")


def messages(now: datetime):
    """(message, verdict, arrival): people, old mail, robots, a client, no Date, no arrival time."""
    cases = [
        (dict(date=now - timedelta(hours=1)), "critical", now - timedelta(minutes=50)),
        (dict(date=now - timedelta(days=40), sender="Ana <ana@acme.example>", lang="es"), "routine", None),
        (dict(date=now - timedelta(days=2), extra={"List-Id": "<x.example>"}), "routine",
         (now - timedelta(days=2)).astimezone(timezone.utc)),
        (dict(date=None, sender="bob@elsewhere.example"), "critical", None),
        (dict(date=now - timedelta(days=400), sender="Ópera <opera@teatro.example>", subject="¿Entradas?"), "critical",
         (now - timedelta(days=400)).astimezone(timezone(timedelta(hours=-5)))),
        (dict(date=now - timedelta(minutes=5)), "routine", now),  # the same sender again
    ]
    for n, (kwargs, label, arrived) in enumerate(cases):
        yield message(message_id=f"<m{n}@x.example>", **kwargs), Judged(label, 0.1 + n / 10), arrived


@pytest.mark.parametrize("now", [OPEN, CLOSED, IN_ABSENCE])
def test_journal_row_is_journal_params_of_the_handled_message(now):
    ctx = context(now)
    passed = PassHistory()
    for msg, verdict, arrived in messages(now):
        outcome = decide_one(ctx, "INBOX", 7, msg, verdict, passed, arrived, keep=True)
        d = outcome.decision
        arrived_at = arrived or msg.date
        handled = HandledMessage(
            account="work", folder="INBOX", uidvalidity=7, uid=msg.uid or 0, message_id=msg.message_id,
            sender=msg.sender, sender_name=msg.sender_name, subject=msg.subject, language=msg.language,
            label=d.label, p_critical=float(d.p_critical), client=d.client, arrived_at=arrived_at, handled_at=now,
            open_at_arrival=ctx.calendar.is_open(arrived_at) if arrived_at else d.open_now, decision=d.to_json(),
            due_at=WorkCalendar(ctx.calendar.tz, ctx.calendar.hours, ctx.calendar.holidays, ctx.calendar.absences)
            .add_open_time(arrived_at or now, WITHIN) if d.label == "critical" else None)
        assert outcome.row == journal_params(handled)
        assert outcome.row[15] == json.dumps(d.to_json(), ensure_ascii=False)
        assert outcome.actions == d.to_json()["actions"]


def test_an_outcome_is_an_ordinary_frozen_record_and_travels():
    """decide_one builds its Outcome without __init__: equal to one built with it, and it pickles (a worker
    sends it to the sync process)."""
    ctx = context(CLOSED)
    passed = PassHistory()
    for msg, verdict, arrived in messages(CLOSED):
        outcome = decide_one(ctx, "INBOX", 7, msg, verdict, passed, arrived)
        plain = Outcome(**{f.name: getattr(outcome, f.name) for f in fields(Outcome)})
        assert outcome == plain and repr(outcome) == repr(plain)
        assert pickle.loads(pickle.dumps(outcome)) == outcome


def test_the_pass_history_answers_a_sender_once():
    history = SnapshotHistory({}, frozenset({"maria@client.example"}), frozenset())
    ctx = context(CLOSED, history)
    passed = PassHistory()
    first, second, third = (decide_one(ctx, "INBOX", 7, msg, verdict, passed, arrived)
                            for msg, verdict, arrived in list(messages(CLOSED))[:1] * 2 + list(messages(CLOSED))[5:])
    assert [p[:2] for p in first.planned] == [("maria@client.example", "critical_ack")]
    assert first.used == (True, ())
    assert second.planned == () and second.used == (True, (("critical_ack", CLOSED),))
    assert "already got an automatic reply" in json.loads(second.row[15])["auto_reply"]["reason"]
    assert third.planned == () and ctx.used("maria@client.example", passed) == (True, (("critical_ack", CLOSED),))
