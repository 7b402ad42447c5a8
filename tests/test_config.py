"""Every config mistake gives a one-line message naming the key (and exit 2 from the CLI)."""

from __future__ import annotations

import textwrap

import pytest

from mailsort.cli import main
from mailsort.config import load_config
from mailsort.errors import ConfigError

GOOD = textwrap.dedent("""
    [calendar]
    timezone = "Europe/Madrid"
    holidays = { country = "ES", subdivision = "MC" }
    [calendar.hours]
    mon = ["09:00-17:30"]
    tue = ["09:00-17:30"]
    wed = ["09:00-13:00", "14:00-17:30"]
    thu = ["09:00-17:30"]
    fri = ["09:00-17:30"]
    [[calendar.absence]]
    start = 2026-12-24
    end = 2027-01-06
    note = "holidays"

    [replies]
    owner_name = "Ana"

    [[account]]
    name = "work"
    addresses = ["me@example.org"]
    imap = { host = "imap.example.org", port = 993, security = "tls", username = "me@example.org" }
    smtp = { host = "smtp.example.org", port = 465, security = "tls", username = "me@example.org" }
    password_env = "MAILSORT_WORK_PASSWORD"
""")


def write(tmp_path, text: str):
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_good_config_loads(tmp_path):
    config = load_config(write(tmp_path, GOOD))
    assert config.calendar.timezone == "Europe/Madrid"
    assert [str(r) for r in config.calendar.hours[2]] == ["09:00-13:00", "14:00-17:30"]
    assert config.calendar.hours[5] == ()
    assert config.calendar.holiday_country == "ES"
    account = config.account("work")
    assert account.imap.port == 993 and account.imap.password_env == "MAILSORT_WORK_PASSWORD"
    assert account.smtp is not None and account.smtp.password_env == "MAILSORT_WORK_PASSWORD"
    assert account.folders == ("INBOX",)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('owner_name = "Ana"', 'owner_name = "Ana"\ncolour = "blue"', r"replies\.colour: unknown key"),
        ('mon = ["09:00-17:30"]', 'mon = ["9:00-25:00"]', r"calendar\.hours\.mon\[0\]: '9:00-25:00' has an impossible time"),
        ('mon = ["09:00-17:30"]', 'mon = ["17:30-09:00"]', r"calendar\.hours\.mon\[0\]: '17:30-09:00' ends before it starts"),
        ('mon = ["09:00-17:30"]', 'mon = ["nine to five"]', r"calendar\.hours\.mon\[0\]: 'nine to five' is not a time range"),
        ('mon = ["09:00-17:30"]', 'mon = ["09:00-13:00", "12:00-17:30"]', r"calendar\.hours\.mon: ranges 09:00-13:00 and 12:00-17:30 overlap"),
        ('timezone = "Europe/Madrid"', 'timezone = "Europe/Atlantis"', r"calendar\.timezone: unknown time zone 'Europe/Atlantis'"),
        ('country = "ES", subdivision = "MC"', 'country = "XX"', r"calendar\.holidays\.country: unknown holiday country 'XX'"),
        ('country = "ES", subdivision = "MC"', 'country = "ES", subdivision = "ZZ"', r"calendar\.holidays\.subdivision: ES has no subdivision 'ZZ'"),
        ('security = "tls", username = "me@example.org" }\nsmtp', 'security = "none", username = "me@example.org" }\nsmtp',
         r"account\[0\]\.imap\.security: 'none' \(plaintext\) is allowed only for a loopback host"),
        ('password_env = "MAILSORT_WORK_PASSWORD"', 'password = "hunter2"', r"account\[0\]\.password: passwords must not be written in the config file"),
        ('port = 993,', 'port = 993, password = "x",', r"account\[0\]\.imap\.password: passwords must not be written"),
        ('end = 2027-01-06', 'end = 2026-12-01', r"calendar\.absence\[0\]\.end: 2026-12-01 is before start 2026-12-24"),
        ('port = 993,', 'port = "993",', r"account\[0\]\.imap\.port: expected a whole number, got a string"),
    ],
)
def test_config_mistakes_name_the_key(tmp_path, old, new, message):
    assert old in GOOD
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, GOOD.replace(old, new)))


def test_two_accounts_with_one_name(tmp_path):
    text = GOOD + GOOD[GOOD.index("[[account]]"):]
    with pytest.raises(ConfigError, match=r"account\[1\]\.name: two accounts are named 'work'"):
        load_config(write(tmp_path, text))


def test_calendar_without_any_opening(tmp_path):
    text = GOOD
    for day in ("mon", "tue", "wed", "thu", "fri"):
        text = "\n".join(line for line in text.splitlines() if not line.startswith(f"{day} ="))
    with pytest.raises(ConfigError, match=r"calendar\.hours: no opening hours on any day"):
        load_config(write(tmp_path, text))


def test_plaintext_is_fine_on_loopback(tmp_path):
    text = GOOD.replace('host = "imap.example.org", port = 993, security = "tls"', 'host = "127.0.0.1", port = 1143, security = "none"')
    assert load_config(write(tmp_path, text)).account("work").imap.security == "none"


def test_not_toml(tmp_path):
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[calendar\n"))


def test_cli_reports_config_error_in_one_line_with_exit_2(tmp_path, capsys):
    path = write(tmp_path, GOOD.replace('timezone = "Europe/Madrid"', 'timezone = "Mars/Olympus"'))
    status = main(["--config", str(path), "check-config"])
    err = capsys.readouterr().err
    assert status == 2
    assert err.strip().count("\n") == 0
    assert "calendar.timezone: unknown time zone 'Mars/Olympus'" in err
    assert "Traceback" not in err


def test_cli_missing_config_says_how_to_create_one(tmp_path, capsys):
    status = main(["--config", str(tmp_path / "nope.toml"), "check-config"])
    assert status == 2
    assert "mailsort init" in capsys.readouterr().err


def test_init_writes_a_valid_example_and_never_overwrites(tmp_path, capsys):
    path = tmp_path / "sub" / "config.toml"
    assert main(["init", str(path)]) == 0
    config = load_config(path)
    assert config.accounts[0].name == "work"
    before = path.read_text()
    assert main(["init", str(path)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert path.read_text() == before
