"""Helpers for the client-workflow tests: a Mon-Fri 09:00-17:30 calendar and handled-message rows."""

from __future__ import annotations

import json
from datetime import datetime
from zoneinfo import ZoneInfo

from mailsort.calendar import WorkCalendar
from mailsort.config import Absence, TimeRange
from mailsort.store import HandledMessage

MADRID = ZoneInfo("Europe/Madrid")
WEEKDAYS_9_1730 = {i: ((TimeRange(9 * 60, 17 * 60 + 30),) if i < 5 else ()) for i in range(7)}


def calendar(absences: tuple[Absence, ...] = ()) -> WorkCalendar:
    return WorkCalendar(MADRID, WEEKDAYS_9_1730, {}, absences)


def at(text: str) -> datetime:
    """'2026-11-27 17:00' in Madrid (or any ISO text with an offset)."""
    t = datetime.fromisoformat(text)
    return t if t.tzinfo else t.replace(tzinfo=MADRID)


_uids = iter(range(1, 1_000_000))


def row(arrived: str, *, label: str = "routine", sender: str = "ana@acme.example", message_id: str | None = None,
        answered: str | None = None, due: str | None = None, open_at_arrival: bool | None = None,
        client: str | None = "Acme", situation: str | None = None, subject: str = "Help", name: str = "Ana",
        overdue_labelled: bool = False, language: str = "en", handled: str | None = None) -> HandledMessage:
    uid = next(_uids)
    arrived_at = at(arrived)
    if open_at_arrival is None:
        open_at_arrival = calendar().is_open(arrived_at)
    if situation is None:
        situation = f"{label}_{'open' if open_at_arrival else 'closed'}"
    return HandledMessage(
        account="work", folder="INBOX", uidvalidity=1, uid=uid, message_id=message_id or f"<m{uid}@acme.example>",
        sender=sender, sender_name=name, subject=subject, language=language, label=label, p_critical=0.9 if label == "critical" else 0.1,
        client=client, arrived_at=arrived_at, handled_at=at(handled) if handled else arrived_at,
        open_at_arrival=open_at_arrival, decision={"situation": situation, "actions": []},
        answered_at=at(answered) if answered else None, due_at=at(due) if due else None,
        overdue_labelled=overdue_labelled,
    )


# ------------------------------------------------------------------------------------- Dovecot + aiosmtpd rig


class Rig:
    """One mailbox user on the shared Dovecot, an SMTP sink, and a config file for them (Mon-Fri
    09:00-17:30 in Madrid, like the issue's examples). `sync(now)` runs the real `mailsort sync --now
    ... --json` in-process, with the rule-based stand-in classifier of sync_support instead of the model."""

    def __init__(self, tmp_path, dovecot, user: str, password: str, sink, monkeypatch, *, extra: str = "",
                 folders: tuple[str, ...] = ("INBOX",)) -> None:
        from sync_support import FakeClassifier, config_toml, wait_for_login

        import mailsort.classify

        self.tmp_path, self.dovecot, self.user, self.password, self.sink = tmp_path, dovecot, user, password, sink
        wait_for_login(dovecot, user, password)
        env = f"MAILSORT_RIG_PW_{user.replace('-', '_')}"
        monkeypatch.setenv(env, password)
        monkeypatch.setattr(mailsort.classify, "load_classifier", lambda path=None: FakeClassifier())
        self.config = tmp_path / "config.toml"
        self.config.write_text(config_toml(state=tmp_path / "state.sqlite3", imap_port=dovecot.port, user=user,
                                           password_env=env, timezone="Europe/Madrid", hours="09:00-17:30",
                                           replies='owner_name = "Ana Ruiz"\n' + extra, folders=folders,
                                           smtp_port=sink.port), encoding="utf-8")

    def sync(self, now: str) -> dict:
        """`mailsort sync --now NOW --json`; returns the account's report (fails the test on a non-zero exit)."""
        import contextlib
        import io

        from mailsort.cli import main

        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = main(["--config", str(self.config), "sync", "--now", at(now).isoformat(), "--json"])
        assert status == 0, (status, out.getvalue(), err.getvalue())
        [account] = json.loads(out.getvalue())["accounts"]
        return account

    def append(self, raw: bytes, arrived: str, folder: str = "INBOX", flags: tuple[str, ...] = ()) -> None:
        """APPEND with INTERNALDATE = `arrived`: what the server says the message arrived at."""
        from sync_support import mailbox

        with mailbox(self.dovecot, self.user, self.password) as box:
            box.append(raw, folder, dt=at(arrived), flag_set=list(flags))

    def folder(self, name: str) -> dict[str, tuple[str, ...]]:
        """{Message-ID: flags} of one folder, as the server holds it now."""
        from sync_support import contents

        return contents(self.dovecot, self.user, self.password, (name,))[name]

    def received(self, kind: str | None = None) -> list:
        """What the SMTP sink got; `kind` filters by Auto-Submitted (auto-replied: replies to clients,
        auto-generated: notes to the owner)."""
        mails = self.sink.received()
        return [m for m in mails if kind is None or (m["Auto-Submitted"] or "") == kind]

    def outbox(self, template: str | None = None) -> list:
        from mailsort.store import Store

        with Store(self.tmp_path / "state.sqlite3") as store:
            return [e for e in store.outbox("work") if template is None or e.template == template]

    def messages(self) -> list[HandledMessage]:
        from mailsort.store import Store

        with Store(self.tmp_path / "state.sqlite3") as store:
            return store.messages("work")


def client_mail(*, sender: str, subject: str, body: str, date: str, message_id: str, to: str = "owner@example.org",
                extra: dict[str, str] | None = None) -> bytes:
    """A plain client message (the stand-in classifier calls it critical when it says "down", "urgent" ...)."""
    from email.message import EmailMessage
    from email.utils import format_datetime

    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = message_id
    msg["Date"] = format_datetime(at(date))
    for name, value in (extra or {}).items():
        msg[name] = value
    msg.set_content(body)
    return msg.as_bytes()


def owner_reply(*, to: str, subject: str, in_reply_to: str, date: str, message_id: str) -> bytes:
    """The owner's own answer, as a mail program files it in Sent."""
    return client_mail(sender="Ana Ruiz <owner@example.org>", to=to, subject=f"Re: {subject}", date=date,
                       message_id=message_id, body="Done, see the site.\n",
                       extra={"In-Reply-To": in_reply_to, "References": in_reply_to})
