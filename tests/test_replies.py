"""Rendering replies: every template × language, headers, Re: not stacked, injection, determinism, overrides."""

from __future__ import annotations

from datetime import date, datetime
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from zoneinfo import ZoneInfo

import pytest

from mailsort.calendar import WorkCalendar
from mailsort.config import parse_config
from mailsort.errors import ConfigError
from mailsort.policy import Action, Settings
from mailsort.replies import BUILTIN_NAMES, Templates, build_reply, hours_summary, reply_subject

from mails import message

TZ = ZoneInfo("Europe/Rome")
NOW = datetime(2026, 11, 27, 21, 0, tzinfo=TZ)  # Friday evening
ABSENT = datetime(2026, 12, 28, 11, 0, tzinfo=TZ)
LANGS = ("en", "it", "es", "ru")


def setup(**replies):
    cfg = parse_config({
        "calendar": {"timezone": "Europe/Rome",
                     "hours": {**{d: ["09:00-17:30"] for d in ("mon", "tue", "wed", "thu", "fri")}, "sat": ["10:00-13:00"]},
                     "absence": [{"start": date(2026, 12, 24), "end": date(2027, 1, 6), "note": "NOTE-XYZ"}]},
        "replies": {"owner_name": "Ana Ruiz", "signature": "Ana Ruiz — web support", "fee_note": "FEE-XYZ", **replies},
        "account": [{"name": "work", "addresses": ["me@example.org"], "imap": {"host": "127.0.0.1", "security": "none"}}],
        "client": [{"name": "Acme", "domains": ["acme.example"], "fee_note": "ACME-FEE"}],
    })
    return WorkCalendar.from_config(cfg.calendar), Settings.from_config(cfg, cfg.accounts[0])


def render(msg, template="after_hours", lang="en", now=NOW, templates=None, send_at=None, **replies):
    calendar, settings = setup(**replies)
    action = Action("reply", template=template, language=lang, to=msg.reply_to[0] if msg.reply_to else msg.sender,
                    send_at=send_at or now)
    return build_reply(msg, action, calendar=calendar, settings=settings, now=now, from_address="me@example.org",
                       templates=templates or Templates.load(), account="work")


def parsed(reply):
    return message_from_bytes(reply.as_bytes(), policy=default)


def text(reply) -> str:
    """The decoded body with plain line ends and plain spaces (babel puts NBSPs in some dates)."""
    return parsed(reply).get_content().replace("\r\n", "\n").replace("\xa0", " ").replace("\u202f", " ")


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_every_builtin_template_renders_in_every_language(name, lang):
    now = ABSENT if name == "absence" else NOW
    reply = render(message(lang=lang, date=now), template=name, lang=lang, now=now)
    body = text(reply)
    reply = parsed(reply)
    assert "{" not in body and "}" not in body
    assert "Maria Rossi" in body and "Ana Ruiz — web support" in body
    assert reply["Content-Language"] == lang
    if name in ("after_hours", "critical_ack", "expectations"):
        assert "FEE-XYZ" in body
    if name == "absence":
        assert "NOTE-XYZ" in body and "2027" in body


def test_after_hours_says_when_and_the_hours_in_the_language():
    body = text(render(message(lang="it"), lang="it"))
    assert "sabato 28 novembre 2026, dalle ore 10:00" in body
    assert "lunedì–venerdì 09:00–17:30; sabato 10:00–13:00" in body
    assert "Europe/Rome" in body
    ru = text(render(message(lang="ru"), lang="ru"))
    assert "суббота, 28 ноября 2026 г., с 10:00" in ru and "понедельник–пятница" in ru


def test_absence_return_date_is_localised():
    body = text(render(message(lang="es"), template="absence", lang="es", now=ABSENT))
    assert "jueves, 7 de enero de 2027" in body


def test_client_fee_note_wins():
    body = text(render(message(sender="Bob <bob@acme.example>")))
    assert "ACME-FEE" in body and "FEE-XYZ" not in body


