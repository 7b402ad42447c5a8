"""Raw .eml builders for the policy, guard and reply tests (parsed with the real mailsort.message.parse)."""

from __future__ import annotations

from datetime import datetime
from email.utils import format_datetime

from mailsort.message import Message, parse

BODIES = {
    "en": "Hello, could you please update the opening hours on our website? Thank you very much for your help.",
    "it": "Buongiorno, potrebbe aggiornare gli orari di apertura sul nostro sito? La ringrazio molto per l'aiuto.",
    "es": "Hola, ¿podría actualizar el horario de apertura en nuestra página web? Muchas gracias por su ayuda.",
    "ru": "Здравствуйте, не могли бы Вы обновить часы работы на нашем сайте? Большое спасибо за помощь.",
}


def eml(*, sender: str = "Maria Rossi <maria@client.example>", to: str = "me@example.org",
        subject: str = "Update the opening hours", body: str | None = None, lang: str = "en",
        date: datetime | None = None, message_id: str = "<m1@client.example>", extra: dict[str, str] | None = None,
        content_type: str = "text/plain; charset=utf-8") -> bytes:
    """A raw message; `extra` adds headers verbatim (Return-Path, List-Id, Auto-Submitted, ...)."""
    headers = {"From": sender, "To": to, "Subject": subject, "Message-ID": message_id,
               "MIME-Version": "1.0", "Content-Type": content_type, "Content-Transfer-Encoding": "8bit"}
    if date is not None:
        headers["Date"] = format_datetime(date)
    headers.update(extra or {})
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items() if v is not None)
    text = body if body is not None else BODIES[lang]
    return (head + "\r\n" + text + "\r\n").encode("utf-8")


def message(**kwargs) -> Message:
    return parse(eml(**kwargs))
