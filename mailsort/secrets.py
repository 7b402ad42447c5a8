"""Passwords, fetched at the moment they are needed and never stored, logged or echoed.

The config names a *source* (an environment variable, a command such as `pass show mail/work`, or the
system keyring), never the password itself. Failures are `ConfigError`s that name the config key and
say how to fix it; the output of a failing command is not repeated, since it may contain the secret.
"""

from __future__ import annotations

import os
import shlex
import subprocess

from .config import ServerConfig
from .errors import ConfigError

KEYRING_SERVICE = "mailsort"
COMMAND_TIMEOUT = 60  # seconds; a password manager may ask for a passphrase


def password_for(server: ServerConfig, where: str = "") -> str | None:
    """The password for `server`, or None when no source is configured (e.g. a local relay without AUTH).

    `where` prefixes error messages (e.g. "account 'work' smtp.") so the user finds the key."""
    if server.password_env:
        value = os.environ.get(server.password_env)
        if not value:
            raise ConfigError(f"{where}password_env: the environment variable {server.password_env} is not set "
                              "(or is empty)")
        return value
    if server.password_command:
        return _from_command(server.password_command, where)
    if server.password_keyring:
        return _from_keyring(server.username, where)
    return None


def _from_command(command: str, where: str) -> str:
    key = f"{where}password_command"
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise ConfigError(f"{key}: cannot split the command into words ({exc})") from None
    if not argv:
        raise ConfigError(f"{key}: the command is empty")
    try:
        result = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=COMMAND_TIMEOUT,
                                check=False)
    except FileNotFoundError:
        raise ConfigError(f"{key}: command not found: {argv[0]}") from None
    except subprocess.TimeoutExpired:
        raise ConfigError(f"{key}: the command did not finish within {COMMAND_TIMEOUT} s") from None
    except OSError as exc:
        raise ConfigError(f"{key}: cannot run {argv[0]} ({exc.strerror})") from None
    if result.returncode != 0:
        raise ConfigError(f"{key}: the command failed with exit status {result.returncode} "
                          "(its output is not shown: it may contain the password)")
    try:
        lines = result.stdout.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise ConfigError(f"{key}: the command's output is not UTF-8 text") from None
    password = lines[0] if lines else ""
    if not password:
        raise ConfigError(f"{key}: the command printed nothing on its first line")
    return password


def _from_keyring(username: str | None, where: str) -> str:
    key = f"{where}password_keyring"
    if not username:
        raise ConfigError(f"{key}: the keyring is looked up by username, but no username is set")
    try:
        import keyring
        from keyring.errors import KeyringError
    except ImportError:
        raise ConfigError(f"{key}: the 'keyring' package is not installed (pip install 'mailsort[keyring]')") from None
    try:
        password = keyring.get_password(KEYRING_SERVICE, username)
    except KeyringError as exc:
        raise ConfigError(f"{key}: the system keyring failed ({type(exc).__name__})") from None
    if not password:
        raise ConfigError(f"{key}: no password for {username!r} in the keyring; store it with "
                          f"`keyring set {KEYRING_SERVICE} {username}`")
    return password
