"""Issue 7, end to end on Dovecot + aiosmtpd through `mailsort sync --now`: the client workflows.

New-client expectations once, the Overdue label at the working-hours deadline (and off again once the
owner's reply is in Sent), the owner's digest once per opening, and the absence round: one absence
notice per client, one thank-you at the first opening after it, the owner's list of who wrote.

Dates lie in the past on purpose (Dovecot stores a future APPEND date as "now"); the week of Monday
16 November 2026 is Mon-Fri 09:00-17:30 in Madrid.
"""

from __future__ import annotations

import pytest

from mailsort.imap import keyword_for
from sync_support import CommandLog, mailbox
from workflow_support import Rig, at, client_mail, owner_reply

pytestmark = pytest.mark.dovecot

ACME = '\n[[client]]\nname = "Acme"\ndomains = ["acme.example"]\n'
ROSSI = '\n[[client]]\nname = "Rossi"\naddresses = ["marco@rossi.example"]\nlanguage = "it"\n'
ABSENCE = '\n[[calendar.absence]]\nstart = 2026-11-16\nend = 2026-11-18\nnote = "a conference"\n'


def text(mail) -> str:
    return mail.get_payload(decode=True).decode("utf-8")


def to(rig: Rig, address: str) -> list:
    return [m for m in rig.received() if address in m["To"]]


def server_commands(commands) -> list[str]:
    """The IMAP commands of the passes since the log was cleared, without logging in and out."""
    return [c for c in commands.commands if c not in ("LOGIN", "CAPABILITY", "ENABLE", "LOGOUT")]


# ------------------------------------------------------------------------------ expectations


def test_a_brand_new_sender_gets_the_expectations_mail_exactly_once_across_three_syncs(
        tmp_path, dovecot, imap_user, smtp_sink, monkeypatch):
    rig = Rig(tmp_path, dovecot, *imap_user, smtp_sink, monkeypatch)
    body = "Hola, ¿podría cambiar el texto de la página de contacto de nuestra web? Muchas gracias por su ayuda.\n"
    rig.append(client_mail(sender="Lucía Gómez <lucia@nueva.example>", subject="Cambio de texto", body=body,
                           date="2026-11-11 10:00", message_id="<n1@nueva.example>"), "2026-11-11 10:00")
    first = rig.sync("2026-11-11 10:01")
    assert (first["queued"], first["sent"]) == (1, 1), first

    rig.append(client_mail(sender="Lucía Gómez <lucia@nueva.example>", subject="Otra cosa", body=body,
                           date="2026-11-11 11:00", message_id="<n2@nueva.example>"), "2026-11-11 11:00")
    second = rig.sync("2026-11-11 11:01")
    # a week later: past min_days_between, so only "never seen before" can hold the note back
    rig.append(client_mail(sender="Lucía Gómez <lucia@nueva.example>", subject="Una pregunta", body=body,
                           date="2026-11-18 10:00", message_id="<n3@nueva.example>"), "2026-11-18 10:00")
    third = rig.sync("2026-11-18 10:01")
    assert (second["fetched"], second["queued"], third["fetched"]) == (1, 0, 1), (second, third)

    [note] = to(rig, "lucia@nueva.example")
    assert note["In-Reply-To"] == "<n1@nueva.example>" and note["Content-Language"] == "es"
    assert "Mi horario de trabajo es" in text(note) and note["Auto-Submitted"] == "auto-replied"
    assert [e.template for e in rig.outbox() if e.recipient == "lucia@nueva.example"] == ["expectations"]


# ------------------------------------------------------------------------------ deadlines


