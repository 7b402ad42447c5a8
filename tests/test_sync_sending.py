"""The replies due at the end of a pass go out on connections of their own while the client workflows
use the pass's IMAP connection (sync._Sender), on a real Dovecot and SMTP sink."""

from __future__ import annotations

import threading
import time

import pytest
from sync_support import CLOSED, FakeClassifier, append, contents, mail, wait_for_login, write_config

import mailsort.sync
from mailsort.config import load_config
from mailsort.errors import ServerError
from mailsort.imap import open_session
from mailsort.store import Store
from mailsort.sync import sync_account

ACKS = 6  # mail(0..11): six critical messages, each acknowledged at once after hours


@pytest.fixture
def account(dovecot, imap_user, tmp_path, smtp_sink, monkeypatch):
    monkeypatch.setattr(mailsort.sync, "SEND_APART_MIN", ACKS)  # (ten by default: a second login must pay off)
    user, password = imap_user
    wait_for_login(dovecot, user, password)
    config = load_config(write_config(tmp_path, dovecot, user, password, smtp_port=smtp_sink.port))
    append(dovecot, user, password, [mail(n) for n in range(12)])
    with Store(tmp_path / "state.sqlite3") as store:
        yield config, store, user, password


def sessions_by_thread(password, refuse_in=()):
    """A session factory that notes which thread opened each session, and refuses logins in the
    threads named in `refuse_in`."""
    opened: list[str] = []

    def factory(account, **kw):
        name = threading.current_thread().name
        opened.append(name)
        if name in refuse_in:
            raise ServerError("LOGIN: too many connections")
        return open_session(account, password_lookup=lambda s: password, **kw)

    return factory, opened


def workflows_waiting_for(smtp_sink, count, monkeypatch):
    """run_workflows, started only once the sink got `count` messages (or after 10 s): records how
    many it had got when the workflows began."""
    seen: list[int] = []
    original = mailsort.sync.run_workflows

    def waiting(*args, **kw):
        deadline = time.monotonic() + 10
        while len(smtp_sink.received()) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        seen.append(len(smtp_sink.received()))
        return original(*args, **kw)

    monkeypatch.setattr(mailsort.sync, "run_workflows", waiting)
    return seen


def sent_folder_ids(dovecot, user, password) -> list[str]:
    return sorted(contents(dovecot, user, password, folders=("Sent",))["Sent"])


def test_replies_go_out_while_the_workflows_run(dovecot, account, smtp_sink, monkeypatch):
    config, store, user, password = account
    factory, opened = sessions_by_thread(password)
    seen = workflows_waiting_for(smtp_sink, ACKS, monkeypatch)

    report = sync_account(config, config.accounts[0], store=store, now=CLOSED, classifier_factory=FakeClassifier,
                          session_factory=factory)

    assert report.ok, report.errors
    assert seen == [ACKS]  # all sent before the workflows went on: the sending did not wait for them
    assert report.sent == ACKS and len(smtp_sink.received()) == ACKS
    assert opened.count("mailsort-send") == 1  # filed over a connection of its own
    sent = [e for e in store.outbox("work") if e.state == "sent"]
    assert len(sent) == ACKS and all(e.filed for e in sent)
    assert sent_folder_ids(dovecot, user, password) == sorted(e.message_id for e in sent)


def test_a_refused_second_login_leaves_the_sending_to_the_pass(dovecot, account, smtp_sink):
    config, store, user, password = account
    factory, opened = sessions_by_thread(password, refuse_in=("mailsort-send",))

    report = sync_account(config, config.accounts[0], store=store, now=CLOSED, classifier_factory=FakeClassifier,
                          session_factory=factory)

    assert report.ok, report.errors
    assert "mailsort-send" in opened
    assert report.sent == ACKS and len(smtp_sink.received()) == ACKS  # each once, by the pass itself
    sent = [e for e in store.outbox("work") if e.state == "sent"]
    assert len(sent) == ACKS and all(e.filed for e in sent)
    assert sent_folder_ids(dovecot, user, password) == sorted(e.message_id for e in sent)


def test_what_the_sender_raises_is_reported_by_the_pass(dovecot, account, smtp_sink, monkeypatch):
    config, store, user, password = account

    def broken(*args, **kw):
        raise ServerError("SMTP: the outbox is broken")

    monkeypatch.setattr("mailsort.smtp.send_due", broken)
    factory, opened = sessions_by_thread(password)

    report = sync_account(config, config.accounts[0], store=store, now=CLOSED, classifier_factory=FakeClassifier,
                          session_factory=factory)

    assert opened.count("mailsort-send") == 1
    assert "sending replies: SMTP: the outbox is broken" in report.errors
    assert smtp_sink.received() == []
    assert report.fetched == 12 and store.pending("work") == []  # the rest of the pass is not affected


def test_an_in_memory_state_database_sends_in_the_pass(dovecot, account, smtp_sink, tmp_path):
    """Another connection cannot open a database in memory: no sender thread then, same result."""
    config, _, user, password = account
    factory, opened = sessions_by_thread(password)
    with Store(":memory:") as store:
        report = sync_account(config, config.accounts[0], store=store, now=CLOSED, classifier_factory=FakeClassifier,
                              session_factory=factory)
        assert report.ok, report.errors
        assert "mailsort-send" not in opened
        assert report.sent == ACKS and len(smtp_sink.received()) == ACKS
        assert all(e.filed for e in store.outbox("work") if e.state == "sent")


def test_a_few_replies_are_sent_by_the_pass_itself(dovecot, account, smtp_sink, monkeypatch):
    """Below SEND_APART_MIN replies due, a second login would cost more than it saves."""
    config, store, user, password = account
    monkeypatch.setattr(mailsort.sync, "SEND_APART_MIN", ACKS + 1)
    factory, opened = sessions_by_thread(password)

    report = sync_account(config, config.accounts[0], store=store, now=CLOSED, classifier_factory=FakeClassifier,
                          session_factory=factory)

    assert report.ok, report.errors
    assert opened == ["MainThread"]
    assert report.sent == ACKS and len(smtp_sink.received()) == ACKS
    assert sent_folder_ids(dovecot, user, password) == sorted(e.message_id for e in store.outbox("work")
                                                              if e.state == "sent")
