"""The CPU side of a sync pass: parse, classify and decide a batch of fetched messages — in the sync
process for small batches, in two worker processes for big ones.

Why workers, and why this shape. A first sync costs about half a millisecond of CPU per message
(parsing, language, the model, the policy), and getting ready costs about half a second (numpy, the
model, the language model, the templates). So the first worker is forked as soon as a folder turns
out to hold a lot of new mail; it gets ready while the sync process fetches, then forks the second
worker, which shares what it loaded. The sync process itself keeps the I/O: IMAP, the journal, the
bulk STOREs. What a worker sends back is kept small (`Outcome`): the journal row, the actions, the
rendered replies — not the parsed message, which the sync process parses again in the rare case it
must decide a message again.

Deciding needs history, and history is sequential: a reply planned for one message counts for the
next message of the same sender, and a sender met earlier in the pass is no stranger. `PassHistory`
is that history. The sync process keeps the authoritative one and sends each worker what it learned
since that worker's last batch; a worker decides with that, plus what it sees earlier in its own
batch, and reports the history each decision was made with (`Outcome.used`). The sync process
checks every decision in UID order against the true history and decides again itself where they
differ (a sender met in a batch that was still in flight). So the decisions are exactly those of one
process deciding in UID order, by construction, whatever the workers' timing.
"""

from __future__ import annotations

import logging
import os
import re
import signal
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, Callable, Iterable, NamedTuple, Protocol, Sequence

from .calendar import NeverOpenError, WorkCalendar
from .errors import MailsortError
from .imap import FetchedMessage
from .message import Message, UnparseableMessage

if TYPE_CHECKING:  # multiprocessing is imported only when workers start: a sync with nothing new never needs it
    from multiprocessing.connection import Connection

log = logging.getLogger(__name__)


class ClassifierLike(Protocol):
    def predict(self, pairs: Sequence[tuple[str, str]]) -> list[Any]: ...


class WorkerError(MailsortError):
    """A worker process failed (the model could not be loaded, or it died)."""

    exit_code = 1


# ------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Unparsed:
    """A message no parser could read: set aside with the reason, never fatal."""

    uid: int
    reason: str
    message_id: str = ""


class Judged(NamedTuple):
    """The classifier's verdict as it travels back from a worker: a plain tuple, so that reading it
    needs no import of the classifier (nor numpy) in the sync process."""

    label: str
    p_critical: float


@dataclass(frozen=True)
class Outcome:
    """What the CPU side made of one fetched message, kept small: a worker sends thousands of them back
    through a pipe. `row` is None for a message that is set aside (`unparsed`) or whose Message-ID was
    handled before (the sync process sees to those). `message` and `decision` are kept only on request
    (the details of a dry run): everything the pass needs is in the other fields."""

    uid: int
    unparsed: Unparsed | None = None
    message_id: str = ""
    sender: str = ""
    verdict: "Judged | None" = None
    language: str = ""
    label: str = ""
    actions: list | None = None  # the decision's actions as JSON (what the server is asked to do)
    used: tuple | None = None  # (seen_before, planned replies): the pass history the decision saw
    row: tuple | None = None  # the journal row, ready for Store.record_decisions (store.journal_params)
    planned: tuple = ()  # (recipient, template, send_at) of each reply the decision plans
    replies: tuple = ()  # those replies rendered as outbox entries (smtp.OutboxEntry)
    message: Message | None = None
    decision: Any = None  # policy.Decision


def planned_replies(decision: Any, sender: str, now: datetime) -> tuple[tuple[str, str, datetime], ...]:
    """(recipient, template, send time) of the replies a decision plans: what the pass history keeps."""
    return tuple((action.to or sender, action.template, action.send_at or now)
                 for action in decision.actions if action.type == "reply")


def _outcome(**fields: Any) -> Outcome:
    """Outcome(**fields), every field given, without the frozen dataclass's __init__ (which sets each of the
    fourteen fields through object.__setattr__): decide_one makes one for every message. Same object."""
    outcome = object.__new__(Outcome)
    outcome.__dict__.update(fields)
    return outcome


