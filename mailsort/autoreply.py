"""The RFC 3834 guard: may we send an automatic reply to this message, and to whom?

Pure: a function of the message, our own addresses, the reply history and `now`. Every refusal says
why in a short sentence (shown by `mailsort explain` and journaled by sync), and says whether the
refusal means "this is a machine" (`robot=True`: lists, bounces, no-reply senders, ourselves), which
the policy uses to pick the robot rule (label only, never move), or only "not this time" (a recent
reply, an unusable address).

Who gets the reply (RFC 3834 section 4): the RFC recommends the envelope sender (Return-Path) and
allows a personal responder to use the From or Reply-To fields. A freelancer's client expects the
answer where a human reply would go, so we choose Reply-To, then From; the Return-Path is used only
as a veto: a null Return-Path (`<>`) marks a bounce or another automatic message, and we never answer
those. We do not require our address in To/Cc (RFC 3834 section 2 suggests it for vacation
responders) because a freelancer's aliases and forwards are rarely all listed in the config; the
list, bulk and robot checks below catch what that rule is meant to catch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from datetime import datetime, timedelta
from typing import Iterable, Protocol

from .message import Message

BULK_PRECEDENCE = ("bulk", "list", "junk")
LIST_HEADERS = ("list-id", "list-unsubscribe", "list-post")
# Microsoft's X-Auto-Response-Suppress values that ask us not to auto-reply.
SUPPRESS_VALUES = ("all", "oof", "autoreply")
BOUNCE_LOCALPARTS = ("mailer-daemon", "postmaster")
_BOUNCE_HINT = re.compile("|".join(map(re.escape, BOUNCE_LOCALPARTS)))
# Every header _robot_header_reason looks at (a message without any of them skips those lookups).
_ROBOT_HEADERS = frozenset(("auto-submitted", "precedence", *LIST_HEADERS, "x-auto-response-suppress",
                            "x-autoreply", "x-autorespond", "x-campaign"))
# Local parts (after removing a +tag) of addresses nobody reads: no-reply senders and robots.
_NO_REPLY = re.compile(
    r"""^(
        no[-_.]?reply | do[-_.]?not[-_.]?reply | noreply[-_.].* | .*[-_.]no[-_.]?reply
      | bounces? | bounce[-_.+].* | .*[-_.]bounces?
      | mailer[-_.]?daemon | postmaster | listserv | majordomo | .*-request | owner-.*
      | notifications? | notify | alerts?[-_.]?noreply
    )$""",
    re.X | re.I,
)
_ADDRESS = re.compile(r"^[^@\s<>(),;:\"\[\]]+@[^@\s<>(),;:\"\[\]]+\.[^@\s<>(),;:\"\[\]]+$")


class HistoryLike(Protocol):
    """`policy.History` (kept as a protocol so this module does not import the policy)."""

    replies: tuple[tuple[str, datetime], ...]


@dataclass(frozen=True)
class Guard:
    """The guard's answer. `to` is the reply address when one was found (even when refused)."""

    allowed: bool
    reason: str
    to: str = ""
    robot: bool = False


def reply_address(message: Message) -> str:
    """Where a reply would go: the first Reply-To address, else From ("" when neither is usable).

    The sync engine asks the store for the reply history of this address before calling the guard."""
    return _reply_address(tuple(message.reply_to), message.sender)


@lru_cache(maxsize=4096)  # a sender writes many messages: the same answer, remembered (bounded)
def _reply_address(reply_to: tuple[str, ...], sender: str) -> str:
    for address in (*reply_to, sender):
        if address and _ADDRESS.match(address):
            return address.lower()
    return ""


