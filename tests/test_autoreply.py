"""The RFC 3834 guard over a matrix of robots, lists, bounces, ourselves, no-reply senders and people."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from mailsort.autoreply import may_auto_reply, reply_address
from mailsort.policy import History

from mails import message

NOW = datetime(2026, 11, 27, 21, 0, tzinfo=timezone.utc)
OWN = ("me@example.org", "info@example.org")

ROBOTS = {
    "auto-submitted generated": {"extra": {"Auto-Submitted": "auto-generated"}},
    "auto-submitted replied": {"extra": {"Auto-Submitted": "auto-replied; owner=x"}},
    "precedence bulk": {"extra": {"Precedence": "bulk"}},
    "precedence list": {"extra": {"Precedence": "list"}},
    "precedence junk": {"extra": {"Precedence": "JUNK"}},
    "list-id": {"extra": {"List-Id": "<news.shop.example>"}},
    "list-unsubscribe": {"extra": {"List-Unsubscribe": "<mailto:unsub@shop.example>"}},
    "list-post": {"extra": {"List-Post": "<mailto:list@lists.example>"}},
    "suppress all": {"extra": {"X-Auto-Response-Suppress": "All"}},
    "suppress oof": {"extra": {"X-Auto-Response-Suppress": "DR, OOF"}},
    "x-autoreply": {"extra": {"X-Autoreply": "yes"}},
    "null return-path": {"extra": {"Return-Path": "<>"}},
    "multipart/report": {"content_type": "multipart/report; report-type=delivery-status; boundary=x",
                         "body": "--x\r\nContent-Type: text/plain\r\n\r\nDelivery failed\r\n--x--"},
    "mailer-daemon": {"sender": "Mail Delivery System <MAILER-DAEMON@mx.example>"},
    "postmaster": {"sender": "postmaster@mx.example"},
    "noreply": {"sender": "Shop <noreply@shop.example>"},
    "no-reply": {"sender": "no-reply@accounts.example"},
    "donotreply": {"sender": "DoNotReply@bank.example"},
    "do-not-reply": {"sender": "do-not-reply@bank.example"},
    "bounce": {"sender": "bounce@mailer.example"},
    "notifications": {"sender": "GitHub <notifications@github.example>"},
    "reply-to noreply": {"extra": {"Reply-To": "no_reply@crm.example"}},
    "ourselves": {"sender": "Me <me@example.org>"},
    "ourselves tagged": {"sender": "me+shop@example.org"},
    "ourselves via reply-to": {"extra": {"Reply-To": "info@example.org"}},
}


@pytest.mark.parametrize("case", sorted(ROBOTS))
def test_robots_lists_bounces_and_ourselves_are_refused(case):
    guard = may_auto_reply(message(date=NOW, **ROBOTS[case]), OWN, History(), NOW, 4)
    assert guard.allowed is False
    assert guard.robot is True
    assert guard.reason


def test_a_person_is_answered_at_their_from_address():
    guard = may_auto_reply(message(date=NOW), OWN, History(), NOW, 4)
    assert guard.allowed is True
    assert guard.to == "maria@client.example"
    assert guard.robot is False


def test_auto_submitted_no_is_a_person():
    assert may_auto_reply(message(extra={"Auto-Submitted": "no"}), OWN, (), NOW, 4).allowed


def test_reply_to_wins_over_from_and_return_path_is_not_used():
    msg = message(extra={"Reply-To": "Office <Office@Client.example>", "Return-Path": "<srs=abc@relay.example>"})
    assert reply_address(msg) == "office@client.example"
    assert may_auto_reply(msg, OWN, (), NOW, 4).to == "office@client.example"


def test_no_usable_address():
    guard = may_auto_reply(message(sender="Undisclosed recipients:;"), OWN, (), NOW, 4)
    assert not guard.allowed and not guard.robot
    assert "no usable address" in guard.reason


@pytest.mark.parametrize("days_ago,allowed", [(1, False), (3.9, False), (4.1, True), (30, True)])
def test_one_reply_per_sender_per_min_days(days_ago, allowed):
    history = History(replies=(("after_hours", NOW - timedelta(days=days_ago)),))
    guard = may_auto_reply(message(), OWN, history, NOW, 4)
    assert guard.allowed is allowed
    if not allowed:
        assert "already got an automatic reply" in guard.reason and not guard.robot


def test_a_reply_queued_for_later_counts_as_given():
    history = [("after_hours", NOW + timedelta(hours=12))]
    assert not may_auto_reply(message(), OWN, history, NOW, 4).allowed


def test_min_days_zero_never_blocks_on_history():
    history = [("after_hours", NOW - timedelta(minutes=1))]
    assert may_auto_reply(message(), OWN, history, NOW, 0).allowed


def test_answers_remembered_per_sender_follow_our_own_addresses():
    """The address checks are remembered per (sender, reply address, Return-Path, own addresses)."""
    msg = message(sender="Ops <ops@example.org>", date=NOW)
    assert may_auto_reply(msg, ("me@example.org",), (), NOW, 4).allowed
    refused = may_auto_reply(msg, ("me@example.org", "OPS+x@Example.org"), (), NOW, 4)
    assert not refused.allowed and refused.robot and "one of our own addresses" in refused.reason
    assert may_auto_reply(msg, ["me@example.org"], (), NOW, 4).allowed  # any iterable of addresses
    assert not may_auto_reply(msg, (a for a in ["ops@example.org"]), (), NOW, 4).allowed


def test_x_loop_needs_an_own_address_to_name():
    msg = message(date=NOW, extra={"X-Loop": "me@example.org"})
    assert not may_auto_reply(msg, OWN, (), NOW, 4).allowed
    assert may_auto_reply(msg, (), (), NOW, 4).allowed


@pytest.mark.parametrize("extra", [{"Auto-Submitted": "no"}, {"Precedence": "first-class"}, {"X-Auto-Response-Suppress": "RN"}])
def test_a_robot_header_that_says_person_still_leaves_the_bounce_checks(extra):
    bounce = may_auto_reply(message(sender="MAILER-DAEMON@mx.example", date=NOW, extra=extra), OWN, (), NOW, 4)
    assert not bounce.allowed and bounce.robot and bounce.reason == "sent by mailer-daemon@mx.example: a bounce"
    report = message(date=NOW, extra=extra, content_type="multipart/report; report-type=delivery-status; boundary=x",
                     body="--x\r\nContent-Type: text/plain\r\n\r\nDelivery failed\r\n--x--")
    assert "multipart/report" in may_auto_reply(report, OWN, (), NOW, 4).reason
    assert may_auto_reply(message(date=NOW, extra=extra), OWN, (), NOW, 4).allowed
