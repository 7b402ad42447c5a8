"""The `mailsort` command line. Thin by design: parse options, call the library, render the result.

Errors from the library arrive as `MailsortError` subclasses and are turned into one line on stderr and
an exit status in `main()` — 0 success, 1 a failed run, 2 bad usage or bad config — never a traceback
for a user mistake. `--json` prints exactly one JSON document on stdout; logs always go to stderr.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click

from . import __version__
from .config import Config, default_config_path, load_config
from .errors import ConfigError, MailsortError, UsageError

log = logging.getLogger("mailsort")


class Context:
    """What every command gets: where the config is, and the clock (replaced by --now)."""

    def __init__(self, config_path: Path | None, verbose: int):
        self.config_path = config_path
        self.verbose = verbose
        self._config: Config | None = None

    @property
    def path(self) -> Path:
        return self.config_path or default_config_path()

    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(self.path)
        return self._config


pass_ctx = click.make_pass_decorator(Context)


def parse_now(value: str | None) -> datetime:
    """`--now` value -> aware datetime; without it, the real clock (the only clock read in mailsort)."""
    if value is None:
        return datetime.now(timezone.utc)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(f"--now: {value!r} is not an ISO 8601 time such as 2026-11-27T18:00:00+01:00") from None
    if parsed.tzinfo is None:
        raise UsageError(f"--now: {value!r} has no UTC offset; write it like 2026-11-27T18:00:00+01:00")
    return parsed


NOW_OPTION = click.option(
    "--now",
    "now_text",
    metavar="ISO",
    help="Pretend it is this moment (ISO 8601 with offset, e.g. 2026-11-27T18:00:00+01:00). "
    "Replaces the clock everywhere in this run.",
)
JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout, nothing else.")


def emit_json(document: Any) -> None:
    click.echo(json.dumps(document, ensure_ascii=False, indent=2, default=str))


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Config file. Default: $MAILSORT_CONFIG, else config.toml in the user config directory.",
)
@click.option("-v", "--verbose", count=True, help="More detail on stderr (-vv for debugging).")
@click.version_option(__version__, prog_name="mailsort")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None, verbose: int) -> None:
    """mailsort: sort client mail into critical and routine, keep your working hours,
    and answer after-hours mail politely in the sender's language.

    Start with `mailsort demo` (no account needed), then `mailsort init`,
    `mailsort check-config --connect` and `mailsort sync --dry-run`.
    """
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    ctx.obj = Context(config_path, verbose)


# ------------------------------------------------------------------------------------- config


@cli.command()
@click.argument("path", required=False, type=click.Path(dir_okay=False, path_type=Path))
@pass_ctx
def init(ctx: Context, path: Path | None) -> None:
    """Write a commented example config to PATH (default: the config path). Never overwrites."""
    from .example_config import write_example

    target = path or ctx.path
    write_example(target)
    click.echo(f"wrote {target}; edit it, then run: mailsort --config {target} check-config --connect")


@cli.command("check-config")
@click.option("--connect", is_flag=True, help="Also log in to every account and show the server's capabilities.")
@pass_ctx
def check_config(ctx: Context, connect: bool) -> int:
    """Validate the config file; exit 2 with a one-line reason when something is wrong."""
    config = ctx.config()
    click.echo(f"{ctx.path}: ok ({len(config.accounts)} account(s), time zone {config.calendar.timezone})")
    if connect:
        from .imap import probe_account

        failed = False
        for account in config.accounts:
            try:
                info = probe_account(account, label_mode=config.labels.mode)
            except MailsortError as exc:
                failed = True
                click.echo(f"  {account.name}: FAILED: {exc}", err=True)
                continue
            click.echo(f"  {account.name}: logged in to {account.imap.host}; "
                       f"label mode {_label_mode_note(config, account.name, info['label_mode'])}; "
                       f"capabilities: {' '.join(info['capabilities'])}")
        return 1 if failed else 0
    return 0


def _label_mode_note(config: Config, account: str, probed: str) -> str:
    """The label mode, and where `auto` got it: the last sync's read-write look, or a guess (a read-only
    look at INBOX shows no keyword permissions: a server that takes keywords may look as if it did not)."""
    if config.labels.mode != "auto":
        return probed
    if config.state_path.exists():
        from .store import Store
        from .sync import META_LABEL_MODE

        with Store(config.state_path) as store:
            found = store.get_meta(account, META_LABEL_MODE)
        if found:
            return f"{found} (auto, as the last sync found)"
    return f"{probed} (auto: a guess from a read-only look; the first sync decides)"


# ------------------------------------------------------------------------------------- calendar


@cli.command()
@NOW_OPTION
@JSON_OPTION
@pass_ctx
def hours(ctx: Context, now_text: str | None, as_json: bool) -> None:
    """Are we open now? When is the next opening, and the next closing?"""
    from .calendar import WorkCalendar

    config = ctx.config()
    calendar = WorkCalendar.from_config(config.calendar)
    now = parse_now(now_text).astimezone(calendar.tz)
    is_open = calendar.is_open(now)
    opening = calendar.next_opening(now)
    closing = calendar.next_closing(now)
    if as_json:
        emit_json({"open": is_open, "next_opening": opening.isoformat(), "next_closing": closing.isoformat(),
                   "timezone": config.calendar.timezone, "now": now.isoformat()})
        return
    state = "open" if is_open else "closed"
    absence = calendar.absence_at(now)
    holiday = calendar.holiday_name(now.date())
    reason = f" (absence: {absence.note or 'away'} until {absence.end})" if absence else (f" ({holiday})" if holiday else "")
    click.echo(f"now:          {now:%a %Y-%m-%d %H:%M %Z} — {state}{reason}")
    click.echo(f"next opening: {opening:%a %Y-%m-%d %H:%M %Z} ({opening.isoformat()})")
    click.echo(f"next closing: {closing:%a %Y-%m-%d %H:%M %Z} ({closing.isoformat()})")


# ------------------------------------------------------------------------------------- sync


@cli.command()
@click.option("--account", "account_names", multiple=True, metavar="NAME",
              help="Only this account (repeatable). Default: every account in the config.")
@click.option("--dry-run", is_flag=True,
              help="Read only: open folders with EXAMINE, change nothing on the server or in the state "
              "database, send nothing; show what would be done to each message.")
@NOW_OPTION
@JSON_OPTION
@pass_ctx
def sync(ctx: Context, account_names: tuple[str, ...], dry_run: bool, now_text: str | None, as_json: bool) -> int:
    """One pass over every account: fetch new mail, classify it, label / flag / move it in bulk, queue
    replies, send those that are due, and at an opening bring the *later* folder back to INBOX.

    Only mail newer than the last pass is fetched (nothing is marked read); a pass with nothing new
    costs one STATUS per folder. Each account is independent: one failing never stops the others,
    but the exit status is then 1. --json prints {"accounts": [{"name", "fetched", "critical",
    "routine", "moved", "labelled", "queued", "sent", "skipped", "errors"}, ...]}; with -v or
    --dry-run each account also lists its "messages".
    """
    from .store import Store
    from .sync import sync_all

    config = ctx.config()
    now = parse_now(now_text)
    if not config.accounts:
        raise ConfigError(f"{ctx.path}: no [[account]] to sync")
    for name in account_names:
        config.account(name)  # unknown names are a usage error before anything connects

    def classifier_factory():
        from .classify import default_model_path, load_classifier

        return load_classifier(config.model_path or default_model_path())

    details = dry_run or ctx.verbose > 0
    progress = _SyncProgress() if sys.stderr.isatty() else None
    # a dry run writes nothing, not even a new state file
    state = config.state_path if not dry_run or config.state_path.exists() else ":memory:"
    try:
        with Store(state) as store:
            reports = sync_all(config, store=store, classifier_factory=classifier_factory, now=now, dry_run=dry_run,
                               progress=progress, accounts=account_names or None, details=details)
    finally:
        if progress is not None:
            progress.close()
    if as_json:
        emit_json({"accounts": [r.to_json(details=details) for r in reports]})
    else:
        for report in reports:
            # colour only reaches a terminal: click strips it from pipes and files
            click.secho(report.summary(), fg="red" if report.errors else None, bold=bool(report.critical))
            for d in report.details if details else ():
                acts = ", ".join(_action_text(a) for a in d.actions) or "no action"
                p = f" p={d.p_critical:.2f}" if d.p_critical is not None else ""
                click.secho(f"  {d.folder} #{d.uid} {d.sender or '?'}: {d.subject[:60]!r} -> {d.label}{p}: {acts}"
                            + (f" ({d.note})" if d.note else ""), fg="red" if d.label == "critical" else None)
    return 0 if all(r.ok for r in reports) else 1


def _action_text(action: dict) -> str:
    if action.get("type") == "reply":
        return f"reply {action.get('template')}.{action.get('language')} to {action.get('to')} at {action.get('send_at')}"
    return f"{action.get('type')} {action.get('target', '')}".strip()


class _SyncProgress:
    """A progress bar on stderr for long first syncs (a terminal only; short passes stay quiet)."""

    MIN_TOTAL = 1000

    def __init__(self) -> None:
        self.bar: Any = None
        self.key: tuple[str, str] | None = None
        self.shown = 0

    def __call__(self, account: str, folder: str, done: int, total: int) -> None:
        if (account, folder) != self.key:
            self.close()
            self.key = (account, folder)
            if total >= self.MIN_TOTAL:
                self.bar = click.progressbar(length=total, label=f"{account} {folder}", file=sys.stderr)
                self.bar.__enter__()
        if self.bar is not None and done > self.shown:
            self.bar.update(done - self.shown)
            self.shown = done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
        self.bar, self.shown = None, 0


# ------------------------------------------------------------------------------------- explain and queue


@cli.command("explain")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path))
@click.option("--account", "account_name", metavar="NAME",
              help="Decide as this account (its own addresses, its reply history). Default: the first account.")
@click.option("--label", type=click.Choice(["critical", "routine"]),
              help="Use this verdict instead of the classifier (no model needed).")
@click.option("--model", "model_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Model file. Default: [classifier] model in the config, else the shipped model.")
@NOW_OPTION
@JSON_OPTION
@pass_ctx
def explain_command(ctx: Context, file: Path, account_name: str | None, label: str | None, model_path: Path | None,
                    now_text: str | None, as_json: bool) -> None:
    """The whole decision for one .eml FILE ('-' for standard input), and why: the verdict and the
    words behind it, open or closed, the RFC 3834 guard, the actions, and the replies that would be
    sent, rendered. Changes nothing. Uses the state database's reply history when it exists.

    --json prints {"label", "p_critical", "language", "sender", "open_now", "auto_reply": {"allowed",
    "reason"}, "actions": [...], "client", "top_terms": [...], "situation", "replies": [...]}.
    """
    from .explain import explain, render_text
    from .store import Store

    config = ctx.config()
    now = parse_now(now_text)
    raw = _read_input(file)

    def classifier_factory():
        from .classify import default_model_path, load_classifier

        return load_classifier(model_path or config.model_path or default_model_path())

    kwargs = dict(now=now, account=account_name, label=label, classifier_factory=classifier_factory, name=str(file))
    if config.state_path.exists():
        with Store(config.state_path) as store:
            doc = explain(config, raw, store=store, **kwargs)
    else:
        doc = explain(config, raw, **kwargs)
    if as_json:
        emit_json(doc)
    else:
        click.echo(render_text(doc))


def _read_input(file: Path) -> bytes:
    if str(file) == "-":
        return sys.stdin.buffer.read()
    try:
        return file.read_bytes()
    except OSError as exc:
        raise UsageError(f"{file}: cannot read ({exc.strerror})") from None


@cli.group()
def queue() -> None:
    """The outbox of automatic replies: list it, cancel a reply, send what is due."""


@queue.command("list")
@click.option("--account", "account_name", metavar="NAME", help="Only this account's replies.")
@click.option("--state", "states", multiple=True,
              type=click.Choice(["queued", "sending", "sent", "failed", "cancelled"]),
              help="Only replies in this state (repeatable). Default: all.")
@JSON_OPTION
@pass_ctx
def queue_list(ctx: Context, account_name: str | None, states: tuple[str, ...], as_json: bool) -> None:
    """Every reply in the outbox: id, state, when it is (or was) due, to whom, which template, and the
    last error. --json prints {"entries": [{"id", "account", "state", "template", "recipient",
    "send_at", "attempts", "next_try_at", "last_error", "sent_at", "message_id", "in_reply_to"}]}."""
    from .store import OUTBOX_STATES, Store

    config = ctx.config()
    if account_name:
        config.account(account_name)
    entries = []
    if config.state_path.exists():
        with Store(config.state_path) as store:
            entries = store.outbox(account_name, states or OUTBOX_STATES)
    if as_json:
        emit_json({"entries": [_entry_json(e) for e in entries]})
        return
    if not entries:
        click.echo("the outbox is empty")
    for e in entries:
        error = f" — {e.last_error}" if e.last_error and e.state != "sent" else ""
        click.echo(f"{e.id:>5} {e.state:<9} {e.send_at.isoformat()} {e.account}: {e.template} to {e.recipient}"
                   f" (attempts {e.attempts}){error}")


def _entry_json(e) -> dict[str, Any]:
    return {"id": e.id, "account": e.account, "state": e.state, "template": e.template, "recipient": e.recipient,
            "send_at": e.send_at.isoformat(), "attempts": e.attempts,
            "next_try_at": e.next_try_at.isoformat() if e.next_try_at else None, "last_error": e.last_error,
            "sent_at": e.sent_at.isoformat() if e.sent_at else None, "message_id": e.message_id,
            "in_reply_to": e.in_reply_to}


@queue.command("cancel")
@click.argument("entry_id", metavar="ID", type=int)
@pass_ctx
def queue_cancel(ctx: Context, entry_id: int) -> None:
    """Cancel reply ID (see `queue list`) before it goes out; a failed reply can be cancelled too."""
    from .store import Store

    config = ctx.config()
    if not config.state_path.exists():
        raise UsageError(f"no reply {entry_id}: there is no state database yet ({config.state_path})")
    with Store(config.state_path) as store:
        if not store.cancel(entry_id):
            entry = store.entry(entry_id)
            why = f"it is {entry.state}" if entry else "there is no such reply"
            raise UsageError(f"cannot cancel reply {entry_id}: {why}")
    click.echo(f"cancelled reply {entry_id}")


@queue.command("send-due")
@click.option("--account", "account_names", multiple=True, metavar="NAME",
              help="Only this account (repeatable). Default: every account.")
@click.option("--dry-run", is_flag=True, help="Show what is due; send, file and change nothing.")
@NOW_OPTION
@JSON_OPTION
@pass_ctx
def queue_send_due(ctx: Context, account_names: tuple[str, ...], dry_run: bool, now_text: str | None,
                   as_json: bool) -> int:
    """Send the replies whose time has come (sync does this too) and file them in Sent — or, with
    replies.mode = "draft", only put them in Drafts. Failed sends are retried with back-off; after
    5 attempts, or when the server refuses for good, the reply is marked failed. Exit 1 on any error.
    --json prints {"accounts": [{"name", "sent", "failed", "skipped", "recovered", "errors"}]}."""
    from .smtp import send_for_account
    from .store import Store

    config = ctx.config()
    now = parse_now(now_text)
    accounts = [config.account(n) for n in account_names] if account_names else list(config.accounts)
    results = []
    if config.state_path.exists():
        with Store(config.state_path) as store:
            for account in accounts:
                try:
                    report = send_for_account(config, account, store=store, now=now, dry_run=dry_run)
                    results.append({"name": account.name, "sent": report.sent, "failed": report.failed,
                                    "skipped": report.skipped, "recovered": report.recovered,
                                    "errors": list(report.errors), "ids": list(report.ids)})
                except MailsortError as exc:
                    results.append({"name": account.name, "sent": 0, "failed": 0, "skipped": 0, "recovered": 0,
                                    "errors": [str(exc)], "ids": []})
    if as_json:
        emit_json({"accounts": results})
    else:
        for r in results:
            verb = "due" if dry_run else "sent"
            click.echo(f"{r['name']}: {len(r['ids']) if dry_run else r['sent']} {verb}, {r['failed']} failed, "
                       f"{r['skipped']} waiting" + (f", {r['recovered']} recovered" if r["recovered"] else ""))
            for error in r["errors"]:
                click.echo(f"  error: {error}", err=True)
    return 1 if any(r["errors"] or r["failed"] for r in results) else 0


# ------------------------------------------------------------------------------------- demo and run


@cli.command()
@click.option("--keep", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="Keep the demo's config, state database and sent mail in DIR (new or empty) instead of "
              "removing them, e.g. for `mailsort --config DIR/config.toml report`.")
def demo(keep: Path | None) -> int:
    """The whole pipeline on an embedded IMAP server and SMTP sink with sample mail (no account needed).

    Starts an in-memory IMAP server and an SMTP sink on 127.0.0.1, delivers twenty client messages in
    four languages over a Friday, a weekend, a Monday and a public holiday (Europe/Rome, Mon-Fri
    09:00-13:00 and 14:00-18:00), runs the real `sync` pass at each moment, and prints what happened
    to every message and the replies that were sent. Leaves nothing behind unless --keep is given.
    Needs the demo extra: pip install 'mailsort[demo]'.
    """
    from .demo import main as demo_main

    return demo_main(keep, echo=click.echo)


@cli.command()
@click.option("--account", "account_names", multiple=True, metavar="NAME",
              help="Only this account (repeatable). Default: every account in the config.")
@click.option("--interval", type=click.FloatRange(min=1.0), default=300.0, show_default=True, metavar="SECONDS",
              help="Run a pass at least this often, also when IDLE reports nothing.")
@click.option("--no-idle", is_flag=True, help="Do not hold IDLE connections; rely on the periodic pass only.")
@pass_ctx
def run(ctx: Context, account_names: tuple[str, ...], interval: float, no_idle: bool) -> int:
    """Stay connected: sort new mail as it arrives (IMAP IDLE), pass again at every opening of your
    calendar and whenever a queued reply is due, and at least every --interval seconds.

    Each account has its own connection and never stops another. A dropped connection is re-opened with
    back-off. SIGTERM or Ctrl-C stop cleanly: the running pass finishes, IDLE is left with DONE, the
    connections log out, exit status 0. Log lines go to stderr (one per pass).
    """
    from .daemon import Daemon, install_signal_handlers

    config = ctx.config()
    accounts = [config.account(name) for name in account_names] if account_names else list(config.accounts)
    if not accounts:
        raise ConfigError(f"{ctx.path}: no [[account]] to watch")
    if ctx.verbose == 0:
        logging.getLogger("mailsort.daemon").setLevel(logging.INFO)
    daemon = Daemon(config, accounts, interval=interval, idle=not no_idle)
    install_signal_handlers(daemon)
    return daemon.run()


# ------------------------------------------------------------------------------------- client workflows


def _handled_messages(config: Config, account: str | None, since: datetime | None = None) -> list:
    """The handled messages from the state database; none (and no new file) before the first sync."""
    from .store import Store

    if account is not None:
        config.account(account)
    if not config.state_path.exists():
        log.warning("no state database at %s yet: run `mailsort sync` first", config.state_path)
        return []
    with Store(config.state_path) as store:
        return store.messages(account, since)


@cli.command("due")
@click.option("--account", metavar="NAME", help="Only this account. Default: all of them.")
@click.option("--all", "everything", is_flag=True,
              help="Mail of any age. Default: what the sync keeps track of, mail of the last 30 days.")
@NOW_OPTION
@JSON_OPTION
@pass_ctx
def due_command(ctx: Context, account: str | None, everything: bool, now_text: str | None, as_json: bool) -> None:
    """Client mail waiting for an answer: overdue, due today, critical still open.

    Each client message is due replies.reply_within_hours working hours after it arrived (only open
    time counts). It counts as answered once a reply naming it (In-Reply-To or References) is in the
    Sent folder, as seen by the last sync. "Due today" runs to the end of today's working time (after
    hours: of the next working day). This is the digest the owner gets at each opening: mail that
    arrived in the last 30 days (--all: any time). --json prints
    {"now", "due_today_until", "overdue": [...], "due_today": [...], "critical_open": [...]}, each item
    {"account", "message_id", "sender", "subject", "label", "client", "arrived_at", "due_at", ...}.
    """
    from .calendar import WorkCalendar
    from .deadlines import TRACK_FOR, classify_due, digest_text, report_json

    config = ctx.config()
    calendar = WorkCalendar.from_config(config.calendar)
    now = parse_now(now_text)
    messages = _handled_messages(config, account, None if everything else now - TRACK_FOR)
    report = classify_due(messages, now, calendar, hours=config.replies.reply_within_hours)
    if as_json:
        emit_json(report_json(report, calendar.tz))
        return
    _, body = digest_text(report, now, calendar.tz)
    click.echo(body, nl=False)


def _absence_lines(absences: tuple) -> list[str]:
    from .config_edit import describe

    if not absences:
        return ["absences: none"]
    return ["absences:"] + [f"  {describe(a)}" for a in absences]


def _apply_config_edit(ctx: Context, old: str, edit: Any, dry_run: bool) -> None:
    """Check the edited config loads, then show the diff (--dry-run) or write it in place atomically."""
    import os
    import tomllib

    from .config import parse_config
    from .config_edit import diff

    path = ctx.path
    try:
        parse_config(tomllib.loads(edit.text), path)
    except (ConfigError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: not changed, the edited config would not load: {exc}") from None
    if dry_run:
        click.echo(diff(old, edit.text, str(path)) or "(no change)", nl=False)
        click.echo(f"\ndry run: {edit.message}; {path} not changed")
    elif edit.text != old:
        target = path.resolve()
        temporary = target.with_name(f".{target.name}.mailsort-tmp")
        try:
            temporary.write_text(edit.text, encoding="utf-8")
            os.chmod(temporary, target.stat().st_mode & 0o7777)
            os.replace(temporary, target)
        except OSError as exc:
            temporary.unlink(missing_ok=True)
            raise UsageError(f"cannot write {path}: {exc}") from None
        click.echo(f"{edit.message}; {path} updated")
    else:
        click.echo(edit.message)
    for line in _absence_lines(edit.absences):
        click.echo(line)


def _config_text(ctx: Context) -> str:
    try:
        return ctx.path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{ctx.path}: no config file here (create one with `mailsort init {ctx.path}`)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{ctx.path}: cannot read the config file ({exc})") from None


@cli.command("away")
@click.argument("start", metavar="START")
@click.argument("end", metavar="END")
@click.option("--note", default="", metavar="TEXT", help="Why, for you (e.g. \"holidays\"); the absence reply may show it.")
@click.option("--dry-run", is_flag=True, help="Show the change to the config file; do not write it.")
@pass_ctx
def away_command(ctx: Context, start: str, end: str, note: str, dry_run: bool) -> None:
    """Add an absence from START to END (dates YYYY-MM-DD, both included) to the config's
    [[calendar.absence]] list, keeping the file's comments and layout.

    While away, client mail gets the absence reply with your return date. An absence that overlaps
    one already in the file is refused. Prints the resulting list of absences.
    """
    from .config_edit import add_absence, parse_date

    old = _config_text(ctx)
    edit = add_absence(old, parse_date(start, "START"), parse_date(end, "END"), note.strip())
    _apply_config_edit(ctx, old, edit, dry_run)


@cli.command("back")
@click.option("--today", "today_text", metavar="DATE", help="Pretend today is DATE (YYYY-MM-DD).")
@NOW_OPTION
@click.option("--dry-run", is_flag=True, help="Show the change to the config file; do not write it.")
@pass_ctx
def back_command(ctx: Context, today_text: str | None, now_text: str | None, dry_run: bool) -> None:
    """Back early: the absence that covers today now ends yesterday (or is removed if it starts
    today). Says what it did and prints the resulting list of absences; with no absence covering
    today nothing changes. "Today" is in the calendar's time zone.
    """
    from .config_edit import end_absence, parse_date

    if today_text and now_text:
        raise UsageError("give --today or --now, not both")
    old = _config_text(ctx)
    if today_text:
        today = parse_date(today_text, "--today")
    else:
        from zoneinfo import ZoneInfo

        today = parse_now(now_text).astimezone(ZoneInfo(ctx.config().calendar.timezone)).date()
    _apply_config_edit(ctx, old, end_absence(old, today), dry_run)


@cli.command("report")
@click.option("--since", "since_text", metavar="DATE", help="Only mail that arrived on or after DATE (YYYY-MM-DD).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("mailsort-report"),
              show_default=True, metavar="DIR", help="Write index.html and the PNG charts here.")
@click.option("--account", metavar="NAME", help="Only this account. Default: all of them.")
@NOW_OPTION
@JSON_OPTION
@pass_ctx
def report_command(ctx: Context, since_text: str | None, out_dir: Path, account: str | None, now_text: str | None,
           as_json: bool) -> None:
    """The after-hours report, from the state database: DIR/index.html with PNG charts.

    A weekday x hour heatmap of client mail (in the calendar's zone), the share that arrived after
    hours, critical versus routine per week, the median time to your first reply (from arrival to
    your first reply in the Sent folder; automatic replies do not count), and missed reply
    deadlines. Needs matplotlib: pip install 'mailsort[report]'. --json also prints the figures.
    """
    from datetime import time as dtime

    from .calendar import WorkCalendar
    from .config_edit import parse_date
    from .report import compute_report, format_hours, format_share, render_report

    config = ctx.config()
    calendar = WorkCalendar.from_config(config.calendar)
    now = parse_now(now_text)
    since = parse_date(since_text, "--since") if since_text else None
    since_at = datetime.combine(since, dtime(0), tzinfo=calendar.tz) if since else None
    messages = _handled_messages(config, account, since_at)
    data = compute_report(messages, calendar, now, hours=config.replies.reply_within_hours, since=since)
    index = render_report(data, out_dir)
    if as_json:
        emit_json({**data.to_json(), "index": str(index)})
        return
    click.echo(f"{data.total} client messages, {data.after_hours} after hours ({format_share(data.after_hours_share)}); "
               f"median time to first reply {format_hours(data.median_reply_hours)}; overdue now {data.overdue_now}")
    click.echo(f"wrote {index}")


# ------------------------------------------------------------------------------------- classifier


MODEL_OPTION = click.option(
    "--model", "model_path", type=click.Path(dir_okay=False, path_type=Path), metavar="PATH",
    help="Model file (.joblib, its card .json beside it). Default: [classifier] model in the config, else "
    "$MAILSORT_MODEL, else your retrained model, else the shipped one.")


def _configured_model(ctx: Context) -> Path | None:
    """[classifier] model from the config, when there is a config file (these commands need none)."""
    return ctx.config().model_path if ctx.path.exists() else None


def _progress(message: str) -> None:
    click.echo(message, err=True)


@cli.command("classify")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, allow_dash=True, path_type=Path))
@MODEL_OPTION
@click.option("--json", "as_json", is_flag=True, help="One JSON object per file and line: "
              '{"file", "label", "p_critical", "language"}.')
@pass_ctx
def classify_command(ctx: Context, files: tuple[Path, ...], model_path: Path | None, as_json: bool) -> None:
    """Classify .eml FILES ('-' for standard input) as critical or routine, in one batch.

    Prints per file the label, the probability that it is critical (the label is critical when it
    reaches the model's threshold) and the detected language. Changes nothing.
    """
    from .classify import default_model_path, load_classifier
    from .classify.commands import classify_files

    if sum(str(f) == "-" for f in files) > 1:
        raise UsageError("'-' (standard input) can be given only once")
    named = [(str(f), _read_input(f)) for f in files]
    classifier = load_classifier(model_path or _configured_model(ctx) or default_model_path())
    for v in classify_files(named, classifier):
        if as_json:
            click.echo(json.dumps(v.to_json(), ensure_ascii=False))
        else:
            click.secho(f"{v.file}: {v.label} (p_critical {v.p_critical:.3f}, language {v.language})",
                        fg="red" if v.label == "critical" else None)


@cli.command("evaluate")
@click.argument("data", type=click.Path(dir_okay=False, path_type=Path), metavar="DATA.jsonl")
@MODEL_OPTION
@click.option("--report", "report_dir", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="Also write PNG charts to DIR: the confusion matrices (all, per language) and the "
              "precision-recall curve. Needs matplotlib: pip install 'mailsort[report]'.")
@JSON_OPTION
@pass_ctx
def evaluate_command(ctx: Context, data: Path, model_path: Path | None, report_dir: Path | None,
                     as_json: bool) -> None:
    """Score a model on labelled DATA.jsonl (one {"id", "lang", "subject", "body", "label", "source"}
    a line): precision, recall and F1 per class, overall and per language, and the confusion matrices.

    --json prints {"n", "macro_f1", "accuracy", "critical": {"precision", "recall", "f1", "support"},
    "routine": {...}, "by_language": {"it": {"n", "macro_f1", "critical_recall", "critical",
    "routine", "confusion", ...}, ...}, "confusion", "threshold"}; confusion matrices are
    [[true routine: predicted routine, predicted critical], [true critical: ...]].
    """
    from .classify import default_model_path, load_classifier, load_examples
    from .classify.commands import render_evaluation
    from .classify.evaluate import evaluate, write_report

    examples = load_examples(data)
    if not examples:
        raise UsageError(f"{data}: no examples")
    path = model_path or _configured_model(ctx) or default_model_path()
    classifier = load_classifier(path)
    report = evaluate(classifier, examples)
    written = write_report(classifier, examples, report_dir) if report_dir else []
    if as_json:
        emit_json({**report, **({"report": [str(p) for p in written]} if report_dir else {})})
        return
    click.echo(render_evaluation(report, str(path), str(data)))
    if written:
        click.echo(f"\nwrote {', '.join(str(p) for p in written)}")


@cli.command("train")
@click.option("--data", "data_paths", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              metavar="FILE", help="Training examples, JSONL (repeatable). Default: training_data/train.jsonl.")
@click.option("--valid", "valid_path", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="The fixed validation split the new model is judged on (never trained on). "
              "Default: training_data/valid.jsonl.")
@click.option("--from-imap", "accounts", multiple=True, metavar="ACCOUNT",
              help="Add the corrections of this account (repeatable): mail you put in the Critical or "
              "Routine folder, or relabelled; they weigh more than the corpus.")
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), metavar="PATH",
              help="Where the model goes. Default: [classifier] model in the config, else $MAILSORT_MODEL, "
              "else your model in the user data directory (never the shipped model unless named here).")
@click.option("--weight", type=click.FloatRange(min=0, min_open=True), default=3.0, show_default=True,
              help="How many corpus examples one of your corrections counts as.")
@click.option("--force", is_flag=True, help="Install the new model even if it is worse than the current one.")
@click.option("--dry-run", is_flag=True, help="Train and judge the model, install nothing.")
@JSON_OPTION
@pass_ctx
def train_command(ctx: Context, data_paths: tuple[Path, ...], valid_path: Path | None, accounts: tuple[str, ...],
                  out: Path | None, weight: float, force: bool, dry_run: bool, as_json: bool) -> int:
    """Train a model and install it only if it is not worse than the current one.

    The new model is judged on the validation split: it must keep critical recall >= 0.95 and a
    macro-F1 at most 1 point below the current model's there; otherwise it is refused (exit 1) and
    the current model stays. The model it replaces is kept beside it as <name>.prev.joblib.
    With --from-imap and no corrections found, nothing is trained (exit 0). Progress goes to stderr.
    --json prints {"accepted", "installed", "dry_run", "reason", "out", "previous", "current",
    "examples": {"base", "user"}, "threshold", "new": {...}, "old": {...}, "corrections": [...]}.
    """
    from .classify import load_examples
    from .classify.commands import default_corpus, train_paths
    from .classify.retrain import train_and_install

    config = ctx.config() if accounts or ctx.path.exists() else None
    target, current = train_paths(out, config.model_path if config else None)
    base = [e for path in (data_paths or (default_corpus("train"),)) for e in load_examples(path)]
    valid = load_examples(valid_path or default_corpus("valid"))
    corrections = []
    if accounts:
        from .corrections import gather_corrections

        corrections = gather_corrections(config, accounts, progress=_progress)
    user = [e for c in corrections for e in c.examples]
    if accounts and not user:
        message = f"no corrections found in {', '.join(accounts)}; the model is unchanged"
        if as_json:
            emit_json({"accepted": False, "installed": False, "dry_run": dry_run, "reason": message,
                       "out": str(target), "corrections": [c.to_json() for c in corrections]})
        else:
            click.echo(message)
        return 0
    _progress(f"training on {len(base)} corpus examples + {len(user)} correction(s); judging on {len(valid)}")
    result = train_and_install(base, valid, user, out=target, current=current, force=force, dry_run=dry_run,
                               user_weight=weight, progress=_progress)
    if as_json:
        emit_json({**result.to_json(), "corrections": [c.to_json() for c in corrections]})
    elif result.installed:
        click.echo(result.outcome.reason)
        kept = result.to_json()["previous"]
        click.echo(f"installed {target}" + (f" (the previous model is kept as {kept})" if kept else ""))
    elif result.outcome.accepted:
        click.echo(result.outcome.reason)
        click.echo(f"dry run: would install {target}")
    else:
        kept = f"the current model {current} stays" if current else "nothing was installed"
        click.echo(f"mailsort: {result.outcome.reason}; {kept}" + ("" if dry_run else " (--force installs it anyway)"),
                   err=True)
    return result.exit_code


# ------------------------------------------------------------------------------------- entry point


def main(argv: list[str] | None = None) -> int:
    """Console entry point: the one place where errors become messages and exit codes."""
    try:
        status = cli.main(args=argv, prog_name="mailsort", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return 2 if isinstance(exc, click.UsageError) else exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except MailsortError as exc:
        click.echo(f"mailsort: error: {exc}", err=True)
        return exc.exit_code
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    except BrokenPipeError:
        return 0
    return status if isinstance(status, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
