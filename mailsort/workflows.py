"""Client workflows in the sync pass: answered mail, Overdue labels, the owner's digest, thank-yous.

The imperative shell around the pure modules `deadlines`, `absences`, `clients`, `policy` and
`replies`: it reads and writes the store, talks IMAP through the pass's own session and queues mail in
the outbox. `sync._AccountPass.run` calls `run_workflows` once per account pass, after the
notifications and before the outbox is sent, so whatever it queues goes out in the same pass.

The steps, each independent of the others (one failing never stops the next):

1. **Answered.** The Sent folder is read incrementally (by UID; only the header fields that matter) and
   every message named in a human reply's In-Reply-To or References is `store.set_answered`. Our own
   automatic mail (Auto-Submitted) is no answer. To keep a pass with nothing to do at one STATUS per
   watched folder, Sent is looked at only when something is waiting for an answer, and then at most
   every `SENT_SCAN_EVERY`, except when a decision hangs on it: a message about to turn overdue, or a
   digest about to be written, always gets a fresh look first.
2. **Overdue.** Mail past its deadline (N working hours, counted on the calendar) gets the Overdue
   label once; answered mail loses it. The journal knows where each message was handled (folder,
   UIDVALIDITY, UID), so a message the pass did not move is labelled by UID: no search, and a UID that
   is gone (the owner moved or deleted the message) labels nothing, since UIDs are never reused within
   one UIDVALIDITY. Only mail the pass moved (to *later*: it may be back in INBOX) or whose folder got a
   new UIDVALIDITY is searched for, by Message-ID, in the folders where it may be and among mail that
   arrived since shortly before it: the server reads the header of every message a Message-ID SEARCH
   looks at.
3. **Digest.** At each opening the owner gets one mail: overdue, due today, critical still open
   (nothing when all three are empty). `replies.digest = false` turns it off.
4. **After an absence.** At the first pass at or after the first opening that follows an absence,
   everyone who wrote during it and is still waiting gets one `back` thank-you in their language
   (`replies.thank_you = false` turns it off), and the owner gets the list of who wrote.

Every mail goes through the outbox, whose UNIQUE dedupe key makes it exactly-once whatever the number
of passes or crashes; replies to clients also pass the RFC 3834 guard. Notes to the owner are not
replies: they carry `Auto-Submitted: auto-generated`, so the guard (ours or anyone's) never answers them.

**A pass with nothing to do.** Most passes change nothing here, and reading the open mail and working
out its deadlines is the bulk of a sync with nothing new. So a run that had no error remembers (account
meta `workflows_idle`) when it ran, the store's change mark (`Store.change_mark`: no row added, changed
or deleted since), the settings it depends on, and the first moment at which time alone can change its
outcome: the next deadline of open mail (`deadlines.next_overdue_change`), the next opening (a digest,
`deadlines.next_digest`), the next thank-you time (`absences.next_thank_you`). Until then, with the same
mark and settings, a run would find exactly what the last one found, and it is skipped, except for the
look at Sent (one STATUS of the folder read last time, at most every SENT_SCAN_EVERY): a new mail there
means a full run.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta, timezone
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

from .calendar import WorkCalendar
from .config import Absence, AccountConfig, Config
from .errors import MailsortError
from .imap import ImapSession, imap_date, keyword_for, uid_set_chunks
from .store import HandledMessage, OutboxEntry, Store, from_iso, iso

# deadlines and absences are imported where a full run uses them: a pass with nothing to do needs neither
if TYPE_CHECKING:
    from .deadlines import DueReport
    from .message import Message
    from .policy import Settings
    from .replies import Templates

log = logging.getLogger(__name__)

SENT_SCAN_EVERY = timedelta(minutes=5)
FIRST_SCAN_MARGIN = timedelta(days=7)  # the first look at Sent reaches this far before the oldest open mail
ABSENCE_LOOKBACK = timedelta(days=3)  # a first pass ever does not thank people for an absence long past
FETCH_BATCH = 500  # Sent messages per UID FETCH
SEARCH_MARGIN = timedelta(days=2)  # a Message-ID SEARCH looks at mail that arrived this long before the message
SENT_FIELDS = "MESSAGE-ID IN-REPLY-TO REFERENCES DATE AUTO-SUBMITTED"

META_SENT = "sent_scan"  # {"folder", "uidvalidity", "last_uid"}: how far Sent has been read
META_SENT_AT = "sent_scan_at"
META_DIGEST = "last_digest"
META_ABSENCES = "absence_check"
META_IDLE = "workflows_idle"  # what the last full run found: see "A pass with nothing to do" above
IDLE_VERSION = 1  # bump when what a run does changes, so that no state of an older mailsort is trusted


class WorkflowError(MailsortError):
    """One or more workflow steps failed; the message lists them. The others still ran."""


@dataclass(frozen=True)
class WorkflowReport:
    """What one run did (for logs and tests)."""

    scanned: int = 0  # Sent messages read
    answered: int = 0
    overdue_labelled: int = 0
    overdue_cleared: int = 0
    queued: tuple[str, ...] = ()  # templates of the mail queued: "digest", "back", "absence_digest"
    errors: tuple[str, ...] = field(default=())


def run_workflows(config: Config, account: AccountConfig, *, store: Store, session: ImapSession,
                  calendar: WorkCalendar, now: datetime, templates: "Templates | None" = None,
                  settings: Settings | None = None, counts: dict[str, int] | None = None) -> WorkflowReport:
    """Run every step for one account. `counts` (the pass's tally) gets the number of mails queued.
    Raises WorkflowError after all steps ran when any of them failed. `templates` and `settings` are
    the pass's own when it built them already; otherwise they are built here, and only when needed.
    When nothing can have changed since the last run (see the module docstring) it returns at once."""
    run = _Run(config, account, store, session, calendar, now, templates, settings)
    if run.idle():
        return run.report()
    run.step("reading the Sent folder", run.answered)
    run.step("overdue labels", run.overdue)
    run.step("the digest", run.digest)
    run.step("the end of an absence", run.absences)
    if not run.errors:
        run.step("remembering what it found", run.remember)
    if counts is not None:
        counts["queued"] += len(run.queued)
    report = run.report()
    if report.errors:
        raise WorkflowError("; ".join(report.errors))
    return report


class _Run:
    def __init__(self, config: Config, account: AccountConfig, store: Store, session: ImapSession,
                 calendar: WorkCalendar, now: datetime, templates: Templates | None, settings: Settings | None):
        self.config, self.account, self.store, self.session = config, account, store, session
        self.calendar, self.now, self._templates, self._settings = calendar, now, templates, settings
        self.name = account.name
        self.hours = config.replies.reply_within_hours
        self.counts = {"scanned": 0, "answered": 0, "overdue_labelled": 0, "overdue_cleared": 0}
        self.queued: list[str] = []
        self.errors: list[str] = []
        self._open: list[HandledMessage] | None = None
        self._due: DueReport | None = None
        self._sent_status: tuple[str, Any] | None = None  # (folder, FolderStatus) read by `idle`

    def step(self, what: str, action: Callable[[], None]) -> None:
        try:
            action()
        except MailsortError as exc:
            log.error("%s: %s: %s", self.name, what, exc)
            self.errors.append(f"{what}: {exc}")

    def report(self) -> WorkflowReport:
        return WorkflowReport(queued=tuple(self.queued), errors=tuple(self.errors), **self.counts)

    # ------------------------------------------------------------------------------ inputs

    def open_rows(self) -> list[HandledMessage]:
        """Client mail waiting for an answer (within TRACK_FOR; no backlog, no robots) and mail still
        labelled Overdue: all that the deadline steps look at."""
        from .deadlines import TRACK_FOR, needs_answer

        if self._open is None:
            rows = self.store.waiting_messages(self.name, since=self.now - TRACK_FOR)
            self._open = [r for r in rows if r.overdue_labelled or needs_answer(r)]
        return self._open

    def due(self) -> DueReport:
        """Overdue / due today / critical open among the unanswered rows: computed once per pass (the
        working-hours arithmetic is the costly part) and again only after answers or labels changed."""
        from .deadlines import classify_due

        if self._due is None:
            self._due = classify_due([r for r in self.open_rows() if r.answered_at is None], self.now,
                                     self.calendar, self.hours)
        return self._due

    def _forget_rows(self) -> None:
        self._open = None
        self._due = None

    # ------------------------------------------------------------------------------ 0. nothing to do?

    def idle_key(self) -> str:
        """What a run's outcome depends on besides the rows, the meta and the clock (holidays come from
        the `holidays` package, not from here: a new release of it takes a change in any of these)."""
        cal, config = self.calendar, self.config
        return repr((IDLE_VERSION, self.name, cal.tz.key, sorted(cal.hours.items()), cal.absences, config.calendar,
                     config.replies, config.labels, config.folders, self.account))

    def idle(self) -> bool:
        """True when the last full run's findings still hold (see the module docstring): nothing to do
        but, when due, the one STATUS that tells whether Sent got something new."""
        state = _json(self.store.get_meta(self.name, META_IDLE))
        if state.get("key") != self.idle_key() or state.get("mark") != list(self.store.change_mark(self.name)):
            return False
        after, until = from_iso(state.get("after")), from_iso(state.get("until"))
        if after is None or self.now < after or (until is not None and self.now >= until):
            return False
        if state.get("watch_sent") and self._sent_scan_due():
            if not self._sent_unchanged():
                return False
            self.store.set_meta(self.name, META_SENT_AT, iso(self.now))
        return True

    def _sent_scan_due(self) -> bool:
        last = from_iso(self.store.get_meta(self.name, META_SENT_AT))
        return last is None or not last <= self.now < last + SENT_SCAN_EVERY

    def _sent_unchanged(self) -> bool:
        """Has the Sent folder read last time nothing after what was read? One STATUS (no LIST: the
        folder is the one read last time; a full run looks it up again before anything hangs on it)."""
        state = _json(self.store.get_meta(self.name, META_SENT))
        folder = state.get("folder")
        if not folder or folder != (self.config.folders.sent or folder):
            return False
        try:
            status = self.session.status(folder)
        except MailsortError:  # gone or renamed: the full run finds out and says so
            return False
        self._sent_status = (folder, status)  # for the full run that follows when Sent has news
        return status.uidvalidity == state.get("uidvalidity") and status.uidnext - 1 == state.get("last_uid")

    def remember(self) -> None:
        """After a run without errors: remember what it found, for `idle`. Written after everything else
        the run did: a run that stops before this leaves the older state, which no longer holds (the run
        changed a row, or it ran because that state's time was up or Sent had news, which it still has)."""
        from .absences import next_thank_you
        from .deadlines import needs_answer, next_digest, next_overdue_change

        rows = self.open_rows()
        moments = [next_overdue_change(rows, self.now, self.calendar, self.hours)]
        if self.config.replies.digest and self.config.replies.mode != "off" and self.owner:
            moments.append(next_digest(self.now, self.calendar))
        checked = from_iso(self.store.get_meta(self.name, META_ABSENCES)) or self.now
        moments.append(next_thank_you(self.calendar.absences, self.calendar, max(checked, self.now)))
        until = min((m for m in moments if m is not None), default=None)
        waiting = any(r.answered_at is None and r.message_id and needs_answer(r) for r in rows)
        self.store.set_meta(self.name, META_IDLE, json.dumps({
            "key": self.idle_key(), "mark": list(self.store.change_mark(self.name)), "after": iso(self.now),
            "until": iso(until) if until is not None else None,
            "watch_sent": bool(waiting or any(r.overdue_labelled for r in rows))}))

    @property
    def templates(self) -> Templates:
        if self._templates is None:
            from .replies import Templates  # jinja2 is loaded only when a reply is written

            self._templates = Templates.load(self.config.replies.templates_dir)
        return self._templates

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            from .policy import Settings

            self._settings = Settings.from_config(self.config, self.account, self.templates)
        return self._settings

    @property
    def owner(self) -> str:
        if self.account.addresses:
            return self.account.addresses[0]
        username = self.account.imap.username or ""
        return username.lower() if "@" in username else ""

    # ------------------------------------------------------------------------------ 1. answered

    def answered(self) -> None:
        from .deadlines import TRACK_FOR, first_answers, needs_answer, newly_overdue

        rows = self.open_rows()
        waiting = [r for r in rows if r.answered_at is None and r.message_id and needs_answer(r)]
        labelled = [r for r in rows if r.overdue_labelled]
        if not waiting and not labelled:
            return
        last = from_iso(self.store.get_meta(self.name, META_SENT_AT))
        urgent = bool(newly_overdue(self.due())) or self._digest_due()
        if not urgent and last is not None and last <= self.now < last + SENT_SCAN_EVERY:
            return
        since = min(r.arrived_at or r.handled_at for r in waiting or labelled) - FIRST_SCAN_MARGIN
        headers, read_to = self._new_sent_headers(since)
        self.counts["scanned"] += len(headers)
        answers = first_answers(headers)
        known = self.store.unanswered_ids(self.name, answers, self.now - TRACK_FOR) if answers else set()
        changed = self.store.set_answered_many(self.name, [(mid, when) for mid, when in answers.items()
                                                            if mid in known]) if known else 0
        # how far Sent was read, once what it said is recorded (a crash before this reads it again)
        if read_to is not None:
            self.store.set_meta(self.name, META_SENT, json.dumps(read_to))
        self.store.set_meta(self.name, META_SENT_AT, iso(self.now))
        if changed:
            self.counts["answered"] += changed
            self._forget_rows()
            log.info("%s: %d message(s) answered (found in Sent)", self.name, changed)

    def _new_sent_headers(self, since: datetime) -> tuple[list[tuple[str | None, str | None, datetime | None, str | None]],
                                                          dict[str, Any] | None]:
        """(In-Reply-To, References, Date, Auto-Submitted) of the Sent mail not read before, and how far
        that reads (the META_SENT to store once the answers are recorded). The first time (or after
        UIDVALIDITY changed) only mail since `since` is read."""
        folder = self.session.special_folder("\\Sent", self.config.folders.sent, "Sent")
        if folder not in self.session.folders():
            return [], None
        known, status = self._sent_status or (None, None)
        if known != folder or status is None:
            status = self.session.status(folder)
        until = status.uidnext - 1
        state = _json(self.store.get_meta(self.name, META_SENT))
        headers: list[bytes] = []
        if state.get("folder") == folder and state.get("uidvalidity") == status.uidvalidity:
            after = int(state.get("last_uid", 0))
            for start in range(after + 1, until + 1, FETCH_BATCH):
                headers += self._sent_fields(folder, f"{start}:{min(start + FETCH_BATCH - 1, until)}")
        elif until > 0:
            uids = [u for u in self.session.search(folder, f"UID 1:{until} SINCE {imap_date(since)}") if u <= until]
            for start in range(0, len(uids), FETCH_BATCH):
                for uid_set in uid_set_chunks(uids[start:start + FETCH_BATCH]):
                    headers += self._sent_fields(folder, uid_set)
        read_to = {"folder": folder, "uidvalidity": status.uidvalidity, "last_uid": until}
        return [_answer_fields(raw, self.now) for raw in headers], read_to

    def _sent_fields(self, folder: str, uid_set: str) -> list[bytes]:
        return [raw for _, raw in self.session.header_fields(folder, uid_set, SENT_FIELDS)]

    # ------------------------------------------------------------------------------ 2. overdue

    def overdue(self) -> None:
        from .deadlines import newly_overdue, overdue_to_clear

        rows = self.open_rows()
        label = self.config.labels.overdue
        clear = overdue_to_clear(rows, self.now)
        if clear:
            self._unlabel([r for r in clear if r.message_id], label)
            self.store.clear_overdue_labelled(self.name, [r.message_id for r in clear])
            self.counts["overdue_cleared"] += len(clear)
            log.info("%s: Overdue label taken off %d answered message(s)", self.name, len(clear))
        fresh = [m for m in newly_overdue(self.due()) if m.message_id]
        if fresh:
            self._label(fresh, label)
            self.store.set_overdue_labelled(self.name, [m.message_id for m in fresh])
            self.counts["overdue_labelled"] += len(fresh)
            log.info("%s: %d message(s) labelled %s", self.name, len(fresh), label)
        if clear or fresh:
            self._forget_rows()

    def _label(self, rows: Sequence[HandledMessage], label: str) -> None:
        mode = self.session.label_mode
        if mode == "folder":  # COPY is not idempotent: leave out what a crashed pass copied already
            copied = self.session.message_ids_in(label, [r.message_id for r in rows])
            rows = [r for r in rows if r.message_id not in copied]
        for folder, uids in self._locate(rows).items():
            if mode == "keyword":
                self.session.add_keywords(folder, uids, (keyword_for(label),))
            elif mode == "gmail":
                self.session.gmail_label(folder, uids, label)
            else:
                self.session.copy_to_label_folder(folder, uids, label)

    def _unlabel(self, rows: Sequence[HandledMessage], label: str) -> None:
        mode = self.session.label_mode
        if mode == "folder":  # the copies are in the label folder (if any), under UIDs of their own
            self.session.delete(label, self.session.find_message_ids(label, [r.message_id for r in rows]))
            return
        for folder, uids in self._locate(rows).items():
            if mode == "keyword":
                self.session.set_flag(folder, uids, keyword_for(label), value=False)
            else:
                self.session.gmail_label(folder, uids, label, value=False)

    def _locate(self, rows: Sequence[HandledMessage]) -> dict[str, list[int]]:
        """{folder: UIDs} of these journaled messages as they are now. By the journaled UID when the
        folder still has the journaled UIDVALIDITY and the message was not moved (or its move is not
        applied yet): a UID that is gone stays gone and labels nothing. The rest is searched for by
        Message-ID, in the move's target (then INBOX, where *later* mail returns) or, after a UIDVALIDITY
        change, in its own folder; among mail that arrived since shortly before it (a Message-ID SEARCH
        makes the server read the header of every message it looks at)."""
        found: dict[str, set[int]] = defaultdict(set)
        lost: list[tuple[HandledMessage, str | None]] = []  # (row, where the pass moved it)
        by_place: dict[tuple[str, int], list[tuple[HandledMessage, str | None]]] = defaultdict(list)
        for row in rows:
            target = _moved_to(row)
            if target is not None and row.applied:
                lost.append((row, target))
            else:
                by_place[(row.folder, row.uidvalidity)].append((row, target))
        for (folder, uidvalidity), group in by_place.items():
            if self.session.uidvalidity(folder) == uidvalidity:
                found[folder].update(row.uid for row, _ in group)
                lost.extend((row, target) for row, target in group if target is not None)  # move not applied yet
            else:
                lost.extend((row, target) for row, target in group if row.message_id)
        # folders to search, in order: where the pass moved it; mail moved to *later* may be back in INBOX
        searches: dict[tuple[str, ...], list[HandledMessage]] = defaultdict(list)
        later = self.config.folders.later
        for row, target in lost:
            if row.message_id:
                order = (row.folder,) if target is None else (target, "INBOX") if target == later else (target,)
                searches[tuple(dict.fromkeys(order))].append(row)
        for order, group in searches.items():  # (a folder that is gone finds nothing)
            todo = {row.message_id: row for row in group}
            for n, folder in enumerate(order):
                if not todo:
                    break
                since = _search_since(todo.values())
                if n + 1 == len(order):
                    found[folder].update(self.session.find_message_ids(folder, list(todo), since))
                    break
                for message_id, uids in self.session.message_ids_in(folder, list(todo), since).items():
                    found[folder].update(uids)
                    todo.pop(message_id, None)
        return {folder: sorted(uids) for folder, uids in found.items() if uids}

    # ------------------------------------------------------------------------------ 3. digest

    def _digest_due(self) -> bool:
        from .deadlines import digest_due

        if not self.config.replies.digest or self.config.replies.mode == "off" or not self.owner:
            return False
        return digest_due(from_iso(self.store.get_meta(self.name, META_DIGEST)), self.now, self.calendar)

    def digest(self) -> None:
        from .deadlines import digest_text

        if not self._digest_due():
            return
        opening = self.calendar.last_opening(self.now) or self.now
        report = self.due()
        if not report.empty:
            subject, body = digest_text(report, self.now, self.calendar.tz)
            self._to_owner("digest", f"{self.name}\x1fdigest\x1f{iso(opening)}", subject, body, self.now)
        self.store.set_meta(self.name, META_DIGEST, iso(self.now))

    # ------------------------------------------------------------------------------ 4. absences

    def absences(self) -> None:
        from .absences import just_ended

        last = from_iso(self.store.get_meta(self.name, META_ABSENCES)) or self.now - ABSENCE_LOOKBACK
        for absence in self.calendar.absences:
            if just_ended((absence,), self.now, self.calendar, last) is not None:
                self._after_absence(absence)
        if self.now > last:
            self.store.set_meta(self.name, META_ABSENCES, iso(self.now))

    def _after_absence(self, absence: Absence) -> None:
        from .absences import absence_digest_text, thank_you_due, writers_during

        due = thank_you_due(absence, self.calendar) or self.now
        tz = self.calendar.tz
        start = datetime.combine(absence.start, time(0), tzinfo=tz)
        writers = writers_during(self.store.messages(self.name, since=start), absence, tz)
        mode = self.config.replies.mode
        if self.config.replies.thank_you and mode != "off":
            for writer in writers:
                if not writer.answered:  # someone the owner already answered needs no "I am back"
                    self._thank(writer.messages[0], writer.language, due)
        if mode != "off":
            subject, body = absence_digest_text(absence, writers, self.now, tz)
            key = f"{self.name}\x1fabsence\x1f{absence.start.isoformat()}:{absence.end.isoformat()}"
            self._to_owner("absence_digest", key, subject, body, due)

    def _thank(self, row: HandledMessage, language: str, send_at: datetime) -> None:
        """Queue the `back` reply to the first message a writer sent while the owner was away. The guard
        runs without `min_days_between`: the absence notice a few days ago is what this follows up."""
        from .autoreply import may_auto_reply
        from .policy import Action, choose_language, resolve_client
        from .replies import build_reply, dedupe_key

        message = _message_of(row, language)
        guard = may_auto_reply(message, self.settings.own_addresses, (), self.now, 0)
        if not guard.allowed:
            log.info("%s: no thank-you to %s: %s", self.name, row.sender, guard.reason)
            return
        client = resolve_client(message, self.settings.clients)
        action = Action("reply", template="back", language=choose_language(message, "back", client, self.settings),
                        to=guard.to, send_at=send_at)
        from_address = self.owner or "me@localhost.invalid"
        reply = build_reply(message, action, calendar=self.calendar, settings=self.settings, now=self.now,
                            from_address=from_address, templates=self.templates, account=self.name)
        self._queue(OutboxEntry(
            id=None, account=self.name, template="back", recipient=guard.to, message_id=str(reply["Message-ID"]),
            in_reply_to=row.message_id, dedupe_key=dedupe_key(self.name, message, "back"), raw=reply.as_bytes(),
            mode=self.config.replies.mode, send_at=send_at, created_at=self.now))

    # ------------------------------------------------------------------------------ queueing

    def _to_owner(self, template: str, key: str, subject: str, body: str, send_at: datetime) -> None:
        if not self.owner:
            return
        from .replies import owner_message

        mail = owner_message(subject, body, key=key, from_address=self.owner, to=self.owner, now=self.now,
                             tz=self.calendar.tz)
        self._queue(OutboxEntry(
            id=None, account=self.name, template=template, recipient=self.owner, message_id=str(mail["Message-ID"]),
            in_reply_to="", dedupe_key=key, raw=mail.as_bytes(), mode=self.config.replies.mode,
            send_at=send_at, created_at=self.now))

    def _queue(self, entry: OutboxEntry) -> None:
        if self.store.queue(entry) is not None:
            self.queued.append(entry.template)
            log.info("%s: queued %s for %s at %s", self.name, entry.template, entry.recipient, entry.send_at.isoformat())


# ---------------------------------------------------------------------------------- pure helpers


def _json(text: str | None) -> dict[str, Any]:
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _answer_fields(raw: bytes, now: datetime) -> tuple[str | None, str | None, datetime | None, str | None]:
    """(In-Reply-To, References, Date, Auto-Submitted) from a header block; a missing or unreadable
    Date counts as `now` (the answer is there, we only do not know since when)."""
    import email.utils
    from email.parser import BytesHeaderParser
    from email.policy import compat32

    headers = BytesHeaderParser(policy=compat32).parsebytes(raw)
    when: datetime | None = None
    text = headers.get("Date")
    if text:
        try:
            when = email.utils.parsedate_to_datetime(str(text))
        except (TypeError, ValueError, IndexError):
            when = None
        if when is not None and when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
    value = lambda name: " ".join(str(headers.get(name)).split()) if headers.get(name) is not None else None  # noqa: E731
    return value("In-Reply-To"), value("References"), when or now, value("Auto-Submitted")


def _moved_to(row: HandledMessage) -> str | None:
    """The folder the pass moved this message to (a `move` action to another folder), if any."""
    for action in row.decision.get("actions", ()):
        if action.get("type") == "move" and action.get("target") and action["target"] != row.folder:
            return str(action["target"])
    return None


def _message_of(row: HandledMessage, language: str) -> Message:
    """A Message for a stored row, enough to build and guard a reply to it (the reply goes where the
    automatic replies to it went: the `to` of its reply action, else the sender)."""
    from .message import Message

    to = next((a.get("to") for a in row.decision.get("actions", []) if a.get("type") == "reply" and a.get("to")), "")
    reply_to = (to,) if to and to != row.sender else ()
    return Message(message_id=row.message_id, subject=row.subject, sender=row.sender, sender_name=row.sender_name,
                   reply_to=reply_to, date=row.arrived_at, language=language or row.language)


def _search_since(rows: Iterable[HandledMessage]) -> datetime | None:
    """A safe lower bound of the INTERNALDATE of these journaled messages: `arrived_at` is the
    INTERNALDATE the pass fetched, which MOVE and COPY keep (a server that does not keep it gives the
    copy a later one); two days spare the server's time zone. None when one has no arrival time."""
    arrivals = [row.arrived_at for row in rows]
    if not arrivals or any(a is None for a in arrivals):
        return None
    return min(arrivals) - SEARCH_MARGIN  # type: ignore[type-var, operator]
