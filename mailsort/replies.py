"""Automatic replies: templates in, `email.message.EmailMessage` out.

Two halves. `Templates` is the loader (the only part that reads files): the built-in
`<name>.<lang>.txt` files shipped in the package, overridden or extended by the files in
`replies.templates_dir`, all compiled once in a jinja2 *sandbox* so a user's template cannot reach
Python internals. `build_reply` is pure: the same message, action, calendar, settings and `now` give
byte-for-byte the same reply (its Message-ID is derived from the dedupe key, not from the clock or
randomness), so a re-render after a crash is identical and the outbox's UNIQUE columns catch repeats.

Values that come from the incoming mail (the sender's name, the subject) are reduced to one clean line
before they reach a header or a template: no CR/LF from outside can ever inject a header.
"""

from __future__ import annotations

import email.utils
import hashlib
import re
from dataclasses import dataclass
from datetime import date, datetime
from email.headerregistry import Address, HeaderRegistry
from email.message import EmailMessage
from email.policy import EmailPolicy
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from .errors import ConfigError
from .message import Message

if TYPE_CHECKING:  # policy imports this module; the types are only for annotations (jinja2: imported on first use)
    import jinja2

    from .calendar import WorkCalendar
    from .policy import Action, Settings

TEMPLATE_FILE = re.compile(r"^(?P<name>[a-z0-9_]+)\.(?P<lang>[a-z]{2,3}(?:[-_][A-Za-z0-9]+)?)\.txt$")
BUILTIN_NAMES = ("after_hours", "critical_ack", "absence", "expectations", "back")
# Reply and forward prefixes in the languages our clients write in ("Re:", "R:", "Rif.:", "AW:",
# "SV:", "Отв:", "RV:", "Re[2]:" ...). One "Re: " replaces all of them, so replies never stack.
_PREFIX = re.compile(r"^\s*(?:(?:re|r|rif|aw|sv|vs|antw|odp|rv|отв|ответ|回复|答复)\s*(?:\[\d+\]|\(\d+\))?\s*\.?\s*[:：]\s*)+",
                     re.I)
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029\u0085]+")
NAME_LIMIT = 80
SUBJECT_LIMIT = 200


class _Headers(HeaderRegistry):
    """The stdlib's header registry, remembering what it makes. It builds a new class for every header
    it is asked for, though the class depends only on the header's name; and every reply has the same
    From, Auto-Submitted, MIME and Content-* fields, each parsed (and later folded) anew. A header
    object is an immutable string with its parse tree: one made from the same name and text can stand
    in every message, and so can its folded form. Bounded: a pass's replies share a dozen."""

    LIMIT = 256  # (name, text) pairs remembered

    def __init__(self) -> None:
        super().__init__()
        self._made: dict[str, type] = {}
        self._parsed: dict[tuple[str, str], Any] = {}
        self.folded: dict[int, dict[tuple, str]] = {}  # id() of a remembered (so living) header -> folds

    def __getitem__(self, name: str) -> type:
        key = name.lower()
        made = self._made.get(key)
        if made is None:
            made = self._made[key] = super().__getitem__(name)
        return made

    def __call__(self, name: str, value: Any) -> Any:
        if type(value) is not str:
            return super().__call__(name, value)
        header = self._parsed.get((name, value))
        if header is None:
            if len(self._parsed) >= self.LIMIT:
                self._parsed.clear()
                self.folded.clear()
            header = self._parsed[(name, value)] = super().__call__(name, value)
            self.folded[id(header)] = {}
        return header


class _MailPolicy(EmailPolicy):
    """An EmailPolicy whose header factory is a `_Headers`: a remembered header is folded once (per
    line length, line ending and utf8 setting: all that folding depends on)."""

    def _fold(self, name: str, value: Any, refold_binary: bool = False) -> str:
        folds = getattr(self.header_factory, "folded", {}).get(id(value))
        if folds is None:
            return super()._fold(name, value, refold_binary)
        key = (self.max_line_length, self.linesep, self.utf8)
        text = folds.get(key)
        if text is None:
            text = folds[key] = super()._fold(name, value, refold_binary)
        return text


MAIL_POLICY = _MailPolicy(linesep="\r\n", header_factory=_Headers())  # policy.SMTP's settings, same output


# ------------------------------------------------------------------------------------------ loading


