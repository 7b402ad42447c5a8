"""The working-hours calendar: the issue's examples, DST, holidays, absences, and properties."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailsort.calendar import NeverOpenError, WorkCalendar
from mailsort.cli import main
from mailsort.config import Absence, CalendarConfig, TimeRange

MADRID = ZoneInfo("Europe/Madrid")


def weekdays(*ranges: tuple[int, int]) -> dict[int, tuple[TimeRange, ...]]:
    day = tuple(TimeRange(a, b) for a, b in ranges)
    return {i: (day if i < 5 else ()) for i in range(7)}


NINE_TO_HALF_FIVE = weekdays((9 * 60, 17 * 60 + 30))


def es_mc(absences=()) -> WorkCalendar:
    return WorkCalendar.from_config(CalendarConfig("Europe/Madrid", NINE_TO_HALF_FIVE, "ES", "MC", tuple(absences)))


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


@pytest.mark.parametrize(
    ("now", "opening"),
    [
        ("2026-11-27T18:00:00+01:00", "2026-11-30T09:00:00+01:00"),  # Friday evening -> Monday
        ("2026-12-24T18:00:00+01:00", "2026-12-28T09:00:00+01:00"),  # Christmas + weekend skipped
        ("2027-03-24T18:00:00+01:00", "2027-03-29T09:00:00+02:00"),  # Maundy Thu, Good Fri, DST weekend
    ],
)
def test_issue_examples(now, opening):
    calendar = es_mc()
    assert not calendar.is_open(at(now))
    assert calendar.next_opening(at(now)) == at(opening)
    assert calendar.next_opening(at(now)).astimezone(MADRID).hour == 9


def test_hours_command_prints_issue_examples(tmp_path, capsys):
    config = tmp_path / "c.toml"
    config.write_text(
        '[calendar]\ntimezone = "Europe/Madrid"\nholidays = { country = "ES", subdivision = "MC" }\n'
        '[calendar.hours]\n' + "".join(f'{d} = ["09:00-17:30"]\n' for d in ("mon", "tue", "wed", "thu", "fri"))
    )
    assert main(["--config", str(config), "hours", "--now", "2027-03-24T18:00:00+01:00", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {"open": False, "next_opening": "2027-03-29T09:00:00+02:00",
                   "next_closing": "2027-03-29T17:30:00+02:00", "timezone": "Europe/Madrid",
                   "now": "2027-03-24T18:00:00+01:00"}
    assert main(["--config", str(config), "hours", "--now", "2026-11-27T18:00:00+01:00"]) == 0
    text = capsys.readouterr().out
    assert "closed" in text and "Mon 2026-11-30 09:00" in text


def test_open_and_closing_with_split_day():
    hours = weekdays((9 * 60, 13 * 60), (14 * 60, 17 * 60 + 30))
    calendar = WorkCalendar(MADRID, hours)
    noon = at("2026-11-25T12:00:00+01:00")
    assert calendar.is_open(noon)
    assert calendar.next_closing(noon) == at("2026-11-25T13:00:00+01:00")
    assert calendar.next_opening(noon) == at("2026-11-25T14:00:00+01:00")
    assert not calendar.is_open(at("2026-11-25T13:30:00+01:00"))
    assert calendar.is_open(at("2026-11-25T09:00:00+01:00"))  # opening instant is open
    assert not calendar.is_open(at("2026-11-25T17:30:00+01:00"))  # closing instant is closed


def test_dst_autumn_keeps_local_opening():
    calendar = WorkCalendar(MADRID, NINE_TO_HALF_FIVE)
    # clocks go back on Sunday 2026-10-25
    assert calendar.next_opening(at("2026-10-23T18:00:00+02:00")) == at("2026-10-26T09:00:00+01:00")


def test_absence_and_year_end():
    calendar = es_mc([Absence(date(2026, 12, 21), date(2027, 1, 8), "vacation")])
    t = at("2026-12-18T18:00:00+01:00")
    assert calendar.next_opening(t) == at("2027-01-11T09:00:00+01:00")
    assert calendar.absence_at(at("2027-01-02T10:00:00+01:00")).note == "vacation"
    assert not calendar.is_open(at("2026-12-22T10:00:00+01:00"))


def test_never_open_within_horizon_raises_instead_of_looping():
    calendar = WorkCalendar(MADRID, NINE_TO_HALF_FIVE, absences=(Absence(date(2026, 1, 1), date(2035, 1, 1)),))
    with pytest.raises(NeverOpenError):
        calendar.next_opening(at("2026-06-01T10:00:00+02:00"))


def test_open_time_arithmetic_for_deadlines():
    calendar = WorkCalendar(MADRID, NINE_TO_HALF_FIVE)
    friday_five = at("2026-11-27T17:00:00+01:00")
    due = calendar.add_open_time(friday_five, timedelta(hours=24))
    assert due == at("2026-12-02T15:30:00+01:00")  # 0.5 + 8.5 + 8.5 + 6.5 hours: Wednesday 15:30
    assert calendar.open_time_between(friday_five, due) == timedelta(hours=24)


def test_naive_datetime_is_refused():
    with pytest.raises(ValueError):
        WorkCalendar(MADRID, NINE_TO_HALF_FIVE).is_open(datetime(2026, 11, 27, 18, 0))


# ------------------------------------------------------------------------------- properties

instants = st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2029, 12, 31),
                        timezones=st.just(timezone.utc))
CAL = es_mc([Absence(date(2027, 8, 2), date(2027, 8, 20), "summer")])


@settings(max_examples=200, deadline=None)
@given(instants)
def test_next_opening_is_open_and_nothing_before_it_is(t):
    opening = CAL.next_opening(t)
    assert opening >= t
    assert CAL.is_open(opening)
    if not CAL.is_open(t):
        # nothing in [t, opening) is open: sample the interval
        span = opening - t
        for k in range(1, 40):
            probe = t + span * k / 40
            if probe < opening:
                assert not CAL.is_open(probe)
        assert CAL.open_time_between(t, opening) == timedelta(0)


@settings(max_examples=200, deadline=None)
@given(instants)
def test_next_closing_ends_an_open_stretch(t):
    closing = CAL.next_closing(t)
    assert closing > t
    assert not CAL.is_open(closing)
    assert CAL.is_open(closing - timedelta(seconds=1))
    if CAL.is_open(t):
        assert CAL.open_time_between(t, closing) == closing - t


@settings(max_examples=100, deadline=None)
@given(instants, st.integers(min_value=1, max_value=60 * 40))
def test_add_open_time_counts_only_open_time(t, minutes):
    due = CAL.add_open_time(t, timedelta(minutes=minutes))
    assert CAL.open_time_between(t, due) == timedelta(minutes=minutes)
    assert due.astimezone(MADRID).time() <= datetime(2000, 1, 1, 17, 30).time()


# ------------------------------------------------------------------------------- the remembered answers
# is_open and periods_from compare with per-day UTC bounds (and add_open_time, through periods_from).
# Held here to their plain definitions (fresh calendars, Python's own comparisons),
# across DST changes, for moments in UTC, in a fixed offset and in the calendar's own zone (both folds).

# every day, with bounds inside the hour that DST repeats or skips, several closed stretches a day, and
# periods that touch across midnight; then the same, listed out of order
ODD_HOURS = {i: (TimeRange(90, 165), TimeRange(8 * 60, 12 * 60), TimeRange(22 * 60, 24 * 60)) for i in range(7)}
UNSORTED_HOURS = {i: (TimeRange(22 * 60, 24 * 60), TimeRange(8 * 60, 12 * 60), TimeRange(0, 165)) for i in range(7)}
SANTIAGO = ZoneInfo("America/Santiago")  # turns its clocks back at midnight


def plain_is_open(calendar: WorkCalendar, t: datetime) -> bool:
    return any(p.start <= t < p.end for p in calendar.periods_on(t.astimezone(calendar.tz).date()))


def plain_periods_from(calendar: WorkCalendar, t: datetime):
    day, pending = t.astimezone(calendar.tz).date(), None
    for offset in range(8):
        for period in calendar.periods_on(day + timedelta(days=offset)):
            if period.end <= t:
                continue
            if pending is not None and period.start <= pending.end:
                pending = type(period)(pending.start, max(pending.end, period.end))
                continue
            if pending is not None:
                yield pending
            pending = period


def moments_around(change: datetime, tz: ZoneInfo):
    for minutes in range(-26 * 60, 26 * 60, 13):
        u = change + timedelta(minutes=minutes, seconds=minutes % 7)
        yield u
        yield u.astimezone(timezone(timedelta(hours=-3)))
        for fold in (0, 1):
            yield u.astimezone(tz).replace(fold=fold)


@pytest.mark.parametrize(("tz", "hours", "change"), [
    (MADRID, ODD_HOURS, datetime(2026, 10, 25, 1, 0, tzinfo=timezone.utc)),
    (MADRID, ODD_HOURS, datetime(2026, 3, 29, 1, 0, tzinfo=timezone.utc)),
    (MADRID, UNSORTED_HOURS, datetime(2026, 10, 25, 1, 0, tzinfo=timezone.utc)),
    (SANTIAGO, ODD_HOURS, datetime(2026, 4, 5, 3, 0, tzinfo=timezone.utc)),
    (SANTIAGO, ODD_HOURS, datetime(2026, 9, 6, 4, 0, tzinfo=timezone.utc)),
])
def test_calendar_answers_are_the_plain_ones_around_dst_changes(tz, hours, change):
    calendar = WorkCalendar(tz, hours)  # one calendar for all: what it remembers is used
    for t in moments_around(change, tz):
        assert calendar.is_open(t) == plain_is_open(calendar, t), t
        got = [(repr(p.start), repr(p.end)) for _, p in zip(range(3), calendar.periods_from(t))]
        assert got == [(repr(p.start), repr(p.end)) for _, p in zip(range(3), plain_periods_from(calendar, t))], t
        for amount in (timedelta(minutes=1), timedelta(minutes=50), timedelta(hours=4), timedelta(hours=30)):
            fresh = WorkCalendar(tz, hours).add_open_time(t, amount)  # nothing remembered yet
            assert repr(calendar.add_open_time(t, amount)) == repr(fresh), (t, amount)


def test_moment_answers_like_the_single_questions():
    calendar = es_mc([Absence(date(2026, 12, 21), date(2027, 1, 8), "vacation")])
    for text in ("2026-11-25T11:00:00+01:00", "2026-11-25T20:00:00+01:00", "2027-01-02T10:00:00+01:00"):
        t = at(text)
        moment = calendar.moment(t)
        assert (moment.open, moment.absence, moment.next_opening) == (
            calendar.is_open(t), calendar.absence_at(t), calendar.next_opening(t))
        assert calendar.moment(t) is moment  # the same instant asked again: answered once
    never = WorkCalendar(MADRID, NINE_TO_HALF_FIVE, absences=(Absence(date(2026, 1, 1), date(2035, 1, 1)),))
    assert never.moment(at("2026-06-01T10:00:00+02:00")).next_opening is None