def test_overdue_at_the_working_hours_deadline_not_before_and_cleared_by_a_reply_in_sent(
        tmp_path, dovecot, imap_user, smtp_sink, monkeypatch):
    rig = Rig(tmp_path, dovecot, *imap_user, smtp_sink, monkeypatch, extra=ACME)
    late, answered = "<late@acme.example>", "<early@acme.example>"
    for mid, subject in ((late, "New product photos"), (answered, "Footer text")):
        rig.append(client_mail(sender="Ana <ana@acme.example>", subject=subject, date="2026-11-13 17:00",
                               message_id=mid, body="Hello, please update this on the website when you can.\n"),
                   "2026-11-13 17:00")
    friday = rig.sync("2026-11-13 17:00")
    assert friday["routine"] == 2 and friday["errors"] == []
    inbox = rig.folder("INBOX")
    assert all({"Routine", "Client/Acme"} <= set(inbox[m]) for m in (late, answered)), inbox

    # The owner answers one of them on Tuesday: it never becomes overdue.
    rig.append(owner_reply(to="ana@acme.example", subject="Footer text", in_reply_to=answered,
                           date="2026-11-17 12:00", message_id="<r1@example.org>"), "2026-11-17 12:00", folder="Sent")

    # Friday 17:00 + 24 working hours = 0.5 + 8.5 + 8.5 + 6.5: due Wednesday 15:30.
    rig.sync("2026-11-18 15:20")  # the first pass since the opening: the digest (filed in Sent)
    rig.sync("2026-11-18 15:26")  # Sent has news (the digest): read
    commands = CommandLog(monkeypatch)
    rig.sync("2026-11-18 15:29")  # nothing new, nothing due, Sent read 3 minutes ago: one STATUS (INBOX)
    assert server_commands(commands) == ["STATUS"], commands.commands
    assert keyword_for("Overdue") not in rig.folder("INBOX")[late]
    digests = to(rig, "owner@example.org")
    assert len(digests) == 1 and "1 due today" in digests[0]["Subject"], [m["Subject"] for m in digests]
    assert "New product photos" in text(digests[0]) and "Footer text" not in text(digests[0])

    commands.clear()
    rig.sync("2026-11-18 15:31")  # still nothing new, but time has passed the deadline
    sent = server_commands(commands)
    assert sent == ["STATUS", "LIST", "STATUS", "SELECT", "UID STORE"], sent  # labelled by its UID: no SEARCH
    inbox = rig.folder("INBOX")
    assert "Overdue" in inbox[late] and "Overdue" not in inbox[answered]
    rows = {m.message_id: m for m in rig.messages()}
    assert rows[late].overdue_labelled and rows[answered].answered_at == at("2026-11-17 12:00")

    commands.clear()
    rig.sync("2026-11-18 15:45")
    assert server_commands(commands) == ["STATUS", "STATUS"], commands.commands
    assert "Overdue" in rig.folder("INBOX")[late]
    assert len(to(rig, "owner@example.org")) == 1  # one digest for the opening, however many passes

    rig.append(owner_reply(to="ana@acme.example", subject="New product photos", in_reply_to=late,
                           date="2026-11-18 16:00", message_id="<r2@example.org>"), "2026-11-18 16:00", folder="Sent")
    rig.sync("2026-11-18 16:01")
    assert "Overdue" not in rig.folder("INBOX")[late]
    row = {m.message_id: m for m in rig.messages()}[late]
    assert row.answered_at == at("2026-11-18 16:00") and not row.overdue_labelled

    # The next morning's opening: nothing open, so no digest; nothing labelled again.
    rig.sync("2026-11-19 09:01")
    assert len(to(rig, "owner@example.org")) == 1 and "Overdue" not in rig.folder("INBOX")[late]


# ------------------------------------------------------------------------------ absences