@dataclass(frozen=True, eq=False)
class Templates:
    """Templates keyed by (name, language); `origin` says which file each came from.

    A template is compiled the first time it is rendered: a pass uses a few of the twenty built-in
    ones, and compiling all of them would cost a tenth of a second in every process that renders. The
    user's own files are still checked (parsed) when loaded, so a syntax error there is a config error
    before anything runs, as it always was."""

    sources: Mapping[tuple[str, str], str]
    origin: Mapping[tuple[str, str], str]
    checked: frozenset[tuple[str, str]] = frozenset()  # keys whose source must be parsed at once

    def __post_init__(self) -> None:
        object.__setattr__(self, "_compiled", {})
        for key in sorted(self.checked):
            self._parsed(key, lambda env, source: env.parse(source))

    @classmethod
    def load(cls, templates_dir: Path | None = None) -> "Templates":
        """The built-in templates, then every `<name>.<lang>.txt` in `templates_dir` on top."""
        sources = dict(_builtin_sources())
        origin = {key: f"built-in template {key[0]}.{key[1]}.txt" for key in sources}
        users: set[tuple[str, str]] = set()
        if templates_dir is not None:
            directory = Path(templates_dir)
            if not directory.is_dir():
                raise ConfigError(f"replies.templates_dir: {directory} is not a directory")
            for path in sorted(directory.iterdir()):
                match = TEMPLATE_FILE.match(path.name)
                if not match or not path.is_file():
                    continue
                key = (match["name"], match["lang"].lower().replace("_", "-"))
                try:
                    sources[key] = path.read_text(encoding="utf-8")
                except (OSError, UnicodeDecodeError) as exc:
                    raise ConfigError(f"replies.templates_dir: cannot read {path} ({exc})") from None
                origin[key] = str(path)
                users.add(key)
        return cls(sources, origin, frozenset(users))

    @classmethod
    def builtin(cls) -> "Templates":
        return _builtin_templates()

    def names(self) -> tuple[str, ...]:
        return tuple(sorted({name for name, _ in self.sources}))

    def available_languages(self, name: str) -> tuple[str, ...]:
        return tuple(sorted(lang for n, lang in self.sources if n == name))

    def languages(self) -> dict[str, tuple[str, ...]]:
        """{template name: languages it exists in}: the data `policy.Settings.template_languages` wants."""
        return {name: self.available_languages(name) for name in self.names()}

    def render(self, name: str, language: str, variables: Mapping[str, Any]) -> str:
        """Render one template. A missing template or an unknown variable is the user's config to fix."""
        import jinja2

        try:
            return self._compile(name, language).render(**variables)
        except jinja2.UndefinedError as exc:
            raise ConfigError(f"{self.origin.get((name, language))}: {exc.message}; available variables: "
                              f"{', '.join(sorted(variables))}") from None
        except jinja2.TemplateError as exc:
            raise ConfigError(f"{self.origin.get((name, language))}: {exc}") from None

    def preload(self) -> None:
        """Import jinja2 and load babel's data for every language there is a template in, now rather
        than at the first reply. The sync's first worker calls it before it forks the second, so that
        both share one copy instead of each loading its own (a fifth of a second of CPU each)."""
        _environment()
        for language in sorted({lang for _, lang in self.sources}):
            format_day(date(2026, 1, 5), language)

    def _compile(self, name: str, language: str) -> "jinja2.Template":
        compiled: dict = self._compiled  # type: ignore[attr-defined]
        key = (name, language)
        if key not in compiled:
            if key not in self.sources:
                known = ", ".join(self.available_languages(name)) or "none"
                raise ConfigError(f"no reply template {name}.{language}.txt (languages for {name!r}: {known})")
            compiled[key] = self._parsed(key, lambda env, source: env.from_string(source))
        return compiled[key]

    def _parsed(self, key: tuple[str, str], read: Callable[[Any, str], Any]) -> Any:
        """`read(environment, source)` in the sandbox; a syntax error is the user's config to fix."""
        import jinja2

        try:
            return read(_environment(), self.sources[key])
        except jinja2.TemplateSyntaxError as exc:
            raise ConfigError(f"{self.origin.get(key, key)}: line {exc.lineno}: {exc.message}") from None


@lru_cache(maxsize=1)
def _environment() -> "jinja2.Environment":
    """The sandbox every template is compiled in: a user's template cannot reach Python internals."""
    import jinja2
    from jinja2.sandbox import SandboxedEnvironment

    return SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)


@lru_cache(maxsize=1)
def _builtin_sources() -> tuple[tuple[tuple[str, str], str], ...]:
    """The templates shipped in the package, read once (importlib.resources works from a wheel too)."""
    found = []
    for entry in resources.files("mailsort").joinpath("templates").iterdir():
        match = TEMPLATE_FILE.match(entry.name)
        if match:
            found.append(((match["name"], match["lang"]), entry.read_text(encoding="utf-8")))
    return tuple(sorted(found))


@lru_cache(maxsize=1)
def _builtin_templates() -> Templates:
    sources = dict(_builtin_sources())
    return Templates(sources, {key: f"built-in template {key[0]}.{key[1]}.txt" for key in sources})


