"""What to do with one message: `decide(message, verdict, calendar, history, now, settings) -> Decision`.

Pure: a function of its inputs, the clock included. The shell (sync.py) gathers the inputs (the
verdict from the classifier, the sender's history from the store) and applies the actions.

NOTE: first cut by the lead so the sync engine can be built against the real interface; the policy
work (rules as data, RFC 3834 guard, absences, clients) completes it behind the same signature.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Mapping, Protocol

from .calendar import WorkCalendar
from .config import AccountConfig, ClientConfig, Config, FoldersConfig, LabelsConfig, RepliesConfig
from .message import Message

ACTION_TYPES = ("label", "move", "flag", "reply", "notify")


class VerdictLike(Protocol):
    label: str
    p_critical: float


@dataclass(frozen=True)
class Action:
    """One thing to do. `target` is the label name (label), the folder (move), the IMAP flag (flag)
    or the notifier (notify); reply actions carry template, language, recipient and send time."""

    type: str
    target: str = ""
    template: str = ""
    language: str = ""
    to: str = ""
    send_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        data = {k: v for k, v in asdict(self).items() if v not in ("", None)}
        if self.send_at is not None:
            data["send_at"] = self.send_at.isoformat()
        return data


@dataclass(frozen=True)
class History:
    """What the store knows about this sender, as plain data for the pure decision."""

    replies: tuple[tuple[str, datetime], ...] = ()  # (template, send time) of earlier automatic replies
    seen_before: bool = True  # mail from this sender was handled before


@dataclass(frozen=True)
class Settings:
    """The parts of the config `decide` needs, for one account."""

    labels: LabelsConfig = field(default_factory=LabelsConfig)
    folders: FoldersConfig = field(default_factory=FoldersConfig)
    replies: RepliesConfig = field(default_factory=RepliesConfig)
    own_addresses: tuple[str, ...] = ()
    clients: tuple[ClientConfig, ...] = ()
    rules: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    notify_kind: str = "none"

    @classmethod
    def from_config(cls, config: Config, account: AccountConfig) -> "Settings":
        return cls(config.labels, config.folders, config.replies, account.addresses, config.clients,
                   config.policy, config.notify.kind)


@dataclass(frozen=True)
class Decision:
    label: str
    p_critical: float
    open_now: bool
    actions: tuple[Action, ...]
    auto_reply_allowed: bool
    auto_reply_reason: str
    client: str | None = None

    def of_type(self, kind: str) -> tuple[Action, ...]:
        return tuple(a for a in self.actions if a.type == kind)

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "p_critical": round(self.p_critical, 4),
            "open_now": self.open_now,
            "client": self.client,
            "auto_reply": {"allowed": self.auto_reply_allowed, "reason": self.auto_reply_reason},
            "actions": [a.to_json() for a in self.actions],
        }


def decide(message: Message, verdict: VerdictLike, calendar: WorkCalendar, history: History, now: datetime,
           settings: Settings) -> Decision:
    """The default policy table of DESIGN.md (first cut: no RFC 3834 guard yet)."""
    open_now = calendar.is_open(now)
    critical = verdict.label == "critical"
    actions = [Action("label", settings.labels.critical if critical else settings.labels.routine)]
    if critical:
        actions.append(Action("flag", "\\Flagged"))
    elif not open_now:
        actions.append(Action("move", settings.folders.later))
    return Decision(verdict.label, verdict.p_critical, open_now, tuple(actions), False, "not implemented yet")