@pytest.mark.parametrize("thank_you", [True, False])
def test_absence_answers_a_client_once_and_thanks_them_at_the_first_opening_after_it(
        tmp_path, dovecot, imap_user, smtp_sink, monkeypatch, thank_you):
    extra = ("thank_you = false\n" if not thank_you else "") + ROSSI + ABSENCE
    rig = Rig(tmp_path, dovecot, *imap_user, smtp_sink, monkeypatch, extra=extra)
    body = "Buongiorno, potrebbe aggiornare gli orari di apertura sul nostro sito? La ringrazio molto per l'aiuto.\n"
    first, second = "<a1@rossi.example>", "<a2@rossi.example>"
    rig.append(client_mail(sender="Marco Rossi <marco@rossi.example>", subject="Orari di apertura", body=body,
                           date="2026-11-16 10:00", message_id=first), "2026-11-16 10:00")
    monday = rig.sync("2026-11-16 10:01")
    assert (monday["moved"], monday["queued"], monday["sent"]) == (1, 1, 1), monday
    rig.append(client_mail(sender="Marco Rossi <marco@rossi.example>", subject="Ancora gli orari", body=body,
                           date="2026-11-17 11:00", message_id=second), "2026-11-17 11:00")
    tuesday = rig.sync("2026-11-17 11:01")
    assert (tuesday["fetched"], tuesday["queued"], tuesday["sent"]) == (1, 0, 0), tuesday

    [notice] = to(rig, "marco@rossi.example")
    assert notice["In-Reply-To"] == first and notice["Content-Language"] == "it"
    assert "giovedì 19 novembre 2026" in text(notice)

    wednesday = rig.sync("2026-11-18 20:00")
    assert wednesday["queued"] == 0 and rig.outbox("back") == [] and len(rig.received()) == 1

    thursday = rig.sync("2026-11-19 09:01")
    assert thursday["returned"] == 2 and thursday["errors"] == [], thursday
    replies = to(rig, "marco@rossi.example")
    welcome = [m for m in to(rig, "owner@example.org") if "welcome back" in m["Subject"]]
    assert len(welcome) == 1 and "marco@rossi.example" in text(welcome[0]) and "2 messages" in text(welcome[0])
    if thank_you:
        [entry] = rig.outbox("back")
        assert entry.send_at == at("2026-11-19 09:00") and entry.state == "sent"
        assert len(replies) == 2
        thanks = replies[1]
        assert thanks["In-Reply-To"] == first and thanks["Content-Language"] == "it"
        assert "La ringrazio per la pazienza" in text(thanks) and thanks["Auto-Submitted"] == "auto-replied"
        assert thanks["Message-ID"] in rig.folder("Sent")
    else:
        assert rig.outbox("back") == [] and len(replies) == 1

    rig.sync("2026-11-19 09:30")
    rig.sync("2026-11-20 09:01")
    assert len(to(rig, "marco@rossi.example")) == (2 if thank_you else 1)
    assert len([m for m in to(rig, "owner@example.org") if "welcome back" in m["Subject"]]) == 1


@pytest.mark.parametrize("mode", ["keyword", "folder"])
def test_overdue_finds_mail_that_went_to_later_and_back_and_labels_by_the_label_mode(
        tmp_path, dovecot, imap_user, smtp_sink, monkeypatch, mode):
    rig = Rig(tmp_path, dovecot, *imap_user, smtp_sink, monkeypatch, extra=f'\n[labels]\nmode = "{mode}"\n')
    mid = "<evening@shop.example>"
    # In Sent before mailsort ever ran: a mail naming our message, filed in October. The first look at
    # Sent reads only mail since a week before the oldest open message, so this one is never read (were
    # it read, the message would count as answered in October and never be overdue).
    rig.append(owner_reply(to="jane@shop.example", subject="Old thread", in_reply_to=mid, date="2026-10-01 10:00",
                           message_id="<old@example.org>"), "2026-10-01 10:00", folder="Sent")
    rig.append(client_mail(sender="Jane <jane@shop.example>", subject="Banner", date="2026-11-13 20:00",
                           message_id=mid, body="Hello, please change the banner on the home page.\n"),
               "2026-11-13 20:00")
    rig.sync("2026-11-13 20:01")
    assert mid in rig.folder("Later")
    assert rig.sync("2026-11-16 09:01")["returned"] == 1  # back in INBOX under a new UID

    # Closed on Friday evening: the 24 working hours start on Monday 09:00 and end on Wednesday 16:00.
    rig.sync("2026-11-18 15:59")
    overdue = (lambda: "Overdue" in rig.folder("INBOX")[mid]) if mode == "keyword" else (
        lambda: mid in rig.folder("Overdue"))
    assert not overdue()
    rig.sync("2026-11-18 16:01")
    assert overdue() and {m.message_id: m for m in rig.messages()}[mid].answered_at is None
    rig.sync("2026-11-18 16:10")
    if mode == "folder":
        assert len(rig.folder("Overdue")) == 1  # labelled once: no second copy

    rig.append(owner_reply(to="jane@shop.example", subject="Banner", in_reply_to=mid, date="2026-11-18 16:30",
                           message_id="<r3@example.org>"), "2026-11-18 16:30", folder="Sent")
    rig.sync("2026-11-18 16:31")
    assert not overdue() and mid in rig.folder("INBOX")


