"""The unpacked copy of py3langid's model (language._identifier): used when present, same answers,
and never a reason to fail."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROBE = """
import json, sys, time
from mailsort import language
texts = json.loads(sys.stdin.read())
identifier = language._identifier()
print(json.dumps({"languages": language.detect_languages(texts),
                  "scores": [[float(x) for x in identifier._decide(t)] for t in texts[:5]]}))
"""
TEXTS = ["Il sito non funziona da stamattina, potete controllare?", "Сайт не работает с утра, помогите",
         "The shop has been down since this morning.", "La tienda no carga desde esta mañana", "Hola",
         "Die Seite ist seit heute Morgen nicht erreichbar", "ok", "O site caiu, clientes não conseguem pagar",
         "Le site ne répond plus depuis ce matin"] * 2


def _detect(cache_dir: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE], input=json.dumps(TEXTS), capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "MAILSORT_CACHE_DIR": str(cache_dir), "HOME": str(cache_dir)},
                         cwd=ROOT, check=True)
    return json.loads(out.stdout)


def _copy(cache_dir: Path) -> Path:
    copies = list(cache_dir.glob("py3langid-*"))
    assert len(copies) == 1 and copies[0].is_dir()
    assert sum(f.stat().st_size for f in copies[0].iterdir()) > 10_000_000
    return copies[0]


def test_unpacked_once_then_reused_with_the_same_answers(tmp_path):
    first = _detect(tmp_path)  # unpacks py3langid's packed model and keeps a copy
    copy = _copy(tmp_path)
    made = {f.name: f.stat().st_mtime_ns for f in copy.iterdir()}
    second = _detect(tmp_path)  # maps the copy
    assert second == first
    assert {f.name: f.stat().st_mtime_ns for f in copy.iterdir()} == made  # read, not written again
    assert first["languages"][:9] == ["it", "ru", "en", "es", "und", "de", "und", "pt", "fr"]


def test_a_damaged_copy_is_ignored_and_replaced(tmp_path):
    expected = _detect(tmp_path)
    table = _copy(tmp_path) / "nextmove.npy"
    size = table.stat().st_size
    table.write_bytes(b"not an npy at all")
    assert _detect(tmp_path) == expected
    assert table.stat().st_size == size  # unpacked again


def test_a_copy_in_the_old_single_file_layout_is_replaced(tmp_path):
    expected = _detect(tmp_path)
    copy = _copy(tmp_path)
    old = tmp_path / (copy.name + ".npz")
    old.write_bytes(b"PK an npz of an earlier mailsort")
    for f in copy.iterdir():
        f.unlink()
    copy.rmdir()
    assert _detect(tmp_path) == expected
    assert not old.exists() and _copy(tmp_path).name == copy.name


def test_an_unwritable_cache_directory_changes_nothing(tmp_path):
    blocked = tmp_path / "file-not-dir"
    blocked.write_text("x")
    assert _detect(blocked / "cache") == _detect(tmp_path)
