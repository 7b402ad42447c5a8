"""What to do with one message: `decide(message, verdict, calendar, history, now, settings) -> Decision`.

Pure: a function of its inputs, the clock included. The shell (sync.py) gathers the inputs (the
verdict from the classifier, the sender's history from the store) and applies the actions.

The rules are data, like the `holidays` registry: `DEFAULT_RULES` maps each *situation* (critical or
routine × open, closed, absence, robot) to a `Rule` — label? move? flag? which reply, when? notify?
— and the config's `[policy.<situation>]` tables override single fields (validated by `parse_rules`,
called from config.py). `decide` only finds the situation, takes its rule and turns it into actions,
after the checks no table may switch off: the RFC 3834 guard (robots, lists, bounces, ourselves,
one reply per sender per `min_days_between`), the age limit (a first sync of an old mailbox must not
answer years of mail), and one absence notice per sender per absence.

Mail from a configured `[[client]]` gets a second label, `Client/<name>` (`clients.client_label`), in
every situation whose rule labels at all, so a client's whole history is one search away.

Expectations (the "how I work" note to a first-time sender) ride along only when the situation has no
reply of its own: a message gets at most one automatic reply. The situational reply wins because it
already says what matters now (when the message will be handled, the hours, the urgent path, the fee
note); a second automatic mail in the same minute would be noise.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from functools import cached_property, lru_cache
from typing import Any, Mapping, Protocol

from .autoreply import Guard, may_auto_reply
from .calendar import Moment, NeverOpenError, WorkCalendar
from .clients import ClientIndex, client_label, match_any
from .config import Absence, AccountConfig, ClientConfig, Config, FoldersConfig, LabelsConfig, RepliesConfig
from .errors import ConfigError
from .message import Message

ACTION_TYPES = ("label", "move", "flag", "reply", "notify")
FLAGGED = "\\Flagged"
REPLY_TIMES = ("never", "at_once", "next_opening")
SITUATIONS = ("critical_open", "critical_closed", "routine_open", "routine_closed",
              "critical_absence", "routine_absence", "critical_robot", "routine_robot")
# Config shorthands: one table that sets the same fields in several situations (specific tables win).
SITUATION_GROUPS = {"absence": ("critical_absence", "routine_absence"), "robot": ("critical_robot", "routine_robot")}
DEFAULT_MAX_REPLY_AGE = timedelta(days=3)
_TEMPLATE_NAME = re.compile(r"^[a-z0-9_]+$")


class VerdictLike(Protocol):
    label: str
    p_critical: float


@dataclass(frozen=True)
class Rule:
    """What one situation calls for. `move` is False (stays), True (the *later* folder) or a folder name;
    `reply` is never | at_once | next_opening, with `template`; `expectations` allows the first-contact
    note when the rule has no reply of its own."""

    label: bool = True
    flag: bool = False
    move: bool | str = False
    reply: str = "never"
    template: str = ""
    notify: bool = False
    expectations: bool = True


DEFAULT_RULES: Mapping[str, Rule] = {
    # The owner is at work and sees the flag; a "how I work" note would be tone-deaf to someone whose site is down.
    "critical_open": Rule(flag=True, expectations=False),
    "critical_closed": Rule(flag=True, reply="at_once", template="critical_ack", notify=True),
    "routine_open": Rule(),
    "routine_closed": Rule(move=True, reply="next_opening", template="after_hours"),
    "critical_absence": Rule(flag=True, reply="at_once", template="absence", notify=True),
    "routine_absence": Rule(move=True, reply="at_once", template="absence"),
    "critical_robot": Rule(expectations=False),
    "routine_robot": Rule(expectations=False),
}
RULE_FIELDS = {f: type(getattr(Rule(), f)) for f in Rule.__dataclass_fields__}


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
        """The non-empty fields (written for every handled message: kept cheaper than asdict, unrolled)."""
        data: dict[str, Any] = {"type": self.type}
        if self.target:
            data["target"] = self.target
        if self.template:
            data["template"] = self.template
        if self.language:
            data["language"] = self.language
        if self.to:
            data["to"] = self.to
        if self.send_at is not None:
            data["send_at"] = self.send_at.isoformat()
        return data


@dataclass(frozen=True)
class History:
    """What the store knows about this sender, as plain data for the pure decision."""

    replies: tuple[tuple[str, datetime], ...] = ()  # (template, send time) of earlier automatic replies
    seen_before: bool = True  # mail from this sender was handled before


def _default_languages() -> Mapping[str, tuple[str, ...]]:
    from .replies import builtin_languages

    return builtin_languages()


@dataclass(frozen=True)
class Settings:
    """The parts of the config `decide` needs, for one account.

    `template_languages` ({template: languages}) lets the pure decision pick a language a template
    exists in; `max_reply_age` is the age (by the Date header) beyond which mail is never answered."""

    labels: LabelsConfig = field(default_factory=LabelsConfig)
    folders: FoldersConfig = field(default_factory=FoldersConfig)
    replies: RepliesConfig = field(default_factory=RepliesConfig)
    own_addresses: tuple[str, ...] = ()
    clients: tuple[ClientConfig, ...] = ()
    rules: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    notify_kind: str = "none"
    max_reply_age: timedelta = DEFAULT_MAX_REPLY_AGE
    template_languages: Mapping[str, tuple[str, ...]] = field(default_factory=_default_languages)

    @classmethod
    def from_config(cls, config: Config, account: AccountConfig, templates: Any = None) -> "Settings":
        """`templates` (a `replies.Templates`) adds the languages of the user's own templates."""
        languages = templates.languages() if templates is not None else _default_languages()
        return cls(config.labels, config.folders, config.replies, account.addresses, config.clients,
                   config.policy, config.notify.kind, template_languages=languages)

    @cached_property
    def rule_table(self) -> dict[str, "Rule"]:
        """The rules with the overrides applied (built once: decide runs for every message)."""
        return rules_for(self.rules)

    @cached_property
    def client_index(self) -> ClientIndex:
        """The clients, indexed once (decide looks every message's sender up in them)."""
        return ClientIndex(self.clients)

    @cached_property
    def _fixed_actions(self) -> dict[tuple[str, str | None], tuple[tuple["Action", ...], "Action | None"]]:
        """(situation, client name) -> the label/flag/move actions and the notify action of that rule (see
        `_fixed`): the same few for every message, so built once per settings (Actions are immutable)."""
        return {}


