"""`mailsort run`: stay connected, sort mail as it arrives, and keep the calendar's appointments.

Per account, one *syncer* thread runs sync passes — the very same `sync_account` as `mailsort sync` —
and per watched folder one *watcher* thread holds an IMAP connection in IDLE (when the server offers
IDLE) and wakes the syncer when the server announces new mail (`* n EXISTS`). Without news the syncer
still wakes up on its own, at the earliest of:

- the periodic interval (`--interval`, 300 s by default), a safety net for servers without IDLE;
- the next opening of the working calendar, so the *Later* folder goes back to INBOX on time;
- the send time of the next queued reply, so an after-hours reply leaves at the opening, not minutes
  later.

`next_wake()` is that choice, as a pure function. Connections that drop are re-opened with an
exponential back-off (`backoff_delay()`), and every thread catches its own failures: one account that
cannot connect never stops another. SIGTERM / SIGINT call `Daemon.stop()`: a pass that is running
finishes, watchers leave IDLE with DONE and log out, the state database is closed, exit status 0.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable, Sequence

from .calendar import NeverOpenError, WorkCalendar
from .config import AccountConfig, Config

log = logging.getLogger(__name__)

DEFAULT_INTERVAL = 300.0  # seconds between periodic passes
IDLE_RENEW = 25 * 60.0  # re-issue IDLE well before the 29 minutes of RFC 2177
POLL_SECONDS = 1.0  # how long one IDLE poll blocks: bounds the reaction time to stop()
MAX_NAP = 30.0  # the syncer re-reads the wall clock at least this often (suspend, clock changes)
BACKOFF_BASE = 2.0
BACKOFF_CAP = 300.0


# ------------------------------------------------------------------------------------ pure timing


@dataclass(frozen=True)
class Wake:
    """When the next pass is due, and why (for the log)."""

    at: datetime
    reason: str  # "interval" | "opening" | "send"


def next_wake(now: datetime, calendar: WorkCalendar, next_send: datetime | None,
              interval: float | timedelta = DEFAULT_INTERVAL) -> Wake:
    """The moment of the next periodic pass after a pass that ended at `now`.

    The earliest of `now + interval`, the next opening strictly after `now` (a pass at the opening
    moves *Later* back and sends what was queued for it), and `next_send`, the send time of the next
    queued reply, when it lies in the future. A send time already past is ignored: the pass that just
    ran would have sent it, so it is waiting for a retry back-off (which `next_send` includes) or was
    held back for a reason; waking for it again at once would only spin.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("next_wake needs an aware datetime")
    step = interval if isinstance(interval, timedelta) else timedelta(seconds=float(interval))
    if step <= timedelta(0):
        raise ValueError("the interval must be positive")
    best = Wake(now + step, "interval")
    try:
        opening = calendar.next_opening(now + timedelta(microseconds=1))
    except NeverOpenError:
        opening = None
    if opening is not None and opening < best.at:
        best = Wake(opening, "opening")
    if next_send is not None and now < next_send < best.at:
        best = Wake(next_send, "send")
    return best


def backoff_delay(failures: int, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP) -> float:
    """Seconds to wait after `failures` consecutive failures: base, 2·base, 4·base, … up to `cap`."""
    if failures <= 0:
        return 0.0
    return min(cap, base * (2 ** min(failures - 1, 30)))


def next_send_time(entries: Iterable[Any]) -> datetime | None:
    """The earliest moment a queued outbox entry may go out: its send_at, or its retry time if later."""
    times = []
    for entry in entries:
        if getattr(entry, "state", "queued") != "queued":
            continue
        at = entry.send_at
        retry = getattr(entry, "next_try_at", None)
        if retry is not None and retry > at:
            at = retry
        times.append(at)
    return min(times) if times else None


def new_mail(responses: Iterable[bytes]) -> bool:
    """Do these untagged IDLE responses announce new messages (`* 12 EXISTS`)?"""
    for line in responses:
        if isinstance(line, (bytes, bytearray)) and line.upper().rstrip().endswith(b" EXISTS"):
            return True
    return False


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


# ------------------------------------------------------------------------------------ the daemon


SyncFunction = Callable[..., Any]


