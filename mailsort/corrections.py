"""The user's corrections, read over IMAP, as training examples for `mailsort train --from-imap`.

A correction is a message the user put in the Critical or Routine folder (the [labels] names), or —
in keyword label mode — a message whose label keyword the user changed in their mail client. What
mailsort did itself must not come back as a "correction", or retraining would only learn its own
mistakes, so each piece of evidence is weighed against the verdict mailsort recorded for that
Message-ID in the state database:

- a label keyword counts only where it contradicts the recorded verdict (mailsort sets the keyword
  that agrees with it on every message it sorts);
- a Critical/Routine folder counts always in keyword mode (mailsort never files there in that
  mode), and in folder and Gmail mode — where mailsort puts its own copies and labels there — only
  where it contradicts the recorded verdict or the message is not in the state database.

The same message can be found in several places (moved to Critical, still carrying the old Routine
keyword; filed in both folders). One example per Message-ID, the user's latest placement:

1. among folder placements, the one with the latest SAVEDATE (RFC 8514), when the server gives
   distinct dates — a best effort: Dovecot on maildir dates a message when it first indexes it in a
   folder (at once when a mail client shows the folder) and gives hard-linked copies one date;
2. else a folder placement over a keyword (moving a message carries its old keywords along);
3. else the placement that contradicts mailsort's recorded verdict;
4. what is still contradictory is left out and counted as ambiguous.

Everything is read with BODY.PEEK: nothing is marked read, nothing is changed on the server.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from .classify.data import Example
from .config import AccountConfig, Config
from .imap import ImapSession, Placement, keyword_for, open_session

CRITICAL, ROUTINE = "critical", "routine"


@dataclass(frozen=True)
class Evidence:
    """One sign of what the user thinks a message is: a folder it sits in, or a label keyword."""

    key: str  # the Message-ID, or "folder#uid" for a message without one
    label: str
    kind: str  # "folder" | "keyword"
    folder: str
    uid: int
    saved_at: datetime | None = None


@dataclass(frozen=True)
class Resolution:
    """The winning evidence per message, and how many were left out (and why)."""

    winners: Mapping[str, Evidence]
    ambiguous: tuple[str, ...] = ()
    own_labels: int = 0  # evidence that only repeats mailsort's own verdict


@dataclass(frozen=True)
class AccountCorrections:
    """The corrections found in one account, as examples, with counts for the report."""

    account: str
    label_mode: str
    examples: tuple[Example, ...]
    ambiguous: tuple[str, ...] = ()
    own_labels: int = 0
    unparseable: tuple[str, ...] = field(default=())

    def counts(self) -> dict[str, int]:
        return {CRITICAL: sum(e.label == CRITICAL for e in self.examples),
                ROUTINE: sum(e.label == ROUTINE for e in self.examples)}

    def to_json(self) -> dict:
        return {"account": self.account, "label_mode": self.label_mode, **self.counts(),
                "ambiguous": len(self.ambiguous), "own_labels": self.own_labels,
                "unparseable": len(self.unparseable)}

    def summary(self) -> str:
        c = self.counts()
        extra = []
        if self.ambiguous:
            extra.append(f"{len(self.ambiguous)} left out as contradictory")
        if self.unparseable:
            extra.append(f"{len(self.unparseable)} unreadable")
        return (f"{self.account}: {c[CRITICAL]} critical and {c[ROUTINE]} routine correction(s) "
                f"(label mode {self.label_mode})" + (f"; {', '.join(extra)}" if extra else ""))


# ------------------------------------------------------------------------------------- the rules (pure)


def counts_as_user(e: Evidence, verdict: str | None, label_mode: str) -> bool:
    """Is this evidence the user's doing, not mailsort's own label? (see the module docstring)"""
    if e.kind == "keyword":
        return verdict in (CRITICAL, ROUTINE) and verdict != e.label
    if label_mode == "keyword":
        return True
    return verdict != e.label


def resolve(evidence: Iterable[Evidence], verdicts: Mapping[str, str], label_mode: str) -> Resolution:
    """One label per message: the user's latest placement (see the module docstring)."""
    groups: dict[str, list[Evidence]] = {}
    own = 0
    for e in evidence:
        if counts_as_user(e, verdicts.get(e.key), label_mode):
            groups.setdefault(e.key, []).append(e)
        else:
            own += 1
    winners: dict[str, Evidence] = {}
    ambiguous: list[str] = []
    for key, items in groups.items():
        best = _latest(items, verdicts.get(key))
        if best is None:
            ambiguous.append(key)
        else:
            winners[key] = best
    return Resolution(winners, tuple(sorted(ambiguous)), own)


