"""The parse route a sync takes: the fast reader in message.py must give exactly what mail-parser gives,
on whole messages and on messages cut short the way a sync fetches them (header + the first 8 KB of
text), and hand everything it does not handle to mail-parser."""

from __future__ import annotations

import email.message
import email.policy
import email.utils
import json
import random
from dataclasses import asdict
from pathlib import Path

import pytest
from hypothesis import given, settings
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


_atom = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABC0123456789.-_+!#$%&'*/=?^`{|}~", min_size=1, max_size=8)
_address = st.builds(lambda a, b: f"{a}@{b}", _atom, _atom)
_phrase = st.lists(_atom, min_size=1, max_size=3).map(" ".join)
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
