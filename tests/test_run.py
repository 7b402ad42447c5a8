"""`mailsort run`: the wake-up arithmetic (pure), the daemon loop with fakes, IDLE on a real Dovecot,
and the command itself as a subprocess (append -> labelled within seconds -> SIGTERM -> exit 0)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import date, datetime, timedelta, timezone
from email.message import EmailMessage
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sync_support import config_toml

from mailsort.calendar import WorkCalendar
from mailsort.config import parse_config
from mailsort.daemon import Daemon, Wake, backoff_delay, new_mail, next_send_time, next_wake
from mailsort.store import OutboxEntry

ROME = ZoneInfo("Europe/Rome")
REPO = Path(__file__).resolve().parents[1]


def rome(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=ROME)


def demo_calendar(**extra) -> WorkCalendar:
    """Giulia's calendar: Mon-Fri 09-13 and 14-18 in Rome, Italian holidays."""
    data = {"calendar": {"timezone": "Europe/Rome", "holidays": {"country": "IT"},
                         "hours": {d: ["09:00-13:00", "14:00-18:00"] for d in ("mon", "tue", "wed", "thu", "fri")},
                         **extra}}
    return WorkCalendar.from_config(parse_config(data).calendar)


# ------------------------------------------------------------------------------------ next_wake (pure)


def test_closed_night_wakes_on_the_interval():
    wake = next_wake(rome("2026-12-04T23:45"), demo_calendar(), None, 300)
    assert wake == Wake(rome("2026-12-04T23:50"), "interval")


def test_the_opening_wins_when_it_comes_before_the_interval():
    wake = next_wake(rome("2026-12-07T08:58"), demo_calendar(), None, 300)
    assert wake.at == rome("2026-12-07T09:00") and wake.reason == "opening"


def test_the_afternoon_opening_after_lunch():
    cal = demo_calendar()
    assert next_wake(rome("2026-12-07T12:59"), cal, None, 7200) == Wake(rome("2026-12-07T14:00"), "opening")
    # a closing is not an appointment: the interval decides
    assert next_wake(rome("2026-12-07T12:59"), cal, None, 300) == Wake(rome("2026-12-07T13:04"), "interval")


def test_at_the_opening_itself_the_next_opening_is_the_following_one():
    wake = next_wake(rome("2026-12-07T09:00"), demo_calendar(), None, timedelta(days=1))
    assert wake == Wake(rome("2026-12-07T14:00"), "opening")


def test_a_public_holiday_is_skipped():
    # Monday evening; Tuesday 2026-12-08 is the Immacolata: the next opening is Wednesday 09:00
    wake = next_wake(rome("2026-12-07T18:30"), demo_calendar(), None, timedelta(days=3))
    assert wake == Wake(rome("2026-12-09T09:00"), "opening")


def test_an_absence_is_skipped():
    cal = demo_calendar(absence=[{"start": date(2026, 12, 9), "end": date(2026, 12, 11)}])
    wake = next_wake(rome("2026-12-07T18:30"), cal, None, timedelta(days=30))
    assert wake == Wake(rome("2026-12-14T09:00"), "opening")


def test_a_queued_reply_due_before_anything_else():
    send = rome("2026-12-05T08:00")
    wake = next_wake(rome("2026-12-05T07:59"), demo_calendar(), send, 300)
    assert wake == Wake(send, "send")


def test_a_send_time_after_the_interval_does_not_matter():
    wake = next_wake(rome("2026-12-05T07:00"), demo_calendar(), rome("2026-12-05T08:00"), 300)
    assert wake == Wake(rome("2026-12-05T07:05"), "interval")


def test_a_send_time_in_the_past_is_ignored_instead_of_spinning():
    now = rome("2026-12-05T07:00")
    for stuck in (now, now - timedelta(hours=3)):
        assert next_wake(now, demo_calendar(), stuck, 300) == Wake(now + timedelta(minutes=5), "interval")


