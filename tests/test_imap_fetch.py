"""imap.uid_fetch and imap.uid_move, the fast readers of a first sync's bulk FETCH and MOVE, against imaplib
on a real Dovecot."""

from __future__ import annotations

import imaplib
import random

import pytest
from sync_support import CLOSED, append, realistic_message, wait_for_login

from mailsort.imap import FETCH_ITEMS, _parse_any_fetch, _parse_plain_fetch, parse_fetch, uid_fetch, uid_move


@pytest.fixture
def filled(dovecot, imap_user):
    user, password = imap_user
    wait_for_login(dovecot, user, password)
    rng = random.Random(11)
    raws = [realistic_message(n, rng, CLOSED) for n in range(60)]
    raws.append(b"From: a@b.example\r\nSubject: no body at all\r\n\r\n")  # an empty TEXT literal
    append(dovecot, user, password, raws)
    client = imaplib.IMAP4("127.0.0.1", dovecot.port)
    client.login(user, password)
    client.select("INBOX")
    yield client
    try:
        client.logout()
    except (imaplib.IMAP4.abort, OSError):  # the test cut the connection
        pass


def test_same_answer_as_imaplib_and_the_connection_reads_on(filled):
    client = filled
    for uid_set, items in (("1:*", FETCH_ITEMS), ("3,5,7:9", FETCH_ITEMS), ("1:*", "(UID FLAGS)"),
                           ("2", "(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)] UID)")):
        typ, expected = client.uid("FETCH", uid_set, items)
        assert typ == "OK"
        assert uid_fetch(client, uid_set, items) == expected
    fetched = parse_fetch(uid_fetch(client, "1:*", FETCH_ITEMS))
    assert [m.uid for m in fetched] == list(range(1, 62))
    assert fetched[-1].raw.endswith(b"Subject: no body at all\r\n\r\n")
    # nothing of the answer is left unread: imaplib's next command works as usual
    typ, data = client.noop()
    assert typ == "OK"
    typ, data = client.uid("SEARCH", "ALL")
    assert len(data[0].split()) == 61


def test_the_plain_reading_gives_the_general_readings_messages(filled):
    """parse_fetch reads Dovecot's usual answer with one pattern per literal; the messages must be those
    the general reading (attributes anywhere) finds, and any other shape must go to the general one."""
    data = uid_fetch(filled, "1:*", FETCH_ITEMS)
    plain = _parse_plain_fetch(uid_fetch(filled, "1:60", FETCH_ITEMS))
    assert plain is not None and len(plain) == 60  # the realistic messages all take the plain route
    assert plain == _parse_any_fetch(uid_fetch(filled, "1:60", FETCH_ITEMS))
    assert parse_fetch(data) == _parse_any_fetch(data) and len(parse_fetch(data)) == 61
    # an unsolicited flag change in the middle, attributes in another order: the general reading
    mixed = data[:3] + [b'9 (FLAGS (\\Seen) UID 9)'] + data[3:]
    assert _parse_plain_fetch(mixed) is None and parse_fetch(mixed) == parse_fetch(data)
    (head, header), (text, body), end = data[:3]
    reordered = [(head.replace(b"UID 1 FLAGS", b"FLAGS").replace(b"BODY[HEADER]", b"UID 1 BODY[HEADER]"), header),
                 (text, body), end]
    assert _parse_plain_fetch(reordered) is None and parse_fetch(reordered) == parse_fetch(data[:3])


def test_nothing_marked_read(filled):
    client = filled
    uid_fetch(client, "1:*", FETCH_ITEMS)
    typ, data = client.uid("SEARCH", "SEEN")
    assert data == [b""]


def test_a_refused_fetch_raises_imaplib_error(filled):
    with pytest.raises(imaplib.IMAP4.error, match="UID FETCH"):
        uid_fetch(filled, "1:*", "(NOSUCHITEM)")
    assert filled.noop()[0] == "OK"  # and the connection is still in step


def test_a_cut_connection_raises_abort(filled):
    client = filled
    client.sock.shutdown(2)  # the server is gone: reading ends at EOF
    with pytest.raises((imaplib.IMAP4.abort, OSError)):
        uid_fetch(client, "1:*", FETCH_ITEMS)


def test_no_folder_selected_is_an_error(dovecot, imap_user):
    wait_for_login(dovecot, *imap_user)
    client = imaplib.IMAP4("127.0.0.1", dovecot.port)
    client.login(*imap_user)
    try:
        with pytest.raises(imaplib.IMAP4.error, match="no folder selected"):
            uid_fetch(client, "1:*", FETCH_ITEMS)
    finally:
        client.logout()


def test_a_move_reads_its_whole_answer_and_keeps_no_expunge(filled):
    """A MOVE answers with an EXPUNGE per message (and an OK [COPYUID ...]): all read, none kept (imaplib
    keeps each one in untagged_responses), and the connection reads on in step."""
    client = filled
    assert client.create("Later")[0] == "OK"
    client.untagged_responses.clear()
    uid_move(client, "2:40", "Later")
    assert "EXPUNGE" not in client.untagged_responses and "COPYUID" not in client.untagged_responses
    typ, data = client.uid("SEARCH", "ALL")
    assert typ == "OK" and [int(u) for u in data[0].split()] == [1, *range(41, 62)]
    client.select("Later", readonly=True)
    assert len(client.uid("SEARCH", "ALL")[1][0].split()) == 39


def test_a_refused_move_raises_imaplib_error(filled):
    with pytest.raises(imaplib.IMAP4.error, match="UID MOVE: NO"):
        uid_move(filled, "1:5", "No such folder")
    assert filled.noop()[0] == "OK"
    assert len(filled.uid("SEARCH", "ALL")[1][0].split()) == 61  # nothing moved
