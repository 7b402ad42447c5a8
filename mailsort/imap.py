"""IMAP sessions over imap-tools: the one place where mailsort talks IMAP.

imap-tools gives us connecting (TLS / STARTTLS / plain), login, LIST, CREATE and APPEND. What it does
not cover, or covers in a way a sorter cannot use, goes to `mailbox.client` (imaplib) directly:

- UID FETCH with BODY.PEEK[HEADER] and a *partial* BODY.PEEK[TEXT]<0.8192>: nothing is marked read, and
  a 20 MB attachment costs 8 KB;
- STATUS with HIGHESTMODSEQ (imap-tools' `folder.status` only knows the RFC 3501 items), ENABLE CONDSTORE;
- UID STORE +FLAGS.SILENT (imap-tools' `flag()` sends an EXPUNGE after every STORE, which would purge
  messages the user marked \\Deleted), X-GM-LABELS, UID MOVE / UID EXPUNGE on explicit UID sets.

Every operation works on UID *sets* (one command per action and target, never one per message) and is
idempotent, so a command cut by a dropped connection is simply sent again after reconnecting. That
retry lives in one place, `ImapSession._run`.
"""

from __future__ import annotations

import imaplib
import logging
import re
import socket
import ssl
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterable, Iterator, Protocol, Sequence

from imap_tools import MailBox, MailBoxStartTls, MailBoxUnencrypted
from imap_tools.errors import ImapToolsError
from imap_tools.utils import encode_folder

from .config import AccountConfig, ServerConfig
from .errors import ConfigError, ServerError
from .tls import tls_context

log = logging.getLogger(__name__)

TEXT_PEEK = 8192  # bytes of body text fetched per message: the classifier reads only the start
FETCH_ITEMS = f"(UID FLAGS INTERNALDATE BODY.PEEK[HEADER] BODY.PEEK[TEXT]<0.{TEXT_PEEK}>)"
TIMEOUT = 60.0  # seconds per socket operation
RETRIES = 3  # reconnects per operation before giving up
BACKOFF = 0.5  # seconds, doubled per retry
MAX_SET_CHARS = 8000  # a UID set longer than this is split over several commands
LABEL_MODES = ("keyword", "gmail", "folder")

# Connection trouble that a reconnect can cure; NO/BAD answers (imaplib.IMAP4.error) cannot.
_DROPPED = (imaplib.IMAP4.abort, OSError, EOFError)


class SentFolder(Protocol):
    """Where a sent reply is filed (Sent, or Drafts in draft mode)."""

    def contains(self, message_id: str) -> bool: ...

    def file(self, raw: bytes) -> None: ...

    def file_many(self, raws: Sequence[bytes]) -> None: ...


class UidValidityChanged(ServerError):
    """The folder was recreated under us between STATUS and SELECT: its UIDs mean something else now."""


@dataclass(frozen=True)
class FolderStatus:
    uidvalidity: int
    uidnext: int
    messages: int
    highestmodseq: int | None = None


@dataclass(frozen=True)
class FetchedMessage:
    """One message as fetched: its header and the first TEXT_PEEK bytes of its body, never marked read."""

    uid: int
    flags: tuple[str, ...]
    internaldate: datetime | None
    raw: bytes


# ------------------------------------------------------------------------------------- sessions


def _account_password(account: AccountConfig) -> str:
    from .secrets import password_for

    password = password_for(account.imap, f"account {account.name!r}: ")
    if password is None:
        raise ConfigError(f"account {account.name!r}: no password source for IMAP (set password_env, "
                          "password_command or password_keyring)")
    return password


def connect(server: ServerConfig, timeout: float = TIMEOUT):
    """An imap-tools mailbox, not yet logged in. TLS always verifies the certificate; plaintext is
    possible only for loopback hosts (config refuses `none` elsewhere)."""
    try:
        if server.security == "tls":
            return MailBox(server.host, server.port, timeout=timeout, ssl_context=tls_context())
        if server.security == "starttls":
            return MailBoxStartTls(server.host, server.port, timeout=timeout, ssl_context=tls_context())
        return MailBoxUnencrypted(server.host, server.port, timeout=timeout)
    except ssl.SSLCertVerificationError as exc:
        raise ServerError(f"{server.host}:{server.port}: TLS certificate not trusted ({exc.verify_message})") from None
    except (OSError, imaplib.IMAP4.error, ImapToolsError, ValueError) as exc:
        raise ServerError(f"{server.host}:{server.port}: cannot connect ({_why(exc)})") from None


