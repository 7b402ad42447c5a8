"""The Message record and `parse(raw)`: any bytes in, a Message (or a clear reason) out.

Parsing goes through mail-parser, which copes with broken MIME, odd charsets and encoded words. What
the rest of the program needs is pulled out once here (addresses, the plain text, the language, the
headers that RFC 3834 cares about), so nothing downstream touches raw MIME again.
"""

from __future__ import annotations

import base64
import binascii
import email.quoprimime  # base64 and this: loaded by email.utils anyway
import email.utils
import html
import logging
import re
from dataclasses import dataclass, field
from functools import lru_cache
from datetime import datetime
from typing import Any, Iterable, NamedTuple, Sequence

from .language import detect_language, detect_languages, language_text

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


def parse(raw: bytes, *, uid: int | None = None, folder: str | None = None, language: str | None = None) -> Message:
    """Parse raw RFC 5322 bytes. Broken input yields a best-effort Message with `defects` noted;
    only bytes with no header at all raise UnparseableMessage.

    Two routes, one result. Plain well-formed mail (ASCII headers, the usual MIME shapes: text,
    HTML, multipart/alternative|mixed|related, attachments, also cut short as a sync fetches it)
    takes `_fast_fields`, which reads only what a Message needs — about 30 times faster than
    mail-parser, which walks, decodes and hashes every part. Anything else — 8-bit headers, odd
    address lists, a bad Date, message/* parts, missing boundaries, stray CRs — goes to mail-parser,
    which copes with broken MIME. tests/test_sync_parse.py holds both routes to the same answers.
    `language`, when already known (a message parsed again), spares telling it again.
    """
    parts = _parts(_fields_of(raw), uid, folder)
    if language is None:
        language = detect_language(language_text(parts["subject"], parts["text"]))
    return _new_message(parts, language)


def parse_many(items: Sequence[tuple[int | None, bytes]], folder: str | None = None) -> list[Message | UnparseableMessage]:
    """parse() for a batch of (uid, raw): the same Messages, or the reason a message cannot be parsed.
    Cheaper than one parse() after another: the languages are told in one go (`detect_languages`)."""
    out: list[dict | UnparseableMessage] = []
    for uid, raw in items:
        try:
            out.append(_parts(_fields_of(raw), uid, folder))
        except UnparseableMessage as exc:
            out.append(exc)
        except Exception as exc:  # a parser bug on one message must not stop the others
            out.append(UnparseableMessage(f"parser failed: {type(exc).__name__}: {exc}"))
    parsed = [p for p in out if isinstance(p, dict)]
    languages = iter(detect_languages([language_text(p["subject"], p["text"]) for p in parsed]))
    return [_new_message(p, next(languages)) if isinstance(p, dict) else p for p in out]


def _fields_of(raw: bytes) -> "_Fields":
    if not raw or raw.isspace():  # (= not raw.strip(), without a copy of the message)
        raise UnparseableMessage("empty message")
    fields = None
    try:
        fields = _fast_fields(raw)
    except Exception:  # a gap in the fast route is never fatal: mail-parser reads it instead
        log.debug("fast parse failed; using mail-parser", exc_info=True)
    if fields is None:
        fields = _mailparser_fields(raw)
    return fields


class _Fields(NamedTuple):  # (built once per message: a NamedTuple costs half a frozen dataclass)
    """What either parser route extracts: decoded headers (lower-case names; address headers as
    "Name" <addr> lists), the decoded text/plain and text/html parts, and the defects noticed."""

    headers: dict[str, str]
    text_plain: tuple[str, ...]
    text_html: tuple[str, ...]
    defects: tuple[str, ...]
    # address headers the fast route has already read into (name, address) pairs, when reading the
    # rebuilt header again would give exactly these (see `_address_header`); `headers` then holds
    # them as they came, not rebuilt (nothing reads them there)
    addresses: dict[str, tuple[tuple[str, str], ...]]


def _parts(fields: _Fields, uid: int | None, folder: str | None) -> dict[str, Any]:
    """Everything a Message holds but its language (None here), from either parser route, in the
    order of Message's fields. (Reply-To, Cc, In-Reply-To and References are missing from most
    mail: looked for first, they cost a dict lookup when they are.)"""
    headers = fields.headers
    sender_name, sender = _first_of(_pairs(fields, "from"))
    kept = _KEPT_SET.intersection(headers)  # (a message has few of these)
    if len(kept) > 1:
        kept = sorted(kept, key=_KEPT_ORDER.__getitem__)
    return {  # (a dict display: cheaper than dict() with keywords)
        "message_id": _one_line(headers.get("message-id", "")),
        "subject": _one_line(headers.get("subject", "")),
        "sender": sender,
        "sender_name": sender_name,
        "reply_to": _addresses_of(_pairs(fields, "reply-to")) if "reply-to" in headers else (),
        "return_path": _return_path(headers),
        "to": _addresses_of(_pairs(fields, "to")),
        "cc": _addresses_of(_pairs(fields, "cc")) if "cc" in headers else (),
        "date": _date(headers.get("date")),
        "in_reply_to": _one_line(headers["in-reply-to"]) if "in-reply-to" in headers else "",
        "references": tuple(_REFERENCE.findall(headers["references"])) if "references" in headers else (),
        "text": _plain_text(fields.text_plain, fields.text_html),
        "language": None,
        "headers": tuple([(name, _one_line(headers[name])) for name in kept]),
        "content_type": headers.get("content-type", "text/plain").partition(";")[0].strip().lower() or "text/plain",
        "uid": uid,
        "folder": folder,
        "defects": fields.defects,
    }