def owner_moves(rig: Rig, message_id: str, folder: str) -> None:
    """The owner files a message away with their mail program (a UID MOVE out of INBOX)."""
    import imaplib

    client = imaplib.IMAP4("127.0.0.1", rig.dovecot.port)
    try:
        client.login(rig.user, rig.password)
        client.create(folder)
        client.select("INBOX")
        typ, data = client.uid("SEARCH", f'HEADER Message-ID "{message_id}"')
        [uid] = data[0].split()
        assert client.uid("MOVE", uid, folder)[0] == "OK"
    finally:
        client.logout()


@pytest.mark.parametrize("mode", ["keyword", "folder"])
def test_overdue_by_uid_never_lands_on_another_message_when_the_owner_moved_one_away(
        tmp_path, dovecot, imap_user, smtp_sink, monkeypatch, mode):
    rig = Rig(tmp_path, dovecot, *imap_user, smtp_sink, monkeypatch, extra=f'\n[labels]\nmode = "{mode}"\n' + ACME)
    filed, kept, newer = "<filed@acme.example>", "<kept@acme.example>", "<newer@acme.example>"
    for mid, subject in ((filed, "Old logo"), (kept, "New logo")):
        rig.append(client_mail(sender="Ana <ana@acme.example>", subject=subject, date="2026-11-13 17:00", message_id=mid,
                               body="Hello, please change the logo on the website.\n"), "2026-11-13 17:00")
    rig.sync("2026-11-13 17:00")  # journaled in INBOX, due Wednesday 15:30
    owner_moves(rig, filed, "Archive")  # gone from INBOX: its UID there is never given to another message
    rig.append(client_mail(sender="Ana <ana@acme.example>", subject="Footer", date="2026-11-18 15:00", message_id=newer,
                           body="Hello, one more small change in the footer.\n"), "2026-11-18 15:00")
    rig.sync("2026-11-18 15:01")  # a newer message, under a higher UID

    commands = CommandLog(monkeypatch)
    rig.sync("2026-11-18 15:31")  # both Friday messages are overdue
    sent = server_commands(commands)
    assert "UID SEARCH" not in sent, sent  # by UID; the one that is gone labels nothing, nothing is searched
    if mode == "keyword":
        inbox = rig.folder("INBOX")
        assert "Overdue" in inbox[kept] and "Overdue" not in inbox[newer]
    else:
        assert list(rig.folder("Overdue")) == [kept]
    assert "Overdue" not in rig.folder("Archive")[filed]
    rows = {m.message_id: m for m in rig.messages()}
    assert rows[filed].overdue_labelled and rows[kept].overdue_labelled and not rows[newer].overdue_labelled

    rig.sync("2026-11-18 15:45")  # not tried again, nothing doubled
    assert (list(rig.folder("Overdue")) == [kept]) if mode == "folder" else "Overdue" not in rig.folder("Archive")[filed]


@pytest.mark.parametrize("mode", ["keyword", "folder"])
def test_overdue_finds_mail_the_pass_moved_to_later_in_later_without_searching_the_inbox(
        tmp_path, dovecot, imap_user, smtp_sink, monkeypatch, mode):
    extra = f'reply_within_hours = 1\n\n[labels]\nmode = "{mode}"\n'
    rig = Rig(tmp_path, dovecot, *imap_user, smtp_sink, monkeypatch, extra=extra)
    mid, other = "<evening2@shop.example>", "<other@shop.example>"
    rig.append(client_mail(sender="Jane <jane@shop.example>", subject="Banner", date="2026-11-13 20:00",
                           message_id=mid, body="Hello, please change the banner on the home page.\n"),
               "2026-11-13 20:00")
    rig.sync("2026-11-13 20:01")  # closed: moved to Later by the pass
    assert mid in rig.folder("Later")
    rig.append(client_mail(sender="Jane <jane@shop.example>", subject="Prices", date="2026-11-13 20:30",
                           message_id=other, body="Hello, the prices page too, please.\n"), "2026-11-13 20:30", folder="Later")

    # one working hour after Monday's opening: due 10:00. The first pass of the morning comes at 10:05,
    # when the message is overdue and still in Later (it goes back to INBOX at the end of that pass)
    commands = CommandLog(monkeypatch)
    monday = rig.sync("2026-11-16 10:05")
    sent = server_commands(commands)
    assert monday["returned"] == 2 and monday["errors"] == [], monday
    labelling = sent[:sent.index("UID STORE" if mode == "keyword" else "UID COPY")]
    # one folder opened (Later, where the pass moved it) and searched once; the INBOX is not searched
    assert labelling.count("SELECT") == 1 and labelling.count("UID SEARCH") == 1, sent
    if mode == "keyword":
        inbox = rig.folder("INBOX")
        assert "Overdue" in inbox[mid] and "Overdue" not in inbox[other]  # the keyword went back with it
    else:
        assert list(rig.folder("Overdue")) == [mid] and mid in rig.folder("INBOX")
    assert {m.message_id: m for m in rig.messages()}[mid].overdue_labelled


