"""Shared fixtures: real Dovecot and aiosmtpd servers on 127.0.0.1, one mailbox user per test."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from servers import Dovecot, SmtpSink, start_dovecot, start_smtp  # noqa: E402

_user_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def dovecot(tmp_path_factory) -> Dovecot:
    """One Dovecot for the whole session; tests isolate themselves by using fresh users."""
    server = start_dovecot(tmp_path_factory.mktemp("dovecot"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def dovecot_without_move(tmp_path_factory) -> Dovecot:
    """A Dovecot that does not advertise MOVE (nor CONDSTORE/QRESYNC), like some older servers."""
    server = start_dovecot(tmp_path_factory.mktemp("dovecot-nomove"),
                           capability="IMAP4rev1 LITERAL+ SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT "
                                      "THREAD=REFERENCES MULTIAPPEND UNSELECT CHILDREN NAMESPACE UIDPLUS "
                                      "LIST-EXTENDED I18NLEVEL=1 ESEARCH SEARCHRES WITHIN CONTEXT=SEARCH "
                                      "LIST-STATUS BINARY SPECIAL-USE")
    yield server
    server.stop()


@pytest.fixture
def imap_user(dovecot, request) -> tuple[str, str]:
    """A brand-new mailbox user (empty INBOX) on the shared Dovecot."""
    name = f"u{next(_user_numbers)}-{request.node.name[:20]}".replace("[", "-").replace("]", "")
    name = "".join(c for c in name if c.isalnum() or c in "-_")
    return dovecot.add_user(name)


@pytest.fixture
def smtp_sink() -> SmtpSink:
    sink = start_smtp()
    yield sink
    sink.stop()
