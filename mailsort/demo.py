"""`mailsort demo`: the whole pipeline on an embedded IMAP server and an SMTP sink, with sample mail.

Nothing here is simulated except the clock. An in-memory IMAP server (pymap's `dict` backend) and an
SMTP sink (aiosmtpd) run in this process on 127.0.0.1 and free ports; a config file and a state
database are written to a temporary directory. The twenty sample messages of `demo_data/messages.json`
arrive over a Friday, a weekend, a Monday and a public holiday: at each simulated moment the messages
that have arrived by then are APPENDed with their arrival time as INTERNALDATE, and then the *same*
`sync_account` that `mailsort sync --now <moment>` runs does its pass against the server. What the
table shows is read back afterwards from the IMAP server (where each message is), the state store
(language, label, p_critical, the outbox) and the SMTP sink (what was really sent, and when).

Both servers are stopped and the temporary directory removed at the end, also on Ctrl-C or an error,
unless `--keep DIR` asked to keep the config, the state and the sent mail.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import email.utils
import json
import logging
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from contextlib import AsyncExitStack, ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence
from zoneinfo import ZoneInfo

from .errors import ServerError, UsageError

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
ZONE = ZoneInfo("Europe/Rome")
ACCOUNT = "demo"
OWNER_NAME = "Giulia Rinaldi"
OWNER_ADDRESS = "giulia@rinaldi-web.example"
NOTIFY_ADDRESS = "giulia-alerts@rinaldi-web.example"  # e.g. an SMS gateway address in real life
DEMO_PASSWORD = "demo-password"  # the embedded server's only user; never leaves this process
PASSWORD_ENV = "MAILSORT_DEMO_PASSWORD"
EXTRA_HINT = "mailsort demo needs the demo extra: pip install 'mailsort[demo]'"


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=ZONE)


@dataclass(frozen=True)
class Moment:
    """A simulated instant at which mail is delivered and a sync pass runs."""

    at: datetime
    note: str = ""


MOMENTS: tuple[Moment, ...] = (
    Moment(_at("2026-12-04T12:00"), "Friday, working hours"),
    Moment(_at("2026-12-04T23:45"), "Friday night"),
    Moment(_at("2026-12-05T20:00"), "Saturday evening"),
    Moment(_at("2026-12-06T21:00"), "Sunday evening"),
    Moment(_at("2026-12-07T09:01"), "Monday, the opening: queued replies go out, Later returns to INBOX"),
    Moment(_at("2026-12-07T20:00"), "Monday evening"),
    Moment(_at("2026-12-08T19:00"), "Tuesday, a public holiday"),
    Moment(_at("2026-12-09T09:01"), "Wednesday, the next opening"),
)


def require_extras() -> None:
    """Raise UsageError (exit 2) with a one-line hint when pymap or aiosmtpd are not installed."""
    import importlib.util

    for module in ("pymap", "aiosmtpd"):
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise UsageError(EXTRA_HINT)


# ------------------------------------------------------------------------------------ sample mail


@dataclass(frozen=True)
class Sample:
    """One message of demo_data/messages.json."""

    number: int  # 1-based, in arrival order
    arrive: datetime
    sender: str  # as in From:, "Name <address>"
    subject: str
    body: str
    headers: tuple[tuple[str, str], ...] = ()

    @property
    def address(self) -> str:
        return email.utils.parseaddr(self.sender)[1].lower()

    @property
    def name(self) -> str:
        return email.utils.parseaddr(self.sender)[0] or self.address

    @property
    def message_id(self) -> str:
        domain = self.address.rpartition("@")[2] or "demo.example"
        return f"<demo-{self.number:02d}.{self.arrive:%Y%m%d%H%M}@{domain}>"

    def to_bytes(self, to: str = OWNER_ADDRESS, to_name: str = OWNER_NAME) -> bytes:
        """A proper RFC 5322 message: CRLF, encoded words for non-ASCII headers, UTF-8 body (QP)."""
        msg = EmailMessage(policy=email.policy.SMTP)
        extra = dict(self.headers)
        if "Return-Path" in extra:  # trace header: first, as a delivering server would put it
            msg["Return-Path"] = extra.pop("Return-Path")
        msg["From"] = self.sender
        msg["To"] = Address(display_name=to_name, addr_spec=to)
        msg["Subject"] = self.subject
        msg["Date"] = email.utils.format_datetime(self.arrive)
        msg["Message-ID"] = self.message_id
        for name, value in extra.items():
            msg[name] = value
        msg.set_content(self.body if self.body.endswith("\n") else self.body + "\n", charset="utf-8",
                        cte="quoted-printable")
        return msg.as_bytes()


def load_samples(path: Path | None = None) -> list[Sample]:
    if path is None:
        text = resources.files("mailsort").joinpath("demo_data/messages.json").read_text(encoding="utf-8")
    else:
        text = Path(path).read_text(encoding="utf-8")
    items = json.loads(text)
    items.sort(key=lambda item: datetime.fromisoformat(item["arrive"]))
    return [
        Sample(
            number=i,
            arrive=datetime.fromisoformat(item["arrive"]).astimezone(ZONE),
            sender=item["from"],
            subject=item["subject"],
            body=item["body"],
            headers=tuple((str(k), str(v)) for k, v in (item.get("headers") or {}).items()),
        )
        for i, item in enumerate(items, start=1)
    ]


# ------------------------------------------------------------------------------------ servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class EmbeddedImap:
    """pymap's in-memory `dict` backend, serving IMAP in plaintext on 127.0.0.1 (loopback only),
    in a background thread with its own asyncio loop. One user: `user` / `password`."""

    def __init__(self, user: str = OWNER_ADDRESS, password: str = DEMO_PASSWORD):
        self.user = user
        self.password = password
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._ready = threading.Event()

    def start(self, timeout: float = 20.0) -> "EmbeddedImap":
        self.port = free_port()
        self._thread = threading.Thread(target=self._run, name="demo-imap", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise ServerError(f"the embedded IMAP server did not start within {timeout:.0f}s")
        if self._error is not None:
            raise ServerError(f"the embedded IMAP server failed to start: {self._error}")
        return self

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        try:
            self._loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported to start() through _error
            self._error = exc
            self._ready.set()
        finally:
            self._loop.close()

    async def _serve(self) -> None:
        from argparse import Namespace

        from pymap.backend.dict import Config, DictBackend, Login
        from pymap.imap import IMAPService
        from pysasl.hashing import BuiltinHash

        class DemoConfig(Config):
            @property
            def greeting(self) -> bytes:  # the default greeting does a (possibly slow) DNS lookup
                return b"mailsort demo IMAP server ready"

        args = Namespace(host=HOST, port=str(self.port), debug=False, cert=None, key=None, tls=False,
                         demo_data=False, demo_user=self.user, demo_password=self.password, passlib_cfg=None,
                         inherited_sockets=None, proxy_protocol=None)
        config = DemoConfig.from_args(args, invalid_user_sleep=0.0, hash_context=BuiltinHash(), reject_dnsbl=False)
        login = Login(config)
        user = await _demo_user(config, self.user, self.password)
        await login.demo_user_identity.set(user)
        backend = DictBackend(login, config)
        config.apply_context()
        self._stop = asyncio.Event()
        async with AsyncExitStack() as stack:
            await backend.start(stack)
            await IMAPService(backend, config).start(stack)
            self._ready.set()
            await self._stop.wait()
            # Close the connections still open (a client interrupted by Ctrl-C never logs out), so the
            # server shuts down at once and no task is left pending when the loop closes.
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)

    def stop(self, timeout: float = 10.0) -> None:
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            try:
                self._loop.call_soon_threadsafe(self._stop.set)
            except RuntimeError:  # the loop already closed
                pass
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> "EmbeddedImap":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def _demo_user(config: Any, name: str, password: str) -> Any:
    from pymap.user import Passwords, UserMetadata

    hashed = await Passwords(config).hash_password(password)
    return UserMetadata(config, name, password=hashed)


@dataclass
class SinkMessage:
    """One message the SMTP sink accepted, with the simulated moment during which it arrived."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    moment: datetime | None

    def parsed(self) -> EmailMessage:
        return email.message_from_bytes(self.data, policy=email.policy.default)  # type: ignore[return-value]


