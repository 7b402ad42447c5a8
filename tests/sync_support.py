"""Helpers for the sync tests: a rule-based stand-in classifier, sample mail, configs for a Dovecot
user, a command recorder, and a way to read back what the server holds.

Run as a script it is `mailsort` with the stand-in classifier (and MAILSORT_TEST_BATCH, _PARALLEL_MIN,
_PARALLEL_BATCH, _APPLY_GROUP in place of sync.py's sizes), so the crash tests can run the real CLI in a
subprocess without the trained model:
    python tests/sync_support.py --config CONFIG sync
"""

from __future__ import annotations

import base64
import imaplib
import json
import os
import random
import sys
import types
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.header import Header
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path

from imap_tools import MailBoxUnencrypted

TZ = "Europe/Madrid"
# Wednesday 25 November 2026 in Madrid (UTC+1): open 09:00-17:00 Mon-Fri.
OPEN = datetime.fromisoformat("2026-11-25T10:00:00+01:00")
CLOSED = datetime.fromisoformat("2026-11-25T20:00:00+01:00")
NEXT_MORNING = datetime.fromisoformat("2026-11-26T09:05:00+01:00")
CRITICAL_WORDS = ("down", "urgent", "error 500", "caído", "urgente", "non funziona", "не работает", "hacked")


@dataclass(frozen=True)
class Verdict:
    label: str
    p_critical: float


class FakeClassifier:
    """Same interface as mailsort.classify's Classifier: predict([(subject, body)]) -> [Verdict]."""

    def __init__(self) -> None:
        self.calls = 0

    def predict(self, pairs):
        self.calls += 1
        out = []
        for subject, body in pairs:
            text = f"{subject}\n{body}".lower()
            hit = any(w in text for w in CRITICAL_WORDS)
            out.append(Verdict("critical" if hit else "routine", 0.95 if hit else 0.05))
        return out


def never_called():
    raise AssertionError("the classifier was loaded although nothing needed classifying")


# ------------------------------------------------------------------------------------- mail

SAMPLES = [
    ("en", True, "Mario <client{n}@acme.example>", "Site down: error 500 on every page ({n})",
     "Hi,\nour shop has been down since this morning, every page shows error 500.\nPlease help!\n"),
    ("en", False, "Jane <jane{n}@shop.example>", "Invoice for October ({n})",
     "Hello,\ncould you send me the invoice for October when you have a moment?\nThanks, Jane\n"),
    ("it", True, "Luca <luca{n}@negozio.example>", "Urgente: il sito non funziona ({n})",
     "Buongiorno,\nil sito non funziona da stamattina.\nGrazie\n"),
    ("es", False, "Ana <ana{n}@tienda.example>", "Cambio de un texto en la web ({n})",
     "Hola,\n¿podrías cambiar el texto de la página de contacto?\nGracias\n"),
    ("ru", True, "Иван <ivan{n}@firma.example>", "Сайт не работает ({n})",
     "Здравствуйте,\nсайт не работает с утра, посмотрите, пожалуйста.\n"),
    ("ru", False, "Ольга <olga{n}@firma.example>", "Вопрос по домену ({n})",
     "Добрый день,\nкогда продлевается домен?\nСпасибо\n"),
]


def mail(n: int, *, date: datetime = CLOSED - timedelta(hours=1), kind: int | None = None) -> bytes:
    """Sample client mail number n (its kind cycles through SAMPLES: critical every other one)."""
    lang, critical, sender, subject, body = SAMPLES[n % len(SAMPLES) if kind is None else kind]
    msg = EmailMessage()
    msg["From"] = sender.format(n=n)
    msg["To"] = "owner@example.org"
    msg["Subject"] = subject.format(n=n)
    msg["Message-ID"] = f"<sample-{n}@example.test>"
    msg["Date"] = format_datetime(date)
    msg.set_content(body)
    return msg.as_bytes()


def is_critical(n: int) -> bool:
    return SAMPLES[n % len(SAMPLES)][1]


# ------------------------------------------------------------------------------------- a realistic mailbox

