"""The sync pass on a real Dovecot: first sync, new arrivals, no-op, UIDVALIDITY change, no MOVE,
a dropped connection, dry run, set-aside mail and the return from the later folder."""

from __future__ import annotations

import functools
import socket

import pytest
from sync_support import (CLOSED, NEXT_MORNING, OPEN, CommandLog, FakeClassifier, append, contents, is_critical,
                          mail, mailbox, never_called, wait_for_login, write_config)

from mailsort.config import load_config
from mailsort.imap import open_session
from mailsort.store import Store
from mailsort.sync import sync_account, sync_all

LABELS = ("Critical", "Routine")


@pytest.fixture
def account_env(dovecot, imap_user, tmp_path, smtp_sink):
    user, password = imap_user
    wait_for_login(dovecot, user, password)
    config = load_config(write_config(tmp_path, dovecot, user, password, smtp_port=smtp_sink.port))
    store = Store(tmp_path / "state.sqlite3")
    yield config, store, user, password
    store.close()


def run(config, store, now, **kw):
    kw.setdefault("classifier_factory", FakeClassifier)
    return sync_account(config, config.accounts[0], store=store, now=now, **kw)


def labels_of(flags) -> list[str]:
    return [f for f in flags if f in LABELS]


def assert_sorted_once(dovecot, user, password, numbers, *, closed: bool):
    """Every sample is on the server exactly once, with exactly one label and the processed keyword, in
    the folder the policy puts it in (routine mail waits in Later while closed)."""
    seen = contents(dovecot, user, password)
    where = {mid: folder for folder, msgs in seen.items() for mid in msgs}
    assert sorted(where) == sorted(f"<sample-{n}@example.test>" for n in numbers)
    for n in numbers:
        mid = f"<sample-{n}@example.test>"
        flags = seen[where[mid]][mid]
        assert "mailsort-done" in flags, (mid, flags)
        assert labels_of(flags) == (["Critical"] if is_critical(n) else ["Routine"]), (mid, flags)
        assert ("\\Flagged" in flags) == is_critical(n)
        assert "\\Seen" not in flags  # nothing marked read
        expected_folder = "Later" if closed and not is_critical(n) else "INBOX"
        assert where[mid] == expected_folder, (mid, where[mid])


def test_first_sync_labels_moves_and_queues_in_bulk(dovecot, account_env, monkeypatch):
    config, store, user, password = account_env
    append(dovecot, user, password, [mail(n) for n in range(12)])
    commands = CommandLog(monkeypatch)

    report = run(config, store, CLOSED)
    sent = list(commands.commands)

    assert report.ok, report.errors
    assert (report.fetched, report.critical, report.routine) == (12, 6, 6)
    assert (report.labelled, report.moved, report.skipped) == (12, 6, 0)
    assert report.queued == 12  # critical_ack at once, after_hours for the next opening
    assert report.sent == 6  # the acknowledgements went out in the same pass
    assert_sorted_once(dovecot, user, password, range(12), closed=True)
    # bulk: one FETCH for the batch, one STORE per keyword set / flag, one MOVE per target
    assert sent.count("UID FETCH") == 1, " ".join(sent)
    assert sent.count("UID MOVE") == 1
    assert sent.count("UID STORE") == 2  # {Critical, \Flagged, done}, {Routine, done}
    rows = store.messages("work")
    assert len(rows) == 12 and all(r.applied for r in rows)
    assert store.pending("work") == []
    templates = sorted(e.template for e in store.outbox("work"))
    assert templates == ["after_hours"] * 6 + ["critical_ack"] * 6
    state = store.folder_state("work", "INBOX")
    assert state is not None and state.last_uid == 12


def test_incremental_sync_fetches_only_new_arrivals(dovecot, account_env, monkeypatch):
    config, store, user, password = account_env
    append(dovecot, user, password, [mail(n) for n in range(6)])
    assert run(config, store, OPEN).fetched == 6
    append(dovecot, user, password, [mail(n) for n in range(6, 10)])
    commands = CommandLog(monkeypatch)

    report = run(config, store, OPEN)

    assert report.ok and report.fetched == 4 and report.labelled == 4 and report.moved == 0
    assert commands.commands.count("UID FETCH") == 1, " ".join(commands.commands)
    assert_sorted_once(dovecot, user, password, range(10), closed=False)
    assert len(store.messages("work")) == 10