class ImapSession:
    """A logged-in IMAP connection for one account. Use as a context manager.

    `readonly=True` (dry runs) opens folders with EXAMINE and refuses every write, so a dry run cannot
    change the mailbox even by mistake.
    """

    def __init__(self, account: AccountConfig, password: str, *, label_mode: str = "auto",
                 readonly: bool = False, timeout: float = TIMEOUT, retries: int = RETRIES, backoff: float = BACKOFF):
        if not account.imap.username:
            raise ConfigError(f"account {account.name!r}: imap.username is missing; IMAP needs a login")
        self.account = account
        self._password = password
        self._wanted_mode = label_mode
        self.readonly = readonly
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.reconnects = 0
        self.box = None
        self.capabilities: frozenset[str] = frozenset()
        self._selected: tuple[str, bool] | None = None
        self.selected_info: dict[str, object] = {}
        self._folders: dict[str, tuple[str, ...]] | None = None  # name -> LIST attributes
        self._label_mode: str | None = None
        self._login()

    # --------------------------------------------------------------------------- connection

    def _login(self) -> None:
        server = self.account.imap
        box = connect(server, self.timeout)
        try:
            box.login(server.username, self._password, initial_folder=None)  # no SELECT until needed
            typ, data = box.client.capability()  # imaplib keeps the pre-login list: ask again
        except imaplib.IMAP4.abort as exc:
            raise ServerError(f"{server.host}: connection lost during login ({_why(exc)})") from None
        except (imaplib.IMAP4.error, ImapToolsError) as exc:
            raise ServerError(f"{server.host}: login as {server.username!r} refused ({_why(exc)})") from None
        except OSError as exc:
            raise ServerError(f"{server.host}: connection lost during login ({_why(exc)})") from None
        caps = data[0].decode(errors="replace").upper().split() if typ == "OK" and data and data[0] else []
        self.capabilities = frozenset(caps)
        box.client.capabilities = tuple(caps)  # imap-tools decides MOVE support from this
        if "CONDSTORE" in self.capabilities and "ENABLE" in self.capabilities:
            try:
                box.client._simple_command("ENABLE", "CONDSTORE")
            except imaplib.IMAP4.error:
                pass  # optional: STATUS HIGHESTMODSEQ works without it
        self.box = box
        self._selected = None

    def _reconnect(self, attempt: int) -> None:
        time.sleep(self.backoff * (2 ** attempt))
        self.reconnects += 1
        log.warning("%s: connection lost; reconnecting (try %d)", self.account.name, attempt + 1)
        try:
            if self.box is not None:
                self.box.client.shutdown()
        except Exception:  # the socket is already dead; we only free it
            pass
        self._login()

    def _run(self, what: str, operation: Callable[[imaplib.IMAP4], object], *, folder: str | None = None,
             write: bool = False):
        """Run one idempotent operation; on a dropped connection reconnect (with backoff), reselect the
        folder and run it again. The only place where retries happen."""
        if write and self.readonly:
            raise ServerError(f"{what}: refused, this session is read-only (dry run)")
        for attempt in range(self.retries + 1):
            try:
                if folder is not None:
                    self._select(folder)
                return operation(self.box.client)
            except _DROPPED as exc:
                if attempt == self.retries:
                    raise ServerError(f"{self.account.imap.host}: {what}: connection lost {attempt + 1} times "
                                      f"({_why(exc)})") from None
                try:
                    self._reconnect(attempt)
                except ServerError as again:
                    if attempt + 1 >= self.retries:
                        raise
                    log.warning("%s: reconnect failed: %s", self.account.name, again)
            except (imaplib.IMAP4.error, ImapToolsError) as exc:
                raise ServerError(f"{self.account.imap.host}: {what}: {_why(exc)}") from None
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.box is None:
            return
        try:
            self.box.logout()
        except Exception:  # logging out of a dead connection: nothing left to do
            try:
                self.box.client.shutdown()
            except Exception:
                pass
        self.box = None

    def __enter__(self) -> "ImapSession":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --------------------------------------------------------------------------- folders

    def _select(self, folder: str) -> None:
        """SELECT (EXAMINE when read-only) unless that folder is already selected."""
        want = (folder, self.readonly)
        if self._selected == want:
            return
        client = self.box.client
        typ, data = client.select(encode_folder(folder), self.readonly)
        if typ != "OK":
            self._selected = None
            raise imaplib.IMAP4.error(f"cannot open folder {folder!r}: {_text(data)}")
        responses = client.untagged_responses
        self.selected_info = {
            "uidvalidity": _first_int(responses.get("UIDVALIDITY")),
            "uidnext": _first_int(responses.get("UIDNEXT")),
            "permanentflags": _flag_list(responses.get("PERMANENTFLAGS")),
        }
        self._selected = want

    def status(self, folder: str) -> FolderStatus:
        """UIDVALIDITY, UIDNEXT (and HIGHESTMODSEQ with CONDSTORE) without selecting the folder: this is
        what makes a sync with nothing new cost one round trip per folder."""
        items = "UIDVALIDITY UIDNEXT MESSAGES" + (" HIGHESTMODSEQ" if "CONDSTORE" in self.capabilities else "")

        def op(client: imaplib.IMAP4) -> FolderStatus:
            typ, data = client.status(encode_folder(folder), f"({items})")
            if typ != "OK":
                raise imaplib.IMAP4.error(f"STATUS {folder!r}: {_text(data)}")
            values = parse_status(data)
            if "UIDVALIDITY" not in values or "UIDNEXT" not in values:
                raise imaplib.IMAP4.error(f"STATUS {folder!r}: incomplete answer {_text(data)}")
            return FolderStatus(values["UIDVALIDITY"], values["UIDNEXT"], values.get("MESSAGES", 0),
                                values.get("HIGHESTMODSEQ"))

        return self._run(f"STATUS {folder}", op)

    def folders(self, refresh: bool = False) -> dict[str, tuple[str, ...]]:
        """Folder name -> LIST attributes (with SPECIAL-USE ones such as \\Sent), cached per session."""
        if self._folders is None or refresh:
            infos = self._run("LIST", lambda client: self.box.folder.list())
            self._folders = {info.name: tuple(info.flags) for info in infos}
        return self._folders

    def ensure_folder(self, folder: str) -> None:
        """Create a folder when it is missing (and subscribe to it, so mail clients show it)."""
        if folder.upper() == "INBOX" or folder in self.folders():
            return

        def op(client: imaplib.IMAP4) -> None:
            typ, data = client._simple_command("CREATE", encode_folder(folder))
            if typ != "OK" and b"ALREADYEXISTS" not in b" ".join(d for d in data if isinstance(d, bytes)).upper():
                raise imaplib.IMAP4.error(f"CREATE {folder!r}: {_text(data)}")
            client.subscribe(encode_folder(folder))

        self._run(f"CREATE {folder}", op, write=True)
        self.folders()[folder] = ()

    def special_folder(self, use: str, configured: str | None, fallback: str) -> str:
        """The folder with this SPECIAL-USE attribute (\\Sent, \\Drafts); a folder named in the config
        wins, and without either the conventional name is used."""
        if configured:
            return configured
        for name, attributes in self.folders().items():
            if use.lower() in (a.lower() for a in attributes):
                return name
        return fallback

    # --------------------------------------------------------------------------- label mode

    @property
    def label_mode(self) -> str:
        """keyword | gmail | folder, resolved from `auto` on first use: X-GM-EXT-1 means Gmail labels;
        else keywords when the server lets us create them (PERMANENTFLAGS has \\*); else folders."""
        if self._label_mode is None:
            mode = self._wanted_mode
            if mode == "auto":
                if "X-GM-EXT-1" in self.capabilities:
                    mode = "gmail"
                else:
                    mode = "keyword" if self.keywords_allowed("INBOX") else "folder"
            self._label_mode = mode
        return self._label_mode

    @property
    def resolved_label_mode(self) -> str | None:
        """label_mode if this session has needed it (and so asked the server), else None."""
        return self._label_mode

    def keywords_allowed(self, folder: str) -> bool:
        """May we set our own keywords (mailsort-done, labels) in this folder?"""
        if not self._selected or self._selected[0] != folder:
            self._run(f"SELECT {folder}", lambda client: None, folder=folder)
        return "\\*" in self.selected_info.get("permanentflags", ())  # type: ignore[operator]

    # --------------------------------------------------------------------------- reading

    def search_new(self, folder: str, after_uid: int, until_uid: int, *, skip_keyword: str | None = None,
                   uidvalidity: int | None = None) -> list[int]:
        """UIDs in (after_uid, until_uid], leaving out messages that carry `skip_keyword` (already
        handled): one UID SEARCH, and never the `n:*` trap (which matches the last message when
        nothing is newer)."""
        if until_uid <= after_uid:
            return []
        criteria = f"UID {after_uid + 1}:{until_uid}" + (f" UNKEYWORD {skip_keyword}" if skip_keyword else "")

        def op(client: imaplib.IMAP4) -> list[int]:
            self._check_uidvalidity(folder, uidvalidity)
            typ, data = client.uid("SEARCH", criteria)
            if typ != "OK":
                raise imaplib.IMAP4.error(f"UID SEARCH: {_text(data)}")
            return parse_search(data)

        return [u for u in self._run(f"SEARCH {folder}", op, folder=folder) if after_uid < u <= until_uid]

    def fetch_new(self, folder: str, after_uid: int, batch: int = 500, *, until_uid: int | None = None,
                  skip_keyword: str | None = None, uidvalidity: int | None = None) -> Iterator[list[FetchedMessage]]:
        """Batches of new messages (UID > after_uid), oldest first, fetched with BODY.PEEK so nothing is
        marked read. One UID FETCH per batch; a batch cut by a dropped connection is fetched again."""
        if until_uid is None:
            until_uid = self.status(folder).uidnext - 1
        uids = self.search_new(folder, after_uid, until_uid, skip_keyword=skip_keyword, uidvalidity=uidvalidity)
        for start in range(0, len(uids), batch):
            yield self.fetch_uids(folder, uids[start:start + batch], uidvalidity=uidvalidity)

    def fetch_uids(self, folder: str, uids: Sequence[int], *, uidvalidity: int | None = None) -> list[FetchedMessage]:
        if not uids:
            return []
        wanted = set(uids)
        uid_set = uid_set_text(uids)

        def op(client: imaplib.IMAP4) -> list[FetchedMessage]:
            self._check_uidvalidity(folder, uidvalidity)
            return [m for m in parse_fetch(uid_fetch(client, uid_set, FETCH_ITEMS)) if m.uid in wanted]

        fetched = self._run(f"FETCH {folder}", op, folder=folder)
        fetched.sort(key=lambda m: m.uid)
        return fetched

    def all_uids(self, folder: str) -> list[int]:
        def op(client: imaplib.IMAP4) -> list[int]:
            typ, data = client.uid("SEARCH", "ALL")
            if typ != "OK":
                raise imaplib.IMAP4.error(f"UID SEARCH: {_text(data)}")
            return parse_search(data)

        return self._run(f"SEARCH {folder}", op, folder=folder)

    def placements(self, folder: str, criteria: str = "ALL") -> list["Placement"]:
        """Cheap look at the messages matching a SEARCH: UID, flags, Message-ID and (SAVEDATE servers)
        when each was put in this folder. Used to find the user's corrections without fetching bodies."""
        savedate = " SAVEDATE" if "SAVEDATE" in self.capabilities else ""
        items = f"(UID FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]{savedate})"

        def search(client: imaplib.IMAP4) -> list[int]:
            typ, data = client.uid("SEARCH", criteria)
            if typ != "OK":
                raise imaplib.IMAP4.error(f"UID SEARCH {criteria}: {_text(data)}")
            return parse_search(data)

        uids = self._run(f"SEARCH {folder}", search, folder=folder)
        found: list[Placement] = []
        for uid_set in uid_set_chunks(uids):
            def fetch(client: imaplib.IMAP4, uid_set: str = uid_set) -> list[Placement]:
                typ, data = client.uid("FETCH", uid_set, items)
                if typ != "OK":
                    raise imaplib.IMAP4.error(f"UID FETCH: {_text(data)}")
                return parse_placements(data)

            found += self._run(f"FETCH {folder}", fetch, folder=folder)
        wanted = set(uids)
        return sorted((p for p in found if p.uid in wanted), key=lambda p: p.uid)

    def search(self, folder: str, criteria: str) -> list[int]:
        """UID SEARCH with these criteria (IMAP syntax, built by the caller)."""
        def op(client: imaplib.IMAP4) -> list[int]:
            typ, data = client.uid("SEARCH", criteria)
            if typ != "OK":
                raise imaplib.IMAP4.error(f"UID SEARCH: {_text(data)}")
            return parse_search(data)

        return self._run(f"SEARCH {folder}", op, folder=folder)

    def find_message_ids(self, folder: str, message_ids: Iterable[str], since: datetime | None = None) -> list[int]:
        """UIDs of the messages with these Message-IDs in the folder: few SEARCHes, each an OR chain of up
        to SEARCH_IDS of them (see message_id_searches); nothing when the folder does not exist."""
        if folder.upper() != "INBOX" and folder not in self.folders():
            return []
        found: set[int] = set()
        for criteria in message_id_searches(message_ids, since):
            found.update(self.search(folder, criteria))
        return sorted(found)

    def find_message_id(self, folder: str, message_id: str) -> bool:
        """Is a message with this Message-ID in the folder?"""
        return bool(self.find_message_ids(folder, [message_id]))

    def message_ids_in(self, folder: str, message_ids: Sequence[str], since: datetime | None = None
                       ) -> dict[str, list[int]]:
        """{Message-ID: UIDs} of those of these messages the folder holds: find_message_ids, then the
        Message-ID field of what it found (a SEARCH says which messages matched, not which ID each has)."""
        wanted = {_clean_message_id(m): m for m in message_ids}
        out: dict[str, list[int]] = {}
        for uid_set in uid_set_chunks(self.find_message_ids(folder, message_ids, since)):
            for uid, raw in self.header_fields(folder, uid_set, "MESSAGE-ID"):
                value = _field(raw, "Message-ID")
                if value in wanted:
                    out.setdefault(wanted[value], []).append(uid)
        return out

    def header_fields(self, folder: str, uid_set: str, fields: str) -> list[tuple[int, bytes]]:
        """(UID, header block of just these fields) of each message in the UID set (nothing marked read)."""
        def op(client: imaplib.IMAP4) -> list[tuple[int, bytes]]:
            typ, data = client.uid("FETCH", uid_set, f"(UID BODY.PEEK[HEADER.FIELDS ({fields})])")
            if typ != "OK":
                raise imaplib.IMAP4.error(f"UID FETCH: {_text(data)}")
            out = []
            for item in data or ():
                if isinstance(item, tuple) and len(item) > 1 and isinstance(item[0], bytes) and isinstance(item[1], bytes):
                    match = _UID.search(item[0])
                    if match:
                        out.append((int(match.group(1)), item[1]))
            return out

        return self._run(f"FETCH {folder}", op, folder=folder)

    def uidvalidity(self, folder: str) -> int | None:
        """The folder's UIDVALIDITY now (None when it is gone), from a SELECT (which a STORE needs anyway)."""
        if folder.upper() != "INBOX" and folder not in self.folders():
            return None
        self._run(f"SELECT {folder}", lambda client: None, folder=folder)
        value = self.selected_info.get("uidvalidity")
        return value if isinstance(value, int) else None

    def _check_uidvalidity(self, folder: str, expected: int | None) -> None:
        if expected is not None and self.selected_info.get("uidvalidity") not in (None, expected):
            raise UidValidityChanged(f"{folder}: UIDVALIDITY changed from {expected} to "
                                     f"{self.selected_info.get('uidvalidity')} during the sync")

    # --------------------------------------------------------------------------- writing

    def add_keywords(self, folder: str, uids: Sequence[int], keywords: Iterable[str]) -> None:
        """One UID STORE +FLAGS.SILENT per keyword set (per UID-set chunk); idempotent."""
        self._store(folder, uids, "+FLAGS.SILENT", tuple(keywords))

    def set_flag(self, folder: str, uids: Sequence[int], flag: str, value: bool = True) -> None:
        self._store(folder, uids, "+FLAGS.SILENT" if value else "-FLAGS.SILENT", (flag,))

    def gmail_label(self, folder: str, uids: Sequence[int], label: str, value: bool = True) -> None:
        """Gmail labels (X-GM-LABELS): the message stays put and shows under the label."""
        self._store(folder, uids, "+X-GM-LABELS" if value else "-X-GM-LABELS", (imap_quote(label),))

    def delete(self, folder: str, uids: Sequence[int]) -> None:
        """Take these messages away (a label copy in folder mode): \\Deleted, then UID EXPUNGE of exactly
        those UIDs; without UIDPLUS they stay marked \\Deleted for the mail program to purge (other
        mail is never expunged)."""
        if not uids:
            return
        self._store(folder, uids, "+FLAGS.SILENT", ("\\Deleted",))
        if "UIDPLUS" in self.capabilities:
            for uid_set in uid_set_chunks(uids):
                self._run(f"EXPUNGE {folder}", lambda client, s=uid_set: _ok(client.uid("EXPUNGE", s), "UID EXPUNGE"),
                          folder=folder, write=True)

    def _store(self, folder: str, uids: Sequence[int], item: str, values: tuple[str, ...]) -> None:
        if not uids or not values:
            return
        value_list = "(" + " ".join(values) + ")"
        for uid_set in uid_set_chunks(uids):
            def op(client: imaplib.IMAP4, uid_set: str = uid_set) -> None:
                typ, data = client.uid("STORE", uid_set, item, value_list)
                if typ != "OK":
                    raise imaplib.IMAP4.error(f"UID STORE {item} {value_list}: {_text(data)}")

            self._run(f"STORE {folder}", op, folder=folder, write=True)

    def copy_to_label_folder(self, folder: str, uids: Sequence[int], label: str) -> None:
        """Folder mode: a copy of the message in a folder named after the label."""
        if not uids:
            return
        self.ensure_folder(label)
        for uid_set in uid_set_chunks(uids):
            self._run(f"COPY {folder}", lambda client, s=uid_set: _ok(client.uid("COPY", s, encode_folder(label)),
                                                                         "UID COPY"), folder=folder, write=True)

    def move(self, folder: str, uids: Sequence[int], target: str) -> None:
        """Move messages: one UID MOVE per target. Without MOVE: UID COPY, +FLAGS \\Deleted, then UID
        EXPUNGE of exactly those UIDs (UIDPLUS), else a plain EXPUNGE only when no other message in the
        folder is marked \\Deleted (we never purge what the user meant to keep for now). UIDs that are
        gone already (moved before a crash) are simply not found: MOVE is a no-op for them."""
        if not uids or target == folder:
            return
        self.ensure_folder(target)
        for uid_set in uid_set_chunks(uids):
            if "MOVE" in self.capabilities:
                self._run(f"MOVE {folder} -> {target}", lambda client, s=uid_set: uid_move(client, s, target),
                          folder=folder, write=True)
            else:
                self._copy_delete(folder, uid_set, target)

    def _copy_delete(self, folder: str, uid_set: str, target: str) -> None:
        """MOVE without MOVE. Messages the user already marked \\Deleted are left alone (neither copied nor
        expunged); `ours` remembers what we marked across retries, so a retry neither copies twice nor
        forgets to expunge."""
        ours: set[int] = set()

        def op(client: imaplib.IMAP4) -> None:
            typ, data = client.uid("SEARCH", f"UID {uid_set} UNDELETED")
            present = parse_search(data) if typ == "OK" else []
            if present:
                mine = uid_set_text(present)
                _ok(client.uid("COPY", mine, encode_folder(target)), "UID COPY")
                _ok(client.uid("STORE", mine, "+FLAGS.SILENT", "(\\Deleted)"), "UID STORE")
                ours.update(present)
            if not ours:
                return
            if "UIDPLUS" in self.capabilities:
                _ok(client.uid("EXPUNGE", uid_set_text(ours)), "UID EXPUNGE")
                return
            typ, data = client.uid("SEARCH", "DELETED")
            others = set(parse_search(data)) - ours
            if others:
                log.warning("%s: %s: %d other message(s) are marked \\Deleted; not expunging, the moved "
                            "messages stay marked \\Deleted here until your mail client expunges",
                            self.account.name, folder, len(others))
                return
            _ok(client.expunge(), "EXPUNGE")

        self._run(f"COPY+EXPUNGE {folder} -> {target}", op, folder=folder, write=True)

    def append(self, folder: str, raw: bytes, flags: Sequence[str] = ()) -> None:
        self.ensure_folder(folder)
        self._run(f"APPEND {folder}", lambda client: self.box.append(raw, folder, flag_set=list(flags)), write=True)

    def append_many(self, folder: str, raws: Sequence[bytes], flags: Sequence[str] = ()) -> None:
        """APPEND several messages: in one MULTIAPPEND command (RFC 3502) when the server takes it with
        non-synchronizing literals (RFC 7888), so filing a pass's replies costs one round trip and one
        commit on the server instead of one each; otherwise one APPEND per message. A MULTIAPPEND is
        all or nothing: when the server refuses it, nothing was filed."""
        self.ensure_folder(folder)
        groups = list(multiappend_groups(raws, self.capabilities))
        if not groups:
            for raw in raws:
                self.append(folder, raw, flags)
            return
        for group in groups:
            self._run(f"APPEND {folder} ({len(group)} messages)",
                      lambda client: _multiappend(client, folder, group, flags), write=True)

    # --------------------------------------------------------------------------- Sent / Drafts

    def sent_folder(self, configured: str | None = None) -> "ImapFolder":
        return ImapFolder(self, self.special_folder("\\Sent", configured, "Sent"), ("\\Seen",))

    def drafts_folder(self, configured: str | None = None) -> "ImapFolder":
        return ImapFolder(self, self.special_folder("\\Drafts", configured, "Drafts"), ("\\Seen", "\\Draft"))