# (language, critical?, subject, body); {n} makes each one distinct, {name} and {site} vary.
TEXTS = [
    ("en", True, "URGENT: {site} is down ({n})",
     "Hi {name},\n\nsince about 8 this morning {site} shows a blank page and the checkout returns error 500.\n"
     "We are losing orders every minute, please look at it as soon as you can.\n\nThanks,\nMark"),
    ("en", True, "Payment page broken on {site}",
     "Hello,\n\ncustomers write that the payment page hangs after they enter the card number. Nothing has\n"
     "changed on our side. Could you check the logs? This is blocking all sales today.\n\nBest regards,\nSarah"),
    ("en", False, "Invoice for October ({n})",
     "Hi {name},\n\ncould you send me the invoice for October when you have a moment? Our accountant needs\n"
     "it by the end of the month.\n\nThank you,\nJane"),
    ("en", False, "Small text change on the About page",
     "Hello {name},\n\nwhen you have time, please change 'founded in 2009' to 'founded in 2008' on the About\n"
     "page of {site}. No rush at all.\n\nCheers,\nTom"),
    ("it", True, "Urgente: il sito {site} non funziona ({n})",
     "Buongiorno {name},\n\nil sito non funziona da stamattina, compare solo una pagina bianca e i clienti non\n"
     "riescono a ordinare. Può intervenire subito per favore?\n\nGrazie mille,\nLuca"),
    ("it", False, "Richiesta preventivo per la newsletter",
     "Ciao {name},\n\nvorremmo mandare una newsletter mensile ai nostri clienti. Mi potresti fare un\n"
     "preventivo? Con calma, ne parliamo la settimana prossima.\n\nSaluti,\nGiulia"),
    ("es", True, "La web está caída ({n})",
     "Hola {name},\n\nla web {site} está caída desde hace una hora, sale un error de base de datos.\n"
     "Es urgente, tenemos una campaña en marcha hoy.\n\nUn saludo,\nCarlos"),
    ("es", False, "Cambio de horario en la página de contacto",
     "Hola {name},\n\n¿podrías cambiar el horario de la página de contacto? A partir de diciembre abrimos\n"
     "de 10 a 14. Muchas gracias.\n\nAna"),
    ("ru", True, "Сайт не работает ({n})",
     "Здравствуйте, {name}!\n\nСайт {site} не открывается с утра, вместо страниц ошибка 502. Клиенты не могут\n"
     "оформить заказ. Посмотрите, пожалуйста, срочно.\n\nСпасибо,\nИван"),
    ("ru", False, "Вопрос по продлению домена",
     "Добрый день, {name}!\n\nПодскажите, пожалуйста, когда продлевается домен и сколько это стоит?\n"
     "Никакой срочности, ответьте, когда будет время.\n\nОльга"),
    ("de", True, "Shop nicht erreichbar ({n})",
     "Hallo {name},\n\nunser Shop {site} ist seit heute früh nicht erreichbar, es kommt nur ein Serverfehler.\n"
     "Bitte schauen Sie sich das dringend an.\n\nViele Grüße\nKlaus"),
    ("de", False, "Neue Fotos für die Galerie",
     "Hallo {name},\n\nich schicke Ihnen nächste Woche neue Fotos für die Galerie. Können Sie die dann\n"
     "hochladen? Keine Eile.\n\nDanke und viele Grüße\nPetra"),
    ("fr", True, "Site en panne ({n})",
     "Bonjour {name},\n\nle site {site} est en panne depuis ce matin, plus aucune commande ne passe.\n"
     "Pouvez-vous regarder en urgence ?\n\nCordialement,\nPierre"),
    ("fr", False, "Mise à jour des tarifs",
     "Bonjour {name},\n\npourriez-vous mettre à jour la page des tarifs avec le fichier que je vous enverrai\n"
     "demain ? Rien d'urgent.\n\nMerci,\nClaire"),
    ("pt", False, "Atualização do rodapé",
     "Olá {name},\n\npode atualizar o endereço no rodapé do site? Mudámos de escritório.\n\nObrigado,\nJoão"),
]
NEWSLETTER = ("en", "Your weekly digest #{n}",
              "<html><head><style>p { color: #333 }</style></head><body><h1>This week</h1>"
              "<p>Ten tips for a faster website, our new pricing and a webinar invitation.</p>"
              "<p><a href='https://news.example/unsubscribe'>Unsubscribe</a></p></body></html>")