# ------------------------------------------------------------------------------------- history


class PassHistory:
    """What a pass adds to the history as it decides in UID order: senders met (and reply recipients),
    replies planned per recipient, Message-IDs handled. `base` makes an overlay: a worker's view of
    one batch on top of what the sync process told it, thrown away after the batch."""

    def __init__(self, base: "PassHistory | None" = None):
        self.base = base
        self.keys: set[str] = set()
        self.replies: dict[str, list[tuple[str, datetime]]] = {}
        self.ids: set[str] = set()
        self.events: list[tuple] = []  # what happened, in order, for the workers' copies

    def met(self, key: str) -> bool:
        return key in self.keys or (self.base is not None and self.base.met(key))

    def planned(self, key: str) -> tuple[tuple[str, datetime], ...]:
        own = tuple(self.replies.get(key, ()))
        return (self.base.planned(key) + own) if self.base is not None else own

    def handled(self, message_id: str) -> bool:
        return message_id in self.ids or (self.base is not None and self.base.handled(message_id))

    def add_id(self, message_id: str) -> None:
        self.ids.add(message_id)
        self.events.append(("id", message_id))

    def record(self, sender: str, planned: Sequence[tuple[str, str, datetime]]) -> None:
        """After deciding a message from `sender`: the sender is met, and its replies (planned_replies)
        are planned — later messages of this pass must see them: one reply per sender per min_days_between."""
        self.keys.add(sender)
        self.events.append(("met", sender))
        for key, template, send_at in planned:
            self.keys.add(key)
            self.replies.setdefault(key, []).append((template, send_at))
            self.events.append(("reply", key, template, send_at))

    def apply(self, events: Iterable[tuple]) -> None:
        """Bring a worker's copy up to date with the sync process's events."""
        for event in events:
            if event[0] == "id":
                self.ids.add(event[1])
            elif event[0] == "met":
                self.keys.add(event[1])
            else:
                self.keys.add(event[1])
                self.replies.setdefault(event[1], []).append((event[2], event[3]))


class HistorySource(Protocol):
    """The history the store holds from earlier passes: replies per recipient, senders seen before."""

    def replies(self, address: str) -> tuple[tuple[str, datetime], ...]: ...

    def seen(self, sender: str) -> bool: ...

    def handled(self, message_id: str) -> bool: ...


class StoreHistory:
    """Asks the store, once per address (small passes: a query costs less than a snapshot)."""

    def __init__(self, store: Any, account: str, now: datetime, handled_ids: Callable[[], set[str]]):
        self.store, self.account, self.now = store, account, now
        self._handled_ids = handled_ids
        self._replies: dict[str, tuple] = {}
        self._seen: dict[str, bool] = {}

    def replies(self, address: str) -> tuple[tuple[str, datetime], ...]:
        if address not in self._replies:
            self._replies[address] = tuple(self.store.reply_history(self.account, address))
        return self._replies[address]

    def seen(self, sender: str) -> bool:
        if sender not in self._seen:
            self._seen[sender] = self.store.sender_seen_before(self.account, sender, self.now)
        return self._seen[sender]

    def handled(self, message_id: str) -> bool:
        return message_id in self._handled_ids()


@dataclass(frozen=True)
class SnapshotHistory:
    """The same history read in three queries at the start of a big pass, so worker processes can use
    it without a database connection (see Store.history_snapshot)."""

    reply_history: dict[str, tuple[tuple[str, datetime], ...]]
    senders: frozenset[str]
    message_ids: frozenset[str]

    def replies(self, address: str) -> tuple[tuple[str, datetime], ...]:
        return self.reply_history.get(address.lower(), ())

    def seen(self, sender: str) -> bool:
        return sender in self.senders

    def handled(self, message_id: str) -> bool:
        return message_id in self.message_ids


# ------------------------------------------------------------------------------------- one batch


