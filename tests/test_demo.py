"""`mailsort demo` end to end, as a newcomer runs it: `python -m mailsort demo`, then read what it printed."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from email import message_from_bytes
from email.policy import default as default_policy
from pathlib import Path

import pytest

from mailsort import demo

REPO = Path(__file__).resolve().parents[1]
# The clear-cut emergencies of demo_data/messages.json: outage, payments, hacked, data loss.
CRITICAL_SUBJECTS = ("Gallery page broken?", "СРОЧНО: не проходят оплаты", "сайт показывает рекламу казино",
                     "sito giù", "Todos los datos han desaparecido", "Checkout not working", "Web hackeada")
ROBOT_SUBJECTS = ("URGENT!!! 50% off all plans", "Undelivered Mail Returned to")


def _run(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="200")
    env.pop("MAILSORT_CONFIG", None)
    return subprocess.run([sys.executable, "-m", "mailsort", "demo", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def demo_run() -> subprocess.CompletedProcess:
    return _run()


def _row(output: str, subject: str) -> str:
    rows = [line for line in output.splitlines() if re.match(r"^\s*\d+\s+\w{3} \d\d \d\d:\d\d ", line)
            and subject[:29] in line]
    assert len(rows) == 1, f"no single table row for {subject!r}"
    return rows[0]


def test_demo_exits_cleanly_and_leaves_nothing_behind(demo_run):
    assert demo_run.returncode == 0, demo_run.stdout[-3000:] + demo_run.stderr[-3000:]
    match = re.search(r"config and state in (\S+)", demo_run.stdout)
    assert match, demo_run.stdout[:2000]
    workdir = Path(match.group(1))
    assert "mailsort-demo-" in workdir.name
    assert not workdir.exists()
    assert f"{workdir} removed" in demo_run.stdout
    assert "Traceback" not in demo_run.stderr


def test_demo_plays_every_moment_with_the_real_pipeline(demo_run):
    out = demo_run.stdout
    for moment in ("Fri 2026-12-04 12:00", "Fri 2026-12-04 23:45", "Sat 2026-12-05 20:00", "Sun 2026-12-06 21:00",
                   "Mon 2026-12-07 09:01", "Mon 2026-12-07 20:00", "Tue 2026-12-08 19:00", "Wed 2026-12-09 09:01"):
        line = next((l for l in out.splitlines() if l.startswith(moment)), None)
        assert line is not None, f"no line for {moment}"
        assert "FAILED" not in line and "errors:" not in line, line
    holiday = next(l for l in out.splitlines() if l.startswith("Tue 2026-12-08 19:00"))
    assert "closed" in holiday and "Immacula" in holiday  # the holidays package names the Immacolata
    opening = next(l for l in out.splitlines() if l.startswith("Mon 2026-12-07 09:01"))
    assert re.search(r"\bsent [1-9]", opening) and re.search(r"\breturned [1-9]", opening), opening


def test_all_twenty_messages_are_in_the_table(demo_run):
    rows = [l for l in demo_run.stdout.splitlines() if re.match(r"^\s*\d+\s+\w{3} \d\d \d\d:\d\d ", l)]
    assert len(rows) == 20
    assert not any("not seen" in r for r in rows)
    languages = {r.split()[0]: re.search(r"\s(en|it|es|ru)\s+(CRITICAL|routine)", r) for r in rows}
    assert all(languages.values()), [r for r in rows if not re.search(r"\s(en|it|es|ru)\s+(CRITICAL|routine)", r)]
    assert {m.group(1) for m in languages.values()} == {"en", "it", "es", "ru"}


def test_the_critical_ones_are_marked_critical(demo_run):
    for subject in CRITICAL_SUBJECTS:
        row = _row(demo_run.stdout, subject)
        assert "CRITICAL⚑" in row, row  # labelled and flagged
        p = float(re.search(r"CRITICAL⚑\s+(\d\.\d\d)", row).group(1))
        assert p >= 0.3, row


def test_an_after_hours_reply_goes_out_at_the_monday_opening(demo_run):
    out = demo_run.stdout
    sent_monday = [l for l in out.splitlines() if re.search(r"after_hours\.(en|it|es|ru) queued .*sent Mon 07 09:01", l)]
    assert sent_monday, out
    for row in sent_monday:
        assert "Later → INBOX Mon 07 09:01" in row, row  # and the message came back from Later at that opening
    assert re.search(r"reply in \w\w, received by the SMTP sink during the Mon 07 09:01 pass", out)


def test_one_full_reply_in_each_language(demo_run):
    out = demo_run.stdout
    for lang, greeting in (("en", "Dear"), ("it", "Gentile"), ("es", "Hola"), ("ru", "Здравствуйте")):
        start = out.index(f"── reply in {lang},")
        block = out[start:start + 3000]
        assert "Auto-Submitted: auto-replied" in block
        assert f"Content-Language: {lang}" in block
        assert "Subject: Re: " in block and "In-Reply-To: <demo-" in block
        assert greeting in block, block[:800]
        assert "Giulia Rinaldi — assistenza siti web" in block  # the signature, decoded from QP UTF-8


def test_the_newsletter_and_the_bounce_get_no_reply(demo_run):
    for subject in ROBOT_SUBJECTS:
        row = _row(demo_run.stdout, subject)
        assert "after_hours" not in row and "critical_ack" not in row and "expectations" not in row, row
        assert "sent" not in row.split("INBOX", 1)[-1], row
        assert "none:" in row, row  # the guard's reason is shown


def test_the_summary_line(demo_run):
    last = [l for l in demo_run.stdout.splitlines() if l.startswith("20 messages:")]
    assert len(last) == 1
    match = re.search(r"(\d+) critical, (\d+) routine; (\d+) replies sent, (\d+) still queued", last[0])
    critical, routine, sent, queued = map(int, match.groups())
    assert critical + routine == 20 and critical >= len(CRITICAL_SUBJECTS)
    assert sent >= 10 and queued == 0  # Wednesday's opening sent what the holiday queued


def test_keep_leaves_config_state_and_sent_mail(tmp_path):
    keep = tmp_path / "kept"
    result = _run("--keep", str(keep))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert (keep / "config.toml").is_file()
    with sqlite3.connect(keep / "state.sqlite3") as db:
        assert db.execute("SELECT count(*) FROM messages").fetchone()[0] >= 20
        assert db.execute("SELECT count(*) FROM outbox WHERE state='sent'").fetchone()[0] >= 10
    sent = sorted((keep / "sent").glob("*.eml"))
    assert sent
    languages = {str(message_from_bytes(p.read_bytes(), policy=default_policy).get("Content-Language"))
                 for p in sent}
    assert {"en", "it", "es", "ru"} <= languages
    # the kept state feeds the ordinary commands, `mailsort report` first of all
    report = subprocess.run([sys.executable, "-m", "mailsort", "--config", str(keep / "config.toml"), "report",
                             "--out", str(tmp_path / "report"), "--now", "2026-12-09T12:00:00+01:00", "--json"],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert report.returncode == 0, report.stderr
    assert (tmp_path / "report" / "index.html").is_file()


def test_keep_refuses_a_directory_with_something_in_it(tmp_path):
    (tmp_path / "precious.txt").write_text("do not touch")
    result = _run("--keep", str(tmp_path), timeout=60)
    assert result.returncode == 2
    assert "not empty" in result.stderr
    assert (tmp_path / "precious.txt").read_text() == "do not touch"


def test_ctrl_c_stops_the_servers_and_removes_the_temp_dir():
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "mailsort", "demo"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        workdir = None
        for line in proc.stdout:
            match = re.search(r"config and state in (\S+)", line)
            if match:
                workdir = Path(match.group(1))
            if line.startswith("Fri 2026-12-04 23:45"):  # a pass has run: interrupt the next one
                break
        assert workdir is not None and workdir.exists()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=90)  # generous: a cold first run on a loaded CI machine is slow
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert not workdir.exists()
    assert "Traceback" not in err


def test_missing_extras_give_a_one_line_hint():
    code = ("import sys; sys.modules['pymap'] = None; from mailsort.cli import main; "
            "sys.exit(main(['demo']))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"mailsort: error: {demo.EXTRA_HINT}"]
    assert "pip install 'mailsort[demo]'" in result.stderr


# ------------------------------------------------------------------------------------ pieces, in-process


def test_sample_messages_are_proper_rfc5322():
    samples = demo.load_samples()
    assert len(samples) == 20
    assert [s.arrive for s in samples] == sorted(s.arrive for s in samples)
    for sample in samples:
        raw = sample.to_bytes()
        assert b"\r\n" in raw and all(b < 128 for b in raw)  # CRLF, 7-bit on the wire (encoded words, QP)
        msg = message_from_bytes(raw, policy=default_policy)
        assert msg["Message-ID"] == sample.message_id
        assert str(msg["Subject"]) == sample.subject
        assert msg.get_content().replace("\r\n", "\n").rstrip("\n") == sample.body.rstrip("\n")
        assert msg["Date"].datetime == sample.arrive
    bounce = next(s for s in samples if "MAILER-DAEMON" in s.sender)
    parsed = message_from_bytes(bounce.to_bytes(), policy=default_policy)
    assert parsed["Return-Path"] == "<>" and parsed["Auto-Submitted"] == "auto-replied"


def test_the_embedded_servers_start_serve_and_stop():
    import smtplib

    from imap_tools import MailBoxUnencrypted

    with demo.EmbeddedImap() as imap, demo.SmtpSink() as sink:
        with MailBoxUnencrypted("127.0.0.1", imap.port).login(imap.user, imap.password) as box:
            typ, data = box.client.capability()
            caps = data[0].split()
            assert b"MOVE" in caps and b"UIDPLUS" in caps and b"IDLE" in caps
            sample = demo.load_samples()[0]
            box.append(sample.to_bytes(), "INBOX", dt=sample.arrive)
            fetched = list(box.fetch(mark_seen=False))
            assert [m.subject for m in fetched] == [sample.subject]
            assert fetched[0].date == sample.arrive
        with smtplib.SMTP("127.0.0.1", sink.port, timeout=10) as smtp:
            smtp.sendmail("a@example.org", ["b@example.org"], b"Subject: hi\r\n\r\nhello\r\n")
        assert [m.rcpt_tos for m in sink.received()] == [("b@example.org",)]
        port = imap.port
    import socket

    time.sleep(0.2)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