NAMES = ("Ana", "Maria", "Paolo", "Olga", "Sam", "Lena")
SITES = ("shop.example", "hotel-sol.example", "pizzeria.example", "studio.example", "bio-farm.example")
QUOTE = ("\n\nOn Mon, 2 Nov 2026 at 10:12, Support <me@example.org> wrote:\n" +
         "".join(f"> line {i} of an earlier message in this thread, kept by the mail client\n" for i in range(40)))
SIGNATURE = "\n-- \nSent from my phone\n"


def _encoded(text: str) -> str:
    return Header(text, "utf-8").encode() if not text.isascii() else text


def _html(body: str) -> str:
    paragraphs = "".join(f"<p>{p.replace(chr(10), '<br>')}</p>" for p in body.split("\n\n"))
    return f"<html><body style='font-family:sans-serif'>{paragraphs}</body></html>"


def _b64(data: bytes) -> str:
    text = base64.b64encode(data).decode()
    return "\r\n".join(text[i:i + 76] for i in range(0, len(text), 76))


def realistic_message(n: int, rng: random.Random, now: datetime) -> bytes:
    """Message number n of a realistic mailbox (benchmarks, parser tests): kind, language and shape are
    drawn from rng (same seed, same mailbox); 1% of it is under three days old at `now`."""
    age = timedelta(hours=rng.uniform(0.5, 70)) if rng.random() < 0.01 else timedelta(days=rng.uniform(3.5, 400))
    date = format_datetime((now - age).astimezone(timezone.utc))
    name, site = rng.choice(NAMES), rng.choice(SITES)
    sender = f"{rng.choice(NAMES)} {n % 97}"
    headers = {
        "Return-Path": f"<client{n % 2500}@mail{n % 40}.example>",
        "Received": f"from mx{n % 7}.example (mx{n % 7}.example [192.0.2.{n % 250}]) by imap.example.org "
                    f"with ESMTPS id {n:08x}; {date}",
        "Date": date,
        "From": f"{_encoded(sender)} <client{n % 2500}@mail{n % 40}.example>",
        "To": "Support <me@example.org>",
        "Message-ID": f"<bench-{n}@mail{n % 40}.example>",
        "MIME-Version": "1.0",
    }
    shape = rng.random()
    if shape < 0.05:  # a newsletter: HTML only, list headers, no reply
        lang, subject, html = NEWSLETTER[0], NEWSLETTER[1].format(n=n), NEWSLETTER[2]
        headers.update({"Subject": subject, "List-Id": "<weekly.news.example>", "Precedence": "bulk",
                        "List-Unsubscribe": "<https://news.example/unsubscribe>",
                        "From": "News <news@news.example>", "Return-Path": f"<bounce-{n}@news.example>",
                        "Content-Type": "text/html; charset=utf-8", "Content-Transfer-Encoding": "8bit"})
        return _assemble(headers, html)
    lang, critical, subject, body = rng.choice(TEXTS)
    subject = subject.format(n=n, site=site)
    body = body.format(n=n, name=name, site=site)
    if rng.random() < 0.3:
        subject = "Re: " + subject
        headers["In-Reply-To"] = f"<thread-{n // 3}@example.org>"
        headers["References"] = f"<thread-{n // 3}@example.org>"
        body += QUOTE
    if rng.random() < 0.4:
        body += SIGNATURE
    headers["Subject"] = _encoded(subject)
    if shape < 0.55:  # plain text, 8bit or quoted-printable
        headers.update({"Content-Type": "text/plain; charset=utf-8", "Content-Transfer-Encoding": "8bit"})
        return _assemble(headers, body)
    if shape < 0.65:  # HTML only
        headers.update({"Content-Type": "text/html; charset=utf-8", "Content-Transfer-Encoding": "base64"})
        return _assemble(headers, _b64(_html(body).encode()))
    boundary = f"=_b{n}_{rng.randrange(10**9)}"
    alternative = (f"Content-Type: multipart/alternative; boundary=\"{boundary}a\"\r\n\r\n"
                   f"--{boundary}a\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
                   f"{body}\r\n--{boundary}a\r\nContent-Type: text/html; charset=utf-8\r\n"
                   f"Content-Transfer-Encoding: base64\r\n\r\n{_b64(_html(body).encode())}\r\n--{boundary}a--\r\n")
    if shape < 0.85:  # multipart/alternative
        headers["Content-Type"] = f"multipart/alternative; boundary=\"{boundary}a\""
        return _assemble(headers, alternative.split("\r\n\r\n", 1)[1])
    # multipart/mixed: the text (alternative) plus a PDF or an image of 5-120 KB
    size = rng.randint(5_000, 120_000)
    filename, ctype = rng.choice((("invoice.pdf", "application/pdf"), ("screenshot.png", "image/png"),
                                  ("Отчёт.docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document")))
    headers["Content-Type"] = f"multipart/mixed; boundary=\"{boundary}m\""
    mixed = (f"This is a multi-part message in MIME format.\r\n--{boundary}m\r\n{alternative}"
             f"--{boundary}m\r\nContent-Type: {ctype}; name=\"{_encoded(filename)}\"\r\n"
             f"Content-Disposition: attachment; filename=\"{_encoded(filename)}\"\r\n"
             f"Content-Transfer-Encoding: base64\r\n\r\n{_b64(rng.randbytes(size))}\r\n--{boundary}m--\r\n")
    return _assemble(headers, mixed)