def test_headers():
    msg = message(extra={"References": "<r1@x.example> <r2@x.example>"})
    reply = parsed(render(msg, send_at=datetime(2026, 11, 28, 10, 0, tzinfo=TZ)))
    assert reply["From"] == "Ana Ruiz <me@example.org>"
    assert reply["To"].addresses[0].addr_spec == "maria@client.example"
    assert reply["Subject"] == "Re: Update the opening hours"
    assert reply["In-Reply-To"] == "<m1@client.example>"
    assert reply["References"] == "<r1@x.example> <r2@x.example> <m1@client.example>"
    assert reply["Auto-Submitted"] == "auto-replied"
    assert reply["X-Auto-Response-Suppress"] == "All"
    assert reply["Message-ID"].startswith("<mailsort.") and reply["Message-ID"].endswith("@example.org>")
    assert reply["Date"].datetime == datetime(2026, 11, 28, 10, 0, tzinfo=TZ)  # the scheduled send time
    assert reply.get_content_charset() == "utf-8"


def test_reply_to_address_gets_the_reply():
    reply = parsed(render(message(extra={"Reply-To": "office@client.example"})))
    assert reply["To"].addresses[0].addr_spec == "office@client.example"


@pytest.mark.parametrize("subject,expected", [
    ("Hello", "Re: Hello"),
    ("Re: Hello", "Re: Hello"),
    ("RE: Re: re:Hello", "Re: Hello"),
    ("R: Rif: Preventivo", "Re: Preventivo"),
    ("AW: SV: Angebot", "Re: Angebot"),
    ("Отв: Сайт", "Re: Сайт"),
    ("RV: Re[2]: Presupuesto", "Re: Presupuesto"),
    ("Rif.: Sito", "Re: Sito"),
    ("", "Re:"),
    ("Report: Q3 numbers", "Re: Report: Q3 numbers"),
])
def test_re_is_not_stacked(subject, expected):
    assert reply_subject(subject) == expected


def test_crlf_in_name_and_subject_cannot_inject_headers():
    msg = message()
    evil = msg.__class__(**{**msg.__dict__, "sender_name": "Eve\r\nBcc: victim@evil.example",
                           "subject": "Hi\r\nBcc: victim@evil.example\nX-Evil: 1"})
    raw = render(evil).as_bytes()
    reply = message_from_bytes(raw, policy=default)
    assert reply["Bcc"] is None and reply["X-Evil"] is None
    assert b"\r\nBcc:" not in raw and b"\nX-Evil" not in raw
    assert reply["Subject"] == "Re: Hi Bcc: victim@evil.example X-Evil: 1"


def test_rendering_is_deterministic_and_ids_differ_per_template():
    msg = message()
    first, again = render(msg).as_bytes(), render(msg).as_bytes()
    assert first == again
    other = parsed(render(msg, template="critical_ack"))
    assert other["Message-ID"] != parsed(render(msg))["Message-ID"]


@pytest.mark.parametrize("lang", LANGS)
def test_remembered_header_classes_give_the_stdlib_smtp_policys_bytes(lang, monkeypatch):
    """replies.MAIL_POLICY keeps the header classes the stdlib would build anew for each header: the
    reply must be byte for byte what email.policy.SMTP makes of it."""
    import email.policy

    import mailsort.replies as replies

    msg = message(lang=lang, date=NOW)
    msg = msg.__class__(**{**msg.__dict__, "sender_name": "Дмитрий «Дима» Иванов, ООО Ромашка",
                           "subject": "Sito bloccato — " * 8})
    fast = [render(msg, template=name, lang=lang).as_bytes() for name in ("after_hours", "critical_ack")]
    monkeypatch.setattr(replies, "MAIL_POLICY", email.policy.SMTP)
    plain = [render(msg, template=name, lang=lang).as_bytes() for name in ("after_hours", "critical_ack")]
    assert fast == plain
    assert b"\r\nSubject: Re: " in fast[0] and b"=?utf-8?" in fast[0]


