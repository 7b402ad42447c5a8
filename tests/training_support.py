"""Helpers for the classify/evaluate/train CLI tests and the retraining-from-IMAP tests: a small
corpus written to JSONL files, a model trained on it, .eml files, and messages the small model
gets wrong (with near copies) to correct.
"""

from __future__ import annotations

from dataclasses import replace
from email.message import EmailMessage
from pathlib import Path

from classify_support import synthetic

from mailsort.classify.data import Example, save_examples
from mailsort.classify.model import Classifier
from mailsort.classify.train import fit

# Critical mail the small synthetic model has never seen the like of, each with a near copy (other
# greeting, other words, same matter). The tests pick the first one the model gets wrong.
MISSED = [
    (("Photo on the team page",
      "Hello,\nthe photos on the team page were replaced by pictures of pills and a link to a pharmacy.\n"
      "Best regards, Ann"),
     ("Team page photos",
      "Hi Marco,\nthe photos on our team page have been replaced by pictures of pills with a link to some "
      "pharmacy!\nTom")),
    (("SSL certificate", "Hello,\ncould you check: the SSL certificate of the shop expired last night.\nThanks"),
     ("certificate", "Hi Marco,\nplease check, the shop's SSL certificate expired tonight!\nTom")),
    (("Domain", "Hello,\nthe domain expired yesterday and now the address shows a parking page from the "
      "registrar.\nThanks, Ann"),
     ("our domain", "Hi,\nour domain has expired, the address now shows a registrar parking page.\nTom")),
]
ROUTINE_SAMPLE = ("Photo", "Hello,\nplease add a new photo of Maria to the team page.\nThanks")


def small_corpus() -> tuple[list[Example], list[Example]]:
    """(train, valid): a few hundred synthetic examples in en/it/es/ru; validation from another seed."""
    return synthetic(40, seed=0), synthetic(30, seed=1)


def write_corpus(directory: Path) -> tuple[Path, Path]:
    train, valid = small_corpus()
    directory.mkdir(parents=True, exist_ok=True)
    save_examples(train, directory / "train.jsonl")
    save_examples(valid, directory / "valid.jsonl")
    return directory / "train.jsonl", directory / "valid.jsonl"


def flipped(examples: list[Example], prefix: str = "flip") -> list[Example]:
    return [replace(e, id=f"{prefix}-{e.id}", label="routine" if e.critical else "critical") for e in examples]


def base_model(path: Path) -> Classifier:
    """The model trained on small_corpus(), saved at `path` (with its card)."""
    train, valid = small_corpus()
    classifier = fit(train, valid=valid)
    classifier.save(path)
    return classifier


def eml(subject: str, body: str, message_id: str = "", sender: str = "Ann <ann@client.example>") -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = "owner@example.org"
    msg["Subject"] = subject
    msg["Date"] = "Wed, 25 Nov 2026 09:30:00 +0100"
    if message_id:
        msg["Message-ID"] = message_id
    msg.set_content(body)
    return msg.as_bytes()


def first_missed(classifier: Classifier) -> tuple[tuple[str, str], tuple[str, str]]:
    """The first MISSED pair whose message and near copy the model both calls routine."""
    for missed, near in MISSED:
        if all(v.label == "routine" for v in classifier.predict([missed, near])):
            return missed, near
    raise AssertionError("the small model gets every MISSED message right: add a harder one to MISSED")
