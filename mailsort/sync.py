"""One sync pass: fetch what is new, decide, journal, apply in bulk, then send and return from *later*.

The shell that composes the pure core (message, classify, policy, replies) with the edges (imap, store,
smtp). Per account and watched folder:

    FolderState -> STATUS (nothing new? stop: no SELECT, no FETCH, no model loaded)
    -> UID SEARCH of new UIDs without the processed keyword -> UID FETCH in batches
    -> parse, classify the batch, policy.decide (compute.py; in two worker processes for big folders)
    -> journal (store.record_decisions: decisions + replies, applied = 0)
    -> apply in bulk, in few rounds (one UID STORE per set of keywords and flags, one UID MOVE per
       target; for big folders in the background over a second connection)
    -> store.mark_applied + the new FolderState, in one transaction.

Then, per account: notifications; the client workflows (workflows.py) and, when many replies are
due, meanwhile the outbox on connections of its own (see _Sender; it starts as soon as the last
folder's last batch is journaled); the replies still due (what the workflows queued); at an opening,
the return of the *later* folder to INBOX.

Crash safety comes from that order. Decisions are journaled before the server changes; a pass starts
by re-applying whatever was journaled but not applied (STORE and MOVE are idempotent: a MOVE of UIDs
that are gone is a no-op). Messages that carry the processed keyword are never fetched again, and a
message whose Message-ID the store already handled is never decided again, which also covers a
changed UIDVALIDITY or a lost database.

Test hook: `MAILSORT_CRASH_AT=after-journal|after-store|after-move|after-return` makes the process kill
itself with SIGKILL (no cleanup, no flush, no LOGOUT: a power cut) the first time it gets there: after a
batch is journaled, between the label/flag STOREs and the MOVEs, between the MOVEs and marking the
journal applied, and between moving the *later* folder back and recording that it was. The crash tests
(tests/test_sync_crash.py) use it to prove the claims above; it does nothing when the variable is unset.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import defaultdict, deque
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

from .calendar import WorkCalendar
from .compute import (ClassifierLike, Context, Outcome, PassHistory, SnapshotHistory, StoreHistory, Unparsed, Workers,
                      compute_batch, decide_one, worker_count)
from .config import AccountConfig, Config
from .errors import MailsortError
from .imap import FetchedMessage, ImapFolder, ImapSession, UidValidityChanged, keyword_for, open_session
from .message import Message, parse
from .store import FolderState, HandledMessage, OutboxEntry, Store, from_iso, iso, journal_params, label_targets
from .workflows import run_workflows

if TYPE_CHECKING:
    from .smtp import SendReport

log = logging.getLogger(__name__)

BATCH = 500  # messages per UID FETCH, journal transaction and round of bulk STOREs/MOVEs
PARALLEL_MIN = 1000  # new messages in a folder from which worker processes pay off (they load the model)
PARALLEL_BATCH = 250  # messages per batch with workers: smaller batches keep both workers busy
FETCH_AHEAD = 32  # batches fetched ahead while the workers start (bounds the memory it takes)
APPLY_GROUP = 2_500  # journaled messages applied on the server together, at least (fewer at a folder's end)
APPLY_ROUNDS = 4  # about this many rounds of bulk STOREs/MOVEs per folder (each MOVE costs the whole folder)
SEND_APART_MIN = 10  # replies due from which they are sent on connections of their own while the workflows run
META_LABEL_MODE = "label_mode"  # store meta: what labels.mode = "auto" came to on this account's server
SET_ASIDE = "unparseable"  # label recorded for messages that cannot be parsed
CRASH_POINTS = ("after-journal", "after-store", "after-move", "after-return")


Progress = Callable[[str, str, int, int], None]  # (account, folder, done, total)


# ------------------------------------------------------------------------------------- reports


@dataclass(frozen=True)
class MessageDetail:
    """What happened (or, in a dry run, would happen) to one message; for -v and --dry-run."""

    folder: str
    uid: int
    message_id: str
    sender: str
    subject: str
    label: str
    p_critical: float | None
    language: str
    actions: tuple[dict, ...] = ()
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"folder": self.folder, "uid": self.uid, "message_id": self.message_id, "sender": self.sender,
                "subject": self.subject, "label": self.label, "p_critical": self.p_critical,
                "language": self.language, "actions": list(self.actions), "note": self.note}


@dataclass(frozen=True)
class AccountReport:
    """The outcome of one pass over one account (the `sync --json` contract, plus a few extras)."""

    name: str
    fetched: int = 0
    critical: int = 0
    routine: int = 0
    moved: int = 0
    labelled: int = 0
    queued: int = 0
    sent: int = 0
    skipped: int = 0
    errors: tuple[str, ...] = ()
    returned: int = 0  # messages moved back from the later folder at an opening
    reapplied: int = 0  # journaled decisions applied after an earlier crash
    redecided: int = 0  # decisions a worker made with a history that changed since (made again here)
    dry_run: bool = False
    details: tuple[MessageDetail, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_json(self, details: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name, "fetched": self.fetched, "critical": self.critical, "routine": self.routine,
            "moved": self.moved, "labelled": self.labelled, "queued": self.queued, "sent": self.sent,
            "skipped": self.skipped, "errors": list(self.errors), "returned": self.returned,
            "reapplied": self.reapplied, "redecided": self.redecided, "dry_run": self.dry_run,
        }
        if details:
            data["messages"] = [d.to_json() for d in self.details]
        return data

    def summary(self) -> str:
        verb = "would " if self.dry_run else ""
        text = (f"{self.name}: {self.fetched} fetched, {self.critical} critical, {self.routine} routine, "
                f"{verb}label {self.labelled}, {verb}move {self.moved}, {verb}queue {self.queued} repl"
                f"{'y' if self.queued == 1 else 'ies'}, {self.sent} sent, {self.skipped} skipped")
        if self.returned:
            text += f", {verb}return {self.returned} from later"
        if self.errors:
            text += f"; FAILED: {'; '.join(self.errors)}"
        return text


@dataclass
class _Tally:
    """Mutable counters while a pass runs; frozen into an AccountReport at the end."""

    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    errors: list[str] = field(default_factory=list)
    details: list[MessageDetail] = field(default_factory=list)

    def report(self, name: str, dry_run: bool) -> AccountReport:
        return AccountReport(name=name, errors=tuple(self.errors), details=tuple(self.details), dry_run=dry_run,
                             **{k: v for k, v in self.counts.items()})


# ------------------------------------------------------------------------------------- apply plans (pure)


@dataclass(frozen=True)
class Plan:
    """Bulk server operations for a set of decided messages: UID lists per keyword set, Gmail label,
    label folder, flag and move target. Applied in that order; moves last, since they take the UIDs away."""

    keywords: Mapping[tuple[str, ...], tuple[int, ...]] = field(default_factory=dict)
    gmail_labels: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    label_folders: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    flags: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    moves: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    labelled: int = 0

    @property
    def moved(self) -> int:
        return sum(len(u) for u in self.moves.values())


def build_plan(items: Iterable[tuple[int, Sequence[Mapping[str, Any]]]], *, mode: str, processed: str,
               keywords_allowed: bool = True, source: str = "") -> Plan:
    """(uid, actions as JSON) -> Plan. The processed keyword, the label keywords and flags such as
    \\Flagged go in one UID STORE per distinct set: every message changes once (on a maildir server each
    flag change renames a file). Every message gets the processed keyword, also those set aside.
    Moves to the folder the message is in are dropped."""
    keywords: dict[tuple[str, ...], list[int]] = defaultdict(list)
    gmail: dict[str, list[int]] = defaultdict(list)
    folders: dict[str, list[int]] = defaultdict(list)
    flags: dict[str, list[int]] = defaultdict(list)
    moves: dict[str, list[int]] = defaultdict(list)
    labelled = 0
    for uid, actions in items:
        marks = {processed} if keywords_allowed else set()
        labels = [a["target"] for a in actions if a.get("type") == "label" and a.get("target")]
        if labels:
            labelled += 1
        for label in labels:
            if mode == "keyword":
                marks.add(keyword_for(label))
            elif mode == "gmail":
                gmail[label].append(uid)
            else:
                folders[label].append(uid)
        for action in actions:
            if action.get("type") == "flag" and action.get("target"):
                marks.add(action["target"])  # \Flagged rides in the same STORE: one flag change per message
            elif action.get("type") == "move" and action.get("target") and action["target"] != source:
                moves[action["target"]].append(uid)
        if marks:
            keywords[tuple(sorted(marks))].append(uid)
    freeze = lambda d: {k: tuple(v) for k, v in d.items()}  # noqa: E731
    return Plan(freeze(keywords), freeze(gmail), freeze(folders), freeze(flags), freeze(moves), labelled)


def apply_plan(session: ImapSession, folder: str, plan: Plan, *, crash_hooks: bool = False) -> None:
    """Send the plan to the server: STOREs, then label copies, flags, and the MOVEs last."""
    for marks, uids in plan.keywords.items():
        session.add_keywords(folder, uids, marks)
    for label, uids in plan.gmail_labels.items():
        session.gmail_label(folder, uids, label)
    for label, uids in plan.label_folders.items():
        session.copy_to_label_folder(folder, uids, label)
    for flag, uids in plan.flags.items():
        session.set_flag(folder, uids, flag)
    if crash_hooks:
        _crash_point("after-store")
    for target, uids in plan.moves.items():
        session.move(folder, uids, target)
    if crash_hooks:
        _crash_point("after-move")


def _crash_point(name: str) -> None:
    """Test hook (see the module docstring): die here, like a power cut, when asked to."""
    if os.environ.get("MAILSORT_CRASH_AT") == name:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


# ------------------------------------------------------------------------------------- one account


SessionFactory = Callable[..., ImapSession]


def sync_account(config: Config, account: AccountConfig, *, store: Store, classifier_factory: Callable[[], ClassifierLike],
                 now: datetime, dry_run: bool = False, progress: Progress | None = None, details: bool | None = None,
                 session_factory: SessionFactory = open_session, batch: int | None = None,
                 calendar: WorkCalendar | None = None, templates: Any = None) -> AccountReport:
    """One pass over one account. Never raises for server trouble: it ends up in `errors`."""
    tally = _Tally()
    keep_details = dry_run if details is None else details
    label_mode = config.labels.mode
    if dry_run and label_mode == "auto":  # a read-only look tells nothing of keywords: as the last real pass found
        label_mode = store.get_meta(account.name, META_LABEL_MODE) or label_mode
    try:
        session = session_factory(account, label_mode=label_mode, readonly=dry_run)
    except MailsortError as exc:
        tally.errors.append(str(exc))
        return tally.report(account.name, dry_run)
    run = _AccountPass(config, account, store, session, classifier_factory, now, dry_run, progress, keep_details,
                       batch or BATCH, calendar or WorkCalendar.from_config(config.calendar), templates, tally)
    run.session_factory = session_factory
    try:
        run.run()
        if not dry_run and config.labels.mode == "auto":
            remember_label_mode(store, account.name, session.resolved_label_mode)
    finally:
        run.close_workers()
        session.close()
    return tally.report(account.name, dry_run)


def remember_label_mode(store: Store, account: str, mode: str | None) -> None:
    """What `auto` resolved to on a read-write connection (when a pass needed to know), for the dry runs
    and `check-config --connect`, whose read-only look at a folder shows no keyword permissions."""
    if mode is not None and store.get_meta(account, META_LABEL_MODE) != mode:
        store.set_meta(account, META_LABEL_MODE, mode)


def sync_all(config: Config, *, store: Store, classifier_factory: Callable[[], ClassifierLike], now: datetime,
             dry_run: bool = False, progress: Progress | None = None, accounts: Sequence[str] | None = None,
             details: bool | None = None, session_factory: SessionFactory = open_session) -> list[AccountReport]:
    """Every account (or those named), one after the other; one failing account never stops the others.
    The classifier is loaded at most once, and only if some account has something to classify."""
    chosen = [config.account(name) for name in accounts] if accounts else list(config.accounts)
    calendar = WorkCalendar.from_config(config.calendar)
    classifier = _Lazy(classifier_factory)
    reports = []
    for account in chosen:
        try:
            reports.append(sync_account(config, account, store=store, classifier_factory=classifier, now=now,
                                        dry_run=dry_run, progress=progress, details=details,
                                        session_factory=session_factory, calendar=calendar))
        except MailsortError as exc:  # config or model trouble inside one account: report, go on
            log.error("%s: %s", account.name, exc)
            reports.append(AccountReport(account.name, errors=(str(exc),), dry_run=dry_run))
    return reports


@dataclass
class _Batch:
    """One folder's run of batches: how far it got (for the progress bar), and what was journaled but
    not yet applied on the server."""

    folder: str
    uidvalidity: int
    highestmodseq: int | None
    keywords_ok: bool
    total: int
    done: int = 0
    items: list = field(default_factory=list)  # (uid, actions) journaled, not yet applied
    keys: list = field(default_factory=list)  # their journal keys
    last_uid: int = 0  # the highest UID journaled


@dataclass(frozen=True)
class _Round:
    """One round of bulk server changes: the plan, the journal rows it applies, the folder mark after it."""

    folder: str
    plan: Plan
    keys: list
    state: FolderState | None


class _Applier:
    """Applies rounds of journaled decisions in a thread, over its own IMAP connection, one round at a
    time: the server files a round (a few seconds for thousands of messages in a big folder) while the
    sync process goes on fetching, deciding and journaling. The sync process marks each round applied
    when it is done; a crash in between leaves it journaled, re-applied by the next pass."""

    def __init__(self, session: ImapSession):
        import threading

        self.session = session
        self._threading = threading
        self.thread: Any = None
        self.current: _Round | None = None
        self.error: BaseException | None = None

    @property
    def busy(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def start(self, applied: _Round) -> None:
        assert self.current is None
        self.current = applied

        def run() -> None:
            try:
                apply_plan(self.session, applied.folder, applied.plan, crash_hooks=True)
            except BaseException as exc:  # handed to the sync process, which raises it
                self.error = exc

        self.thread = self._threading.Thread(target=run, name="mailsort-apply", daemon=True)
        self.thread.start()

    def finished(self, wait: bool) -> _Round | None:
        """The round just done (waiting for it when `wait`), or None; raises what went wrong in it."""
        if self.current is None or (self.busy and not wait):
            return None
        self.thread.join()
        done, self.current, self.thread = self.current, None, None
        if self.error is not None:
            error, self.error = self.error, None
            raise error
        return done

    def close(self) -> None:
        if self.thread is not None:
            self.thread.join()
        self.session.close()


class _Sender:
    """smtp.send_due on connections of its own — to the state database, to SMTP, and to IMAP for
    filing — in a thread, so that the replies due go out while the workflows use the pass's IMAP
    connection (each waits on a different server). Same outbox, same steps: a crash at any point is
    recovered as in the sequential order. When it cannot log in, it leaves everything to the pass's
    own send_due after it, which also sends what the workflows queued meanwhile."""

    def __init__(self, run: _AccountPass, folder: ImapFolder | None):
        self.path, self.account, self.now = run.store.path, run.account, run.now
        self.mode, self.label_mode = run.config.replies.mode, run.config.labels.mode
        self.session_factory, self.folder = run.session_factory, folder
        self.report: SendReport | None = None
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="mailsort-send", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def join(self) -> SendReport | None:
        """What it did (None: it left everything to the pass); its exception, if it raised one."""
        self.thread.join()
        if self.failure is not None:
            raise self.failure
        return self.report

    def _run(self) -> None:
        from .smtp import send_due, transport_for

        try:
            session = None
            if self.folder is not None:
                try:
                    session = self.session_factory(self.account, label_mode=self.label_mode)
                except MailsortError as exc:
                    log.info("%s: a second connection for sending was refused (%s): sending afterwards",
                             self.account.name, exc)
                    return
            folder = replace(self.folder, session=session) if session is not None else None
            try:
                with Store(self.path) as store:
                    self.report = send_due(store, self.account, now=self.now,
                                           transport_factory=lambda: transport_for(self.account),
                                           sent_folder=folder, mode=self.mode)
            finally:
                if session is not None:
                    session.close()
        except BaseException as exc:  # noqa: BLE001 - raised again by join(), in the pass's thread
            self.failure = exc


class _Lazy:
    """Call the factory on first use only, then keep the result."""

    def __init__(self, factory: Callable[[], Any]):
        self.factory = factory
        self.value: Any = None

    def __call__(self) -> Any:
        if self.value is None:
            self.value = self.factory()
        return self.value


class _AccountPass:
    """The imperative part of one pass; everything it decides goes through the pure functions above."""

    def __init__(self, config: Config, account: AccountConfig, store: Store, session: ImapSession,
                 classifier_factory: Callable[[], ClassifierLike], now: datetime, dry_run: bool,
                 progress: Progress | None, details: bool, batch: int, calendar: WorkCalendar, templates: Any,
                 tally: _Tally):
        self.config, self.account, self.store, self.session = config, account, store, session
        self.classifier_factory = classifier_factory
        self.now, self.dry_run, self.progress, self.keep_details = now, dry_run, progress, details
        self.batch, self.calendar, self.tally = batch, calendar, tally
        self._templates = templates
        self._settings = None
        self._classifier: ClassifierLike | None = None
        self._handled_ids: set[str] | None = None
        self.passed = PassHistory()  # what this pass decided so far: senders met, replies planned, ids
        self.context = Context(lambda: self.classifier, lambda: self.settings, calendar, now,
                               StoreHistory(store, account.name, now, lambda: self.handled_ids),
                               timedelta(hours=config.replies.reply_within_hours), account.name, self._replies_for)
        self.workers: Workers | None = None
        self._told: list[int] = []  # per worker: how many of self.passed.events it was sent
        self._actions: dict[str, list] = {}  # Message-ID -> the actions decided for it in this pass
        self.session_factory: SessionFactory = open_session
        self._applier: _Applier | None = None
        self._sender: _Sender | None = None
        self.processed = config.labels.processed
        self.name = account.name

    # --------------------------------------------------------------------------- the pass

    def run(self) -> None:
        try:
            if not self.dry_run:
                self._guard("re-applying journaled decisions", self.reapply_pending)
            for folder in self.account.folders:
                self._guard(folder, lambda: self.sync_folder(folder))
            if not self.dry_run:
                self._guard("notifications", self.notify)
                self._start_sending()  # unless the last folder's last batch started it already
                self._guard("client workflows", lambda: run_workflows(  # answered, Overdue, digest, thank-yous
                    self.config, self.account, store=self.store, session=self.session, calendar=self.calendar,
                    now=self.now, templates=self._templates, settings=self._settings, counts=self.tally.counts))
        finally:
            self._join_sender()
        if not self.dry_run:
            self._guard("sending replies", self.send_due)  # what is left (all of it without a sender)
        applying = self._applier.current.folder if self._applier is not None and self._applier.current else ""
        self._guard(applying, self.finish_applying)
        self._guard("returning the later folder", self.return_from_later)

    def _guard(self, what: str, step: Callable[[], None]) -> None:
        try:
            step()
        except MailsortError as exc:
            log.error("%s: %s: %s", self.name, what, exc)
            self.tally.errors.append(f"{what}: {exc}")

    # --------------------------------------------------------------------------- lazily built inputs

    @property
    def settings(self):
        if self._settings is None:
            from .policy import Settings

            self._settings = Settings.from_config(self.config, self.account, self.templates)
        return self._settings

    @property
    def templates(self):
        if self._templates is None:
            from .replies import Templates

            self._templates = Templates.load(self.config.replies.templates_dir)
        return self._templates

    @property
    def classifier(self) -> ClassifierLike:
        if self._classifier is None:
            self._classifier = self.classifier_factory()
        return self._classifier

    @property
    def handled_ids(self) -> set[str]:
        if self._handled_ids is None:
            self._handled_ids = self.store.handled_message_ids(self.name)
        return self._handled_ids

    # --------------------------------------------------------------------------- crash recovery

    def reapply_pending(self) -> None:
        """Apply decisions a crashed pass journaled but did not apply. All of it is idempotent."""
        pending = self.store.pending(self.name)
        if not pending:
            return
        groups: dict[tuple[str, int], list[HandledMessage]] = defaultdict(list)
        for row in pending:
            groups[(row.folder, row.uidvalidity)].append(row)
        for (folder, uidvalidity), rows in groups.items():
            status = self.session.status(folder)
            if status.uidvalidity == uidvalidity:
                if self.session.label_mode == "folder":
                    rows = self._without_copies_made(rows)
                plan = build_plan(((r.uid, r.decision.get("actions", [])) for r in rows), mode=self.session.label_mode,
                                  processed=self.processed, keywords_allowed=self._keywords_ok(folder), source=folder)
                apply_plan(self.session, folder, plan)
                self.tally.counts["moved"] += plan.moved
                self.tally.counts["labelled"] += plan.labelled
            else:  # the folder was recreated: those UIDs mean nothing now; the Message-ID check takes over
                log.warning("%s: %s: UIDVALIDITY changed; %d journaled decisions cannot be re-applied by UID",
                            self.name, folder, len(rows))
            self.store.mark_applied(self.name, [(r.folder, r.uidvalidity, r.uid) for r in rows])
            self.tally.counts["reapplied"] += len(rows)

    def _without_copies_made(self, rows: list[HandledMessage]) -> list[HandledMessage]:
        """Folder mode: COPY is not idempotent, so leave out the label copies a crashed pass made already
        (found by Message-ID: a few OR-chained SEARCHes per label folder, not one per message)."""
        wanted: dict[str, list[str]] = defaultdict(list)  # label folder -> Message-IDs to look for
        for row in rows:
            for label in label_targets(row.decision):
                if row.message_id:
                    wanted[label].append(row.message_id)
        present = {label: set(self.session.message_ids_in(label, ids)) for label, ids in wanted.items()}
        kept = []
        for row in rows:
            labels = label_targets(row.decision)
            if row.message_id and labels and all(row.message_id in present[label] for label in labels):
                row = replace(row, decision={**row.decision, "actions": [
                    a for a in row.decision.get("actions", []) if a.get("type") != "label"]})
            kept.append(row)
        return kept

    def _keywords_ok(self, folder: str) -> bool:
        return self.session.label_mode != "folder" or self.session.keywords_allowed(folder)

    # --------------------------------------------------------------------------- one folder

    def sync_folder(self, folder: str) -> None:
        state = self.store.folder_state(self.name, folder)
        status = self.session.status(folder)
        if state is not None and state.uidvalidity == status.uidvalidity and status.uidnext - 1 <= state.last_uid:
            return  # nothing new: one STATUS was all it took
        after = state.last_uid if state is not None and state.uidvalidity == status.uidvalidity else 0
        if state is not None and state.uidvalidity != status.uidvalidity:
            log.warning("%s: %s: UIDVALIDITY changed (%d -> %d): looking at every message again; those already "
                        "handled are recognised by Message-ID", self.name, folder, state.uidvalidity, status.uidvalidity)
        until = status.uidnext - 1
        if self.workers is None and self._worth_workers(min(until - after, status.messages)):
            self._start_workers()  # now, not after the SEARCH: they get ready while it runs
        try:
            uids = self.session.search_new(folder, after, until, skip_keyword=self.processed,
                                           uidvalidity=status.uidvalidity)
        except UidValidityChanged as exc:
            self.tally.errors.append(str(exc))
            return
        if not uids:
            if not self.dry_run:  # nothing to fetch (all new mail carried the processed keyword): move the mark
                self.store.save_folder_state(FolderState(self.name, folder, status.uidvalidity, until,
                                                         status.highestmodseq), self.now)
            return
        batch = _Batch(folder, status.uidvalidity, status.highestmodseq, self._keywords_ok(folder), len(uids))
        self._progress(folder, 0, batch.total)
        if self.workers is not None or self._worth_workers(len(uids)):
            self._sync_with_workers(batch, uids, until)
            return
        for start in range(0, len(uids), self.batch):
            fetched = self.session.fetch_uids(folder, uids[start:start + self.batch], uidvalidity=status.uidvalidity)
            self.tally.counts["fetched"] += len(fetched)
            outcomes = compute_batch(self.context, folder, status.uidvalidity, fetched, self.passed, self.keep_details)
            last = start + self.batch >= len(uids)
            self._finish_batch(batch, {m.uid: m.internaldate for m in fetched}, outcomes,
                               last_uid=until if last else None)

    def _sync_with_workers(self, batch: "_Batch", uids: list[int], until: int) -> None:
        """The same pass over a big folder, with the CPU work in worker processes (see compute.py): this
        process fetches ahead, feeds each idle worker a batch, and finishes the batches in UID order —
        checking each decision against the pass history, journaling; a second IMAP connection applies
        the journaled rounds in the background meanwhile (see _Applier)."""
        workers = self._start_workers()
        if self._applier is None and not self.dry_run:
            self._applier = _Applier(self.session_factory(self.account, label_mode=self.config.labels.mode))
        size = max(1, min(self.batch, PARALLEL_BATCH))
        chunks = deque(uids[i:i + size] for i in range(0, len(uids), size))
        count = len(chunks)
        fetched: deque[tuple[int, list[FetchedMessage]]] = deque()  # fetched, not yet sent
        sent: dict[int, deque[int]] = defaultdict(deque)  # worker -> batch numbers it holds, in order
        held: dict[int, list[FetchedMessage]] = {}  # fetched, not yet finished (a decision made again needs it)
        results: dict[int, list[Outcome]] = {}
        next_fetch = next_finish = 0
        while next_finish < count:
            while fetched and (free := workers.free()):
                worker = free[0]
                number, items = fetched.popleft()
                events = self.passed.events[self._told[worker]:]
                self._told[worker] = len(self.passed.events)
                workers.send(worker, (batch.folder, batch.uidvalidity, items, events, self.keep_details))
                sent[worker].append(number)
            for worker, outcomes in workers.finished(0):
                results[sent[worker].popleft()] = outcomes
            if next_finish in results:
                items = held.pop(next_finish)
                times = {m.uid: m.internaldate for m in items}
                outcomes = self._settle(batch, items, results.pop(next_finish))
                last = next_finish == count - 1
                self._finish_batch(batch, times, outcomes, last_uid=until if last else None)
                next_finish += 1
            elif chunks and len(fetched) < FETCH_AHEAD:
                items = self.session.fetch_uids(batch.folder, chunks.popleft(), uidvalidity=batch.uidvalidity)
                self.tally.counts["fetched"] += len(items)
                held[next_fetch] = items
                fetched.append((next_fetch, items))
                next_fetch += 1
            else:
                workers.wait()

    @staticmethod
    def _worth_workers(new: int) -> bool:
        """Whether a folder with this many new messages (at most) is worth starting the workers for."""
        return new >= PARALLEL_MIN and worker_count() > 1

    def _start_workers(self) -> Workers:
        """The workers for this pass, started on first use. Their history of earlier passes is a snapshot
        read now (they have no database connection); this process switches to the same snapshot."""
        if self.workers is None:
            replies, senders, ids = self.store.history_snapshot(self.name, self.now)
            self.context = replace(self.context, history=SnapshotHistory(replies, frozenset(senders), frozenset(ids)))
            self._told = [0] * worker_count()
            context = self.context

            def setup() -> Callable[[Any], list[Outcome]]:
                from .language import _scorer

                # loaded once, here: the forked workers share it all
                context.settings()
                context.classifier().predict([("", "warm-up")])  # the model, and the tables it builds on first use
                _scorer()
                self.templates.preload()
                base = PassHistory()

                def work(message: tuple) -> list[Outcome]:
                    folder, uidvalidity, items, events, keep = message
                    base.apply(events)
                    return compute_batch(context, folder, uidvalidity, items, PassHistory(base), keep)
                return work

            self.workers = Workers(setup, worker_count())
        return self.workers

    def close_workers(self) -> None:
        if self.workers is not None:
            self.workers.close()
            self.workers = None
        if self._applier is not None:
            self._applier.close()
            self._applier = None

    def _settle(self, batch: "_Batch", fetched: Sequence[FetchedMessage], outcomes: list[Outcome]) -> list[Outcome]:
        """A worker's outcomes, checked in UID order against this pass's history: a decision made with a
        different history than the one now known is made again here (see compute.py), from the message
        as fetched (outcomes are kept small: they do not carry it)."""
        settled = []
        by_uid = {m.uid: m for m in fetched}
        for outcome in outcomes:
            if outcome.unparsed is not None:
                settled.append(outcome)
                continue
            mid = outcome.message_id
            if mid and (self.context.history.handled(mid) or self.passed.handled(mid)):
                settled.append(Outcome(outcome.uid, message_id=mid, sender=outcome.sender, message=outcome.message))
                continue
            if mid:
                self.passed.add_id(mid)
            if outcome.row is None or outcome.used != self.context.used(outcome.sender, self.passed):
                item = by_uid[outcome.uid]
                message = outcome.message or parse(item.raw, uid=item.uid, folder=batch.folder,
                                                   language=outcome.language or None)
                verdict = outcome.verdict
                if verdict is None:  # a worker never knows more ids than this process; be safe all the same
                    verdict = self.classifier.predict([(message.subject, message.text)])[0]
                outcome = decide_one(self.context, batch.folder, batch.uidvalidity, message, verdict, self.passed,
                                     item.internaldate, self.keep_details)
                self.tally.counts["redecided"] += 1
            else:
                self.passed.record(outcome.sender, outcome.planned)
            settled.append(outcome)
        return settled

    def _progress(self, folder: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(self.name, folder, done, total)

    def _finish_batch(self, batch: "_Batch", arrived: Mapping[int, datetime | None], outcomes: list[Outcome], *,
                      last_uid: int | None) -> None:
        """Journal, apply and record one decided batch (in UID order)."""
        folder, uidvalidity = batch.folder, batch.uidvalidity
        rows: list[tuple] = []  # journal rows (store.journal_params)
        keys: list[tuple[str, int, int]] = []
        replies: list[OutboxEntry] = []
        items: list[tuple[int, list[dict]]] = []
        known: list[tuple[int, str]] = []  # (uid, Message-ID) handled before: only marked again
        for outcome in outcomes:
            if outcome.unparsed is not None:
                item = outcome.unparsed
                rows.append(journal_params(self._aside_row(folder, uidvalidity, item, arrived.get(item.uid))))
                keys.append((folder, uidvalidity, item.uid))
                items.append((item.uid, []))
                self.tally.counts["skipped"] += 1
                if self.keep_details:
                    self.tally.details.append(MessageDetail(folder, item.uid, item.message_id, "", "", SET_ASIDE, None,
                                                            "und", (), f"set aside: {item.reason}"))
                continue
            if outcome.row is None:
                known.append((outcome.uid, outcome.message_id))
                continue
            actions = outcome.actions or []
            if outcome.message_id:  # another copy later in this pass gets the same labels
                self._actions.setdefault(outcome.message_id, actions)
            rows.append(outcome.row)
            keys.append((folder, uidvalidity, outcome.uid))
            replies.extend(outcome.replies)
            items.append((outcome.uid, actions))
            self.tally.counts["critical" if outcome.label == "critical" else "routine"] += 1
            message, decision = outcome.message, outcome.decision
            if self.keep_details and message is not None and decision is not None:
                self.tally.details.append(MessageDetail(folder, outcome.uid, message.message_id, message.sender,
                                                        message.subject, decision.label, round(decision.p_critical, 4),
                                                        message.language, tuple(actions),
                                                        decision.auto_reply_reason))
        if known:
            stored = self.store.labels_by_message_id(self.name, [mid for _, mid in known if mid not in self._actions])
            for uid, mid in known:
                labels = label_targets({"actions": self._actions[mid]}) if mid in self._actions else stored.get(mid, ())
                items.append((uid, [{"type": "label", "target": label} for label in labels]))
                self.tally.counts["skipped"] += 1
                if self.keep_details:
                    self.tally.details.append(MessageDetail(folder, uid, mid, "", "", ", ".join(labels), None, "und",
                                                            (), "already handled (same Message-ID): only marked again"))

        batch.done += len(outcomes)
        if self.dry_run:
            plan = build_plan(items, mode=self.session.label_mode, processed=self.processed,
                              keywords_allowed=batch.keywords_ok, source=folder)
            self.tally.counts["labelled"] += plan.labelled
            self.tally.counts["moved"] += plan.moved
            self.tally.counts["queued"] += len(replies)
            self._progress(folder, batch.done, batch.total)
            return

        queued = self.store.record_decisions(rows, replies)  # the journal: before any change on the server
        self.tally.counts["queued"] += len(queued)
        _crash_point("after-journal")
        if last_uid is not None and folder == self.account.folders[-1]:
            self._start_sending()  # every reply of the pass is queued: they go out while the last rounds apply
        batch.items.extend(items)
        batch.keys.extend(keys)
        batch.last_uid = last_uid if last_uid is not None else max(arrived, default=batch.last_uid)
        group = max(APPLY_GROUP, -(-batch.total // APPLY_ROUNDS))
        if self._applier is None:
            if last_uid is not None or len(batch.items) >= group:
                self._apply_journaled(batch)
        else:
            self._applied_rounds(wait=last_uid is not None)
            # towards the folder's end, a round starts as soon as as much is waiting as is left to decide:
            # the last round, which the pass waits for, is then about half as big
            due = len(batch.items) >= min(group, batch.total - batch.done)
            if last_uid is not None or (due and not self._applier.busy):
                # the last round also moves the folder mark to the end; the pass goes on with its next steps
                # while the server files it (see finish_applying)
                self._applier.start(self._round(batch))
        self._progress(folder, batch.done, batch.total)

    def _apply_journaled(self, batch: "_Batch") -> None:
        """Apply what was journaled since the last time, in bulk, then mark it applied and move the folder
        mark in the same transaction. Few big commands: on a maildir server each UID MOVE costs time in
        proportion to the whole folder, so moving 5,000 messages at once is several times faster than in
        forty steps — and the journal keeps it crash-safe however long the wait."""
        applied = self._round(batch)
        apply_plan(self.session, applied.folder, applied.plan, crash_hooks=True)
        self._mark(applied)

    def _round(self, batch: "_Batch") -> "_Round":
        """What was journaled since the last round, as one bulk plan; the batch starts a new round."""
        plan = build_plan(batch.items, mode=self.session.label_mode, processed=self.processed,
                          keywords_allowed=batch.keywords_ok, source=batch.folder)
        state = (FolderState(self.name, batch.folder, batch.uidvalidity, batch.last_uid, batch.highestmodseq)
                 if batch.last_uid else None)
        applied = _Round(batch.folder, plan, batch.keys, state)
        batch.items, batch.keys = [], []
        return applied

    def _mark(self, applied: "_Round") -> None:
        self.tally.counts["labelled"] += applied.plan.labelled
        self.tally.counts["moved"] += applied.plan.moved
        self.store.mark_applied(self.name, applied.keys, applied.state, self.now)

    def finish_applying(self) -> None:
        """Wait for the background applier's last round and mark it applied. It ran while the pass sent
        notifications, ran the workflows and sent replies (none of which depends on it being applied:
        they read the journal, and label by UID); it must be done before mail goes back from the
        later folder, which it may be filling."""
        if self._applier is not None and self._applier.current is not None:
            self._applied_rounds(wait=True)

    def _applied_rounds(self, wait: bool) -> None:
        """Mark the rounds the background applier finished (all of them, waiting, when `wait`)."""
        assert self._applier is not None
        while (done := self._applier.finished(wait)) is not None:
            self._mark(done)

    # --------------------------------------------------------------------------- deciding

    def _replies_for(self, message: Message, decision: Any) -> list[OutboxEntry]:
        """Render the decision's reply actions into outbox rows (journaled with the decision)."""
        if not decision.of_type("reply") or self.config.replies.mode == "off":
            return []
        from .smtp import outbox_entries

        from_address = self.account.addresses[0] if self.account.addresses else (self.account.imap.username or "")
        return outbox_entries(self.name, message, decision, calendar=self.calendar, settings=self.settings,
                              now=self.now, from_address=from_address, templates=self.templates,
                              mode=self.config.replies.mode)

    def _aside_row(self, folder: str, uidvalidity: int, item: Unparsed, arrived: datetime | None) -> HandledMessage:
        return HandledMessage(
            account=self.name, folder=folder, uidvalidity=uidvalidity, uid=item.uid, message_id=item.message_id,
            sender="", sender_name="", subject="", language="und", label=SET_ASIDE, p_critical=0.0, client=None,
            arrived_at=arrived, handled_at=self.now, open_at_arrival=False,
            decision={"set_aside": item.reason, "actions": []},
        )

    # --------------------------------------------------------------------------- after the folders

    def notify(self) -> None:
        """Tell the owner about critical mail that arrived while closed (policy helper's notify.py)."""
        try:
            from . import notify as notify_module
        except ImportError:
            return
        handler = getattr(notify_module, "notify_pending", None)
        if handler is not None:
            handler(self.config, self.account, store=self.store, now=self.now)

    def send_due(self) -> None:
        """Send the replies whose time has come (smtp.send_due), filing them in Sent (Drafts in draft
        mode; Gmail files sent mail itself). Nothing is opened when nothing is due."""
        if not self.store.due(self.name, self.now) and not self.store.outbox(self.name, ("sending",)):
            return
        from .smtp import send_due, transport_for

        self._count_sent(send_due(self.store, self.account, now=self.now,
                                  transport_factory=lambda: transport_for(self.account),
                                  sent_folder=self._filing_folder(), mode=self.config.replies.mode))

    def _filing_folder(self) -> ImapFolder | None:
        """Where sent replies are filed: Sent, Drafts in draft mode, nowhere on Gmail (it files them)."""
        mode = self.config.replies.mode
        if mode == "draft":
            return self.session.drafts_folder(self.config.folders.drafts)
        if mode == "send" and self.session.label_mode != "gmail":
            return self.session.sent_folder(self.config.folders.sent)
        return None

    def _count_sent(self, result: SendReport | None) -> None:
        if result is not None:
            self.tally.counts["sent"] += result.sent
            self.tally.errors.extend(f"sending replies: {e}" for e in result.errors)

    def _start_sending(self) -> None:
        """send_due in the background (see _Sender), once per pass, when enough replies are due to pay
        for a second login and the state database is a file another connection can open."""
        if (self._sender is not None or self.config.replies.mode not in ("send", "draft")
                or not isinstance(self.store.path, Path) or len(self.store.due(self.name, self.now)) < SEND_APART_MIN):
            return
        self._sender = _Sender(self, self._filing_folder())
        self._sender.start()

    def _join_sender(self) -> None:
        sender, self._sender = self._sender, None
        if sender is not None:
            self._guard("sending replies", lambda: self._count_sent(sender.join()))

    def return_from_later(self) -> None:
        """At the first sync of a working period, everything in the later folder goes back to INBOX.
        It carries the processed keyword, so it is not handled again."""
        if not self.calendar.is_open(self.now):
            return
        opening = self.calendar.last_opening(self.now)
        if opening is None:
            return
        done = from_iso(self.store.get_meta(self.name, "last_return_opening"))
        if done is not None and done >= opening:
            return
        later = self.config.folders.later
        if later in self.account.folders or later not in self.session.folders():
            uids: list[int] = []
        elif self.session.status(later).messages == 0:
            uids = []
        else:
            uids = self.session.all_uids(later)
        self.tally.counts["returned"] += len(uids)
        if self.dry_run:
            return
        if uids:
            self.session.move(later, uids, "INBOX")
            _crash_point("after-return")
        self.store.set_meta(self.name, "last_return_opening", iso(opening))