class SmtpSink:
    """aiosmtpd on 127.0.0.1 that keeps every message; `moment` tags what arrives during a pass."""

    def __init__(self) -> None:
        self.port = 0
        self.messages: list[SinkMessage] = []
        self.moment: datetime | None = None
        self._lock = threading.Lock()
        self._controller: Any = None

    def start(self) -> "SmtpSink":
        from aiosmtpd.controller import Controller

        sink = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                data = envelope.original_content or envelope.content
                if isinstance(data, str):
                    data = data.encode("utf-8")
                with sink._lock:
                    sink.messages.append(SinkMessage(envelope.mail_from, tuple(envelope.rcpt_tos), data, sink.moment))
                return "250 OK"

        self.port = free_port()
        self._controller = Controller(Handler(), hostname=HOST, port=self.port, ready_timeout=20)
        try:
            self._controller.start()
        except Exception as exc:
            raise ServerError(f"the demo SMTP sink failed to start: {exc}") from None
        return self

    def received(self) -> list[SinkMessage]:
        with self._lock:
            return list(self.messages)

    def stop(self) -> None:
        if self._controller is not None:
            try:
                self._controller.stop()
            except Exception as exc:  # already stopped, loop gone: nothing left to clean
                log.debug("stopping the SMTP sink: %s", exc)
            self._controller = None

    def __enter__(self) -> "SmtpSink":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ------------------------------------------------------------------------------------ config