def test_next_wake_works_across_zones_and_dst():
    cal = demo_calendar()
    # Sunday 2026-03-29 02:00 Rome: clocks jump to 03:00; Monday 09:00 CEST is 07:00 UTC (08:00 a week before)
    now = datetime(2026, 3, 29, 12, 0, tzinfo=timezone.utc)
    wake = next_wake(now, cal, None, timedelta(days=2))
    assert wake.at == datetime(2026, 3, 30, 7, 0, tzinfo=timezone.utc) and wake.reason == "opening"
    before = next_wake(now - timedelta(days=7), cal, None, timedelta(days=2))
    assert before.at == datetime(2026, 3, 23, 8, 0, tzinfo=timezone.utc)


def test_next_wake_is_always_in_the_future_and_never_later_than_the_interval():
    cal = demo_calendar()
    start = rome("2026-12-03T00:00")
    for minutes in range(0, 7 * 24 * 60, 17):
        now = start + timedelta(minutes=minutes)
        wake = next_wake(now, cal, now + timedelta(minutes=3), 600)
        assert now < wake.at <= now + timedelta(seconds=600)


def test_next_wake_refuses_naive_times_and_bad_intervals():
    with pytest.raises(ValueError):
        next_wake(datetime(2026, 12, 4, 12, 0), demo_calendar(), None, 300)
    with pytest.raises(ValueError):
        next_wake(rome("2026-12-04T12:00"), demo_calendar(), None, 0)


def test_backoff_doubles_up_to_a_cap():
    assert [backoff_delay(n, base=2, cap=60) for n in range(0, 8)] == [0, 2, 4, 8, 16, 32, 60, 60]
    assert backoff_delay(10_000) == 300


def _entry(send_at: datetime, state: str = "queued", next_try_at: datetime | None = None) -> OutboxEntry:
    return OutboxEntry(None, "a", "after_hours", "x@example.com", "<m>", "", f"k{send_at}", b"", "send", send_at,
                       state=state, next_try_at=next_try_at)


def test_next_send_time_takes_the_earliest_queued_and_respects_retry_times():
    t = rome("2026-12-07T09:00")
    entries = [_entry(t + timedelta(hours=2)), _entry(t, next_try_at=t + timedelta(hours=3)),
               _entry(t - timedelta(days=1), state="sent"), _entry(t + timedelta(hours=1))]
    assert next_send_time(entries) == t + timedelta(hours=1)
    assert next_send_time([]) is None


def test_new_mail_reads_exists_responses():
    assert new_mail([b"* 3 EXISTS", b"* 1 RECENT"])
    assert new_mail([b"* 12 exists\r\n"])
    assert not new_mail([b"* 2 EXPUNGE", b"* 4 FETCH (FLAGS (\\Seen))"])
    assert not new_mail([])


# ------------------------------------------------------------------------------------ the loop, with fakes


def _config(tmp_path: Path, accounts: list[dict], hours=None) -> object:
    data = {
        "state": {"path": str(tmp_path / "state.sqlite3")},
        "calendar": {"timezone": "Europe/Rome", "hours": hours or {"mon": ["00:00-24:00"], "tue": ["00:00-24:00"],
                     "wed": ["00:00-24:00"], "thu": ["00:00-24:00"], "fri": ["00:00-24:00"],
                     "sat": ["00:00-24:00"], "sun": ["00:00-24:00"]}},
        "account": accounts,
    }
    return parse_config(data, tmp_path / "config.toml")


def _account(name: str, port: int, user: str = "owner", env: str = "MAILSORT_TEST_PASSWORD") -> dict:
    return {"name": name, "addresses": [f"{name}@example.org"], "folders": ["INBOX"],
            "imap": {"host": "127.0.0.1", "port": port, "security": "none", "username": user},
            "password_env": env}


class Report:
    def __init__(self, errors=()):
        self.errors = tuple(errors)
        self.fetched = 0


def test_one_failing_account_never_stops_another(tmp_path):
    config = _config(tmp_path, [_account("broken", 1), _account("fine", 2)])
    calls: dict[str, list[float]] = {"broken": [], "fine": []}

    def fake_sync(config, account, *, store, now, classifier_factory):
        calls[account.name].append(time.monotonic())
        if account.name == "broken":
            raise RuntimeError("server down")
        return Report()

    daemon = Daemon(config, interval=0.2, sync=fake_sync, idle=False, backoff_base=0.05)
    daemon.start()
    time.sleep(1.5)
    daemon.stop()
    assert daemon.wait(5)
    assert len(calls["fine"]) >= 4  # kept its 0.2 s rhythm
    assert len(calls["broken"]) >= 3  # and the broken one kept retrying (with back-off)


