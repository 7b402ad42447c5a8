"""The CLI side of replies: `explain`, `queue list | cancel | send-due` (send-due against Dovecot + aiosmtpd)."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from imap_tools import MailBoxUnencrypted

from mailsort.calendar import WorkCalendar
from mailsort.cli import main
from mailsort.config import load_config
from mailsort.policy import History, Settings, decide
from mailsort.replies import Templates
from mailsort.smtp import outbox_entries
from mailsort.store import Store

sys.path.insert(0, str(Path(__file__).parent))
from mails import eml, message  # noqa: E402
from sync_support import config_toml  # noqa: E402

TZ = ZoneInfo("Europe/Madrid")
FRIDAY_NIGHT = "2026-11-27T21:00:00+01:00"


def write_config(tmp_path: Path, *, imap_port: int = 1, smtp_port: int = 1, user: str = "owner", mode: str = "send") -> Path:
    path = tmp_path / "config.toml"
    path.write_text(config_toml(state=tmp_path / "state.sqlite3", imap_port=imap_port, user=user,
                                password_env="MAILSORT_TEST_PW", timezone="Europe/Madrid", hours="09:00-17:30",
                                replies=f'mode = "{mode}"\nowner_name = "Ana"', address=f"{user}@example.org",
                                smtp_port=smtp_port,
                                tail='[[client]]\nname = "Rossi"\naddresses = ["maria@client.example"]\n'))
    return path


def login_ready(dovecot, user: str, password: str) -> None:
    """The rig's freshly added users are sometimes refused on the very first login; wait until one works."""
    import time

    for _ in range(20):
        try:
            with MailBoxUnencrypted("127.0.0.1", port=dovecot.port).login(user, password):
                return
        except Exception:  # noqa: BLE001 - imap_tools raises its own error types
            time.sleep(0.25)
    raise AssertionError(f"cannot log in as {user}")


def cli(capsys, *args) -> tuple[int, str, str]:
    status = main(list(args))
    out = capsys.readouterr()
    return status, out.out, out.err


def test_explain_json_with_a_given_label(tmp_path, capsys):
    config = write_config(tmp_path)
    mail = tmp_path / "m.eml"
    mail.write_bytes(eml(lang="it", date=datetime.fromisoformat(FRIDAY_NIGHT)))
    status, out, _ = cli(capsys, "--config", str(config), "explain", "--label", "routine", "--now", FRIDAY_NIGHT,
                         "--json", str(mail))
    assert status == 0
    doc = json.loads(out)
    assert {"label", "p_critical", "language", "sender", "open_now", "auto_reply", "actions", "client", "top_terms"} <= set(doc)
    assert (doc["label"], doc["language"], doc["sender"], doc["open_now"], doc["client"]) == (
        "routine", "it", "maria@client.example", False, "Rossi")
    assert doc["auto_reply"]["allowed"] is True
    reply = [a for a in doc["actions"] if a["type"] == "reply"][0]
    assert reply == {"type": "reply", "template": "after_hours", "language": "it", "to": "maria@client.example",
                     "send_at": "2026-11-30T09:00:00+01:00"}
    assert "lunedì 30 novembre 2026" in doc["replies"][0]["body"]


def test_explain_shows_the_client_and_its_label(tmp_path, capsys):
    config = write_config(tmp_path)
    mail = tmp_path / "m.eml"
    mail.write_bytes(eml(date=datetime.fromisoformat(FRIDAY_NIGHT)))
    args = ("--config", str(config), "explain", "--label", "routine", "--now", FRIDAY_NIGHT)
    status, out, _ = cli(capsys, *args, str(mail))
    assert status == 0
    assert "routine (p_critical 0.00), language en, client Rossi" in out
    assert "    label Client/Rossi" in out
    doc = json.loads(cli(capsys, *args, "--json", str(mail))[1])
    assert doc["client"] == "Rossi" and {"type": "label", "target": "Client/Rossi"} in doc["actions"]
    # a stranger: no client, no client label
    mail.write_bytes(eml(sender="Bob <bob@elsewhere.example>", date=datetime.fromisoformat(FRIDAY_NIGHT)))
    doc = json.loads(cli(capsys, *args, "--json", str(mail))[1])
    assert doc["client"] is None and [a["target"] for a in doc["actions"] if a["type"] == "label"] == ["Routine"]


