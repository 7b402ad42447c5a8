"""The after-hours report: when do clients write, how much of it after hours, how fast do they get answers.

`compute_report` is pure (the handled messages, the calendar and `now` in, figures out); `render_report`
is the shell that draws PNG charts with matplotlib (Agg backend, imported only here, from the `report`
extra) and writes `index.html` beside them. Everything comes from the state database, not the server.

Time to first reply is `answered_at - arrived_at`: `answered_at` is when the first reply of the owner
that names the message (In-Reply-To / References) reached the Sent folder. Automatic replies (the
after-hours note, the critical acknowledgement) are not answers and are not counted. It is given both
in wall-clock hours and in working hours (only open time counts, as for deadlines).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Sequence

from .calendar import WorkCalendar
from .deadlines import deadline_of
from .errors import UsageError
from .store import HandledMessage

WEEKDAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
CHARTS = ("heatmap.png", "after_hours.png", "weekly.png", "reply_times.png", "overdue.png")


@dataclass(frozen=True)
class WeekRow:
    """One calendar week (Monday to Sunday in the calendar's zone) of client mail."""

    start: date
    critical: int = 0
    routine: int = 0
    after_hours: int = 0
    missed_deadline: int = 0  # deadline passed before an answer (answered late, or still open and overdue)

    @property
    def total(self) -> int:
        return self.critical + self.routine


@dataclass(frozen=True)
class ReportData:
    now: datetime
    timezone: str
    since: date | None
    total: int
    critical: int
    routine: int
    after_hours: int
    heatmap: tuple[tuple[int, ...], ...]  # [weekday 0=Mon][hour 0-23] arrivals, local time
    weeks: tuple[WeekRow, ...]
    reply_hours: tuple[float, ...]  # wall-clock hours to the first answer, one per answered message
    reply_working_hours: tuple[float, ...]
    with_deadline: int
    overdue_now: int  # unanswered and past the deadline at `now`
    answered_late: int

    @property
    def after_hours_share(self) -> float | None:
        return self.after_hours / self.total if self.total else None

    @property
    def answered(self) -> int:
        return len(self.reply_hours)

    @property
    def median_reply_hours(self) -> float | None:
        return statistics.median(self.reply_hours) if self.reply_hours else None

    @property
    def median_reply_working_hours(self) -> float | None:
        return statistics.median(self.reply_working_hours) if self.reply_working_hours else None

    def to_json(self) -> dict:
        return {
            "now": self.now.isoformat(), "timezone": self.timezone,
            "since": self.since.isoformat() if self.since else None,
            "total": self.total, "critical": self.critical, "routine": self.routine,
            "after_hours": self.after_hours, "after_hours_share": _round(self.after_hours_share),
            "answered": self.answered, "median_reply_hours": _round(self.median_reply_hours),
            "median_reply_working_hours": _round(self.median_reply_working_hours),
            "with_deadline": self.with_deadline, "overdue_now": self.overdue_now, "answered_late": self.answered_late,
            "weeks": [{"start": w.start.isoformat(), "critical": w.critical, "routine": w.routine,
                       "after_hours": w.after_hours, "missed_deadline": w.missed_deadline} for w in self.weeks],
            "heatmap": [list(row) for row in self.heatmap],
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def compute_report(messages: Sequence[HandledMessage], calendar: WorkCalendar, now: datetime,
                   hours: float | None = None, since: date | None = None) -> ReportData:
    """The figures of the report. Client mail only (critical or routine; robots, lists and mail set
    aside are left out) that arrived by `now` (and on or after `since`, a local date). `hours` gives a
    deadline to messages stored without one (replies.reply_within_hours)."""
    tz = calendar.tz
    heat = [[0] * 24 for _ in range(7)]
    weeks: dict[date, dict[str, int]] = {}
    totals = {"critical": 0, "routine": 0, "after_hours": 0, "with_deadline": 0, "overdue_now": 0, "late": 0}
    reply_hours: list[float] = []
    reply_working: list[float] = []
    for m in messages:
        arrived = m.arrived_at or m.handled_at
        local = arrived.astimezone(tz)
        if m.label not in ("critical", "routine") or arrived > now or (since and local.date() < since):
            continue
        if str(m.decision.get("situation", "")).endswith("_robot") or m.decision.get("robot"):
            continue
        week = weeks.setdefault(local.date() - timedelta(days=local.weekday()),
                                {"critical": 0, "routine": 0, "after_hours": 0, "missed": 0})
        heat[local.weekday()][local.hour] += 1
        totals[m.label] += 1
        week[m.label] += 1
        if not m.open_at_arrival:
            totals["after_hours"] += 1
            week["after_hours"] += 1
        answered = m.answered_at if m.answered_at is not None and m.answered_at <= now else None
        if answered is not None and answered >= arrived:
            reply_hours.append((answered - arrived).total_seconds() / 3600)
            reply_working.append(calendar.open_time_between(arrived, answered).total_seconds() / 3600)
        deadline = deadline_of(m, calendar, hours)
        if deadline is not None:
            totals["with_deadline"] += 1
            if answered is None and now > deadline:
                totals["overdue_now"] += 1
                week["missed"] += 1
            elif answered is not None and answered > deadline:
                totals["late"] += 1
                week["missed"] += 1
    rows = tuple(WeekRow(start, w["critical"], w["routine"], w["after_hours"], w["missed"])
                 for start, w in sorted(weeks.items()))
    return ReportData(
        now=now.astimezone(tz), timezone=str(tz.key), since=since,
        total=totals["critical"] + totals["routine"], critical=totals["critical"], routine=totals["routine"],
        after_hours=totals["after_hours"], heatmap=tuple(tuple(r) for r in heat), weeks=rows,
        reply_hours=tuple(reply_hours), reply_working_hours=tuple(reply_working),
        with_deadline=totals["with_deadline"], overdue_now=totals["overdue_now"], answered_late=totals["late"],
    )


# ------------------------------------------------------------------------------------------ rendering


def format_hours(value: float | None) -> str:
    """3.5 -> '3.5 h'; None -> 'n/a'."""
    return "n/a" if value is None else f"{value:.1f} h"


def format_share(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f}%"


def render_report(data: ReportData, out_dir: Path) -> Path:
    """Write the PNG charts and index.html into `out_dir` (created if needed); returns index.html."""
    try:
        import matplotlib
    except ImportError:
        raise UsageError("the report needs matplotlib: pip install 'mailsort[report]'") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--out: cannot create {out_dir}: {exc}") from None

    weeks = [w.start.strftime("%d %b") for w in data.weeks]
    x = list(range(len(weeks)))

    def save(fig, name: str, counts: bool = True) -> None:
        if counts:  # message counts: whole numbers on the y axis
            fig.axes[0].yaxis.set_major_locator(MaxNLocator(integer=True))
        # fixed margins rather than tight_layout: one draw per chart instead of two
        fig.subplots_adjust(left=0.09, right=0.97, top=0.9, bottom=0.22)
        fig.savefig(out_dir / name, format="png", dpi=90, pil_kwargs={"compress_level": 3})
        plt.close(fig)

    def no_data(ax) -> None:
        ax.text(0.5, 0.5, "no client mail in this period", ha="center", va="center", transform=ax.transAxes)

    # weekday x hour heatmap
    fig, ax = plt.subplots(figsize=(10, 3.6))
    image = ax.imshow(data.heatmap, aspect="auto", cmap="Oranges", vmin=0)
    ax.set_yticks(range(7), WEEKDAY_NAMES)
    ax.set_xticks(range(24), [f"{h:02d}" for h in range(24)], fontsize=8)
    ax.set_xlabel(f"hour of arrival ({data.timezone})")
    ax.set_title("Client mail by weekday and hour")
    peak = max(max(r) for r in data.heatmap) or 1
    for day, row in enumerate(data.heatmap):
        for hour, count in enumerate(row):
            if count:
                ax.text(hour, day, str(count), ha="center", va="center", fontsize=7,
                        color="white" if count > peak / 2 else "black")
    fig.colorbar(image, ax=ax, label="messages", fraction=0.04, pad=0.02)
    save(fig, "heatmap.png", counts=False)

    # in hours versus after hours, per week
    fig, ax = plt.subplots(figsize=(8, 3.6))
    if data.weeks:
        inside = [w.total - w.after_hours for w in data.weeks]
        after = [w.after_hours for w in data.weeks]
        ax.bar(x, inside, label="in working hours", color="#4c72b0")
        ax.bar(x, after, bottom=inside, label="after hours", color="#dd8452")
        ax.set_xticks(x, weeks, rotation=45, ha="right")
        ax.legend()
    else:
        no_data(ax)
    ax.set_title(f"Arrivals after hours: {format_share(data.after_hours_share)} of {data.total}")
    ax.set_ylabel("messages")
    save(fig, "after_hours.png")

    # critical versus routine, per week
    fig, ax = plt.subplots(figsize=(8, 3.6))
    if data.weeks:
        ax.bar([i - 0.2 for i in x], [w.critical for w in data.weeks], width=0.4, label="critical", color="#c44e52")
        ax.bar([i + 0.2 for i in x], [w.routine for w in data.weeks], width=0.4, label="routine", color="#55a868")
        ax.set_xticks(x, weeks, rotation=45, ha="right")
        ax.legend()
    else:
        no_data(ax)
    ax.set_title("Critical versus routine, per week")
    ax.set_ylabel("messages")
    save(fig, "weekly.png")

    # time to first reply
    fig, ax = plt.subplots(figsize=(8, 3.6))
    if data.reply_hours:
        ax.hist(data.reply_hours, bins=min(20, max(5, len(data.reply_hours))), color="#8172b3")
        ax.axvline(data.median_reply_hours, color="black", linestyle="--",
                   label=f"median {format_hours(data.median_reply_hours)}")
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no answered messages in this period", ha="center", va="center", transform=ax.transAxes)
    ax.set_title("Time to first reply (wall-clock hours)")
    ax.set_xlabel("hours")
    ax.set_ylabel("messages")
    save(fig, "reply_times.png")

    # missed deadlines, per week
    fig, ax = plt.subplots(figsize=(8, 3.6))
    if data.weeks:
        ax.bar(x, [w.missed_deadline for w in data.weeks], color="#937860")
        ax.set_xticks(x, weeks, rotation=45, ha="right")
    else:
        no_data(ax)
    ax.set_title(f"Missed reply deadlines per week (overdue now: {data.overdue_now})")
    ax.set_ylabel("messages")
    save(fig, "overdue.png")

    index = out_dir / "index.html"
    index.write_text(_html(data), encoding="utf-8")
    return index


_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>mailsort — after-hours report</title>
<style>
 body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 960px; color: #222; }
 table { border-collapse: collapse; margin: 1em 0; }
 th, td { border: 1px solid #ccc; padding: .3em .7em; text-align: right; }
 th:first-child, td:first-child { text-align: left; }
 img { max-width: 100%; display: block; margin: 1em 0 2em; }
</style>
</head>
<body>
<h1>After-hours report</h1>
<p>Client mail {% if data.since %}since {{ data.since }}{% else %}so far{% endif %}, up to
{{ data.now.strftime("%Y-%m-%d %H:%M") }} ({{ data.timezone }}).</p>
<table id="figures">
<tr><th>client messages</th><td id="total">{{ data.total }}</td></tr>
<tr><th>critical</th><td id="critical">{{ data.critical }}</td></tr>
<tr><th>routine</th><td id="routine">{{ data.routine }}</td></tr>
<tr><th>arrived after hours</th><td id="after-hours">{{ data.after_hours }}</td></tr>
<tr><th>share after hours</th><td id="after-hours-share">{{ share }}</td></tr>
<tr><th>answered</th><td id="answered">{{ data.answered }}</td></tr>
<tr><th>median time to first reply</th><td id="median-reply">{{ median }}</td></tr>
<tr><th>median time to first reply, working hours only</th><td id="median-reply-working">{{ median_working }}</td></tr>
<tr><th>with a reply deadline</th><td id="with-deadline">{{ data.with_deadline }}</td></tr>
<tr><th>overdue now</th><td id="overdue-now">{{ data.overdue_now }}</td></tr>
<tr><th>answered after the deadline</th><td id="answered-late">{{ data.answered_late }}</td></tr>
</table>
<h2>When clients write</h2>
<img src="heatmap.png" alt="client mail by weekday and hour">
<img src="after_hours.png" alt="arrivals in and after working hours per week">
<h2>Critical versus routine</h2>
<img src="weekly.png" alt="critical and routine messages per week">
<h2>Answers</h2>
<p>Time to first reply runs from arrival to the first reply of yours in the Sent folder that names the
message; automatic replies do not count.</p>
<img src="reply_times.png" alt="time to first reply">
<img src="overdue.png" alt="missed reply deadlines per week">
<h2>By week</h2>
<table id="weeks">
<tr><th>week of</th><th>critical</th><th>routine</th><th>after hours</th><th>missed deadline</th></tr>
{% for w in data.weeks %}<tr><td>{{ w.start }}</td><td>{{ w.critical }}</td><td>{{ w.routine }}</td>
<td>{{ w.after_hours }}</td><td>{{ w.missed_deadline }}</td></tr>
{% endfor %}</table>
<p><small>Written by mailsort from its state database.</small></p>
</body>
</html>
"""


def _html(data: ReportData) -> str:
    from jinja2 import Environment

    env = Environment(autoescape=True)
    return env.from_string(_PAGE).render(
        data=data, share=format_share(data.after_hours_share), median=format_hours(data.median_reply_hours),
        median_working=format_hours(data.median_reply_working_hours))