def test_overdue_after_a_uidvalidity_change_is_searched_for_and_the_stale_uid_labels_nothing(
        tmp_path, dovecot, imap_user, smtp_sink, monkeypatch):
    rig = Rig(tmp_path, dovecot, *imap_user, smtp_sink, monkeypatch, extra=ACME, folders=("INBOX", "Clients"))
    with mailbox(dovecot, rig.user, rig.password) as box:
        box.folder.create("Clients")
    late, other = "<late2@acme.example>", "<other2@acme.example>"

    def late_mail() -> bytes:
        return client_mail(sender="Ana <ana@acme.example>", subject="Photos", date="2026-11-13 17:00", message_id=late,
                           body="Hello, please put the new photos on the website.\n")

    rig.append(late_mail(), "2026-11-13 17:00", folder="Clients")
    rig.sync("2026-11-13 17:00")  # journaled as Clients, UID 1, the folder's first UIDVALIDITY
    # the folder is recreated (a restore): another message now has UID 1, ours comes back under UID 2
    with mailbox(dovecot, rig.user, rig.password) as box:
        box.folder.delete("Clients")
        box.folder.create("Clients")
    rig.append(client_mail(sender="Ana <ana@acme.example>", subject="Hours", date="2026-11-18 15:00", message_id=other,
                           body="Hello, the opening hours changed.\n"), "2026-11-18 15:00", folder="Clients")
    rig.append(late_mail(), "2026-11-13 17:00", folder="Clients", flags=("mailsort-done",))

    rig.sync("2026-11-18 15:31")  # due 15:30: overdue
    clients = rig.folder("Clients")
    assert "Overdue" in clients[late] and "Overdue" not in clients[other], clients
    assert {m.message_id: m for m in rig.messages()}[late].overdue_labelled


def test_sent_is_read_at_most_every_few_minutes_and_only_what_is_new(
        tmp_path, dovecot, imap_user, smtp_sink, monkeypatch):
    rig = Rig(tmp_path, dovecot, *imap_user, smtp_sink, monkeypatch, extra=ACME)
    rig.append(client_mail(sender="Ana <ana@acme.example>", subject="Question", date="2026-11-17 10:00",
                           message_id="<q@acme.example>", body="Hello, a quick question about the site.\n"),
               "2026-11-17 10:00")
    rig.sync("2026-11-17 10:01")  # first look at Sent (empty then), the expectations note goes out
    commands = CommandLog(monkeypatch)

    rig.sync("2026-11-17 10:03")  # open mail, but Sent was read two minutes ago: one STATUS (INBOX), no more
    assert [c for c in commands.commands if c not in ("LOGIN", "CAPABILITY", "ENABLE", "LOGOUT")] == ["STATUS"]

    commands.clear()
    rig.sync("2026-11-17 10:07")  # five minutes on: Sent is read again, just the one mail filed since
    assert commands.commands.count("STATUS") == 2 and commands.commands.count("UID FETCH") == 1, commands.commands
    assert "UID SEARCH" not in commands.commands

    commands.clear()
    rig.sync("2026-11-17 10:13")  # nothing new in Sent: its STATUS is all it costs
    assert server_commands(commands) == ["STATUS", "STATUS"], commands.commands
