"""The working-hours calendar: when is the owner at work?

Pure: every answer is a function of the calendar and the instant asked about, never of the clock.
Opening ranges are wall-clock times in the calendar's zone, so a 09:00 opening stays 09:00 local on
both sides of a DST change. Public holidays come from the `holidays` package, absences from config.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from functools import lru_cache
from typing import Iterator, Mapping
from zoneinfo import ZoneInfo

from .config import Absence, CalendarConfig, TimeRange

# How far ahead we look for an opening before declaring the calendar closed for good. A calendar with
# no weekly hours is rejected by config; only an absurdly long absence can exhaust this horizon.
HORIZON_DAYS = 3 * 366


class NeverOpenError(ValueError):
    """No opening within the horizon (e.g. an absence of several years)."""


@dataclass(frozen=True)
class Period:
    """One stretch of open time, as aware datetimes in the calendar's zone."""

    start: datetime
    end: datetime


@dataclass(frozen=True)
class Moment:
    """The calendar at one instant: open?, the absence it falls in, the next opening (None: never again)."""

    open: bool
    absence: Absence | None
    next_opening: datetime | None


@dataclass(frozen=True, eq=False)
class WorkCalendar:
    """Weekly hours + holidays + absences in one time zone."""

    tz: ZoneInfo
    hours: Mapping[int, tuple[TimeRange, ...]]
    holidays: Mapping[date, str] = field(default_factory=dict)
    absences: tuple[Absence, ...] = ()
    # periods_on(day), remembered: a sync pass asks about the same few days for thousands of messages
    _periods: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    # periods_on(day) as (start, end) in UTC, remembered for the comparisons with instants of other zones
    _utc: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    # the last moment() asked about, as (instant, Moment): a pass decides every message at the same `now`
    _moment: list = field(default_factory=lambda: [(None, None)], init=False, repr=False, compare=False)

    @classmethod
    def from_config(cls, config: CalendarConfig) -> "WorkCalendar":
        hol: Mapping[date, str] = {}
        if config.holiday_country:
            import holidays

            hol = holidays.country_holidays(config.holiday_country, subdiv=config.holiday_subdivision)
        return cls(ZoneInfo(config.timezone), dict(config.hours), hol, config.absences)

    # ----------------------------------------------------------------------------- day questions

    def holiday_name(self, day: date) -> str | None:
        name = self.holidays.get(day)
        return str(name) if name else None

    def absence_on(self, day: date) -> Absence | None:
        for absence in self.absences:
            if absence.start <= day <= absence.end:
                return absence
        return None

    def is_working_day(self, day: date) -> bool:
        return bool(self.hours.get(day.weekday())) and self.holiday_name(day) is None and self.absence_on(day) is None

    def periods_on(self, day: date) -> tuple[Period, ...]:
        """The open periods of one local day (empty on holidays, absences and closed weekdays)."""
        periods = self._periods.get(day)
        if periods is None:
            periods = _day_periods(self.tz, day, self.hours[day.weekday()]) if self.is_working_day(day) else ()
            self._periods[day] = periods
        return periods

    def utc_periods_on(self, day: date) -> tuple[tuple[Period, datetime, datetime], ...]:
        """periods_on(day) as (period, start in UTC, end in UTC). Python compares datetimes of two different
        zones as instants, that is in UTC; comparing UTC datetimes with each other is a plain comparison of
        their fields, about ten times cheaper: the journal asks about the arrival of every message."""
        bounds = self._utc.get(day)
        if bounds is None:
            bounds = self._utc[day] = tuple((p, p.start.astimezone(timezone.utc), p.end.astimezone(timezone.utc))
                                            for p in self.periods_on(day))
        return bounds

    def periods_from(self, t: datetime) -> Iterator[Period]:
        """Open periods that end after `t`, in order, merging periods that touch (e.g. across 24:00)."""
        _check_aware(t)
        day = t.astimezone(self.tz).date()
        # `period.end <= t` as Python answers it: wall-clock times when t is in the calendar's own zone object,
        # instants (compared in UTC, see utc_periods_on) when it is in any other
        own_zone = t.tzinfo is self.tz
        u = t.astimezone(timezone.utc)
        one_day = timedelta(days=1)
        pending: Period | None = None
        for _ in range(HORIZON_DAYS + 2):
            periods = self.utc_periods_on(day)
            day += one_day
            for period, _, end in periods:
                if (period.end <= t) if own_zone else (end <= u):
                    continue
                if pending is not None and period.start <= pending.end:
                    pending = Period(pending.start, max(pending.end, period.end))
                    continue
                if pending is not None:
                    yield pending
                pending = period
        if pending is not None:
            yield pending

    # ----------------------------------------------------------------------------- instant questions

    def is_open(self, t: datetime) -> bool:
        _check_aware(t)
        day = t.astimezone(self.tz).date()
        # loops, not any(genexpr): asked for every message; compared as Python compares them (see periods_from)
        if t.tzinfo is self.tz:
            for p in self.periods_on(day):
                if p.start <= t < p.end:
                    return True
            return False
        u = t.astimezone(timezone.utc)
        for _, start, end in self.utc_periods_on(day):
            if start <= u < end:
                return True
        return False

    def moment(self, t: datetime) -> "Moment":
        """is_open, absence_at and next_opening of one instant, answered once for the instant asked about
        last: the policy asks them about the same `now` for every message of a pass."""
        asked, moment = self._moment[0]  # (instant, Moment), replaced as one: safe for threads too
        # identity, not equality: an equal instant in another zone (or the other side of a DST fold) is a
        # different datetime object, and the few questions it asks again cost less than telling them apart
        if asked is not t:
            try:
                opening: datetime | None = self.next_opening(t)
            except NeverOpenError:
                opening = None
            moment = Moment(self.is_open(t), self.absence_at(t), opening)
            self._moment[0] = (t, moment)
        return moment

    def current_period(self, t: datetime) -> Period | None:
        for period in self.periods_from(t):
            return period if period.start <= t else None
        return None

    def next_opening(self, t: datetime) -> datetime:
        """The first opening at or after `t`; while open, the opening after the current period."""
        for period in self.periods_from(t):
            if period.start >= t:
                return period.start
        raise NeverOpenError(f"no working hours in the {HORIZON_DAYS} days after {t.isoformat()}")

    def next_closing(self, t: datetime) -> datetime:
        """The end of the current period while open, else the end of the next one."""
        for period in self.periods_from(t):
            return period.end
        raise NeverOpenError(f"no working hours in the {HORIZON_DAYS} days after {t.isoformat()}")

    def last_opening(self, t: datetime) -> datetime | None:
        """The most recent opening at or before `t` (within a fortnight), for "did we pass an opening?"."""
        _check_aware(t)
        day = t.astimezone(self.tz).date()
        for offset in range(0, 15):
            starts = [p.start for p in self.periods_on(day - timedelta(days=offset)) if p.start <= t]
            if starts:
                return max(starts)
        return None

    def add_open_time(self, t: datetime, amount: timedelta) -> datetime:
        """The instant at which `amount` of open time has passed since `t` (for reply deadlines)."""
        remaining = amount
        for period in self.periods_from(t):
            start = max(period.start, t)
            available = period.end - start
            if remaining <= available:
                return (start + remaining).astimezone(self.tz)
            remaining -= available
        raise NeverOpenError(f"not enough working hours after {t.isoformat()}")

    def open_time_between(self, start: datetime, end: datetime) -> timedelta:
        total = timedelta()
        for period in self.periods_from(start):
            if period.start >= end:
                break
            total += min(period.end, end) - max(period.start, start)
        return total

    def absence_at(self, t: datetime) -> Absence | None:
        return self.absence_on(t.astimezone(self.tz).date())


@lru_cache(maxsize=4096)
def _day_periods(tz: ZoneInfo, day: date, ranges: tuple[TimeRange, ...]) -> tuple[Period, ...]:
    periods = []
    for r in ranges:
        start = _local(tz, day, r.start_minute)
        end = _local(tz, day, r.end_minute)
        if end > start:
            periods.append(Period(start, end))
    return tuple(periods)


def _local(tz: ZoneInfo, day: date, minute: int) -> datetime:
    """Wall-clock `minute` of `day` in `tz`; 24:00 is the next midnight. Times skipped by a DST jump
    resolve to the instant after the jump (fold=0 semantics normalised through UTC)."""
    if minute >= 24 * 60:
        return _local(tz, day + timedelta(days=1), minute - 24 * 60)
    naive = datetime.combine(day, time(minute // 60, minute % 60))
    aware = naive.replace(tzinfo=tz)
    return aware.astimezone(ZoneInfo("UTC")).astimezone(tz)


def _check_aware(t: datetime) -> None:
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError("the calendar needs an aware datetime (with a UTC offset)")
