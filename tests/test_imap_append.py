"""Filing several messages at once (imap.append_many) on a real Dovecot: one MULTIAPPEND where the
server takes it, one APPEND each where it does not, and a refused MULTIAPPEND files nothing."""

from __future__ import annotations

import pytest
from sync_support import wait_for_login

from mailsort.config import parse_config
from mailsort.errors import ServerError
from mailsort.imap import MULTIAPPEND_COUNT, multiappend_groups, open_session


def reply(n: int, body: bytes = b"Thanks, we will look at it.\r\n") -> bytes:
    return (b"From: me@example.org\r\nTo: client@example.com\r\nSubject: Re: request %d\r\n"
            b"Message-ID: <reply-%d@example.org>\r\n\r\n" % (n, n)) + body


@pytest.fixture
def session(dovecot, imap_user):
    user, password = imap_user
    wait_for_login(dovecot, user, password)
    config = parse_config({"calendar": {"hours": {"mon": ["09:00-17:00"]}}, "account": [{"name": "work", "imap": {
        "host": "127.0.0.1", "port": dovecot.port, "security": "none", "username": user, "password_env": "UNUSED"}}]})
    session = open_session(config.accounts[0], password_lookup=lambda server: password)
    sent: list[bytes] = []
    send = session.box.client.send
    session.box.client.send = lambda data: (sent.append(data), send(data))[1]  # what went over the wire
    session.sent_commands = sent
    yield session
    session.close()


def appends(session) -> int:
    return sum(b" APPEND " in data for data in session.sent_commands)


def folder_contents(session, folder: str) -> list[tuple[bytes, bytes]]:
    """(flags, whole message) of every message in the folder, in UID order."""
    client = session.box.client
    typ, _ = client.select(f'"{folder}"', True)
    assert typ == "OK"
    typ, data = client.uid("FETCH", "1:*", "(FLAGS BODY.PEEK[])")
    session._selected = None
    return [(item[0], item[1]) for item in data if isinstance(item, tuple)]


def test_many_replies_are_filed_with_one_multiappend(session):
    assert {"MULTIAPPEND", "LITERAL+"} <= session.capabilities
    raws = [reply(n) for n in range(5)] + [b"From: me@example.org\nSubject: bare LF\n\nline one\nline two\n"]
    session.append_many("Sent", raws, ("\\Seen",))
    assert appends(session) == 1
    filed = folder_contents(session, "Sent")
    assert [body for _, body in filed] == raws[:5] + [raws[5].replace(b"\n", b"\r\n")]  # in order, CRLF as IMAP wants
    assert all(b"\\Seen" in flags for flags, _ in filed)


def test_without_multiappend_each_reply_is_appended_on_its_own(session):
    session.capabilities = session.capabilities - {"MULTIAPPEND"}
    raws = [reply(n) for n in range(3)]
    session.append_many("Sent", raws, ("\\Seen",))
    assert appends(session) == 3
    assert [body for _, body in folder_contents(session, "Sent")] == raws


def test_more_than_a_command_holds_goes_in_several(session):
    raws = [reply(n) for n in range(MULTIAPPEND_COUNT + 3)]
    session.append_many("Drafts", raws, ("\\Seen", "\\Draft"))
    assert appends(session) == 2
    filed = folder_contents(session, "Drafts")
    assert [body for _, body in filed] == raws
    assert all(b"\\Draft" in flags for flags, _ in filed)


def test_a_refused_multiappend_files_nothing_and_the_session_goes_on(session):
    session.append("Sent", reply(0))
    with pytest.raises(ServerError, match="APPEND Sent"):
        session.append_many("Sent", [reply(1), reply(2)], ("\\NoSuchSystemFlag",))
    assert [body for _, body in folder_contents(session, "Sent")] == [reply(0)]
    session.append_many("Sent", [reply(3), reply(4)])  # the connection reads on after the refusal
    assert [body for _, body in folder_contents(session, "Sent")] == [reply(0), reply(3), reply(4)]


def test_groups_follow_the_servers_literals_and_the_command_limits():
    caps = {"MULTIAPPEND", "LITERAL+"}
    assert list(multiappend_groups([b"a"], caps)) == []  # one message: a plain APPEND
    assert list(multiappend_groups([b"a", b"b"], {"LITERAL+"})) == []
    assert list(multiappend_groups([b"a", b"b"], {"MULTIAPPEND"})) == []  # a round trip per literal: no gain
    assert list(multiappend_groups([b"a", b"b"], {"MULTIAPPEND", "LITERAL-"})) == [[b"a", b"b"]]
    assert list(multiappend_groups([b"a", b"x" * 5000], {"MULTIAPPEND", "LITERAL-"})) == []  # LITERAL- stops at 4 KB
    many = [bytes([n % 256]) for n in range(2 * MULTIAPPEND_COUNT + 1)]
    assert [len(g) for g in multiappend_groups(many, caps)] == [MULTIAPPEND_COUNT, MULTIAPPEND_COUNT, 1]
    big = [b"x" * 3_000_000] * 5
    groups = list(multiappend_groups(big, caps))
    assert [len(g) for g in groups] == [2, 2, 1] and sum(groups, []) == big