def config_text(workdir: Path, imap_port: int, smtp_port: int) -> str:
    """The demo's config file, as a user would write it."""
    state = (workdir / "state.sqlite3").as_posix()
    return f"""\
# mailsort demo config (written by `mailsort demo`; servers on 127.0.0.1, gone when the demo ends)

[state]
path = "{state}"

[calendar]
timezone = "Europe/Rome"
holidays = {{ country = "IT" }}

[calendar.hours]
mon = ["09:00-13:00", "14:00-18:00"]
tue = ["09:00-13:00", "14:00-18:00"]
wed = ["09:00-13:00", "14:00-18:00"]
thu = ["09:00-13:00", "14:00-18:00"]
fri = ["09:00-13:00", "14:00-18:00"]

[labels]
mode = "auto"

[folders]
later = "Later"

[replies]
mode = "send"
default_language = "en"
owner_name = "{OWNER_NAME}"
signature = "Giulia Rinaldi — assistenza siti web"

[notify]
kind = "email"
to = "{NOTIFY_ADDRESS}"

[[account]]
name = "{ACCOUNT}"
addresses = ["{OWNER_ADDRESS}"]
folders = ["INBOX"]
imap = {{ host = "{HOST}", port = {imap_port}, security = "none", username = "{OWNER_ADDRESS}" }}
smtp = {{ host = "{HOST}", port = {smtp_port}, security = "none" }}
password_env = "{PASSWORD_ENV}"
"""


# ------------------------------------------------------------------------------------ observation


@dataclass
class Placement:
    """Where one message is on the server after a pass."""

    folders: tuple[str, ...]
    flags: tuple[str, ...] = ()


def snapshot(mailbox: Any) -> dict[str, Placement]:
    """Message-ID -> the folders holding it (and its flags), read over IMAP."""
    where: dict[str, list[str]] = {}
    flags: dict[str, set[str]] = {}
    for info in mailbox.folder.list():
        if "\\Noselect" in info.flags or "\\NonExistent" in info.flags:
            continue
        mailbox.folder.set(info.name, readonly=True)
        for msg in mailbox.fetch(headers_only=True, mark_seen=False, bulk=True):
            mid = (msg.headers.get("message-id") or ("",))[0].strip()
            if not mid:
                continue
            where.setdefault(mid, []).append(info.name)
            flags.setdefault(mid, set()).update(msg.flags)
    return {mid: Placement(tuple(folders), tuple(sorted(flags.get(mid, ())))) for mid, folders in where.items()}


@dataclass
class MomentLog:
    moment: Moment
    arrived: list[Sample]
    is_open: bool
    calendar_note: str
    report: Any = None
    error: str | None = None
    sent: list[SinkMessage] = field(default_factory=list)
    placement: dict[str, Placement] = field(default_factory=dict)


@dataclass
class DemoResult:
    samples: list[Sample]
    moments: list[MomentLog]
    handled: dict[str, Any]  # Message-ID -> store.HandledMessage
    outbox: list[Any]  # store.OutboxEntry
    sink: list[SinkMessage]
    labels: Any
    later_folder: str
    workdir: Path


