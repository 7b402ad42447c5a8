"""`mailsort sync` killed at chosen points (SIGKILL: no cleanup, no LOGOUT), then run again: on Dovecot,
nothing is lost, nothing is moved twice or to the wrong place, everything is labelled exactly once,
and no reply goes out twice.

The process is the real CLI (tests/sync_support.py runs it with the stand-in classifier), killed by the
MAILSORT_CRASH_AT hook of mailsort/sync.py:
  after-journal  decisions of the first batch journaled, nothing done on the server yet;
  after-store    the label/processed keywords and \\Flagged stored, the MOVEs not sent;
  after-move     the MOVEs done, the journal not yet marked applied (nor the folder mark moved);
  after-return   at an opening, the later folder moved back to INBOX but not recorded as done.
A crash after an SMTP send and before its state is recorded is covered by tests/test_outbox.py
(recovery from the Sent folder).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from sync_support import (CLOSED, NEXT_MORNING, CommandLog, FakeClassifier, append, everything, is_critical, mail, wait_for_login,
                          write_config)

from mailsort.config import load_config
from mailsort.store import Store
from mailsort.sync import sync_account

SUPPORT = Path(__file__).with_name("sync_support.py")
LABELS = ("Critical", "Routine")
COUNT = 30  # messages: critical and routine, en/it/es/ru, all arrived an hour before CLOSED


def mailsort(config: Path, now, *, crash: str | None = None, **sizes: int) -> subprocess.CompletedProcess:
    """`mailsort --config CONFIG sync --json --now NOW` in its own process, maybe killed at `crash`."""
    env = {**os.environ, "MAILSORT_TEST_TOKEN": TOKEN}
    env.pop("MAILSORT_CRASH_AT", None)
    if crash:
        env["MAILSORT_CRASH_AT"] = crash
    for name, value in sizes.items():
        env[f"MAILSORT_TEST_{name.upper()}"] = str(value)
    return subprocess.run([sys.executable, str(SUPPORT), "--config", str(config), "sync", "--json", "--now",
                           now.isoformat()], env=env, capture_output=True, text=True, timeout=120)


TOKEN = uuid.uuid4().hex  # marks the processes these tests start (see `leftovers`)


def leftovers() -> list[int]:
    """Processes (the sync, its workers) still alive that carry this run's token."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if f"MAILSORT_TEST_TOKEN={TOKEN}".encode() in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def wait_until_gone(timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while (alive := leftovers()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive


@pytest.fixture
def mailbox_env(dovecot, imap_user, tmp_path, smtp_sink):
    user, password = imap_user
    wait_for_login(dovecot, user, password)
    config = write_config(tmp_path, dovecot, user, password, smtp_port=smtp_sink.port)
    append(dovecot, user, password, [mail(n) for n in range(COUNT)])
    return config, user, password


def assert_sorted_exactly_once(dovecot, user, password, *, closed: bool) -> None:
    """Every sample is on the server once, across all folders, in the folder the policy puts it in, with
    exactly one label keyword, the processed keyword, and \\Flagged when critical."""
    seen = everything(dovecot, user, password)
    where: dict[str, list[str]] = {}
    for folder, messages in seen.items():
        for mid in messages:
            if folder != "Sent":  # our replies are filed there (checked below: once each)
                where.setdefault(mid, []).append(folder)
    assert sorted(where) == sorted(f"<sample-{n}@example.test>" for n in range(COUNT)), "a message was lost"
    for n in range(COUNT):
        mid = f"<sample-{n}@example.test>"
        assert len(where[mid]) == 1, (mid, where[mid])  # not copied, not moved twice
        folder = where[mid][0]
        flags = seen[folder][mid]
        expected = "Later" if closed and not is_critical(n) else "INBOX"
        assert folder == expected, (mid, folder)
        assert [f for f in flags if f in LABELS] == (["Critical"] if is_critical(n) else ["Routine"]), (mid, flags)
        assert "mailsort-done" in flags and "\\Deleted" not in flags and "\\Seen" not in flags, (mid, flags)
        assert ("\\Flagged" in flags) == is_critical(n), (mid, flags)
    assert all(m.startswith("<mailsort.") for m in seen.get("Sent", {})), seen.get("Sent")  # `contents` refuses doubles


def replies_by_message(smtp_sink) -> dict[str, list[str]]:
    """In-Reply-To -> templates' subjects received by the SMTP sink (each should appear once)."""
    out: dict[str, list[str]] = {}
    for msg in smtp_sink.received():
        if msg["In-Reply-To"]:  # not the owner's digest of the morning
            out.setdefault(msg["In-Reply-To"], []).append(msg["Subject"])
    return out


def assert_killed(result: subprocess.CompletedProcess) -> None:
    """It died of SIGKILL, right there: no JSON summary, and its workers followed it."""
    assert result.returncode == -9, (result.returncode, result.stderr[-2000:])
    assert result.stdout == ""
    assert wait_until_gone() == [], "worker processes outlived the killed sync"


CASES = [
    pytest.param("after-journal", {"batch": 7}, id="after-journal"),
    pytest.param("after-store", {"batch": 7}, id="after-store"),
    pytest.param("after-move", {"batch": 7}, id="after-move"),
    # applied in groups of 10 while later batches wait: the crash leaves journaled-only batches behind too
    pytest.param("after-store", {"batch": 5, "apply_group": 10}, id="after-store-first-group"),
    pytest.param("after-move", {"batch": 5, "apply_group": 10}, id="after-move-first-group"),
    # with worker processes deciding (the parallel path), killed while they hold batches
    pytest.param("after-journal", {"parallel_min": 10, "parallel_batch": 4, "apply_group": 8}, id="workers-after-journal"),
    pytest.param("after-move", {"parallel_min": 10, "parallel_batch": 4, "apply_group": 8}, id="workers-after-move"),
]


