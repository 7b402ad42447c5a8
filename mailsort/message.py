"""The Message record and `parse(raw)`: any bytes in, a Message (or a clear reason) out.

Parsing goes through mail-parser, which copes with broken MIME, odd charsets and encoded words. What
the rest of the program needs is pulled out once here (addresses, the plain text, the language, the
headers that RFC 3834 cares about), so nothing downstream touches raw MIME again.
"""

from __future__ import annotations

import email.utils
import html
import logging
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Iterable

log = logging.getLogger(__name__)

# Headers kept verbatim (lower-cased names) for the auto-reply guard and for `explain`.
KEPT_HEADERS = (
    "auto-submitted",
    "precedence",
    "list-id",
    "list-unsubscribe",
    "list-post",
    "list-help",
    "x-auto-response-suppress",
    "x-autoreply",
    "x-autorespond",
    "x-mailer",
    "feedback-id",
    "x-campaign",
    "x-loop",
    "content-type",
    "x-gm-labels",
)
TEXT_LIMIT = 20_000  # characters of text kept; the classifier reads only the start anyway
LANGUAGES = ("en", "it", "es", "ru", "de", "fr", "pt", "nl", "pl", "uk", "ca", "ro", "sv", "da", "no",
             "fi", "cs", "el", "tr", "hu", "bg", "sr", "hr", "sk", "sl", "lt", "lv", "et")
COMMON_LANGUAGES = ("en", "it", "es", "ru", "de", "fr", "pt")
SHORT_SAMPLE = 80  # characters; below this, only COMMON_LANGUAGES are considered
NO_EVIDENCE = -1e30  # py3langid's score when no feature of the text is known


class UnparseableMessage(ValueError):
    """The bytes are not a mail message at all (kept aside with this reason, never fatal)."""


@dataclass(frozen=True)
class Message:
    """One mail message, reduced to what sorting and replying need."""

    message_id: str
    subject: str
    sender: str  # the From address, lower-cased ("" when missing)
    sender_name: str
    reply_to: tuple[str, ...] = ()
    return_path: str | None = None  # None: no header; "": the null sender <>
    to: tuple[str, ...] = ()
    cc: tuple[str, ...] = ()
    date: datetime | None = None
    in_reply_to: str = ""
    references: tuple[str, ...] = ()
    text: str = ""
    language: str = "und"
    headers: tuple[tuple[str, str], ...] = ()
    content_type: str = "text/plain"
    uid: int | None = None
    folder: str | None = None
    defects: tuple[str, ...] = field(default=())

    def header(self, name: str) -> str | None:
        """First kept header of that name (case-insensitive), or None."""
        name = name.lower()
        for key, value in self.headers:
            if key == name:
                return value
        return None

    @property
    def sender_domain(self) -> str:
        return self.sender.rpartition("@")[2]


def parse(raw: bytes, *, uid: int | None = None, folder: str | None = None) -> Message:
    """Parse raw RFC 5322 bytes. Broken input yields a best-effort Message with `defects` noted;
    only bytes with no header at all raise UnparseableMessage."""
    import mailparser

    if not raw or not raw.strip():
        raise UnparseableMessage("empty message")
    try:
        parsed = mailparser.parse_from_bytes(raw)
    except Exception as exc:  # mail-parser raises many kinds; any of them means "set aside"
        raise UnparseableMessage(f"mail-parser failed: {exc}") from None
    headers = {k.lower(): _header_text(v) for k, v in (parsed.headers or {}).items()}
    if not headers:
        raise UnparseableMessage("no headers")

    sender_name, sender = _first_address(headers.get("from", ""))
    text = _plain_text(parsed)
    subject = _one_line(headers.get("subject", parsed.subject or ""))
    kept = tuple((name, _one_line(headers[name])) for name in KEPT_HEADERS if name in headers)
    return Message(
        message_id=_one_line(headers.get("message-id", "")).strip(),
        subject=subject,
        sender=sender,
        sender_name=sender_name,
        reply_to=_addresses(headers.get("reply-to", "")),
        return_path=_return_path(headers),
        to=_addresses(headers.get("to", "")),
        cc=_addresses(headers.get("cc", "")),
        date=_date(headers.get("date")),
        in_reply_to=_one_line(headers.get("in-reply-to", "")).strip(),
        references=tuple(re.findall(r"<[^<>\s]+>", headers.get("references", ""))),
        text=text,
        language=detect_language(subject + "\n" + text),
        headers=kept,
        content_type=headers.get("content-type", "text/plain").split(";")[0].strip().lower() or "text/plain",
        uid=uid,
        folder=folder,
        defects=tuple(sorted({str(d) for d in (getattr(parsed, "defects_categories", None) or [])})),
    )