# ------------------------------------------------------------------------------------ the run


def _open_mailbox(port: int, user: str, password: str) -> Any:
    from imap_tools import MailBoxUnencrypted

    return MailBoxUnencrypted(HOST, port, timeout=30).login(user, password, initial_folder="INBOX")


def _report_errors(report: Any) -> list[str]:
    errors = getattr(report, "errors", None) or []
    return [str(e) for e in errors]


def run_demo(workdir: Path, *, echo: Callable[[str], None], samples: Sequence[Sample] | None = None,
             moments: Sequence[Moment] = MOMENTS, sync: Callable[..., Any] | None = None) -> DemoResult:
    """Start the servers, play every moment, and gather what happened. The servers are stopped before
    returning (also on errors); `workdir` is left for the caller to remove or keep."""
    from .calendar import WorkCalendar
    from .config import load_config
    from .store import Store

    samples = list(samples if samples is not None else load_samples())
    if sync is None:
        sync = _real_sync()
    logs: list[MomentLog] = []
    with ExitStack() as stack:
        echo("starting an in-memory IMAP server and an SMTP sink on 127.0.0.1 ...")
        imap = stack.enter_context(EmbeddedImap())
        sink = stack.enter_context(SmtpSink())
        config_path = workdir / "config.toml"
        config_path.write_text(config_text(workdir, imap.port, sink.port), encoding="utf-8")
        previous_password = os.environ.get(PASSWORD_ENV)
        os.environ[PASSWORD_ENV] = imap.password
        stack.callback(_restore_env, PASSWORD_ENV, previous_password)
        config = load_config(config_path)
        account = config.account(ACCOUNT)
        calendar = WorkCalendar.from_config(config.calendar)
        echo(f"IMAP 127.0.0.1:{imap.port} (user {imap.user}), SMTP 127.0.0.1:{sink.port}; "
             f"config and state in {workdir}")
        echo("")

        observer = _open_mailbox(imap.port, imap.user, imap.password)
        stack.callback(_logout, observer)
        store = stack.enter_context(Store(config.state_path))

        pending = list(samples)
        for moment in moments:
            arrived = [s for s in pending if s.arrive <= moment.at]
            pending = [s for s in pending if s.arrive > moment.at]
            for sample in arrived:
                result = observer.append(sample.to_bytes(), "INBOX", dt=sample.arrive, flag_set=())
                if not str(result[0]).upper().startswith("OK"):
                    raise ServerError(f"APPEND of sample {sample.number} failed: {result}")
            entry = MomentLog(moment, arrived, calendar.is_open(moment.at), _calendar_note(calendar, moment.at))
            before = len(sink.received())
            sink.moment = moment.at
            try:
                entry.report = sync(config, account, store=store, now=moment.at)
            except Exception as exc:  # shown, and the demo fails at the end with exit 1
                entry.error = f"{type(exc).__name__}: {exc}"
                log.debug("sync at %s failed", moment.at, exc_info=True)
            finally:
                sink.moment = None
            entry.sent = sink.received()[before:]
            entry.placement = snapshot(observer)
            logs.append(entry)
            echo(render_moment(entry))

        handled = {m.message_id: m for m in store.messages(ACCOUNT)}
        outbox = store.outbox(ACCOUNT)
        return DemoResult(samples, logs, handled, outbox, sink.received(), config.labels, config.folders.later,
                          workdir)


def _real_sync() -> Callable[..., Any]:
    """The same code path as `mailsort sync --now <moment>`: sync.sync_all (which runs sync_account for
    each account) with the configured model, loaded once for the whole demo."""
    from . import sync as sync_module

    cache: dict[int, Callable[[], Any]] = {}

    def run(config: Any, account: Any, *, store: Any, now: datetime) -> Any:
        factory = cache.setdefault(id(config), _classifier_factory(config))
        reports = sync_module.sync_all(config, store=store, classifier_factory=factory, now=now,
                                       accounts=[account.name])
        return reports[0]

    return run


def _classifier_factory(config: Any) -> Callable[[], Any]:
    from .classify import default_model_path, load_classifier

    cache: list[Any] = []

    def factory() -> Any:
        if not cache:
            cache.append(load_classifier(config.model_path or default_model_path()))
        return cache[0]

    return factory


