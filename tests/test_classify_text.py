"""Text cleaning: the model must read what the sender wrote now, not the thread or the footer."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailsort.classify.text import (
    MAX_BODY_CHARS,
    clean_body,
    clean_subject,
    document,
    normalise,
    strip_accents,
)

QUOTED = [
    # (language, body, what must stay, what must go)
    ("en", "Thanks, all fine now.\n\nOn Mon, 3 Jun 2024 at 10:15, Ann Lee <ann@example.com> wrote:\n"
     "> The site is down!!\n> Error 500", "thanks, all fine now.", "site is down"),
    ("en", "ok thanks\n\n> the site is down\n> help", "ok thanks", "site is down"),
    ("en", "See below.\n\n-----Original Message-----\nFrom: Bob\nSent: Monday\nSubject: outage\n"
     "Our mail server is down", "see below.", "server is down"),
    ("it", "Grazie mille, ora funziona.\n\nIl giorno lun 3 giu 2024 alle ore 10:15 Luca Bianchi "
     "<luca@example.it> ha scritto:\n> il sito è giù", "grazie mille, ora funziona.", "giù"),
    ("it", "Va bene così.\n\nDa: Mario Rossi <mario@example.it>\nInviato: lunedì 3 giugno 2024\n"
     "A: supporto@example.it\nOggetto: sito bloccato\n\nil sito è bloccato", "va bene così.",
     "bloccato"),
    ("es", "Perfecto, gracias.\n\nEl lun, 3 jun 2024 a las 10:15, Ana Ruiz (<ana@example.es>) "
     "escribió:\n> la web está caída", "perfecto, gracias.", "caída"),
    ("es", "Vale.\n\nDe: Pedro <pedro@example.es>\nEnviado el: lunes\nPara: soporte\nAsunto: caída\n"
     "la tienda no funciona", "vale.", "tienda"),
    ("ru", "Спасибо, всё работает.\n\n3 июня 2024 г., в 10:15, Иван Петров <ivan@example.ru>:\n"
     "> сайт не открывается", "спасибо, всё работает.", "не открывается"),
    ("ru", "Понял, спасибо.\n\nОт: Иван <ivan@example.ru>\nОтправлено: 3 июня\nКому: поддержка\n"
     "Тема: авария\nсайт лежит", "понял, спасибо.", "лежит"),
]

SIGNATURES = [
    ("en", "Can you fix the typo?\n\nSent from my iPhone", "typo", "iphone"),
    ("en", "Small change please.\n-- \nAnn Lee\nAcme Ltd\n+44 20 1234 5678", "small change", "acme"),
    ("it", "cambia il numero per favore\n\nInviato da iPhone", "numero", "iphone"),
    ("it", "ciao, tutto ok\n\nInviato dal mio Galaxy", "tutto ok", "galaxy"),
    ("es", "cambia la foto\n\nEnviado desde mi iPhone", "foto", "iphone"),
    ("ru", "поменяйте фото\n\nОтправлено с iPhone", "фото", "iphone"),
    ("ru", "поменяйте фото\n\nОтправлено из мобильной Почты Mail.ru", "фото", "mail.ru"),
]


@pytest.mark.parametrize(("lang", "body", "keep", "drop"), QUOTED, ids=[f"{q[0]}-{i}" for i, q in enumerate(QUOTED)])
def test_quoted_history_is_stripped(lang: str, body: str, keep: str, drop: str) -> None:
    cleaned = clean_body(body).lower()
    assert keep in cleaned
    assert drop not in cleaned


@pytest.mark.parametrize(("lang", "body", "keep", "drop"), SIGNATURES, ids=[f"{s[0]}-{i}" for i, s in enumerate(SIGNATURES)])
def test_signatures_are_stripped(lang: str, body: str, keep: str, drop: str) -> None:
    cleaned = clean_body(body).lower()
    assert keep in cleaned
    assert drop not in cleaned


def test_bare_forward_keeps_the_forwarded_text() -> None:
    body = ("---------- Forwarded message ---------\nFrom: Google <no-reply@google.com>\n"
            "Date: Mon\nSubject: Security alert\nTo: shop@example.com\n\n"
            "Your site may be hacked")
    assert "may be hacked" in clean_body(body).lower()
    assert "google.com" not in clean_body(body)


def test_text_without_quotes_is_kept_whole() -> None:
    body = "Line one.\nFrom the shop we see errors.\nDa quando? da ieri."
    assert clean_body(body) == body


def test_normalise_masks_and_folds() -> None:
    text = normalise("ＨＥＬＬＯ  Visit https://shop.example.com/x?y=1 or mail ann@example.com, "
                     "call 555-1234, error 503!")
    assert "hello" in text  # NFKC folds full-width letters, lowercased
    assert "_url_" in text and "example.com/x" not in text
    assert "_email_" in text and "ann@" not in text
    assert "555" not in text and " 0" in text
    assert "503" in text  # HTTP status codes are signal, kept
    assert "  " not in text


def test_strip_accents_across_scripts() -> None:
    assert strip_accents("perché così Ñandú") == "perche cosi Nandu"
    assert strip_accents("ошибка йод ёж") == "ошибка иод еж"


def test_subject_prefixes_removed() -> None:
    for s in ("Re: sito giù", "RE: RE: sito giù", "Fwd: sito giù", "R: sito giù", "Rif: sito giù",
              "Отв: sito giù", "AW: sito giù", "RV: sito giù"):
        assert clean_subject(s) == "sito giù"


def test_document_uses_subject_and_bounds_length() -> None:
    doc = document("SITE DOWN", "")
    assert doc == "site down"
    long = document("x", "word " * 5000)
    assert len(long) <= MAX_BODY_CHARS + 10
    assert document("", "Hello") == "hello"


def test_answer_below_a_bare_quote_is_kept() -> None:
    body = ("Mi è arrivato questo, è importante?\n\n> Your database 'shop' has been dropped.\n\n"
            "In effetti il negozio ora è vuoto.")
    cleaned = clean_body(body)
    assert "negozio ora è vuoto" in cleaned
    assert "dropped" not in cleaned


CLOSINGS = [
    # (body, what must stay, what must go)
    ("Добрый день.\n\nСайт не работает.\n\nС уважением,\nМаксим Гребнев\nProject manager, «Бюро Север»",
     "сайт не работает", "уважением"),
    ("Buongiorno,\nil sito è giù.\n\nCordiali saluti, Anna Rossi\nStudio Rossi\ntel 02 1234", "sito è giù",
     "studio rossi"),
    ("Привет!\nсделайте фото\n\n—\nКатя, SMM & performance\nагентство «Лайк Лаб»", "фото", "лайк"),
    ("Hi,\nplease fix the typo.\n\nThanks,\nTom\nAcme Ltd", "typo", "acme"),
]


@pytest.mark.parametrize(("body", "keep", "drop"), CLOSINGS)
def test_closing_formula_and_rule_end_the_new_text(body: str, keep: str, drop: str) -> None:
    cleaned = clean_body(body).lower()
    assert keep in cleaned
    assert drop not in cleaned


@pytest.mark.parametrize("body", [
    # a "thanks" that starts a sentence, a P.S. after the closing, a rule before long text
    "Ciao,\nGrazie mille per ieri!\nil sito è giù",
    "Hi\nThanks, the site is down again\nTom",
    "Thanks\nPS the site is down",
    "Vedi sotto\n---\nLorenzo, reenvío: creo que por eso nadie puede pagar la suscripción hoy. Nos escriben socios.",
])
def test_text_after_a_closing_that_is_not_a_signature_is_kept(body: str) -> None:
    assert clean_body(body) == body


def test_forwarded_mail_is_read_with_the_note() -> None:
    body = ("Oi, o que significa isso?\n\n---------- Forwarded message ---------\n"
            "De: Google Search Console <sc-noreply@google.example>\nSubject: Problemas\n\n"
            "O Google detectou que seu site foi invadido.")
    cleaned = clean_body(body)
    assert cleaned.startswith("Oi, o que significa isso?")
    assert "foi invadido" in cleaned and "sc-noreply" not in cleaned


def test_forward_subject_keeps_quoted_text_but_a_reply_does_not() -> None:
    body = "Ciao, è arrivata questa?\n\n> Your app has been removed from the App Store."
    assert "removed" in document("Fw: Apple", body)
    assert "removed" in document("I: Apple", body)
    assert "removed" not in document("Re: Apple", body)
    assert "removed" not in document("Re: Fwd: Apple", body)
    assert "removed" not in clean_body(body)


# --- the fast line tests agree with the plain definitions ---------------------------------------

def _plain_cut_signature(lines: list[str]) -> list[str]:
    """`_cut_signature` as defined, every pattern on every line (the module skips what cannot match)."""
    from mailsort.classify import text as T

    def signature_tail(tail: list[str]) -> bool:
        rest = [t.strip() for t in tail if t.strip()]
        return (len(rest) <= T._SIG_LINES and all(len(t) <= T._SIG_LINE_CHARS for t in rest)
                and not any(t.lower().startswith(("p.s", "ps:", "ps ", "pd:", "p.d")) for t in rest))

    for i, line in enumerate(lines):
        if T._SIG_DELIMITER.match(line) or T._SIGNOFF.match(line):
            return lines[:i]
        if ((T._CLOSING.match(line) or T._RULE.match(line)) and any(t.strip() for t in lines[:i])
                and signature_tail(lines[i + 1:])):
            return lines[:i]
    return lines


def _plain_cut_quoted(lines: list[str]) -> tuple[list[str], list[str], bool]:
    """`_cut_quoted` as defined, every pattern on every line."""
    from mailsort.classify import text as T

    new: list[str] = []
    quoted: list[str] = []
    for i, line in enumerate(lines):
        if T._QUOTE_HEADER.match(line):
            return new, quoted + lines[i + 1:], bool(T._FORWARD_MARK.match(line))
        if T._FROM_FIELD.match(line) and any(T._OTHER_FIELD.match(w) for w in lines[i + 1:i + 5]):
            j = i + 1
            while j < len(lines) and (T._OTHER_FIELD.match(lines[j]) or not lines[j].strip()):
                j += 1
            return new, quoted + lines[j:], False
        (quoted if T._QUOTED_LINE.match(line) else new).append(line)
    return new, quoted, False


_LINES = st.sampled_from([
    "", " ", "\t", "\u00a0", "-- ", "--", "---", "— ", "___", "=", "Sent from my iPhone", "ſent from my phone",
    "SENT FROM MY PHONE", "Inviato da iPhone", "Отправлено с iPhone", "Von meinem iPhone gesendet", "Thanks,",
    "Thanks, the site is down", "Best regards, Anna Maria", "С уважением,", "Cordiali saluti", "Grazie",
    "\u2003Best regards", "Cheers", "ta", "TA!", "P.S. one more thing", "PS: also", "pd: otra cosa", "Mark",
    "CEO, Example Ltd", "+39 333 1234567", "x" * 61, "y" * 60, "On Mon, Ann <a@b.example> wrote:",
    "From: Ann <a@b.example>", "Sent: Monday", "> quoted", "  > quoted", "Da: Luca", "Oggetto: x",
    "---------- Forwarded message ---------", "Il sito non funziona da stamattina, errore 500.",
])


@settings(max_examples=400, deadline=None)
@given(st.lists(_LINES | st.text(max_size=70), max_size=14))
def test_cut_quoted_and_cut_signature_are_their_plain_definitions(lines: list[str]) -> None:
    from mailsort.classify.text import _cut_signature, _cut_quoted

    lines = [line.replace("\n", " ").replace("\r", " ") for line in lines]  # lines, as clean_body makes them
    assert _cut_signature(lines) == _plain_cut_signature(lines)
    assert _cut_quoted(lines) == _plain_cut_quoted(lines)
    new, old, forwarded = _cut_quoted(lines)
    assert _cut_signature(new) == _plain_cut_signature(new)


def test_signature_shortcuts_are_implied_by_the_patterns() -> None:
    """`_cut_signature` skips a pattern when a cheap test says it cannot match: those tests must
    follow from the patterns, or a footer would survive."""
    import re

    from mailsort.classify import text

    src = text._SIGNOFF.pattern
    footers = re._parser.parse(src[src.index("(?:") : src.rindex(")") + 1], text._SIGNOFF.flags)
    assert footers.getwidth()[1] <= text._SIGNOFF_CHARS
    longest = "Von meinem " + "x" * 40 + " gesendet"
    assert len(longest) == text._SIGNOFF_CHARS and text._SIGNOFF.match(f"  {longest}\t")
    assert clean_body(f"Please fix it.\n\n  {longest}  ") == "Please fix it."
    # the most words a closing line can have, and the rule characters
    closing = "Com os melhores cumprimentos , Anna Maria Rossi"
    assert len(closing.split()) == text._CLOSING_WORDS and text._CLOSING.match(closing)
    assert clean_body(f"O site caiu.\n\n{closing}\nStudio Rossi") == "O site caiu."
    assert not text._CLOSING.match(closing + " Jr")
    for ch in text._RULE_CHARS:
        assert clean_body(f"Il sito è giù.\n \u2003{ch} {ch}\nAnna\n+39 02 1234") == "Il sito è giù."


def _first_letters(items) -> tuple[set, bool]:
    """The literal characters a match of the parsed sequence can start with (None: something
    other than a literal), and whether it can match the empty string."""
    from re import _constants as c

    out: set = set()
    for op, av in items:
        if op is c.LITERAL:
            first, empty = {av}, False
        elif op is c.SUBPATTERN:
            first, empty = _first_letters(av[3].data)
        elif op is c.BRANCH:
            first, empty = set(), False
            for alternative in av[1]:
                f, e = _first_letters(alternative.data)
                first, empty = first | f, empty or e
        elif op in (c.MAX_REPEAT, c.MIN_REPEAT):
            first, empty = _first_letters(av[2].data)
            empty = empty or av[0] == 0
        elif op in (c.AT, c.ASSERT, c.ASSERT_NOT):
            first, empty = set(), True
        else:
            first, empty = {None}, False
        out |= first
        if not empty:
            return out, False
    return out, True


def test_first_letter_lookaheads_admit_every_alternative() -> None:
    """_SIGNOFF and _CLOSING start with a lookahead on the first letter of their alternatives, so
    that most lines fail at once: it must admit every letter an alternative can start with, in
    every case form the regex engine accepts for it."""
    import re
    from re import _constants as c
    from re import _parser

    from mailsort.classify import text

    every = "".join(chr(n) for n in range(0x110000) if not 0xD800 <= n < 0xE000)
    checked = 0
    for rx in (text._SIGNOFF, text._CLOSING):
        looks = iter(re.findall(r"\(\?=(\[[^\]]*\])\)", rx.pattern))

        def walk(items) -> None:
            nonlocal checked
            items = list(items)
            for i, (op, av) in enumerate(items):
                if op is c.ASSERT and av[0] == 1:
                    firsts, _ = _first_letters([items[i + 1]])
                    assert None not in firsts
                    letters = set(re.findall("|".join(re.escape(chr(f)) for f in firsts), every, rx.flags))
                    admitted = set(re.findall(next(looks), every, rx.flags))
                    assert letters <= admitted, sorted(letters - admitted)
                    checked += 1
                elif op is c.BRANCH:
                    for alternative in av[1]:
                        walk(alternative.data)
                elif op is c.SUBPATTERN:
                    walk(av[3].data)

        walk(_parser.parse(rx.pattern, rx.flags).data)
    assert checked == 3


def test_numbers_are_masked_in_every_script() -> None:
    """normalise skips the number pattern for text with no ASCII digit and nothing from U+0660
    up: that holds only while no decimal digit lies between "9" and U+0660."""
    import re

    below = "".join(chr(n) for n in range(0x660))
    assert re.findall(r"\d", below) == list("0123456789")
    assert normalise("ошибка ٥٠٣ и код ٤٢") == "ошибка 0 и код 0"  # Arabic-Indic digits: masked
    assert normalise("Ошибка 503, заказ 12345") == "ошибка 503, заказ 0"
    assert normalise("perché è giù") == "perché è giù"
    assert normalise("Fehler ５０３ seit ２ Stunden") == "fehler 503 seit 0 stunden"  # NFKC first


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_long_bodies_are_cut_as_short_ones(newline: str) -> None:
    """A long body is split into lines in two parts (the quoted history is only read when
    needed): the reply header, an Outlook block or a forward must be found wherever they are."""
    from mailsort.classify import text

    quoted = newline.join(f"> line {i} of the old thread, quoted by the mail client" for i in range(60))
    header = "On Mon, 3 Jun 2024 at 10:15, Ann Lee <ann@example.com> wrote:"
    reply = newline.join(["Hello,", "", "the shop is down again.", "", "Thanks,", "Tom", header, quoted])
    assert len(reply) > 3 * text._HEAD_CHARS
    assert clean_body(reply) == "Hello,\n\nthe shop is down again."
    # the new text is longer than the first part: the header is found further down
    long_new = newline.join(["Hello,"] + [f"point {i}: the checkout page fails for some customers" for i in range(40)])
    cut = clean_body(newline.join([long_new, header, quoted]))
    assert cut.endswith("point 39: the checkout page fails for some customers") and "old thread" not in cut
    # an Outlook block whose fields straddle the end of the first part
    for pad in range(0, 200, 7):
        filler = "x" * (text._HEAD_CHARS - 40 + pad)
        body = newline.join(["Ok.", filler, "From: Bob <bob@example.com>", "Sent: Monday", "To: shop",
                             "Subject: outage", "", "our mail server is down", quoted])
        assert clean_body(body) == f"Ok.\n{filler}"
    # a forward: what was passed on, under the note, is read from the rest of the body
    forward = newline.join(["what does this mean?", "---------- Forwarded message ---------",
                            "From: Google <no-reply@google.com>", "Subject: Security alert", "",
                            "Your site may be hacked", quoted])
    assert clean_body(forward).startswith("what does this mean?\nYour site may be hacked")
    assert clean_body(reply, forward=True).startswith("Hello,\n\nthe shop is down again.\nline 0 of the old thread")
