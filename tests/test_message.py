"""Parsing mail nobody in the project wrote: broken bytes, odd charsets, HTML only, and the language."""

from __future__ import annotations

import html
import re
from dataclasses import FrozenInstanceError, fields

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailsort.message import Message, UnparseableMessage, detect_language, html_to_text, parse, parse_many

from mails import BODIES, eml


@pytest.mark.parametrize("lang", sorted(BODIES))
def test_the_four_languages_are_recognised(lang):
    assert parse(eml(lang=lang)).language == lang


@pytest.mark.parametrize("text, expected", [
    ("Привет", "ru"),  # py3langid alone says Serbian
    ("Il sito non va", "it"),
    ("Не работает сайт", "ru"),
    ("Hola", "und"),  # no known n-gram at all: say so, the reply falls back to the default language
    ("ok", "und"),
])
def test_short_texts_prefer_the_common_client_languages(text, expected):
    assert detect_language(text) == expected


def test_quoted_history_does_not_decide_the_language():
    text = "Il sito è di nuovo giù, può controllare?\n" + "> The site was down yesterday as well, we fixed it.\n" * 20
    assert detect_language(text) == "it"


def test_html_only_mail_in_koi8_r_becomes_text():
    raw = (b"From: a@b.example\r\nSubject: x\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n"
           b"Content-Type: text/html; charset=koi8-r\r\n\r\n<p>\xf3\xc1\xca\xd4 \xce\xc5 \xd2\xc1\xc2\xcf\xd4\xc1\xc5\xd4"
           b"</p><script>alert(1)</script>\r\n--x--\r\n")
    message = parse(raw)
    assert "Сайт не работает" in message.text and "alert" not in message.text and "<p>" not in message.text


def test_encoded_sender_name_bad_date_and_empty_message_id():
    raw = b"From: =?iso-8859-1?q?Jos=E9_P=E9rez?= <jose@x.es>\r\nDate: not a date\r\nMessage-ID: <>\r\n\r\nHola, el sitio no carga"
    message = parse(raw)
    assert (message.sender, message.sender_name, message.date) == ("jose@x.es", "José Pérez", None)


def test_header_values_never_carry_line_breaks():
    raw = b"From: a@b.example\r\nSubject: =?utf-8?q?Hi=0D=0ABcc:_victim@x.example?=\r\n\r\nbody"
    assert "\n" not in parse(raw).subject and "\r" not in parse(raw).subject


@pytest.mark.parametrize("raw, reason", [(b"", "empty"), (b"garbage without headers", "no headers")])
def test_what_is_not_mail_is_set_aside_with_a_reason(raw, reason):
    with pytest.raises(UnparseableMessage, match=reason):
        parse(raw)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=600) | st.text(max_size=400).map(lambda t: ("From: x@y\r\nSubject: s\r\n\r\n" + t).encode()))
def test_any_bytes_parse_or_are_set_aside(raw):
    try:
        message = parse(raw)
    except UnparseableMessage:
        return
    assert isinstance(message.text, str) and isinstance(message.language, str)


def test_a_parsed_message_is_the_one_its_constructor_builds():
    """parse() and parse_many() build Messages without the dataclass __init__ (it costs a tenth of a
    parse): the same fields in the same order, and still frozen."""
    raw = eml(lang="it", extra={"List-Id": "<news.example>", "Return-Path": "<b@x.example>"})
    for message in (parse(raw, uid=7, folder="INBOX"), parse_many([(7, raw)], "INBOX")[0]):
        built = Message(**{f.name: getattr(message, f.name) for f in fields(Message)})
        assert message == built and repr(message) == repr(built)
        assert list(vars(message)) == list(vars(built)) == [f.name for f in fields(Message)]
        with pytest.raises(FrozenInstanceError):
            message.subject = "changed"  # type: ignore[misc]


def _plain_html_to_text(markup: str) -> str:
    """html_to_text as first written: every block tag spelled out, blanks squeezed line by line."""
    markup = re.sub(r"<\s*(script|style|head)\b.*?<\s*/\s*\1\s*>", " ", markup, flags=re.I | re.S)
    markup = re.sub(r"<\s*(br|/p|/div|/tr|/li|/h\d|p|div|tr|li|h\d)\b[^>]*>", "\n", markup, flags=re.I)
    text = html.unescape(re.sub(r"<[^>]+>", " ", markup))
    lines = [re.sub(r"[ \t\xa0]+", " ", line).strip() for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


_MARKUP = st.sampled_from([
    "<p>", "</p>", "<br>", "<BR/>", "</br>", "< br >", "<pre>", "<P class=x>", "</ div>", "<tr>", "</TR>", "<li>",
    "<h1>", "</h2>", "<hr>", "<h>", "<brx>", "<head><title>t</title></head>", "<script>x()</script>", "<style>p{}</style>",
    "<b>", "&nbsp;", "&amp;", "\xa0", "\t", "  ", "\n", "\r\n", "\r", "\u2028", "text", "Привет", "a<b", ">", "<!-- c -->",
])


@settings(max_examples=300, deadline=None)
@given(st.lists(_MARKUP | st.text(max_size=4), max_size=25).map("".join))
def test_html_to_text_is_its_plain_definition(markup):
    assert html_to_text(markup) == _plain_html_to_text(markup)
