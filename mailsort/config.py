"""TOML config -> typed, frozen objects.

Every mistake becomes a `ConfigError` whose one-line message names the key (``calendar.hours.mon[1]``)
and says what was expected, so the user can fix the file without reading code. Passwords are never
read from the file: only the *name* of an environment variable, a command, or the system keyring.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from dataclasses import dataclass, field
from datetime import date, time
from pathlib import Path
from typing import Any, Iterator, Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import platformdirs

from .errors import ConfigError

APP_NAME = "mailsort"
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
LABEL_MODES = ("auto", "keyword", "gmail", "folder")
SECURITY_MODES = ("tls", "starttls", "none")
REPLY_MODES = ("send", "draft", "off")
NOTIFY_KINDS = ("none", "command", "email")
_RANGE = re.compile(r"^(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})$")
_SECRET_KEYS = ("password", "pass", "passwd", "secret")


def default_config_path() -> Path:
    """`--config`, else `$MAILSORT_CONFIG`, else config.toml in the user config dir."""
    env = os.environ.get("MAILSORT_CONFIG")
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_config_dir(APP_NAME)) / "config.toml"


def default_state_path() -> Path:
    return Path(platformdirs.user_data_dir(APP_NAME)) / "state.sqlite3"


def cache_dir() -> Path:
    """Where unpacked copies of the models are kept (`$MAILSORT_CACHE_DIR`, else the user cache dir):
    anything in it can be deleted at any time and is made again."""
    return Path(os.environ.get("MAILSORT_CACHE_DIR") or platformdirs.user_cache_dir(APP_NAME))


# --------------------------------------------------------------------------------------- records


@dataclass(frozen=True)
class TimeRange:
    """One opening range of a day; `end` may be 24:00, stored as None-free minutes."""

    start_minute: int
    end_minute: int

    @property
    def start(self) -> time:
        return time(self.start_minute // 60, self.start_minute % 60)

    def __str__(self) -> str:
        return f"{_hhmm(self.start_minute)}-{_hhmm(self.end_minute)}"


@dataclass(frozen=True)
class Absence:
    start: date
    end: date  # inclusive
    note: str = ""


@dataclass(frozen=True)
class CalendarConfig:
    timezone: str = "UTC"
    hours: Mapping[int, tuple[TimeRange, ...]] = field(default_factory=dict)  # 0 = Monday
    holiday_country: str | None = None
    holiday_subdivision: str | None = None
    absences: tuple[Absence, ...] = ()


@dataclass(frozen=True)
class ServerConfig:
    host: str
    port: int
    security: str
    username: str | None = None
    password_env: str | None = None
    password_command: str | None = None
    password_keyring: bool = False


@dataclass(frozen=True)
class AccountConfig:
    name: str
    addresses: tuple[str, ...]
    folders: tuple[str, ...]
    imap: ServerConfig
    smtp: ServerConfig | None


@dataclass(frozen=True)
class LabelsConfig:
    mode: str = "auto"
    critical: str = "Critical"
    routine: str = "Routine"
    processed: str = "mailsort-done"
    overdue: str = "Overdue"
    client_prefix: str = "Client/"


@dataclass(frozen=True)
class FoldersConfig:
    later: str = "Later"
    sent: str | None = None  # None: found by SPECIAL-USE \Sent, else "Sent"
    drafts: str | None = None


@dataclass(frozen=True)
class RepliesConfig:
    mode: str = "send"
    default_language: str = "en"
    min_days_between: int = 4
    owner_name: str = ""
    signature: str = ""
    fee_note: str = ""
    reply_within_hours: int = 24
    templates_dir: Path | None = None
    expectations: bool = True
    thank_you: bool = True
    digest: bool = True  # the owner's digest (overdue, due today, critical open) at each opening


@dataclass(frozen=True)
class NotifyConfig:
    kind: str = "none"
    command: str | None = None
    to: str | None = None


@dataclass(frozen=True)
class ClientConfig:
    name: str
    addresses: tuple[str, ...] = ()
    domains: tuple[str, ...] = ()
    language: str | None = None
    fee_note: str = ""


@dataclass(frozen=True)
class Config:
    path: Path | None
    state_path: Path
    calendar: CalendarConfig
    labels: LabelsConfig
    folders: FoldersConfig
    replies: RepliesConfig
    notify: NotifyConfig
    accounts: tuple[AccountConfig, ...]
    clients: tuple[ClientConfig, ...] = ()
    policy: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    model_path: Path | None = None

    def account(self, name: str) -> AccountConfig:
        for account in self.accounts:
            if account.name == name:
                return account
        known = ", ".join(a.name for a in self.accounts) or "none"
        raise ConfigError(f"no account named {name!r} in the config (accounts: {known})")


# --------------------------------------------------------------------------------------- reading


class _Table:
    """A TOML table read key by key; remembers which keys were used to report unknown ones."""

    def __init__(self, data: Any, where: str):
        if not isinstance(data, dict):
            raise ConfigError(f"{where or 'the file'}: expected a table, got {_kind(data)}")
        self.data = data
        self.where = where
        self.used: set[str] = set()
        for name in data:  # checked first: a secret in the file is the worst mistake to let pass
            if name.lower() in _SECRET_KEYS:
                raise ConfigError(
                    f"{self.key(name)}: passwords must not be written in the config file; use "
                    "password_env (an environment variable), password_command or password_keyring"
                )

    def key(self, name: str) -> str:
        return f"{self.where}.{name}" if self.where else name

    def get(self, name: str, kind: type | tuple[type, ...], default: Any = None, required: bool = False) -> Any:
        self.used.add(name)
        if name not in self.data:
            if required:
                raise ConfigError(f"{self.key(name)}: missing (expected {_kind_name(kind)})")
            return default
        value = self.data[name]
        if kind is int and isinstance(value, bool) or not isinstance(value, kind):
            raise ConfigError(f"{self.key(name)}: expected {_kind_name(kind)}, got {_kind(value)}")
        return value

    def str_list(self, name: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        value = self.get(name, list, None)
        if value is None:
            return default
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise ConfigError(f"{self.key(name)}[{i}]: expected a string, got {_kind(item)}")
        return tuple(value)

    def table(self, name: str) -> "_Table":
        return _Table(self.get(name, dict, {}), self.key(name))

    def table_list(self, name: str) -> Iterator["_Table"]:
        value = self.get(name, list, [])
        for i, item in enumerate(value):
            yield _Table(item, f"{self.key(name)}[{i}]")

    def done(self) -> None:
        unknown = [k for k in self.data if k not in self.used]
        if unknown:
            raise ConfigError(f"{self.key(unknown[0])}: unknown key")


def load_config(path: Path) -> Config:
    """Read and validate a config file; raises ConfigError with a one-line message."""
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no config file here (create one with `mailsort init {path}`)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    return parse_config(data, path)


def parse_config(data: Mapping[str, Any], path: Path | None = None) -> Config:
    root = _Table(dict(data), "")
    state = root.table("state")
    state_path = Path(state.get("path", str, str(default_state_path()))).expanduser()
    state.done()

    calendar = _parse_calendar(root.table("calendar"))

    labels_t = root.table("labels")
    labels = LabelsConfig(
        mode=_choice(labels_t, "mode", LABEL_MODES, "auto"),
        critical=_name(labels_t, "critical", "Critical"),
        routine=_name(labels_t, "routine", "Routine"),
        processed=_name(labels_t, "processed", "mailsort-done"),
        overdue=_name(labels_t, "overdue", "Overdue"),
        client_prefix=labels_t.get("client_prefix", str, "Client/"),
    )
    labels_t.done()

    folders_t = root.table("folders")
    folders = FoldersConfig(
        later=_name(folders_t, "later", "Later"),
        sent=folders_t.get("sent", str, None),
        drafts=folders_t.get("drafts", str, None),
    )
    folders_t.done()

    replies = _parse_replies(root.table("replies"), path)
    notify = _parse_notify(root.table("notify"))

    accounts = tuple(_parse_account(t) for t in root.table_list("account"))
    seen: set[str] = set()
    for i, account in enumerate(accounts):
        if account.name in seen:
            raise ConfigError(f"account[{i}].name: two accounts are named {account.name!r}; names must be unique")
        seen.add(account.name)

    clients = tuple(_parse_client(t) for t in root.table_list("client"))
    policy = _parse_policy(root.get("policy", dict, {}))
    classifier = root.table("classifier")
    model = classifier.get("model", str, None)
    classifier.done()
    root.done()
    return Config(
        path=path,
        state_path=state_path,
        calendar=calendar,
        labels=labels,
        folders=folders,
        replies=replies,
        notify=notify,
        accounts=accounts,
        clients=clients,
        policy=policy,
        model_path=Path(model).expanduser() if model else None,
    )


def _parse_calendar(t: _Table) -> CalendarConfig:
    tz = t.get("timezone", str, "UTC")
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{t.key('timezone')}: unknown time zone {tz!r} (expected an IANA name such as 'Europe/Madrid')") from None

    hours_t = t.table("hours")
    hours: dict[int, tuple[TimeRange, ...]] = {}
    for index, day in enumerate(WEEKDAYS):
        ranges = hours_t.str_list(day)
        hours[index] = _parse_ranges(ranges, hours_t.key(day))
    hours_t.done()
    if not any(hours.values()):
        raise ConfigError(f"{t.key('hours')}: no opening hours on any day; the calendar would never open")

    country = subdivision = None
    hol = t.get("holidays", dict, None)
    if hol is not None:
        ht = _Table(hol, t.key("holidays"))
        country = ht.get("country", str, required=True).upper()
        subdivision = ht.get("subdivision", str, None)
        ht.done()
        _check_holidays(country, subdivision, ht)

    absences = []
    for at in t.table_list("absence"):
        start = at.get("start", date, required=True)
        end = at.get("end", date, required=True)
        if end < start:
            raise ConfigError(f"{at.key('end')}: {end} is before start {start}")
        absences.append(Absence(start, end, at.get("note", str, "")))
        at.done()
    t.done()
    return CalendarConfig(tz, hours, country, subdivision, tuple(sorted(absences, key=lambda a: a.start)))


def _parse_ranges(ranges: tuple[str, ...], key: str) -> tuple[TimeRange, ...]:
    parsed = []
    for i, text in enumerate(ranges):
        m = _RANGE.match(text.strip())
        where = f"{key}[{i}]"
        if not m:
            raise ConfigError(f"{where}: {text!r} is not a time range; expected 'HH:MM-HH:MM' such as '09:00-17:30'")
        h1, m1, h2, m2 = (int(g) for g in m.groups())
        if h1 > 23 or m1 > 59 or h2 > 24 or m2 > 59 or (h2 == 24 and m2 != 0):
            raise ConfigError(f"{where}: {text!r} has an impossible time; hours run 00:00 to 24:00")
        start, end = h1 * 60 + m1, h2 * 60 + m2
        if end <= start:
            raise ConfigError(f"{where}: {text!r} ends before it starts; a range cannot cross midnight (split it over two days)")
        parsed.append(TimeRange(start, end))
    parsed.sort(key=lambda r: r.start_minute)
    for a, b in zip(parsed, parsed[1:]):
        if b.start_minute < a.end_minute:
            raise ConfigError(f"{key}: ranges {a} and {b} overlap")
    return tuple(parsed)


def _check_holidays(country: str, subdivision: str | None, t: _Table) -> None:
    import holidays

    supported = holidays.list_supported_countries()
    if country not in supported:
        raise ConfigError(f"{t.key('country')}: unknown holiday country {country!r} (expected an ISO 3166 code such as 'ES', 'IT', 'RU')")
    if subdivision is not None and subdivision not in supported[country]:
        known = ", ".join(supported[country]) or "none"
        raise ConfigError(f"{t.key('subdivision')}: {country} has no subdivision {subdivision!r} (known: {known})")


def _parse_server(t: _Table, default_port: dict[str, int]) -> ServerConfig:
    host = t.get("host", str, required=True).strip()
    security = _choice(t, "security", SECURITY_MODES, "tls")
    port = t.get("port", int, default_port[security])
    if not 0 < port < 65536:
        raise ConfigError(f"{t.key('port')}: {port} is not a TCP port (1-65535)")
    if security == "none" and not is_loopback(host):
        raise ConfigError(
            f"{t.key('security')}: 'none' (plaintext) is allowed only for a loopback host such as 127.0.0.1, "
            f"not {host!r}; use 'tls' or 'starttls'"
        )
    server = ServerConfig(
        host=host,
        port=port,
        security=security,
        username=t.get("username", str, None),
        password_env=t.get("password_env", str, None),
        password_command=t.get("password_command", str, None),
        password_keyring=t.get("password_keyring", bool, False),
    )
    t.done()
    return server


def _parse_account(t: _Table) -> AccountConfig:
    name = t.get("name", str, required=True).strip()
    if not name:
        raise ConfigError(f"{t.key('name')}: must not be empty")
    addresses = tuple(a.lower() for a in t.str_list("addresses"))
    for i, address in enumerate(addresses):
        if "@" not in address:
            raise ConfigError(f"{t.key('addresses')}[{i}]: {address!r} is not an e-mail address")
    folders = t.str_list("folders", ("INBOX",)) or ("INBOX",)
    imap = _parse_server(t.table("imap"), {"tls": 993, "starttls": 143, "none": 143})
    smtp_data = t.get("smtp", dict, None)
    smtp = _parse_server(_Table(smtp_data, t.key("smtp")), {"tls": 465, "starttls": 587, "none": 25}) if smtp_data else None
    shared_env = t.get("password_env", str, None)
    shared_cmd = t.get("password_command", str, None)
    shared_keyring = t.get("password_keyring", bool, False)
    if sum(bool(x) for x in (shared_env, shared_cmd, shared_keyring)) > 1:
        raise ConfigError(f"{t.key('password_env')}: give only one of password_env, password_command, password_keyring")
    imap = _with_password(imap, shared_env, shared_cmd, shared_keyring)
    if smtp is not None:
        smtp = _with_password(smtp, shared_env, shared_cmd, shared_keyring)
    if imap.username and not (imap.password_env or imap.password_command or imap.password_keyring):
        raise ConfigError(f"{t.key('password_env')}: account {name!r} has a username but no way to get its password "
                          "(set password_env, password_command or password_keyring)")
    t.done()
    return AccountConfig(name, addresses, folders, imap, smtp)


def _with_password(server: ServerConfig, env: str | None, cmd: str | None, keyring: bool) -> ServerConfig:
    """Servers inherit the account's password source unless they name their own."""
    if server.password_env or server.password_command or server.password_keyring:
        return server
    from dataclasses import replace

    return replace(server, password_env=env, password_command=cmd, password_keyring=keyring)


