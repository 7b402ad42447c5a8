"""Absences: `mailsort away` / `back` edit a commented config in place; who wrote while away, thank-you time."""

from __future__ import annotations

from datetime import date

import pytest

from mailsort.absences import absence_digest_text, just_ended, thank_you_due, writers_during
from mailsort.cli import main
from mailsort.config import Absence, load_config
from mailsort.config_edit import absences_of, add_absence, end_absence
from mailsort.errors import UsageError
from mailsort.example_config import EXAMPLE

from workflow_support import MADRID, at, calendar, row

SUMMER = """
[[calendar.absence]]   # the summer break
start = 2026-08-01
end = 2026-08-15       # inclusive
note = "summer"
"""


def commented_config(tmp_path, extra: str = SUMMER):
    """The `mailsort init` example (full of comments) with one absence, before the [labels] table."""
    text = EXAMPLE.replace("\n[labels]", extra + "\n[labels]", 1)
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path, text


def comments(text: str) -> list[str]:
    return [line[line.index("#"):].strip() for line in text.splitlines() if "#" in line]


def test_away_adds_an_absence_keeping_comments_and_layout(tmp_path, capsys):
    path, before = commented_config(tmp_path)
    assert main(["--config", str(path), "away", "2026-12-24", "2027-01-06", "--note", "Christmas"]) == 0
    after = path.read_text(encoding="utf-8")
    assert comments(after) == comments(before)
    assert after.startswith(before[: before.index("[labels]")])  # everything before is untouched
    assert 'start = 2026-12-24\nend = 2027-01-06\nnote = "Christmas"\n' in after
    config = load_config(path)
    assert config.calendar.absences == (Absence(date(2026, 8, 1), date(2026, 8, 15), "summer"),
                                        Absence(date(2026, 12, 24), date(2027, 1, 6), "Christmas"))
    out = capsys.readouterr().out
    assert "added the absence 2026-12-24 to 2027-01-06 (Christmas)" in out
    assert "  2026-08-01 to 2026-08-15 (summer)\n  2026-12-24 to 2027-01-06 (Christmas)" in out


def test_away_into_a_config_without_absences(tmp_path):
    path, _ = commented_config(tmp_path, extra="")
    assert main(["--config", str(path), "away", "2026-12-24", "2026-12-24"]) == 0
    assert load_config(path).calendar.absences == (Absence(date(2026, 12, 24), date(2026, 12, 24)),)
    assert "# [[calendar.absence]]" in path.read_text()  # the commented example stays


@pytest.mark.parametrize(("start", "end"), [("2026-07-20", "2026-08-01"), ("2026-08-15", "2026-08-20"),
                                            ("2026-08-05", "2026-08-06"), ("2026-07-01", "2026-09-01")])
def test_overlapping_absence_is_refused(tmp_path, capsys, start, end):
    path, before = commented_config(tmp_path)
    assert main(["--config", str(path), "away", start, end]) == 2
    assert "overlaps the absence 2026-08-01 to 2026-08-15 (summer)" in capsys.readouterr().err
    assert path.read_text() == before


@pytest.mark.parametrize(("args", "message"), [(["2026-12-24", "2026-12-20"], "before it starts"),
                                               (["24/12/2026", "2026-12-30"], "START: '24/12/2026' is not a date")])
def test_bad_dates_are_refused(tmp_path, capsys, args, message):
    path, before = commented_config(tmp_path)
    assert main(["--config", str(path), "away", *args]) == 2
    assert message in capsys.readouterr().err
    assert path.read_text() == before


