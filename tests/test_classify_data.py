"""Corpus files: strict reading with file:line errors, round trip, digest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from classify_support import synthetic

from mailsort.classify.data import digest, load_examples, save_examples
from mailsort.errors import UsageError

GOOD = {"id": "en-x-1", "lang": "en", "subject": "s", "body": "b", "label": "critical", "source": "authored/en/x"}


def write(tmp_path: Path, *objs: object) -> Path:
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(o if isinstance(o, str) else json.dumps(o, ensure_ascii=False) for o in objs) + "\n",
                    encoding="utf-8")
    return path


def test_round_trip_and_digest(tmp_path: Path) -> None:
    data = synthetic(3)
    save_examples(data, tmp_path / "a.jsonl")
    back = load_examples(tmp_path / "a.jsonl")
    assert back == data
    assert digest(back) == digest(data)
    assert digest(back[1:]) != digest(data)
    assert "weight" not in (tmp_path / "a.jsonl").read_text()


@pytest.mark.parametrize(("bad", "message"), [
    ("{not json", "invalid JSON"),
    ({**GOOD, "label": "urgent"}, "label"),
    ({k: v for k, v in GOOD.items() if k != "body"}, "missing field(s) body"),
    ({**GOOD, "subject": 3}, "'subject' must be a string"),
    ({**GOOD, "subject": "", "body": " "}, "both empty"),
    ({**GOOD, "weight": -1}, "weight"),
    ([1, 2], "JSON object"),
])
def test_bad_lines_name_file_and_line(tmp_path: Path, bad: object, message: str) -> None:
    path = write(tmp_path, GOOD | {"id": "ok-1"}, bad)
    with pytest.raises(UsageError) as info:
        load_examples(path)
    assert f"{path}:2:" in str(info.value)
    assert message in str(info.value)


def test_duplicate_id(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="already used on line 1"):
        load_examples(write(tmp_path, GOOD, GOOD))


def test_weight_and_blank_lines(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD | {"weight": 3}, "", GOOD | {"id": "b", "lang": " IT "})
    a, b = load_examples(path)
    assert a.weight == 3.0 and b.weight == 1.0 and b.lang == "it"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such file"):
        load_examples(tmp_path / "nope.jsonl")


def _build_corpus_module():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "scripts" / "build_corpus.py"
    spec = importlib.util.spec_from_file_location("build_corpus", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _batches(sizes: dict[str, int]) -> list:
    from mailsort.classify.data import Example

    return [Example(id=f"{name}-{i}", lang="en", subject="s", body=f"b {i}", label="routine",
                    source=f"authored/en/{name}") for name, n in sizes.items() for i in range(n)]


def test_pinned_batches_keep_their_split_when_data_is_added(tmp_path: Path) -> None:
    bc = _build_corpus_module()
    sizes = {"a": 50, "b": 50, "c": 50, "d": 50, "e": 50, "generated": 40}
    first = bc.assign_splits(_batches(sizes), seed=0)
    held = {s: sp for s, sp in first.items() if sp != "train"}
    assert "test" in held.values() and "authored/en/generated" not in held
    bc.write_manifest(tmp_path / "splits.json", first)
    pinned = bc.read_manifest(tmp_path / "splits.json")
    assert pinned == held
    # two new batches dilute the pinned test share below 20 %: the old test batches stay in test,
    # and unpinned batches top the share up again
    more = bc.assign_splits(_batches({**sizes, "f": 60, "g": 60}), seed=0, pinned=pinned)
    for source, split in held.items():
        assert more[source] == split
    total = sum(sizes.values()) + 120
    in_test = sum(n for name, n in {**sizes, "f": 60, "g": 60}.items() if more[f"authored/en/{name}"] == "test")
    assert in_test >= 0.2 * total
    assert more["authored/en/generated"] == "train"


def test_manifest_refuses_a_batch_in_two_splits(tmp_path: Path) -> None:
    bc = _build_corpus_module()
    path = tmp_path / "splits.json"
    path.write_text(json.dumps({"valid": ["authored/en/a"], "test": ["authored/en/a"]}), encoding="utf-8")
    with pytest.raises(UsageError, match="both"):
        bc.read_manifest(path)
