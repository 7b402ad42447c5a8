"""One sync pass: fetch what is new, decide, journal, apply in bulk, then send and return from *later*.

The shell that composes the pure core (message, classify, policy, replies) with the edges (imap, store,
smtp). Per account and watched folder:

    FolderState -> STATUS (nothing new? stop: no SELECT, no FETCH, no model loaded)
    -> UID SEARCH of new UIDs without the processed keyword -> UID FETCH in batches
    -> parse (process pool for big batches) -> classify the batch -> policy.decide
    -> journal (store.record_decisions: decisions + replies, applied = 0)
    -> apply in bulk (one UID STORE per label set and flag, one UID MOVE per target)
    -> store.mark_applied + the new FolderState, in one transaction.

Crash safety comes from that order. Decisions are journaled before the server changes; a pass starts
by re-applying whatever was journaled but not applied (STORE and MOVE are idempotent: a MOVE of UIDs
that are gone is a no-op). Messages that carry the processed keyword are never fetched again, and a
message whose Message-ID the store already handled is never decided again, which also covers a
changed UIDVALIDITY or a lost database.

Test hook: `MAILSORT_CRASH_AT=after-journal|after-store|after-move` makes the process die with
`os._exit(137)` at that point of the first batch (see `_crash_point`). The crash tests use it to prove
the claims above; it does nothing when the variable is unset.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Callable, Iterable, Mapping, Protocol, Sequence

from .calendar import NeverOpenError, WorkCalendar
from .config import AccountConfig, Config
from .errors import MailsortError, ServerError
from .imap import FetchedMessage, ImapSession, UidValidityChanged, keyword_for, open_session
from .message import Message, UnparseableMessage
from .store import FolderState, HandledMessage, OutboxEntry, Store, from_iso, iso
from .workflows import run_workflows

log = logging.getLogger(__name__)

BATCH = 500  # messages per UID FETCH, journal transaction and round of bulk STOREs/MOVEs
PARALLEL_MIN = 64  # batches smaller than this are parsed in-process (a pool costs more than it saves)
PARSE_WORKERS = 2
SET_ASIDE = "unparseable"  # label recorded for messages that cannot be parsed
CRASH_POINTS = ("after-journal", "after-store", "after-move")


class ClassifierLike(Protocol):
    def predict(self, pairs: Sequence[tuple[str, str]]) -> list[Any]: ...


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
            "reapplied": self.reapplied, "dry_run": self.dry_run,
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
    """(uid, actions as JSON) -> Plan. The processed keyword rides in the same STORE as the label keyword;
    every message gets it, also those set aside. Moves to the folder the message is in are dropped."""
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
        if marks:
            keywords[tuple(sorted(marks))].append(uid)
        for action in actions:
            if action.get("type") == "flag" and action.get("target"):
                flags[action["target"]].append(uid)
            elif action.get("type") == "move" and action.get("target") and action["target"] != source:
                moves[action["target"]].append(uid)
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
        logging.shutdown()
        os._exit(137)


# ------------------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class Unparsed:
    """A message mail-parser could not read: set aside with the reason, never fatal."""

    uid: int
    reason: str
    message_id: str = ""


def _parse_chunk(folder: str, items: Sequence[tuple[int, bytes]]) -> list[Message | Unparsed]:
    """Runs in a worker process (or in-process for small batches)."""
    from .message import parse

    out: list[Message | Unparsed] = []
    for uid, raw in items:
        try:
            out.append(parse(raw, uid=uid, folder=folder))
        except UnparseableMessage as exc:
            out.append(Unparsed(uid, str(exc), _quick_message_id(raw)))
        except Exception as exc:  # a parser bug on one message must not stop the sync
            out.append(Unparsed(uid, f"parser failed: {type(exc).__name__}: {exc}", _quick_message_id(raw)))
    return out


def _quick_message_id(raw: bytes) -> str:
    import re

    m = re.search(rb"^message-id:[ \t]*(<[^>\r\n]*>)", raw, re.I | re.M)
    return m.group(1).decode("utf-8", "replace") if m else ""


class _Parser:
    """Parses batches, in a small process pool when they are big. `submit` returns a callable that
    yields the results, so the next batch can be fetched while this one is parsed."""

    def __init__(self, workers: int = PARSE_WORKERS):
        self.workers = max(1, min(workers, os.cpu_count() or 1))
        self.pool: ProcessPoolExecutor | None = None

    def submit(self, folder: str, fetched: Sequence[FetchedMessage]) -> Callable[[], list[Message | Unparsed]]:
        items = [(m.uid, m.raw) for m in fetched]
        if self.workers < 2 or len(items) < PARALLEL_MIN:
            return lambda: _parse_chunk(folder, items)
        pool = self._pool()
        size = -(-len(items) // self.workers)
        futures: list[Future] = [pool.submit(_parse_chunk, folder, items[i:i + size])
                                 for i in range(0, len(items), size)]
        return lambda: [m for f in futures for m in f.result()]

    def _pool(self) -> ProcessPoolExecutor:
        if self.pool is None:
            import multiprocessing

            from .message import _identifier

            import mailparser  # noqa: F401  loaded once here, inherited by the forked workers
            _identifier()
            methods = multiprocessing.get_all_start_methods()
            context = multiprocessing.get_context("fork" if "fork" in methods else None)
            self.pool = ProcessPoolExecutor(self.workers, mp_context=context)
        return self.pool

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)
            self.pool = None


# ------------------------------------------------------------------------------------- one account


SessionFactory = Callable[..., ImapSession]


def sync_account(config: Config, account: AccountConfig, *, store: Store, classifier_factory: Callable[[], ClassifierLike],
                 now: datetime, dry_run: bool = False, progress: Progress | None = None, details: bool | None = None,
                 session_factory: SessionFactory = open_session, batch: int | None = None,
                 calendar: WorkCalendar | None = None, templates: Any = None) -> AccountReport:
    """One pass over one account. Never raises for server trouble: it ends up in `errors`."""
    tally = _Tally()
    keep_details = dry_run if details is None else details
    try:
        session = session_factory(account, label_mode=config.labels.mode, readonly=dry_run)
    except MailsortError as exc:
        tally.errors.append(str(exc))
        return tally.report(account.name, dry_run)
    run = _AccountPass(config, account, store, session, classifier_factory, now, dry_run, progress, keep_details,
                       batch or BATCH, calendar or WorkCalendar.from_config(config.calendar), templates, tally)
    try:
        run.run()
    finally:
        run.parser.close()
        session.close()
    return tally.report(account.name, dry_run)


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
        self._labels_by_id: dict[str, str] | None = None
        self.pass_replies: dict[str, list[tuple[str, datetime]]] = defaultdict(list)
        self.parser = _Parser()
        self.processed = config.labels.processed
        self.name = account.name

    # --------------------------------------------------------------------------- the pass

    def run(self) -> None:
        if not self.dry_run:
            self._guard("re-applying journaled decisions", self.reapply_pending)
        for folder in self.account.folders:
            self._guard(folder, lambda: self.sync_folder(folder))
        if not self.dry_run:
            self._guard("notifications", self.notify)
            self._guard("client workflows", lambda: run_workflows(  # answered, Overdue, digest, thank-yous
                self.config, self.account, store=self.store, session=self.session, calendar=self.calendar,
                now=self.now, templates=self._templates, settings=self._settings, counts=self.tally.counts))
            self._guard("sending replies", self.send_due)
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
        """Folder mode: COPY is not idempotent, so leave out messages whose label copy already exists."""
        kept = []
        for row in rows:
            labels = [a["target"] for a in row.decision.get("actions", []) if a.get("type") == "label"]
            if row.message_id and labels and all(self.session.find_message_id(l, row.message_id) for l in labels):
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
        try:
            uids = self.session.search_new(folder, after, until, skip_keyword=self.processed,
                                           uidvalidity=status.uidvalidity)
        except UidValidityChanged as exc:
            self.tally.errors.append(str(exc))
            return
        keywords_ok = self._keywords_ok(folder)
        total, done = len(uids), 0
        self._progress(folder, 0, total)
        pending: tuple[list[FetchedMessage], Callable[[], list]] | None = None
        for start in range(0, total, self.batch):
            chunk = uids[start:start + self.batch]
            fetched = self.session.fetch_uids(folder, chunk, uidvalidity=status.uidvalidity)
            self.tally.counts["fetched"] += len(fetched)
            job = (fetched, self.parser.submit(folder, fetched))
            if pending is not None:  # decide and apply the previous batch while this one is parsed
                done += self._finish_batch(folder, status.uidvalidity, *pending, last_uid=None,
                                           keywords_ok=keywords_ok, highestmodseq=status.highestmodseq)
                self._progress(folder, done, total)
            pending = job
        if pending is not None:
            done += self._finish_batch(folder, status.uidvalidity, *pending, last_uid=until, keywords_ok=keywords_ok,
                                       highestmodseq=status.highestmodseq)
            self._progress(folder, done, total)
        elif not self.dry_run:  # nothing to fetch (all new mail carried the processed keyword): move the mark
            self.store.save_folder_state(FolderState(self.name, folder, status.uidvalidity, until,
                                                     status.highestmodseq), self.now)

    def _progress(self, folder: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(self.name, folder, done, total)

    def _finish_batch(self, folder: str, uidvalidity: int, fetched: list[FetchedMessage],
                      parsed_later: Callable[[], list], *, last_uid: int | None, keywords_ok: bool,
                      highestmodseq: int | None) -> int:
        """Classify, decide, journal, apply and record one batch. Returns the number of messages."""
        by_uid = {m.uid: m for m in fetched}
        parsed = parsed_later()
        fresh: list[Message] = []
        known: list[tuple[int, str]] = []  # (uid, Message-ID) handled before: only marked again
        aside: list[Unparsed] = []
        for item in parsed:
            if isinstance(item, Unparsed):
                aside.append(item)
            elif item.message_id and item.message_id in self.handled_ids:
                known.append((item.uid or 0, item.message_id))
            else:
                fresh.append(item)
                if item.message_id:
                    self.handled_ids.add(item.message_id)  # a duplicate later in this pass is "known"

        rows: list[HandledMessage] = []
        replies: list[OutboxEntry] = []
        items: list[tuple[int, list[dict]]] = []
        verdicts = self.classifier.predict([(m.subject, m.text) for m in fresh]) if fresh else []
        for message, verdict in zip(fresh, verdicts):
            decision = self._decide(message, verdict)
            arrived = by_uid[message.uid].internaldate if message.uid in by_uid else None
            decision_json = decision.to_json()
            rows.append(self._row(folder, uidvalidity, message, decision, decision_json, arrived))
            replies.extend(self._replies_for(message, decision))
            items.append((message.uid, decision_json["actions"]))
            self.tally.counts["critical" if decision.label == "critical" else "routine"] += 1
            if self.keep_details:
                self.tally.details.append(MessageDetail(folder, message.uid, message.message_id, message.sender,
                                                        message.subject, decision.label, round(decision.p_critical, 4),
                                                        message.language, tuple(decision_json["actions"]),
                                                        decision.auto_reply_reason))
        for item in aside:
            rows.append(self._aside_row(folder, uidvalidity, item, by_uid.get(item.uid)))
            items.append((item.uid, []))
            self.tally.counts["skipped"] += 1
            if self.keep_details:
                self.tally.details.append(MessageDetail(folder, item.uid, item.message_id, "", "", SET_ASIDE, None,
                                                        "und", (), f"set aside: {item.reason}"))
        if known:
            labels = self._labels_for([mid for _, mid in known])
            for uid, mid in known:
                label = labels.get(mid)
                items.append((uid, [{"type": "label", "target": label}] if label and label != SET_ASIDE else []))
                self.tally.counts["skipped"] += 1
                if self.keep_details:
                    self.tally.details.append(MessageDetail(folder, uid, mid, "", "", label or "", None, "und", (),
                                                            "already handled (same Message-ID): only marked again"))

        plan = build_plan(items, mode=self.session.label_mode, processed=self.processed,
                          keywords_allowed=keywords_ok, source=folder)
        next_uid = last_uid if last_uid is not None else max(by_uid, default=0)
        if self.dry_run:
            self.tally.counts["labelled"] += plan.labelled
            self.tally.counts["moved"] += plan.moved
            self.tally.counts["queued"] += len(replies)
            return len(fetched)

        queued = self.store.record_decisions(rows, replies)  # the journal: before any change on the server
        self.tally.counts["queued"] += len(queued)
        _crash_point("after-journal")
        apply_plan(self.session, folder, plan, crash_hooks=True)
        self.tally.counts["labelled"] += plan.labelled
        self.tally.counts["moved"] += plan.moved
        state = FolderState(self.name, folder, uidvalidity, next_uid, highestmodseq) if next_uid else None
        self.store.mark_applied(self.name, [(folder, uidvalidity, r.uid) for r in rows], state, self.now)
        return len(fetched)

    def _labels_for(self, message_ids: list[str]) -> dict[str, str]:
        if self._labels_by_id is None:
            self._labels_by_id = {m.message_id: m.label for m in self.store.messages(self.name) if m.message_id}
        return {mid: self._labels_by_id[mid] for mid in message_ids if mid in self._labels_by_id}

    # --------------------------------------------------------------------------- deciding

    def _decide(self, message: Message, verdict: Any):
        from .policy import History, decide

        sender = message.sender
        history = History(
            replies=tuple(self.store.reply_history(self.name, sender)) + tuple(self.pass_replies.get(sender, ())),
            seen_before=bool(sender) and (sender in self.pass_replies or
                                          self.store.sender_seen_before(self.name, sender, self.now)),
        )
        decision = decide(message, verdict, self.calendar, history, self.now, self.settings)
        self.pass_replies.setdefault(sender, [])
        for action in decision.of_type("reply"):
            # later messages of this pass must see this reply (one reply per sender per min_days_between)
            self.pass_replies[action.to or sender].append((action.template, action.send_at or self.now))
        return decision

    def _replies_for(self, message: Message, decision: Any) -> list[OutboxEntry]:
        """Render the decision's reply actions into outbox rows (journaled with the decision)."""
        if not decision.of_type("reply") or self.config.replies.mode == "off":
            return []
        from .smtp import outbox_entries

        from_address = self.account.addresses[0] if self.account.addresses else (self.account.imap.username or "")
        return outbox_entries(self.name, message, decision, calendar=self.calendar, settings=self.settings,
                              now=self.now, from_address=from_address, templates=self.templates,
                              mode=self.config.replies.mode)

    def _row(self, folder: str, uidvalidity: int, message: Message, decision: Any, decision_json: dict,
             arrived: datetime | None) -> HandledMessage:
        arrived_at = arrived or message.date
        due_at = None
        if decision.label == "critical":
            try:
                due_at = self.calendar.add_open_time(arrived_at or self.now,
                                                     timedelta(hours=self.config.replies.reply_within_hours))
            except NeverOpenError:
                due_at = None
        return HandledMessage(
            account=self.name, folder=folder, uidvalidity=uidvalidity, uid=message.uid or 0,
            message_id=message.message_id, sender=message.sender, sender_name=message.sender_name,
            subject=message.subject, language=message.language, label=decision.label,
            p_critical=float(decision.p_critical), client=decision.client, arrived_at=arrived_at,
            handled_at=self.now, open_at_arrival=self.calendar.is_open(arrived_at) if arrived_at else decision.open_now,
            decision=decision_json, due_at=due_at,
        )

    def _aside_row(self, folder: str, uidvalidity: int, item: Unparsed, fetched: FetchedMessage | None) -> HandledMessage:
        return HandledMessage(
            account=self.name, folder=folder, uidvalidity=uidvalidity, uid=item.uid, message_id=item.message_id,
            sender="", sender_name="", subject="", language="und", label=SET_ASIDE, p_critical=0.0, client=None,
            arrived_at=fetched.internaldate if fetched else None, handled_at=self.now, open_at_arrival=False,
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

        mode = self.config.replies.mode
        if mode == "draft":
            folder = self.session.drafts_folder(self.config.folders.drafts)
        elif mode == "send" and self.session.label_mode != "gmail":
            folder = self.session.sent_folder(self.config.folders.sent)
        else:
            folder = None
        result = send_due(self.store, self.account, now=self.now, transport_factory=lambda: transport_for(self.account),
                          sent_folder=folder, mode=mode)
        self.tally.counts["sent"] += result.sent
        self.tally.errors.extend(f"sending replies: {e}" for e in result.errors)

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
        self.store.set_meta(self.name, "last_return_opening", iso(opening))