_KEPT_ORDER = {name: i for i, name in enumerate(KEPT_HEADERS)}
_KEPT_SET = frozenset(KEPT_HEADERS)


def _pairs(fields: _Fields, name: str) -> tuple[tuple[str, str], ...]:
    """The (name, address) pairs of an address header, read by the fast route or read now. A missing
    or empty header gives (): what `_first_of` and `_addresses_of` make of getaddresses' ('', '')."""
    found = fields.addresses.get(name)
    if found is not None:
        return found
    value = fields.headers.get(name)
    return _address_pairs(value) if value else ()


def _new_message(parts: dict[str, Any], language: str) -> Message:
    """Message(**parts) with its language, without the frozen dataclass's __init__, which sets the
    fields one object.__setattr__ at a time (a tenth of a parse): the same attributes, in the same
    order (tests/test_message.py holds this to the constructor)."""
    parts["language"] = language
    message = object.__new__(Message)
    object.__setattr__(message, "__dict__", parts)  # (`parts` becomes its attributes, not copied)
    return message


def _message(fields: _Fields, uid: int | None = None, folder: str | None = None) -> Message:
    parts = _parts(fields, uid, folder)
    return _new_message(parts, detect_language(language_text(parts["subject"], parts["text"])))


_REFERENCE = re.compile(r"<[^<>\s]+>")


def _mailparser_fields(raw: bytes) -> _Fields:
    import mailparser

    try:
        parsed = mailparser.parse_from_bytes(raw)
    except Exception as exc:  # mail-parser raises many kinds; any of them means "set aside"
        raise UnparseableMessage(f"mail-parser failed: {exc}") from None
    headers = {k.lower(): _header_text(v) for k, v in (parsed.headers or {}).items()}
    if not headers:
        raise UnparseableMessage("no headers")
    if "subject" not in headers and parsed.subject:
        headers["subject"] = str(parsed.subject)
    return _Fields(headers, tuple(parsed.text_plain or ()), tuple(parsed.text_html or ()),
                   tuple(sorted({str(d) for d in (getattr(parsed, "defects_categories", None) or [])})), {})


# ------------------------------------------------------------------------------------- the fast route

ADDRESS_HEADERS = frozenset({"bcc", "cc", "delivered-to", "from", "reply-to", "to"})  # as mail-parser
# The headers `_message` reads: the fast route decodes only these.
_USED_HEADERS = frozenset({"from", "to", "cc", "reply-to", "subject", "message-id", "date", "in-reply-to",
                           "references", "return-path", "content-type", *KEPT_HEADERS})
_CONTENT_FIELDS = frozenset({"content-type", "content-disposition", "content-transfer-encoding", "content-id"})
_READ_FIELDS = _USED_HEADERS | _CONTENT_FIELDS
_FIELD = re.compile(r"([\x21-\x39\x3b-\x7e]+):")
_ODD_CONTROLS = re.compile(rb"[\x00\x0b\x0c\x1c-\x1e]")
_STRAY_CR = re.compile(rb"\r[^\n]")  # a CR not followed by LF (the last byte, cut off after its CR, is fine)
_ENCODED_WORD = "=?"
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
# A MIME header value: type/subtype (or a disposition) and plain `name=token|"quoted"` parameters.
# RFC 2231 continuations, comments and escapes are left to the stdlib, through mail-parser.
_MIME_VALUE = re.compile(rf'\s*({_TOKEN}(?:/{_TOKEN})?)\s*((?:;\s*{_TOKEN}\s*=\s*(?:{_TOKEN}|"[^"\\\r\n]*")\s*)*);?\s*')
_MIME_LEAD = re.compile(rf"\s*({_TOKEN}(?:/{_TOKEN})?)\s*(?:;|$)")
_MIME_PARAM = re.compile(rf'({_TOKEN})\s*=\s*(?:({_TOKEN})|"([^"\\\r\n]*)")')
_MIME_ONE_PARAM = re.compile(rf'({_TOKEN}/{_TOKEN}); ({_TOKEN})=(?:({_TOKEN})|"([^"\\\r\n]*)")\s*')  # "type/sub; name=value"
_BODY_TYPES = ("text/plain", "text/html")
_KNOWN_CTE = ("", "7bit", "8bit", "binary", "quoted-printable", "base64")
_MAX_DEPTH = 4


class _NotSimple(Exception):
    """The fast route does not handle this message; mail-parser will."""