class Daemon:
    """Runs until `stop()`; `run()` blocks and returns 0 after a clean shutdown."""

    def __init__(self, config: Config, accounts: Sequence[AccountConfig] | None = None, *,
                 interval: float = DEFAULT_INTERVAL, sync: SyncFunction | None = None,
                 classifier_factory: Callable[[], Any] | None = None,
                 session_factory: Callable[[AccountConfig], Any] | None = None,
                 store_factory: Callable[[], Any] | None = None, clock: Callable[[], datetime] = utcnow,
                 idle: bool = True, poll_seconds: float = POLL_SECONDS, backoff_base: float = BACKOFF_BASE,
                 on_pass: Callable[[AccountConfig, Any], None] | None = None):
        self.config = config
        self.accounts = tuple(accounts if accounts is not None else config.accounts)
        self.interval = float(interval)
        self.calendar = WorkCalendar.from_config(config.calendar)
        self.clock = clock
        self.idle = idle
        self.poll_seconds = poll_seconds
        self.backoff_base = backoff_base
        self.on_pass = on_pass
        self._sync = sync
        self._classifier_factory = classifier_factory or _shared_classifier(config)
        self._session_factory = session_factory
        self._store_factory = store_factory or _store_factory(config)
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self.triggers: dict[str, threading.Event] = {}

    # ---------------------------------------------------------------------------- lifecycle

    def start(self) -> None:
        # Open the state database once before the threads do: it is created (or migrated) here, not by
        # several threads at the same time. Raises StateError at once when it is unusable.
        self._store_factory().close()
        for account in self.accounts:
            trigger = threading.Event()
            self.triggers[account.name] = trigger
            syncer = threading.Thread(target=self._guard, args=(self._syncer, account, trigger),
                                      name=f"sync-{account.name}", daemon=True)
            self.threads.append(syncer)
            if self.idle:
                for folder in account.folders:
                    watcher = threading.Thread(target=self._guard, args=(self._watcher, account, trigger, folder),
                                               name=f"idle-{account.name}-{folder}", daemon=True)
                    self.threads.append(watcher)
        for thread in self.threads:
            thread.start()
        log.info("mailsort run: %d account(s); periodic pass every %.0fs; IDLE %s", len(self.accounts),
                 self.interval, "on" if self.idle else "off")

    def stop(self) -> None:
        """Ask every thread to finish (a running pass completes first)."""
        if not self.stopping.is_set():
            log.info("stopping: finishing the current pass, leaving IDLE, logging out")
        self.stopping.set()
        for trigger in self.triggers.values():
            trigger.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for every thread to end; True when they all did."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self.threads:
            while thread.is_alive():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                thread.join(0.5 if left is None else min(0.5, left))  # short joins: signals get handled
        return True

    def run(self) -> int:
        self.start()
        try:
            while not self.stopping.wait(0.5):
                pass
        finally:
            self.stop()
            self.wait()
        log.info("stopped")
        return 0

    def _guard(self, target: Callable[..., None], *args: Any) -> None:
        """A thread's last line of defence: log, back off, start over; never take the process (or
        another account) down. A target that returns normally is done."""
        crashes = 0
        while not self.stopping.is_set():
            try:
                target(*args)
                return
            except Exception:  # noqa: BLE001 - a thread must not die silently
                crashes += 1
                delay = backoff_delay(crashes, self.backoff_base)
                log.exception("%s crashed; starting it again in %.0fs", threading.current_thread().name, delay)
                self.stopping.wait(delay)

    # ---------------------------------------------------------------------------- syncer

    def _syncer(self, account: AccountConfig, trigger: threading.Event) -> None:
        store = self._store_factory()
        try:
            failures = 0
            due = self.clock()  # a first pass at start-up
            why = "start"
            while not self.stopping.is_set():
                now = self.clock()
                if trigger.is_set() or now >= due:
                    trigger.clear()
                    ok = self._pass(account, store, now, why)
                    failures = 0 if ok else failures + 1
                    if self.stopping.is_set():
                        break
                    after = self.clock()
                    wake = next_wake(after, self.calendar, self._next_send(store, account), self.interval)
                    due, why = wake.at, wake.reason
                    if failures:
                        retry = after + timedelta(seconds=backoff_delay(failures, self.backoff_base))
                        if retry < due:
                            due, why = retry, f"retry after failure {failures}"
                    log.debug("%s: next pass at %s (%s)", account.name, due.isoformat(timespec="seconds"), why)
                nap = min(MAX_NAP, max(0.0, (due - self.clock()).total_seconds()))
                if trigger.wait(nap):
                    why = "new mail"
        finally:
            store.close()

    def _pass(self, account: AccountConfig, store: Any, now: datetime, why: str) -> bool:
        started = time.monotonic()
        try:
            report = self._run_sync(account, store, now)
        except Exception as exc:  # noqa: BLE001 - any failure: log it, back off, try again
            log.error("%s: sync pass failed (%s): %s", account.name, why, exc)
            log.debug("%s: sync pass failure", account.name, exc_info=True)
            return False
        log.info("%s: pass (%s) in %.1fs: %s", account.name, why, time.monotonic() - started, _summary(report))
        if self.on_pass is not None:
            self.on_pass(account, report)
        errors = getattr(report, "errors", None)
        return not errors

    def _run_sync(self, account: AccountConfig, store: Any, now: datetime) -> Any:
        if self._sync is not None:
            return self._sync(self.config, account, store=store, now=now, classifier_factory=self._classifier_factory)
        from .sync import sync_account

        return sync_account(self.config, account, store=store, classifier_factory=self._classifier_factory, now=now)

    def _next_send(self, store: Any, account: AccountConfig) -> datetime | None:
        try:
            return next_send_time(store.outbox(account.name, states=("queued",)))
        except Exception as exc:  # noqa: BLE001 - a timing hint only; the interval still applies
            log.debug("%s: cannot read the outbox: %s", account.name, exc)
            return None

    # ---------------------------------------------------------------------------- watcher

    def _open(self, account: AccountConfig) -> Any:
        if self._session_factory is not None:
            return self._session_factory(account)
        from .imap import open_session

        return open_session(account, readonly=True)

    def _watcher(self, account: AccountConfig, trigger: threading.Event, folder: str) -> None:
        """Hold `folder` in IDLE; set `trigger` on new mail. Reconnects with back-off; ends on stop()."""
        failures = 0
        while not self.stopping.is_set():
            session = None
            try:
                session = self._open(account)
                if "IDLE" not in session.capabilities:
                    log.warning("%s: the server does not offer IDLE; %s is checked every %.0fs", account.name,
                                folder, self.interval)
                    return
                box = session.box
                box.folder.set(folder, readonly=True)  # EXAMINE: the watcher never changes anything
                if failures:
                    log.warning("%s: IDLE on %s: reconnected", account.name, folder)
                    trigger.set()  # mail may have arrived while we were away
                failures = 0
                log.info("%s: IDLE on %s", account.name, folder)
                while not self.stopping.is_set():
                    if self._idle_once(box, trigger):
                        trigger.set()
            except Exception as exc:  # noqa: BLE001 - connection trouble of any kind: back off, reconnect
                if self.stopping.is_set():
                    break
                failures += 1
                delay = backoff_delay(failures, self.backoff_base)
                log.warning("%s: IDLE on %s lost (%s); reconnecting in %.0fs", account.name, folder, exc, delay)
                self.stopping.wait(delay)
            finally:
                if session is not None:
                    _close(session)

    def _idle_once(self, box: Any, trigger: threading.Event) -> bool:
        """One IDLE command: poll until stop, renewal time, or a dead connection; then DONE.
        Returns True when new mail was announced at the very end (in the responses to DONE)."""
        box.idle.start()
        started = time.monotonic()
        suspicious = 0
        try:
            while not self.stopping.is_set() and time.monotonic() - started < IDLE_RENEW:
                t0 = time.monotonic()
                responses = box.idle.poll(timeout=self.poll_seconds)
                if any(line.upper().startswith(b"* BYE") for line in responses if isinstance(line, bytes)):
                    raise ConnectionError("the server said BYE")
                if new_mail(responses):
                    trigger.set()
                if not responses and time.monotonic() - t0 < self.poll_seconds / 2:
                    suspicious += 1  # readable yet nothing to read: the peer closed the connection
                    if suspicious >= 3:
                        raise ConnectionError("connection closed by the server")
                else:
                    suspicious = 0
        finally:
            result = box.idle.stop()  # DONE; raises on a dead connection (handled by the watcher)
        lines = result[1] if isinstance(result, tuple) and len(result) > 1 else []
        try:
            box.client.untagged_responses.clear()  # imaplib keeps them forever otherwise
        except AttributeError:
            pass
        return new_mail(lines)