def builtin_languages() -> dict[str, tuple[str, ...]]:
    return _builtin_templates().languages()


# ------------------------------------------------------------------------------------------ pure helpers


def clean_line(value: str | None, limit: int = SUBJECT_LIMIT) -> str:
    """One line of text, safe in a header: control characters (CR, LF, NUL, ...) become spaces."""
    text = _CONTROL.sub(" ", value or "")
    text = re.sub(r"\s{2,}", " ", text).strip()
    return text[:limit].rstrip()


def display_name(message: Message) -> str:
    """The sender's name for a greeting: empty when it is missing or just an address."""
    name = clean_line(message.sender_name, NAME_LIMIT).strip("\"' ")
    if not name or "@" in name or not any(c.isalpha() for c in name):
        return ""
    return name


def reply_subject(subject: str | None) -> str:
    """`Re: ` + the subject without any reply prefixes, so replies never read "Re: RE: R: ..."."""
    base = _PREFIX.sub("", clean_line(subject)).strip()
    return f"Re: {base}" if base else "Re:"


def dedupe_key(account: str, message: Message, template: str) -> str:
    """account + incoming Message-ID + template: the same reply is never queued twice (UNIQUE in the outbox).

    Mail without a Message-ID falls back to sender, date and subject, which identify it well enough."""
    incoming = message.message_id or f"no-id:{message.sender}|{message.date.isoformat() if message.date else ''}|{message.subject}"
    return f"{account}\x1f{incoming}\x1f{template}"


def reply_message_id(key: str, from_address: str) -> str:
    """A Message-ID derived from the dedupe key: deterministic, unique per reply, no clock, no randomness."""
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]
    domain = from_address.rpartition("@")[2] or "mailsort.invalid"
    return f"<mailsort.{digest}@{clean_line(domain, 200)}>"


@lru_cache(maxsize=256)
def format_day(day: date, language: str) -> str:
    """A full, localised date ("lunedì 30 novembre 2026"); unknown locales fall back to English.
    Remembered: babel takes milliseconds, and a pass writes many replies that name the same day."""
    from babel.dates import format_date

    try:
        return format_date(day, format="full", locale=language.replace("-", "_"))
    except (ValueError, LookupError):  # babel's UnknownLocaleError is a LookupError... or ValueError
        return format_date(day, format="full", locale="en")


def hours_summary(hours: Mapping[int, tuple[Any, ...]], language: str) -> str:
    """Weekly hours in words: "lunedì–venerdì 09:00–17:30; sabato 10:00–13:00".

    Consecutive days with the same ranges are joined into one run; day names come from babel."""
    names = _day_names(language)
    groups: list[tuple[int, int, tuple[str, ...]]] = []
    for day in range(7):
        ranges = tuple(_range_text(r) for r in hours.get(day, ()))
        if not ranges:
            continue
        if groups and groups[-1][1] == day - 1 and groups[-1][2] == ranges:
            groups[-1] = (groups[-1][0], day, ranges)
        else:
            groups.append((day, day, ranges))
    parts = []
    for first, last, ranges in groups:
        if first == last:
            days = names[first]
        elif last == first + 1:
            days = f"{names[first]}, {names[last]}"
        else:
            days = f"{names[first]}–{names[last]}"
        parts.append(f"{days} {', '.join(ranges)}")
    return "; ".join(parts)


def _day_names(language: str) -> dict[int, str]:
    from babel.dates import get_day_names

    try:
        return dict(get_day_names("wide", locale=language.replace("-", "_")))
    except (ValueError, LookupError):
        return dict(get_day_names("wide", locale="en"))


def _range_text(r: Any) -> str:
    start, end = r.start_minute, r.end_minute
    return f"{start // 60:02d}:{start % 60:02d}–{end // 60:02d}:{end % 60:02d}"


def _angle(message_id: str) -> str:
    mid = clean_line(message_id, 900).strip()
    if not mid:
        return ""
    return mid if mid.startswith("<") and mid.endswith(">") else f"<{mid.strip('<>')}>"


# ------------------------------------------------------------------------------------------ building


