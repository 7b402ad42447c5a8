"""Retraining from the user's corrections: which placements count (pure rules), reading them from a
real Dovecot, and `mailsort train --from-imap` end to end (the issue's integration test)."""

from __future__ import annotations

import hashlib
import imaplib
import json
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sync_support import OPEN, append, mailbox, wait_for_login, write_config
from training_support import ROUTINE_SAMPLE, base_model, eml, first_missed, flipped, small_corpus, write_corpus

from mailsort.classify.model import load_classifier
from mailsort.cli import main
from mailsort.config import load_config
from mailsort.corrections import Evidence, gather_corrections, resolve
from mailsort.imap import parse_placements

T0 = datetime(2026, 11, 25, 9, 0, tzinfo=timezone.utc)


# ------------------------------------------------------------------------------------- the rules (pure)


def ev(key: str, label: str, kind: str = "folder", saved: int | None = None, folder: str = "") -> Evidence:
    folder = folder or ({"critical": "Critical", "routine": "Routine"}[label] if kind == "folder" else "INBOX")
    return Evidence(key, label, kind, folder, 1, None if saved is None else T0 + timedelta(minutes=saved))


def test_keywords_count_only_against_mailsorts_verdict() -> None:
    r = resolve([ev("<a>", "routine", "keyword"), ev("<b>", "critical", "keyword"), ev("<c>", "critical", "keyword")],
                {"<a>": "routine", "<b>": "routine"}, "keyword")
    assert {k: e.label for k, e in r.winners.items()} == {"<b>": "critical"}  # <a>: own label; <c>: unknown
    assert r.own_labels == 2


def test_a_folder_move_beats_the_stale_keyword_it_carries() -> None:
    # mailsort said routine (keyword Routine); the user moved the message into Critical
    r = resolve([ev("<a>", "critical"), ev("<a>", "routine", "keyword", folder="Critical")],
                {"<a>": "routine"}, "keyword")
    assert r.winners["<a>"].label == "critical" and r.winners["<a>"].kind == "folder"
    # in keyword mode a folder placement counts even when it agrees with mailsort (mailsort never files there)
    assert resolve([ev("<a>", "critical")], {"<a>": "critical"}, "keyword").winners["<a>"].label == "critical"


@pytest.mark.parametrize("mode", ["folder", "gmail"])
def test_label_folders_in_folder_and_gmail_mode(mode) -> None:
    verdicts = {"<own>": "routine", "<fixed>": "routine"}
    r = resolve([ev("<own>", "routine"), ev("<fixed>", "routine"), ev("<fixed>", "critical"), ev("<old>", "routine")],
                verdicts, mode)
    # mailsort's own copy of <own> is not a correction; <fixed> is in both: the user's one wins;
    # <old> is unknown to the state database, so somebody else (the user) put it there
    assert {k: e.label for k, e in r.winners.items()} == {"<fixed>": "critical", "<old>": "routine"}


def test_latest_placement_wins_and_undecidable_is_left_out() -> None:
    r = resolve([ev("<a>", "critical", saved=1), ev("<a>", "routine", saved=5),
                 ev("<b>", "critical", saved=9), ev("<b>", "routine", saved=2),
                 ev("<c>", "critical"), ev("<c>", "routine"),
                 ev("<d>", "critical", saved=3), ev("<d>", "routine", saved=3)], {}, "keyword")
    assert {k: e.label for k, e in r.winners.items()} == {"<a>": "routine", "<b>": "critical"}
    assert r.ambiguous == ("<c>", "<d>")


def test_parse_placements_reads_flags_message_id_and_savedate() -> None:
    data = [
        (b'1 (UID 7 FLAGS (\\Seen Routine) BODY[HEADER.FIELDS (MESSAGE-ID)] {28}', b"Message-ID: <x@y.example>\r\n\r\n"),
        b' SAVEDATE "25-Nov-2026 10:02:03 +0100")',
        b"2 (FLAGS (\\Seen))",  # unsolicited flag change: no UID, no header: dropped
        (b'3 (UID 9 FLAGS () SAVEDATE NIL BODY[HEADER.FIELDS (MESSAGE-ID)] {2}', b"\r\n"),
        b")",
    ]
    got = parse_placements(data)
    assert [(p.uid, p.flags, p.message_id) for p in got] == [(7, ("\\Seen", "Routine"), "<x@y.example>"), (9, (), "")]
    assert got[0].saved_at == datetime(2026, 11, 25, 9, 2, 3, tzinfo=timezone.utc)
    assert got[1].saved_at is None


# ------------------------------------------------------------------------------------- on Dovecot