def test_a_report_with_errors_is_retried_with_backoff(tmp_path):
    config = _config(tmp_path, [_account("flaky", 1)])
    calls: list[float] = []

    def fake_sync(config, account, *, store, now, classifier_factory):
        calls.append(time.monotonic())
        return Report(errors=["connection refused"] if len(calls) < 3 else [])

    daemon = Daemon(config, interval=3600, sync=fake_sync, idle=False, backoff_base=0.1)
    daemon.start()
    deadline = time.monotonic() + 5
    while len(calls) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    daemon.stop()
    assert daemon.wait(5)
    assert len(calls) == 3  # start, retry after 0.1 s, retry after 0.2 s; then the hour-long interval
    assert calls[2] - calls[1] >= calls[1] - calls[0] >= 0.09


def test_stop_lets_the_running_pass_finish(tmp_path):
    config = _config(tmp_path, [_account("slow", 1)])
    started, finished = threading.Event(), threading.Event()

    def slow_sync(config, account, *, store, now, classifier_factory):
        started.set()
        time.sleep(0.5)
        finished.set()
        return Report()

    daemon = Daemon(config, interval=3600, sync=slow_sync, idle=False)
    daemon.start()
    assert started.wait(5)
    daemon.stop()
    assert daemon.wait(5)
    assert finished.is_set()


def test_the_syncer_wakes_at_a_queued_send_time(tmp_path):
    """A reply queued for two seconds from now gets its own pass, long before the interval."""
    config = _config(tmp_path, [_account("a", 1)])
    calls: list[datetime] = []
    from mailsort.store import Store

    with Store(config.state_path) as store:
        send_at = datetime.now(timezone.utc) + timedelta(seconds=2)  # stored to the second
        store.queue(_entry(send_at))

    def fake_sync(config, account, *, store, now, classifier_factory):
        calls.append(now)
        return Report()

    daemon = Daemon(config, interval=3600, sync=fake_sync, idle=False)
    daemon.start()
    time.sleep(3.2)
    daemon.stop()
    assert daemon.wait(5)
    assert len(calls) == 2
    assert send_at - timedelta(seconds=1) <= calls[1] < send_at + timedelta(seconds=1)


# ------------------------------------------------------------------------------------ IDLE on Dovecot


def _mail(subject: str, body: str = "Hello, how do I change my password?") -> bytes:
    msg = EmailMessage()
    msg["From"] = "Client <client@example.com>"
    msg["To"] = "owner@example.org"
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{subject.replace(' ', '-')}-{time.time_ns()}@example.com>"
    msg["Date"] = "Fri, 04 Dec 2026 10:00:00 +0100"
    msg.set_content(body)
    return msg.as_bytes()


@pytest.mark.dovecot
def test_idle_wakes_the_syncer_within_a_second_and_stop_leaves_idle(tmp_path, dovecot, imap_user):
    from imap_tools import MailBoxUnencrypted

    from mailsort.imap import open_session

    user, password = imap_user
    config = _config(tmp_path, [_account("idle", dovecot.port, user)])
    passes: list[float] = []

    def fake_sync(config, account, *, store, now, classifier_factory):
        passes.append(time.monotonic())
        return Report()

    sessions = []

    def session_factory(account):
        session = open_session(account, password_lookup=lambda server: password, readonly=True)
        sessions.append(session)
        return session

    daemon = Daemon(config, interval=3600, sync=fake_sync, session_factory=session_factory)
    daemon.start()
    try:
        deadline = time.monotonic() + 10
        while not (passes and sessions) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # the watcher is in IDLE now
        assert len(passes) == 1
        with MailBoxUnencrypted("127.0.0.1", dovecot.port).login(user, password) as box:
            appended = time.monotonic()
            box.append(_mail("idle test"), "INBOX")
        deadline = time.monotonic() + 5
        while len(passes) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(passes) >= 2, "IDLE did not wake the syncer"
        assert passes[1] - appended < 3.0
    finally:
        stopped = time.monotonic()
        daemon.stop()
        assert daemon.wait(10)
    assert time.monotonic() - stopped < 3.0
    assert all(s.box is None for s in sessions)  # every watcher logged out


