"""Notifier plugins (a real command, a real SMTP sink), notify_pending once per message, password sources."""

from __future__ import annotations

import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from mailsort.config import ServerConfig, parse_config
from mailsort.errors import ConfigError
from mailsort.notify import CommandNotifier, EmailNotifier, Notice, NotifyError, load_notifier, notify_pending
from mailsort.secrets import password_for
from mailsort.smtp import Transport
from mailsort.store import HandledMessage, Store

sys.path.insert(0, str(Path(__file__).parent))
from servers import HOST  # noqa: E402

NOW = datetime(2026, 11, 27, 21, 0, tzinfo=timezone.utc)


def config(**notify):
    return parse_config({
        "calendar": {"timezone": "UTC", "hours": {"mon": ["09:00-17:00"]}},
        "notify": notify or {"kind": "none"},
        "account": [{"name": "work", "addresses": ["me@example.org"], "imap": {"host": "127.0.0.1", "security": "none"},
                     "smtp": {"host": "127.0.0.1", "security": "none"}}],
    })


def notice(subject="Site down!") -> Notice:
    return Notice("work", "maria@client.example", subject, 0.93, NOW, f"Critical mail\nSubject: {subject}\n")


def row(message_id: str, actions) -> HandledMessage:
    return HandledMessage(
        account="work", folder="INBOX", uidvalidity=1, uid=int(message_id.strip("<m>@x")), message_id=message_id,
        sender="maria@client.example", sender_name="Maria", subject="Site down", language="en", label="critical",
        p_critical=0.9, client=None, arrived_at=NOW, handled_at=NOW, open_at_arrival=False,
        decision={"actions": actions},
    )


def test_command_notifier_runs_a_real_command_without_a_shell(tmp_path):
    out = tmp_path / "notice.txt"
    # argv, not a shell line: the subject's "; rm -rf" can never be interpreted
    notifier = CommandNotifier(["sh", "-c", 'cat > "$1"; printf "%s" "$MAILSORT_SUBJECT" > "$1.subject"', "sh", str(out)])
    notifier.notify(notice("Site down; rm -rf ~"))
    assert out.read_text() == "Critical mail\nSubject: Site down; rm -rf ~\n"
    assert Path(str(out) + ".subject").read_text() == "Site down; rm -rf ~"


def test_command_notifier_from_config_and_failures(tmp_path):
    notifier = load_notifier(config(kind="command", command=f"sh -c 'cat > {tmp_path}/n.txt'"))
    assert isinstance(notifier, CommandNotifier)
    notifier.notify(notice())
    assert "Site down!" in (tmp_path / "n.txt").read_text()
    with pytest.raises(NotifyError, match="status 3"):
        CommandNotifier("sh -c 'exit 3'").notify(notice())
    with pytest.raises(NotifyError, match="command not found"):
        CommandNotifier("no-such-notifier-command").notify(notice())
    with pytest.raises(NotifyError, match="did not finish"):
        CommandNotifier("sleep 5", timeout=0.2).notify(notice())


def test_no_notifier_for_kind_none():
    assert load_notifier(config()) is None


def test_email_notifier_sends_through_the_account_transport(smtp_sink):
    cfg = config(kind="email", to="pager@sms.example")
    notifier = load_notifier(cfg, cfg.accounts[0],
                             transport_factory=lambda: Transport(ServerConfig(HOST, smtp_sink.port, "none"), timeout=5))
    assert isinstance(notifier, EmailNotifier)
    notifier.notify(notice())
    [mail] = smtp_sink.received()
    assert mail["To"] == "pager@sms.example" and mail["Auto-Submitted"] == "auto-generated"
    assert mail["Subject"] == "[mailsort] critical: Site down!"
    assert "Subject: Site down!" in mail.get_payload(decode=True).decode()