def test_explain_text_for_a_list_message(tmp_path, capsys):
    config = write_config(tmp_path)
    mail = tmp_path / "news.eml"
    mail.write_bytes(eml(extra={"List-Id": "<news.example>"}, date=datetime.fromisoformat(FRIDAY_NIGHT)))
    status, out, _ = cli(capsys, "--config", str(config), "explain", "--label", "routine", "--now", FRIDAY_NIGHT, str(mail))
    assert status == 0
    assert "refused — mailing list (List-Id header)" in out and "routine_robot" in out


def test_explain_bad_input_is_a_usage_error(tmp_path, capsys):
    config = write_config(tmp_path)
    empty = tmp_path / "empty.eml"
    empty.write_bytes(b"")
    status, _, err = cli(capsys, "--config", str(config), "explain", "--label", "routine", str(empty))
    assert status == 2 and "not a mail message" in err


def _queue_one(config_path: Path, label: str = "critical") -> int:
    config = load_config(config_path)
    now = datetime.fromisoformat(FRIDAY_NIGHT)
    calendar = WorkCalendar.from_config(config.calendar)
    settings = Settings.from_config(config, config.accounts[0])
    msg = message(date=now)
    decision = decide(msg, type("V", (), {"label": label, "p_critical": 0.9})(), calendar, History(), now, settings)
    entries = outbox_entries("work", msg, decision, calendar=calendar, settings=settings, now=now,
                             from_address=config.accounts[0].addresses[0], templates=Templates.builtin(), mode="send")
    with Store(config.state_path) as store:
        return store.record_decisions([], entries)[0]


def test_queue_list_and_cancel(tmp_path, capsys):
    config = write_config(tmp_path)
    entry_id = _queue_one(config)
    status, out, _ = cli(capsys, "--config", str(config), "queue", "list", "--json")
    [entry] = json.loads(out)["entries"]
    assert (entry["id"], entry["state"], entry["template"], entry["recipient"]) == (
        entry_id, "queued", "critical_ack", "maria@client.example")
    assert cli(capsys, "--config", str(config), "queue", "cancel", str(entry_id))[0] == 0
    status, _, err = cli(capsys, "--config", str(config), "queue", "cancel", str(entry_id))
    assert status == 2 and "it is cancelled" in err
    status, out, _ = cli(capsys, "--config", str(config), "queue", "list")
    assert "cancelled" in out


@pytest.mark.dovecot
def test_queue_send_due_sends_and_files_in_sent(tmp_path, capsys, dovecot, imap_user, smtp_sink, monkeypatch):
    user, password = imap_user
    login_ready(dovecot, user, password)
    monkeypatch.setenv("MAILSORT_TEST_PW", password)
    config = write_config(tmp_path, imap_port=dovecot.port, smtp_port=smtp_sink.port, user=user)
    entry_id = _queue_one(config)
    status, out, err = cli(capsys, "--config", str(config), "queue", "send-due", "--now", FRIDAY_NIGHT, "--json")
    assert status == 0, err
    assert json.loads(out)["accounts"][0]["sent"] == 1
    [sent] = smtp_sink.received()
    assert sent["In-Reply-To"] == "<m1@client.example>"
    with MailBoxUnencrypted("127.0.0.1", port=dovecot.port).login(user, password, initial_folder="Sent") as box:
        filed = list(box.fetch(mark_seen=False))
    assert [m.headers["message-id"][0].strip() for m in filed] == [sent["Message-ID"]]
    # a second run sends nothing more
    cli(capsys, "--config", str(config), "queue", "send-due", "--now", FRIDAY_NIGHT)
    assert len(smtp_sink.received()) == 1
    with Store(tmp_path / "state.sqlite3") as store:
        assert store.entry(entry_id).state == "sent" and store.entry(entry_id).filed


@pytest.mark.dovecot
def test_queue_send_due_draft_mode(tmp_path, capsys, dovecot, imap_user, smtp_sink, monkeypatch):
    user, password = imap_user
    login_ready(dovecot, user, password)
    monkeypatch.setenv("MAILSORT_TEST_PW", password)
    config = write_config(tmp_path, imap_port=dovecot.port, smtp_port=smtp_sink.port, user=user, mode="draft")
    _queue_one(config)
    status, _, err = cli(capsys, "--config", str(config), "queue", "send-due", "--now", FRIDAY_NIGHT)
    assert status == 0, err
    assert smtp_sink.received() == []
    with MailBoxUnencrypted("127.0.0.1", port=dovecot.port).login(user, password, initial_folder="Drafts") as box:
        drafts = list(box.fetch(mark_seen=False))
    assert len(drafts) == 1 and drafts[0].subject == "Re: Update the opening hours"
