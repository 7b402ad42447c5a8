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


# ------------------------------------------------------------------------------------- the client workflows' reads


def _waiting_by_hand(rows, since):
    """What waiting_messages must return, said in Python (deadlines.needs_answer's backlog rule)."""
    from mailsort.deadlines import BACKLOG_AGE, CLIENT_LABELS

    def arrived(r):
        return r.arrived_at or r.handled_at

    return {r.uid for r in rows if r.label in CLIENT_LABELS and (r.overdue_labelled or (
        r.answered_at is None and arrived(r) >= since
        and (r.arrived_at is None or r.handled_at - r.arrived_at <= BACKLOG_AGE)))}


def test_waiting_messages_is_the_backlog_rule_read_through_its_partial_index(tmp_path):
    day = timedelta(days=1)
    second = timedelta(seconds=1)
    rows = [
        handled(1, arrived_at=NOW - 3 * day, handled_at=NOW),  # handled exactly 3 days after: still waits
        handled(2, arrived_at=NOW - 3 * day - second, handled_at=NOW),  # one second more: backlog
        handled(3, arrived_at=None, handled_at=NOW - 2 * day),  # no arrival time: counts from handling
        handled(4, arrived_at=NOW - day, handled_at=NOW, answered_at=NOW),  # answered
        handled(5, arrived_at=NOW - day, handled_at=NOW, label="unparseable"),  # not client mail
        handled(6, arrived_at=NOW - 40 * day, handled_at=NOW - 40 * day),  # too old
        handled(7, arrived_at=NOW - 40 * day, handled_at=NOW - 40 * day, overdue_labelled=True),  # but labelled
        handled(8, arrived_at=NOW - 50 * day, handled_at=NOW, overdue_labelled=True, answered_at=NOW),  # backlog, labelled
        handled(9, arrived_at=NOW - day, handled_at=NOW, label="critical", account="other"),  # another account
        handled(10, arrived_at=NOW - 3 * day + second, handled_at=NOW + 2 * second),  # handled 3 days + 1 s after
        handled(11, arrived_at=datetime(2026, 11, 24, 23, 30, tzinfo=timezone(timedelta(hours=-5))),  # other zone
                handled_at=datetime(2026, 11, 27, 23, 30, tzinfo=timezone(timedelta(hours=-5)))),
    ]
    since = NOW - 30 * day
    with Store(tmp_path / "s.sqlite3") as store:
        store.record_decisions(rows)
        for r in rows:  # the journal does not carry these; the workflows set them later
            if r.answered_at:
                store.set_answered(r.account, r.message_id, r.answered_at)
            if r.overdue_labelled:
                store.set_overdue_labelled(r.account, [r.message_id])
        got = store.waiting_messages("work", since)
        plan = " ".join(str(r[-1]) for r in store.db.execute(
            "EXPLAIN QUERY PLAN SELECT rowid FROM messages INDEXED BY messages_waiting WHERE account=? AND "
            "answered_at IS NULL AND label IN ('critical', 'routine') AND (arrived_at IS NULL OR CAST(strftime('%s', "
            "handled_at) AS INTEGER) - CAST(strftime('%s', arrived_at) AS INTEGER) <= 259200) "
            "AND COALESCE(arrived_at, handled_at) >= ?", ("work", "x")))
    assert {r.uid for r in got} == _waiting_by_hand([r for r in rows if r.account == "work"], since) == {1, 3, 7, 8, 11}
    assert "messages_waiting" in plan and "SCAN" not in plan


def test_the_change_mark_moves_with_every_change_a_workflow_could_see_and_only_then(tmp_path):
    with Store(tmp_path / "s.sqlite3") as store:
        assert store.change_mark("work") == (0, 0)
        store.record_decisions([handled(1), handled(2), handled(3, account="other")])
        first = store.change_mark("work")
        store.mark_applied("work", [("INBOX", 7, 1), ("INBOX", 7, 2)])  # applying the journal: no change
        store.set_meta("work", "sent_scan_at", NOW.isoformat())
        store.set_answered("other", "<m3@x.example>", NOW)  # another account's mail
        assert store.change_mark("work") == first
        marks = [first]
        for change in (lambda: store.set_answered("work", "<m1@x.example>", NOW),
                       lambda: store.set_overdue_labelled("work", ["<m2@x.example>"]),
                       lambda: store.clear_overdue_labelled("work", ["<m2@x.example>"]),
                       lambda: store.db.execute("UPDATE messages SET label='critical' WHERE uid=2"),  # any writer
                       lambda: store.db.execute("DELETE FROM messages WHERE uid=2"),
                       lambda: store.record_decisions([handled(4, account="other")])):  # a new row, any account
            change()
            marks.append(store.change_mark("work"))
        assert len(set(marks)) == len(marks), marks


def test_schema_2_files_are_brought_forward_with_their_rows(tmp_path):
    import sqlite3

    from mailsort.store import MIGRATIONS, SCHEMA_VERSION, _statements

    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path, isolation_level=None)  # a file written by a mailsort of schema 2
    for script in MIGRATIONS[:2]:
        for statement in _statements(script):
            db.execute(statement)
    db.execute("PRAGMA user_version = 2")
    db.executemany("INSERT INTO messages (account, folder, uidvalidity, uid, message_id, sender, sender_name, subject, "
                   "language, label, p_critical, client, arrived_at, handled_at, open_at_arrival, decision, applied, "
                   "due_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                   [journal_params(handled(1)), journal_params(handled(2, arrived_at=NOW - timedelta(days=9)))])
    db.close()
    with Store(path) as store:
        assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
        indexes = {name: sql for name, sql in store.db.execute("SELECT name, sql FROM sqlite_master WHERE type='index'")}
        assert "WHERE applied = 0" in indexes["messages_pending"]  # version 4: partial indexes
        assert [r.uid for r in store.pending("work")] == [1, 2]  # journaled, not applied: found through it
        assert [r.uid for r in store.waiting_messages("work", NOW - timedelta(days=30))] == [1]
        before = store.change_mark("work")
        store.set_answered("work", "<m1@x.example>", NOW)
        assert store.change_mark("work") != before and store.waiting_messages("work", NOW - timedelta(days=30)) == []
