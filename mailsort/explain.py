"""`mailsort explain FILE`: the whole decision for one .eml, and why — the same path sync takes.

A shell function (it may read the model, the templates and the state database) around the pure core:
parse -> classify -> RFC 3834 guard + history -> policy.decide -> render the replies it would send.
Nothing is sent or changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable

from .autoreply import reply_address
from .calendar import WorkCalendar
from .config import AccountConfig, Config, ServerConfig
from .errors import UsageError
from .message import UnparseableMessage, parse
from .policy import History, Settings, decide
from .replies import Templates, build_reply

TOP_TERMS = 8


@dataclass(frozen=True)
class GivenVerdict:
    """A verdict from the command line (--label), when no model is wanted or available."""

    label: str
    p_critical: float


def explain(config: Config, raw: bytes, *, now: datetime, account: str | None = None, label: str | None = None,
            classifier_factory: Callable[[], Any] | None = None, store: Any = None, name: str = "") -> dict[str, Any]:
    """The explain document: DESIGN.md's `explain --json` shape plus the rendered replies.

    `label` replaces the classifier; `store` (a Store, when the state file exists) supplies the sender's
    reply history and whether we have seen them before — without it the sender counts as known."""
    try:
        message = parse(raw)
    except UnparseableMessage as exc:
        raise UsageError(f"{name or 'input'}: not a mail message ({exc})") from None
    chosen = config.account(account) if account else (config.accounts[0] if config.accounts else _no_account())
    calendar = WorkCalendar.from_config(config.calendar)
    templates = Templates.load(config.replies.templates_dir)
    settings = Settings.from_config(config, chosen, templates)

    top_terms: list[dict[str, Any]] = []
    if label is not None:
        verdict: Any = GivenVerdict(label, 1.0 if label == "critical" else 0.0)
    else:
        if classifier_factory is None:
            raise UsageError("explain needs a model or --label critical|routine")
        classifier = classifier_factory()
        verdict = classifier.predict([(message.subject, message.text)])[0]
        explain_terms = getattr(classifier, "explain", None)
        if explain_terms is not None:
            top_terms = [{"term": term, "weight": weight}
                         for term, weight in explain_terms(message.subject, message.text, k=TOP_TERMS)]

    to = reply_address(message)
    if store is not None:
        history = History(replies=tuple(store.reply_history(chosen.name, to)) if to else (),
                          seen_before=bool(message.sender) and store.sender_seen_before(chosen.name, message.sender, now))
    else:
        history = History()
    decision = decide(message, verdict, calendar, history, now, settings)

    from_address = chosen.addresses[0] if chosen.addresses else (chosen.imap.username or "me@localhost.invalid")
    replies = []
    for action in decision.of_type("reply"):
        reply = build_reply(message, action, calendar=calendar, settings=settings, now=now, from_address=from_address,
                            templates=templates, account=chosen.name)
        replies.append({"template": action.template, "language": action.language, "to": action.to,
                        "send_at": action.send_at.isoformat() if action.send_at else None,
                        "subject": str(reply["Subject"]), "message_id": str(reply["Message-ID"]),
                        "body": reply.get_content().replace("\r\n", "\n")})
    data = decision.to_json()
    return {
        "file": name,
        "account": chosen.name,
        "label": data["label"],
        "p_critical": data["p_critical"],
        "language": message.language,
        "sender": message.sender,
        "subject": message.subject,
        "open_now": data["open_now"],
        "situation": data["situation"],
        "client": data["client"],
        "auto_reply": data["auto_reply"],
        "actions": data["actions"],
        "history": {"from_state": store is not None, "earlier_replies": len(history.replies),
                    "seen_before": history.seen_before},
        "top_terms": top_terms,
        "replies": replies,
    }


def _no_account() -> AccountConfig:
    """Explain works without an [[account]]: no own addresses, nothing to connect to."""
    return AccountConfig("", (), ("INBOX",), ServerConfig("localhost", 143, "none"), None)


def render_text(doc: dict[str, Any]) -> str:
    """The human-readable explanation (what `explain` prints without --json)."""
    lines = [
        f"{doc['file'] or 'message'}: from {doc['sender'] or '?'} — {doc['subject']!r}",
        f"  verdict:    {doc['label']} (p_critical {doc['p_critical']:.2f}), language {doc['language']}"
        + (f", client {doc['client']}" if doc["client"] else ""),
        f"  situation:  {doc['situation']} ({'open' if doc['open_now'] else 'closed'} now)",
        f"  auto-reply: {'allowed' if doc['auto_reply']['allowed'] else 'refused'} — {doc['auto_reply']['reason']}",
    ]
    if doc["top_terms"]:
        lines.append("  why:        " + ", ".join(f"{t['term']} ({t['weight']:+.2f})" for t in doc["top_terms"]))
    lines.append("  actions:")
    for action in doc["actions"] or [{"type": "none"}]:
        if action["type"] == "reply":
            lines.append(f"    reply {action['template']}.{action['language']} to {action['to']} at {action['send_at']}")
        else:
            lines.append(f"    {action['type']} {action.get('target', '')}".rstrip())
    for reply in doc["replies"]:
        lines += ["", f"--- {reply['template']}.{reply['language']} — Subject: {reply['subject']}", reply["body"].rstrip()]
    return "\n".join(lines)
