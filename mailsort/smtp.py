"""Sending: an SMTP `Transport` and the outbox worker `send_due`.

Exactly-once, as far as SMTP allows. Each reply goes `queued` -> `sending` (committed) -> SMTP ->
`sent` (committed) -> filed in Sent (a run's replies together, in one MULTIAPPEND where the server
takes it; a reply left `sent` and unfiled is filed by the next run, once it has checked no copy is
there). A crash can leave an entry in `sending`: we cannot know whether
the server took it, so the next run first asks the Sent (or Drafts) folder whether a message with that
Message-ID is there — the Message-ID is deterministic, see replies.py — and only re-sends when it is
not. When there is no folder to ask (a Gmail account files sent mail itself), the reply is re-sent:
a duplicate courtesy note is a smaller harm than a client who never hears back. The outbox's UNIQUE
dedupe key already makes sure the same reply is never *queued* twice.

Failures: a 4xx answer or a dropped connection puts the reply back in the queue with a growing
back-off (1, 5, 30, 120 minutes); after 5 attempts, or at once on a 5xx answer, it is `failed` with the
server's reason (visible in `mailsort queue list`). Problems that are not the message's fault (login
refused, untrusted certificate, no STARTTLS) stop the run without using up the reply's attempts.

Envelope sender: RFC 3834 section 3.3 suggests a null MAIL FROM for automatic replies, but submission
servers commonly refuse or rewrite it, so we use the From address; loops are prevented by
`Auto-Submitted: auto-replied` on every reply and by the guard on our side.
"""

from __future__ import annotations

import email.utils
import logging
import smtplib
import ssl
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import Any, Callable, Protocol, Sequence

from .config import AccountConfig, Config, ServerConfig, is_loopback
from .errors import ConfigError, MailsortError, ServerError
from .store import OutboxEntry, Store
from .tls import tls_context

log = logging.getLogger(__name__)

TIMEOUT = 60.0
BACKOFF = (timedelta(minutes=1), timedelta(minutes=5), timedelta(minutes=30), timedelta(minutes=120))
MAX_ATTEMPTS = 5
STALE_AFTER = timedelta(days=3)  # a reply that could not go out for this long is no longer polite: cancel it


class SendError(ServerError):
    """One send failed. `permanent`: the server refused this message (5xx); `fatal`: stop the whole run."""

    def __init__(self, message: str, *, permanent: bool = False, fatal: bool = False, counts: bool = True):
        super().__init__(message)
        self.permanent = permanent
        self.fatal = fatal
        self.counts = counts  # does this failure use up one of the reply's attempts?


class SentFolder(Protocol):
    """Where a sent reply is filed (Sent; Drafts in draft mode). imap.ImapFolder implements it."""

    def contains(self, message_id: str) -> bool: ...

    def file(self, raw: bytes) -> None: ...

    def file_many(self, raws: Sequence[bytes]) -> None: ...


class TransportLike(Protocol):
    def send(self, raw: bytes, *, mail_from: str, to: Sequence[str]) -> None: ...

    def close(self) -> None: ...


# ------------------------------------------------------------------------------------------ transport