@dataclass(frozen=True)
class ImapFolder:
    """A folder replies are filed in; implements the SentFolder protocol."""

    session: ImapSession
    name: str
    flags: tuple[str, ...] = ()

    def contains(self, message_id: str) -> bool:
        return self.session.find_message_id(self.name, message_id)

    def file(self, raw: bytes) -> None:
        self.session.append(self.name, raw, self.flags)

    def file_many(self, raws: Sequence[bytes]) -> None:
        self.session.append_many(self.name, raws, self.flags)


def open_session(account: AccountConfig, *, password_lookup: Callable[[ServerConfig], str] | None = None,
                 label_mode: str = "auto", readonly: bool = False, timeout: float = TIMEOUT) -> ImapSession:
    """Connect, log in and read the capabilities for one account."""
    password = password_lookup(account.imap) if password_lookup else _account_password(account)
    return ImapSession(account, password, label_mode=label_mode, readonly=readonly, timeout=timeout)


def probe_account(account: AccountConfig, *, password_lookup: Callable[[ServerConfig], str] | None = None,
                  label_mode: str = "auto") -> dict:
    """Log in, report capabilities and the label mode `auto` resolves to (for check-config --connect)."""
    with open_session(account, password_lookup=password_lookup, label_mode=label_mode, readonly=True) as session:
        return {"capabilities": sorted(session.capabilities), "label_mode": session.label_mode}