@pytest.fixture
def setup(tmp_path, dovecot, imap_user):
    """A Dovecot user, a config whose [classifier] model is a small trained model, and the corpus."""
    user, password = imap_user
    wait_for_login(dovecot, user, password)
    model_path = tmp_path / "model" / "small.joblib"
    classifier = base_model(model_path)
    # replies off: these tests are about sorting and learning, not about the outbox (no SMTP here)
    config = write_config(tmp_path, dovecot, user, password,
                          extra=f'mode = "off"\n\n[classifier]\nmodel = "{model_path}"\n')
    train, valid = write_corpus(tmp_path / "corpus")
    return {"user": user, "password": password, "config": config, "model": model_path, "classifier": classifier,
            "train": train, "valid": valid, "dovecot": dovecot}


def cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def imap(s) -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", s["dovecot"].port)
    client.login(s["user"], s["password"])
    return client


def uid_of(client: imaplib.IMAP4, folder: str, message_id: str) -> bytes:
    client.select(folder)
    typ, data = client.uid("SEARCH", None, "HEADER", "Message-ID", message_id)
    assert typ == "OK" and data[0], f"{message_id} not in {folder}"
    return data[0].split()[0]


def flags_in(s, folder: str, message_id: str) -> set[str]:
    client = imap(s)
    try:
        uid = uid_of(client, folder, message_id)
        typ, data = client.uid("FETCH", uid, "(FLAGS)")
        return {f.decode() for f in imaplib.ParseFlags(data[0])}
    finally:
        client.logout()


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_moving_a_missed_message_to_critical_teaches_the_new_model(setup, capsys, tmp_path) -> None:
    s = setup
    missed, near = first_missed(s["classifier"])
    mid = "<missed-1@client.example>"
    append(s["dovecot"], s["user"], s["password"],
           [eml(*missed, message_id=mid), eml(*ROUTINE_SAMPLE, message_id="<routine-1@client.example>")])

    # mailsort sorts the inbox: the missed message is labelled routine (keyword mode on Dovecot)
    code, out, err = cli(capsys, "--config", s["config"], "sync", "--now", OPEN.isoformat(), "--json")
    assert code == 0, err
    assert json.loads(out)["accounts"][0]["routine"] == 2
    assert "Routine" in flags_in(s, "INBOX", mid)

    # the user moves it into Critical, as a mail client does (CREATE, UID MOVE)
    client = imap(s)
    assert client.create("Critical")[0] == "OK"
    uid = uid_of(client, "INBOX", mid)
    assert client.uid("MOVE", uid, "Critical")[0] == "OK"
    client.logout()

    old_sha = sha(s["model"])
    code, out, err = cli(capsys, "--config", s["config"], "train", "--from-imap", "work",
                         "--data", s["train"], "--valid", s["valid"], "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["accepted"] and doc["installed"], doc["reason"]
    assert doc["examples"]["user"] == 1
    c = doc["corrections"][0]
    assert (c["account"], c["critical"], c["routine"], c["label_mode"]) == ("work", 1, 0, "keyword")
    assert "work: 1 critical and 0 routine correction(s)" in err  # progress on stderr
    assert doc["out"] == str(s["model"])
    assert sha(s["model"].with_name("small.prev.joblib")) == old_sha  # the previous model, for rollback

    new = load_classifier(s["model"])
    assert new.card["retrain"]["user_examples"] == 1
    # the near copy, never seen, is now critical; the ordinary team-page request stays routine
    near_file = tmp_path / "near.eml"
    near_file.write_bytes(eml(*near, message_id="<near@client.example>"))
    routine_file = tmp_path / "routine.eml"
    routine_file.write_bytes(eml(*ROUTINE_SAMPLE))
    code, out, err = cli(capsys, "--config", s["config"], "classify", "--json", near_file, routine_file)
    assert code == 0, err
    assert [json.loads(line)["label"] for line in out.splitlines()] == ["critical", "routine"]
    # reading the corrections changed nothing on the server: still in Critical, still unread
    flags = flags_in(s, "Critical", mid)
    assert "\\Seen" not in flags and "Routine" in flags


def test_the_gate_refuses_a_model_taught_wrong_labels(setup, capsys) -> None:
    s = setup
    train, _ = small_corpus()
    wrong = flipped(train[::13])  # critical mail filed in Routine and routine mail in Critical
    client = imap(s)
    for folder in ("Critical", "Routine"):
        client.create(folder)
    client.logout()
    for label, folder in (("critical", "Critical"), ("routine", "Routine")):
        append(s["dovecot"], s["user"], s["password"],
               [eml(e.subject or "(no subject)", e.body, message_id=f"<{e.id}@t>") for e in wrong if e.label == label],
               folder)
    before = sha(s["model"])
    code, out, err = cli(capsys, "--config", s["config"], "train", "--from-imap", "work",
                         "--data", s["train"], "--valid", s["valid"])
    assert code == 1
    assert out == ""
    n_critical = sum(e.label == "critical" for e in wrong)
    assert f"work: {n_critical} critical and {len(wrong) - n_critical} routine correction(s)" in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("mailsort: refused") and "stays" in last and "--force" in last
    assert sha(s["model"]) == before
    assert not s["model"].with_name("small.prev.joblib").exists()


def test_corrections_in_keyword_mode(setup, capsys) -> None:
    """Relabelled in the client, left as sorted, filed twice: what counts and which placement wins."""
    s = setup
    mails = {n: eml(f"Message {n}", f"Hello,\nthis is message number {n}.\nAnn", message_id=f"<m{n}@t>")
             for n in range(1, 6)}
    append(s["dovecot"], s["user"], s["password"], [mails[n] for n in (1, 2, 5)])
    assert cli(capsys, "--config", s["config"], "sync", "--now", OPEN.isoformat())[0] == 0
    verdict = {n: ("critical" if "Critical" in flags_in(s, "INBOX", f"<m{n}@t>") else "routine") for n in (1, 2, 5)}
    other = {"critical": "routine", "routine": "critical"}
    keyword = {"critical": "Critical", "routine": "Routine"}

    client = imap(s)
    client.create("Critical")
    client.create("Routine")
    client.select("INBOX")
    # m1: the user changes its tag in the mail client (the keyword of the other label)
    uid = uid_of(client, "INBOX", "<m1@t>")
    client.uid("STORE", uid, "-FLAGS", f"({keyword[verdict[1]]})")
    client.uid("STORE", uid, "+FLAGS", f"({keyword[other[verdict[1]]]})")
    # m5: copied into both folders: on maildir the copies are hard links and share one SAVEDATE, so the
    # placement that contradicts mailsort's verdict is taken as the user's
    uid5 = uid_of(client, "INBOX", "<m5@t>")
    client.uid("COPY", uid5, "Critical")
    client.uid("COPY", uid5, "Routine")
    client.logout()
    # m2: left as mailsort sorted it. m3 filed (APPEND, as a client does from another account) in
    # Routine, a second later in Critical: the latest placement wins; m4 the other way round. The client
    # then shows the folder: Dovecot on maildir dates a new message (SAVEDATE) when it first indexes it.
    def file(n: int, folder: str) -> None:
        append(s["dovecot"], s["user"], s["password"], [mails[n]], folder)
        with mailbox(s["dovecot"], s["user"], s["password"]) as box:
            box.folder.set(folder)

    file(3, "Routine")
    file(4, "Critical")
    time.sleep(1.1)  # SAVEDATE has one-second resolution
    file(3, "Critical")
    file(4, "Routine")

    found = gather_corrections(load_config(s["config"]), ["work"])
    assert len(found) == 1 and found[0].label_mode == "keyword"
    got = {e.id: e.label for e in found[0].examples}
    assert got == {"imap:work:<m1@t>": other[verdict[1]], "imap:work:<m3@t>": "critical",
                   "imap:work:<m4@t>": "routine", "imap:work:<m5@t>": other[verdict[5]]}
    example = next(e for e in found[0].examples if e.id == "imap:work:<m3@t>")
    assert example.subject == "Message 3" and "message number 3" in example.body
    assert example.source == "corrections/work" and example.lang == "en"
    assert found[0].own_labels >= 2  # mailsort's own keywords on m2 and m5 in INBOX
    assert found[0].ambiguous == ()


def test_no_corrections_trains_nothing(setup, capsys) -> None:
    s = setup
    append(s["dovecot"], s["user"], s["password"], [eml("Hello", "Hello,\njust a note.\nAnn", message_id="<n1@t>")])
    assert cli(capsys, "--config", s["config"], "sync", "--now", OPEN.isoformat())[0] == 0
    before = sha(s["model"])
    code, out, err = cli(capsys, "--config", s["config"], "train", "--from-imap", "work",
                         "--data", s["train"], "--valid", s["valid"])
    assert code == 0, err
    assert "no corrections found in work" in out
    assert sha(s["model"]) == before
    code, _, err = cli(capsys, "--config", s["config"], "train", "--from-imap", "nobody",
                       "--data", s["train"], "--valid", s["valid"])
    assert code == 2 and "no account named 'nobody'" in err


def test_cron_script_retrains_from_every_account(setup, tmp_path) -> None:
    import subprocess
    import sys

    s = setup
    missed, _ = first_missed(s["classifier"])
    client = imap(s)
    client.create("Critical")
    client.logout()
    append(s["dovecot"], s["user"], s["password"], [eml(*missed, message_id="<cron@t>")], "Critical")
    script = Path(__file__).resolve().parents[1] / "scripts" / "retrain.py"
    before = sha(s["model"])
    done = subprocess.run([sys.executable, str(script), "--config", str(s["config"]), "--data", str(s["train"]),
                           "--valid", str(s["valid"]), "--json"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["installed"] and doc["examples"]["user"] == 1 and doc["corrections"][0]["account"] == "work"
    assert sha(s["model"].with_name("small.prev.joblib")) == before

    done = subprocess.run([sys.executable, str(script), "--config", str(tmp_path / "missing.toml")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "missing.toml" in done.stderr and "Traceback" not in done.stderr