class Transport:
    """One SMTP connection, opened at the first `send`: TLS with certificate verification, STARTTLS, or
    plaintext for a loopback host only. AUTH when the server config has a username."""

    def __init__(self, server: ServerConfig, *, timeout: float = TIMEOUT, where: str = "smtp.",
                 password_lookup: Callable[[ServerConfig, str], str | None] | None = None):
        if server.security == "none" and not is_loopback(server.host):
            raise ConfigError(f"{where}security: plaintext SMTP is allowed only to a loopback host, not {server.host!r}")
        self.server = server
        self.timeout = timeout
        self.where = where
        self._password_lookup = password_lookup
        self._smtp: smtplib.SMTP | None = None

    def __enter__(self) -> "Transport":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _connect(self) -> smtplib.SMTP:
        server = self.server
        name = f"{server.host}:{server.port}"
        smtp: smtplib.SMTP | None = None
        try:
            if server.security == "tls":
                smtp = smtplib.SMTP_SSL(server.host, server.port, timeout=self.timeout, context=tls_context())
            else:
                smtp = smtplib.SMTP(server.host, server.port, timeout=self.timeout)
            smtp.ehlo()
            if server.security == "starttls":
                if not smtp.has_extn("starttls"):
                    raise SendError(f"SMTP {name} does not offer STARTTLS; use security = \"tls\" or fix the server",
                                    fatal=True, counts=False)
                smtp.starttls(context=tls_context())
                smtp.ehlo()
            if server.username:
                password = self._password()
                smtp.login(server.username, password)
        except SendError:
            _quietly_close(smtp)
            raise
        except ssl.SSLCertVerificationError as exc:
            _quietly_close(smtp)
            raise SendError(f"SMTP {name}: TLS certificate not trusted ({exc.verify_message})", fatal=True,
                            counts=False) from None
        except smtplib.SMTPAuthenticationError as exc:
            _quietly_close(smtp)
            raise SendError(f"SMTP {name}: login refused for {server.username!r} ({exc.smtp_code})", fatal=True,
                            counts=False) from None
        except smtplib.SMTPNotSupportedError as exc:
            _quietly_close(smtp)
            raise SendError(f"SMTP {name}: {exc}", fatal=True, counts=False) from None
        except (smtplib.SMTPException, OSError) as exc:
            _quietly_close(smtp)
            raise SendError(f"SMTP {name}: cannot connect ({_why(exc)})", fatal=True) from None
        return smtp

    def _password(self) -> str:
        from .secrets import password_for

        lookup = self._password_lookup or password_for
        password = lookup(self.server, self.where)
        if not password:
            raise ConfigError(f"{self.where}username: {self.server.username!r} is set but there is no password source "
                              "(password_env, password_command or password_keyring)")
        return password

    def send(self, raw: bytes, *, mail_from: str, to: Sequence[str]) -> None:
        """Send raw bytes; raises SendError (permanent for 5xx, fatal when the connection is gone)."""
        if self._smtp is None:
            self._smtp = self._connect()
        try:
            refused = self._smtp.sendmail(mail_from, list(to), raw)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            raise SendError(f"recipient refused: {_answers(exc.recipients)}", permanent=all(c >= 500 for c in codes)) from None
        except smtplib.SMTPResponseException as exc:  # sender refused, data refused, ...
            if exc.smtp_code in (-1, 421):
                self.close()
            raise SendError(f"SMTP answered {exc.smtp_code} {_text(exc.smtp_error)}", permanent=exc.smtp_code >= 500,
                            fatal=exc.smtp_code in (-1, 421)) from None
        except (smtplib.SMTPException, OSError) as exc:
            self.close()
            raise SendError(f"SMTP connection lost ({_why(exc)})", fatal=True) from None
        if refused:
            raise SendError(f"recipient refused: {_answers(refused)}", permanent=True)

    def close(self) -> None:
        if self._smtp is not None:
            try:
                self._smtp.quit()
            except (smtplib.SMTPException, OSError):
                _quietly_close(self._smtp)
            self._smtp = None


def transport_for(account: AccountConfig, *, timeout: float = TIMEOUT) -> Transport:
    """The account's SMTP transport (ConfigError when the account has no [smtp])."""
    if account.smtp is None:
        raise ConfigError(f"account {account.name!r}: no smtp server configured, so replies cannot be sent "
                          "(add smtp = {{ host = ..., port = ..., security = ... }} or set replies.mode = \"draft\")")
    return Transport(account.smtp, timeout=timeout, where=f"account {account.name!r} smtp.")


def _quietly_close(smtp: smtplib.SMTP | None) -> None:
    if smtp is not None:
        try:
            smtp.close()
        except OSError:
            pass


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _answers(refused: dict) -> str:
    return "; ".join(f"{rcpt}: {code} {_text(msg)}" for rcpt, (code, msg) in refused.items())