# ------------------------------------------------------------------------------------- protocol text (pure)


def uid_set_text(uids: Iterable[int]) -> str:
    """[1, 2, 3, 7, 9, 10] -> "1:3,7,9:10"."""
    ordered = sorted(set(uids))
    parts: list[str] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}:{ordered[j]}")
        i = j + 1
    return ",".join(parts)


def uid_set_chunks(uids: Iterable[int], limit: int = MAX_SET_CHARS) -> Iterator[str]:
    """UID sets short enough for one command line each."""
    text = uid_set_text(uids)
    while len(text) > limit:
        cut = text.rfind(",", 0, limit)
        yield text[:cut]
        text = text[cut + 1:]
    if text:
        yield text


def parse_uid_set(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        if ":" in part:
            a, b = (int(x) for x in part.split(":"))
            out.extend(range(min(a, b), max(a, b) + 1))
        elif part:
            out.append(int(part))
    return out


SEARCH_IDS = 200  # Message-IDs per UID SEARCH (an OR chain): each SEARCH makes the server go through the folder
SEARCH_CHARS = 6000  # ... and at most this long (servers limit the command line; Dovecot to 64 KB)
_ID_UNSAFE = re.compile(r'[\r\n"\\]')


def _clean_message_id(message_id: str) -> str:
    """A Message-ID as it may go into a quoted SEARCH string (and as _field reads it back)."""
    return _ID_UNSAFE.sub("", message_id).strip()


def message_id_searches(message_ids: Iterable[str], since: datetime | None = None) -> list[str]:
    """The UID SEARCH criteria that find these Message-IDs: each ID once, up to SEARCH_IDS of them
    OR-chained per SEARCH and within SEARCH_CHARS. With `since`, only mail that arrived (INTERNALDATE)
    on or after that day: the server then reads the headers of that mail only, not the whole folder."""
    keys = [f'HEADER Message-ID "{c}"' for c in dict.fromkeys(map(_clean_message_id, message_ids)) if c]
    prefix = f"SINCE {imap_date(since)} " if since is not None else ""
    searches: list[str] = []
    chunk: list[str] = []
    size = 0
    for n, key in enumerate(keys):
        chunk.append(key)
        size += len(key) + 4  # the key, a space and an "OR "
        if n + 1 == len(keys) or len(chunk) == SEARCH_IDS or size + len(keys[n + 1]) + 4 > SEARCH_CHARS:
            searches.append(prefix + " ".join(["OR"] * (len(chunk) - 1) + chunk))
            chunk, size = [], 0
    return searches


def imap_date(moment: datetime) -> str:
    """An IMAP date (SEARCH SINCE): the UTC day, month in English whatever the locale."""
    day = moment.astimezone(timezone.utc)
    months = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
    return f"{day.day}-{months[day.month - 1]}-{day.year}"


def _field(raw: bytes, name: str) -> str | None:
    """One field of a header block, unfolded."""
    from email.parser import BytesHeaderParser
    from email.policy import compat32

    value = BytesHeaderParser(policy=compat32).parsebytes(raw).get(name)
    return " ".join(str(value).split()) if value is not None else None


def parse_search(data: list) -> list[int]:
    uids: list[int] = []
    for line in data or ():
        if isinstance(line, bytes):
            uids.extend(int(x) for x in line.split() if x.isdigit())
    return uids


def parse_status(data: list) -> dict[str, int]:
    """b'INBOX (UIDVALIDITY 1 UIDNEXT 5 MESSAGES 4)' -> {"UIDVALIDITY": 1, ...}; the folder name may
    arrive as a literal, so look only at the last parenthesised list."""
    text = b" ".join(d if isinstance(d, bytes) else b" ".join(x for x in d if isinstance(x, bytes))
                     for d in data if d is not None)
    m = re.search(rb"\(([^()]*)\)\s*$", text)
    words = m.group(1).split() if m else []
    return {words[i].decode().upper(): int(words[i + 1]) for i in range(0, len(words) - 1, 2) if words[i + 1].isdigit()}


_LITERAL_END = re.compile(rb"\{(\d+)\}$")
_UNTAGGED_FETCH = re.compile(rb"\* (\d+) FETCH ")


def uid_fetch(client: imaplib.IMAP4, uid_set: str, items: str) -> list:
    """`client.uid("FETCH", uid_set, items)`'s data, read faster (see `_command`): the bulk fetch of a
    first sync brings thousands of responses. Only FETCH responses are kept, in imaplib's shape (see
    parse_fetch)."""
    if client.state != "SELECTED":
        raise imaplib.IMAP4.error(f"UID FETCH in state {client.state}: no folder selected")
    data: list = []
    _command(client, b"UID FETCH " + uid_set.encode("ascii") + b" " + items.encode("ascii"), "UID FETCH", data)
    return data


def uid_move(client: imaplib.IMAP4, uid_set: str, target: str) -> None:
    """`client.uid("MOVE", uid_set, target)`, its answer read by `_command`: a MOVE of thousands of
    messages brings an EXPUNGE for each, which imaplib reads and keeps one by one."""
    if client.state != "SELECTED":
        raise imaplib.IMAP4.error(f"UID MOVE in state {client.state}: no folder selected")
    _command(client, b"UID MOVE " + uid_set.encode("ascii") + b" " + encode_folder(target), "UID MOVE")


def _command(client: imaplib.IMAP4, command: bytes, what: str, fetches: list | None = None) -> None:
    """Send one command and read its answer up to the tagged completion, faster than imaplib, which
    spends tens of microseconds of Python on each line and literal. Here every line and literal is one
    C-level read of imaplib's own buffered socket file (never a byte beyond the tagged completion, so
    imaplib reads on where this stops). FETCH responses go to `fetches` (when given) in imaplib's shape;
    other untagged responses (EXPUNGE, flag updates, OK [COPYUID ...]) are passed over. NO/BAD raise
    IMAP4.error, BYE or EOF IMAP4.abort, as in imaplib."""
    sink: list = fetches if fetches is not None else []  # (nothing is appended when there is no `fetches`)
    tag = client._new_tag()
    try:
        client.send(tag + b" " + command + b"\r\n")
        readline, read = client.file.readline, client.file.read
        fetch = False  # the response being read is a FETCH
        start = True  # the next line starts a response (not the rest of one after a literal)
        while True:
            line = readline(imaplib._MAXLINE + 1)
            if not line.endswith(b"\n"):
                raise imaplib.IMAP4.abort(f"socket error: EOF in the middle of the answer to {what}"
                                          if len(line) <= imaplib._MAXLINE
                                          else f"got more than {imaplib._MAXLINE} bytes in one line")
            line = line.rstrip(b"\r\n")
            if start:
                if line.startswith(tag + b" "):
                    status = line[len(tag) + 1:]
                    if not status.startswith(b"OK"):
                        raise imaplib.IMAP4.error(f"{what}: {status.decode('utf-8', 'replace')}")
                    return
                if line.startswith(b"* BYE"):
                    raise imaplib.IMAP4.abort(line[2:].decode("utf-8", "replace"))
                m = _UNTAGGED_FETCH.match(line) if fetches is not None else None
                fetch = m is not None
                text = m.group(1) + b" " + line[m.end():] if m is not None else line
            else:
                text = line
            size = _LITERAL_END.search(text)
            if size is not None:
                literal = read(int(size.group(1)))
                if len(literal) != int(size.group(1)):
                    raise imaplib.IMAP4.abort("socket error: EOF in the middle of a literal")
                if fetch:
                    sink.append((text, literal))
                start = False
            else:
                if fetch:
                    sink.append(text)
                start = True
    finally:
        client.tagged_commands.pop(tag, None)


_NEW_ITEM = re.compile(rb"^\d+ \(")
_UID = re.compile(rb"\bUID (\d+)")
_FLAGS = re.compile(rb"\bFLAGS \(([^)]*)\)")
_INTERNALDATE = re.compile(rb'\bINTERNALDATE "([^"]+)"')
_SECTION = re.compile(rb"(BODY\[(HEADER|TEXT)\](?:<\d+>)?) \{\d+\}\s*$")


def _responses(data: list) -> Iterator[list[tuple[bytes, bytes | None]]]:
    """imaplib's FETCH answer, one response at a time. imaplib splits each response at its literals:
    [(b'1 (UID 5 FLAGS () INTERNALDATE "..." BODY[HEADER] {120}', header), (b' BODY[TEXT]<0> {80}', text),
    b')'] — this yields each response's pieces as (text, literal or None). Attributes may sit before,
    between or after the literals, so a reader looks at every piece (`_attribute`)."""
    pieces: list[tuple[bytes, bytes | None]] | None = None
    for item in data or ():
        if item is None:
            continue
        text, literal = (item[0], item[1]) if isinstance(item, tuple) else (item, None)
        if _NEW_ITEM.match(text):
            if pieces is not None:
                yield pieces
            pieces = []
        if pieces is not None:
            pieces.append((text, literal))
    if pieces is not None:
        yield pieces


def _attribute(pieces: list[tuple[bytes, bytes | None]], name: bytes, pattern: re.Pattern[bytes]) -> bytes | None:
    """The value of one attribute of a response (the last one given). The substring test comes first:
    most pieces are " BODY[TEXT]<0> {n}" or ")", and a first sync has tens of thousands of them."""
    found = None
    for text, _ in pieces:
        if name in text and (m := pattern.search(text)) is not None:
            found = m.group(1)
    return found


def _flags(value: bytes | None) -> tuple[str, ...]:
    return tuple(f.decode("utf-8", "replace") for f in value.split()) if value else ()


_PLAIN_HEAD = re.compile(rb'\d+ \(UID (\d+) FLAGS \(([^)]*)\) INTERNALDATE "([^"]+)" BODY\[HEADER\] \{\d+\}')
_PLAIN_TEXT = re.compile(rb" BODY\[TEXT\]<0> \{\d+\}")


def parse_fetch(data: list) -> list[FetchedMessage]:
    """imaplib's FETCH answer -> messages. Unsolicited FETCH responses (flag changes by another client)
    may be mixed in; those carry no header and are dropped."""
    plain = _parse_plain_fetch(data)
    return plain if plain is not None else _parse_any_fetch(data)


def _parse_plain_fetch(data: list) -> list[FetchedMessage] | None:
    """The answer to FETCH_ITEMS as Dovecot and most servers give it: each response has its attributes
    in the order asked, the header literal, the text literal, then ")". Read with one pattern per
    literal, a quarter of the general reading's cost (a first sync reads tens of thousands). None
    when any response has another shape: the general reading then takes the whole answer."""
    if len(data) % 3:
        return None
    head, text = _PLAIN_HEAD.fullmatch, _PLAIN_TEXT.fullmatch
    messages: list[FetchedMessage] = []
    for k in range(0, len(data), 3):
        first, second, end = data[k], data[k + 1], data[k + 2]
        if end != b")" or type(first) is not tuple or type(second) is not tuple:
            return None
        m = head(first[0])
        if m is None or text(second[0]) is None:
            return None
        messages.append(FetchedMessage(int(m.group(1)), _flags(m.group(2)), parse_internaldate(m.group(3).decode()),
                                       first[1] + second[1]))
    return messages


def _parse_any_fetch(data: list) -> list[FetchedMessage]:
    """parse_fetch for any shape of answer: attributes in any order, around the literals."""
    messages: list[FetchedMessage] = []
    for pieces in _responses(data):
        uid = _attribute(pieces, b"UID", _UID)
        parts = {m.group(2): literal for text, literal in pieces
                 if literal is not None and (m := _SECTION.search(text)) is not None}
        if uid is None or b"HEADER" not in parts:
            continue
        date = _attribute(pieces, b"INTERNALDATE", _INTERNALDATE)
        messages.append(FetchedMessage(int(uid), _flags(_attribute(pieces, b"FLAGS", _FLAGS)),
                                       parse_internaldate(date.decode()) if date else None,
                                       parts[b"HEADER"] + parts.get(b"TEXT", b"")))
    return messages


@dataclass(frozen=True)
class Placement:
    """Where a message sits: its UID and flags in a folder, its Message-ID, and when it was put there
    (RFC 8514 SAVEDATE; None when the server does not say)."""

    uid: int
    flags: tuple[str, ...]
    message_id: str
    saved_at: datetime | None = None


_SAVEDATE = re.compile(rb'\bSAVEDATE "([^"]+)"')
_FIELDS = re.compile(rb"BODY\[HEADER\.FIELDS \([^)]*\)\] \{\d+\}\s*$")


def parse_placements(data: list) -> list[Placement]:
    """The answer to UID FETCH (UID FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)] SAVEDATE), read the
    way parse_fetch reads its answer (attributes around the literal, unsolicited responses dropped)."""
    from email.parser import BytesHeaderParser

    out: list[Placement] = []
    for pieces in _responses(data):
        uid = _attribute(pieces, b"UID", _UID)
        fields = [literal for text, literal in pieces if literal is not None and _FIELDS.search(text)]
        if uid is None or not fields:
            continue
        header = BytesHeaderParser().parsebytes(fields[-1]).get("Message-ID") or ""
        saved = _attribute(pieces, b"SAVEDATE", _SAVEDATE)
        out.append(Placement(int(uid), _flags(_attribute(pieces, b"FLAGS", _FLAGS)), " ".join(str(header).split()),
                             parse_internaldate(saved.decode()) if saved else None))
    return out


_MONTHS = {m: i for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov",
                                       "Dec"), 1)}