def test_notify_pending_notifies_each_message_once(tmp_path):
    class Recorder:
        def __init__(self):
            self.notices = []

        def notify(self, n):
            self.notices.append(n)

    cfg = config(kind="command", command="true")
    with Store(tmp_path / "s.sqlite3") as store:
        store.record_decisions([
            row("<1@x>", [{"type": "label", "target": "Critical"}, {"type": "notify", "target": "command"},
                          {"type": "reply", "template": "critical_ack", "to": "maria@client.example"}]),
            row("<2@x>", [{"type": "label", "target": "Routine"}]),
        ])
        recorder = Recorder()
        assert notify_pending(cfg, cfg.accounts[0], store=store, now=NOW, notifier=recorder) == 1
        assert notify_pending(cfg, cfg.accounts[0], store=store, now=NOW + timedelta(minutes=5), notifier=recorder) == 0
        [sent] = recorder.notices
        assert "critical_ack reply to maria@client.example" in sent.summary and "From: Maria <maria@client.example>" in sent.summary


def test_notify_pending_retries_after_a_failure(tmp_path):
    class Flaky:
        calls = 0

        def notify(self, n):
            Flaky.calls += 1
            if Flaky.calls == 1:
                raise NotifyError("pager offline")

    cfg = config(kind="command", command="true")
    with Store(tmp_path / "s.sqlite3") as store:
        store.record_decisions([row("<1@x>", [{"type": "notify", "target": "command"}])])
        with pytest.raises(NotifyError):
            notify_pending(cfg, cfg.accounts[0], store=store, now=NOW, notifier=Flaky())
        assert notify_pending(cfg, cfg.accounts[0], store=store, now=NOW, notifier=Flaky()) == 1


# ------------------------------------------------------------------------------ password sources


def test_password_from_env(monkeypatch):
    monkeypatch.setenv("MS_TEST_PW", "pw1")
    assert password_for(ServerConfig("h", 1, "tls", "u", password_env="MS_TEST_PW")) == "pw1"
    monkeypatch.delenv("MS_TEST_PW")
    with pytest.raises(ConfigError, match="password_env: the environment variable MS_TEST_PW is not set"):
        password_for(ServerConfig("h", 1, "tls", "u", password_env="MS_TEST_PW"))


def test_password_from_command_first_line_and_no_echo_on_failure():
    assert password_for(ServerConfig("h", 1, "tls", "u", password_command="printf 'p w\\nsecond'")) == "p w"
    with pytest.raises(ConfigError) as err:
        password_for(ServerConfig("h", 1, "tls", "u", password_command="sh -c 'echo TOPSECRET; exit 1'"), "account 'work' ")
    assert "TOPSECRET" not in str(err.value) and str(err.value).startswith("account 'work' password_command:")
    with pytest.raises(ConfigError, match="command not found"):
        password_for(ServerConfig("h", 1, "tls", "u", password_command="no-such-password-tool"))


def test_password_from_keyring(monkeypatch):
    import keyring
    from keyring.backend import KeyringBackend

    class Memory(KeyringBackend):
        priority = 1

        def get_password(self, service, username):
            return {("mailsort", "me@example.org"): "kpw"}.get((service, username))

        def set_password(self, *a):
            raise NotImplementedError

        def delete_password(self, *a):
            raise NotImplementedError

    previous = keyring.get_keyring()
    keyring.set_keyring(Memory())
    try:
        assert password_for(ServerConfig("h", 1, "tls", "me@example.org", password_keyring=True)) == "kpw"
        with pytest.raises(ConfigError, match="keyring set mailsort other"):
            password_for(ServerConfig("h", 1, "tls", "other", password_keyring=True))
    finally:
        keyring.set_keyring(previous)


def test_keyring_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "keyring", None)
    with pytest.raises(ConfigError, match="'keyring' package is not installed"):
        password_for(ServerConfig("h", 1, "tls", "u", password_keyring=True))


def test_no_password_source_means_no_auth():
    assert password_for(ServerConfig("127.0.0.1", 25, "none")) is None