@dataclass(frozen=True)
class Decision:
    label: str
    p_critical: float
    open_now: bool
    actions: tuple[Action, ...]
    auto_reply_allowed: bool
    auto_reply_reason: str
    client: str | None = None
    situation: str = ""
    robot: bool = False

    def of_type(self, kind: str) -> tuple[Action, ...]:
        return tuple(a for a in self.actions if a.type == kind)

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "p_critical": round(self.p_critical, 4),
            "open_now": self.open_now,
            "situation": self.situation,
            "client": self.client,
            "auto_reply": {"allowed": self.auto_reply_allowed, "reason": self.auto_reply_reason},
            "actions": [a.to_json() for a in self.actions],
        }


# ------------------------------------------------------------------------------------------ rules


def rules_for(overrides: Mapping[str, Mapping[str, Any]]) -> dict[str, Rule]:
    """The default table with the user's (already validated) overrides applied."""
    table = dict(DEFAULT_RULES)
    for situation, fields in overrides.items():
        if situation in table:
            table[situation] = replace(table[situation], **fields)
    return table


def parse_rules(data: Mapping[str, Any], where: str = "policy") -> dict[str, dict[str, Any]]:
    """Validate the config's `[policy]` tables -> {situation: {field: value}} (shorthands expanded).

    Raises ConfigError naming the key, e.g. `policy.routine_closed.reply: 'later' is not one of ...`."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a table of situations")
    expanded: dict[str, dict[str, Any]] = {}
    named_by: dict[str, str] = {}  # situation -> the config table that last set it, for messages
    ordered = sorted(data.items(), key=lambda kv: kv[0] not in SITUATION_GROUPS)  # shorthands first
    for name, fields in ordered:
        key = f"{where}.{name}"
        if name not in SITUATIONS and name not in SITUATION_GROUPS:
            raise ConfigError(f"{key}: unknown situation (expected one of {', '.join(SITUATIONS + tuple(SITUATION_GROUPS))})")
        if not isinstance(fields, Mapping):
            raise ConfigError(f"{key}: expected a table such as {{ reply = \"at_once\" }}")
        checked = {field_name: _rule_field(f"{key}.{field_name}", field_name, value) for field_name, value in fields.items()}
        for situation in SITUATION_GROUPS.get(name, (name,)):
            expanded.setdefault(situation, {}).update(checked)
            named_by[situation] = name
    table = rules_for(expanded)
    for situation in expanded:
        rule, key = table[situation], f"{where}.{named_by[situation]}"
        if situation.endswith("_robot") and rule.reply != "never":
            raise ConfigError(f"{key}.reply: robots, lists, bounces and our own mail are never answered; "
                              "only 'never' (or false) is allowed here")
        if rule.reply != "never" and not rule.template:
            raise ConfigError(f"{key}.template: a reply needs a template name such as \"after_hours\"")
    return expanded


def _rule_field(key: str, name: str, value: Any) -> Any:
    if name not in RULE_FIELDS:
        raise ConfigError(f"{key}: unknown key (expected {', '.join(RULE_FIELDS)})")
    if name == "reply":
        if value is False:
            return "never"
        if not isinstance(value, str) or value not in REPLY_TIMES:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(REPLY_TIMES)} (or false)")
        return value
    if name == "move":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip() and not any(c in value for c in "\r\n\"()"):
            return value.strip()
        raise ConfigError(f"{key}: expected true (the later folder), false (stays) or a folder name")
    if name == "template":
        if not isinstance(value, str) or not _TEMPLATE_NAME.match(value):
            raise ConfigError(f"{key}: expected a template name such as \"after_hours\" (lower case, digits, _)")
        return value
    if not isinstance(value, bool):
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    return value


# ------------------------------------------------------------------------------------------ helpers


def resolve_client(message: Message, clients: tuple[ClientConfig, ...]) -> ClientConfig | None:
    """The client this message is from (clients.match_any over From, then Reply-To): an exact address
    wins over a domain, a more specific domain over a broader one."""
    if not clients:
        return None
    return match_any([a for a in (message.sender, *message.reply_to) if a], clients)


def return_day(calendar: WorkCalendar, absence: Absence) -> date | None:
    """The first working day after an absence (what "back on ..." means in the absence reply)."""
    start = datetime.combine(absence.end + timedelta(days=1), time(0), tzinfo=calendar.tz)
    try:
        return calendar.next_opening(start).astimezone(calendar.tz).date()
    except NeverOpenError:
        return None


def choose_language(message: Message, template: str, client: ClientConfig | None, settings: Settings) -> str:
    """The client's configured language, else the message's language, else the default — each only when
    the template exists in it."""
    available = settings.template_languages.get(template, ())
    for language in ((client.language if client else None), message.language):
        if language and language.lower() in available:
            return language.lower()
    return settings.replies.default_language


def situation_of(critical: bool, open_now: bool, absent: bool, robot: bool) -> str:
    kind = "critical" if critical else "routine"
    if robot:
        return f"{kind}_robot"
    if absent:
        return f"{kind}_absence"
    return f"{kind}_{'open' if open_now else 'closed'}"


# ------------------------------------------------------------------------------------------ decide


def decide(message: Message, verdict: VerdictLike, calendar: WorkCalendar, history: History, now: datetime,
           settings: Settings) -> Decision:
    """Find the situation, apply its rule, and keep replies within the guard, the age limit and the mode."""
    moment = calendar.moment(now)  # the same for every message of a pass: asked of the calendar once
    open_now, absence = moment.open, moment.absence
    critical = verdict.label == "critical"
    guard = may_auto_reply(message, settings.own_addresses, history, now, settings.replies.min_days_between)
    situation = situation_of(critical, open_now, absence is not None, guard.robot)
    rule = settings.rule_table[situation]
    # resolve_client, through the settings' index
    client = settings.client_index.match_any((message.sender, *message.reply_to)) if settings.clients else None
    age_ok, age_reason = _age_ok(message, now, settings.max_reply_age)

    actions, notify = _fixed(settings, situation, rule, critical, client)
    allowed, reason, replies = _replies(message, rule, guard, history, now, calendar, moment, client, settings,
                                        age_ok, age_reason, situation)
    if replies:
        actions += tuple(replies)
    # The owner hears about critical mail; not about a first sync's backlog of old mail.
    if notify is not None and age_ok:
        actions += (notify,)
    # Decision(...) without the frozen dataclass's __init__, which sets each field through object.__setattr__
    # (one Decision per message): the same object, every field given, in field order
    decision = object.__new__(Decision)
    decision.__dict__.update(label=verdict.label, p_critical=verdict.p_critical, open_now=open_now, actions=actions,
                             auto_reply_allowed=allowed, auto_reply_reason=reason,
                             client=client.name if client else None, situation=situation, robot=guard.robot)
    return decision


def _fixed(settings: Settings, situation: str, rule: Rule, critical: bool,
           client: ClientConfig | None) -> tuple[tuple[Action, ...], Action | None]:
    """The actions of a rule that do not depend on the message: (label, client label, flag, move) and the
    notify action (None when the rule does not notify), remembered per settings (Settings._fixed_actions)."""
    key = (situation, client.name if client is not None else None)  # the client label is made of the name alone
    known = settings._fixed_actions.get(key)
    if known is None:
        actions: list[Action] = []
        if rule.label:
            actions.append(Action("label", settings.labels.critical if critical else settings.labels.routine))
            if client is not None:  # the client's whole history one search away, in any mail program
                actions.append(Action("label", client_label(client, settings.labels)))
        if rule.flag:
            actions.append(Action("flag", FLAGGED))
        if rule.move:
            actions.append(Action("move", settings.folders.later if rule.move is True else str(rule.move)))
        notify = Action("notify", settings.notify_kind) if rule.notify and settings.notify_kind != "none" else None
        known = settings._fixed_actions[key] = (tuple(actions), notify)
    return known


def _replies(message: Message, rule: Rule, guard: Guard, history: History, now: datetime, calendar: WorkCalendar,
             moment: Moment, client: ClientConfig | None, settings: Settings, age_ok: bool, age_reason: str,
             situation: str) -> tuple[bool, str, list[Action]]:
    """(allowed, reason, reply actions): at most one automatic reply per message."""
    if settings.replies.mode == "off":
        return False, "automatic replies are off (replies.mode = \"off\")", []
    if not guard.allowed:
        return False, guard.reason, []
    if not age_ok:
        return False, age_reason, []

    template, when = rule.template, rule.reply
    if when == "never":
        first_contact = not history.seen_before and settings.replies.expectations and rule.expectations
        if not first_contact:
            return True, f"{guard.reason}; no automatic reply in this situation ({situation})", []
        template, when = "expectations", "at_once"
    elif template == "absence" and moment.absence is not None and _told_about(moment.absence, history, calendar):
        absence = moment.absence
        return False, f"{guard.to} was already told about this absence ({absence.start}–{absence.end})", []

    send_at = now if when == "at_once" else moment.next_opening
    if send_at is None:
        return False, "the calendar never opens again: no time to send the reply", []
    action = Action("reply", template=template, language=choose_language(message, template, client, settings),
                    to=guard.to, send_at=send_at.astimezone(calendar.tz))
    return True, guard.reason, [action]


def _age_ok(message: Message, now: datetime, limit: timedelta) -> tuple[bool, str]:
    if message.date is None:
        return False, "no usable Date header: cannot tell how old the message is, so it is not answered"
    if now - message.date > limit:
        return False, f"older than {_days(limit)} (dated {message.date.isoformat()}): old mail is never answered"
    return True, ""


def _told_about(absence: Absence, history: History, calendar: WorkCalendar) -> bool:
    """An absence notice is sent once per sender per absence, however long the absence."""
    for template, sent in history.replies:
        if template == "absence" and sent is not None and absence.start <= sent.astimezone(calendar.tz).date() <= absence.end:
            return True
    return False


@lru_cache(maxsize=16)  # the same max_reply_age for every old message of a pass
def _days(delta: timedelta) -> str:
    days = delta.total_seconds() / 86400
    return f"{days:g} day{'s' if days != 1 else ''}"
