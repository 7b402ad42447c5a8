"""Throwaway real servers for the tests: Dovecot (IMAP) and aiosmtpd (SMTP), on 127.0.0.1 only.

Used by tests/conftest.py and by the benchmark scripts, so the benchmarks measure the same servers
the tests prove things on.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from email import message_from_bytes
from pathlib import Path

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {HOST}:{port} after {timeout}s")


@dataclass
class Dovecot:
    """A running Dovecot with a passwd-file we can add users to while it runs."""

    root: Path
    port: int
    capability: str | None = None
    users: dict[str, str] = field(default_factory=dict)

    @property
    def base_dir(self) -> Path:
        return self.root / "run"

    def add_user(self, name: str, password: str = "secret") -> tuple[str, str]:
        """Dovecot re-reads the passwd-file when it changes, so new users work at once."""
        self.users[name] = password
        lines = "".join(f"{u}:{{PLAIN}}{p}::::::\n" for u, p in self.users.items())
        passwd = self.root / "passwd"
        tmp = passwd.with_suffix(".tmp")
        tmp.write_text(lines)
        os.replace(tmp, passwd)
        # mtime granularity: make sure the change is seen even within the same second
        future = time.time() + len(self.users)
        os.utime(passwd, (future, future))
        return name, password

    def maildir(self, user: str) -> Path:
        return self.root / "mail" / user

    def stop(self) -> None:
        pid_file = self.base_dir / "master.pid"
        if pid_file.exists():
            try:
                os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)
            except (ProcessLookupError, ValueError):
                pass
            deadline = time.monotonic() + 5
            while pid_file.exists() and time.monotonic() < deadline:
                time.sleep(0.05)


def start_dovecot(root: Path | None = None, capability: str | None = None) -> Dovecot:
    """Start Dovecot from a generated config (settings from DESIGN.md). `capability` replaces the
    advertised capability list, e.g. to play a server without MOVE."""
    if not os.path.exists(DOVECOT):
        raise RuntimeError("dovecot is not installed (scripts/test installs dovecot-imapd)")
    root = Path(root or tempfile.mkdtemp(prefix="mailsort-dovecot-"))
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)
    for parent in root.parents:  # the mail processes (nobody) must be able to traverse
        if str(parent).startswith(tempfile.gettempdir()) and parent != Path(tempfile.gettempdir()):
            os.chmod(parent, 0o755)
    for sub in ("run", "state", "mail", "home"):
        (root / sub).mkdir(exist_ok=True)
    shutil.chown(root / "mail", "nobody", "nogroup")
    shutil.chown(root / "home", "nobody", "nogroup")
    port = free_port()
    dovecot = Dovecot(root, port, capability)
    dovecot.add_user("owner")
    cap_line = f"imap_capability = {capability}\n" if capability else ""
    conf = f"""
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
info_log_path = {root}/dovecot.log
listen = 127.0.0.1
protocols = imap
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
# no auth penalty for loopback: one test logging in a moment too early (a new user is known from the
# next look at the passwd-file) must not slow every other login down to a timeout
login_trusted_networks = 127.0.0.0/8
mail_uid = nobody
mail_gid = nogroup
first_valid_uid = 1
mail_location = maildir:{root}/mail/%u
mail_plugins =
{cap_line}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={root}/home/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  chroot =
}}
service imap-login {{
  chroot =
}}
namespace inbox {{
  inbox = yes
  separator = /
  mailbox Sent {{
    special_use = \\Sent
    auto = subscribe
  }}
  mailbox Drafts {{
    special_use = \\Drafts
    auto = subscribe
  }}
  mailbox Trash {{
    special_use = \\Trash
  }}
}}
protocol imap {{
  mail_max_userip_connections = 100
  imap_idle_notify_interval = 1 secs
}}
"""
    (root / "dovecot.conf").write_text(conf)
    # Dovecot daemonizes and its children inherit our descriptors: no pipes, or run() never returns.
    with open(root / "start.log", "w") as start_log:
        result = subprocess.run([DOVECOT, "-c", str(root / "dovecot.conf")], stdin=subprocess.DEVNULL,
                                stdout=start_log, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise RuntimeError(f"dovecot failed to start: {(root / 'start.log').read_text().strip()}")
    wait_for_port(port)
    return dovecot


# ------------------------------------------------------------------------------------- SMTP


@dataclass
class SmtpSink:
    """aiosmtpd on loopback that keeps every message it receives."""

    port: int
    messages: list = field(default_factory=list)
    controller: object = None
    fail_next: int = 0  # answer this many DATA commands with a 451 first (to test retries)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()

    def received(self):
        with self.lock:
            return [message_from_bytes(m["data"]) for m in self.messages]


def start_smtp() -> SmtpSink:
    from aiosmtpd.controller import Controller

    sink = SmtpSink(port=free_port())

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            with sink.lock:
                if sink.fail_next > 0:
                    sink.fail_next -= 1
                    return "451 try again later"
                sink.messages.append({"from": envelope.mail_from, "to": list(envelope.rcpt_tos),
                                      "data": envelope.original_content or envelope.content})
            return "250 OK"

    controller = Controller(Handler(), hostname=HOST, port=sink.port)
    controller.start()
    sink.controller = controller
    return sink