def test_noop_sync_sends_no_select_and_no_fetch_and_loads_no_model(dovecot, account_env, monkeypatch):
    config, store, user, password = account_env
    append(dovecot, user, password, [mail(n) for n in range(4)])
    run(config, store, OPEN)
    commands = CommandLog(monkeypatch)

    report = run(config, store, OPEN, classifier_factory=never_called)

    assert report.ok and report.fetched == 0
    assert set(commands.commands) <= {"LOGIN", "CAPABILITY", "ENABLE", "STATUS", "LOGOUT"}, commands.commands
    assert commands.commands.count("STATUS") == 1


def test_new_mail_that_is_already_processed_is_not_fetched(dovecot, account_env, monkeypatch):
    """Mail returned from Later (it carries the processed keyword) is skipped by the server-side
    search: no FETCH, no model, but the folder mark moves on."""
    config, store, user, password = account_env
    run(config, store, OPEN)  # an empty first pass
    with mailbox(dovecot, user, password) as box:
        box.append(mail(1), "INBOX", flag_set=["mailsort-done", "Routine"])
    commands = CommandLog(monkeypatch)

    report = run(config, store, OPEN, classifier_factory=never_called)

    assert report.ok and report.fetched == 0
    assert "UID FETCH" not in commands.commands
    assert store.folder_state("work", "INBOX").last_uid == 1


def test_uidvalidity_change_handles_nothing_twice_and_loses_nothing(dovecot, imap_user, tmp_path, smtp_sink):
    user, password = imap_user
    wait_for_login(dovecot, user, password)
    config = load_config(write_config(tmp_path, dovecot, user, password, folders=("Clients",), smtp_port=smtp_sink.port))
    store = Store(tmp_path / "state.sqlite3")
    with mailbox(dovecot, user, password) as box:
        box.folder.create("Clients")
    append(dovecot, user, password, [mail(n) for n in range(6)], folder="Clients")
    first = run(config, store, OPEN)
    assert first.ok and first.fetched == 6
    old = store.folder_state("work", "Clients").uidvalidity

    # the folder is recreated (a server migration, a restore): same messages, no flags, new UIDVALIDITY
    with mailbox(dovecot, user, password) as box:
        box.folder.delete("Clients")
        box.folder.create("Clients")
    append(dovecot, user, password, [mail(n) for n in range(8)], folder="Clients")

    second = run(config, store, OPEN)

    assert second.ok, second.errors
    assert store.folder_state("work", "Clients").uidvalidity != old
    assert second.fetched == 8 and second.skipped == 6
    assert second.critical + second.routine == 2  # only the two new ones were decided
    rows = store.messages("work")
    assert sorted(r.message_id for r in rows) == sorted(f"<sample-{n}@example.test>" for n in range(8))
    seen = contents(dovecot, user, password, folders=("Clients",))["Clients"]
    assert len(seen) == 8
    for n in range(8):  # the re-appended ones got their label back; nothing has two labels
        flags = seen[f"<sample-{n}@example.test>"]
        assert "mailsort-done" in flags
        assert labels_of(flags) == (["Critical"] if is_critical(n) else ["Routine"])
    # and a third pass has nothing to do
    assert run(config, store, OPEN, classifier_factory=never_called).fetched == 0
    store.close()


def test_server_without_move_copies_then_expunges_only_ours(dovecot_without_move, tmp_path, smtp_sink):
    server = dovecot_without_move
    user, password = server.add_user("nomove")
    wait_for_login(server, user, password)
    config = load_config(write_config(tmp_path, server, user, password, smtp_port=smtp_sink.port))
    store = Store(tmp_path / "state.sqlite3")
    append(server, user, password, [mail(n) for n in range(6)] + [mail(99, kind=1)])
    with mailbox(server, user, password) as box:  # the user deleted a message but did not expunge
        box.folder.set("INBOX")
        uid = [m.uid for m in box.fetch(mark_seen=False, headers_only=True) if "sample-99" in m.headers["message-id"][0]]
        box.client.uid("STORE", uid[0], "+FLAGS", "(\\Deleted)")
    with mailbox(server, user, password) as box:
        assert "MOVE" not in box.client.capability()[1][0].decode().split()

    report = run(config, store, CLOSED)

    assert report.ok, report.errors
    seen = contents(server, user, password)
    assert sorted(seen["Later"]) == [f"<sample-{n}@example.test>" for n in (1, 3, 5)]
    assert all("\\Deleted" not in flags and "Routine" in flags for flags in seen["Later"].values())
    # UID EXPUNGE took only ours: the user's deleted-but-not-expunged message is still there, untouched
    assert sorted(seen["INBOX"]) == [f"<sample-{n}@example.test>" for n in (0, 2, 4, 99)]
    assert "\\Deleted" in seen["INBOX"]["<sample-99@example.test>"]
    store.close()


