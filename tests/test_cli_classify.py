"""The classifier commands: `mailsort classify`, `mailsort evaluate`, `mailsort train`."""

from __future__ import annotations

import hashlib
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from training_support import base_model, eml, flipped, small_corpus, write_corpus

from mailsort.classify.data import load_examples, save_examples
from mailsort.classify.model import default_model_path, load_classifier, shipped_model_path, user_model_path
from mailsort.cli import main
from mailsort.message import parse

CRITICAL_IT = ("Urgente", "Buongiorno,\nil sito è giù, tutte le pagine danno errore 500.\nGrazie")
ROUTINE_RU = ("Вопрос", "Здравствуйте,\nпоменяйте пожалуйста телефон на странице контактов.\nСпасибо")


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No user config, no user model, no $MAILSORT_MODEL from the machine running the tests."""
    monkeypatch.setenv("MAILSORT_CONFIG", str(tmp_path / "no-config.toml"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.delenv("MAILSORT_MODEL", raising=False)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, Path]:
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "small.joblib"
    base_model(path)
    return path


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------- classify


def test_classify_prints_label_probability_and_language(tmp_path, capsys, model) -> None:
    crit, rout = tmp_path / "crit.eml", tmp_path / "rout.eml"
    crit.write_bytes(eml(*CRITICAL_IT))
    rout.write_bytes(eml(*ROUTINE_RU))
    code, out, err = run(capsys, "classify", "--model", model, crit, rout)
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"{crit}: critical") and "language it" in lines[0]
    assert lines[1].startswith(f"{rout}: routine") and "language ru" in lines[1]

    code, out, _ = run(capsys, "classify", "--json", "--model", model, crit, rout)
    docs = [json.loads(line) for line in out.splitlines()]
    assert [set(d) for d in docs] == [{"file", "label", "p_critical", "language"}] * 2
    # the probabilities are the model's own for the parsed messages
    classifier = load_classifier(model)
    messages = [parse(p.read_bytes()) for p in (crit, rout)]
    expected = classifier.scores([(m.subject, m.text) for m in messages])
    assert np.allclose([d["p_critical"] for d in docs], expected, atol=1e-4)
    assert [d["label"] for d in docs] == ["critical", "routine"]
    assert docs[0]["p_critical"] >= classifier.threshold > docs[1]["p_critical"]


def test_classify_reads_standard_input(capsys, monkeypatch, model) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(eml(*CRITICAL_IT))))
    code, out, _ = run(capsys, "classify", "--json", "--model", model, "-")
    assert code == 0
    doc = json.loads(out)
    assert (doc["file"], doc["label"], doc["language"]) == ("-", "critical", "it")


def test_classify_uses_the_configured_model(tmp_path, capsys, model, monkeypatch) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[calendar]\ntimezone = "Europe/Rome"\n[calendar.hours]\nmon = ["09:00-17:00"]\n'
                      f'[classifier]\nmodel = "{model}"\n')
    monkeypatch.setenv("MAILSORT_CONFIG", str(config))
    (tmp_path / "m.eml").write_bytes(eml(*ROUTINE_RU))
    broken = tmp_path / "broken.joblib"
    monkeypatch.setenv("MAILSORT_MODEL", str(broken))  # would fail: the config must win
    code, out, err = run(capsys, "classify", tmp_path / "m.eml")
    assert code == 0, err
    assert ": routine" in out


@pytest.mark.parametrize("content, expected", [(None, "cannot read"), (b"\n\n", "not a mail message")])
def test_classify_bad_file_is_one_line_exit_2(tmp_path, capsys, model, content, expected) -> None:
    path = tmp_path / "x.eml"
    if content is not None:
        path.write_bytes(content)
    code, out, err = run(capsys, "classify", "--model", model, path)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and expected in err and str(path) in err
    assert "Traceback" not in err


def test_classify_refuses_a_tampered_model(tmp_path, capsys, model) -> None:
    copy = tmp_path / "m.joblib"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    copy.with_suffix(".json").write_bytes(model.with_suffix(".json").read_bytes())
    (tmp_path / "a.eml").write_bytes(eml(*CRITICAL_IT))
    code, out, err = run(capsys, "classify", "--model", copy, tmp_path / "a.eml")
    assert code == 1
    assert out == ""
    assert err.count("\n") == 1 and "sha256" in err and "Traceback" not in err


# ------------------------------------------------------------------------------------- evaluate


def test_evaluate_json_counts_every_prediction(capsys, model, corpus) -> None:
    _, valid = corpus
    examples = load_examples(valid)
    code, out, err = run(capsys, "evaluate", "--json", "--model", model, valid)
    assert code == 0, err
    report = json.loads(out)
    classifier = load_classifier(model)
    predicted = classifier.scores([(e.subject, e.body) for e in examples]) >= classifier.threshold
    truth = np.array([e.critical for e in examples])
    assert report["n"] == len(examples)
    assert report["confusion"] == [[int(np.sum(~truth & ~predicted)), int(np.sum(~truth & predicted))],
                                   [int(np.sum(truth & ~predicted)), int(np.sum(truth & predicted))]]
    tp = int(np.sum(truth & predicted))
    assert report["critical"]["recall"] == round(tp / truth.sum(), 4)
    assert report["critical"]["precision"] == round(tp / predicted.sum(), 4)
    assert set(report["by_language"]) == {"en", "it", "es", "ru"}
    for lang, m in report["by_language"].items():
        sel = np.array([e.lang == lang for e in examples])
        assert m["n"] == int(sel.sum())
        assert m["critical_recall"] == round(int(np.sum(truth & predicted & sel)) / int(np.sum(truth & sel)), 4)
        assert {"precision", "recall", "f1"} <= set(m["critical"]) and {"precision", "recall", "f1"} <= set(m["routine"])


def test_evaluate_text_shows_languages_and_confusion(tmp_path, capsys, model, corpus) -> None:
    train, _ = small_corpus()
    data = tmp_path / "flipped.jsonl"
    save_examples(flipped(train[::7]), data)  # a model scored on flipped labels gets most wrong
    code, out, err = run(capsys, "evaluate", "--model", model, data)
    assert code == 0, err
    lines = out.splitlines()
    for lang in ("all", "en", "it", "es", "ru"):
        assert any(line.startswith(f"{lang} ") for line in lines), lang
    assert "confusion" in out and "precision" in out and "recall" in out
    report = json.loads(run(capsys, "evaluate", "--json", "--model", model, data)[1])
    (tn, fp), (fn, tp) = report["confusion"]
    assert fn + fp > tn + tp  # really scored: the flipped labels are mostly "wrong"
    assert any(line.split()[-2:] == [str(tn), str(fp)] for line in lines)


def test_evaluate_bad_line_names_file_and_line(tmp_path, capsys, model, corpus) -> None:
    _, valid = corpus
    bad = tmp_path / "bad.jsonl"
    lines = valid.read_text(encoding="utf-8").splitlines()
    bad.write_text("\n".join([lines[0], lines[1], '{"id": "x", "lang": "en"', lines[2]]) + "\n", encoding="utf-8")
    code, out, err = run(capsys, "evaluate", "--model", model, bad)
    assert code == 2
    assert f"{bad}:3" in err and err.count("\n") == 1 and "Traceback" not in err
    code, _, err = run(capsys, "evaluate", "--model", model, tmp_path / "missing.jsonl")
    assert code == 2 and "no such file" in err


def test_evaluate_report_writes_pngs(tmp_path, capsys, model, corpus) -> None:
    _, valid = corpus
    out_dir = tmp_path / "charts"
    code, out, err = run(capsys, "evaluate", "--json", "--model", model, "--report", out_dir, valid)
    assert code == 0, err
    written = sorted(Path(p).name for p in json.loads(out)["report"])
    assert written == sorted(["confusion.png", "precision_recall.png"]
                             + [f"confusion_{lang}.png" for lang in ("en", "es", "it", "ru")])
    for name in written:
        data = (out_dir / name).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 2000


def test_evaluate_report_without_matplotlib(tmp_path, capsys, model, corpus, monkeypatch) -> None:
    _, valid = corpus
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails as if not installed
    code, out, err = run(capsys, "evaluate", "--model", model, "--report", tmp_path / "r", valid)
    assert code == 2
    assert out == ""
    assert "mailsort[report]" in err and err.count("\n") == 1
    assert not (tmp_path / "r").exists()


# ------------------------------------------------------------------------------------- train


def test_train_installs_and_keeps_the_previous_model(tmp_path, capsys, model, corpus) -> None:
    train, valid = corpus
    out_path = tmp_path / "models" / "mine.joblib"
    out_path.parent.mkdir()
    out_path.write_bytes(model.read_bytes())
    out_path.with_suffix(".json").write_bytes(model.with_suffix(".json").read_bytes())
    before = sha(out_path)
    code, out, err = run(capsys, "train", "--data", train, "--valid", valid, "--out", out_path)
    assert code == 0, err
    assert "accepted" in out and f"installed {out_path}" in out
    assert "cross-validation fold" in err  # progress on stderr
    prev = out_path.with_name("mine.prev.joblib")
    assert sha(prev) == before
    new = load_classifier(out_path)
    assert new.card["training"]["size"] == len(load_examples(train))
    assert new.card["retrain"]["validation"]["n"] == len(load_examples(valid))


def test_train_refuses_a_worse_model_and_force_overrides(tmp_path, capsys, model, corpus) -> None:
    train, valid = corpus
    out_path = tmp_path / "mine.joblib"
    out_path.write_bytes(model.read_bytes())
    out_path.with_suffix(".json").write_bytes(model.with_suffix(".json").read_bytes())
    before = sha(out_path)
    bad = tmp_path / "flipped.jsonl"
    save_examples(flipped(load_examples(train)), bad)

    code, out, err = run(capsys, "train", "--data", bad, "--valid", valid, "--out", out_path, "--json")
    assert code == 1
    doc = json.loads(out)
    assert doc["accepted"] is False and doc["installed"] is False
    assert doc["reason"].startswith("refused")
    # trained on flipped labels, it either misses critical mail or calls everything critical
    assert doc["new"]["critical_recall"] < 0.95 or doc["new"]["macro_f1"] < doc["old"]["macro_f1"] - 0.01
    assert ("recall" in doc["reason"].split(":")[1]) or "more than 1 point below" in doc["reason"]
    assert sha(out_path) == before
    assert not out_path.with_name("mine.prev.joblib").exists()

    code, out, err = run(capsys, "train", "--data", bad, "--valid", valid, "--out", out_path)
    assert code == 1 and out == ""
    assert "refused" in err and "--force" in err and str(out_path) in err

    code, out, err = run(capsys, "train", "--data", bad, "--valid", valid, "--out", out_path, "--force")
    assert code == 0, err
    assert "forced" in out
    assert sha(out_path.with_name("mine.prev.joblib")) == before
    assert sha(out_path) != before


def test_train_dry_run_installs_nothing(tmp_path, capsys, corpus) -> None:
    train, valid = corpus
    out_path = tmp_path / "new.joblib"
    code, out, err = run(capsys, "train", "--data", train, "--valid", valid, "--out", out_path, "--dry-run")
    assert code == 0, err
    assert f"dry run: would install {out_path}" in out
    assert not out_path.exists() and not out_path.with_suffix(".json").exists()


def test_train_default_out_is_the_user_model_not_the_shipped_one(tmp_path, capsys, corpus, monkeypatch) -> None:
    train, valid = corpus
    shipped = shipped_model_path()
    shipped_sha = sha(shipped) if shipped.exists() else None
    # judged against the shipped model (the one in use): the small corpus's own validation split
    code, out, err = run(capsys, "train", "--data", train, "--valid", valid, "--json", "--force")
    assert code == 0, err
    doc = json.loads(out)
    user = tmp_path / "data" / "mailsort" / "models" / "user.joblib"
    assert user_model_path() == user
    assert doc["installed"] and doc["out"] == str(user)
    assert load_classifier(user).card["training"]["size"] == len(load_examples(train))
    assert default_model_path() == user  # sync, explain, classify now use it
    if shipped_sha is not None:
        assert sha(shipped) == shipped_sha

    monkeypatch.setenv("MAILSORT_MODEL", str(shipped))
    code, _, err = run(capsys, "train", "--data", train, "--valid", valid)
    assert code == 2 and "shipped model" in err and "--out" in err


def test_train_bad_data_is_one_line(tmp_path, capsys, corpus) -> None:
    _, valid = corpus
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "lang": "en", "subject": "s", "body": "b", "label": "urgent", "source": "x"}\n')
    code, out, err = run(capsys, "train", "--data", bad, "--valid", valid, "--out", tmp_path / "m.joblib")
    assert code == 2
    assert f"{bad}:1" in err and "label" in err and err.count("\n") == 1 and "Traceback" not in err
    code, _, err = run(capsys, "train", "--data", tmp_path / "none.jsonl", "--valid", valid,
                       "--out", tmp_path / "m.joblib")
    assert code == 2 and "no such file" in err


def test_train_refuses_a_current_model_it_cannot_verify(tmp_path, capsys, model, corpus) -> None:
    train, valid = corpus
    out_path = tmp_path / "mine.joblib"
    out_path.write_bytes(model.read_bytes() + b"x")
    out_path.with_suffix(".json").write_bytes(model.with_suffix(".json").read_bytes())
    code, out, err = run(capsys, "train", "--data", train, "--valid", valid, "--out", out_path)
    assert code == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith("mailsort: error:") and "sha256" in last and "--force" in last
    assert "Traceback" not in err
    code, out, err = run(capsys, "train", "--data", train, "--valid", valid, "--out", out_path, "--force")
    assert code == 0, err
    assert "no current model" in out  # the unverifiable one was not compared with, only replaced
    assert load_classifier(out_path).card["training"]["size"] == len(load_examples(train))
