"""Helpers for the sync tests: a rule-based stand-in classifier, sample mail, configs for a Dovecot
user, a command recorder, and a way to read back what the server holds.

Run as a script it is `mailsort` with the stand-in classifier (and MAILSORT_TEST_BATCH as the batch
size), so the crash tests can run the real CLI in a subprocess without the trained model:
    python tests/sync_support.py --config CONFIG sync
"""

from __future__ import annotations

import imaplib
import os
import sys
import types
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime
from datetime import datetime, timedelta
from pathlib import Path

from imap_tools import MailBoxUnencrypted

TZ = "Europe/Madrid"
# Wednesday 25 November 2026 in Madrid (UTC+1): open 09:00-17:00 Mon-Fri.
OPEN = datetime.fromisoformat("2026-11-25T10:00:00+01:00")
CLOSED = datetime.fromisoformat("2026-11-25T20:00:00+01:00")
NEXT_MORNING = datetime.fromisoformat("2026-11-26T09:05:00+01:00")
CRITICAL_WORDS = ("down", "urgent", "error 500", "caído", "urgente", "non funziona", "не работает", "hacked")


@dataclass(frozen=True)
class Verdict:
    label: str
    p_critical: float


class FakeClassifier:
    """Same interface as mailsort.classify's Classifier: predict([(subject, body)]) -> [Verdict]."""

    def __init__(self) -> None:
        self.calls = 0

    def predict(self, pairs):
        self.calls += 1
        out = []
        for subject, body in pairs:
            text = f"{subject}\n{body}".lower()
            hit = any(w in text for w in CRITICAL_WORDS)
            out.append(Verdict("critical" if hit else "routine", 0.95 if hit else 0.05))
        return out


def never_called():
    raise AssertionError("the classifier was loaded although nothing needed classifying")


# ------------------------------------------------------------------------------------- mail

SAMPLES = [
    ("en", True, "Mario <client{n}@acme.example>", "Site down: error 500 on every page ({n})",
     "Hi,\nour shop has been down since this morning, every page shows error 500.\nPlease help!\n"),
    ("en", False, "Jane <jane{n}@shop.example>", "Invoice for October ({n})",
     "Hello,\ncould you send me the invoice for October when you have a moment?\nThanks, Jane\n"),
    ("it", True, "Luca <luca{n}@negozio.example>", "Urgente: il sito non funziona ({n})",
     "Buongiorno,\nil sito non funziona da stamattina.\nGrazie\n"),
    ("es", False, "Ana <ana{n}@tienda.example>", "Cambio de un texto en la web ({n})",
     "Hola,\n¿podrías cambiar el texto de la página de contacto?\nGracias\n"),
    ("ru", True, "Иван <ivan{n}@firma.example>", "Сайт не работает ({n})",
     "Здравствуйте,\nсайт не работает с утра, посмотрите, пожалуйста.\n"),
    ("ru", False, "Ольга <olga{n}@firma.example>", "Вопрос по домену ({n})",
     "Добрый день,\nкогда продлевается домен?\nСпасибо\n"),
]


def mail(n: int, *, date: datetime = CLOSED - timedelta(hours=1), kind: int | None = None) -> bytes:
    """Sample client mail number n (its kind cycles through SAMPLES: critical every other one)."""
    lang, critical, sender, subject, body = SAMPLES[n % len(SAMPLES) if kind is None else kind]
    msg = EmailMessage()
    msg["From"] = sender.format(n=n)
    msg["To"] = "owner@example.org"
    msg["Subject"] = subject.format(n=n)
    msg["Message-ID"] = f"<sample-{n}@example.test>"
    msg["Date"] = format_datetime(date)
    msg.set_content(body)
    return msg.as_bytes()


def is_critical(n: int) -> bool:
    return SAMPLES[n % len(SAMPLES)][1]


# ------------------------------------------------------------------------------------- config