def _close(session: Any) -> None:
    try:
        session.close()  # LOGOUT
    except Exception as exc:  # noqa: BLE001 - the connection may already be gone
        log.debug("closing an IMAP session: %s", exc)


def _summary(report: Any) -> str:
    parts = []
    for name in ("fetched", "critical", "routine", "moved", "labelled", "queued", "sent", "skipped"):
        value = getattr(report, name, None)
        if isinstance(value, (list, tuple, set)):
            value = len(value)
        if value:
            parts.append(f"{name} {value}")
    errors = getattr(report, "errors", None) or []
    if errors:
        parts.append("errors: " + "; ".join(str(e) for e in errors))
    return ", ".join(parts) or "nothing new"


def _store_factory(config: Config) -> Callable[[], Any]:
    def factory() -> Any:
        from .store import Store

        return Store(config.state_path)

    return factory


def _shared_classifier(config: Config) -> Callable[[], Any]:
    """One classifier for every account, loaded on first use (thread-safe)."""
    lock = threading.Lock()
    cache: list[Any] = []

    def factory() -> Any:
        with lock:
            if not cache:
                from .classify import default_model_path, load_classifier

                cache.append(load_classifier(config.model_path or default_model_path()))
            return cache[0]

    return factory


def install_signal_handlers(daemon: Daemon) -> None:
    """SIGTERM and SIGINT stop the daemon cleanly (call from the main thread)."""
    import signal

    def handler(signum: int, frame: Any) -> None:
        log.info("received %s", signal.Signals(signum).name)
        daemon.stop()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