def _restore_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def _logout(mailbox: Any) -> None:
    try:
        mailbox.logout()
    except Exception:  # the server may already be gone
        pass


def _calendar_note(calendar: Any, t: datetime) -> str:
    holiday = calendar.holiday_name(t.astimezone(calendar.tz).date())
    if calendar.is_open(t):
        return "open"
    if holiday:
        return f"closed: {holiday}"
    return "closed"


# ------------------------------------------------------------------------------------ rendering


def when(t: datetime | None) -> str:
    """Mon 07 09:01 in the demo's zone."""
    if t is None:
        return "—"
    return t.astimezone(ZONE).strftime("%a %d %H:%M")


def _count(report: Any, name: str) -> int:
    value = getattr(report, name, None)
    if value is None and isinstance(report, dict):
        value = report.get(name)
    if isinstance(value, (list, tuple, set)):
        return len(value)
    return int(value or 0)


def render_moment(entry: MomentLog) -> str:
    t = entry.moment.at
    head = f"{t:%a %Y-%m-%d %H:%M}  {entry.calendar_note:<34}"
    new = f"{len(entry.arrived)} new" if entry.arrived else "no new mail"
    if entry.error:
        return f"{head} {new}; sync FAILED: {entry.error}"
    r = entry.report
    parts = [f"fetched {_count(r, 'fetched')}"]
    for name in ("critical", "routine", "moved", "labelled", "queued", "sent", "returned", "skipped"):
        n = _count(r, name)
        if n:
            parts.append(f"{name} {n}")
    errors = _report_errors(r)
    if errors:
        parts.append(f"errors: {'; '.join(errors)}")
    replies = [m for m in entry.sent if m.parsed().get("In-Reply-To")]
    other = len(entry.sent) - len(replies)
    tail = f"; SMTP sink got {len(replies)} repl{'y' if len(replies) == 1 else 'ies'}" if replies else ""
    if other:
        tail += f" and {other} notification{'s' if other > 1 else ''}"
    return f"{head} {new}; " + ", ".join(parts) + tail


@dataclass
class Row:
    sample: Sample
    language: str
    label: str
    p_critical: float | None
    where: str
    flagged: bool
    reply: str
    reply_template: str = ""
    reply_language: str = ""
    reply_sent_at: datetime | None = None
    notified: bool = False


def build_rows(result: DemoResult) -> list[Row]:
    """One row per sample, from the server snapshots, the store and the sink."""
    replies_by_original: dict[str, list[Any]] = {}
    for entry in result.outbox:
        replies_by_original.setdefault(_norm_id(entry.in_reply_to), []).append(entry)
    sink_by_original: dict[str, list[SinkMessage]] = {}
    for msg in result.sink:
        irt = msg.parsed().get("In-Reply-To")
        if irt:
            sink_by_original.setdefault(_norm_id(str(irt)), []).append(msg)

    rows = []
    for sample in result.samples:
        mid = sample.message_id
        handled = result.handled.get(mid)
        history = _history(result, mid)
        last = _last_placement(result, mid)
        where = history or "—"
        flagged = bool(last and "\\Flagged" in last.flags)
        decision = handled.decision if handled else {}
        notified = any(a.get("type") == "notify" for a in (decision.get("actions") or []) if isinstance(a, dict))
        reply_text, template, language, sent_at = "—", "", "", None
        entries = replies_by_original.get(_norm_id(mid), [])
        sent_msgs = sink_by_original.get(_norm_id(mid), [])
        if entries:
            e = entries[0]
            template = e.template
            language = _reply_language(e.raw)
            if e.state == "sent":
                sink_at = sent_msgs[0].moment if sent_msgs else None
                sent_at = sink_at or e.sent_at
                queued = e.created_at
                if queued and sent_at and abs((sent_at - queued).total_seconds()) > 60:
                    reply_text = f"{template}.{language} queued {when(queued)}, sent {when(sent_at)}"
                else:
                    reply_text = f"{template}.{language} sent {when(sent_at)}"
                if not sent_msgs:
                    reply_text += " (not seen by the sink!)"
            else:
                reply_text = f"{template}.{language} {e.state}, send at {when(e.send_at)}"
        elif handled is not None:
            reason = (decision.get("auto_reply") or {}).get("reason") or ""
            if not (decision.get("auto_reply") or {}).get("allowed", True) and reason:
                reply_text = f"none: {reason}"
        rows.append(Row(sample, handled.language if handled else "?", handled.label if handled else "not seen",
                        handled.p_critical if handled else None, where, flagged, reply_text, template, language,
                        sent_at, notified))
    return rows