def test_progress_counts_every_batch_up_to_the_total(dovecot, account_env):
    config, store, user, password = account_env
    append(dovecot, user, password, [mail(n) for n in range(10)])
    calls = []

    report = run(config, store, OPEN, batch=4, progress=lambda account, folder, done, total: calls.append((done, total)))

    assert report.ok and report.fetched == 10
    assert calls == [(0, 10), (4, 10), (8, 10), (10, 10)]


def test_worker_processes_decide_exactly_as_one_process_does(dovecot, imap_user, tmp_path, smtp_sink, monkeypatch):
    """The same mailbox sorted twice, in-process and with the worker processes (batches of 3, so the
    workers decide with a pass history that is still being written): same decisions, same replies."""
    import mailsort.sync

    user, password = imap_user
    wait_for_login(dovecot, user, password)
    other, _ = dovecot.add_user(user + "-w", password)
    wait_for_login(dovecot, other, password)
    # twelve senders writing again and again (a reply to the first message counts for the next ones),
    # and three Message-IDs seen twice
    raws = [mail(n % 12).replace(b"<sample-", f"<r{n}-sample-".encode()) for n in range(40)] + [mail(n) for n in range(3)]
    raws += [mail(n) for n in range(3)]
    results = {}
    for name, parallel_min in ((user, 10_000), (other, 5)):
        append(dovecot, name, password, raws)
        folder = tmp_path / name
        folder.mkdir()
        config = load_config(write_config(folder, dovecot, name, password, smtp_port=smtp_sink.port))
        monkeypatch.setattr(mailsort.sync, "PARALLEL_MIN", parallel_min)
        monkeypatch.setattr(mailsort.sync, "PARALLEL_BATCH", 3)
        with Store(folder / "state.sqlite3") as store:
            report = run(config, store, CLOSED, details=True)
            assert report.ok, report.errors
            results[name] = (
                [(d.uid, d.label, d.actions, d.note) for d in report.details],
                sorted((e.template, e.recipient, e.in_reply_to) for e in store.outbox("work")),
                report.to_json()["skipped"],
            )
    a, b = results[user], results[other]
    assert [x for x in a[0] if x not in b[0]] == [] and [x for x in b[0] if x not in a[0]] == [], "decisions differ"
    assert a == b
    assert len(results[user][0]) == 46 and results[user][2] == 3  # three Message-IDs seen twice: marked only
    replied_to = [r for _, r, _ in results[user][1]]
    assert len(replied_to) == len(set(replied_to)) == 12  # one reply per sender, though each wrote 3 or 4 times


def test_dropped_connection_mid_fetch_is_retried(dovecot, account_env):
    config, store, user, password = account_env
    append(dovecot, user, password, [mail(n) for n in range(20)])
    sessions = []

    def factory(account, **kw):
        session = open_session(account, password_lookup=lambda s: password, **kw)
        session.backoff = 0.01
        sessions.append(session)
        return session

    cuts = []

    def cut_after_first_batch(account, folder, done, total):
        if done and not cuts:  # the socket dies between two batches
            cuts.append(done)
            sessions[0].box.client.sock.shutdown(socket.SHUT_RDWR)

    report = run(config, store, CLOSED, batch=5, session_factory=factory, progress=cut_after_first_batch)

    assert report.ok, report.errors
    assert cuts and sessions[0].reconnects >= 1
    assert report.fetched == 20 and report.labelled == 20
    assert_sorted_once(dovecot, user, password, range(20), closed=True)
    assert len(store.messages("work")) == 20


def test_dry_run_changes_nothing_and_says_what_it_would_do(dovecot, account_env, monkeypatch):
    config, store, user, password = account_env
    append(dovecot, user, password, [mail(n) for n in range(6)])
    before = contents(dovecot, user, password)
    commands = CommandLog(monkeypatch)

    report = run(config, store, CLOSED, dry_run=True)

    assert report.ok and report.dry_run
    assert (report.fetched, report.labelled, report.moved, report.queued) == (6, 6, 3, 6)
    assert len(report.details) == 6 and {d.label for d in report.details} == {"critical", "routine"}
    assert not {"SELECT", "UID STORE", "UID MOVE", "APPEND", "CREATE", "EXPUNGE"} & commands.names()
    assert "EXAMINE" in commands.names()
    assert contents(dovecot, user, password) == before
    assert store.messages("work") == [] and store.folder_state("work", "INBOX") is None
    assert store.outbox("work") == []


