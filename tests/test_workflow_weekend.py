"""Issue 5, end to end on Dovecot + aiosmtpd through `mailsort sync --now`: the weekend.

A routine message on Saturday night waits in Later and is answered at Monday's opening, exactly once;
a critical one is acknowledged at once and reaches the owner (command notifier and mail notifier), once.

The dates lie in the past on purpose: Dovecot stores a future APPEND date as "now", and the arrival
time (INTERNALDATE) is what deadlines and notifications count from.
"""

from __future__ import annotations

import pytest

from workflow_support import Rig, at, client_mail

pytestmark = pytest.mark.dovecot

SATURDAY_2200 = "2026-11-14 22:00"
ROUTINE_ID = "<invoice-1@shop.example>"
CRITICAL_ID = "<down-1@acme.example>"


def routine() -> bytes:
    return client_mail(sender="Jane Smith <jane@shop.example>", subject="Invoice for October", date=SATURDAY_2200,
                       message_id=ROUTINE_ID, body="Hello,\ncould you send me the invoice for October?\nThanks, Jane\n")


def critical() -> bytes:
    return client_mail(sender="Mario Rossi <mario@acme.example>", subject="Site down: error 500", date=SATURDAY_2200,
                       message_id=CRITICAL_ID, body="Hi,\nour shop is down, every page shows error 500.\nPlease help!\n")


def test_routine_mail_on_saturday_night_is_answered_at_mondays_opening_exactly_once(
        tmp_path, dovecot, imap_user, smtp_sink, monkeypatch):
    rig = Rig(tmp_path, dovecot, *imap_user, smtp_sink, monkeypatch)
    rig.append(routine(), SATURDAY_2200)

    saturday = rig.sync("2026-11-14 22:01")
    assert (saturday["fetched"], saturday["routine"], saturday["labelled"], saturday["moved"], saturday["queued"],
            saturday["sent"]) == (1, 1, 1, 1, 1, 0), saturday
    assert rig.folder("INBOX") == {}
    assert set(rig.folder("Later")[ROUTINE_ID]) >= {"Routine", "mailsort-done"}
    [queued] = rig.outbox()
    assert (queued.template, queued.state, queued.recipient, queued.send_at) == (
        "after_hours", "queued", "jane@shop.example", at("2026-11-16 09:00"))

    later = rig.sync("2026-11-14 23:00")
    assert (later["fetched"], later["queued"], later["sent"], later["returned"]) == (0, 0, 0, 0), later
    assert rig.received() == []

    monday = rig.sync("2026-11-16 09:01")
    assert (monday["sent"], monday["returned"], monday["errors"]) == (1, 1, []), monday
    [reply] = rig.received()
    assert reply["To"] == "Jane Smith <jane@shop.example>" and reply["In-Reply-To"] == ROUTINE_ID
    assert reply["Subject"] == "Re: Invoice for October" and reply["Auto-Submitted"] == "auto-replied"
    assert list(rig.folder("Sent")) == [reply["Message-ID"]]
    assert list(rig.folder("INBOX")) == [ROUTINE_ID] and rig.folder("Later") == {}
    assert "Routine" in rig.folder("INBOX")[ROUTINE_ID]  # the label travelled with it

    again = rig.sync("2026-11-16 09:20")
    assert (again["fetched"], again["sent"], again["queued"], again["returned"]) == (0, 0, 0, 0), again
    assert len(rig.received()) == 1 and len(rig.folder("Sent")) == 1
    assert [e.state for e in rig.outbox()] == ["sent"]


@pytest.mark.parametrize("notifier", ["command", "email"])
def test_critical_mail_on_saturday_night_is_acknowledged_at_once_and_the_owner_told_once(
        tmp_path, dovecot, imap_user, smtp_sink, monkeypatch, notifier):
    notes = tmp_path / "notified.txt"
    notify = (f'[notify]\nkind = "command"\ncommand = "tee -a {notes}"' if notifier == "command"
              else '[notify]\nkind = "email"\nto = "pager@sms.example"')
    rig = Rig(tmp_path, dovecot, *imap_user, smtp_sink, monkeypatch, extra=notify.replace("[notify]", "\n[notify]"))
    rig.append(critical(), SATURDAY_2200)

    saturday = rig.sync("2026-11-14 22:01")
    assert (saturday["critical"], saturday["moved"], saturday["queued"], saturday["sent"]) == (1, 0, 1, 1), saturday
    [ack] = rig.received("auto-replied")
    assert ack["In-Reply-To"] == CRITICAL_ID and ack["To"] == "Mario Rossi <mario@acme.example>"
    assert "error 500" in ack["Subject"]
    assert set(rig.folder("INBOX")[CRITICAL_ID]) >= {"Critical", "\\Flagged", "mailsort-done"}
    if notifier == "command":
        text = notes.read_text()
        assert text.count("Critical mail for account 'work'") == 1 and "Site down: error 500" in text
        assert "critical_ack reply to mario@acme.example" in text
    else:
        [page] = [m for m in rig.received("auto-generated") if m["To"] == "pager@sms.example"]
        assert "Site down: error 500" in page["Subject"]

    rig.sync("2026-11-14 23:00")
    rig.sync("2026-11-15 10:00")
    assert len(rig.received("auto-replied")) == 1
    if notifier == "command":
        assert notes.read_text().count("Critical mail for account") == 1
    else:
        assert len([m for m in rig.received() if m["To"] == "pager@sms.example"]) == 1

    # Monday's opening: the owner's digest lists the critical message still open, once.
    rig.sync("2026-11-16 09:01")
    rig.sync("2026-11-16 09:30")
    digests = [m for m in rig.received("auto-generated") if m["To"] == "owner@example.org"]
    assert len(digests) == 1, [m["Subject"] for m in digests]
    body = digests[0].get_payload(decode=True).decode()
    assert "1 critical open" in digests[0]["Subject"] and "Site down: error 500" in body
    assert len(rig.received("auto-replied")) == 1

    # The digest lands in the owner's INBOX: mailsort sorts it like any mail and never answers it.
    rig.append(digests[0].as_bytes(), "2026-11-16 09:31")
    landed = rig.sync("2026-11-16 09:40")
    assert (landed["fetched"], landed["queued"], landed["sent"]) == (1, 0, 0), landed
    row = {m.message_id: m for m in rig.messages()}[digests[0]["Message-ID"]]
    assert row.decision["auto_reply"]["allowed"] is False and "Auto-Submitted: auto-generated" in row.decision[
        "auto_reply"]["reason"]