def _fast_fields(raw: bytes) -> _Fields | None:
    """The fast route (see `parse`): None when the message is outside what it handles."""
    if _STRAY_CR.search(raw):
        return None  # stray CRs: the stdlib splits lines there, we would not (one cut off at the end is fine)
    if raw[:1] in (b" ", b"\t", b"\r", b"\n") or raw.startswith(b"From "):
        return None
    try:
        head, body = _split_head(raw)
        fields = _raw_header_fields(head)
        addresses: dict[str, tuple[tuple[str, str], ...]] = {}
        content: dict[str, str] = {}
        headers = _decoded_headers(fields, addresses, content)
        plain: list[str] = []
        html_parts: list = []  # (body, cte, charset, fields): decoded only if no plain text is found
        defects: set[str] = set()
        _walk(fields, body, plain, html_parts, defects, 0, False, content)
        for p in plain:  # (loops and list displays here, not generators: a generator costs a frame a use)
            if p and not p.isspace():  # `_plain_text` finds text here: the HTML parts are not needed
                html = ()
                break
        else:
            html = tuple([text for text in [_decode_text(*part) for part in html_parts] if text])
    except _NotSimple:
        return None
    return _Fields(headers, tuple(plain), html, tuple(sorted(defects)) if defects else (), addresses)


def _split_head(raw: bytes) -> tuple[bytes, bytes]:
    """Header block (with its last line break) and body: the block ends at the first empty line.
    Every CR is followed by LF here (`_fast_fields` refused stray CRs), so an empty line is an LF
    followed by LF or CRLF. Nothing is checked yet: `_header_fields` refuses what is not clean."""
    end = raw.find(b"\n\r\n")  # CRLF mail: found early, then "\n\n" is looked for before it only
    lf = raw.find(b"\n\n", 0, end + 1 if end >= 0 else len(raw))
    if lf >= 0:
        end = lf
    if end < 0:
        return raw, b""
    return raw[:end + 1], raw[end + (2 if raw[end + 1] == 10 else 3):]


# One field after a line break: its name (printable ASCII but ":"), its value without the leading
# blanks, folded lines (those that start with a blank) kept with their line breaks. "." stops at LF
# only, so a value keeps the CR of its CRLF.
_FIELD_AFTER_BREAK = re.compile(r"\n([\x21-\x39\x3b-\x7e]+):[ \t]*(.*(?:\n[ \t].*)*)")
_ODD_BYTES = b"\x00\x0b\x0c\x1c\x1d\x1e"  # line ends for the stdlib, not for us (= _ODD_CONTROLS)


def _header_fields(head: bytes) -> list[tuple[str, str]]:
    """(name, value) of each field, as the stdlib's compat32 policy stores them: the value without
    its leading blanks, folded lines kept with their line breaks, the last line break left out.
    The block must be clean ASCII with no odd control bytes and nothing but header lines (a line
    that is none ends the headers for the stdlib; a continuation line first continues nothing).
    Every CR is followed by LF (or ends the message): a value ends in at most one CR to take off."""
    return [(name, value.rstrip("\r")) for name, value in _raw_header_fields(head)]


def _raw_header_fields(head: bytes) -> list[tuple[str, str]]:
    """`_header_fields` but for that last CR, still at the end of each value of CRLF mail: the
    message's own header block goes to `_decoded_headers`, whose readers all strip it anyway."""
    if (not head or not head.isascii() or 0x00 in head or 0x0b in head or 0x0c in head
            or 0x1c in head or 0x1d in head or 0x1e in head):  # (_ODD_BYTES; an int in bytes is a memchr)
        raise _NotSimple
    text = "\n" + head.decode("ascii")
    if text[1] in " \t":
        raise _NotSimple
    fields = _FIELD_AFTER_BREAK.findall(text)
    # Each line must start a field or go on with the one before (start with a blank): the stdlib
    # ends the headers at any other line. findall skips such a line, so counting is enough: as many
    # lines (an empty one after the last line break aside) as fields found and lines that go on.
    # (Four counts cost a third of a regex pass that checks what follows each line break.)
    if text.count("\n") - text.endswith("\n") != len(fields) + text.count("\n ") + text.count("\n\t"):
        raise _NotSimple
    return fields


