"""The parse route a sync takes: the fast reader in message.py must give exactly what mail-parser gives,
on whole messages and on messages cut short the way a sync fetches them (header + the first 8 KB of
text), and hand everything it does not handle to mail-parser."""

from __future__ import annotations

import email.message
import email.policy
import email.utils
import json
import random
import re
from dataclasses import asdict
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from sync_support import CLOSED, mail, realistic_message

from mailsort import language as L
from mailsort import message as M
from mailsort.imap import TEXT_PEEK

ROOT = Path(__file__).resolve().parents[1]


def cut(raw: bytes, size: int = TEXT_PEEK) -> bytes:
    """What a sync fetches: BODY[HEADER] (with its blank line) + BODY[TEXT]<0.size>."""
    head, _, body = raw.partition(b"\r\n\r\n")
    return head + b"\r\n\r\n" + body[:size]


def same_message(raw: bytes) -> bool:
    """True when the fast route took the message (False: it left it to mail-parser); asserts that the
    result is the one mail-parser gives, field by field, and that it notes no defect mail-parser lacks."""
    fast = M._fast_fields(raw)
    if fast is None:
        return False
    try:
        slow = M._mailparser_fields(raw)
    except M.UnparseableMessage:
        # mail-parser fails on a multipart cut off before its first part; the fast route returns the
        # headers and no text, noting the defect, which is better than setting the message aside
        assert "StartBoundaryNotFoundDefect" in fast.defects and not fast.text_plain and not fast.text_html
        return True
    a, b = asdict(M._message(fast, None, None)), asdict(M._message(slow, None, None))
    assert set(a["defects"]) <= set(b["defects"]), (a["defects"], b["defects"])
    a.pop("defects"), b.pop("defects")
    assert a == b, raw[:400]
    return True


def test_realistic_mail_takes_the_fast_route_and_matches_mail_parser():
    rng = random.Random(11)
    taken = 0
    total = 0
    for n in range(400):
        raw = realistic_message(n, rng, CLOSED)
        for variant in (raw, cut(raw), cut(raw, rng.randint(0, 3000))):
            taken += same_message(variant)
            total += 1
    # whole messages and 8 KB cuts always; a few random cuts land inside a part's header line
    assert taken >= total * 0.97, (taken, total)


def test_the_corpus_and_test_mail_match_mail_parser():
    rng = random.Random(3)
    raws = [mail(n) for n in range(12)]
    for line in (ROOT / "training_data" / "test.jsonl").read_text(encoding="utf-8").splitlines()[:150]:
        example = json.loads(line)
        msg = email.message.EmailMessage()
        msg["From"] = f"Someone <s{rng.randrange(999)}@example.org>"
        msg["To"] = "me@example.org"
        msg["Subject"] = example["subject"]
        msg["Message-ID"] = f"<{example['id']}@corpus.example>"
        msg["Date"] = email.utils.format_datetime(CLOSED)
        msg.set_content(example["body"], cte=rng.choice(["8bit", "quoted-printable", "base64"]))
        if rng.random() < 0.5:
            msg.add_alternative(f"<p>{example['body']}</p>", subtype="html")
        raws.append(msg.as_bytes(policy=email.policy.SMTP))
    assert all(same_message(raw) for raw in raws)


@pytest.mark.parametrize("raw, why", [
    (b"From: a@b.example\r\nSubject: \xc3\xa9t\xc3\xa9\r\n\r\nbody", "8-bit header"),
    (b"From: undisclosed-recipients:;\r\nSubject: x\r\n\r\nbody", "a group"),
    (b"From: a@b.example (Ann)\r\nSubject: x\r\n\r\nbody", "a comment"),
    (b"From: a@b.example\r\nDate: yesterday\r\n\r\nbody", "a bad date"),
    (b"From: a@b.example\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Type: message/rfc822\r\n\r\n"
     b"From: c@d.example\r\nSubject: inner\r\n\r\ninner text\r\n--x--\r\n", "an attached message"),
    (b"From: a@b.example\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n--x--\r\n--x\r\n\r\ntext\r\n", "closed first"),
    (b"From: a@b.example\r\nSubject: x\rbroken\r\n\r\nbody", "a stray CR"),
    (b"From: a@b.example\r\nContent-Type: text/plain; charset*=utf-8''%E2%82%AC\r\n\r\nbody", "RFC 2231"),
    (b"From: a@b.example\r\nContent-Type: text/plain; charset=x-unknown\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\xff",
     "an unknown charset"),
])
def test_what_the_fast_route_does_not_handle_goes_to_mail_parser(raw, why):
    assert M._fast_fields(raw) is None, why
    assert isinstance(M.parse(raw), M.Message)  # and mail-parser reads it


