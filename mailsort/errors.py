"""One exception hierarchy for the whole package.

The CLI maps these to exit codes and one-line messages in a single place (`cli.main`), so a user
mistake never shows a traceback. Raise the most specific class; the message is what the user reads.
"""

from __future__ import annotations


class MailsortError(Exception):
    """Base class. `exit_code` is what the CLI returns for it."""

    exit_code = 1


class ConfigError(MailsortError):
    """The config file (or a command-line value) is wrong: the user must fix something."""

    exit_code = 2


class UsageError(MailsortError):
    """Bad input on the command line or a bad input file."""

    exit_code = 2


class ServerError(MailsortError):
    """An IMAP or SMTP server failed, refused us, or could not be reached."""

    exit_code = 1


class ModelError(MailsortError):
    """A model file is missing, corrupt, tampered with, or built by incompatible libraries."""

    exit_code = 1


class StateError(MailsortError):
    """The state database is unusable (locked, newer schema, corrupt)."""

    exit_code = 1