def _parse_replies(t: _Table, config_path: Path | None) -> RepliesConfig:
    templates = t.get("templates_dir", str, None)
    templates_dir = None
    if templates:
        templates_dir = Path(templates).expanduser()
        if not templates_dir.is_absolute() and config_path is not None:
            templates_dir = config_path.parent / templates_dir
    min_days = t.get("min_days_between", int, 4)
    if min_days < 0:
        raise ConfigError(f"{t.key('min_days_between')}: expected a number of days >= 0, got {min_days}")
    within = t.get("reply_within_hours", int, 24)
    if within <= 0:
        raise ConfigError(f"{t.key('reply_within_hours')}: expected a number of working hours > 0, got {within}")
    replies = RepliesConfig(
        mode=_choice(t, "mode", REPLY_MODES, "send"),
        default_language=t.get("default_language", str, "en").lower(),
        min_days_between=min_days,
        owner_name=t.get("owner_name", str, ""),
        signature=t.get("signature", str, ""),
        fee_note=t.get("fee_note", str, ""),
        reply_within_hours=within,
        templates_dir=templates_dir,
        expectations=t.get("expectations", bool, True),
        thank_you=t.get("thank_you", bool, True),
        digest=t.get("digest", bool, True),
    )
    t.done()
    return replies


def _parse_notify(t: _Table) -> NotifyConfig:
    kind = t.get("kind", str, "none")
    if kind not in NOTIFY_KINDS:  # the installed plugins are looked up only when asked for (25 ms a look)
        kind = _choice(t, "kind", NOTIFY_KINDS + tuple(_plugin_notifiers()), "none")
    notify = NotifyConfig(kind=kind, command=t.get("command", str, None), to=t.get("to", str, None))
    if kind == "command" and not notify.command:
        raise ConfigError(f"{t.key('command')}: notify.kind is 'command' but no command is given")
    if kind == "email" and not (notify.to and "@" in notify.to):
        raise ConfigError(f"{t.key('to')}: notify.kind is 'email' but no address is given")
    t.done()
    return notify