def _norm_id(message_id: str) -> str:
    return message_id.strip().strip("<>").lower()


def _reply_language(raw: bytes) -> str:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    return str(msg.get("Content-Language") or "?")


def _last_placement(result: DemoResult, mid: str) -> Placement | None:
    for entry in reversed(result.moments):
        if mid in entry.placement:
            return entry.placement[mid]
    return None


def _main_folder(placement: Placement, labels: Any) -> str:
    """The folder a person would say the message is in: the copies that label mode `folder` makes in
    the Critical / Routine folders are not where the message *is* (see `label_copies`)."""
    label_folders = {labels.critical, labels.routine}
    main = [f for f in placement.folders if f not in label_folders]
    return "+".join(main or placement.folders)


def label_copies(result: DemoResult) -> dict[str, int]:
    """Label folder -> how many sample messages have a copy there at the end (label mode `folder`)."""
    counts: dict[str, int] = {}
    ids = {s.message_id for s in result.samples}
    for mid in ids:
        last = _last_placement(result, mid)
        for folder in (last.folders if last else ()):
            if folder in (result.labels.critical, result.labels.routine):
                counts[folder] = counts.get(folder, 0) + 1
    return counts


def _history(result: DemoResult, mid: str) -> str:
    """INBOX, or Later → INBOX Mon 07 09:01: each change of place and the moment it was seen."""
    steps: list[str] = []
    previous = None
    for entry in result.moments:
        placement = entry.placement.get(mid)
        if placement is None:
            continue
        place = _main_folder(placement, result.labels)
        if place != previous:
            steps.append(place if previous is None else f"{place} {when(entry.moment.at)}")
            previous = place
    return " → ".join(steps)