@pytest.mark.dovecot
def test_the_watcher_reconnects_after_the_connection_drops(tmp_path, dovecot, imap_user):
    from imap_tools import MailBoxUnencrypted

    from mailsort.imap import open_session

    user, password = imap_user
    config = _config(tmp_path, [_account("drop", dovecot.port, user)])
    passes: list[float] = []
    sessions = []

    def fake_sync(config, account, *, store, now, classifier_factory):
        passes.append(time.monotonic())
        return Report()

    def session_factory(account):
        session = open_session(account, password_lookup=lambda server: password, readonly=True)
        sessions.append(session)
        return session

    daemon = Daemon(config, interval=3600, sync=fake_sync, session_factory=session_factory, backoff_base=0.1)
    daemon.start()
    try:
        deadline = time.monotonic() + 10
        while not sessions and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        import socket

        sessions[0].box.client.sock.shutdown(socket.SHUT_RDWR)  # the network goes away under IDLE
        deadline = time.monotonic() + 10
        while len(sessions) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(sessions) >= 2, "the watcher did not reconnect"
        time.sleep(0.5)
        count = len(passes)
        with MailBoxUnencrypted("127.0.0.1", dovecot.port).login(user, password) as box:
            box.append(_mail("after reconnect"), "INBOX")
        deadline = time.monotonic() + 5
        while len(passes) <= count and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(passes) > count, "the new connection does not IDLE"
    finally:
        daemon.stop()
        assert daemon.wait(10)


# ------------------------------------------------------------------------------------ `mailsort run`


def _model_missing() -> bool:
    try:
        from mailsort.classify import default_model_path
    except ImportError:
        return True
    return not default_model_path().is_file()


@pytest.mark.dovecot
def test_mailsort_run_labels_new_mail_via_idle_and_stops_on_sigterm(tmp_path, dovecot, imap_user):
    if _model_missing():
        pytest.fail("models/default.joblib is missing: `mailsort run` needs the shipped model")
    from imap_tools import MailBoxUnencrypted

    user, password = imap_user
    state = tmp_path / "state.sqlite3"
    config = tmp_path / "config.toml"
    config.write_text(config_toml(state=state, imap_port=dovecot.port, user=user,
                                  password_env="MAILSORT_RUN_TEST_PASSWORD", timezone="Europe/Rome",
                                  hours="00:00-24:00", days=("mon", "tue", "wed", "thu", "fri", "sat", "sun"),
                                  replies='mode = "off"'), encoding="utf-8")
    env = dict(os.environ, MAILSORT_RUN_TEST_PASSWORD=password, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "mailsort", "--config", str(config), "run", "--interval", "300"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: _idle_started(dovecot, user) or proc.poll() is not None, 20)
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.5)
        with MailBoxUnencrypted("127.0.0.1", dovecot.port).login(user, password) as box:
            box.append(_mail("Site down", "Hi, since this morning the whole website shows a 500 error. "
                                          "Customers cannot order anything. Please help urgently!"), "INBOX")
            appended = time.monotonic()

            def labelled() -> bool:
                box.folder.set("INBOX")
                flags = [m.flags for m in box.fetch(headers_only=True, mark_seen=False)]
                return bool(flags) and any(f in ("Critical", "Routine") for f in flags[0])

            assert _wait_for(labelled, 10), "the new message was not labelled"
            took = time.monotonic() - appended
        assert took < 8, f"labelled only after {took:.1f}s: not through IDLE"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    with sqlite3.connect(state) as db:
        rows = db.execute("SELECT subject, label FROM messages WHERE account='work'").fetchall()
    assert [r[0] for r in rows] == ["Site down"]
    assert rows[0][1] in ("critical", "routine")


def _idle_started(dovecot, user: str) -> bool:
    """Dovecot's log shows the login; we then give the watcher a moment to enter IDLE."""
    log = dovecot.root / "dovecot.log"
    return log.exists() and f"user=<{user}>" in log.read_text(errors="replace")


def _wait_for(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False