def test_a_dry_run_labels_as_the_last_real_pass_found_and_check_config_says_so(dovecot, account_env, capsys):
    """`labels.mode = "auto"` asks the server whether it takes keywords; a read-only look (EXAMINE) shows
    no permissions at all, so a dry run and `check-config --connect` go by what the last real pass found."""
    from mailsort.cli import main
    from mailsort.imap import open_session
    from mailsort.sync import META_LABEL_MODE

    config, store, user, password = account_env
    with open_session(config.accounts[0], password_lookup=lambda s: password, readonly=True) as look:
        assert look.label_mode == "folder"  # what EXAMINE alone would make of Dovecot
    assert main(["--config", str(config.path), "check-config", "--connect"]) == 0
    assert "label mode folder (auto: a guess from a read-only look; the first sync decides)" in capsys.readouterr().out

    append(dovecot, user, password, [mail(0)])
    assert run(config, store, OPEN).ok
    assert store.get_meta("work", META_LABEL_MODE) == "keyword"
    append(dovecot, user, password, [mail(1)])
    modes = []

    def factory(account, **kw):
        modes.append((kw["label_mode"], kw["readonly"]))
        return open_session(account, password_lookup=lambda s: password, **kw)

    assert run(config, store, OPEN, dry_run=True, session_factory=factory).ok
    assert modes == [("keyword", True)]
    assert main(["--config", str(config.path), "check-config", "--connect"]) == 0
    assert "label mode keyword (auto, as the last sync found)" in capsys.readouterr().out


def test_unparseable_message_is_set_aside_and_the_rest_is_sorted(dovecot, account_env):
    config, store, user, password = account_env
    append(dovecot, user, password, [mail(0), b"\r\n\r\nno header at all, just text\r\n", mail(1)])

    report = run(config, store, OPEN, details=True)

    assert report.ok, report.errors
    assert (report.fetched, report.critical, report.routine, report.skipped) == (3, 1, 1, 1)
    aside = [d for d in report.details if d.label == "unparseable"]
    assert len(aside) == 1 and "set aside" in aside[0].note
    with mailbox(dovecot, user, password) as box:
        box.folder.set("INBOX", readonly=True)
        flags = [m.flags for m in box.fetch(mark_seen=False, headers_only=True, bulk=True)]
    assert all("mailsort-done" in f for f in flags)  # set aside, but never fetched again
    assert run(config, store, OPEN, classifier_factory=never_called).fetched == 0


def test_later_folder_returns_to_inbox_once_at_the_opening(dovecot, account_env):
    config, store, user, password = account_env
    append(dovecot, user, password, [mail(n) for n in range(6)])
    run(config, store, CLOSED)
    assert len(contents(dovecot, user, password)["Later"]) == 3

    morning = run(config, store, NEXT_MORNING, classifier_factory=never_called)

    assert morning.ok and morning.returned == 3 and morning.fetched == 0
    seen = contents(dovecot, user, password)
    assert seen["Later"] == {} and len(seen["INBOX"]) == 6
    # returned mail carries the processed keyword: the next pass neither fetches it nor returns again
    again = run(config, store, NEXT_MORNING, classifier_factory=never_called)
    assert again.fetched == 0 and again.returned == 0 and again.critical + again.routine == 0


def test_one_failing_account_does_not_stop_the_others(dovecot, imap_user, tmp_path, smtp_sink):
    user, password = imap_user
    wait_for_login(dovecot, user, password)
    path = write_config(tmp_path, dovecot, user, password, smtp_port=smtp_sink.port)
    text = path.read_text()
    broken = text.split("[[account]]")[1].replace('name = "work"', 'name = "broken"').replace(
        f"port = {dovecot.port}", "port = 1")
    path.write_text(text + "\n[[account]]" + broken)
    config = load_config(path)
    append(dovecot, user, password, [mail(0)])
    with Store(tmp_path / "state.sqlite3") as store:
        reports = sync_all(config, store=store, classifier_factory=FakeClassifier, now=OPEN)
    by_name = {r.name: r for r in reports}
    assert by_name["work"].ok and by_name["work"].fetched == 1
    assert not by_name["broken"].ok and "cannot connect" in by_name["broken"].errors[0]


def test_with_the_real_default_model(dovecot, account_env):
    classify = pytest.importorskip("mailsort.classify")
    path = classify.default_model_path()
    if not path.exists():
        pytest.skip(f"no trained model at {path} yet")
    config, store, user, password = account_env
    append(dovecot, user, password, [mail(n) for n in range(6)])
    report = run(config, store, OPEN, classifier_factory=functools.partial(classify.load_classifier, path))
    assert report.ok and report.fetched == 6 and report.critical + report.routine == 6
    assert report.critical >= 2  # "site down", "non funziona", "не работает" are textbook critical