def _decoded_headers(fields: list[tuple[str, str]], addresses: dict[str, tuple[tuple[str, str], ...]],
                     content: dict[str, str]) -> dict[str, str]:
    """The same dict `_mailparser_fields` builds: first spelling of each name, values decoded
    (encoded words), repeated values joined with ", ", address headers from their first occurrence.
    In the same pass, `addresses` receives the (name, address) pairs of the address headers where
    they are sure (those are then left undecoded in the dict), and `content` the message's MIME
    fields as `_content_fields` gives them. `fields` may come from `_raw_header_fields`: a value
    may end with a CR, which every reading here and in `_walk` strips or skips as a blank."""
    out: dict[str, str] = {}  # first value of each name (raw until the loop below decodes it)
    repeated: dict[str, list[str]] | None = None  # all values of the (rare) names seen more than once
    for name, value in fields:
        key = name.lower()
        if key in _READ_FIELDS:  # Received, DKIM-Signature & co. never reach a Message: not decoded
            if key in out:
                if repeated is None:
                    repeated = {}
                repeated.setdefault(key, [out[key]]).append(value)
            else:
                out[key] = value
    for key in _CONTENT_FIELDS:
        if key in out:
            if repeated is not None and key in repeated:
                raise _NotSimple  # (mail-parser reads one of them; which is the stdlib's business)
            content[key] = out[key] if key in _USED_HEADERS else out.pop(key)
    for name, value in out.items():
        if name in ADDRESS_HEADERS:
            pairs, sure = _address_header(value)
            if sure:  # what `_pairs` would read back from the rebuilt header: that is never built
                addresses[name] = pairs
            else:
                out[name] = ", ".join(map(_address_text, pairs))
        elif repeated is not None and name in repeated:
            out[name] = ", ".join(_decode_words(v) for v in repeated[name])
        elif _ENCODED_WORD in value:
            out[name] = _decode_words(value)
        else:
            out[name] = value.strip()  # (what _decode_words does with it, without the call)
    date = out.get("date")
    if date is not None and _date(date) is None:
        raise _NotSimple  # mail-parser notes a DateHeaderDefect; let it
    return out


# An encoded word as email.header's `ecre` finds it, its charset and text kept free of "?" and
# blanks: then `ecre` can cut a value made of such words in no other way than this one.
_EW_ONE = re.compile(r"=\?([\x21-\x3e\x40-\x7e]*)\?([bBqQ])\?([\x21-\x3e\x40-\x7e]*)\?=")


def _decode_words(value: str) -> str:
    """mail-parser's decode_header_part: encoded words decoded, undecodable bytes dropped."""
    if _ENCODED_WORD not in value:
        return value.strip()
    # The usual shape: maybe plain text first ("Re: "), then encoded words only, apart by blanks and
    # line breaks. split() cuts the value into that text and (charset, encoding, text, what follows)
    # for each word, in one regex pass.
    parts = _EW_ONE.split(value)
    plain = parts[0]
    if (len(parts) > 1 and not ("=" in plain or "?" in plain or "\r" in plain or "\n" in plain)
            and not "".join(parts[4::4]).strip(" \t\r\n")):
        out = _decode_simple_words(plain, parts)
        if out is not None:
            return out
    from email.header import decode_header

    out = ""
    for data, charset in decode_header(value):
        if isinstance(data, str):
            out += data
            continue
        try:
            out += str(data, charset or "utf-8")
        except (LookupError, UnicodeError):
            out += str(data, "utf-8", "ignore")
    try:
        out.encode("utf-8")
    except UnicodeEncodeError:
        raise _NotSimple from None
    return out.strip()


def _decode_simple_words(plain: str, parts: list[str]) -> str | None:
    """`_decode_words` for the usual shape (`parts`: what _EW_ONE.split gives), as
    email.header.decode_header reads it: the plain text kept (its leading blanks are stripped
    anyway), the blanks between encoded words dropped, the bytes of neighbouring words with the same
    charset joined before they are decoded. None when a word is not valid base64 (the stdlib then
    raises; let it, from the same input)."""
    out = plain
    run = b""
    run_charset = None
    only_utf8 = True
    for i in range(1, len(parts), 4):
        charset, encoding, text = parts[i].lower(), parts[i + 1], parts[i + 2]
        if encoding in "bB":
            if len(text) % 4:
                text += "==="[:4 - len(text) % 4]
            try:
                data = binascii.a2b_base64(text) if text else b""  # (an ASCII str: taken as it is)
            except binascii.Error:
                return None
        else:
            data = bytes(email.quoprimime.header_decode(text), "raw-unicode-escape")
        if charset == run_charset:
            run += data
            continue
        if run_charset is not None:
            out += _decode_run(run, run_charset)
        run, run_charset = data, charset
        only_utf8 = only_utf8 and charset == "utf-8"
    out += _decode_run(run, run_charset)
    if not only_utf8:  # (UTF-8, even read with "ignore", never gives a lone surrogate)
        try:
            out.encode("utf-8")
        except UnicodeEncodeError:
            raise _NotSimple from None
    return out.strip()


def _decode_run(data: bytes, charset: str) -> str:
    try:
        return str(data, charset or "utf-8")
    except (LookupError, UnicodeError):
        return str(data, "utf-8", "ignore")