def _assemble(headers: dict[str, str], body: str) -> bytes:
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return (head + "\r\n" + body.replace("\r\n", "\n").replace("\n", "\r\n")).encode("utf-8")


# ------------------------------------------------------------------------------------- config


WEEKDAYS = ("mon", "tue", "wed", "thu", "fri")


def config_toml(*, state: Path, imap_port: int, user: str, password_env: str, timezone: str = TZ,
                hours: str = "09:00-17:00", days: tuple[str, ...] = WEEKDAYS, replies: str = 'owner_name = "Owner"',
                folders: tuple[str, ...] = ("INBOX",), address: str = "owner@example.org",
                smtp_port: int | None = None, tail: str = "") -> str:
    """The config the tests and the benchmark write: one account "work" on a plaintext loopback server
    (and an SMTP sink, without AUTH, when given), the same hours on each of `days`, `replies` as the
    body of [replies], and `tail` (more tables) at the end. The password comes from `password_env`."""
    day_lines = "".join(f'{day} = ["{hours}"]\n' for day in days)
    smtp = f'smtp = {{ host = "127.0.0.1", port = {smtp_port}, security = "none" }}\n' if smtp_port else ""
    return f"""
[state]
path = "{state.as_posix()}"

[calendar]
timezone = "{timezone}"
[calendar.hours]
{day_lines}
[replies]
{replies}

[[account]]
name = "work"
addresses = ["{address}"]
folders = {json.dumps(list(folders))}
imap = {{ host = "127.0.0.1", port = {imap_port}, security = "none", username = "{user}" }}
password_env = "{password_env}"
{smtp}{tail}"""