def test_dry_run_shows_the_change_and_writes_nothing(tmp_path, capsys):
    path, before = commented_config(tmp_path)
    assert main(["--config", str(path), "away", "2026-12-24", "2027-01-06", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "+start = 2026-12-24" in out and "dry run" in out
    assert path.read_text() == before


def test_back_ends_the_current_absence_yesterday(tmp_path, capsys):
    path, before = commented_config(tmp_path)
    assert main(["--config", str(path), "back", "--today", "2026-08-10"]) == 0
    after = path.read_text()
    assert "end = 2026-08-09       # inclusive" in after  # the comment on the line survives
    assert comments(after) == comments(before)
    assert load_config(path).calendar.absences == (Absence(date(2026, 8, 1), date(2026, 8, 9), "summer"),)
    assert "now ends 2026-08-09" in capsys.readouterr().out


def test_back_with_now_uses_the_calendar_zone(tmp_path, capsys):
    path, _ = commented_config(tmp_path)
    # 23:30 UTC on 9 Aug is already 10 Aug in Madrid
    assert main(["--config", str(path), "back", "--now", "2026-08-09T23:30:00+00:00"]) == 0
    assert load_config(path).calendar.absences[0].end == date(2026, 8, 9)


def test_back_removes_an_absence_that_starts_today(tmp_path, capsys):
    path, before = commented_config(tmp_path)
    assert main(["--config", str(path), "back", "--today", "2026-08-01"]) == 0
    assert load_config(path).calendar.absences == ()
    out = capsys.readouterr().out
    assert "removed the absence 2026-08-01 to 2026-08-15 (summer)" in out and "absences: none" in out
    assert "[labels]" in path.read_text() and "absence = []" not in path.read_text()


def test_back_when_not_away_changes_nothing(tmp_path, capsys):
    path, before = commented_config(tmp_path)
    assert main(["--config", str(path), "back", "--today", "2026-09-01"]) == 0
    assert path.read_text() == before
    assert "no absence covers 2026-09-01" in capsys.readouterr().out


def test_editing_the_inline_form_and_pure_edits():
    text = ('[calendar]\ntimezone = "UTC"  # zone\nabsence = [{ start = 2026-01-01, end = 2026-01-02 }]\n'
            '[calendar.hours]\nmon = ["09:00-17:00"]\n')
    edit = add_absence(text, date(2026, 3, 1), date(2026, 3, 2), "x")
    assert "timezone = \"UTC\"  # zone" in edit.text
    assert absences_of(edit.text) == (Absence(date(2026, 1, 1), date(2026, 1, 2)), Absence(date(2026, 3, 1), date(2026, 3, 2), "x"))
    with pytest.raises(UsageError):
        add_absence(edit.text, date(2026, 1, 2), date(2026, 1, 3))
    assert end_absence(edit.text, date(2026, 3, 2)).absences[-1] == Absence(date(2026, 3, 1), date(2026, 3, 1), "x")


# ------------------------------------------------------------------------------------------ pure helpers

AWAY = Absence(date(2026, 11, 30), date(2026, 12, 4), "accident")


def test_writers_during_groups_by_sender_and_skips_robots():
    rows = [
        row("2026-11-29 23:59", sender="before@acme.example"),
        row("2026-11-30 00:10", sender="ana@acme.example", name="Ana", subject="first"),
        row("2026-12-02 10:00", sender="bob@rossi.example", name="", client=None, label="critical", language="it"),
        row("2026-12-03 10:00", sender="ANA@acme.example", name="Ana", subject="second", answered="2026-12-07 09:30"),
        row("2026-12-03 11:00", sender="news@list.example", situation="routine_robot"),
        row("2026-12-04 23:59", sender="late@acme.example"),
        row("2026-12-05 00:01", sender="after@acme.example"),
    ]
    writers = writers_during(rows, AWAY, MADRID)
    assert [w.address for w in writers] == ["ana@acme.example", "bob@rossi.example", "late@acme.example"]
    ana = writers[0]
    assert [m.subject for m in ana.messages] == ["first", "second"] and ana.first_message_id == rows[1].message_id
    assert ana.client == "Acme" and not ana.answered
    assert writers[1].critical == 1 and writers[1].language == "it"


def test_thank_you_is_due_at_the_first_opening_after_the_absence():
    cal = calendar((AWAY,))
    assert thank_you_due(AWAY, cal) == at("2026-12-07 09:00")  # Friday ends the absence -> Monday
    assert just_ended((AWAY,), at("2026-12-07 09:05"), cal, last_check=at("2026-12-04 17:00")) == AWAY
    assert just_ended((AWAY,), at("2026-12-07 09:10"), cal, last_check=at("2026-12-07 09:05")) is None
    assert just_ended((AWAY,), at("2026-12-06 12:00"), cal, last_check=None) is None


def test_absence_digest_text():
    rows = [row("2026-12-01 10:00", sender="ana@acme.example", subject="Invoice"),
            row("2026-12-02 22:00", sender="bob@rossi.example", name="Bob", client=None, label="critical",
                subject="Shop down")]
    subject, body = absence_digest_text(AWAY, writers_during(rows, AWAY, MADRID), at("2026-12-07 09:00"), MADRID)
    assert subject == "mailsort: welcome back — 2 people wrote while you were away"
    assert body.startswith("While you were away (accident), Mon 30 Nov 2026 – Fri 4 Dec 2026:")
    assert body.index("Bob <bob@rossi.example>: 1 message, 1 critical") < body.index("Ana <ana@acme.example> [Acme]")
    assert "Wed 2 Dec 22:00  CRITICAL Shop down" in body and "thank them" in body
    assert absence_digest_text(AWAY, (), at("2026-12-07 09:00"), MADRID)[0].endswith("nobody wrote while you were away")