_ZONES: dict[str, timezone] = {}


def parse_internaldate(text: str) -> datetime | None:
    """'25-Nov-2026 20:00:00 +0100' -> aware datetime (None if malformed). By hand: strptime costs a
    tenth of a millisecond, once per fetched message."""
    try:
        day, month, rest = text.strip().split("-", 2)
        year, clock, zone = rest.split(" ")
        hour, minute, second = clock.split(":")
        tz = _ZONES.get(zone)
        if tz is None:
            if len(zone) != 5 or zone[0] not in "+-" or not zone[1:].isdigit():
                return None
            offset = timedelta(hours=int(zone[1:3]), minutes=int(zone[3:5]))
            tz = _ZONES.setdefault(zone, timezone(-offset if zone[0] == "-" else offset))
        return datetime(int(year), _MONTHS[month], int(day), int(hour), int(minute), int(second), tzinfo=tz)
    except (ValueError, KeyError):
        return None


def imap_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


_ATOM_SPECIALS = re.compile(r'[\s(){%*"\\\]\x00-\x1f\x7f]')


def keyword_for(label: str) -> str:
    """An IMAP keyword (an atom: no spaces, parentheses, quotes, wildcards) for a label name."""
    return _ATOM_SPECIALS.sub("_", label) or "_"