def template_variables(message: Message, action: "Action", *, calendar: "WorkCalendar", settings: "Settings",
                       now: datetime) -> dict[str, Any]:
    """Everything a template may use. Times are shown in the calendar's zone, in the reply's language."""
    from .calendar import NeverOpenError
    from .policy import resolve_client, return_day

    language = action.language or settings.replies.default_language
    local_now = now.astimezone(calendar.tz)
    try:
        opening = calendar.next_opening(local_now).astimezone(calendar.tz)
        next_date, next_time = format_day(opening.date(), language), opening.strftime("%H:%M")
    except NeverOpenError:
        next_date = next_time = ""
    absence = calendar.absence_at(local_now)
    back = return_day(calendar, absence) if absence else None
    client = resolve_client(message, settings.clients)
    return {
        "sender_name": display_name(message),
        "subject": clean_line(message.subject),
        "owner_name": settings.replies.owner_name,
        "signature": settings.replies.signature,
        "next_opening_date": next_date,
        "next_opening_time": next_time,
        "hours": hours_summary(calendar.hours, language),
        "timezone": calendar.tz.key,
        "return_date": format_day(back, language) if back else "",
        "absence_note": absence.note if absence else "",
        "fee_note": (client.fee_note if client and client.fee_note else settings.replies.fee_note),
        "reply_within": str(settings.replies.reply_within_hours),
    }


def build_reply(message: Message, action: "Action", *, calendar: "WorkCalendar", settings: "Settings", now: datetime,
                from_address: str, templates: Templates, account: str = "") -> EmailMessage:
    """Render `action.template` in `action.language` as a complete reply to `message`.

    Headers: From (owner_name + from_address), To (action.to), a single `Re:` subject, In-Reply-To,
    References, `Auto-Submitted: auto-replied` (RFC 3834), `X-Auto-Response-Suppress: All` (so Exchange
    does not answer our answer), Content-Language, a Message-ID derived from the dedupe key of
    (account, incoming Message-ID, template), and Date = the scheduled send time (`action.send_at`, at
    least `now`): a reply queued for Monday 09:00 must not sort into the client's inbox as Friday night.
    The body is UTF-8 text, quoted-printable or base64 (7-bit clean: safe through any relay)."""
    language = action.language or settings.replies.default_language
    body = templates.render(action.template, language,
                            template_variables(message, action, calendar=calendar, settings=settings, now=now))
    if not body.endswith("\n"):
        body += "\n"

    reply = EmailMessage(policy=MAIL_POLICY)
    sender_address = clean_line(from_address, 300)
    # (as text, the same header as from the Address: then every reply shares one, see _Headers)
    reply["From"] = str(Address(display_name=clean_line(settings.replies.owner_name, NAME_LIMIT), addr_spec=sender_address))
    to_name = display_name(message) if action.to == message.sender else ""
    reply["To"] = Address(display_name=to_name, addr_spec=clean_line(action.to, 300))
    reply["Subject"] = reply_subject(message.subject)
    sent = max(now, action.send_at) if action.send_at else now
    reply["Date"] = email.utils.format_datetime(sent.astimezone(calendar.tz))
    reply["Message-ID"] = reply_message_id(dedupe_key(account, message, action.template), sender_address)
    original = _angle(message.message_id)
    if original:
        reply["In-Reply-To"] = original
    references = [r for r in (_angle(x) for x in message.references) if r]
    if original and original not in references:
        references.append(original)
    if references:
        reply["References"] = " ".join(references[-20:])  # the first and the latest matter; keep it bounded
    reply["Auto-Submitted"] = "auto-replied"
    reply["X-Auto-Response-Suppress"] = "All"
    reply["X-Mailer"] = "mailsort"
    # Quoted-printable keeps Latin-script text readable in the raw mail; Cyrillic is shorter in base64.
    ascii_share = sum(c < "\x80" for c in body) / max(len(body), 1)
    reply.set_content(body, charset="utf-8", cte="quoted-printable" if ascii_share > 0.7 else "base64")
    reply["Content-Language"] = language  # after set_content, which clears Content-* headers
    return reply


def owner_message(subject: str, body: str, *, key: str, from_address: str, to: str, now: datetime,
                  tz: Any = None) -> EmailMessage:
    """A note from mailsort to the owner (the digest at an opening, the welcome-back list): not a reply,
    so no In-Reply-To; `Auto-Submitted: auto-generated` so that no responder (our own guard included,
    when it lands in the watched INBOX) ever answers it. Pure: the Message-ID comes from `key`, the
    outbox's dedupe key, so the same note is one row and one mail however often it is built."""
    mail = EmailMessage(policy=MAIL_POLICY)
    sender = clean_line(from_address, 300)
    mail["From"] = Address(display_name="mailsort", addr_spec=sender)
    mail["To"] = Address(addr_spec=clean_line(to, 300))
    mail["Subject"] = clean_line(subject, 300)
    mail["Date"] = email.utils.format_datetime(now.astimezone(tz) if tz is not None else now)
    mail["Message-ID"] = reply_message_id(key, sender)
    mail["Auto-Submitted"] = "auto-generated"
    mail["X-Auto-Response-Suppress"] = "All"
    mail["X-Mailer"] = "mailsort"
    mail.set_content(body if body.endswith("\n") else body + "\n", charset="utf-8", cte="quoted-printable")
    return mail