def detect_language(text: str) -> str:
    """ISO 639-1 code of the text's language (py3langid restricted to plausible mail languages)."""
    sample = _strip_quoted(text)[:2000].strip()
    if len(sample) < 3:
        return "und"
    ranked = _identifier().rank(sample)
    if ranked[0][1] < NO_EVIDENCE:  # not one known n-gram ("Hola"): the model's answer would be arbitrary
        return "und"
    if len(sample) < SHORT_SAMPLE:
        # a line or two is too little to tell Serbian from Russian or Danish from English; prefer the
        # languages clients of this tool actually write in
        common = [lang for lang, _ in ranked if lang in COMMON_LANGUAGES]
        if common:
            return common[0]
    return ranked[0][0]


_IDENTIFIER = None


def _identifier():
    global _IDENTIFIER
    if _IDENTIFIER is None:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier

        # py3langid 0.2/0.3 name the loader from_pickled_model; 0.4 renamed it from_model_file
        load = getattr(LanguageIdentifier, "from_model_file", None) or LanguageIdentifier.from_pickled_model
        identifier = load(MODEL_FILE, norm_probs=False)
        identifier.set_languages(list(LANGUAGES))
        _IDENTIFIER = identifier
    return _IDENTIFIER


def _strip_quoted(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith(">"))


def _plain_text(parsed) -> str:
    parts: Iterable[str] = parsed.text_plain or []
    text = "\n".join(p for p in parts if p)
    if not text.strip() and parsed.text_html:
        text = html_to_text("\n".join(parsed.text_html))
    return text[:TEXT_LIMIT]


_BLOCK = re.compile(r"<\s*(br|/p|/div|/tr|/li|/h\d|p|div|tr|li|h\d)\b[^>]*>", re.I)
_DROP = re.compile(r"<\s*(script|style|head)\b.*?<\s*/\s*\1\s*>", re.I | re.S)
_TAG = re.compile(r"<[^>]+>")


def html_to_text(markup: str) -> str:
    """Good-enough text from HTML mail: block tags become line breaks, the rest is dropped."""
    markup = _DROP.sub(" ", markup)
    markup = _BLOCK.sub("\n", markup)
    text = html.unescape(_TAG.sub(" ", markup))
    lines = [re.sub(r"[ \t\xa0]+", " ", line).strip() for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _header_text(value) -> str:
    if isinstance(value, (list, tuple)):
        # mail-parser gives address headers as [(name, address), ...]: rebuild "Name <addr>, ..."
        return ", ".join(_address_text(v) if isinstance(v, tuple) and len(v) == 2 else str(v) for v in value)
    return str(value)


def _address_text(pair: tuple[str, str]) -> str:
    """("Rossi, Maria", "m@x") -> '"Rossi, Maria" <m@x>', keeping Unicode names readable (no encoded words)."""
    name, address = pair
    if not name:
        return address
    quoted = str(name).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{quoted}" <{address}>'


def _one_line(value: str) -> str:
    """Headers may never carry CR/LF into anything we build from them."""
    return re.sub(r"[\r\n\t]+", " ", value or "").strip()


def _first_address(value: str) -> tuple[str, str]:
    pairs = email.utils.getaddresses([value])
    for name, address in pairs:
        if address:
            return _one_line(name), address.strip().lower()
    return "", ""


def _addresses(value: str) -> tuple[str, ...]:
    return tuple(a.strip().lower() for _, a in email.utils.getaddresses([value]) if a and "@" in a)


def _return_path(headers: dict[str, str]) -> str | None:
    if "return-path" not in headers:
        return None
    value = headers["return-path"].strip()
    if value in ("<>", ""):
        return ""
    return _first_address(value)[1]


def _date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:
        return None
    return parsed