@dataclass
class Context:
    """Everything a batch needs, built in the sync process (or, for the costly parts, in the first
    worker: `classifier` and `settings` are callables, called at most once per process). `render` turns
    a decision's replies into outbox entries (done where the decision is made: a worker renders them
    while the sync process does the I/O)."""

    classifier: Callable[[], ClassifierLike]
    settings: Callable[[], Any]
    calendar: WorkCalendar
    now: datetime
    history: HistorySource
    reply_within: timedelta
    account: str
    render: Callable[[Message, Any], Sequence[Any]] = lambda message, decision: ()

    @cached_property
    def _late(self) -> tuple[Any, Any, Any, tuple[Any, Any]]:
        """policy.History, policy.decide and store.journal_values, imported on first use (a sync with nothing
        new needs none of them) and kept: an import statement costs a microsecond or two on every call. And
        the History of a sender never answered, unseen and seen (most senders: shared, it is immutable)."""
        from .policy import History, decide
        from .store import journal_values

        return History, decide, journal_values, (History((), False), History((), True))

    def decide(self, message: Message, verdict: Any, passed: PassHistory) -> tuple[Any, tuple]:
        """policy.decide with the sender's whole history: the store's, and what this pass planned."""
        History, decide, _, unanswered = self._late
        sender = message.sender
        planned = passed.planned(sender)
        seen = bool(sender) and (passed.met(sender) or self.history.seen(sender))
        replies = self.history.replies(sender) + planned
        history = History(replies=replies, seen_before=seen) if replies else unanswered[seen]
        decision = decide(message, verdict, self.calendar, history, self.now, self.settings())
        return decision, (seen, planned)

    def used(self, sender: str, passed: PassHistory) -> tuple:
        """The pass history a decision for `sender` must see now (compare with Outcome.used)."""
        return bool(sender) and (passed.met(sender) or self.history.seen(sender)), passed.planned(sender)

    def row(self, folder: str, uidvalidity: int, message: Message, decision: Any, decision_json: dict,
            arrived: datetime | None) -> tuple:
        """The journal row of a decided message: what was decided, and when it arrived — was the calendar
        open then, and (critical mail) when is the answer due?"""
        arrived_at = arrived or message.date
        due_at = None
        if decision.label == "critical":
            try:
                due_at = self.calendar.add_open_time(arrived_at or self.now, self.reply_within)
            except NeverOpenError:
                due_at = None
        journal_values = self._late[2]  # store.journal_params of a HandledMessage, without building the record
        return journal_values(
            self.account, folder, uidvalidity, message.uid or 0, message.message_id, message.sender,
            message.sender_name, message.subject, message.language, decision.label, float(decision.p_critical),
            decision.client, arrived_at, self.now,
            self.calendar.is_open(arrived_at) if arrived_at else decision.open_now, decision_json, False, due_at)


def parse_fetched(fetched: Sequence[FetchedMessage], folder: str) -> list[Message | Unparsed]:
    """Parse each message; one that no parser can read is set aside with the reason, never fatal."""
    from .message import parse_many

    parsed = parse_many([(item.uid, item.raw) for item in fetched], folder)
    return [Unparsed(item.uid, str(p), quick_message_id(item.raw)) if isinstance(p, UnparseableMessage) else p
            for item, p in zip(fetched, parsed)]


_MESSAGE_ID = re.compile(rb"^message-id:[ \t]*(<[^>\r\n]*>)", re.I | re.M)


def quick_message_id(raw: bytes) -> str:
    m = _MESSAGE_ID.search(raw)
    return m.group(1).decode("utf-8", "replace") if m else ""