def test_remembered_headers_and_folds_give_the_same_bytes_reply_after_reply(monkeypatch):
    """MAIL_POLICY shares header objects (and their folded text) between replies: many replies in a
    row, to senders and from owners with names that need quoting or encoding, each byte for byte what
    email.policy.SMTP makes of it."""
    import email.policy

    import mailsort.replies as replies

    names = ["Дмитрий «Дима» Иванов, ООО Ромашка", "O'Brien, Pat", 'A "quoted" name', "Zoë;Li (Support)",
             "José María Núñez — assistenza siti web e-commerce e molto altro ancora, davvero molto", ""]
    cases = [(owner, sender, lang, name) for owner in names[:3] for sender in names for lang in LANGS[:2]
             for name in ("after_hours", "critical_ack")]

    def build():
        out = []
        for owner, sender, lang, name in cases:
            msg = message(lang=lang, date=NOW)
            msg = msg.__class__(**{**msg.__dict__, "sender_name": sender, "subject": f"Re: {sender} " * 3})
            out.append(render(msg, template=name, lang=lang, owner_name=owner or "Ana").as_bytes())
        return out

    fast, again = build(), build()  # the second time every repeated header is remembered
    monkeypatch.setattr(replies, "MAIL_POLICY", email.policy.SMTP)
    assert fast == again == build()


def test_a_from_given_as_text_is_the_header_the_address_makes():
    """build_reply sets From from str(Address(...)) (so that it can be remembered): the same bytes."""
    import email.policy
    from email.headerregistry import Address

    for name in ["Giulia Rinaldi", "Дмитрий «Дима» Иванов, ООО Ромашка", "O'Brien, Pat", 'A "quoted" name',
                 "x" * 120, "Zoë;Li", "Ann (Support)", ""]:
        address = Address(display_name=name, addr_spec="me@studio.example")
        from_object, from_text = EmailMessage(policy=email.policy.SMTP), EmailMessage(policy=email.policy.SMTP)
        from_object["From"], from_text["From"] = address, str(address)
        assert from_object.as_bytes() == from_text.as_bytes(), name


def test_hours_summary_groups_runs():
    calendar, _ = setup()
    assert hours_summary(calendar.hours, "en") == "Monday–Friday 09:00–17:30; Saturday 10:00–13:00"


def test_templates_dir_overrides_and_adds_languages(tmp_path):
    (tmp_path / "after_hours.en.txt").write_text("Custom {{ sender_name }} {{ next_opening_time }}\n")
    (tmp_path / "after_hours.de.txt").write_text("Guten Tag {{ sender_name }}\n")
    (tmp_path / "notes.txt").write_text("ignored")
    templates = Templates.load(tmp_path)
    assert "de" in templates.available_languages("after_hours")
    assert templates.available_languages("critical_ack") == LANGS[:1] + ("es", "it", "ru")
    assert text(render(message(), templates=templates)) == "Custom Maria Rossi 10:00\n"
    assert "Guten Tag Maria Rossi" in text(render(message(), lang="de", templates=templates))


def test_bad_user_templates_are_config_errors(tmp_path):
    (tmp_path / "after_hours.en.txt").write_text("{% if %}\n")
    with pytest.raises(ConfigError, match="after_hours.en.txt: line 1"):
        Templates.load(tmp_path)
    (tmp_path / "after_hours.en.txt").write_text("{{ no_such_variable }}\n")
    with pytest.raises(ConfigError, match="no_such_variable"):
        render(message(), templates=Templates.load(tmp_path))


def test_the_sandbox_blocks_python_internals(tmp_path):
    (tmp_path / "after_hours.en.txt").write_text("{{ sender_name.__class__.__mro__[1].__subclasses__() }}\n")
    with pytest.raises(Exception) as err:
        render(message(), templates=Templates.load(tmp_path))
    assert "unsafe" in str(err.value).lower() or "not safely" in str(err.value).lower()


def test_missing_template_language_is_a_clear_error():
    with pytest.raises(ConfigError, match="no reply template after_hours.fr.txt"):
        render(message(), lang="fr")


def test_preload_loads_what_the_first_reply_needs_once_before_the_workers_fork():
    from babel import localedata

    from mailsort.replies import _environment

    templates = Templates.load(None)
    localedata._cache.clear()
    _environment.cache_clear()
    templates.preload()
    assert _environment.cache_info().currsize == 1  # jinja2 imported and the sandbox built
    assert {"en", "es", "it", "ru"} <= set(localedata._cache)  # babel's data for every template language