def _plugin_notifiers() -> list[str]:
    from importlib.metadata import entry_points

    return [ep.name for ep in entry_points(group="mailsort.notifiers")]


def _parse_policy(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """`[policy.<situation>]` overrides; the rules vocabulary lives with the rules in policy.py."""
    from .policy import parse_rules  # imported here: policy imports this module

    return parse_rules(data, "policy")


def _parse_client(t: _Table) -> ClientConfig:
    client = ClientConfig(
        name=t.get("name", str, required=True),
        addresses=tuple(a.lower() for a in t.str_list("addresses")),
        domains=tuple(d.lower().lstrip("@") for d in t.str_list("domains")),
        language=t.get("language", str, None),
        fee_note=t.get("fee_note", str, ""),
    )
    if not client.addresses and not client.domains:
        raise ConfigError(f"{t.where}: a client needs addresses or domains")
    t.done()
    return client


def _choice(t: _Table, name: str, allowed: tuple[str, ...], default: str) -> str:
    value = t.get(name, str, default)
    if value not in allowed:
        raise ConfigError(f"{t.key(name)}: {value!r} is not one of {', '.join(allowed)}")
    return value


def _name(t: _Table, name: str, default: str) -> str:
    value = t.get(name, str, default).strip()
    if not value or any(c in value for c in "\r\n\"()"):
        raise ConfigError(f"{t.key(name)}: {value!r} is not a usable folder or label name")
    return value


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _kind(value: Any) -> str:
    return {str: "a string", int: "a number", float: "a number", bool: "true/false", list: "a list",
            dict: "a table", date: "a date"}.get(type(value), type(value).__name__)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "a whole number", bool: "true or false", list: "a list", dict: "a table",
             date: "a date such as 2026-12-24"}
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)