def may_auto_reply(message: Message, own_addresses: Iterable[str], history: HistoryLike | Iterable[tuple[str, datetime]],
                   now: datetime, min_days: int) -> Guard:
    """Decide whether an automatic reply is allowed, checking the cheapest, surest signs first.

    `history` is the (template, send time) list of earlier automatic replies to the reply address
    (or a `policy.History`); a reply queued for later counts as already given."""
    to = _reply_address(tuple(message.reply_to), message.sender)
    robot = _robot_reason(message)
    if robot:
        return Guard(False, robot, to, robot=True)

    own = _own_set(tuple(own_addresses))
    ours, no_reply = _address_refusals(message.sender, to, message.return_path or "", own)
    if ours:
        return Guard(False, ours, to, robot=True)
    if own:  # (with no own address, no X-Loop can name one)
        loop = (message.header("x-loop") or "").lower()
        if loop and any(a in loop for a in own):
            return Guard(False, "X-Loop names one of our addresses: a mail loop", to, robot=True)
    if no_reply:
        return Guard(False, no_reply, to, robot=True)
    if not to:
        return Guard(False, "no usable address to reply to (no valid Reply-To or From)", "")

    replies = history.replies if hasattr(history, "replies") else tuple(history)  # type: ignore[union-attr]
    if min_days > 0 and replies:  # (no earlier reply: nothing recent to look for)
        since = now - timedelta(days=min_days)
        recent = sorted(t for _, t in replies if t is not None and t > since)
        if recent:
            return Guard(False, f"{to} already got an automatic reply at {recent[-1].isoformat()} "
                                f"(at most one per {min_days} days)", to)
    return Guard(True, f"ok: a person's message; the reply goes to {to}", to)


@lru_cache(maxsize=64)  # our own addresses are the same for every message of an account
def _own_set(own_addresses: tuple[str, ...]) -> frozenset[str]:
    return frozenset(_canonical(a) for a in own_addresses if a)


@lru_cache(maxsize=4096)  # a sender writes many messages: the same answers, remembered (bounded)
def _address_refusals(sender: str, to: str, return_path: str, own: frozenset[str]) -> tuple[str, str]:
    """Why these addresses refuse a reply: (one of ours, a no-reply style address), "" when not."""
    ours = no_reply = ""
    for candidate in {sender, to, return_path} - {""}:
        if _canonical(candidate) in own:
            ours = f"sent by one of our own addresses ({candidate})"
            break
    for candidate in {sender, to} - {""}:
        if _NO_REPLY.match(_local(candidate)):
            no_reply = f"no-reply style address ({candidate}): nobody reads replies there"
            break
    return ours, no_reply


def _robot_reason(message: Message) -> str:
    """Why the message comes from a machine (RFC 3834 section 2 and common practice), or ""."""
    for name, _ in message.headers:
        if name in _ROBOT_HEADERS:  # rare: most mail has none of them, and then needs none of the lookups
            reason = _robot_header_reason(message)
            if reason:
                return reason
            break
    if message.content_type == "multipart/report":
        return "delivery or disposition report (multipart/report): a bounce"
    if message.return_path == "":
        return "null Return-Path <>: a bounce or another automatic message"
    return _bounce_reason(message.sender, message.return_path or "")


def _bounce_reason(sender: str, return_path: str) -> str:
    for address in (sender, return_path):
        # (a bounce local part is in the lower-cased address: looked for first, it spares _local nearly always)
        if _BOUNCE_HINT.search(address.lower()) and _local(address) in BOUNCE_LOCALPARTS:
            return f"sent by {address}: a bounce"
    return ""


def _robot_header_reason(message: Message) -> str:
    """The robot signs in the headers, checked in this order (the first one found is the reason)."""
    auto = (message.header("auto-submitted") or "").split(";")[0].strip().lower()
    if auto and auto != "no":
        return f"Auto-Submitted: {auto} (automatic messages are never answered)"
    precedence = (message.header("precedence") or "").strip().lower()
    if precedence in BULK_PRECEDENCE:
        return f"Precedence: {precedence} (bulk or list mail)"
    for name in LIST_HEADERS:
        if message.header(name):
            return f"mailing list ({_title(name)} header)"
    suppress = {v.strip().lower() for v in (message.header("x-auto-response-suppress") or "").split(",")}
    hit = suppress & set(SUPPRESS_VALUES)
    if hit:
        return f"X-Auto-Response-Suppress: {sorted(hit)[0]} (the sender asks for no automatic replies)"
    for name in ("x-autoreply", "x-autorespond"):
        if message.header(name):
            return f"{_title(name)} header: the message is itself an automatic reply"
    if message.header("x-campaign"):
        return "X-Campaign header: a marketing campaign"
    return ""


def _local(address: str) -> str:
    return address.rpartition("@")[0].split("+", 1)[0].lower() if "@" in address else address.lower()


def _canonical(address: str) -> str:
    """Lower-cased, without a +tag: me+shop@example.org is still me@example.org."""
    address = address.strip().lower()
    local, _, domain = address.rpartition("@")
    return f"{local.split('+', 1)[0]}@{domain}" if local else address


def _title(name: str) -> str:
    return "-".join(part.capitalize() for part in name.split("-"))
