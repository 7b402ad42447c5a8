"""The state database (SQLite, WAL): sync state, handled messages, the outbox, reply history.

It is the journal that makes a sync crash-safe: decisions are written (with `applied = 0`) before
anything changes on the server, and marked applied after. Every write is one transaction. The schema
carries a version; `MIGRATIONS` brings older files forward and a newer file is refused, not guessed at.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from .errors import StateError

OUTBOX_STATES = ("queued", "sending", "sent", "failed", "cancelled")

MIGRATIONS: tuple[str, ...] = (
    # version 1
    """
    CREATE TABLE folder_state (
        account TEXT NOT NULL,
        folder TEXT NOT NULL,
        uidvalidity INTEGER NOT NULL,
        last_uid INTEGER NOT NULL DEFAULT 0,
        highestmodseq INTEGER,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (account, folder)
    );
    CREATE TABLE messages (
        account TEXT NOT NULL,
        folder TEXT NOT NULL,
        uidvalidity INTEGER NOT NULL,
        uid INTEGER NOT NULL,
        message_id TEXT NOT NULL,
        sender TEXT NOT NULL,
        sender_name TEXT NOT NULL DEFAULT '',
        subject TEXT NOT NULL,
        language TEXT NOT NULL,
        label TEXT NOT NULL,
        p_critical REAL NOT NULL,
        client TEXT,
        arrived_at TEXT,
        handled_at TEXT NOT NULL,
        open_at_arrival INTEGER NOT NULL,
        decision TEXT NOT NULL,
        applied INTEGER NOT NULL DEFAULT 0,
        answered_at TEXT,
        overdue_labelled INTEGER NOT NULL DEFAULT 0,
        due_at TEXT,
        PRIMARY KEY (account, folder, uidvalidity, uid)
    );
    CREATE INDEX messages_by_id ON messages (account, message_id);
    CREATE INDEX messages_pending ON messages (account, applied);
    CREATE INDEX messages_by_sender ON messages (account, sender);
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        account TEXT NOT NULL,
        template TEXT NOT NULL,
        recipient TEXT NOT NULL,
        message_id TEXT NOT NULL UNIQUE,
        in_reply_to TEXT NOT NULL DEFAULT '',
        dedupe_key TEXT NOT NULL UNIQUE,
        raw BLOB NOT NULL,
        mode TEXT NOT NULL,
        send_at TEXT NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_try_at TEXT,
        last_error TEXT,
        created_at TEXT NOT NULL,
        sent_at TEXT,
        filed INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX outbox_due ON outbox (account, state, send_at);
    CREATE INDEX outbox_recipient ON outbox (account, recipient);
    CREATE TABLE account_meta (
        account TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (account, key)
    );
    """,
    # version 2: what a pass reads on every sync, even one with nothing new, found by index rather than
    # by reading every row: recent mail (notifications), mail still waiting for an answer, Overdue labels
    """
    CREATE INDEX messages_by_time ON messages (account, COALESCE(arrived_at, handled_at));
    CREATE INDEX messages_open ON messages (account, answered_at, COALESCE(arrived_at, handled_at));
    CREATE INDEX messages_overdue ON messages (account, overdue_labelled);
    """,
    # version 3: the client workflows read only mail that waits for an answer (a partial index: client
    # mail not answered and not backlog, i.e. handled at most deadlines.BACKLOG_AGE = 3 days after it
    # arrived), and a pass with nothing new can tell in one read that no row changed since the last one:
    # inserts raise max(rowid); every other change to a row counts in message_changes (by trigger, so
    # that no writer can forget it). `applied` is left out: marking the journal applied changes nothing
    # the workflows look at.
    """
    DROP INDEX messages_open;
    CREATE INDEX messages_waiting ON messages (account, COALESCE(arrived_at, handled_at))
        WHERE answered_at IS NULL AND label IN ('critical', 'routine') AND (arrived_at IS NULL OR
        CAST(strftime('%s', handled_at) AS INTEGER) - CAST(strftime('%s', arrived_at) AS INTEGER) <= 259200);
    CREATE TABLE message_changes (
        account TEXT PRIMARY KEY,
        changes INTEGER NOT NULL
    );
    CREATE TRIGGER messages_changed AFTER UPDATE OF account, folder, uidvalidity, uid, message_id, sender,
        sender_name, subject, language, label, p_critical, client, arrived_at, handled_at, open_at_arrival,
        decision, answered_at, overdue_labelled, due_at ON messages
    BEGIN
        INSERT INTO message_changes VALUES (OLD.account, 1)
            ON CONFLICT(account) DO UPDATE SET changes = changes + 1;
    END;
    CREATE TRIGGER messages_deleted AFTER DELETE ON messages
    BEGIN
        INSERT INTO message_changes VALUES (OLD.account, 1)
            ON CONFLICT(account) DO UPDATE SET changes = changes + 1;
    END;
    """,
    # version 4: the journal's "not applied yet" and the Overdue marks as partial indexes. Nearly every row
    # is applied and not Overdue; indexing only the exceptions keeps those indexes tiny, and the insert of
    # each handled message (tens of thousands in a first sync) has two index entries fewer to write.
    """
    DROP INDEX messages_pending;
    CREATE INDEX messages_pending ON messages (account) WHERE applied = 0;
    DROP INDEX messages_overdue;
    CREATE INDEX messages_overdue ON messages (account) WHERE overdue_labelled = 1;
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