def write_config(tmp_path: Path, dovecot, user: str, password: str, *, folders=("INBOX",), extra: str = "",
                 smtp_port: int | None = None, tail: str = "") -> Path:
    """A config file for this Dovecot user (and an SMTP sink when given); the password comes from an
    environment variable. `extra` goes into [replies], `tail` (more tables) at the end."""
    env = f"MAILSORT_TEST_PW_{abs(hash((str(tmp_path), user))) % 10**8}"
    os.environ[env] = password
    path = tmp_path / "config.toml"
    path.write_text(config_toml(state=tmp_path / "state.sqlite3", imap_port=dovecot.port, user=user, password_env=env,
                                replies='owner_name = "Owner"\n' + extra, folders=tuple(folders), smtp_port=smtp_port,
                                tail=tail),
                    encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------- the server side


def wait_for_login(dovecot, user: str, password: str, timeout: float = 20.0) -> None:
    """Dovecot looks at its passwd-file again at most once a second, and a refused login costs a
    two-second penalty (more for the next one): a user added a moment ago is refused until the clock
    ticks past the second of the last look. So wait for the next second first, then try."""
    import time

    time.sleep(1.05 - time.time() % 1.0)
    deadline = time.monotonic() + timeout
    while True:
        try:
            mailbox(dovecot, user, password).logout()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def mailbox(dovecot, user: str, password: str) -> MailBoxUnencrypted:
    return MailBoxUnencrypted("127.0.0.1", port=dovecot.port).login(user, password, initial_folder=None)


def append(dovecot, user: str, password: str, raws, folder: str = "INBOX") -> None:
    with mailbox(dovecot, user, password) as box:
        for raw in raws:
            box.append(raw, folder, flag_set=())


def contents(dovecot, user: str, password: str, folders=("INBOX", "Later")) -> dict[str, dict[str, tuple[str, ...]]]:
    """{folder: {Message-ID: flags}} as the server holds it now (read-only, nothing marked read)."""
    out: dict[str, dict[str, tuple[str, ...]]] = {}
    with mailbox(dovecot, user, password) as box:
        existing = {f.name for f in box.folder.list()}
        for folder in folders:
            if folder not in existing:
                out[folder] = {}
                continue
            box.folder.set(folder, readonly=True)
            found: dict[str, tuple[str, ...]] = {}
            for msg in box.fetch(mark_seen=False, headers_only=True, bulk=True):
                mid = (msg.headers.get("message-id") or ("",))[0].strip()
                assert mid not in found, f"{mid} twice in {folder}"
                found[mid] = tuple(f for f in msg.flags if f != "\\Recent")
            out[folder] = found
    return out


def everything(dovecot, user: str, password: str) -> dict[str, dict[str, tuple[str, ...]]]:
    """`contents` of every folder the user has."""
    with mailbox(dovecot, user, password) as box:
        folders = [f.name for f in box.folder.list() if "\\Noselect" not in f.flags]
    return contents(dovecot, user, password, folders=folders)


class CommandLog:
    """Records every IMAP command sent over imaplib's socket (UID commands as 'UID FETCH' etc.), also
    those mailsort writes itself (imap.uid_fetch): what the server is asked, whoever builds the line."""

    def __init__(self, monkeypatch) -> None:
        self.commands: list[str] = []
        original = imaplib.IMAP4.send
        log = self.commands

        def recording(client, data):
            if data.startswith(client.tagpre):  # a command line, not the bytes of a literal (APPEND)
                words = data.rstrip(b"\r\n").split(b" ", 3)
                if len(words) > 1:
                    name = words[1].decode().upper()
                    if name == "UID" and len(words) > 2:
                        name = "UID " + words[2].decode().upper()
                    log.append(name)
            return original(client, data)

        monkeypatch.setattr(imaplib.IMAP4, "send", recording)

    def clear(self) -> None:
        self.commands.clear()

    def names(self) -> set[str]:
        return set(self.commands)


# ------------------------------------------------------------------------------------- CLI with the stand-in


def install_fake_classifier() -> None:
    module = types.ModuleType("mailsort.classify")
    module.load_classifier = lambda path=None: FakeClassifier()
    module.default_model_path = lambda: Path("fake.joblib")
    sys.modules["mailsort.classify"] = module


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    install_fake_classifier()
    import mailsort.sync

    for variable, name in (("MAILSORT_TEST_BATCH", "BATCH"), ("MAILSORT_TEST_PARALLEL_MIN", "PARALLEL_MIN"),
                           ("MAILSORT_TEST_PARALLEL_BATCH", "PARALLEL_BATCH"), ("MAILSORT_TEST_APPLY_GROUP", "APPLY_GROUP")):
        if os.environ.get(variable):
            setattr(mailsort.sync, name, int(os.environ[variable]))
    from mailsort.cli import main

    sys.exit(main(sys.argv[1:]))