@lru_cache(maxsize=1024)  # the same To: (the owner's own address) or From: comes again and again
def _address_header(value: str) -> tuple[tuple[tuple[str, str], ...], bool]:
    """The (name, address) pairs of an address header, for simple lists only (see
    `_simple_addresses`), encoded words in names decoded: mail-parser rebuilds the header from these
    ('"Name" <addr>, ...', `_address_text`). Also whether `_address_pairs` surely reads exactly these
    pairs back from that rebuilt text: a name with no quote, backslash or line break comes back from
    '"Name" <addr>' as it is. When it does, the rebuilt text is never needed (see `_decoded_headers`)."""
    if "," not in value:  # one mailbox, as in most From: and To: (the loop below, for it alone)
        m = _ONE_MAILBOX.match(value)
        if m is None or m.end() != len(value):
            raise _NotSimple
        name, address, quoted = _mailbox(m)
        if _ENCODED_WORD not in name:
            return (("" if name == address else name, address),), True
        found = [(name, address, quoted)]
    else:
        found = _simple_addresses(value)
        if not found:
            raise _NotSimple
    pairs = []
    sure = True
    for name, address, quoted in found:
        if _ENCODED_WORD in name:
            if quoted:
                raise _NotSimple  # an encoded word inside quotes stays literal for mail-parser: leave it to it
            name = _decode_words(name)
            # (a name read by _simple_addresses has no quote, backslash or line break: only a decoded one can)
            if '"' in name or "\\" in name or "\r" in name or "\n" in name:
                sure = False
        pairs.append(("" if name == address else name, address))
    return tuple(pairs), sure


_WSP = r"[ \t\r\n]"
_ATOMS = r"[^ \t\r\n\"<>,;:()@\\\[\]]+"  # atoms and dots: what the stdlib's parser reads as one word run
_ONE_MAILBOX = re.compile(
    rf'{_WSP}*(?:(?:"(?P<quoted>[^"\\\r\n]*)"|(?P<phrase>{_ATOMS}(?:{_WSP}+{_ATOMS})*))?{_WSP}*'
    rf'<(?P<angle>{_ATOMS}@{_ATOMS})>|(?P<bare>{_ATOMS}@{_ATOMS})){_WSP}*')
_FWS = re.compile(_WSP + "+")
_FWS_TO_FOLD = re.compile(r"[\t\r\n]|  ")  # what " ".join(_FWS.split(phrase)) changes in a phrase
_ANGLE_ONLY = re.compile(rf"<({_ATOMS}@{_ATOMS})>")


def _simple_addresses(value: str) -> list[tuple[str, str, bool]] | None:
    """(name, address, name was quoted) for a plain address list — `addr`, `Name <addr>`,
    `"Name" <addr>`, comma-separated — exactly as email.utils.getaddresses reads it, at a fraction
    of its cost; None for anything else (groups, comments, escapes, routes), which the callers
    hand to the full parsers."""
    out: list[tuple[str, str, bool]] = []
    pos, size = 0, len(value)
    while True:
        m = _ONE_MAILBOX.match(value, pos)
        if m is None:
            return None
        out.append(_mailbox(m))
        pos = m.end()
        if pos == size:
            return out
        if value[pos] != ",":
            return None
        pos += 1


def _mailbox(m: re.Match) -> tuple[str, str, bool]:
    """(name, address, name was quoted) of one `_ONE_MAILBOX` match."""
    bare, quoted, phrase, angle = m.group("bare", "quoted", "phrase", "angle")
    if bare is not None:
        return "", bare, False
    if quoted is not None:
        return quoted, angle, True
    if phrase and _FWS_TO_FOLD.search(phrase):  # words apart by other blanks than one space
        return " ".join(_FWS.split(phrase)), angle, False
    return phrase or "", angle, False


@lru_cache(maxsize=4096)
def _address_pairs(value: str) -> tuple[tuple[str, str], ...]:
    """email.utils.getaddresses([value]), with the common simple lists read the fast way (and the same
    To: or From: seen again in the next message not read again)."""
    simple = _simple_addresses(value)
    if simple is not None:
        return tuple([(name, address) for name, address, _ in simple])
    return tuple(email.utils.getaddresses([value]))


@lru_cache(maxsize=256)
def _mime_value(value: str | None) -> tuple[str, dict[str, str] | None]:
    """("type/subtype" lower-cased, {param: value}) of a Content-Type / -Disposition value; the
    parameters are None when they are not plain (or cut off by a partial fetch). Cached: most
    parts say "text/plain; charset=utf-8" or the like (callers only read the dict)."""
    if value is None:
        return "", {}
    one = _MIME_ONE_PARAM.fullmatch(value)  # the usual shape, read by one regex (what _mime_params gives)
    if one is not None:
        ctype, name, token, quoted = one.groups()
        name = name.lower()
        return ctype.lower(), (None if "*" in name else {name: token if token is not None else quoted})
    return _mime_params(value)


def _mime_params(value: str) -> tuple[str, dict[str, str] | None]:
    """`_mime_value`, any number of parameters."""
    m = _MIME_VALUE.fullmatch(value)
    if m is None:
        lead = _MIME_LEAD.match(value)
        if lead is None:
            raise _NotSimple
        return lead.group(1).lower(), None
    params: dict[str, str] = {}
    for name, token, quoted in _MIME_PARAM.findall(m.group(2)):
        name = name.lower()
        if name in params or "*" in name:  # repeated, or RFC 2231 (charset*=utf-8''...): the stdlib's job
            return m.group(1).lower(), None
        params[name] = token if token else quoted
    return m.group(1).lower(), params


