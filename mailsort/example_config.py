"""The commented example written by `mailsort init` (kept as text so the comments survive)."""

from __future__ import annotations

from pathlib import Path

from .errors import UsageError

EXAMPLE = '''\
# mailsort configuration. Reference: README.md ("Config reference").
# Passwords never go in this file: use password_env, password_command or password_keyring.

[state]
# path = "~/.local/share/mailsort/state.sqlite3"    # default: the user data directory

[calendar]
timezone = "Europe/Madrid"                          # IANA time zone of your working hours
holidays = { country = "ES", subdivision = "MC" }   # public holidays (remove for none)

[calendar.hours]                                    # a missing day is closed
mon = ["09:00-17:30"]
tue = ["09:00-17:30"]
wed = ["09:00-13:00", "14:00-17:30"]
thu = ["09:00-17:30"]
fri = ["09:00-17:30"]

# [[calendar.absence]]                              # vacation, illness, an accident...
# start = 2026-12-24
# end = 2027-01-06                                  # inclusive
# note = "holidays"

[labels]
mode = "auto"          # auto | keyword | gmail | folder
critical = "Critical"
routine = "Routine"

[folders]
later = "Later"        # routine mail that arrives after hours waits here until the next opening

[replies]
mode = "send"          # send | draft (only put replies in Drafts) | off
default_language = "en"
min_days_between = 4   # at most one automatic reply per sender in this many days
owner_name = "Ana"
signature = "Ana Ruiz — web support"
# fee_note = "Support outside working hours is billed at 1.5x."
# reply_within_hours = 24   # working hours to answer a client; later ones get the Overdue label
# expectations = true        # first-contact "how I work" mail to a new sender
# thank_you = true           # a short thank-you to everyone who wrote during an absence
# digest = true              # one mail to you at each opening: overdue, due today, critical open
# templates_dir = "~/.config/mailsort/templates"   # <template>.<lang>.txt files override the built-in ones

# [[client]]                 # mail from a client gets the label Client/<name>
# name = "Acme"
# domains = ["acme.example"]
# addresses = ["boss@gmail.example"]
# language = "it"

# [policy.routine_closed]    # change one row of the default policy (see the README)
# reply = "at_once"

[notify]
kind = "none"          # none | command | email
# command = "notify-send mailsort"                # gets a summary on standard input
# to = "0034600000000@sms.example.net"            # for kind = "email"

[[account]]
name = "work"
addresses = ["me@example.org"]                      # your own addresses: never auto-replied to
folders = ["INBOX"]
imap = { host = "imap.example.org", port = 993, security = "tls", username = "me@example.org" }
smtp = { host = "smtp.example.org", port = 465, security = "tls", username = "me@example.org" }
password_env = "MAILSORT_WORK_PASSWORD"             # or password_command = "pass show mail/work"

# [[client]]
# name = "Acme"
# domains = ["acme.example"]
# language = "es"
'''


def write_example(path: Path) -> None:
    """Create the example config; refuse to touch an existing file."""
    path = Path(path).expanduser()
    if path.exists():
        raise UsageError(f"{path} already exists; not overwriting it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("x", encoding="utf-8") as fh:
            fh.write(EXAMPLE)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc}") from None