def _latest(items: list[Evidence], verdict: str | None) -> Evidence | None:
    folders = [e for e in items if e.kind == "folder"]
    pool = folders or items
    if len({e.label for e in pool}) == 1:
        dated = [e for e in pool if e.saved_at is not None]
        return max(dated, key=lambda e: e.saved_at) if dated else pool[0]
    if all(e.saved_at is not None for e in pool):
        ordered = sorted(pool, key=lambda e: e.saved_at)
        if ordered[-1].saved_at != ordered[-2].saved_at:
            return ordered[-1]
    against = [e for e in pool if verdict in (CRITICAL, ROUTINE) and e.label != verdict]
    return against[0] if against else None


def to_example(account: str, key: str, label: str, message) -> Example | None:
    """A parsed message as a training example (None when it has no text at all)."""
    if not (message.subject.strip() or message.text.strip()):
        return None
    return Example(id=f"imap:{account}:{key}", lang=message.language, subject=message.subject,
                   body=message.text, label=label, source=f"corrections/{account}")


# ------------------------------------------------------------------------------------- reading the server


def evidence_in(session: ImapSession, config: Config, account: AccountConfig) -> list[Evidence]:
    """Every folder placement in Critical/Routine, and (keyword mode) every label keyword in the
    watched folders, the later folder and those two folders: one SEARCH + one cheap FETCH each."""
    mode = session.label_mode
    names = {CRITICAL: config.labels.critical, ROUTINE: config.labels.routine}
    keywords = {keyword_for(name).lower(): label for label, name in names.items()}
    existing = session.folders()

    def keyword_evidence(folder: str, p: Placement) -> list[Evidence]:
        return [Evidence(_key(folder, p), keywords[f.lower()], "keyword", folder, p.uid)
                for f in p.flags if f.lower() in keywords]

    out: list[Evidence] = []
    for label, folder in names.items():
        if folder not in existing:
            continue
        for p in session.placements(folder):
            out.append(Evidence(_key(folder, p), label, "folder", folder, p.uid, p.saved_at))
            if mode == "keyword":
                out += keyword_evidence(folder, p)
    if mode == "keyword":
        crit, rout = (keyword_for(n) for n in names.values())
        others = dict.fromkeys([*account.folders, config.folders.later])
        for folder in others:
            if folder in names.values() or (folder not in existing and folder.upper() != "INBOX"):
                continue
            for p in session.placements(folder, f"OR KEYWORD {crit} KEYWORD {rout}"):
                out += keyword_evidence(folder, p)
    return out


def _key(folder: str, p: Placement) -> str:
    return p.message_id or f"{folder}#{p.uid}"


def account_corrections(session: ImapSession, config: Config, account: AccountConfig,
                        verdicts: Mapping[str, str]) -> AccountCorrections:
    """The corrections of one account: find the evidence, resolve it, fetch and parse the winners."""
    from .message import UnparseableMessage, parse

    resolution = resolve(evidence_in(session, config, account), verdicts, session.label_mode)
    by_folder: dict[str, dict[int, Evidence]] = {}
    for e in resolution.winners.values():
        by_folder.setdefault(e.folder, {})[e.uid] = e
    examples: list[Example] = []
    unparseable: list[str] = []
    for folder, wanted in by_folder.items():
        for fetched in session.fetch_uids(folder, sorted(wanted)):
            e = wanted[fetched.uid]
            try:
                example = to_example(account.name, e.key, e.label, parse(fetched.raw, uid=fetched.uid, folder=folder))
            except UnparseableMessage:
                example = None
            if example is None:
                unparseable.append(e.key)
            else:
                examples.append(example)
    examples.sort(key=lambda x: x.id)
    return AccountCorrections(account.name, session.label_mode, tuple(examples), resolution.ambiguous,
                              resolution.own_labels, tuple(unparseable))


def recorded_verdicts(config: Config, account: str) -> dict[str, str]:
    """Message-ID -> the label mailsort gave it, from the state database (empty when there is none)."""
    from .store import Store

    if not config.state_path.exists():
        return {}
    with Store(config.state_path) as store:
        return {m.message_id: m.label for m in store.messages(account) if m.message_id}


def gather_corrections(
    config: Config,
    account_names: Sequence[str],
    *,
    session_factory: Callable[..., ImapSession] = open_session,
    progress: Callable[[str], None] | None = None,
) -> list[AccountCorrections]:
    """The corrections of each named account. A server failure raises (ServerError): retraining
    without an account's corrections would silently drop what the user taught it before."""
    accounts = [config.account(name) for name in account_names]  # unknown names fail before connecting
    out: list[AccountCorrections] = []
    for account in accounts:
        if progress:
            progress(f"{account.name}: reading corrections from {account.imap.host}")
        verdicts = recorded_verdicts(config, account.name)
        # SELECT, not EXAMINE: some servers (Dovecot) answer EXAMINE with empty PERMANENTFLAGS, which
        # would resolve label mode `auto` to folders. Nothing is written: BODY.PEEK, no STORE.
        with session_factory(account, label_mode=config.labels.mode) as session:
            found = account_corrections(session, config, account, verdicts)
        if progress:
            progress(found.summary())
        out.append(found)
    return out