def _content_fields(fields: list[tuple[str, str]]) -> dict[str, str]:
    """The MIME fields of a part by lower-case name (a repeated one is left to the stdlib)."""
    found: dict[str, str] = {}
    for name, value in fields:
        key = name.lower()
        if key in _CONTENT_FIELDS:
            if key in found:
                raise _NotSimple
            found[key] = value
    return found


def _walk(fields: list[tuple[str, str]], body: bytes, plain: list[str], html_parts: list[str],
          defects: set[str], depth: int, inner: bool, content: dict[str, str]) -> None:
    """Collect the body text of one MIME part (and its children), as mail-parser would. `content`:
    the part's `_content_fields`. `inner`: a part of a multipart, whose last line break belongs to
    the next delimiter (or to the end, when a partial fetch cut the message) — the stdlib drops it
    from the innermost part only."""
    kind, cte, detail = _plan(content.get("content-type"), content.get("content-disposition"),
                              content.get("content-transfer-encoding", ""), "content-id" in content)
    if kind is _SKIP:
        return
    if kind is _MULTIPART:
        if depth >= _MAX_DEPTH:
            raise _NotSimple
        for sub_fields, sub_content, sub_body in _split_multipart(body, detail, defects):
            _walk(sub_fields, sub_body, plain, html_parts, defects, depth + 1, True, sub_content)
        return
    if inner:
        body = body[:-2] if body.endswith(b"\r\n") else body[:-1] if body.endswith((b"\n", b"\r")) else body
    if kind is _HTML:
        html_parts.append((body, cte, detail, fields))
        return
    text = _decode_text(body, cte, detail, fields)
    if text:
        plain.append(text)


_SKIP, _MULTIPART, _HTML, _TEXT = "skip", "multipart", "html", "text"


@lru_cache(maxsize=512)
def _plan(ctype_value: str | None, disposition_value: str | None, cte_value: str, content_id: bool) -> tuple[str, str, Any]:
    """What `_walk` does with a part, from its MIME fields: (_SKIP, "", None) for what is no body
    text, (_MULTIPART, cte, the delimiter's bytes), (_HTML or _TEXT, cte, charset); _NotSimple for
    what is left to mail-parser. Cached: most parts carry the same few fields (a multipart's own
    boundary excepted)."""
    ctype, params = _mime_value(ctype_value)
    if not ctype:
        ctype = "text/plain"
    elif ctype.count("/") != 1:
        raise _NotSimple
    maintype = ctype.split("/")[0]
    if maintype == "message":
        raise _NotSimple  # mail-parser walks into attached messages; let it
    if ctype not in _BODY_TYPES and maintype != "multipart":
        if not _quietly_not_text(disposition_value, params):
            raise _NotSimple
        return _SKIP, "", None  # an image, a PDF...: mail-parser keeps it out of the body text too
    disposition, disposition_params = _mime_value(disposition_value)
    if disposition == "attachment" and maintype != "multipart":
        return _SKIP, "", None  # an attachment: never body text
    if params is None or disposition_params is None or disposition not in ("", "inline"):
        raise _NotSimple
    cte = cte_value.strip().lower()
    if "name" in params or "filename" in disposition_params or content_id:
        raise _NotSimple  # named or referenced text parts are attachments *and* body for mail-parser
    if maintype == "multipart":
        boundary = params.get("boundary", "").rstrip()
        if not boundary or not boundary.isascii() or ctype == "multipart/digest" or cte not in ("", "7bit", "8bit", "binary"):
            raise _NotSimple
        return _MULTIPART, cte, b"--" + boundary.encode("ascii")
    if cte not in _KNOWN_CTE:
        raise _NotSimple
    return (_HTML if ctype == "text/html" else _TEXT), cte, params.get("charset", "utf-8").lower() or "utf-8"


def _quietly_not_text(disposition_value: str | None, params: dict[str, str] | None) -> bool:
    """Whether mail-parser leaves a part that is no text (an image, a PDF...) out of the body text
    without a trace: when it is inline or an attachment, or has a file name, which makes it an
    attachment whatever its disposition says — as when a partial fetch cut the disposition short
    ("attachm", or nothing after the colon). Otherwise mail-parser reads it as text, which may note
    a defect (`params`: its Content-Type parameters, None when they are not plain)."""
    if disposition_value is None:
        return True
    if disposition_value.strip():
        disposition, disposition_params = _mime_value(disposition_value)
        if disposition in ("inline", "attachment"):
            return True
    else:  # "Content-Disposition:" and nothing more: no file name there
        disposition_params = {}
    if params is None or disposition_params is None:
        return False
    # email's get_filename: the disposition's filename, else the type's name (one in <> is read
    # further by the stdlib: left to it); mail-parser then decodes its encoded words, as
    # _decode_words does (which strips the result too: an empty one is left to mail-parser)
    name = disposition_params["filename"] if "filename" in disposition_params else params.get("name", "")
    if _ENCODED_WORD in name:
        name = _decode_words(name)
    return bool(name.strip()) and not name.startswith("<")


