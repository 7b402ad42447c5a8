#!/usr/bin/env python3
"""Benchmark `mailsort sync` against the IMAP I/O floor on a real Dovecot.

    python scripts/bench_sync.py [N] [--repeat K] [--keep]     (N defaults to 10,000)

Starts a throwaway Dovecot on 127.0.0.1 (tests/servers.py, the one the tests use), fills the INBOX of
two identical users with N realistic multilingual messages (plain, multipart/alternative, HTML only,
attachments, newsletters, replies with quoted history; written straight into the maildir, which is
how a big mailbox exists anyway), lets Dovecot index both, then measures:

  floor      a bare imaplib loop: UID FETCH of BODY.PEEK[HEADER] + BODY.PEEK[TEXT]<0.2048> in batches
             of 500, then one UID MOVE of every other message (split only at the server's line limit):
             what any IMAP sorter must at least spend;
  first      `mailsort sync` as a subprocess on the other user: a first sync of the whole INBOX with the
             shipped model (parsing, classification, policy, journal, labels, flags and moves included);
  no-op      `mailsort sync` again with nothing new (cold process start, a few runs, best and median);
  RSS        peak resident memory of the sync process (its own, and the sum over it and its workers).

Before anything is timed, a first sync of a small mailbox makes what a first run of mailsort makes
once per installation (compiled bytecode, the unpacked py3langid model, the classifier's arrays in
the cache directory), so that a single run measures the sync and not that set-up; its time is
printed too.

It prints the figures side by side. With --repeat K, the floor and the first sync run K times, each on
its own copy of the mailbox, and the median run is shown with the range (a shared 2-core machine
varies by 5 % and more from one run to the next). Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import argparse
import imaplib
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from email.utils import parsedate_to_datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from servers import start_dovecot, start_smtp  # noqa: E402
from sync_support import realistic_message, write_config  # noqa: E402

# A closed moment (Wednesday evening in Madrid): routine mail moves to Later, so MOVE is measured.
NOW = datetime.fromisoformat("2026-11-25T20:00:00+01:00")
FLOOR_PEEK = 2048
FLOOR_BATCH = 500
_DATE = re.compile(rb"^Date: ([^\r\n]+)", re.M)

# ------------------------------------------------------------------------------------- the mailbox

def fill_maildir(maildir: Path, count: int, seed: int = 7) -> int:
    """Write `count` messages into maildir/cur (readable by Dovecot's `nobody`); returns bytes written."""
    rng = random.Random(seed)
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    stamp = int(time.time()) - count
    total = 0
    for n in range(count):
        raw = realistic_message(n, rng, NOW)
        total += len(raw)
        # Dovecot's maildir name: time.unique.host,S=size:2,flags — S= spares it a stat per message
        path = maildir / "cur" / f"{stamp + n}.M{n}P1.bench,S={len(raw)}:2,"
        path.write_bytes(raw)
        # the file time is the INTERNALDATE: mail arrived when it was written, not all of it just now
        arrived = parsedate_to_datetime(_DATE.search(raw).group(1).decode()).timestamp()
        os.utime(path, (arrived, arrived))
    for path in [maildir, *maildir.rglob("*")]:
        os.chown(path, _nobody()[0], _nobody()[1])
    return total


def _nobody() -> tuple[int, int]:
    import grp
    import pwd

    return pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid


def copy_maildir(source: Path, target: Path) -> None:
    """The same mailbox for another user: hard links (Dovecot never rewrites a maildir file)."""
    for sub in ("cur", "new", "tmp"):
        (target / sub).mkdir(parents=True, exist_ok=True)
        for path in (source / sub).iterdir():
            if path.is_file():
                os.link(path, target / sub / path.name)
    for path in [target, *target.rglob("*")]:
        if path.is_dir():
            os.chown(path, *_nobody())


# ------------------------------------------------------------------------------------- the floor


def login(port: int, user: str, password: str) -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", port)
    client.login(user, password)
    return client


def index(port: int, user: str, password: str) -> int:
    """Let Dovecot index the new maildir (what an existing mailbox has already); returns the count."""
    client = login(port, user, password)
    typ, data = client.select("INBOX")
    count = int(data[0])
    client.logout()
    return count


def floor(port: int, user: str, password: str) -> dict:
    """The bare loop: fetch headers + 2 KB of text in batches, then one UID MOVE of every other message."""
    start = time.perf_counter()
    cpu = time.process_time()
    client = login(port, user, password)
    client.select("INBOX")
    typ, data = client.uid("SEARCH", "ALL")
    uids = [int(x) for x in data[0].split()]
    fetched = 0
    for i in range(0, len(uids), FLOOR_BATCH):
        part = uids[i:i + FLOOR_BATCH]
        typ, data = client.uid("FETCH", f"{part[0]}:{part[-1]}",
                               f"(UID FLAGS BODY.PEEK[HEADER] BODY.PEEK[TEXT]<0.{FLOOR_PEEK}>)")
        fetched += sum(1 for d in data if isinstance(d, tuple) and b"BODY[HEADER]" in d[0])
    client.create("Later")
    # every other message (scattered, as a sorter's are) in one UID MOVE, split only where the command
    # line would pass the server's limit (Dovecot: 64 KB; mailsort cuts at the same 8,000 characters)
    text = ",".join(str(u) for u in uids[::2])
    while text:
        cut = len(text) if len(text) <= 8000 else text.rfind(",", 0, 8000)
        typ, _ = client.uid("MOVE", text[:cut], "Later")
        assert typ == "OK"
        text = text[cut + 1:]
    client.logout()
    seconds = time.perf_counter() - start
    return {"messages": len(uids), "fetched": fetched, "seconds": seconds, "rate": len(uids) / seconds,
            "client_cpu": time.process_time() - cpu}


# ------------------------------------------------------------------------------------- mailsort


# Messages in the warm-up sync that runs before anything is timed (see main): as many as make a sync
# start its worker processes (sync.PARALLEL_MIN)
WARM_UP = 1_000

# How often the memory of the sync's processes is sampled. Reading a process's PSS walks its page
# tables: about 3 ms of CPU for the three processes of a first sync, taken from the two cores the
# sync is timed on (every 50 ms, that was 3 % of the machine). Each process's own peak RSS does not
# depend on it (the kernel's VmHWM); the peaks of the sums do, but they are reached early in a first
# sync (the workers load their model first) and held until its end.
SAMPLE_EVERY = 0.25


def run_sync(config: Path, *extra: str, env: dict | None = None) -> dict:
    """`mailsort sync --json` as its own process: wall time, exit status, the JSON, and peak RSS (the
    process's own peak from wait4, and the peak of the sum over it and its children, sampled)."""
    environment = {**os.environ, **(env or {})}  # the password's variable is set by write_config
    # as an installed package runs: with its bytecode cached (this sandbox sets PYTHONDONTWRITEBYTECODE,
    # which recompiles every module of mailsort in every process); the cache stays out of the tree
    environment.pop("PYTHONDONTWRITEBYTECODE", None)
    environment.setdefault("PYTHONPYCACHEPREFIX", str(Path(tempfile.gettempdir()) / "mailsort-bench-pycache"))
    command = [sys.executable, "-m", "mailsort", "--config", str(config), "sync", "--now", NOW.isoformat(),
               "--json", *extra]
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environment)
    tree_peak = [0]
    peaks: dict[int, int] = {}
    done = threading.Event()

    pss_peak = [0]

    def sample() -> None:
        while not done.is_set():
            peaks[-1] = 0
            tree_peak[0] = max(tree_peak[0], _tree_rss(proc.pid, peaks))
            pss_peak[0] = max(pss_peak[0], peaks[-1])
            done.wait(SAMPLE_EVERY)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out_chunks: list[bytes] = []
    err_chunks: list[bytes] = []
    readers = [threading.Thread(target=lambda: out_chunks.append(proc.stdout.read())),
               threading.Thread(target=lambda: err_chunks.append(proc.stderr.read()))]
    for r in readers:
        r.start()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    done.set()
    for r in readers:
        r.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    out, err = b"".join(out_chunks), b"".join(err_chunks)
    try:
        document = json.loads(out)
    except ValueError:
        raise SystemExit(f"mailsort sync failed ({proc.returncode}):\n{err.decode()[-3000:]}")
    return {"seconds": seconds, "status": proc.returncode, "json": document, "stderr": err.decode(),
            "rss_mb": peaks.get(proc.pid, usage.ru_maxrss * 1024) / 2**20, "tree_rss_mb": tree_peak[0] / 2**20,
            "worker_rss_mb": max((v for k, v in peaks.items() if k not in (proc.pid, -1)), default=0) / 2**20,
            "tree_pss_mb": pss_peak[0] / 2**20,
            "cpu": usage.ru_utime + usage.ru_stime}