def _first_int(values: list | None) -> int | None:
    for value in values or ():
        if isinstance(value, bytes) and value.strip().isdigit():
            return int(value)
    return None


def _flag_list(values: list | None) -> tuple[str, ...]:
    for value in values or ():
        if isinstance(value, bytes):
            return tuple(value.decode("utf-8", "replace").strip("() ").split())
    return ()


MULTIAPPEND_COUNT = 100  # messages per MULTIAPPEND command at most …
MULTIAPPEND_BYTES = 8_000_000  # … and bytes (servers cap a command's size)
LITERAL_MINUS_MAX = 4096  # RFC 7888: LITERAL- allows non-synchronizing literals up to this size only


def multiappend_groups(raws: Sequence[bytes], capabilities: Iterable[str]) -> Iterator[list[bytes]]:
    """The MULTIAPPEND commands that file `raws`, in order; nothing when the server cannot take them
    without a round trip per literal (no MULTIAPPEND, or neither LITERAL+ nor small-enough LITERAL-),
    or when there is only one message."""
    caps = set(capabilities)
    if len(raws) < 2 or "MULTIAPPEND" not in caps:
        return
    if "LITERAL+" not in caps and not ("LITERAL-" in caps and all(len(r) <= LITERAL_MINUS_MAX for r in raws)):
        return
    group: list[bytes] = []
    size = 0
    for raw in raws:
        if group and (len(group) == MULTIAPPEND_COUNT or size + len(raw) > MULTIAPPEND_BYTES):
            yield group
            group, size = [], 0
        group.append(raw)
        size += len(raw)
    yield group