def _split_multipart(body: bytes, separator: bytes, defects: set[str]) -> list[tuple[tuple, dict[str, str], bytes]]:
    """The parts of a multipart body, each as (header fields, their `_content_fields`, body bytes),
    the way the stdlib's feedparser cuts them: a part ends before the line break that precedes the
    next delimiter line (b"--" and the boundary: `separator`)."""
    found = _delimiters(body, separator)
    if not found:
        # never opened (or cut off before the first part): the stdlib keeps the body as one string and
        # mail-parser finds no text in it (its epilogue recovery then fails outright)
        defects.add("StartBoundaryNotFoundDefect")
        return []
    if found[0][2]:
        raise _NotSimple  # a close delimiter first: mail-parser's recovery is needed
    parts = []
    for i, (_, line_end, close) in enumerate(found):
        if close:  # the close delimiter: the rest is the epilogue
            break
        if i + 1 < len(found):
            chunk = body[line_end:found[i + 1][0]]
        else:  # cut short (a partial fetch) or never closed
            chunk = body[line_end:]
            defects.add("CloseBoundaryNotFoundDefect")
            if not chunk:
                break  # the fetch ended right after this delimiter: an empty part, no text in it
        parts.append(_part(chunk, defects))
    return parts


def _delimiters(body: bytes, separator: bytes) -> list[tuple[int, int, bool]]:
    """(start, end of line, is the close delimiter) of each delimiter line up to the first close
    delimiter: at a line start, the separator, maybe "--", blanks, then the end of the line (the
    feedparser's boundary regex)."""
    found: list[tuple[int, int, bool]] = []
    size, pos = len(body), 0
    while (i := body.find(separator, pos)) >= 0:
        pos = i + 1
        if i and body[i - 1] != 10:
            continue
        k = i + len(separator)
        if body.startswith(b"\r\n", k):  # the usual delimiter line (what the general case below finds)
            found.append((i, k + 2, False))
            pos = k + 2
            continue
        close = body[k:k + 2] == b"--"
        if close:
            k += 2
        while k < size and body[k] in (32, 9):
            k += 1
        if k < size and body[k] not in (13, 10):
            continue
        end = k + (2 if body[k:k + 2] == b"\r\n" else 1 if k < size else 0)
        found.append((i, end, close))
        if close:
            break  # what follows is the epilogue (of this multipart: maybe more of an enclosing one)
        pos = end
    return found


def _part(chunk: bytes, defects: set[str]) -> tuple[tuple, dict[str, str], bytes]:
    if chunk[:1] in (b"\r", b"\n"):  # no headers: a blank line, then the body
        return (), {}, chunk[2 if chunk[:2] == b"\r\n" else 1:]
    if chunk[:1] in (b" ", b"\t") or not chunk:
        raise _NotSimple
    head, body = _split_head(chunk)
    if not body and not head.endswith(b"\n"):
        # a partial fetch cut this part's headers: a last line that is no header (yet) is body text
        # for the stdlib, with a MissingHeaderBodySeparatorDefect
        cut = head.rfind(b"\n") + 1
        if not head.isascii() or _ODD_CONTROLS.search(head, cut):
            raise _NotSimple  # (the lines before are checked by _header_fields)
        last = head[cut:].decode("ascii")
        if last == "\r":  # the blank line itself was cut after its CR
            return *_part_head(head[:cut]), b""
        if cut and not _FIELD.match(last) and last[:1] not in (" ", "\t"):
            defects.add("MissingHeaderBodySeparatorDefect")
            return *_part_head(head[:cut]), head[cut:]
    return *_part_head(head), body


@lru_cache(maxsize=256)
def _part_head(head: bytes) -> tuple[tuple[tuple[str, str], ...], dict[str, str]]:
    """`_header_fields` and `_content_fields` of a part's header block. Cached: the parts of mail
    from the same program carry the same lines ("Content-Type: text/plain; charset=utf-8", ...);
    callers only read the dict."""
    fields = tuple(_header_fields(head))
    return fields, _content_fields(fields)


def _decode_text(body: bytes, cte: str, charset: str, fields: list[tuple[str, str]]) -> str:
    """mail-parser's _decode_body_payload: 7/8-bit ASCII text as it is, otherwise the transfer
    encoding undone (as the stdlib's get_payload(decode=True) does) and the charset applied."""
    if cte in ("", "7bit", "8bit"):
        if body.isascii():
            return body.decode("ascii")
        payload = body
    elif cte == "base64":
        joined = b"".join(body.splitlines())
        missing = len(joined) % 4
        try:  # the stdlib's decode_b, first try; anything odder goes through the stdlib itself
            payload = base64.b64decode(joined + b"==="[:4 - missing] if missing else joined, validate=True)
        except binascii.Error:
            payload = _stdlib_payload(fields, body)
    elif cte == "quoted-printable":
        payload = binascii.a2b_qp(body)
    else:  # binary
        payload = body
    if not payload:
        return ""
    try:
        decoded = payload.decode(charset)
        if charset != "utf-8":  # (strict UTF-8 decoding never yields a lone surrogate)
            decoded.encode("utf-8")
    except (LookupError, UnicodeError):
        raise _NotSimple from None  # mail-parser records a CharsetDecodeDefect and recovers
    return decoded


