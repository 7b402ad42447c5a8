"""The policy over (critical | routine) × (open | closed | absence), robots, age, clients and config overrides."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from mailsort.calendar import WorkCalendar
from mailsort.config import parse_config
from mailsort.errors import ConfigError
from mailsort.policy import DEFAULT_RULES, History, Settings, decide, return_day

from mails import message

TZ = ZoneInfo("Europe/Madrid")
OPEN = datetime(2026, 11, 25, 11, 0, tzinfo=TZ)       # Wednesday 11:00
CLOSED = datetime(2026, 11, 27, 21, 0, tzinfo=TZ)     # Friday 21:00 -> opens Monday 30th 09:00
IN_ABSENCE = datetime(2026, 12, 28, 11, 0, tzinfo=TZ)  # Monday, inside the Christmas absence
MONDAY_0900 = datetime(2026, 11, 30, 9, 0, tzinfo=TZ)


@dataclass(frozen=True)
class V:
    label: str
    p_critical: float = 0.5


def _raw_config(notify="command", **replies):
    return {
        "calendar": {"timezone": "Europe/Madrid",
                     "hours": {d: ["09:00-17:30"] for d in ("mon", "tue", "wed", "thu", "fri")},
                     "absence": [{"start": date(2026, 12, 24), "end": date(2027, 1, 6), "note": "Christmas"}]},
        "replies": {"owner_name": "Ana", **replies},
        "notify": {"kind": notify, "command": "cat"} if notify == "command" else {"kind": notify},
        "account": [{"name": "work", "addresses": ["me@example.org"], "imap": {"host": "127.0.0.1", "security": "none"}}],
        "client": [{"name": "Acme", "domains": ["acme.example"], "language": "es"},
                   {"name": "Rossi", "addresses": ["maria@client.example"]}],
    }


def config(policy=None, notify="command", **replies):
    data = _raw_config(notify, **replies)
    if policy is not None:
        data["policy"] = policy
    return parse_config(data)


def run(msg=None, label="routine", now=OPEN, history=History(), cfg=None):
    cfg = cfg or config()
    calendar = WorkCalendar.from_config(cfg.calendar)
    msg = msg or message(date=now)
    return decide(msg, V(label), calendar, history, now, Settings.from_config(cfg, cfg.accounts[0]))


def kinds(decision):
    """The actions, without the client label (the default sender is client Rossi; see the client tests)."""
    return [(a.type, a.target or a.template) for a in decision.actions if not a.target.startswith("Client/")]


def client_labels(decision):
    return [a.target for a in decision.of_type("label") if a.target.startswith("Client/")]


def test_critical_open_labels_and_flags_only():
    d = run(label="critical", now=OPEN)
    assert d.situation == "critical_open" and d.open_now
    assert kinds(d) == [("label", "Critical"), ("flag", "\\Flagged")]
    assert d.auto_reply_allowed


def test_critical_closed_acknowledges_at_once_and_notifies():
    d = run(label="critical", now=CLOSED, msg=message(date=CLOSED))
    assert kinds(d) == [("label", "Critical"), ("flag", "\\Flagged"), ("reply", "critical_ack"), ("notify", "command")]
    reply = d.of_type("reply")[0]
    assert reply.send_at == CLOSED and reply.to == "maria@client.example" and reply.language == "en"


def test_routine_open_labels_only():
    d = run(label="routine", now=OPEN)
    assert kinds(d) == [("label", "Routine")]
    assert d.of_type("reply") == ()


def test_routine_closed_moves_and_queues_after_hours_for_the_next_opening():
    d = run(label="routine", now=CLOSED, msg=message(date=CLOSED))
    assert kinds(d) == [("label", "Routine"), ("move", "Later"), ("reply", "after_hours")]
    assert d.of_type("reply")[0].send_at == MONDAY_0900


@pytest.mark.parametrize("label,expected", [
    ("routine", [("label", "Routine"), ("move", "Later"), ("reply", "absence")]),
    ("critical", [("label", "Critical"), ("flag", "\\Flagged"), ("reply", "absence"), ("notify", "command")]),
])
def test_absence_replies_at_once(label, expected):
    d = run(label=label, now=IN_ABSENCE, msg=message(date=IN_ABSENCE))
    assert d.situation == f"{label}_absence"
    assert kinds(d) == expected
    assert d.of_type("reply")[0].send_at == IN_ABSENCE


def test_absence_notice_only_once_per_sender_per_absence():
    earlier = History(replies=(("absence", IN_ABSENCE - timedelta(days=4, hours=1)),))  # beyond min_days (4)
    d = run(now=IN_ABSENCE, msg=message(date=IN_ABSENCE), history=earlier)
    assert d.of_type("reply") == ()
    assert "already told about this absence" in d.auto_reply_reason
    assert ("move", "Later") in kinds(d)


def test_return_day_is_the_first_working_day_after_the_absence():
    cfg = config()
    calendar = WorkCalendar.from_config(cfg.calendar)
    assert return_day(calendar, cfg.calendar.absences[0]) == date(2027, 1, 7)  # Thursday after Jan 6


@pytest.mark.parametrize("label", ["critical", "routine"])
@pytest.mark.parametrize("extra", [{"List-Id": "<x.lists.example>"}, {"Auto-Submitted": "auto-generated"},
                                   {"Return-Path": "<>"}])
def test_robots_are_labelled_by_content_never_moved_flagged_or_answered(label, extra):
    d = run(label=label, now=CLOSED, msg=message(date=CLOSED, extra=extra))
    assert d.situation == f"{label}_robot" and d.robot
    assert kinds(d) == [("label", label.capitalize())]
    assert not d.auto_reply_allowed


def test_mail_from_ourselves_is_a_robot_situation():
    d = run(now=CLOSED, msg=message(date=CLOSED, sender="me@example.org"))
    assert d.situation == "routine_robot" and kinds(d) == [("label", "Routine")]


def test_recently_answered_sender_is_still_moved_but_not_answered():
    history = History(replies=(("after_hours", CLOSED - timedelta(days=1)),))
    d = run(now=CLOSED, msg=message(date=CLOSED), history=history)
    assert kinds(d) == [("label", "Routine"), ("move", "Later")]
    assert not d.auto_reply_allowed and "already got an automatic reply" in d.auto_reply_reason


def test_old_mail_is_never_answered_nor_notified():
    d = run(label="critical", now=CLOSED, msg=message(date=CLOSED - timedelta(days=400)))
    assert kinds(d) == [("label", "Critical"), ("flag", "\\Flagged")]
    assert "older than 3 days" in d.auto_reply_reason


def test_mail_without_a_date_is_not_answered():
    d = run(now=CLOSED, msg=message(date=None))
    assert d.of_type("reply") == () and "Date" in d.auto_reply_reason


def test_replies_off():
    d = run(now=CLOSED, msg=message(date=CLOSED), cfg=config(mode="off"))
    assert d.of_type("reply") == () and ("move", "Later") in kinds(d)


def test_no_notify_action_without_a_notifier():
    d = run(label="critical", now=CLOSED, msg=message(date=CLOSED), cfg=config(notify="none"))
    assert d.of_type("notify") == ()


# ------------------------------------------------------------------------------ clients and languages


def test_client_by_address_and_language_from_message():
    d = run(now=CLOSED, msg=message(date=CLOSED, lang="it"))
    assert d.client == "Rossi"
    assert d.of_type("reply")[0].language == "it"


@pytest.mark.parametrize("label,now", [("routine", OPEN), ("critical", CLOSED), ("routine", IN_ABSENCE)])
def test_client_mail_gets_the_client_label_in_every_situation(label, now):
    d = run(label=label, now=now, msg=message(date=now))
    assert [a.target for a in d.of_type("label")] == [label.capitalize(), "Client/Rossi"]


def test_client_robot_mail_is_labelled_too_and_strangers_get_no_client_label():
    robot = run(now=CLOSED, msg=message(date=CLOSED, sender="alerts@acme.example", extra={"Auto-Submitted": "auto-generated"}))
    assert robot.robot and client_labels(robot) == ["Client/Acme"]
    stranger = run(now=CLOSED, msg=message(date=CLOSED, sender="someone@elsewhere.example"))
    assert stranger.client is None and client_labels(stranger) == []


def test_most_specific_client_wins_and_the_prefix_comes_from_the_config():
    cfg = parse_config({**_raw_config(), "labels": {"client_prefix": "Clienti/"},
                        "client": [{"name": "Acme", "domains": ["acme.example"]},
                                   {"name": "Acme Shop", "domains": ["shop.acme.example"]}]})
    d = run(now=OPEN, msg=message(date=OPEN, sender="orders@eu.shop.acme.example"), cfg=cfg)
    assert d.client == "Acme Shop" and client_labels(d) == [] and ("label", "Clienti/Acme Shop") in [
        (a.type, a.target) for a in d.actions]


def test_a_label_rule_switched_off_means_no_client_label_either():
    d = run(now=OPEN, cfg=config(policy={"routine_open": {"label": False}}))
    assert d.of_type("label") == ()


def test_client_by_subdomain_and_its_configured_language_wins():
    msg = message(date=CLOSED, lang="it", sender="Luigi <luigi@mail.acme.example>")
    d = run(now=CLOSED, msg=msg)
    assert d.client == "Acme"
    assert d.of_type("reply")[0].language == "es"


def test_language_without_template_falls_back_to_default():
    msg = message(date=CLOSED, sender="hans@example.de",
                  body="Guten Tag, können Sie bitte die Öffnungszeiten auf unserer Webseite ändern? Vielen Dank.")
    assert msg.language == "de"
    d = run(now=CLOSED, msg=msg, cfg=config(default_language="it"))
    assert d.client is None
    assert d.of_type("reply")[0].language == "it"


# ------------------------------------------------------------------------------ expectations


def test_first_contact_during_hours_gets_the_expectations_note():
    d = run(now=OPEN, history=History(seen_before=False))
    assert kinds(d) == [("label", "Routine"), ("reply", "expectations")]
    assert d.of_type("reply")[0].send_at == OPEN


def test_first_contact_after_hours_gets_one_reply_only():
    d = run(now=CLOSED, msg=message(date=CLOSED), history=History(seen_before=False))
    assert [a.template for a in d.of_type("reply")] == ["after_hours"]


def test_no_expectations_for_critical_mail_or_when_disabled():
    assert run(label="critical", now=OPEN, history=History(seen_before=False)).of_type("reply") == ()
    assert run(now=OPEN, history=History(seen_before=False), cfg=config(expectations=False)).of_type("reply") == ()


# ------------------------------------------------------------------------------ overrides from config


def test_override_reply_at_once_and_no_move():
    cfg = config(policy={"routine_closed": {"reply": "at_once", "move": False}})
    d = run(now=CLOSED, msg=message(date=CLOSED), cfg=cfg)
    assert kinds(d) == [("label", "Routine"), ("reply", "after_hours")]
    assert d.of_type("reply")[0].send_at == CLOSED


def test_override_custom_folder_and_flag_for_robot_shorthand():
    cfg = config(policy={"routine_closed": {"move": "Evening"}, "robot": {"flag": True}})
    assert ("move", "Evening") in kinds(run(now=CLOSED, msg=message(date=CLOSED), cfg=cfg))
    robot = run(now=CLOSED, msg=message(date=CLOSED, extra={"Precedence": "bulk"}), cfg=cfg)
    assert kinds(robot) == [("label", "Routine"), ("flag", "\\Flagged")]


def test_override_critical_open_reply_with_template():
    cfg = config(policy={"critical_open": {"reply": "at_once", "template": "critical_ack"}})
    assert ("reply", "critical_ack") in kinds(run(label="critical", now=OPEN, cfg=cfg))


def test_override_reply_false_disables_the_reply():
    cfg = config(policy={"critical_closed": {"reply": False, "notify": False}})
    assert kinds(run(label="critical", now=CLOSED, msg=message(date=CLOSED), cfg=cfg)) == [
        ("label", "Critical"), ("flag", "\\Flagged")]


@pytest.mark.parametrize("policy,key", [
    ({"weekend": {}}, "policy.weekend"),
    ({"routine_closed": {"reply": "tomorrow"}}, "policy.routine_closed.reply"),
    ({"routine_closed": {"colour": "red"}}, "policy.routine_closed.colour"),
    ({"routine_closed": {"flag": "yes"}}, "policy.routine_closed.flag"),
    ({"routine_closed": {"move": 3}}, "policy.routine_closed.move"),
    ({"routine_closed": {"template": "../etc/passwd"}}, "policy.routine_closed.template"),
    ({"routine_open": {"reply": "at_once"}}, "policy.routine_open.template"),
    ({"robot": {"reply": "at_once", "template": "after_hours"}}, "policy.robot.reply"),
    ({"routine_closed": "at_once"}, "policy.routine_closed"),
])
def test_bad_overrides_name_the_key(policy, key):
    with pytest.raises(ConfigError) as err:
        config(policy=policy)
    assert str(err.value).startswith(key + ":")


def test_default_table_matches_the_design():
    assert DEFAULT_RULES["routine_closed"].reply == "next_opening"
    assert DEFAULT_RULES["critical_closed"].notify and DEFAULT_RULES["critical_closed"].template == "critical_ack"
    assert all(DEFAULT_RULES[s].reply == "never" for s in ("critical_robot", "routine_robot", "critical_open", "routine_open"))


# ------------------------------------------------------------------------------ what is remembered


def test_what_one_settings_remembers_is_not_seen_by_another():
    """The fixed actions and the client index are remembered per Settings object."""
    plain = config()
    renamed = parse_config({**_raw_config(), "labels": {"critical": "Urgent", "client_prefix": "C:"},
                            "folders": {"later": "Tomorrow"}, "client": [{"name": "Rossi", "domains": ["client.example"]},
                                                                         {"name": "Other", "domains": ["other.example"]}]})
    for _ in range(2):  # asked twice: the second time from what the first remembered
        a = run(label="critical", now=CLOSED, msg=message(date=CLOSED), cfg=plain)
        b = run(label="critical", now=CLOSED, msg=message(date=CLOSED), cfg=renamed)
        c = run(label="routine", now=CLOSED, msg=message(date=CLOSED, sender="x@other.example"), cfg=renamed)
        assert [a.target for a in a.of_type("label")] == ["Critical", "Client/Rossi"]
        assert [a.target for a in b.of_type("label")] == ["Urgent", "C:Rossi"]
        assert [(a.type, a.target) for a in c.actions if a.type != "reply"] == [
            ("label", "Routine"), ("label", "C:Other"), ("move", "Tomorrow")]


def test_a_decision_is_an_ordinary_frozen_record():
    """decide builds its Decision without __init__: it must still equal, hash and pickle like one built with it."""
    import pickle
    from dataclasses import FrozenInstanceError, fields

    from mailsort.policy import Decision

    d = run(label="critical", now=CLOSED, msg=message(date=CLOSED))
    same = Decision(**{f.name: getattr(d, f.name) for f in fields(Decision)})
    assert d == same and hash(d) == hash(same) and repr(d) == repr(same)
    assert pickle.loads(pickle.dumps(d)) == d
    with pytest.raises(FrozenInstanceError):
        d.label = "routine"