@lru_cache(maxsize=1024)
def iso(t: datetime) -> str:
    """Times are stored as UTC ISO strings, so they sort and compare as text. (Remembered: a pass
    writes the same `now` and the same few deadlines thousands of times.)"""
    return t.astimezone(timezone.utc).isoformat(timespec="seconds")


def from_iso(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


@dataclass(frozen=True)
class FolderState:
    account: str
    folder: str
    uidvalidity: int
    last_uid: int
    highestmodseq: int | None


@dataclass(frozen=True)
class HandledMessage:
    """One row of `messages`: what was decided for a message and whether it was applied."""

    account: str
    folder: str
    uidvalidity: int
    uid: int
    message_id: str
    sender: str
    sender_name: str
    subject: str
    language: str
    label: str
    p_critical: float
    client: str | None
    arrived_at: datetime | None
    handled_at: datetime
    open_at_arrival: bool
    decision: dict[str, Any]
    applied: bool = False
    answered_at: datetime | None = None
    due_at: datetime | None = None
    overdue_labelled: bool = False


@dataclass(frozen=True)
class OutboxEntry:
    id: int | None
    account: str
    template: str
    recipient: str
    message_id: str
    in_reply_to: str
    dedupe_key: str
    raw: bytes
    mode: str
    send_at: datetime
    state: str = "queued"
    attempts: int = 0
    next_try_at: datetime | None = None
    last_error: str | None = None
    created_at: datetime | None = None
    sent_at: datetime | None = None
    filed: bool = False


class Store:
    """A connection to the state database. Use as a context manager or call close()."""

    def __init__(self, path: Path | str):
        self.path = Path(path) if str(path) != ":memory:" else path
        try:
            if isinstance(self.path, Path):
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(str(self.path), timeout=30, isolation_level=None)
            self.db.row_factory = sqlite3.Row
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.Error as exc:
            raise StateError(f"state database {path}: {exc}") from None
        except OSError as exc:
            raise StateError(f"state database {path}: {exc}") from None

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT: all or nothing, and one writer at a time."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        else:
            self.db.execute("COMMIT")

    def _migrate(self) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StateError(f"state database {self.path} has schema {version}, newer than this mailsort "
                             f"({SCHEMA_VERSION}); upgrade mailsort")
        for number in range(version, SCHEMA_VERSION):
            with self.transaction() as db:
                for statement in _statements(MIGRATIONS[number]):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {number + 1}")

    # ------------------------------------------------------------------------------ folder state

    def folder_state(self, account: str, folder: str) -> FolderState | None:
        row = self.db.execute("SELECT * FROM folder_state WHERE account=? AND folder=?", (account, folder)).fetchone()
        if row is None:
            return None
        return FolderState(row["account"], row["folder"], row["uidvalidity"], row["last_uid"], row["highestmodseq"])

    def save_folder_state(self, state: FolderState, now: datetime) -> None:
        with self.transaction() as db:
            self._save_folder_state(db, state, now)

    @staticmethod
    def _save_folder_state(db: sqlite3.Connection, state: FolderState, now: datetime) -> None:
        db.execute(
            "INSERT INTO folder_state VALUES (?,?,?,?,?,?) ON CONFLICT(account, folder) DO UPDATE SET "
            "uidvalidity=excluded.uidvalidity, last_uid=excluded.last_uid, highestmodseq=excluded.highestmodseq, "
            "updated_at=excluded.updated_at",
            (state.account, state.folder, state.uidvalidity, state.last_uid, state.highestmodseq, iso(now)),
        )

    # ------------------------------------------------------------------------------ messages

    def record_decisions(self, rows: Sequence[HandledMessage | tuple], replies: Sequence[OutboxEntry] = ()) -> list[int]:
        """Journal decisions (not yet applied) and queue their replies, in one transaction.
        Returns the ids of replies actually queued (a reply already queued once is not queued again).
        A row may also come as `journal_params(row)`, prepared elsewhere (a worker process)."""
        queued: list[int] = []
        params = [r if isinstance(r, tuple) else journal_params(r) for r in rows]
        with self.transaction() as db:
            db.executemany(
                "INSERT OR IGNORE INTO messages (account, folder, uidvalidity, uid, message_id, sender, sender_name, "
                "subject, language, label, p_critical, client, arrived_at, handled_at, open_at_arrival, decision, "
                "applied, due_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", params)
            for entry in replies:
                entry_id = self._queue(db, entry)
                if entry_id is not None:
                    queued.append(entry_id)
        return queued

    def pending(self, account: str) -> list[HandledMessage]:
        """Decisions journaled but not yet applied on the server (a crash happened in between)."""
        # sorted here: with ORDER BY, SQLite would walk the whole table in primary-key order instead of
        # the partial index of unapplied rows
        rows = self.db.execute("SELECT * FROM messages WHERE account=? AND applied=0", (account,))
        return sorted((_handled(r) for r in rows), key=lambda h: (h.folder, h.uid))

    def mark_applied(self, account: str, keys: Iterable[tuple[str, int, int]], state: FolderState | None = None,
                     now: datetime | None = None) -> None:
        """Mark (folder, uidvalidity, uid) rows applied and, in the same transaction, advance the folder state."""
        with self.transaction() as db:
            db.executemany("UPDATE messages SET applied=1 WHERE account=? AND folder=? AND uidvalidity=? AND uid=?",
                           [(account, f, v, u) for f, v, u in keys])
            if state is not None and now is not None:
                self._save_folder_state(db, state, now)

    def handled_message_ids(self, account: str) -> set[str]:
        rows = self.db.execute("SELECT message_id FROM messages WHERE account=? AND message_id != ''", (account,))
        return {r[0] for r in rows}

    def labels_by_message_id(self, account: str, message_ids: Sequence[str]) -> dict[str, tuple[str, ...]]:
        """Message-ID -> the labels its decision applied (from the first row, when there are several): what
        another copy of the same message gets, so that all copies look alike."""
        out: dict[str, tuple[str, ...]] = {}
        wanted = sorted(set(message_ids))
        for start in range(0, len(wanted), 500):
            part = wanted[start:start + 500]
            rows = self.db.execute(f"SELECT message_id, decision FROM messages WHERE account=? AND message_id IN "
                                   f"({','.join('?' * len(part))}) ORDER BY handled_at, rowid", (account, *part))
            for message_id, decision in rows:
                if message_id not in out:
                    out[message_id] = label_targets(json.loads(decision))
        return out

    def history_snapshot(self, account: str, before: datetime) -> tuple[dict[str, tuple[tuple[str, datetime], ...]],
                                                                         set[str], set[str]]:
        """What reply_history, sender_seen_before and handled_message_ids answer, for every address at
        once: ({recipient: ((template, send time), ...)}, senders seen before `before`, Message-IDs handled).
        Three queries, so that a big pass (and its worker processes) need not ask per message."""
        replies: dict[str, list[tuple[str, datetime]]] = {}
        for recipient, template, send_at in self.db.execute(
                "SELECT recipient, template, send_at FROM outbox WHERE account=? AND state IN ('queued','sending','sent') "
                "ORDER BY id", (account,)):
            replies.setdefault(recipient, []).append((template, from_iso(send_at)))  # type: ignore[arg-type]
        senders = {r[0] for r in self.db.execute(
            "SELECT DISTINCT sender FROM messages WHERE account=? AND handled_at < ?", (account, iso(before)))}
        return {k: tuple(v) for k, v in replies.items()}, senders, self.handled_message_ids(account)

    def sender_seen_before(self, account: str, sender: str, before: datetime) -> bool:
        row = self.db.execute("SELECT 1 FROM messages WHERE account=? AND sender=? AND handled_at < ? LIMIT 1",
                              (account, sender, iso(before))).fetchone()
        return row is not None

    def messages(self, account: str | None = None, since: datetime | None = None) -> list[HandledMessage]:
        sql, args = "SELECT * FROM messages WHERE 1=1", []
        if account:
            sql += " AND account=?"
            args.append(account)
        if since:
            sql += " AND COALESCE(arrived_at, handled_at) >= ?"
            args.append(iso(since))
        return [_handled(r) for r in self.db.execute(sql + " ORDER BY COALESCE(arrived_at, handled_at)", args)]

    def set_answered(self, account: str, message_id: str, when: datetime) -> None:
        with self.transaction() as db:
            db.execute("UPDATE messages SET answered_at=? WHERE account=? AND message_id=? AND answered_at IS NULL",
                       (iso(when), account, message_id))

    def set_overdue_labelled(self, account: str, message_ids: Iterable[str]) -> None:
        with self.transaction() as db:
            db.executemany("UPDATE messages SET overdue_labelled=1 WHERE account=? AND message_id=?",
                           [(account, m) for m in message_ids])

    # --- client workflows (workflows.py): answered / overdue bookkeeping

    def waiting_messages(self, account: str, since: datetime) -> list[HandledMessage]:
        """Client mail that arrived since `since`, is not answered and is not backlog (handled within
        3 days of its arrival), plus any client mail that carries the Overdue label: what the deadline
        step needs, found by the partial index `messages_waiting` rather than by reading 30 days of
        mail. Robots and lists are among them (that takes the decision): `deadlines.needs_answer` tells."""
        rows = self.db.execute(  # two index searches (SQLite would scan the table for the OR)
            "SELECT * FROM messages WHERE rowid IN (SELECT rowid FROM messages WHERE account=? AND overdue_labelled=1 "
            f"UNION SELECT rowid FROM messages INDEXED BY messages_waiting WHERE account=? AND {_WAITING} "
            "AND COALESCE(arrived_at, handled_at) >= ?) AND label IN ('critical', 'routine') "
            "ORDER BY COALESCE(arrived_at, handled_at)", (account, account, iso(since)))
        return [_handled(r) for r in rows]

    def unanswered_ids(self, account: str, message_ids: Iterable[str], since: datetime) -> set[str]:
        """The Message-IDs among these of client mail still unanswered that arrived since `since` or
        carries the Overdue label: the mail an answer found in Sent is recorded for."""
        wanted = sorted(set(message_ids))
        found: set[str] = set()
        for start in range(0, len(wanted), 500):
            part = wanted[start:start + 500]
            found.update(r[0] for r in self.db.execute(
                f"SELECT message_id FROM messages WHERE account=? AND message_id IN ({','.join('?' * len(part))}) "
                "AND answered_at IS NULL AND label IN ('critical', 'routine') "
                "AND (COALESCE(arrived_at, handled_at) >= ? OR overdue_labelled=1)", (account, *part, iso(since))))
        return found

    def change_mark(self, account: str) -> tuple[int, int]:
        """(highest rowid of `messages`, changes to this account's rows): equal marks mean that no row
        was added, changed or deleted in between (migration 3). Two index lookups."""
        top = self.db.execute("SELECT max(rowid) FROM messages").fetchone()[0] or 0
        row = self.db.execute("SELECT changes FROM message_changes WHERE account=?", (account,)).fetchone()
        return top, row[0] if row else 0

    def set_answered_many(self, account: str, answers: Iterable[tuple[str, datetime]]) -> int:
        """`set_answered` for many (Message-ID, time) pairs in one transaction; returns rows changed."""
        with self.transaction() as db:
            cursor = db.executemany(
                "UPDATE messages SET answered_at=? WHERE account=? AND message_id=? AND answered_at IS NULL",
                [(iso(when), account, mid) for mid, when in answers])
            return cursor.rowcount

    def clear_overdue_labelled(self, account: str, message_ids: Iterable[str]) -> None:
        """The Overdue label came off these messages (they were answered)."""
        with self.transaction() as db:
            db.executemany("UPDATE messages SET overdue_labelled=0 WHERE account=? AND message_id=?",
                           [(account, m) for m in message_ids])

    # ------------------------------------------------------------------------------ outbox

    def queue(self, entry: OutboxEntry) -> int | None:
        with self.transaction() as db:
            return self._queue(db, entry)

    @staticmethod
    def _queue(db: sqlite3.Connection, entry: OutboxEntry) -> int | None:
        cursor = db.execute(
            "INSERT OR IGNORE INTO outbox (account, template, recipient, message_id, in_reply_to, dedupe_key, raw, mode, "
            "send_at, state, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (entry.account, entry.template, entry.recipient.lower(), entry.message_id, entry.in_reply_to,
             entry.dedupe_key, entry.raw, entry.mode, iso(entry.send_at), entry.state,
             iso(entry.created_at or entry.send_at)),
        )
        return cursor.lastrowid if cursor.rowcount else None

    def outbox(self, account: str | None = None, states: Sequence[str] = OUTBOX_STATES) -> list[OutboxEntry]:
        marks = ",".join("?" * len(states))
        sql = f"SELECT * FROM outbox WHERE state IN ({marks})"
        args: list[Any] = list(states)
        if account:
            sql += " AND account=?"
            args.append(account)
        return [_entry(r) for r in self.db.execute(sql + " ORDER BY send_at, id", args)]

    def due(self, account: str, now: datetime) -> list[OutboxEntry]:
        """Queued replies whose time has come (and whose retry back-off has passed)."""
        rows = self.db.execute(
            "SELECT * FROM outbox WHERE account=? AND state='queued' AND send_at <= ? "
            "AND (next_try_at IS NULL OR next_try_at <= ?) ORDER BY send_at, id",
            (account, iso(now), iso(now)),
        )
        return [_entry(r) for r in rows]

    def entry(self, entry_id: int) -> OutboxEntry | None:
        row = self.db.execute("SELECT * FROM outbox WHERE id=?", (entry_id,)).fetchone()
        return _entry(row) if row else None

    def set_state(self, entry_id: int, state: str, *, now: datetime, error: str | None = None,
                  next_try_at: datetime | None = None, count_attempt: bool = False) -> None:
        assert state in OUTBOX_STATES
        with self.transaction() as db:
            db.execute(
                "UPDATE outbox SET state=?, last_error=COALESCE(?, last_error), next_try_at=?, "
                "attempts=attempts+?, sent_at=CASE WHEN ?='sent' THEN ? ELSE sent_at END WHERE id=?",
                (state, error, iso(next_try_at) if next_try_at else None, int(count_attempt), state, iso(now), entry_id),
            )

    def set_filed(self, *entry_ids: int) -> None:
        with self.transaction() as db:
            db.executemany("UPDATE outbox SET filed=1 WHERE id=?", [(i,) for i in entry_ids])

    def cancel(self, entry_id: int) -> bool:
        """Cancel a reply that has not gone out; False when there is no such queued reply."""
        with self.transaction() as db:
            cursor = db.execute("UPDATE outbox SET state='cancelled' WHERE id=? AND state IN ('queued', 'failed')",
                                (entry_id,))
            return cursor.rowcount == 1

    def reply_history(self, account: str, recipient: str) -> list[tuple[str, datetime]]:
        """(template, send time) of every reply to this address that was not cancelled or failed."""
        rows = self.db.execute(
            "SELECT template, send_at FROM outbox WHERE account=? AND recipient=? AND state IN ('queued','sending','sent') "
            "ORDER BY id", (account, recipient.lower()),
        )
        return [(r[0], from_iso(r[1])) for r in rows]  # type: ignore[misc]

    # ------------------------------------------------------------------------------ account meta

    def get_meta(self, account: str, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM account_meta WHERE account=? AND key=?", (account, key)).fetchone()
        return row[0] if row else None

    def set_meta(self, account: str, key: str, value: str) -> None:
        with self.transaction() as db:
            db.execute("INSERT INTO account_meta VALUES (?,?,?) ON CONFLICT(account, key) DO UPDATE SET value=excluded.value",
                       (account, key, value))


# the partial index `messages_waiting` (migration 3), word for word: SQLite uses a partial index only for
# a query that repeats its condition
_WAITING = ("answered_at IS NULL AND label IN ('critical', 'routine') AND (arrived_at IS NULL OR "
            "CAST(strftime('%s', handled_at) AS INTEGER) - CAST(strftime('%s', arrived_at) AS INTEGER) <= 259200)")


def _statements(script: str) -> list[str]:
    """The statements of a migration, split at the semicolons that end one (not those inside a
    trigger's BEGIN ... END)."""
    statements, pending = [], ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                statements.append(pending.strip())
            pending = ""
    if pending.strip(" \n;"):
        statements.append(pending.strip())
    return statements


def label_targets(decision: dict) -> tuple[str, ...]:
    """The labels a journaled decision applies."""
    return tuple(a["target"] for a in decision.get("actions", ()) if a.get("type") == "label" and a.get("target"))


# json.dumps(..., ensure_ascii=False) builds a new encoder on every call; this is the same encoding, built
# once (a first sync writes tens of thousands of rows)
_DECISION_JSON = json.JSONEncoder(ensure_ascii=False).encode


def journal_params(r: HandledMessage) -> tuple:
    """The parameters of a row's INSERT into `messages` (see Store.record_decisions)."""
    return journal_values(r.account, r.folder, r.uidvalidity, r.uid, r.message_id, r.sender, r.sender_name,
                          r.subject, r.language, r.label, r.p_critical, r.client, r.arrived_at, r.handled_at,
                          r.open_at_arrival, r.decision, r.applied, r.due_at)


def journal_values(account: str, folder: str, uidvalidity: int, uid: int, message_id: str, sender: str,
                   sender_name: str, subject: str, language: str, label: str, p_critical: float, client: str | None,
                   arrived_at: datetime | None, handled_at: datetime, open_at_arrival: bool, decision: dict[str, Any],
                   applied: bool, due_at: datetime | None) -> tuple:
    """journal_params of the HandledMessage with these fields, without building it: a worker makes a row for
    every message of a first sync and needs only the tuple (the record costs as much as the row)."""
    return (account, folder, uidvalidity, uid, message_id, sender, sender_name, subject, language, label, p_critical,
            client, iso(arrived_at) if arrived_at else None, iso(handled_at), int(open_at_arrival),
            _JOURNAL_JSON(decision), int(applied), iso(due_at) if due_at else None)


def _journal_encoder() -> Callable[[dict[str, Any]], str]:
    """_DECISION_JSON, with its C encoder built once: JSONEncoder.encode builds one on every call, a third of
    the cost of encoding a decision's small dict. Same settings, so the same text; without the check for
    circular references (a decision's JSON has none). _DECISION_JSON itself where there is no C encoder."""
    from json.encoder import c_make_encoder, encode_basestring  # (encode_basestring: what ensure_ascii=False uses)

    if c_make_encoder is None:
        return _DECISION_JSON
    like = json.JSONEncoder(ensure_ascii=False)
    chunks = c_make_encoder(None, like.default, encode_basestring, like.indent, like.key_separator,
                            like.item_separator, like.sort_keys, like.skipkeys, like.allow_nan)

    def encode(value: dict[str, Any]) -> str:
        return "".join(chunks(value, 0))

    return encode


_JOURNAL_JSON = _journal_encoder()


_TIMES = ("arrived_at", "handled_at", "answered_at", "due_at")
_FLAGS = ("open_at_arrival", "applied", "overdue_labelled")
_AS_STORED = tuple(f.name for f in fields(HandledMessage) if f.name not in (*_TIMES, *_FLAGS, "decision"))
_LAYOUTS: dict[tuple[str, ...], tuple] = {}


def _handled(row: sqlite3.Row) -> HandledMessage:
    """A `messages` row as a HandledMessage. Built without the frozen dataclass's __init__ (which sets
    twenty fields one by one through object.__setattr__) and without looking columns up by name: the
    sync's bookkeeping reads every recent row on every pass, so this is on the path of a sync with
    nothing new. Same object, same fields (every field of HandledMessage is a column of that name)."""
    names = tuple(row.keys())
    layout = _LAYOUTS.get(names)
    if layout is None:
        where = {name: i for i, name in enumerate(names)}
        layout = _LAYOUTS.setdefault(names, (tuple((n, where[n]) for n in _AS_STORED),
                                             tuple((n, where[n]) for n in _TIMES),
                                             tuple((n, where[n]) for n in _FLAGS), where["decision"]))
    stored, times, flags, decision = layout
    values = tuple(row)
    fields_ = {name: values[i] for name, i in stored}
    for name, i in times:
        fields_[name] = datetime.fromisoformat(values[i]) if values[i] else None
    for name, i in flags:
        fields_[name] = bool(values[i])
    fields_["decision"] = json.loads(values[decision])
    message = object.__new__(HandledMessage)
    message.__dict__.update(fields_)
    return message


def _entry(row: sqlite3.Row) -> OutboxEntry:
    return OutboxEntry(
        id=row["id"], account=row["account"], template=row["template"], recipient=row["recipient"],
        message_id=row["message_id"], in_reply_to=row["in_reply_to"], dedupe_key=row["dedupe_key"], raw=row["raw"],
        mode=row["mode"], send_at=from_iso(row["send_at"]), state=row["state"],  # type: ignore[arg-type]
        attempts=row["attempts"], next_try_at=from_iso(row["next_try_at"]), last_error=row["last_error"],
        created_at=from_iso(row["created_at"]), sent_at=from_iso(row["sent_at"]), filed=bool(row["filed"]),
    )