def _stdlib_payload(fields: list[tuple[str, str]], body: bytes) -> bytes:
    from email.message import Message as MimePart

    part = MimePart()
    for name, value in fields:
        part[name] = value.rstrip("\r")  # (the message's own fields may still end with one)
    part.set_payload(body.decode("ascii", "surrogateescape"))
    return part.get_payload(decode=True)


def _plain_text(text_plain: Sequence[str], text_html: Sequence[str]) -> str:
    text = text_plain[0] if len(text_plain) == 1 else "\n".join([p for p in text_plain if p])
    if text_html and (not text or text.isspace()):  # (= not text.strip(), without copying the text)
        text = html_to_text("\n".join(text_html))
    return text[:TEXT_LIMIT]


_BLOCK = re.compile(r"<\s*(br|/p|/div|/tr|/li|/h\d|p|div|tr|li|h\d)\b[^>]*>", re.I)
_DROP = re.compile(r"<\s*(script|style|head)\b.*?<\s*/\s*\1\s*>", re.I | re.S)
_TAG = re.compile(r"<[^>]+>")
_BLANKS = re.compile(r"[ \t\xa0]+")
_EMPTY_LINES = re.compile(r"\n\n\n+")  # = \n{3,}, but spelt so that the regex engine can look for "\n\n\n"
# as a plain string instead of trying a match at every character (a fifth of html_to_text's time)


def html_to_text(markup: str) -> str:
    """Good-enough text from HTML mail: block tags become line breaks, the rest is dropped."""
    markup = _DROP.sub(" ", markup)
    markup = _BLOCK.sub("\n", markup)
    text = html.unescape(_TAG.sub(" ", markup))
    # (a line with no tab, no-break space or double space has nothing for _BLANKS to change: a regex
    # pass costs more than looking for those three)
    lines = [_BLANKS.sub(" ", line).strip() if "\t" in line or "\xa0" in line or "  " in line else line.strip()
             for line in text.splitlines()]
    return _EMPTY_LINES.sub("\n\n", "\n".join(lines)).strip()


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


_BREAKS = re.compile(r"[\r\n\t]+")


def _one_line(value: str) -> str:
    """Headers may never carry CR/LF into anything we build from them."""
    if not value:
        return ""
    if "\n" in value or "\r" in value or "\t" in value:  # most values have none: no regex pass
        value = _BREAKS.sub(" ", value)
    return value.strip()


def _first_address(value: str) -> tuple[str, str]:
    return _first_of(_address_pairs(value))


def _first_of(pairs: Iterable[tuple[str, str]]) -> tuple[str, str]:
    for name, address in pairs:
        if address:
            return _one_line(name), address.strip().lower()
    return "", ""


def _addresses(value: str) -> tuple[str, ...]:
    return _addresses_of(_address_pairs(value))


@lru_cache(maxsize=1024)  # the owner's own To: again and again
def _addresses_of(pairs: Sequence[tuple[str, str]]) -> tuple[str, ...]:
    if not pairs:
        return ()
    return tuple([a.strip().lower() for _, a in pairs if a and "@" in a])


def _return_path(headers: dict[str, str]) -> str | None:
    if "return-path" not in headers:
        return None
    value = headers["return-path"].strip()
    if value in ("<>", ""):
        return ""
    m = _ANGLE_ONLY.fullmatch(value)  # the usual "<bounce@host>": what _first_address reads from it
    if m is not None:
        return m.group(1).strip().lower()
    return _first_address(value)[1]


# The Date most mail carries ("Mon, 2 Nov 2026 10:12:00 +0100"), read directly; anything else goes
# through email.utils, whose reading of this shape `_date` repeats exactly.
_RFC5322_DATE = re.compile(r"(?:(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), )?([0-9]{1,2}) "
                           r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) ([0-9]{4}) "
                           r"([0-9]{2}:[0-9]{2}:[0-9]{2}) ([+-][0-9]{2})([0-9]{2})")
_MONTHS = {m: f"{i:02}" for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}


@lru_cache(maxsize=64)
def _date(value: str | None) -> datetime | None:
    if not value:
        return None
    m = _RFC5322_DATE.fullmatch(value)
    if m is not None:
        day, month, year, time, zone_h, zone_m = m.groups()  # (zone_h with its sign)
        if zone_h == "-00" and zone_m == "00":
            return None  # -0000: no known zone, a naive datetime for email.utils
        if year < "0100":  # "0026": email.utils reads two-digit years even when written with four
            year_n = int(year)
            year = str(year_n + (1900 if year_n > 68 else 2000))
        # Built by fromisoformat, which checks the fields as datetime() does (31 Feb, 24:00 and leap
        # seconds fail, as in email.utils) and reads "+0099" as 99 minutes, as email.utils does; a
        # third of the cost of int() on each field, datetime() and a timezone.
        try:
            return datetime.fromisoformat(f"{year}-{_MONTHS[month]}-{day.zfill(2)}T{time}{zone_h}:{zone_m}")
        except ValueError:  # also a zone of 24 hours or more
            return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:
        return None
    return parsed