def _median_run(runs: list[dict]) -> dict:
    """The run with the median time (the lower middle one of an even count)."""
    return sorted(runs, key=lambda r: r["seconds"])[(len(runs) - 1) // 2]


def dovecot_cpu(dovecot) -> float:
    """CPU seconds Dovecot's processes used so far (the master's own and its exited children's; IMAP
    sessions are children that exit at logout)."""
    pid = int((dovecot.base_dir / "master.pid").read_text().strip())
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / ticks  # utime, stime, cutime, cstime


def _tree_rss(pid: int, peaks: dict[int, int]) -> int:
    """Resident bytes of pid and its descendants now (0 once it is gone); `peaks` collects each
    process's own high-water mark (VmHWM) as last seen."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                status = dict(line.split(":", 1) for line in f if ":" in line)
            total += int(status["VmRSS"].split()[0]) * 1024
            with open(f"/proc/{p}/smaps_rollup") as f:  # proportional: pages shared by the workers count once
                pss = next(int(line.split()[1]) for line in f if line.startswith("Pss:")) * 1024
            peaks[-1] = peaks.get(-1, 0) + pss  # summed below, per sample
            peaks[p] = max(peaks.get(p, 0), int(status["VmHWM"].split()[0]) * 1024)
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo.extend(int(c) for c in f.read().split())
        except (OSError, ValueError, KeyError):
            pass
    return total


# ------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("n", nargs="?", type=int, default=10_000, help="messages in the INBOX (default 10000)")
    parser.add_argument("--noop-runs", type=int, default=5, help="no-op syncs to time (default 5)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="first syncs (and floors) to time, each on its own copy of the mailbox; the "
                             "median is reported, with the range (default 1)")
    parser.add_argument("--keep", action="store_true", help="keep the Dovecot directory (printed) afterwards")
    args = parser.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="mailsort-bench-"))
    dovecot = start_dovecot(root / "dovecot")
    sink = start_smtp()
    try:
        password = "bench"
        runs = max(1, args.repeat)
        users = [f"{role}{n}" for n in range(runs) for role in ("floor", "sync")]
        for user in users + ["warm"]:
            dovecot.add_user(user, password)
        t = time.perf_counter()
        size = fill_maildir(dovecot.maildir(users[0]), args.n)
        for user in users[1:]:
            copy_maildir(dovecot.maildir(users[0]), dovecot.maildir(user))
        fill_maildir(dovecot.maildir("warm"), WARM_UP)
        fill_seconds = time.perf_counter() - t
        time.sleep(1.1)  # Dovecot re-reads its passwd-file at most once a second
        for user in users:
            count = index(dovecot.port, user, password)
            assert count == args.n, (user, count)
        index(dovecot.port, "warm", password)
        print(f"{args.n} messages ({size / 1e6:.0f} MB) written in {fill_seconds:.1f} s and indexed; "
              f"{os.cpu_count()} cores", flush=True)
        (root / "warm").mkdir()
        warm = run_sync(write_config(root / "warm", dovecot, "warm", password, smtp_port=sink.port))
        print(f"warm-up: a first sync of {WARM_UP} messages in {warm['seconds']:.2f} s (it makes the caches a "
              f"first run makes once: bytecode, the unpacked language and classifier models)", flush=True)

        floors, firsts = [], []
        for n in range(runs):
            cpu = dovecot_cpu(dovecot)
            base = floor(dovecot.port, f"floor{n}", password)
            time.sleep(0.5)  # the session process exits after LOGOUT; then its CPU is counted
            base["dovecot_cpu"] = dovecot_cpu(dovecot) - cpu
            print(f"floor: {base['rate']:.0f} msg/s ({base['seconds']:.2f} s)", flush=True)
            floors.append(base)

            (root / f"sync{n}").mkdir()
            config = write_config(root / f"sync{n}", dovecot, f"sync{n}", password, smtp_port=sink.port)
            cpu = dovecot_cpu(dovecot)
            first = run_sync(config)
            time.sleep(0.5)
            first["dovecot_cpu"] = dovecot_cpu(dovecot) - cpu
            account = first["json"]["accounts"][0]
            if account["errors"] or account["fetched"] != args.n:
                raise SystemExit(f"first sync incomplete: {account}")
            print(f"first sync: {args.n / first['seconds']:.0f} msg/s ({first['seconds']:.2f} s)", flush=True)
            firsts.append(first)
        base = _median_run(floors)
        first = _median_run(firsts)
        rate = args.n / first["seconds"]
        account = first["json"]["accounts"][0]

        noops = [run_sync(config) for _ in range(args.noop_runs)]
        for run in noops:
            assert run["json"]["accounts"][0]["fetched"] == 0, run["json"]
        noop_times = [r["seconds"] for r in noops]

        width = 44
        print()
        print(f"{'N = ' + format(args.n, ','):<{width}}{'floor (imaplib)':>18}{'mailsort':>14}")
        print(f"{'first sync, messages/s' + (f' (median of {runs})' if runs > 1 else ''):<{width}}"
              f"{base['rate']:>18.0f}{rate:>14.0f}")
        print(f"{'first sync, seconds':<{width}}{base['seconds']:>18.2f}{first['seconds']:>14.2f}")
        if runs > 1:
            low, high = (args.n / max(r["seconds"] for r in firsts), args.n / min(r["seconds"] for r in firsts))
            floor_low, floor_high = min(r["rate"] for r in floors), max(r["rate"] for r in floors)
            print(f"{'  range, messages/s':<{width}}{f'{floor_low:.0f}–{floor_high:.0f}':>18}{f'{low:.0f}–{high:.0f}':>14}")
        print(f"{'no-op sync process, s (best / median)':<{width}}{'':>18}"
              f"{min(noop_times):>7.3f} / {statistics.median(noop_times):.3f}")
        print(f"{'peak RSS first sync, MB: sync process':<{width}}{'':>18}{first['rss_mb']:>14.0f}")
        print(f"{'  largest worker / all together (RSS, PSS)':<{width}}{'':>18}"
              f"{first['worker_rss_mb']:>4.0f} / {first['tree_rss_mb']:.0f}, {first['tree_pss_mb']:.0f}")
        print(f"{'peak RSS no-op sync, MB':<{width}}{'':>18}{noops[0]['rss_mb']:>14.0f}")
        print(f"{'first sync, CPU seconds: client (sync + workers)':<{width}}{base['client_cpu']:>18.1f}"
              f"{first['cpu']:>14.1f}")
        print(f"{'first sync, CPU seconds: Dovecot':<{width}}{base['dovecot_cpu']:>18.1f}{first['dovecot_cpu']:>14.1f}")
        print(f"{'first sync: critical / routine / moved / labelled':<{width}}{'':>18}"
              f"{account['critical']} / {account['routine']} / {account['moved']} / {account['labelled']}")
        print(f"{'replies queued / sent':<{width}}{'':>18}{account['queued']} / {account['sent']}")
        return 0
    finally:
        sink.stop()
        dovecot.stop()
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