def _multiappend(client: imaplib.IMAP4, folder: str, raws: Sequence[bytes], flags: Sequence[str]) -> None:
    """One MULTIAPPEND (imaplib sends one literal per command). The first literal waits for the server's
    go-ahead, as usual: a server that refuses the folder or the flags says so before any message is on
    the wire, where it would be read as commands. The others follow at once, non-synchronizing."""
    flag_list = f"({' '.join(flags)}) ".encode() if flags else b""
    literals = [imaplib.MapCRLF.sub(imaplib.CRLF, raw) for raw in raws]
    tag = client._new_tag()
    client.send(b"%s APPEND %s %s{%d}\r\n" % (tag, encode_folder(folder), flag_list, len(literals[0])))
    while client._get_response():  # untagged lines, until the go-ahead (None) or the refusal (tagged)
        if client.tagged_commands[tag]:
            break
    if client.tagged_commands[tag] is None:
        parts = [literals[0]]
        for literal in literals[1:]:
            parts += [b" ", flag_list, b"{%d+}\r\n" % len(literal), literal]
        parts.append(imaplib.CRLF)
        client.send(b"".join(parts))
    _ok(client._command_complete("APPEND", tag), "MULTIAPPEND")


def _ok(result: tuple, what: str) -> tuple:
    if result[0] != "OK":
        raise imaplib.IMAP4.error(f"{what}: {_text(result[1])}")
    return result


def _text(data: object) -> str:
    if isinstance(data, (list, tuple)):
        return " ".join(_text(d) for d in data if d is not None)
    if isinstance(data, bytes):
        return data.decode("utf-8", "replace")
    return str(data)


def _why(exc: BaseException) -> str:
    if isinstance(exc, socket.timeout):
        return "timed out"
    return str(exc) or type(exc).__name__
