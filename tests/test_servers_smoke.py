"""The test rig itself works: real Dovecot and aiosmtpd on loopback."""

from __future__ import annotations

import smtplib
from email.message import EmailMessage

from imap_tools import MailBoxUnencrypted as MailBox, MailMessageFlags
from sync_support import wait_for_login


def _mail(subject: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Client <client@example.com>"
    msg["To"] = "owner@example.org"
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{subject.replace(' ', '-')}@example.com>"
    msg.set_content("Hello, the site is down.")
    return msg.as_bytes()


def test_dovecot_append_move_keyword(dovecot, imap_user):
    user, password = imap_user
    wait_for_login(dovecot, user, password)
    with MailBox("127.0.0.1", port=dovecot.port).login(user, password) as box:
        box.append(_mail("first"), "INBOX")
        box.folder.create("Later")
        uids = [m.uid for m in box.fetch(headers_only=True, mark_seen=False)]
        assert len(uids) == 1
        box.flag(uids, ["mailsort-test"], True)
        flags = [m.flags for m in box.fetch(headers_only=True, mark_seen=False)]
        assert "mailsort-test" in flags[0]
        assert MailMessageFlags.SEEN not in flags[0]
        box.move(uids, "Later")
        assert list(box.fetch(headers_only=True)) == []
        box.folder.set("Later")
        moved = list(box.fetch(headers_only=True, mark_seen=False))
        assert [m.subject for m in moved] == ["first"]
        # imaplib keeps the pre-login list; ask again after login, as mailsort does
        typ, data = box.client.capability()
        assert typ == "OK" and b"MOVE" in data[0].split()


def test_smtp_sink_receives(smtp_sink):
    with smtplib.SMTP("127.0.0.1", smtp_sink.port, timeout=10) as smtp:
        smtp.send_message(_email())
    received = smtp_sink.received()
    assert len(received) == 1
    assert received[0]["Subject"] == "ping"


def _email() -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "owner@example.org"
    msg["To"] = "client@example.com"
    msg["Subject"] = "ping"
    msg.set_content("pong")
    return msg