def test_a_message_cut_inside_a_part_header_keeps_its_text():
    raw = (b"From: a@b.example\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n"
           b"Content-Type: text/plain; charset=utf-8\r\n\r\nthe site is down\r\n--x\r\nContent-Type: application/pdf\r\n"
           b"Content-Disposition: attachment; fil")
    assert same_message(raw)
    assert M.parse(raw).text == "the site is down"


_CUT_PART = (b"From: a@b.example\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n"
             b"Content-Type: text/plain; charset=utf-8\r\n\r\nthe site is down\r\n--x\r\n")


@pytest.mark.parametrize("tail", [
    b"",  # cut right after the delimiter line: an empty part
    b"Content-Type: image/png; name=\"shot.png\"\r\nContent-Disposition: attachm",  # the disposition cut short
    b"Content-Type: application/pdf; name=invoice.pdf\r\nContent-Disposition:",  # cut after the colon
    b"Content-Type: image/png\r\nContent-Disposition: form-data; filename=\"shot.png\"\r\n\r\niVBORw0KGgo",
    b"Content-Type: application/pdf; name=\"=?utf-8?b?0J7RgtGH0ZHRgi5wZGY=?=\"\r\nContent-Disposition: attach",  # encoded
])
def test_a_partial_fetch_cut_at_an_attachment_takes_the_fast_route_with_mail_parsers_answer(tail):
    # a named part that is no text is an attachment for mail-parser whatever its disposition says
    raw = _CUT_PART + tail
    fast = M._fast_fields(raw)
    assert fast is not None
    assert asdict(M._message(fast)) == asdict(M._message(M._mailparser_fields(raw)))  # the defects too
    assert M.parse(raw).text == "the site is down"


@pytest.mark.parametrize("tail", [
    b"Content-Type: image/png\r\nContent-Disposition: attachm",  # no name: mail-parser reads it as text
    b"Content-Type: image/png; name=\"=?utf-8?q?_?=\"\r\nContent-Disposition:",  # a name that decodes to a blank
    b"Content-Type: image/png; name=\"<shot.png>\"\r\nContent-Disposition: attachm",  # a name the stdlib unquotes
])
def test_an_unnamed_or_encoded_part_with_an_odd_disposition_goes_to_mail_parser(tail):
    assert M._fast_fields(_CUT_PART + tail) is None


_atom = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABC0123456789.-_+!#$%&'*/=?^`{|}~", min_size=1, max_size=8)
_address = st.builds(lambda a, b: f"{a}@{b}", _atom, _atom)
_phrase = st.lists(_atom, min_size=1, max_size=3).map(" ".join) | st.sampled_from(
    ["=?utf-8?q?Jos=C3=A9?=", "=?utf-8?q?A=22nn?=", "=?utf-8?b?QW5uLCBMZWU=?=", "=?utf-8?q?a=5Cb?=", "=?utf-8?q?A=0D=0An?="])
_quoted = st.text(alphabet=st.characters(blacklist_characters='"\\\r\n', blacklist_categories=("Cs",)), max_size=12)
_mailbox = st.one_of(
    _address,
    st.builds(lambda p, a: f"{p} <{a}>", _phrase, _address),
    st.builds(lambda q, a: f'"{q}" <{a}>', _quoted, _address),
    st.builds(lambda a: f"<{a}>", _address),
)
_spaces = st.sampled_from(["", " ", "  ", "\r\n ", "\t"])


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(_spaces, _mailbox, _spaces), min_size=1, max_size=4))
def test_simple_address_lists_read_exactly_as_the_stdlib_reads_them(items):
    value = ",".join(f"{a}{m}{b}" for a, m, b in items)
    simple = M._simple_addresses(value)
    if simple is not None:  # None: left to getaddresses, which is then used as it is
        assert [(n, a) for n, a, _ in simple] == email.utils.getaddresses([value]), value
    assert list(M._address_pairs(value)) == email.utils.getaddresses([value])
    try:
        pairs, sure = M._address_header(value)
    except M._NotSimple:
        return
    text = ", ".join(map(M._address_text, pairs))  # the header as mail-parser rebuilds it
    if sure:  # the pairs the fast route hands on are those the rebuilt header reads back as
        assert pairs == M._address_pairs(text), (value, text)