def compute_batch(context: Context, folder: str, uidvalidity: int, fetched: Sequence[FetchedMessage],
                  passed: PassHistory, keep: bool = False) -> list[Outcome]:
    """Parse, classify (one call for the batch) and decide, in UID order, updating `passed` as it goes.
    A message whose Message-ID was handled before (by an earlier pass, or earlier in this one) is not
    decided again. `keep`: the outcomes also carry the Message and the Decision."""
    arrived = {m.uid: m.internaldate for m in fetched}
    parsed = parse_fetched(fetched, folder)
    fresh: list[Message] = []
    for item in parsed:
        if isinstance(item, Message) and not (item.message_id and (context.history.handled(item.message_id)
                                                                   or passed.handled(item.message_id))):
            fresh.append(item)
            if item.message_id:
                passed.add_id(item.message_id)  # a duplicate later in this pass is "known"
    verdicts = ([Judged(v.label, v.p_critical) for v in context.classifier().predict([(m.subject, m.text) for m in fresh])]
                if fresh else [])
    decided = {message.uid or 0: decide_one(context, folder, uidvalidity, message, verdict, passed,
                                            arrived.get(message.uid or 0), keep)
               for message, verdict in zip(fresh, verdicts)}
    out = []
    for item in parsed:
        if isinstance(item, Unparsed):
            out.append(Outcome(item.uid, unparsed=item))
        else:
            uid = item.uid or 0
            out.append(decided.get(uid) or Outcome(uid, message_id=item.message_id, sender=item.sender,
                                                   message=item if keep else None))
    return out


def decide_one(context: Context, folder: str, uidvalidity: int, message: Message, verdict: Any, passed: PassHistory,
               arrived: datetime | None, keep: bool = False) -> Outcome:
    """Decide one message with the pass history so far, record it there, and make its journal row and
    its replies."""
    decision, used = context.decide(message, verdict, passed)
    planned = planned_replies(decision, message.sender, context.now)
    passed.record(message.sender, planned)
    decision_json = decision.to_json()
    row = context.row(folder, uidvalidity, message, decision, decision_json, arrived)
    return _outcome(uid=message.uid or 0, unparsed=None, message_id=message.message_id, sender=message.sender,
                    verdict=verdict, language=message.language, label=decision.label, actions=decision_json["actions"],
                    used=used, row=row, planned=planned,
                    replies=tuple(context.render(message, decision)) if planned else (),
                    message=message if keep else None, decision=decision if keep else None)


# ------------------------------------------------------------------------------------- workers


class Workers:
    """Worker processes that compute batches for the sync process. The first one runs `setup` (it
    loads the model), then forks the others, which share what it loaded. Each worker holds up to
    `depth` batches (one being computed, the next waiting), and answers them in order.

    `setup()` returns the function a worker applies to each message it receives. Workers stop when told
    to, or when the sync process goes away (their end of the pipe then reads EOF), even after kill -9."""

    def __init__(self, setup: Callable[[], Callable[[Any], Any]], count: int = 2, depth: int = 2):
        import multiprocessing

        context = multiprocessing.get_context("fork")
        pipes = [context.Pipe() for _ in range(max(1, count))]
        self.conns: list[Connection] = [parent for parent, _ in pipes]
        self.ready: list[bool] = [False] * len(pipes)
        self.load: list[int] = [0] * len(pipes)  # batches sent and not answered, per worker
        self.depth = depth
        self.process = context.Process(target=_first_worker, name="mailsort-worker",
                                       args=(setup, [child for _, child in pipes], self.conns), daemon=True)
        self.process.start()
        for _, child in pipes:
            child.close()
        self.closed = False

    def free(self) -> list[int]:
        """Workers that are up and can take another batch, least loaded first."""
        self._poll_ready()
        return sorted((i for i in range(len(self.conns)) if self.ready[i] and self.load[i] < self.depth),
                      key=lambda i: self.load[i])

    def send(self, worker: int, message: Any) -> None:
        assert self.ready[worker] and self.load[worker] < self.depth
        try:
            self.conns[worker].send(message)
        except OSError as exc:
            raise WorkerError(f"worker {worker + 1} is gone ({exc}); {self._exit_note()}") from None
        self.load[worker] += 1

    def finished(self, timeout: float | None = 0.0) -> list[tuple[int, Any]]:
        """(worker, result) for every batch done (waiting up to `timeout` for the first; None: forever).
        A worker's results come in the order its batches were sent."""
        from multiprocessing.connection import wait

        busy = [self.conns[i] for i in range(len(self.conns)) if self.load[i]]
        if not busy:
            return []
        out = []
        for conn in wait(busy, timeout):
            worker = self.conns.index(conn)
            out.append((worker, self._receive(worker)))
            self.load[worker] -= 1
        return out

    def wait(self, timeout: float | None = None) -> None:
        """Block until a worker has something to say (a result, or that it is up)."""
        from multiprocessing.connection import wait

        talking = [c for i, c in enumerate(self.conns) if self.load[i] or not self.ready[i]]
        if talking:
            wait(talking, timeout)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for conn in self.conns:
            try:
                conn.send(None)
            except OSError:
                pass
            conn.close()
        self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(1)

    def _poll_ready(self) -> None:
        for i, conn in enumerate(self.conns):
            if not self.ready[i] and conn.poll():
                self._receive(i)
                self.ready[i] = True

    def _receive(self, worker: int) -> Any:
        try:
            kind, value = self.conns[worker].recv()
        except (EOFError, OSError):
            raise WorkerError(f"worker {worker + 1} stopped unexpectedly; {self._exit_note()}") from None
        if kind == "error":
            raise WorkerError(value)
        return value

    def _exit_note(self) -> str:
        code = self.process.exitcode
        return f"exit status {code}" if code is not None else "still running"