def write_config(tmp_path: Path, dovecot, user: str, password: str, *, folders=("INBOX",), extra: str = "",
                 smtp_port: int | None = None) -> Path:
    """A config file for this Dovecot user (and an SMTP sink, without AUTH, when given); the password
    comes from an environment variable."""
    env = f"MAILSORT_TEST_PW_{abs(hash((str(tmp_path), user))) % 10**8}"
    os.environ[env] = password
    folder_list = ", ".join(f'"{f}"' for f in folders)
    path = tmp_path / "config.toml"
    path.write_text(f"""
[state]
path = "{tmp_path / 'state.sqlite3'}"

[calendar]
timezone = "{TZ}"
[calendar.hours]
mon = ["09:00-17:00"]
tue = ["09:00-17:00"]
wed = ["09:00-17:00"]
thu = ["09:00-17:00"]
fri = ["09:00-17:00"]

[replies]
owner_name = "Owner"
{extra}

[[account]]
name = "work"
addresses = ["owner@example.org"]
folders = [{folder_list}]
imap = {{ host = "127.0.0.1", port = {dovecot.port}, security = "none", username = "{user}" }}
password_env = "{env}"
""" + (f'smtp = {{ host = "127.0.0.1", port = {smtp_port}, security = "none" }}\n' if smtp_port else ""),
                    encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------- the server side


def wait_for_login(dovecot, user: str, password: str, timeout: float = 5.0) -> None:
    """Dovecot re-reads its passwd-file at most about once a second: a user added a moment ago may be
    refused for a little while. Wait until the login works."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        try:
            mailbox(dovecot, user, password).logout()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def mailbox(dovecot, user: str, password: str) -> MailBoxUnencrypted:
    return MailBoxUnencrypted("127.0.0.1", port=dovecot.port).login(user, password, initial_folder=None)


def append(dovecot, user: str, password: str, raws, folder: str = "INBOX") -> None:
    with mailbox(dovecot, user, password) as box:
        for raw in raws:
            box.append(raw, folder, flag_set=())


def contents(dovecot, user: str, password: str, folders=("INBOX", "Later")) -> dict[str, dict[str, tuple[str, ...]]]:
    """{folder: {Message-ID: flags}} as the server holds it now (read-only, nothing marked read)."""
    out: dict[str, dict[str, tuple[str, ...]]] = {}
    with mailbox(dovecot, user, password) as box:
        existing = {f.name for f in box.folder.list()}
        for folder in folders:
            if folder not in existing:
                out[folder] = {}
                continue
            box.folder.set(folder, readonly=True)
            found: dict[str, tuple[str, ...]] = {}
            for msg in box.fetch(mark_seen=False, headers_only=True, bulk=True):
                mid = (msg.headers.get("message-id") or ("",))[0].strip()
                assert mid not in found, f"{mid} twice in {folder}"
                found[mid] = tuple(f for f in msg.flags if f != "\\Recent")
            out[folder] = found
    return out


class CommandLog:
    """Records every IMAP command imaplib sends (UID commands as 'UID FETCH' etc.)."""

    def __init__(self, monkeypatch) -> None:
        self.commands: list[str] = []
        original = imaplib.IMAP4._command
        log = self.commands

        def recording(client, name, *args):
            word = name
            if name == "UID" and args:
                word = f"UID {args[0].upper() if isinstance(args[0], str) else args[0]}"
            log.append(word)
            return original(client, name, *args)

        monkeypatch.setattr(imaplib.IMAP4, "_command", recording)

    def clear(self) -> None:
        self.commands.clear()

    def names(self) -> set[str]:
        return set(self.commands)


# ------------------------------------------------------------------------------------- CLI with the stand-in


def install_fake_classifier() -> None:
    module = types.ModuleType("mailsort.classify")
    module.load_classifier = lambda path=None: FakeClassifier()
    module.default_model_path = lambda: Path("fake.joblib")
    sys.modules["mailsort.classify"] = module


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    install_fake_classifier()
    import mailsort.sync

    if os.environ.get("MAILSORT_TEST_BATCH"):
        mailsort.sync.BATCH = int(os.environ["MAILSORT_TEST_BATCH"])
    from mailsort.cli import main

    sys.exit(main(sys.argv[1:]))