def test_language_scorer_agrees_with_rank():
    rng = random.Random(5)
    texts = [M.parse(realistic_message(n, rng, CLOSED)).text for n in range(150)]
    for line in (ROOT / "training_data" / "test.jsonl").read_text(encoding="utf-8").splitlines()[:300]:
        example = json.loads(line)
        texts += [example["subject"] + "\n" + example["body"], example["subject"], example["body"][:50]]
    texts += ["Привет", "Il sito non va", "Hola", "ok", "Danke", "obrigado"]
    identifier = L._identifier()
    scorer = L._scorer()
    assert scorer is not None  # the py3langid we ship with has the internals the fast path uses
    for text in texts:
        sample = L._strip_quoted(text)[:L.LANGUAGE_SAMPLE].strip()
        if len(sample) < 3:
            continue
        ranked = identifier.rank(sample)
        if ranked[0][1] < L.NO_EVIDENCE:
            expected = "und"
        elif len(sample) < L.SHORT_SAMPLE:
            expected = next((lang for lang, _ in ranked if lang in L.COMMON_LANGUAGES), ranked[0][0])
        else:
            expected = ranked[0][0]
        assert L.detect_language(text) == expected, text[:80]
    # a batch walks the language model in lockstep (one text alone walks it in Python): same answers
    assert L.detect_languages(texts) == [L.detect_language(text) for text in texts]


def test_a_multipart_cut_before_its_first_part_is_still_a_message():
    """mail-parser raises on this (its epilogue recovery reads a None); a sync must not set it aside."""
    raw = (b"From: Ann <ann@b.example>\r\nSubject: the site is down\r\nMessage-ID: <cut@b.example>\r\n"
           b"Content-Type: multipart/mixed; boundary=x\r\n\r\nThis is a multi-part message in MIME format.\r\n")
    message = M.parse(raw)
    assert (message.sender, message.subject, message.text) == ("ann@b.example", "the site is down", "")
    assert "StartBoundaryNotFoundDefect" in message.defects


# --- the fast route's shortcuts agree with the plain readings they replace -----------------------

def _plain_header_fields(head: bytes) -> list[tuple[str, str]] | None:
    """A header block read line by line the way the stdlib splits it (None: the fast route must
    refuse it). M._header_fields reads it with two regex passes instead."""
    if not head.isascii() or re.search(rb"[\x00\x0b\x0c\x1c-\x1e]", head):
        return None
    fields: list[tuple[str, list[str]]] = []
    for line in head.decode("ascii").splitlines(keepends=True):
        if line[0] in " \t":
            if not fields:
                return None
            fields[-1][1].append(line)
            continue
        m = re.match(r"([\x21-\x39\x3b-\x7e]+):", line)
        if m is None:
            return None
        fields.append((m.group(1), [line[m.end():].lstrip(" \t")]))
    if not fields:
        return None
    return [(name, "".join(parts).rstrip("\r\n")) for name, parts in fields]


_header_line = st.one_of(
    st.builds(lambda n, v: f"{n}:{v}", st.sampled_from(["Subject", "from", "X-A", "Content-Type", "a b", "", "é", "X\x7f"]),
              st.text(alphabet=" \t!\"#=?;:<>@abcXYZ019\x01\x1f\x00\x0b\x1e\x7fé", max_size=12)),
    st.text(alphabet=" \t", min_size=1, max_size=2).flatmap(lambda b: st.text(alphabet=" a=:\t\x01", max_size=8).map(lambda t: b + t)),
    st.text(alphabet="ab: \t-", min_size=1, max_size=6),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(_header_line, st.sampled_from(["\r\n", "\n"])), min_size=1, max_size=6),
       st.sampled_from(["", "\r\n", "\n", "\r"]))
def test_header_fields_are_read_as_the_stdlib_splits_lines(lines, end):
    # a header block as _split_head cuts it: no empty line inside, every CR before an LF but a last one
    text = "".join(line + brk for line, brk in lines[:-1]) + lines[-1][0] + end
    if any(not line for line, _ in lines) or (end == "\r" and text.endswith("\n\r")):
        return
    head = text.encode("utf-8")
    try:
        fast = M._header_fields(head)
    except M._NotSimple:
        fast = None
    assert fast == _plain_header_fields(head), head


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(["text/plain", "Multipart/Mixed", "text", "/", ";", "; ", " ", "\t", "\r", "charset",
                                 "Boundary", "name*", "=", '"', '"=_b1 x"', "utf-8", "a=b", "\\", "x"]), max_size=8))
def test_a_one_parameter_mime_value_is_read_as_the_general_reading_reads_it(pieces):
    value = "".join(pieces)
    def read(reader):
        try:
            return reader(value)
        except M._NotSimple:
            return None
    assert read(M._mime_value.__wrapped__) == read(M._mime_params), value