def _short(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def render_table(rows: Sequence[Row]) -> list[str]:
    header = (f"{'#':>2}  {'arrived':<12} {'from':<18} {'subject':<30} {'lang':<4} {'label':<9} {'p_crit':>6}  "
              f"{'where (and when it moved)':<34} reply")
    lines = [header, "─" * len(header)]
    for r in rows:
        p = f"{r.p_critical:.2f}" if r.p_critical is not None else "—"
        label = r.label.upper() if r.label == "critical" else r.label
        if r.flagged:
            label += "⚑"
        reply = r.reply + ("; owner notified" if r.notified else "")
        lines.append(f"{r.sample.number:>2}  {when(r.sample.arrive):<12} {_short(r.sample.name, 18):<18} "
                     f"{_short(r.sample.subject, 30):<30} {r.language:<4} {label:<9} {p:>6}  "
                     f"{_short(r.where, 34):<34} {reply}")
    return lines


def reply_texts(result: DemoResult, languages: Iterable[str] = ("en", "it", "es", "ru")) -> list[tuple[str, SinkMessage]]:
    """One sent reply per language (after_hours preferred), as the SMTP sink received it."""
    chosen: dict[str, SinkMessage] = {}
    rank: dict[str, int] = {}
    for msg in result.sink:
        parsed = msg.parsed()
        if not parsed.get("In-Reply-To"):
            continue
        lang = str(parsed.get("Content-Language") or "")
        score = 0 if "after_hours" in _template_of(result, msg) else 1
        if lang in languages and (lang not in chosen or score < rank[lang]):
            chosen[lang], rank[lang] = msg, score
    return [(lang, chosen[lang]) for lang in languages if lang in chosen]


def _template_of(result: DemoResult, msg: SinkMessage) -> str:
    mid = _norm_id(str(msg.parsed().get("Message-ID") or ""))
    for entry in result.outbox:
        if _norm_id(entry.message_id) == mid:
            return entry.template
    return ""


def render_reply(lang: str, msg: SinkMessage) -> list[str]:
    parsed = msg.parsed()
    lines = [f"── reply in {lang}, received by the SMTP sink during the {when(msg.moment)} pass "
             f"(envelope {msg.mail_from} → {', '.join(msg.rcpt_tos)}) ──"]
    for name in ("From", "To", "Subject", "Date", "In-Reply-To", "Auto-Submitted", "Content-Language"):
        if parsed.get(name) is not None:
            lines.append(f"{name}: {parsed.get(name)}")
    lines.append("")
    body = parsed.get_body(preferencelist=("plain",))
    text = body.get_content() if body is not None else ""
    lines.extend(text.rstrip("\n").splitlines())
    return lines


def summary(result: DemoResult, rows: Sequence[Row]) -> str:
    critical = sum(1 for r in rows if r.label == "critical")
    routine = sum(1 for r in rows if r.label == "routine")
    replies = [m for m in result.sink if m.parsed().get("In-Reply-To")]
    notes = len(result.sink) - len(replies)
    queued = sum(1 for e in result.outbox if e.state == "queued")
    unanswered = sum(1 for r in rows if r.reply_template == "" and r.label != "not seen")
    later_back = sum(1 for r in rows if "Later" in r.where and "→" in r.where)
    failures = sum(1 for m in result.moments if m.error)
    text = (f"{len(rows)} messages: {critical} critical, {routine} routine; {len(replies)} replies sent, "
            f"{queued} still queued, {unanswered} not answered; {later_back} waited in "
            f"{result.later_folder} until an opening; {notes} owner notification(s)")
    if failures:
        text += f"; {failures} sync pass(es) FAILED"
    return text


def render_result(result: DemoResult) -> list[str]:
    rows = build_rows(result)
    lines = ["", *render_table(rows)]
    copies = label_copies(result)
    if copies:
        lines.append("⚑ = \\Flagged.  The server keeps no custom keywords, so label mode `auto` chose folders: "
                     + ", ".join(f"{n} cop{'y' if n == 1 else 'ies'} in {folder}/" for folder, n in sorted(copies.items())))
    else:
        lines.append("⚑ = \\Flagged.  Labels are IMAP keywords on the messages.")
    notes = [m for m in result.sink if not m.parsed().get("In-Reply-To")]
    for m in notes:
        lines.append(f"owner notified ({', '.join(m.rcpt_tos)}) during the {when(m.moment)} pass: "
                     f"{_short(str(m.parsed().get('Subject') or ''), 90)}")
    lines.append("")
    for lang, msg in reply_texts(result):
        lines.extend(render_reply(lang, msg))
        lines.append("")
    lines.append(summary(result, rows))
    return lines


# ------------------------------------------------------------------------------------ entry point


def main(keep: Path | None, echo: Callable[[str], None]) -> int:
    """`mailsort demo`: 0 when every pass worked, 1 otherwise. Removes its temp dir unless `keep`."""
    require_extras()
    for noisy in ("pymap", "mail.log", "aiosmtpd", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    if keep is not None:
        keep = Path(keep).expanduser().resolve()
        if keep.exists() and any(keep.iterdir()):
            raise UsageError(f"--keep: {keep} exists and is not empty; give a new or empty directory")
        keep.mkdir(parents=True, exist_ok=True)
        workdir = keep
    else:
        workdir = Path(tempfile.mkdtemp(prefix="mailsort-demo-"))
    previous = _sigterm_as_interrupt()
    try:
        started = time.monotonic()
        result = run_demo(workdir, echo=echo)
        for line in render_result(result):
            echo(line)
        if keep is not None:
            sent = workdir / "sent"
            sent.mkdir(exist_ok=True)
            for i, msg in enumerate(result.sink, start=1):
                (sent / f"{i:02d}.eml").write_bytes(msg.data)
            echo(f"kept the config, the state database and the {len(result.sink)} sent messages in {workdir}; "
                 f"try: mailsort --config {workdir / 'config.toml'} report --out {workdir / 'report'}")
        else:
            echo(f"done in {time.monotonic() - started:.1f}s; servers stopped, {workdir} removed")
        return 1 if any(m.error for m in result.moments) else 0
    finally:
        if keep is None:
            shutil.rmtree(workdir, ignore_errors=True)
        _restore_sigterm(previous)


def _sigterm_as_interrupt() -> Any:
    """SIGTERM cleans up like Ctrl-C (only possible from the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, handler)


def _restore_sigterm(previous: Any) -> None:
    if previous is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, previous)
