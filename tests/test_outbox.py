"""The outbox worker against a real aiosmtpd server: exactly-once, crash recovery, back-off, failure, drafts."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from mailsort.calendar import WorkCalendar
from mailsort.config import ServerConfig, parse_config
from mailsort.errors import ConfigError, ServerError
from mailsort.policy import History, Settings, decide
from mailsort.replies import Templates
from mailsort.smtp import MAX_ATTEMPTS, SendError, Transport, outbox_entries, send_due
from mailsort.store import Store

sys.path.insert(0, str(Path(__file__).parent))
from mails import message  # noqa: E402
from servers import HOST, free_port  # noqa: E402

TZ = ZoneInfo("Europe/Madrid")
FRIDAY_NIGHT = datetime(2026, 11, 27, 21, 0, tzinfo=TZ)
MONDAY = datetime(2026, 11, 30, 9, 0, tzinfo=TZ)


@dataclass
class FakeFolder:
    """The SentFolder protocol in memory, with a switch to make it fail."""

    raws: list[bytes] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    refuse: bool = False

    def contains(self, message_id: str) -> bool:
        self.calls.append(f"contains {message_id}")
        return any(message_id.encode() in raw for raw in self.raws)

    def file(self, raw: bytes) -> None:
        self.calls.append("file")
        self.raws.append(raw)

    def file_many(self, raws) -> None:
        self.calls.append(f"file_many {len(raws)}")
        if self.refuse:
            raise ServerError("APPEND Sent: NO over quota")
        self.raws.extend(raws)


@dataclass(frozen=True)
class V:
    label: str
    p_critical: float = 0.3


def config():
    return parse_config({
        "calendar": {"timezone": "Europe/Madrid", "hours": {d: ["09:00-17:30"] for d in ("mon", "tue", "wed", "thu", "fri")}},
        "replies": {"owner_name": "Ana"},
        "account": [{"name": "work", "addresses": ["me@example.org"], "imap": {"host": "127.0.0.1", "security": "none"}}],
    })


def queue(store: Store, label="routine", now=FRIDAY_NIGHT, msg_id="<m1@client.example>", sender="maria@client.example"):
    """Decide on a message and journal its replies, as the sync engine does."""
    cfg = config()
    calendar = WorkCalendar.from_config(cfg.calendar)
    settings = Settings.from_config(cfg, cfg.accounts[0])
    msg = message(date=now, message_id=msg_id, sender=sender)
    decision = decide(msg, V(label), calendar, History(), now, settings)
    entries = outbox_entries("work", msg, decision, calendar=calendar, settings=settings, now=now,
                             from_address="me@example.org", templates=Templates.builtin(), mode="send")
    assert len(entries) == 1
    return store.record_decisions([], entries), entries[0]


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "state.sqlite3") as s:
        yield s


def transport(port: int):
    return lambda: Transport(ServerConfig(HOST, port, "none"), timeout=5)


def run(store, sink_port, now, folder=None, mode="send", **kw):
    return send_due(store, "work", now=now, transport_factory=transport(sink_port), sent_folder=folder, mode=mode, **kw)


def test_due_reply_is_sent_once_and_filed(store, smtp_sink):
    ids, entry = queue(store)
    assert entry.send_at == MONDAY  # after_hours waits for the next opening
    folder = FakeFolder()
    assert run(store, smtp_sink.port, FRIDAY_NIGHT + timedelta(hours=1), folder).sent == 0  # not due yet
    report = run(store, smtp_sink.port, MONDAY, folder)
    assert (report.sent, report.failed, report.errors) == (1, 0, ())
    received = smtp_sink.received()
    assert len(received) == 1 and received[0]["Auto-Submitted"] == "auto-replied"
    assert smtp_sink.messages[0]["to"] == ["maria@client.example"] and smtp_sink.messages[0]["from"] == "me@example.org"
    assert folder.raws == [entry.raw]
    assert folder.calls == ["file_many 1"]  # sent just now: no search of Sent for a copy that cannot be there
    row = store.entry(ids[0])
    assert row.state == "sent" and row.filed and row.sent_at is not None
    # again: nothing more goes out
    assert run(store, smtp_sink.port, MONDAY + timedelta(minutes=5), folder).sent == 0
    assert len(smtp_sink.received()) == 1


def test_the_envelope_sender_is_the_replys_own_from():
    from mailsort.replies import MAIL_POLICY
    from mailsort.smtp import _mail_from
    from email.message import EmailMessage

    _, entry = queue(Store(":memory:"))
    assert _mail_from(entry) == "me@example.org"
    named = EmailMessage(policy=MAIL_POLICY)
    named["From"] = "=?utf-8?b?0JDQvdC90LAg0KDQvtGB0YHQuA==?= <anna.rossi@studio.example>"
    named.set_content("x")
    assert _mail_from(replace(entry, raw=named.as_bytes())) == "anna.rossi@studio.example"
    with pytest.raises(SendError, match="no usable From"):
        _mail_from(replace(entry, raw=b"To: someone@example.org\r\n\r\nbody\r\n"))


def test_the_same_reply_is_never_queued_twice(store):
    first, _ = queue(store)
    again, _ = queue(store)
    assert len(first) == 1 and again == []
    assert len(store.outbox("work")) == 1


def test_crash_after_sending_is_recovered_from_the_sent_folder(store, smtp_sink):
    ids, entry = queue(store, label="critical")  # critical_ack: due at once
    store.set_state(ids[0], "sending", now=FRIDAY_NIGHT)  # we crashed after SMTP accepted it...
    folder = FakeFolder(raws=[entry.raw])  # ...and after it was filed
    report = run(store, smtp_sink.port, FRIDAY_NIGHT, folder)
    assert report.recovered == 1 and report.sent == 0
    assert smtp_sink.received() == []
    assert store.entry(ids[0]).state == "sent"


def test_crash_before_the_server_took_it_is_resent(store, smtp_sink):
    ids, _ = queue(store, label="critical")
    store.set_state(ids[0], "sending", now=FRIDAY_NIGHT)
    folder = FakeFolder()
    report = run(store, smtp_sink.port, FRIDAY_NIGHT, folder)
    assert report.sent == 1 and len(smtp_sink.received()) == 1
    assert store.entry(ids[0]).state == "sent" and len(folder.raws) == 1


def test_crash_after_sent_before_filing_is_filed_next_time(store, smtp_sink):
    ids, entry = queue(store, label="critical")
    store.set_state(ids[0], "sent", now=FRIDAY_NIGHT)
    folder = FakeFolder()
    run(store, smtp_sink.port, FRIDAY_NIGHT, folder)
    assert folder.raws == [entry.raw] and store.entry(ids[0]).filed
    assert smtp_sink.received() == []


def test_crash_after_filing_before_noting_it_files_no_second_copy(store, smtp_sink):
    ids, entry = queue(store, label="critical")
    store.set_state(ids[0], "sent", now=FRIDAY_NIGHT)
    folder = FakeFolder(raws=[entry.raw])  # filed, but the crash came before set_filed
    run(store, smtp_sink.port, FRIDAY_NIGHT, folder)
    assert folder.raws == [entry.raw] and folder.calls == [f"contains {entry.message_id}"]
    assert store.entry(ids[0]).filed and smtp_sink.received() == []


def test_a_runs_replies_are_filed_together_after_they_are_sent(store, smtp_sink):
    entries = [queue(store, label="critical", msg_id=f"<m{n}@client.example>", sender=f"c{n}@client.example")[1]
               for n in range(3)]
    folder = FakeFolder()
    report = run(store, smtp_sink.port, FRIDAY_NIGHT, folder)
    assert (report.sent, report.errors) == (3, ())
    assert folder.calls == ["file_many 3"] and folder.raws == [e.raw for e in entries]
    assert all(store.entry(e.id).filed for e in store.outbox("work"))


def test_replies_sent_but_refused_by_sent_are_filed_by_the_next_run_once(store, smtp_sink):
    for n in range(3):
        queue(store, label="critical", msg_id=f"<m{n}@client.example>", sender=f"c{n}@client.example")
    folder = FakeFolder(refuse=True)
    report = run(store, smtp_sink.port, FRIDAY_NIGHT, folder)
    assert report.sent == 3 and len(smtp_sink.received()) == 3
    assert report.errors == ("3 replies were sent but not filed in Sent: APPEND Sent: NO over quota (will retry)",)
    assert [(e.state, e.filed) for e in store.outbox("work")] == [("sent", False)] * 3
    folder.refuse, folder.calls = False, []
    report = run(store, smtp_sink.port, FRIDAY_NIGHT + timedelta(minutes=5), folder)
    assert (report.sent, report.errors) == (0, ()) and len(smtp_sink.received()) == 3  # nothing sent twice
    # each looked for first (a copy may have been filed after all), then filed once
    assert folder.calls == [c for e in store.outbox("work") for c in (f"contains {e.message_id}", "file")]
    assert len(folder.raws) == 3 and all(e.filed for e in store.outbox("work"))


def test_transient_failure_backs_off_then_succeeds(store, smtp_sink):
    ids, _ = queue(store, label="critical")
    smtp_sink.fail_next = 1
    report = run(store, smtp_sink.port, FRIDAY_NIGHT)
    assert report.sent == 0 and "451" in report.errors[0]
    row = store.entry(ids[0])
    assert (row.state, row.attempts, row.next_try_at) == ("queued", 1, FRIDAY_NIGHT + timedelta(minutes=1))
    assert run(store, smtp_sink.port, FRIDAY_NIGHT + timedelta(seconds=30)).sent == 0  # still backing off
    assert run(store, smtp_sink.port, FRIDAY_NIGHT + timedelta(minutes=1)).sent == 1
    assert len(smtp_sink.received()) == 1 and store.entry(ids[0]).state == "sent"


def test_fails_after_five_attempts(store, smtp_sink):
    ids, _ = queue(store, label="critical")
    smtp_sink.fail_next = 100
    now = FRIDAY_NIGHT
    for attempt in range(1, MAX_ATTEMPTS + 1):
        run(store, smtp_sink.port, now)
        row = store.entry(ids[0])
        assert row.attempts == attempt
        now = row.next_try_at or now
    assert row.state == "failed" and "451" in row.last_error
    assert [m for m in smtp_sink.received()] == []


def test_permanent_refusal_fails_at_once(store):
    from aiosmtpd.controller import Controller

    class Refuse:
        async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
            return "550 5.1.1 no such user"

    port = free_port()
    controller = Controller(Refuse(), hostname=HOST, port=port)
    controller.start()
    try:
        ids, _ = queue(store, label="critical")
        report = run(store, port, FRIDAY_NIGHT)
    finally:
        controller.stop()
    row = store.entry(ids[0])
    assert (row.state, row.attempts, report.failed) == ("failed", 1, 1)
    assert "550" in row.last_error


def test_server_down_counts_an_attempt_and_stops_the_run(store):
    ids1, _ = queue(store, label="critical")
    ids2, _ = queue(store, label="critical", msg_id="<m2@other.example>", sender="bob@other.example")
    report = run(store, free_port(), FRIDAY_NIGHT)  # nothing listens there
    assert report.sent == 0 and "cannot connect" in report.errors[0]
    first, second = store.entry(ids1[0]), store.entry(ids2[0])
    assert (first.state, first.attempts) == ("queued", 1)
    assert (second.state, second.attempts) == ("queued", 0)  # not tried against a dead server


def test_draft_mode_files_into_drafts_and_sends_nothing(store, smtp_sink):
    ids, entry = queue(store, label="critical")
    drafts = FakeFolder()
    report = run(store, smtp_sink.port, FRIDAY_NIGHT, drafts, mode="draft")
    assert report.sent == 1 and drafts.raws == [entry.raw]
    assert smtp_sink.received() == []
    assert store.entry(ids[0]).state == "sent" and store.entry(ids[0]).filed


def test_dry_run_changes_nothing(store, smtp_sink):
    ids, _ = queue(store, label="critical")
    report = run(store, smtp_sink.port, FRIDAY_NIGHT, dry_run=True)
    assert report.ids == (ids[0],) and report.sent == 0
    assert store.entry(ids[0]).state == "queued" and smtp_sink.received() == []


def test_stale_replies_are_cancelled_not_sent(store, smtp_sink):
    ids, _ = queue(store, label="critical")
    report = run(store, smtp_sink.port, FRIDAY_NIGHT + timedelta(days=5))
    assert report.sent == 0 and store.entry(ids[0]).state == "cancelled"
    assert "stale" in store.entry(ids[0]).last_error


def test_plaintext_smtp_only_to_loopback():
    with pytest.raises(ConfigError, match="loopback"):
        Transport(ServerConfig("smtp.example.org", 25, "none"))


def test_auth_uses_the_password_source(monkeypatch):
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    seen = []

    class Sink:
        async def handle_DATA(self, server, session, envelope):
            seen.append(session.auth_data)
            return "250 OK"

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = auth_data.login == b"me@example.org" and auth_data.password == b"s3cret"
        return AuthResult(success=ok, handled=False)

    port = free_port()
    controller = Controller(Sink(), hostname=HOST, port=port, authenticator=authenticator, auth_require_tls=False)
    controller.start()
    try:
        monkeypatch.setenv("TEST_SMTP_PW", "s3cret")
        server = ServerConfig(HOST, port, "none", username="me@example.org", password_env="TEST_SMTP_PW")
        with Transport(server, timeout=5) as t:
            t.send(b"From: me@example.org\r\nTo: x@example.com\r\nSubject: hi\r\n\r\nhi\r\n", mail_from="me@example.org",
                   to=["x@example.com"])
        assert len(seen) == 1
        monkeypatch.setenv("TEST_SMTP_PW", "wrong")
        with Transport(server, timeout=5) as t, pytest.raises(SendError) as err:
            t.send(b"Subject: x\r\n\r\nx\r\n", mail_from="me@example.org", to=["x@example.com"])
        assert err.value.fatal and not err.value.counts and "wrong" not in str(err.value)
    finally:
        controller.stop()


def test_login_refused_does_not_use_up_attempts(store, monkeypatch):
    ids, _ = queue(store, label="critical")

    class Refusing:
        def send(self, raw, *, mail_from, to):
            raise SendError("login refused", fatal=True, counts=False)

        def close(self):
            pass

    report = send_due(store, "work", now=FRIDAY_NIGHT, transport_factory=Refusing, sent_folder=None, mode="send")
    row = store.entry(ids[0])
    assert (row.state, row.attempts) == ("queued", 0) and "login refused" in report.errors[0]
