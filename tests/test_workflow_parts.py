"""The pieces of the client workflows that need no server: reading Sent headers, the owner's notes, the
store's bookkeeping, and the steps' independence (a failing step never stops the others)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import date, datetime, timezone
from email import message_from_bytes

import pytest

from mailsort.config import parse_config
from mailsort.errors import ServerError
from mailsort.replies import owner_message
from mailsort.store import Store, from_iso
from mailsort.imap import SEARCH_CHARS, ImapSession, imap_date, message_id_searches
from mailsort.workflows import WorkflowError, _answer_fields, _message_of, run_workflows

from workflow_support import MADRID, at, calendar, row


def test_sent_header_fields_are_read_with_folded_references_and_a_fallback_date():
    raw = (b"Message-ID: <r@example.org>\r\nIn-Reply-To: <a@x.example>\r\n"
           b"References: <z@x.example>\r\n <a@x.example>\r\nDate: Wed, 18 Nov 2026 16:00:00 +0100\r\n\r\n")
    in_reply_to, references, when, auto = _answer_fields(raw, at("2026-11-19 09:00"))
    assert (in_reply_to, references, auto) == ("<a@x.example>", "<z@x.example> <a@x.example>", None)
    assert when == at("2026-11-18 16:00")
    now = at("2026-11-19 09:00")
    assert _answer_fields(b"In-Reply-To: <a@x.example>\r\n\r\n", now)[2] == now  # no Date: the time we saw it
    assert _answer_fields(b"Date: nonsense\r\n\r\n", now)[2] == now
    naive = _answer_fields(b"Date: Wed, 18 Nov 2026 16:00:00 -0000\r\n\r\n", now)[2]
    assert naive == datetime(2026, 11, 18, 16, 0, tzinfo=timezone.utc)
    assert _answer_fields(b"Auto-Submitted: auto-replied\r\n\r\n", now)[3] == "auto-replied"


def test_imap_dates_are_utc_days_in_english():
    assert imap_date(at("2026-11-06 00:30")) == "5-Nov-2026"  # 23:30 UTC the day before
    assert imap_date(at("2026-03-09 12:00")) == "9-Mar-2026"


def test_a_stored_row_becomes_a_message_replied_to_where_its_replies_went():
    stored = replace(row("2026-11-16 10:00", sender="marco@rossi.example"),
                     decision={"situation": "routine_absence", "actions": [
                         {"type": "reply", "template": "absence", "to": "desk@rossi.example"}]})
    message = _message_of(stored, "it")
    assert (message.sender, message.reply_to, message.language) == ("marco@rossi.example", ("desk@rossi.example",), "it")
    plain = _message_of(row("2026-11-16 10:00", sender="marco@rossi.example"), "")
    assert plain.reply_to == () and plain.language == "en"


def test_owner_notes_are_auto_generated_deterministic_and_cannot_take_injected_headers():
    now = at("2026-11-16 09:01")
    mail = owner_message("Digest\r\nBcc: evil@x.example", "Body", key="work\x1fdigest\x1f2026-11-16T08:00:00+00:00",
                         from_address="owner@example.org", to="owner@example.org", now=now, tz=MADRID)
    again = owner_message("Digest\r\nBcc: evil@x.example", "Body", key="work\x1fdigest\x1f2026-11-16T08:00:00+00:00",
                          from_address="owner@example.org", to="owner@example.org", now=now, tz=MADRID)
    parsed = message_from_bytes(mail.as_bytes())
    assert parsed["Auto-Submitted"] == "auto-generated" and parsed["In-Reply-To"] is None
    assert parsed["Bcc"] is None and parsed["Subject"] == "Digest Bcc: evil@x.example"
    assert parsed["Message-ID"] == again["Message-ID"] and parsed["Message-ID"].endswith("@example.org>")
    assert parsed["Date"] == "Mon, 16 Nov 2026 09:01:00 +0100"


def test_store_waiting_messages_and_answer_bookkeeping():
    with Store(":memory:") as store:
        waiting = row("2026-11-13 17:00", message_id="<w@x>")
        answered = row("2026-11-13 17:00", message_id="<a@x>", answered="2026-11-16 10:00")
        labelled = row("2026-09-01 10:00", message_id="<l@x>", answered="2026-11-16 10:00", overdue_labelled=True)
        old = row("2026-09-01 10:00", message_id="<o@x>")
        aside = replace(row("2026-11-13 17:00", message_id="<s@x>"), label="unparseable")
        backlog = row("2026-11-01 10:00", message_id="<b@x>", handled="2026-11-13 17:00")  # a first sync's old mail
        robot = row("2026-11-13 17:00", message_id="<r@x>", situation="routine_robot")
        store.record_decisions([waiting, answered, labelled, old, aside, backlog, robot])  # no answers known yet
        store.set_answered("work", "<a@x>", answered.answered_at)
        store.set_answered("work", "<l@x>", labelled.answered_at)
        store.set_overdue_labelled("work", ["<l@x>"])
        since = at("2026-10-19 00:00")
        # the robot is read (the decision says it is one) and left out by needs_answer; backlog is not read
        assert {m.message_id for m in store.waiting_messages("work", since)} == {"<w@x>", "<l@x>", "<r@x>"}
        # an answer in Sent is still recorded for backlog and robots, as for any unanswered client mail
        ids = ["<w@x>", "<a@x>", "<l@x>", "<o@x>", "<s@x>", "<b@x>", "<r@x>", "<unknown@x>"]
        assert store.unanswered_ids("work", ids, since) == {"<w@x>", "<b@x>", "<r@x>"}
        assert store.set_answered_many("work", [("<w@x>", at("2026-11-17 12:00")), ("<a@x>", at("2026-11-17 12:00")),
                                                ("<unknown@x>", at("2026-11-17 12:00"))]) == 1
        store.clear_overdue_labelled("work", ["<l@x>"])
        assert {m.message_id for m in store.waiting_messages("work", since)} == {"<r@x>"}
        rows = {m.message_id: m for m in store.messages("work")}
        assert rows["<w@x>"].answered_at == at("2026-11-17 12:00")
        assert rows["<a@x>"].answered_at == at("2026-11-16 10:00")  # the first answer stays


class BrokenSession:
    """An IMAP session whose server is gone: every question fails."""

    label_mode = "keyword"
    capabilities = frozenset()

    def special_folder(self, use, configured, fallback):
        return configured or fallback

    def folders(self, refresh=False):
        raise ServerError("imap.example.org: connection lost 4 times")

    def status(self, folder):
        raise ServerError("imap.example.org: connection lost 4 times")


def config(**replies):
    return parse_config({
        "calendar": {"timezone": "Europe/Madrid", "hours": {d: ["09:00-17:30"] for d in ("mon", "tue", "wed", "thu", "fri")},
                     "absence": [{"start": date(2026, 11, 16), "end": date(2026, 11, 18)}]},
        "replies": {"owner_name": "Ana", **replies},
        "account": [{"name": "work", "addresses": ["owner@example.org"], "imap": {"host": "127.0.0.1", "security": "none"}}],
    })


def test_a_failing_step_does_not_stop_the_others_and_is_reported():
    cfg = config()
    with Store(":memory:") as store:
        store.record_decisions([row("2026-11-12 10:00", message_id="<w@x>")])  # due Thursday 19th 17:00
        counts = {"queued": 0}
        with pytest.raises(WorkflowError) as err:
            run_workflows(cfg, cfg.accounts[0], store=store, session=BrokenSession(), calendar=calendar(cfg.calendar.absences),
                          now=at("2026-11-19 15:00"), counts=counts)
        assert str(err.value).startswith("reading the Sent folder: imap.example.org: connection lost")
        # the digest (one due today) and the owner's welcome-back list were still queued
        assert sorted(e.template for e in store.outbox("work")) == ["absence_digest", "digest"]
        assert counts["queued"] == 2


@pytest.mark.parametrize("replies", [{"digest": False, "thank_you": False}, {"mode": "off"}])
def test_digest_and_thank_you_can_be_turned_off(replies):
    cfg = config(**replies)
    with Store(":memory:") as store:
        store.record_decisions([row("2026-11-17 10:00", message_id="<w@x>", sender="ana@acme.example")])
        with pytest.raises(WorkflowError):  # the Sent folder cannot be read; the rest must still decide
            run_workflows(cfg, cfg.accounts[0], store=store, session=BrokenSession(),
                          calendar=calendar(cfg.calendar.absences), now=at("2026-11-19 09:01"))
        templates = [e.template for e in store.outbox("work")]
        assert templates == ([] if replies.get("mode") == "off" else ["absence_digest"])


# ------------------------------------------------------------------------------ a pass with nothing to do


class QuietSession:
    """A server whose Sent folder holds `sent` messages, all read already; it records what it is asked."""

    label_mode = "keyword"
    capabilities = frozenset()
    # the session's own reading of SEARCH, FETCH and SELECT answers, over the `_run` below
    search = ImapSession.search
    header_fields = ImapSession.header_fields
    uidvalidity = ImapSession.uidvalidity
    find_message_ids = ImapSession.find_message_ids
    message_ids_in = ImapSession.message_ids_in

    def __init__(self):
        self.asked: list = []
        self.sent = 0
        self.selected_info = {"uidvalidity": 1}

    def special_folder(self, use, configured, fallback):
        return configured or fallback

    def folders(self, refresh=False):
        self.asked.append("LIST")
        return {"INBOX": (), "Sent": ("\\Sent",)}

    def status(self, folder):
        from mailsort.imap import FolderStatus

        self.asked.append(f"STATUS {folder}")
        return FolderStatus(1, self.sent + 1, self.sent, None)

    def _run(self, what, op, *, folder=None, write=False):
        self.asked.append(what)
        return [] if what.startswith("FETCH") else None

    def add_keywords(self, folder, uids, keywords):
        self.asked.append(("label", folder, tuple(uids)))

    def set_flag(self, folder, uids, flag, value=True):
        self.asked.append(("label" if value else "unlabel", folder, tuple(uids)))


def test_a_pass_with_nothing_new_skips_the_deadline_work_until_something_can_change(monkeypatch):
    import mailsort.workflows as workflows

    cfg = config(reply_within_hours=8)
    session = QuietSession()
    with Store(":memory:") as store:
        waits = row("2026-11-23 10:00", message_id="<w@x>")  # 8 working hours: due Tuesday 24th 09:30
        store.record_decisions([waits])
        reads = []
        waiting = store.waiting_messages
        monkeypatch.setattr(store, "waiting_messages", lambda *a, **k: reads.append(1) or waiting(*a, **k))

        def run(now: str, cfg=cfg) -> bool:
            """One run; True when it read the open mail (a full run), False when it had nothing to do."""
            reads.clear()
            session.asked.clear()
            run_workflows(cfg, cfg.accounts[0], store=store, session=session, calendar=calendar(cfg.calendar.absences),
                          now=at(now))
            return bool(reads)

        assert run("2026-11-23 10:01")  # the first run ever
        assert not run("2026-11-23 10:03") and session.asked == []  # nothing can have changed: not even a STATUS
        assert not run("2026-11-23 10:30") and session.asked == ["STATUS Sent"]  # Sent looked at, every 5 minutes
        assert not run("2026-11-23 10:20")
        assert run("2026-11-23 10:00")  # before the last full run (--now replaying the past): no shortcut
        assert not run("2026-11-23 17:40")
        # the opening: a digest may be due, and one is (the message is due today)
        assert run("2026-11-24 09:00") and [e.template for e in store.outbox("work")] == ["digest"]
        assert not run("2026-11-24 09:10") and not run("2026-11-24 09:29")
        assert run("2026-11-24 09:30")  # its deadline: not overdue yet (that is after 09:30) ...
        assert not any(isinstance(a, tuple) for a in session.asked)
        assert run("2026-11-24 09:31")  # ... so no shortcut from 09:30 on; now it is
        assert ("label", "INBOX", (waits.uid,)) in session.asked  # by its UID: no SEARCH
        assert {m.message_id: m for m in store.messages("work")}["<w@x>"].overdue_labelled
        assert not run("2026-11-24 09:33")

        session.sent += 1  # something filed in Sent
        assert not run("2026-11-24 09:35")  # Sent was read at 09:31 (the deadline made it urgent): not yet
        assert run("2026-11-24 09:37") and session.asked.count("STATUS Sent") == 1  # the STATUS said: read it
        assert not run("2026-11-24 09:38")

        store.set_answered("work", "<w@x>", at("2026-11-24 09:36"))  # any change to a row
        assert run("2026-11-24 09:39") and ("unlabel", "INBOX", (waits.uid,)) in session.asked
        assert not run("2026-11-24 09:40")
        store.record_decisions([row("2026-11-24 09:40", message_id="<n@x>")])  # a new row
        assert run("2026-11-24 09:41")
        assert not run("2026-11-24 09:42")
        assert run("2026-11-24 09:43", config(reply_within_hours=4))  # the settings changed
        assert not run("2026-11-24 09:44", config(reply_within_hours=4))
        monkeypatch.setattr(workflows, "IDLE_VERSION", workflows.IDLE_VERSION + 1)  # another mailsort wrote it
        assert run("2026-11-24 09:45") and not run("2026-11-24 09:46")
        assert [e.template for e in store.outbox("work")] == ["digest"]


def test_a_failed_step_leaves_no_shortcut_behind():
    cfg = config()
    with Store(":memory:") as store:
        store.record_decisions([row("2026-11-23 10:00", message_id="<w@x>")])
        for _ in range(2):
            with pytest.raises(WorkflowError):
                run_workflows(cfg, cfg.accounts[0], store=store, session=BrokenSession(),
                              calendar=calendar(cfg.calendar.absences), now=at("2026-11-23 10:01"))
        assert store.get_meta("work", "workflows_idle") is None


def test_the_thank_you_after_an_absence_is_not_skipped(monkeypatch):
    cfg = config(digest=False)  # nothing else happens at that opening
    session = QuietSession()
    with Store(":memory:") as store:
        store.record_decisions([row("2026-11-17 10:00", message_id="<w@x>", sender="ana@acme.example")])
        for now in ("2026-11-17 10:01", "2026-11-18 20:00", "2026-11-19 08:59"):
            run_workflows(cfg, cfg.accounts[0], store=store, session=session, calendar=calendar(cfg.calendar.absences),
                          now=at(now))
        assert store.outbox("work") == []
        state = json.loads(store.get_meta("work", "workflows_idle"))
        assert from_iso(state["until"]) == at("2026-11-19 09:00")  # the thank-you time: nothing skipped past it
        run_workflows(cfg, cfg.accounts[0], store=store, session=session, calendar=calendar(cfg.calendar.absences),
                      now=at("2026-11-19 09:01"))
        assert sorted(e.template for e in store.outbox("work")) == ["absence_digest", "back"]


class SentSession(QuietSession):
    """QuietSession whose Sent folder holds one human answer to <w@x> (UID 1), read through the real
    SEARCH / FETCH parsing."""

    def __init__(self):
        super().__init__()
        self.sent = 1

    def _run(self, what, op, *, folder=None, write=False):
        self.asked.append(what)
        raw = (b"In-Reply-To: <w@x>\r\nReferences: <w@x>\r\nDate: Tue, 24 Nov 2026 12:00:00 +0100\r\n\r\n")

        class Client:
            def uid(self, command, *args):
                if command == "SEARCH":
                    return "OK", [b"1"]
                return "OK", [(b"1 (UID 1 BODY[HEADER.FIELDS (MESSAGE-ID IN-REPLY-TO)] {%d}" % len(raw), raw), b")"]

        return op(Client())


def test_how_far_sent_was_read_is_stored_only_with_the_answers_it_gave(monkeypatch):
    cfg = config()
    session = SentSession()
    with Store(":memory:") as store:
        store.record_decisions([row("2026-11-23 10:00", message_id="<w@x>")])
        real = store.set_answered_many

        def crash(*args, **kwargs):
            raise RuntimeError("power cut")

        monkeypatch.setattr(store, "set_answered_many", crash)
        with pytest.raises(RuntimeError):
            run_workflows(cfg, cfg.accounts[0], store=store, session=session, calendar=calendar(cfg.calendar.absences),
                          now=at("2026-11-24 12:30"))
        assert store.get_meta("work", "sent_scan") is None  # not marked read: the next pass reads it again
        monkeypatch.setattr(store, "set_answered_many", real)
        report = run_workflows(cfg, cfg.accounts[0], store=store, session=session,
                               calendar=calendar(cfg.calendar.absences), now=at("2026-11-24 12:31"))
        assert report.answered == 1 and store.messages("work")[0].answered_at == at("2026-11-24 12:00")
        assert json.loads(store.get_meta("work", "sent_scan")) == {"folder": "Sent", "uidvalidity": 1, "last_uid": 1}


def test_message_id_searches_are_few_bounded_and_well_formed():
    ids = [f"<id-{n}@example.org>" for n in range(450)] + ["<id-1@example.org>", 'bad"\r\n<x@y>', "  "]
    asked = message_id_searches(ids, at("2026-11-20 00:30"))
    assert len(asked) == 4  # not one SEARCH per 25 IDs: each makes the server go through the folder
    seen = []
    for criteria in asked:
        assert criteria.startswith("SINCE 19-Nov-2026 ") and len(criteria) <= SEARCH_CHARS + 20
        words = criteria.split(" ")[2:]
        keys = [w for w in words if w.startswith('"')]
        assert words.count("OR") == len(keys) - 1 and all(w in ("OR", "HEADER", "Message-ID") or w.startswith('"')
                                                          for w in words)
        seen += [k.strip('"') for k in keys]
    assert sorted(seen) == sorted({i for i in ids[:450]} | {"bad<x@y>"})  # each once, nothing unsafe