@pytest.mark.parametrize("point, sizes", CASES)
def test_a_sync_killed_then_run_again_loses_nothing_and_does_nothing_twice(dovecot, mailbox_env, smtp_sink, tmp_path,
                                                                            point, sizes):
    config, user, password = mailbox_env

    killed = mailsort(config, CLOSED, crash=point, **sizes)

    assert_killed(killed)
    with Store(tmp_path / "state.sqlite3") as store:
        assert store.pending("work"), "the crash should leave journaled decisions not yet applied"
        state = store.folder_state("work", "INBOX")
        assert state is None or state.last_uid < COUNT  # the folder mark did not run ahead of the server

    again = mailsort(config, CLOSED, **sizes)

    assert again.returncode == 0, again.stderr[-3000:]
    report = json.loads(again.stdout)["accounts"][0]
    assert report["errors"] == []
    assert_sorted_exactly_once(dovecot, user, password, closed=True)
    with Store(tmp_path / "state.sqlite3") as store:
        rows = store.messages("work")
        assert store.pending("work") == []
        assert sorted(r.message_id for r in rows) == sorted(f"<sample-{n}@example.test>" for n in range(COUNT))
        assert store.folder_state("work", "INBOX").last_uid == COUNT
        templates = sorted(e.template for e in store.outbox("work"))
    critical = [n for n in range(COUNT) if is_critical(n)]
    routine = [n for n in range(COUNT) if not is_critical(n)]
    # one acknowledgement per critical message, sent once; one after-hours reply per routine one, queued once
    assert templates == sorted(["critical_ack"] * len(critical) + ["after_hours"] * len(routine))
    sent = replies_by_message(smtp_sink)
    assert sorted(sent) == sorted(f"<sample-{n}@example.test>" for n in critical)
    assert all(len(subjects) == 1 for subjects in sent.values()), sent

    # a third pass has nothing to do; the next morning the after-hours replies go out, once each
    assert json.loads(mailsort(config, CLOSED).stdout)["accounts"][0]["fetched"] == 0
    morning = mailsort(config, NEXT_MORNING)
    assert morning.returncode == 0, morning.stderr[-3000:]
    sent = replies_by_message(smtp_sink)
    assert len(sent) == COUNT and all(len(subjects) == 1 for subjects in sent.values()), sent
    assert_sorted_exactly_once(dovecot, user, password, closed=False)


def test_folder_mode_killed_after_the_label_copies_copies_nothing_twice(dovecot, imap_user, tmp_path, smtp_sink,
                                                                         monkeypatch):
    """Folder mode labels by COPY, which is not idempotent: the pass after the crash looks for the copies
    the killed one made (a few OR-chained SEARCHes per label folder, not one per message) and makes
    only the missing ones."""
    user, password = imap_user
    wait_for_login(dovecot, user, password)
    config = write_config(tmp_path, dovecot, user, password, smtp_port=smtp_sink.port,
                          tail='\n[labels]\nmode = "folder"\n')
    append(dovecot, user, password, [mail(n) for n in range(COUNT)])

    assert_killed(mailsort(config, CLOSED, crash="after-store", batch=7, apply_group=14))
    made = everything(dovecot, user, password)  # (`contents` fails on a Message-ID twice in a folder)
    assert 0 < len(made["Critical"]) + len(made["Routine"]) < COUNT  # the first round's copies only

    cfg = load_config(config)
    log = CommandLog(monkeypatch)
    with Store(tmp_path / "state.sqlite3") as store:
        pending = store.pending("work")
        report = sync_account(cfg, cfg.accounts[0], store=store, now=CLOSED, classifier_factory=FakeClassifier)
    assert report.ok and report.to_json()["reapplied"] == len(pending) >= 7, report.errors
    searches = [c for c in log.commands if c == "UID SEARCH"]
    assert len(searches) <= 5, log.commands  # by label folder, not by message (the pass itself searches too)

    seen = everything(dovecot, user, password)
    for n in range(COUNT):
        mid = f"<sample-{n}@example.test>"
        label = "Critical" if is_critical(n) else "Routine"
        assert mid in seen[label] and mid not in seen["Critical" if label == "Routine" else "Routine"], mid
        assert mid in seen["Later" if not is_critical(n) else "INBOX"], mid


def test_killed_after_returning_the_later_folder_returns_it_once(dovecot, mailbox_env, smtp_sink):
    config, user, password = mailbox_env
    assert mailsort(config, CLOSED).returncode == 0
    assert_sorted_exactly_once(dovecot, user, password, closed=True)

    killed = mailsort(config, NEXT_MORNING, crash="after-return")

    assert_killed(killed)
    again = mailsort(config, NEXT_MORNING)
    assert again.returncode == 0, again.stderr[-3000:]
    report = json.loads(again.stdout)["accounts"][0]
    assert report["errors"] == [] and report["fetched"] == 0  # returned mail is not taken for new mail
    assert_sorted_exactly_once(dovecot, user, password, closed=False)
    sent = replies_by_message(smtp_sink)
    assert len(sent) == COUNT and all(len(subjects) == 1 for subjects in sent.values()), sent


def test_the_crash_hook_is_inert_without_the_variable(dovecot, mailbox_env, smtp_sink):
    config, user, password = mailbox_env
    result = mailsort(config, CLOSED, batch=7)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout)["accounts"][0]["fetched"] == COUNT
    assert_sorted_exactly_once(dovecot, user, password, closed=True)
