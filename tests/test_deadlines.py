"""Reply deadlines: working-hours arithmetic, overdue / due today / critical open, answers, the digest."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from mailsort.cli import main
from mailsort.deadlines import (answered_ids, classify_due, day_cutoff, digest_due, digest_text, due_at,
                                first_answers, message_ids, newly_answered, newly_overdue, overdue_to_clear)
from mailsort.store import Store

from workflow_support import MADRID, at, calendar, row


def test_friday_1700_is_due_wednesday_1530():
    assert due_at(at("2026-11-27 17:00"), calendar(), 24) == at("2026-12-02 15:30")  # Fri -> Wed


def test_mail_from_a_closed_time_starts_counting_at_the_opening():
    assert due_at(at("2026-11-28 11:00"), calendar(), 8) == at("2026-11-30 17:00")  # Saturday -> Monday
    assert due_at(at("2026-11-27 20:00"), calendar(), 1) == at("2026-11-30 10:00")


def test_absence_days_do_not_count():
    from datetime import date

    from mailsort.config import Absence

    away = calendar((Absence(date(2026, 11, 30), date(2026, 12, 1)),))
    assert due_at(at("2026-11-27 17:00"), away, 24) == at("2026-12-04 15:30")


@pytest.mark.parametrize(("now", "overdue"), [("2026-12-02 15:29", False), ("2026-12-02 15:30", False),
                                              ("2026-12-02 15:31", True)])
def test_overdue_just_after_the_deadline_and_not_before(now, overdue):
    message = row("2026-11-27 17:00")
    report = classify_due([message], at(now), calendar(), hours=24)
    assert (message in [i.message for i in report.overdue]) is overdue
    if not overdue:
        assert [i.message for i in report.due_today] == [message]
        assert report.due_today[0].due_at == at("2026-12-02 15:30")


def test_stored_deadline_is_used():
    message = row("2026-11-27 17:00", due="2026-11-30 10:00")
    assert classify_due([message], at("2026-11-30 10:01"), calendar()).overdue[0].message is message
    # without a stored deadline and without hours there is no deadline
    assert classify_due([row("2026-11-27 17:00")], at("2026-12-09 10:00"), calendar()).empty


def test_answered_clears_it():
    answered = row("2026-11-27 17:00", answered="2026-12-01 10:00")
    now = at("2026-12-03 10:00")
    assert classify_due([answered], now, calendar(), hours=24).empty
    # looking at a moment before the answer, it was still open (and overdue after its deadline)
    assert classify_due([answered], at("2026-11-30 12:00"), calendar(), hours=24).critical_open == ()
    late = row("2026-11-27 17:00", answered="2026-12-03 09:30", overdue_labelled=True)
    assert len(classify_due([late], at("2026-12-03 09:00"), calendar(), hours=24).overdue) == 1
    assert classify_due([late], at("2026-12-03 10:00"), calendar(), hours=24).empty
    assert overdue_to_clear([late], at("2026-12-03 10:00")) == (late,)
    assert overdue_to_clear([late], at("2026-12-03 09:00")) == ()


def test_due_today_critical_open_and_exclusions():
    now = at("2026-12-01 09:00")  # Tuesday opening; today's work ends 17:30
    overdue = row("2026-11-26 09:00", label="critical")  # due Fri 15:30 -> overdue
    today = row("2026-11-27 17:00", due="2026-12-01 17:30")  # due exactly at the end of today
    tomorrow = row("2026-11-30 12:00")  # due Tue 12:00 + ... = Wed: not today, routine: not listed
    critical_later = row("2026-12-01 08:00", label="critical")  # due Wed 17:30 -> critical open
    robot = row("2026-11-20 10:00", situation="routine_robot")
    aside = row("2026-11-20 10:00", label="set-aside")
    backlog = row("2026-10-01 10:00", handled="2026-11-30 09:00")  # first sync of an old mailbox
    future = row("2026-12-01 10:00")  # arrived after `now`
    report = classify_due([future, critical_later, tomorrow, today, overdue, robot, aside, backlog], now, calendar(),
                          hours=24)
    assert report.cutoff == at("2026-12-01 17:30")
    assert [i.message for i in report.overdue] == [overdue]
    assert [i.message for i in report.due_today] == [today]
    assert [i.message for i in report.critical_open] == [critical_later]
    assert newly_overdue(report) == (overdue,)


def test_day_cutoff_after_hours_is_the_next_working_day():
    cal = calendar()
    assert day_cutoff(at("2026-12-01 12:00"), cal) == at("2026-12-01 17:30")
    assert day_cutoff(at("2026-12-01 18:00"), cal) == at("2026-12-02 17:30")
    assert day_cutoff(at("2026-11-28 12:00"), cal) == at("2026-11-30 17:30")  # Saturday -> Monday


def test_answered_ids_from_sent_headers():
    sent = [
        ("<a@acme.example>", "<x@acme.example> <y@acme.example>"),
        ("", ["<b@acme.example>"]),
        ("c@acme.example", ""),  # bare id without brackets
        ("<auto@acme.example>", "", "auto-replied"),  # our own automatic reply: not an answer
        ("<human@acme.example>", "", "no"),
        (None, None),
    ]
    assert answered_ids(sent) == {"<a@acme.example>", "<x@acme.example>", "<y@acme.example>", "<b@acme.example>",
                                  "<c@acme.example>", "<human@acme.example>"}
    assert message_ids("garbage with spaces") == []


def test_first_answers_keep_the_earliest_and_newly_answered():
    first = first_answers([
        ("<a@x>", "", at("2026-12-01 12:00"), None),
        ("<b@x>", "<a@x>", at("2026-12-01 10:00"), None),
        ("<a@x>", "", at("2026-12-01 09:00"), "auto-replied"),
    ])
    assert first == {"<a@x>": at("2026-12-01 10:00"), "<b@x>": at("2026-12-01 10:00")}
    open_a = row("2026-11-30 10:00", message_id="<a@x>")
    done_b = row("2026-11-30 10:00", message_id="<b@x>", answered="2026-11-30 11:00")
    other = row("2026-11-30 10:00", message_id="<c@x>")
    assert newly_answered([open_a, done_b, other], first) == (open_a,)


def test_digest_once_per_opening():
    cal = calendar()
    assert digest_due(None, at("2026-12-01 09:00"), cal)
    assert not digest_due(at("2026-12-01 09:00"), at("2026-12-01 12:00"), cal)
    assert digest_due(at("2026-12-01 09:00"), at("2026-12-02 09:05"), cal)
    assert not digest_due(None, at("2026-12-01 20:00"), cal)  # closed: wait for the opening


def test_digest_text_is_plain_english():
    now = at("2026-12-01 09:00")
    report = classify_due([row("2026-11-26 09:00", label="critical", subject="Site down", name="Ana"),
                           row("2026-11-27 17:00", due="2026-12-01 17:30", subject="Invoice")], now, calendar(), hours=24)
    subject, body = digest_text(report, now, MADRID)
    assert subject == "mailsort: 1 overdue, 1 due today — Tue 1 Dec 2026"
    assert "Overdue: 1" in body and "CRITICAL Site down" in body
    assert "from Ana <ana@acme.example> [Acme], arrived Thu 26 Nov 09:00; was due yesterday 16:00, 17 h 00 min ago" in body
    assert body.startswith("Client mail waiting for an answer, as of Tue 1 Dec 2026 09:00 (Europe/Madrid).")
    assert "Due today (by 17:30): 1" in body and "due today 17:30" in body
    empty_subject, empty_body = digest_text(classify_due([], now, calendar()), now, MADRID)
    assert empty_subject.startswith("mailsort: nothing overdue or due today")
    assert "Nothing is overdue" in empty_body


def due_config(tmp_path):
    """A config with Mon–Fri 09:00–17:30 in Madrid, and the path of its (not yet made) state database."""
    state = tmp_path / "state.sqlite3"
    config = tmp_path / "config.toml"
    config.write_text(f'[state]\npath = "{state}"\n[calendar]\ntimezone = "Europe/Madrid"\n'
                      '[calendar.hours]\nmon = ["09:00-17:30"]\ntue = ["09:00-17:30"]\nwed = ["09:00-17:30"]\n'
                      'thu = ["09:00-17:30"]\nfri = ["09:00-17:30"]\n')
    return config, state


def test_due_command_reads_the_state_database(tmp_path, capsys):
    config, state = due_config(tmp_path)
    message = row("2026-11-27 17:00", subject="Cannot log in")
    answered = row("2026-11-27 17:10", subject="Answered already")
    with Store(state) as store:
        store.record_decisions([message, answered])
        store.set_answered("work", answered.message_id, at("2026-11-30 10:00"))
    assert main(["--config", str(config), "due", "--now", "2026-12-02T15:31:00+01:00", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [i["subject"] for i in doc["overdue"]] == ["Cannot log in"]
    assert doc["overdue"][0]["due_at"] == "2026-12-02T15:30:00+01:00"
    assert doc["due_today"] == [] and doc["critical_open"] == []
    assert main(["--config", str(config), "due", "--now", "2026-12-02T15:29:00+01:00"]) == 0
    out = capsys.readouterr().out
    assert "Due today (by 17:30): 1" in out and "Cannot log in" in out and "Answered already" not in out
    assert main(["--config", str(config), "due", "--now", "yesterday"]) == 2


def test_due_lists_what_the_sync_tracks_and_all_of_it_on_request(tmp_path, capsys):
    config, state = due_config(tmp_path)
    with Store(state) as store:
        store.record_decisions([row("2026-10-20 10:00", subject="Long forgotten"), row("2026-11-27 17:00", subject="Recent")])
    now = "2026-12-02T15:31:00+01:00"
    assert main(["--config", str(config), "due", "--now", now, "--json"]) == 0
    assert [i["subject"] for i in json.loads(capsys.readouterr().out)["overdue"]] == ["Recent"]  # the last 30 days
    assert main(["--config", str(config), "due", "--all", "--now", now, "--json"]) == 0
    assert [i["subject"] for i in json.loads(capsys.readouterr().out)["overdue"]] == ["Long forgotten", "Recent"]


# ------------------------------------------------------------------------------------------ properties

from datetime import datetime as _datetime  # noqa: E402

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=60, deadline=None)
@given(arrived=st.datetimes(min_value=_datetime(2026, 1, 1), max_value=_datetime(2027, 12, 31)),
       hours=st.integers(min_value=1, max_value=80), step=st.integers(min_value=1, max_value=600))
def test_deadline_is_exactly_that_much_open_time_and_overdue_only_after_it(arrived, hours, step):
    cal = calendar()
    arrived = arrived.replace(tzinfo=MADRID)
    deadline = due_at(arrived, cal, hours)
    assert deadline > arrived and cal.open_time_between(arrived, deadline) == timedelta(hours=hours)
    message = row(arrived.isoformat())
    before = classify_due([message], deadline - timedelta(minutes=step), cal, hours=hours)
    after = classify_due([message], deadline + timedelta(minutes=step), cal, hours=hours)
    assert not before.overdue and [i.message for i in after.overdue] == [message]


# ------------------------------------------------------------------------------------------ when can it change?
# A sync pass with nothing new skips the deadline work until these moments (workflows.py): so until then the
# answers must not change, which these tests check minute by minute.

from mailsort.absences import just_ended, next_thank_you  # noqa: E402
from mailsort.calendar import WorkCalendar  # noqa: E402
from mailsort.config import Absence, TimeRange  # noqa: E402
from mailsort.deadlines import next_digest, next_overdue_change  # noqa: E402


def _answers(rows, t, cal, hours):
    report = classify_due([r for r in rows if r.answered_at is None], t, cal, hours)
    return newly_overdue(report), overdue_to_clear(rows, t)


def test_next_overdue_change_is_the_first_moment_the_overdue_answers_move():
    cal = calendar()
    rows = [row("2026-11-27 17:00"),  # due Wed 2 Dec 15:30
            row("2026-11-30 10:00", label="critical", due="2026-12-01 11:00"),  # stored deadline
            row("2026-11-20 10:00", overdue_labelled=True, answered="2026-12-01 09:45"),  # answer time still ahead
            row("2026-12-01 08:00", handled="2026-12-01 08:00"),  # arrives after `now` (replaying the past)
            row("2026-11-20 10:00", situation="routine_robot"),  # never due
            row("2026-10-01 10:00", handled="2026-11-27 10:00")]  # backlog: never due
    now = at("2026-11-30 12:00")
    assert next_overdue_change(rows, now, cal, 24) == at("2026-12-01 08:00")
    assert next_overdue_change(rows[:3], now, cal, 24) == at("2026-12-01 09:45")
    assert next_overdue_change(rows[:2], now, cal, 24) == at("2026-12-01 11:00")
    assert next_overdue_change(rows[:1], now, cal, 24) == at("2026-12-02 15:30")
    assert next_overdue_change(rows[4:], now, cal, 24) is None
    # something overdue and not labelled yet: now
    assert next_overdue_change(rows[:1], at("2026-12-02 16:00"), cal, 24) == at("2026-12-02 16:00")
    # minute by minute: nothing moves before the moment; just after it something does (a label to put
    # on or take off), or the message that arrived comes into view
    for subset in (rows, rows[:3], rows[:2], rows[:1]):
        until = next_overdue_change(subset, now, cal, 24)
        start = _answers(subset, now, cal, 24)
        t = now
        while t < until:
            assert _answers(subset, t, cal, 24) == start, t
            t += timedelta(minutes=1)
        if subset is rows:  # the arrival itself changes no answer; after it, the next moment is the next one
            assert next_overdue_change(subset, until + timedelta(minutes=1), cal, 24) == at("2026-12-01 09:45")
        else:
            assert _answers(subset, until + timedelta(minutes=1), cal, 24) != start


SPLIT = {0: (TimeRange(9 * 60, 13 * 60), TimeRange(13 * 60, 17 * 60)),  # touching: two openings
         1: (TimeRange(9 * 60, 13 * 60), TimeRange(15 * 60, 19 * 60)),
         2: (TimeRange(22 * 60, 24 * 60),), 3: (TimeRange(0, 2 * 60), TimeRange(9 * 60, 17 * 60)),
         4: (TimeRange(9 * 60, 17 * 60),), 5: (), 6: ()}


@pytest.mark.parametrize("cal", [calendar(), WorkCalendar(MADRID, SPLIT, {}, (Absence(
    __import__("datetime").date(2026, 12, 4), __import__("datetime").date(2026, 12, 8)),))], ids=["plain", "split"])
def test_next_digest_is_the_first_moment_a_digest_can_fall_due(cal):
    """From a run at `after` (which wrote the digest if one was due), no digest is due before
    next_digest(after), and one is due at it: checked every 10 minutes over two weeks."""
    start = at("2026-11-30 00:05")
    after = start
    while after < start + timedelta(days=14):
        last = after if digest_due(None, after, cal) else after - timedelta(days=20)  # the run wrote one, or not
        if digest_due(last, after, cal):
            last = after
        until = next_digest(after, cal)
        assert until is not None and until > after
        t = after + timedelta(minutes=1)
        while t < until:
            assert not digest_due(last, t, cal), (after, t)
            t += timedelta(minutes=7)
        assert digest_due(last, until, cal), (after, until)
        after += timedelta(minutes=10 * 7 + 3)


def test_next_digest_across_dst_and_a_calendar_that_never_opens_again():
    cal = calendar()
    assert next_digest(at("2026-03-27 18:00"), cal) == at("2026-03-30 09:00")  # Madrid's clocks go forward on the 29th
    assert next_digest(at("2026-03-30 09:00"), cal) == at("2026-03-31 09:00")
    never = WorkCalendar(MADRID, {i: () for i in range(7)}, {}, ())
    assert next_digest(at("2026-03-27 18:00"), never) is None


def test_next_thank_you_is_the_first_thank_you_time_after():
    from datetime import date

    first, second = Absence(date(2026, 11, 16), date(2026, 11, 18)), Absence(date(2026, 12, 24), date(2027, 1, 6))
    cal = calendar((first, second))
    assert next_thank_you(cal.absences, cal, at("2026-11-10 10:00")) == at("2026-11-19 09:00")
    assert next_thank_you(cal.absences, cal, at("2026-11-19 09:00")) == at("2027-01-07 09:00")
    assert next_thank_you(cal.absences, cal, at("2027-01-07 09:00")) is None
    # just_ended, checked last at `after`, turns true exactly then
    after = at("2026-11-10 10:00")
    assert just_ended(cal.absences, at("2026-11-19 08:59"), cal, after) is None
    assert just_ended(cal.absences, at("2026-11-19 09:00"), cal, after) == first