def _plain_decode_words(value: str) -> tuple[str, str]:
    """What the fast route made of encoded words before it read the common shape itself."""
    from email.header import decode_header

    if "=?" not in value:
        return "ok", value.strip()
    try:
        out = ""
        for data, charset in decode_header(value):
            if isinstance(data, str):
                out += data
                continue
            try:
                out += str(data, charset or "utf-8")
            except (LookupError, UnicodeError):
                out += str(data, "utf-8", "ignore")
        out.encode("utf-8")
    except Exception as exc:
        return "refused", type(exc).__name__ if not isinstance(exc, UnicodeEncodeError) else "_NotSimple"
    return "ok", out.strip()


def _encoded_word(charset: str, encoding: str, data: bytes, damage: int) -> str:
    import base64
    import binascii

    if encoding in "bB":
        text = base64.b64encode(data).decode()
        text = text.rstrip("=") if damage == 1 else text + "#" if damage == 2 else text
    else:
        text = binascii.b2a_qp(data, header=True).decode().replace("?", "=3F").replace("\n", "")
        text = text + "=" if damage == 1 else text.replace("=", "=Z", 1) if damage == 2 else text
    return f"=?{charset}?{encoding}?{text}?="


_word = st.one_of(
    st.builds(_encoded_word, st.sampled_from(["utf-8", "UTF-8", "iso-8859-1", "koi8-r", "x-unknown", "utf-8*en", "", "utf-16"]),
              st.sampled_from("bBqQ"), st.binary(max_size=9) | st.text(max_size=6).map(lambda t: t.encode()),
              st.sampled_from([0, 0, 0, 1, 2])),
    st.text(alphabet="Re:ab =?_\t", max_size=6),
)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(_word, st.sampled_from(["", " ", "  ", "\r\n ", "\n\t", "\t"])), min_size=1, max_size=5))
@example([("=?utf-8?b?ww==?=", " "), ("=?UTF-8?b?qQ==?=", "")])  # "é" cut in two words: decoded together
@example([("=?utf-8?q?=C3?=", "\r\n "), ("=?utf-8?Q?=A9?=", " ")])
@example([("=?utf-8?b?ww==?=", ""), ("=?iso-8859-1?b?qQ==?=", "")])  # another charset: decoded apart
@example([("Re: ", ""), ("=?utf-8?b?w6k=?=", "")])
def test_encoded_words_are_decoded_as_the_stdlib_decodes_them(items):
    value = "".join(word + gap for word, gap in items)
    try:
        fast = ("ok", M._decode_words(value))
    except M._NotSimple:
        fast = ("refused", "_NotSimple")
    except Exception as exc:
        fast = ("refused", type(exc).__name__)
    assert fast == _plain_decode_words(value), value


_two = st.integers(0, 99).map(lambda n: f"{n:02d}")


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(["", "Mon, ", "Tue, ", "Sun, "]), st.integers(0, 40).map(str) | _two,
       st.sampled_from(["Jan", "Feb", "Jun", "Nov", "Dec"]), st.integers(0, 9999).map(lambda n: f"{n:04d}"),
       _two, _two, _two, st.sampled_from("+-"), _two, _two)
@example("Mon, ", "2", "Nov", "2026", "10", "12", "00", "-", "00", "00")  # -0000: no zone, no date for us
@example("", "2", "Nov", "2026", "10", "12", "00", "+", "00", "00")
@example("", "2", "Nov", "0026", "10", "12", "00", "+", "01", "00")  # read as 2026
@example("", "2", "Nov", "0069", "10", "12", "00", "+", "01", "00")  # read as 1969
@example("", "31", "Feb", "2026", "10", "12", "00", "+", "01", "00")
@example("", "2", "Nov", "2026", "24", "00", "00", "+", "01", "00")
@example("", "2", "Nov", "2026", "10", "12", "00", "+", "24", "00")
@example("", "2", "Nov", "2026", "10", "12", "00", "-", "00", "99")
def test_dates_are_read_as_email_utils_reads_them(weekday, day, month, year, hh, mm, ss, sign, zh, zm):
    value = f"{weekday}{day} {month} {year} {hh}:{mm}:{ss} {sign}{zh}{zm}"
    try:
        expected = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        expected = None
    if expected is not None and expected.tzinfo is None:
        expected = None
    got = M._date.__wrapped__(value)
    if expected is None:
        assert got is None, value
    else:
        assert (got.isoformat(), got.utcoffset()) == (expected.isoformat(), expected.utcoffset()), value
