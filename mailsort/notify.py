"""Telling the owner about critical mail that arrived while closed: notifier plugins.

The hook is one method, `Notifier.notify(notice)`. Notifiers are found through the entry-point group
`mailsort.notifiers` (the config's `notify.kind` is the entry point's name), so a plugin package adds
one without the core importing it — the pluggy/datasette way. Two ship with mailsort: `command` (runs
a program with the summary on standard input) and `email` (mails the summary to `notify.to`).

`notify_pending` is what the sync engine calls after journaling: it finds decisions carrying a `notify`
action that were not yet notified and marks each one once its notifier succeeded, so a crash or a
failing notifier means "try again next sync", never "lost" (at worst one repeat after a crash).
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Callable, Sequence

from .config import AccountConfig, Config
from .errors import ConfigError, MailsortError

if TYPE_CHECKING:
    from .store import HandledMessage, Store

log = logging.getLogger(__name__)

GROUP = "mailsort.notifiers"
COMMAND_TIMEOUT = 30  # seconds
LOOKBACK = timedelta(days=3)  # like the reply age limit: a first sync's backlog is not announced


class NotifyError(MailsortError):
    """A notifier failed (the command exited non-zero, the mail could not be sent)."""

    exit_code = 1


@dataclass(frozen=True)
class Notice:
    """One critical message, as the owner should hear about it."""

    account: str
    sender: str
    subject: str
    p_critical: float
    received: datetime | None
    summary: str  # plain English text, several lines; what a command gets on stdin

    @classmethod
    def for_message(cls, row: "HandledMessage", *, replied: Sequence[str] = ()) -> "Notice":
        """Build the notice from the journal row of a handled message (owner-facing, English only)."""
        who = f"{_one_line(row.sender_name)} <{row.sender}>" if row.sender_name else row.sender
        when = row.arrived_at or row.handled_at
        lines = [
            f"Critical mail for account {row.account!r}, outside working hours.",
            f"From: {who}",
            f"Subject: {_one_line(row.subject) or '(no subject)'}",
            f"Received: {when.isoformat() if when else 'unknown'}",
            f"P(critical): {row.p_critical:.2f}",
        ]
        if row.client:
            lines.append(f"Client: {row.client}")
        lines.append("Acknowledged: " + (", ".join(replied) if replied else "no automatic reply was sent"))
        return cls(row.account, row.sender, _one_line(row.subject), row.p_critical, when, "\n".join(lines) + "\n")


class Notifier:
    """The hook specification. A plugin subclasses this, implements `notify`, and (optionally)
    `from_config`; it is declared in its package's metadata:

        [project.entry-points."mailsort.notifiers"]
        pager = "mypkg.pager:PagerNotifier"

    and chosen with `[notify] kind = "pager"`."""

    @classmethod
    def from_config(cls, config: Config, account: AccountConfig | None, **context: Any) -> "Notifier":
        """Build the notifier from the config; `context` may carry `transport_factory` (for mail)."""
        return cls()

    def notify(self, notice: Notice) -> None:
        """Deliver one notice; raise NotifyError (or another MailsortError) when it could not be delivered."""
        raise NotImplementedError


class CommandNotifier(Notifier):
    """Runs `notify.command` (split like a shell would, but without a shell) with the summary on stdin.

    The command also gets MAILSORT_ACCOUNT, MAILSORT_SENDER, MAILSORT_SUBJECT and MAILSORT_P_CRITICAL in
    its environment, so a one-line notifier (`notify-send`, an SMS gateway script) needs no parsing."""

    def __init__(self, command: str | Sequence[str], timeout: float = COMMAND_TIMEOUT):
        try:
            self.argv = list(command) if not isinstance(command, str) else shlex.split(command)
        except ValueError as exc:
            raise ConfigError(f"notify.command: cannot split the command into words ({exc})") from None
        if not self.argv:
            raise ConfigError("notify.command: the command is empty")
        self.timeout = timeout

    @classmethod
    def from_config(cls, config: Config, account: AccountConfig | None, **context: Any) -> "CommandNotifier":
        if not config.notify.command:
            raise ConfigError("notify.command: notify.kind is 'command' but no command is given")
        return cls(config.notify.command)

    def notify(self, notice: Notice) -> None:
        env = dict(os.environ, MAILSORT_ACCOUNT=notice.account, MAILSORT_SENDER=notice.sender,
                   MAILSORT_SUBJECT=notice.subject, MAILSORT_P_CRITICAL=f"{notice.p_critical:.2f}")
        try:
            result = subprocess.run(self.argv, input=notice.summary.encode("utf-8"), capture_output=True,
                                    timeout=self.timeout, env=env, check=False)
        except FileNotFoundError:
            raise NotifyError(f"notify.command: command not found: {self.argv[0]}") from None
        except subprocess.TimeoutExpired:
            raise NotifyError(f"notify.command: {self.argv[0]} did not finish within {self.timeout:g} s") from None
        except OSError as exc:
            raise NotifyError(f"notify.command: cannot run {self.argv[0]} ({exc.strerror})") from None
        if result.returncode != 0:
            detail = result.stderr.decode("utf-8", "replace").strip().splitlines()[:1]
            raise NotifyError(f"notify.command: {self.argv[0]} exited with status {result.returncode}"
                              + (f": {detail[0][:200]}" if detail else ""))


class EmailNotifier(Notifier):
    """Mails the summary to `notify.to` through the account's SMTP transport (e.g. an SMS gateway address).

    The mail carries `Auto-Submitted: auto-generated`, so no responder (ours included) answers it."""

    def __init__(self, to: str, from_address: str, transport_factory: Callable[[], Any]):
        self.to = to
        self.from_address = from_address
        self.transport_factory = transport_factory

    @classmethod
    def from_config(cls, config: Config, account: AccountConfig | None, **context: Any) -> "EmailNotifier":
        if not config.notify.to:
            raise ConfigError("notify.to: notify.kind is 'email' but no address is given")
        account = account or (config.accounts[0] if config.accounts else None)
        if account is None:
            raise ConfigError("notify.kind: 'email' needs an account with an smtp server to send from")
        factory = context.get("transport_factory")
        if factory is None:
            from .smtp import transport_for

            factory = lambda: transport_for(account)  # noqa: E731
        sender = account.addresses[0] if account.addresses else (account.smtp.username if account.smtp else None)
        if not sender:
            raise ConfigError(f"account {account.name!r}: addresses is empty, so there is no From for notifications")
        return cls(config.notify.to, sender, factory)

    def message(self, notice: Notice) -> EmailMessage:
        mail = EmailMessage(policy=SMTP)
        mail["From"] = Address("mailsort", addr_spec=self.from_address)
        mail["To"] = self.to
        mail["Subject"] = f"[mailsort] critical: {notice.subject[:120] or '(no subject)'}"
        if notice.received is not None:  # no clock read here; the relay adds a Date when missing
            mail["Date"] = format_datetime(notice.received)
        mail["Message-ID"] = make_msgid(domain=self.from_address.rpartition("@")[2] or None)
        mail["Auto-Submitted"] = "auto-generated"
        mail["X-Auto-Response-Suppress"] = "All"
        mail.set_content(notice.summary, charset="utf-8")
        return mail

    def notify(self, notice: Notice) -> None:
        mail = self.message(notice)
        transport = self.transport_factory()
        try:
            transport.send(mail.as_bytes(), mail_from=self.from_address, to=[self.to])
        except MailsortError as exc:
            raise NotifyError(f"notify by mail to {self.to}: {exc}") from None
        finally:
            transport.close()


def load_notifier(config: Config, account: AccountConfig | None = None, **context: Any) -> Notifier | None:
    """The notifier `notify.kind` names (None for "none"), found by entry point, never imported by name."""
    kind = config.notify.kind
    if kind == "none":
        return None
    found = [ep for ep in entry_points(group=GROUP) if ep.name == kind]
    if not found:
        raise ConfigError(f"notify.kind: no notifier plugin named {kind!r} is installed")
    try:
        plugin = found[0].load()
    except Exception as exc:  # noqa: BLE001 - a broken plugin package is the user's environment to fix
        raise ConfigError(f"notify.kind: the {kind!r} notifier cannot be loaded ({type(exc).__name__}: {exc})") from None
    if not (isinstance(plugin, type) and callable(getattr(plugin, "notify", None))):
        raise ConfigError(f"notify.kind: {found[0].value} is not a notifier class")
    if hasattr(plugin, "from_config"):
        return plugin.from_config(config, account, **context)
    return plugin()


def notify_pending(config: Config, account: AccountConfig, *, store: "Store", now: datetime,
                   notifier: Notifier | None = None, **context: Any) -> int:
    """Notify the owner of every journaled decision with a `notify` action not yet notified; returns how
    many. Each success is recorded at once (account meta `notified:<id>`); the first failure stops the
    run with NotifyError and the rest wait for the next sync."""
    if notifier is None and config.notify.kind == "none":  # nobody to tell: not even a look at the journal
        return 0
    rows = [r for r in store.messages(account.name, since=now - LOOKBACK) if _wants_notice(r)]
    pending = [r for r in rows if store.get_meta(account.name, _meta_key(r)) is None]
    if not pending:
        return 0
    notifier = notifier or load_notifier(config, account, **context)
    if notifier is None:
        return 0
    done = 0
    for row in pending:
        replies = [f"{a.get('template')} reply to {a.get('to')}" for a in row.decision.get("actions", [])
                   if a.get("type") == "reply"]
        notifier.notify(Notice.for_message(row, replied=replies))
        store.set_meta(account.name, _meta_key(row), now.isoformat())
        done += 1
    return done


def _wants_notice(row: "HandledMessage") -> bool:
    return any(a.get("type") == "notify" for a in (row.decision or {}).get("actions", []))


def _meta_key(row: "HandledMessage") -> str:
    ident = row.message_id or f"{row.folder}/{row.uidvalidity}/{row.uid}"
    return f"notified:{ident}"


def _one_line(text: str | None) -> str:
    return " ".join((text or "").split())
