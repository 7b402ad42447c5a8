"""The store calls a sync pass leans on: the journal round trip, the history snapshot the worker
processes use (it must answer exactly what the per-address queries answer), labels by Message-ID."""

from __future__ import annotations

from dataclasses import fields, replace
from datetime import datetime, timedelta, timezone

from mailsort.store import HandledMessage, OutboxEntry, Store, journal_params

NOW = datetime(2026, 11, 25, 19, 0, tzinfo=timezone.utc)


def handled(n: int, **changes) -> HandledMessage:
    row = HandledMessage(
        account="work", folder="INBOX", uidvalidity=7, uid=n, message_id=f"<m{n}@x.example>",
        sender=f"s{n % 3}@x.example", sender_name="Ann", subject=f"subject {n}", language="it", label="routine",
        p_critical=0.25, client=None, arrived_at=NOW - timedelta(hours=n), handled_at=NOW - timedelta(days=1),
        open_at_arrival=True, decision={"label": "routine", "actions": [{"type": "label", "target": "Routine"}]},
        due_at=None,
    )
    return replace(row, **changes)


def reply(n: int, recipient: str, state: str = "queued", when: datetime = NOW) -> OutboxEntry:
    return OutboxEntry(None, "work", "after_hours", recipient, f"<r{n}@me.example>", f"<m{n}@x.example>", f"k{n}",
                       b"raw", "send", when, state=state)


def test_a_journal_row_reads_back_as_the_same_record(tmp_path):
    rows = [handled(1), handled(2, label="critical", client="Acme", due_at=NOW + timedelta(hours=8),
                               answered_at=None, open_at_arrival=False)]
    with Store(tmp_path / "s.sqlite3") as store:
        store.record_decisions([rows[0], journal_params(rows[1])])  # a record, or its prepared row
        back = sorted(store.messages("work"), key=lambda r: r.uid)
    assert back == rows
    assert all(set(vars(r)) == {f.name for f in fields(HandledMessage)} for r in back)
    assert back[1].due_at == NOW + timedelta(hours=8) and back[1].applied is False


def test_the_history_snapshot_answers_what_the_queries_answer(tmp_path):
    with Store(tmp_path / "s.sqlite3") as store:
        store.record_decisions([handled(n) for n in range(6)] + [handled(9, sender="new@x.example", handled_at=NOW)],
                               [reply(1, "S0@x.example"), reply(2, "s0@x.example", when=NOW - timedelta(days=9)),
                                reply(3, "s1@x.example", state="cancelled"), reply(4, "s2@x.example", state="sent")])
        replies, senders, ids = store.history_snapshot("work", NOW)
        for address in ("s0@x.example", "s1@x.example", "s2@x.example", "nobody@x.example"):
            assert replies.get(address, ()) == tuple(store.reply_history("work", address)), address
        for sender in ("s0@x.example", "s1@x.example", "new@x.example", "nobody@x.example"):
            assert (sender in senders) == store.sender_seen_before("work", sender, NOW), sender
        assert ids == store.handled_message_ids("work")


def test_labels_by_message_id(tmp_path):
    with Store(tmp_path / "s.sqlite3") as store:
        critical = {"label": "critical", "actions": [{"type": "label", "target": "Critical"}, {"type": "flag"}]}
        store.record_decisions([handled(1), handled(2), handled(3, folder="Later", message_id="<m1@x.example>",
                                                              label="critical", decision=critical, handled_at=NOW)])
        assert store.labels_by_message_id("work", ["<m1@x.example>", "<m2@x.example>", "<none@x>"]) == {
            "<m1@x.example>": ("Routine",), "<m2@x.example>": ("Routine",)}  # the first time a Message-ID was handled
