"""The after-hours report: figures from a known state database, and the page with valid PNG charts."""

from __future__ import annotations

import json
from datetime import date

import pytest

from mailsort.cli import main
from mailsort.report import CHARTS, compute_report
from mailsort.store import Store

from workflow_support import at, calendar, row

PNG = b"\x89PNG\r\n\x1a\n"
NOW = "2026-12-02T12:00:00+01:00"


def known_rows():
    """Two weeks of client mail (Europe/Madrid, Mon-Fri 09:00-17:30) and two rows the report leaves out."""
    return [
        # (row, answered at)
        (row("2026-11-23 10:00"), "2026-11-23 12:00"),                     # 2 h (2 working h)
        (row("2026-11-23 20:00"), "2026-11-24 10:00"),                     # after hours: 14 h (1 working h)
        (row("2026-11-28 11:00", label="critical"), "2026-11-28 12:00"),   # Saturday: 1 h (0 working h)
        (row("2026-11-25 15:00", label="critical"), None),                 # due Mon 30 Nov 13:30: overdue
        (row("2026-12-01 08:00"), "2026-12-01 13:00"),                     # after hours: 5 h (4 working h)
        (row("2026-12-01 11:00"), None),                                   # open, not yet due
        (row("2026-11-24 10:00", situation="routine_robot"), None),        # a newsletter: not client mail
        (row("2026-11-24 10:00", label="set-aside"), None),
    ]


@pytest.fixture
def state_config(tmp_path):
    state = tmp_path / "state.sqlite3"
    with Store(state) as store:
        rows = known_rows()
        store.record_decisions([r for r, _ in rows])
        for r, answered in rows:
            if answered:
                store.set_answered(r.account, r.message_id, at(answered))
    config = tmp_path / "config.toml"
    config.write_text(f'[state]\npath = "{state}"\n[calendar]\ntimezone = "Europe/Madrid"\n[calendar.hours]\n'
                      + "".join(f'{d} = ["09:00-17:30"]\n' for d in ("mon", "tue", "wed", "thu", "fri")))
    return config


def test_compute_report_figures():
    rows = [r if not answered else r.__class__(**{**r.__dict__, "answered_at": at(answered)})
            for r, answered in known_rows()]
    data = compute_report(rows, calendar(), at(NOW), hours=24)
    assert (data.total, data.critical, data.routine, data.after_hours) == (6, 2, 4, 3)
    assert data.after_hours_share == 0.5
    assert data.median_reply_hours == 3.5 and data.median_reply_working_hours == 1.5
    assert (data.with_deadline, data.overdue_now, data.answered_late) == (6, 1, 0)
    assert [(w.start, w.critical, w.routine, w.after_hours, w.missed_deadline) for w in data.weeks] == [
        (date(2026, 11, 23), 2, 2, 2, 1), (date(2026, 11, 30), 0, 2, 1, 0)]
    assert data.heatmap[0][10] == 1 and data.heatmap[0][20] == 1 and data.heatmap[5][11] == 1
    assert sum(map(sum, data.heatmap)) == 6
    # at an earlier moment only what had arrived (and been answered) by then counts
    earlier = compute_report(rows, calendar(), at("2026-11-26 12:00"), hours=24)
    assert earlier.total == 3 and earlier.median_reply_hours == 8.0 and earlier.overdue_now == 0


def test_report_command_writes_page_and_pngs(state_config, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["--config", str(state_config), "report", "--out", str(out), "--now", NOW, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["total"] == 6 and doc["after_hours_share"] == 0.5 and doc["median_reply_hours"] == 3.5
    page = (out / "index.html").read_text(encoding="utf-8")
    for cell in ('id="total">6<', 'id="critical">2<', 'id="routine">4<', 'id="after-hours">3<',
                 'id="after-hours-share">50.0%<', 'id="answered">4<', 'id="median-reply">3.5 h<',
                 'id="median-reply-working">1.5 h<', 'id="overdue-now">1<', 'id="answered-late">0<'):
        assert cell in page
    for chart in CHARTS:
        assert f'src="{chart}"' in page
        data = (out / chart).read_bytes()
        assert data.startswith(PNG) and data[12:16] == b"IHDR" and len(data) > 1000


def test_report_since_and_empty_state(state_config, tmp_path, capsys):
    out = tmp_path / "since"
    assert main(["--config", str(state_config), "report", "--since", "2026-11-30", "--out", str(out), "--now", NOW]) == 0
    text = capsys.readouterr().out
    assert "2 client messages, 1 after hours (50.0%); median time to first reply 5.0 h; overdue now 0" in text
    assert 'id="total">2<' in (out / "index.html").read_text()
    # no state database yet: an empty report, and no database file is created
    empty_config = tmp_path / "empty.toml"
    empty_config.write_text(state_config.read_text().replace("state.sqlite3", "none.sqlite3"))
    assert main(["--config", str(empty_config), "report", "--out", str(tmp_path / "empty"), "--now", NOW]) == 0
    assert 'id="median-reply">n/a<' in (tmp_path / "empty" / "index.html").read_text()
    assert (tmp_path / "empty" / "heatmap.png").read_bytes().startswith(PNG)
    assert not (tmp_path / "none.sqlite3").exists()
    assert main(["--config", str(state_config), "report", "--since", "last week", "--out", str(out)]) == 2