def _first_worker(setup: Callable[[], Callable[[Any], Any]], children: list[Connection], parents: list[Connection]) -> None:
    """The first worker: run the setup, fork the other workers, then serve its own pipe."""
    for conn in parents:  # only the sync process may hold these: its death must read as EOF here
        conn.close()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the sync process's to handle
    try:
        work = setup()
    except BaseException as exc:  # noqa: BLE001 - reported to the sync process, which raises it
        reason = str(exc) if isinstance(exc, MailsortError) else f"worker setup failed: {type(exc).__name__}: {exc}"
        for conn in children:
            _report(conn, ("error", reason))
        return
    pids = []
    for conn in children[1:]:
        pid = os.fork()
        if pid == 0:  # a further worker: shares the loaded model, serves its own pipe
            for other in children:
                if other is not conn:
                    other.close()
            try:
                _serve(conn, work)
            finally:
                os._exit(0)
        pids.append(pid)
        conn.close()
    try:
        _serve(children[0], work)
    finally:
        for pid in pids:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass


def _serve(conn: Connection, work: Callable[[Any], Any]) -> None:
    """Answer batches in the order they come. A thread reads them off the pipe as soon as they arrive,
    so the sync process can hand over the next batch while this one is computed, and never waits on a
    full pipe while this worker waits to send its result."""
    import queue
    import threading

    inbox: queue.SimpleQueue = queue.SimpleQueue()

    def read() -> None:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                message = None
            inbox.put(message)
            if message is None:
                return

    _report(conn, ("ready", os.getpid()))
    threading.Thread(target=read, name="mailsort-worker-inbox", daemon=True).start()
    while True:
        message = inbox.get()
        if message is None:
            return
        try:
            result = ("ok", work(message))
        except MailsortError as exc:
            result = ("error", str(exc))
        except Exception as exc:  # noqa: BLE001 - a bug: reported, the sync process decides
            log.exception("worker failed")
            result = ("error", f"worker failed: {type(exc).__name__}: {exc}")
        if not _report(conn, result):
            return


def _report(conn: Connection, message: Any) -> bool:
    try:
        conn.send(message)
        return True
    except OSError:
        return False


def worker_count() -> int:
    """Two workers where there are two cores and fork (they share the loaded model through it); 1 means
    no workers: the sync process computes itself."""
    import multiprocessing

    if "fork" not in multiprocessing.get_all_start_methods():
        return 1
    return max(1, min(2, os.cpu_count() or 1))