def _why(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


# ------------------------------------------------------------------------------------------ outbox worker


@dataclass(frozen=True)
class SendReport:
    """What one `send_due` run did. `sent` counts replies handed to SMTP (or filed as drafts) in this run."""

    sent: int = 0
    failed: int = 0
    skipped: int = 0
    errors: tuple[str, ...] = ()
    recovered: int = 0  # found in Sent after a crash: marked sent without sending again
    ids: tuple[int, ...] = field(default=())  # entries sent (or, in a dry run, that would be)


def send_due(store: Store, account: AccountConfig | str, *, now: datetime, transport_factory: Callable[[], TransportLike] | None,
             sent_folder: SentFolder | None, mode: str, dry_run: bool = False,
             stale_after: timedelta | None = STALE_AFTER) -> SendReport:
    """Send the account's replies whose time has come and file them; return what happened.

    `sent_folder` is the Sent folder in mode "send" (None: the server files sent mail itself, as Gmail
    does) and the Drafts folder in mode "draft", where nothing is sent: replies are only filed for the
    owner to review. Mode "off" sends nothing and leaves the queue as it is. A dry run changes nothing."""
    name = account if isinstance(account, str) else account.name
    worker = _Worker(store, name, now, transport_factory, sent_folder, mode, stale_after)
    if mode == "off":
        return SendReport(skipped=len(store.due(name, now)), errors=("replies.mode is \"off\": nothing sent",))
    if dry_run:
        due = store.due(name, now)
        interrupted = store.outbox(name, ("sending",))
        return SendReport(skipped=len(due) + len(interrupted), ids=tuple(e.id for e in interrupted + due if e.id))
    if mode == "draft" and sent_folder is None:
        return SendReport(skipped=len(store.due(name, now)), errors=("draft mode needs a Drafts folder; nothing filed",))
    try:
        worker.run()
    finally:
        worker.close()
    return worker.report()


class _Worker:
    """One run of the outbox for one account (the state machine of the module docstring)."""

    def __init__(self, store: Store, account: str, now: datetime, transport_factory: Callable[[], TransportLike] | None,
                 folder: SentFolder | None, mode: str, stale_after: timedelta | None):
        self.store, self.account, self.now = store, account, now
        self.transport_factory = transport_factory
        self.folder, self.mode, self.stale_after = folder, mode, stale_after
        self.transport: TransportLike | None = None
        self.sent = self.failed = self.skipped = self.recovered = 0
        self.errors: list[str] = []
        self.ids: list[int] = []
        self.unfiled: list[OutboxEntry] = []  # sent in this run, filed together at its end
        self.stopped = False

    def report(self) -> SendReport:
        return SendReport(self.sent, self.failed, self.skipped, tuple(self.errors), self.recovered, tuple(self.ids))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def run(self) -> None:
        # 1. Entries a crash left in `sending`: sent already (then in the folder) or not.
        for entry in self.store.outbox(self.account, ("sending",)):
            if self.stopped:
                break
            if self._in_folder(entry):
                self.store.set_state(entry.id, "sent", now=self.now)  # type: ignore[arg-type]
                self.store.set_filed(entry.id)  # type: ignore[arg-type]
                self.recovered += 1
            else:
                self._deliver(entry)
        # 2. Sent, but the crash came before filing: file now (unless the copy is already there).
        if self.mode == "send" and self.folder is not None and not self.stopped:
            just_sent = {entry.id for entry in self.unfiled}  # by step 1: filed with the others at the end
            for entry in self.store.outbox(self.account, ("sent",)):
                if not entry.filed and entry.id not in just_sent:
                    self._file(entry, look_first=True)
        # 3. What is due now.
        for entry in self.store.due(self.account, self.now):
            if self.stopped:
                self.skipped += 1
                continue
            if self.stale_after is not None and entry.send_at < self.now - self.stale_after:
                self.store.set_state(entry.id, "cancelled", now=self.now,  # type: ignore[arg-type]
                                     error=f"stale: due {entry.send_at.isoformat()}, not sent within {self.stale_after}")
                self.skipped += 1
                continue
            self._deliver(entry)
        # 4. File what this run sent, in one go (see _file_sent).
        self._file_sent()

    def _in_folder(self, entry: OutboxEntry) -> bool:
        if self.folder is None:
            return False
        try:
            return self.folder.contains(entry.message_id)
        except MailsortError as exc:
            self._stop(f"cannot look for reply {entry.id} in the folder: {exc}")
            return False

    def _deliver(self, entry: OutboxEntry) -> None:
        if self.stopped:
            self.skipped += 1
            return
        assert entry.id is not None
        self.store.set_state(entry.id, "sending", now=self.now)
        try:
            if self.mode == "draft":
                self.folder.file(entry.raw)  # type: ignore[union-attr]
            else:
                if self.transport is None:
                    if self.transport_factory is None:
                        raise SendError("no SMTP transport for this account", fatal=True, counts=False)
                    self.transport = self.transport_factory()
                self.transport.send(entry.raw, mail_from=_mail_from(entry), to=[entry.recipient])
        except SendError as exc:
            self._failed(entry, exc)
            return
        except MailsortError as exc:  # a config error or an IMAP failure while filing a draft
            self.store.set_state(entry.id, "queued", now=self.now, error=str(exc))
            self._stop(f"reply {entry.id}: {exc}")
            return
        self.store.set_state(entry.id, "sent", now=self.now)
        self.sent += 1
        self.ids.append(entry.id)
        log.info("%s: sent reply %s (%s) to %s", self.account, entry.id, entry.template, entry.recipient)
        if self.mode == "draft":
            self.store.set_filed(entry.id)
        elif self.folder is not None:
            self.unfiled.append(entry)

    def _file(self, entry: OutboxEntry, *, look_first: bool) -> None:
        """File a sent reply in Sent. `look_first`: a crash may have come between filing and noting it
        (a reply left `sent` and not filed), so look for the copy before filing another."""
        try:
            if not (look_first and self.folder.contains(entry.message_id)):  # type: ignore[union-attr]
                self.folder.file(entry.raw)  # type: ignore[union-attr]
        except MailsortError as exc:
            self.errors.append(f"reply {entry.id} was sent but not filed in Sent: {exc} (will retry)")
            return
        self.store.set_filed(entry.id)  # type: ignore[arg-type]

    def _file_sent(self) -> None:
        """File the replies this run sent in Sent, with one command where the server allows it (one
        round trip for a pass's replies, not one each). Sent just now, no copy can be filed yet; a crash
        before they are noted filed leaves them `sent` and unfiled, and the next run files them after
        looking for the copy (step 2)."""
        if not self.unfiled:
            return
        entries, self.unfiled = self.unfiled, []
        try:
            self.folder.file_many([entry.raw for entry in entries])  # type: ignore[union-attr]
        except MailsortError as exc:
            what = "1 reply was" if len(entries) == 1 else f"{len(entries)} replies were"
            self.errors.append(f"{what} sent but not filed in Sent: {exc} (will retry)")
            return
        self.store.set_filed(*(entry.id for entry in entries))  # type: ignore[misc]

    def _failed(self, entry: OutboxEntry, exc: SendError) -> None:
        assert entry.id is not None
        if not exc.counts:
            self.store.set_state(entry.id, "queued", now=self.now, error=str(exc))
            self._stop(f"reply {entry.id}: {exc}")
            return
        attempts = entry.attempts + 1
        if exc.permanent or attempts >= MAX_ATTEMPTS:
            self.store.set_state(entry.id, "failed", now=self.now, error=str(exc), count_attempt=True)
            self.failed += 1
            self.errors.append(f"reply {entry.id} to {entry.recipient} failed: {exc}")
        else:
            retry = self.now + BACKOFF[min(attempts, len(BACKOFF)) - 1]
            self.store.set_state(entry.id, "queued", now=self.now, error=str(exc), next_try_at=retry, count_attempt=True)
            self.skipped += 1
            self.errors.append(f"reply {entry.id} to {entry.recipient}: {exc}; retry after {retry.isoformat()}")
        if exc.fatal:
            self.stopped = True

    def _stop(self, message: str) -> None:
        self.errors.append(message)
        self.stopped = True


def _mail_from(entry: OutboxEntry) -> str:
    """The envelope sender: the address of the reply's own From (which mailsort wrote). Read with the
    plain compat32 parser: the header registry of policy.default costs 2 ms per reply here."""
    headers = BytesHeaderParser(policy=compat32).parsebytes(entry.raw, headersonly=True)
    _, address = email.utils.parseaddr(str(headers.get("From", "")))
    if "@" not in address:
        raise SendError(f"reply {entry.id} has no usable From header", permanent=True)
    return address


# ------------------------------------------------------------------------------------------ queueing helper


def outbox_entries(account: str, message, decision, *, calendar, settings, now: datetime, from_address: str,
                   templates, mode: str) -> list[OutboxEntry]:
    """Render a decision's reply actions into outbox rows, ready for `store.record_decisions(rows, entries)`.

    Pure (no I/O): the sync engine calls this between `policy.decide` and the journal."""
    from .replies import build_reply, dedupe_key

    entries = []
    for action in decision.of_type("reply"):
        reply = build_reply(message, action, calendar=calendar, settings=settings, now=now, from_address=from_address,
                            templates=templates, account=account)
        entries.append(OutboxEntry(
            id=None, account=account, template=action.template, recipient=action.to, message_id=str(reply["Message-ID"]),
            in_reply_to=message.message_id, dedupe_key=dedupe_key(account, message, action.template),
            raw=reply.as_bytes(), mode=mode, send_at=max(now, action.send_at) if action.send_at else now, created_at=now,
        ))
    return entries


# ------------------------------------------------------------------------------------------ one account


class _LookOnly:
    """A Sent folder we may search but must not file into (Gmail files SMTP-sent mail itself)."""

    def __init__(self, folder: SentFolder):
        self.folder = folder

    def contains(self, message_id: str) -> bool:
        return self.folder.contains(message_id)

    def file(self, raw: bytes) -> None:
        return None

    def file_many(self, raws: Sequence[bytes]) -> None:
        return None


def send_for_account(config: Config, account: AccountConfig, *, store: Store, now: datetime, session: Any = None,
                     dry_run: bool = False, transport_factory: Callable[[], TransportLike] | None = None) -> SendReport:
    """`send_due` for one account with the folders and transport its config implies.

    `session` is an open `imap.ImapSession` (the sync engine passes its own); without one, a session is
    opened here when the run needs a folder. In draft mode replies go to Drafts; in send mode they are
    filed in Sent, except on Gmail, which files them itself (we still search Sent after a crash)."""
    mode = config.replies.mode
    if dry_run or mode == "off":
        return send_due(store, account, now=now, transport_factory=None, sent_folder=None, mode=mode, dry_run=dry_run)
    if not store.due(account.name, now) and not store.outbox(account.name, ("sending",)) and not any(
            not e.filed for e in store.outbox(account.name, ("sent",))):
        return SendReport()
    if mode == "send" and transport_factory is None:
        transport_for(account)  # a missing [smtp] is a config error before anything is marked
        transport_factory = lambda: transport_for(account)  # noqa: E731
    if session is not None:
        return _send_with(config, account, store, now, session, transport_factory, mode)
    from .imap import open_session

    with open_session(account) as opened:
        return _send_with(config, account, store, now, opened, transport_factory, mode)


def _send_with(config: Config, account: AccountConfig, store: Store, now: datetime, session: Any,
               transport_factory: Callable[[], TransportLike] | None, mode: str) -> SendReport:
    if mode == "draft":
        folder: SentFolder | None = session.drafts_folder(config.folders.drafts)
    else:
        folder = session.sent_folder(config.folders.sent)
        if getattr(session, "label_mode", None) == "gmail":
            folder = _LookOnly(folder)
    return send_due(store, account, now=now, transport_factory=transport_factory, sent_folder=folder, mode=mode)
