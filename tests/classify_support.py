"""A small, deterministic labelled corpus for the classify tests (fast to train on).

Slot-filled messages in en/it/es/ru: the critical and routine cores are real-sounding requests;
greetings, names, fillers and signatures are shared by both labels so the model has to learn the
core, not the frame. `source` varies by "style" so grouped validation has groups to hold out.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

from mailsort.classify.data import Example, load_examples

ROOT = Path(__file__).resolve().parents[1]

CORES = {
    "en": {
        "critical": [
            "the website is down, every page shows error 500",
            "our shop checkout is broken, customers cannot pay",
            "the site has been hacked, it shows casino adverts",
            "nobody in the office receives email since this morning",
            "the database is empty, all orders disappeared",
            "google says our site is dangerous and blocks it",
            "someone logged into the admin and changed the passwords",
            "payments are failing with stripe, orders are lost",
        ],
        "routine": [
            "could you change the phone number on the contact page",
            "I forgot my password, can you send me a reset link",
            "a question about your last invoice",
            "can we meet next week to plan the newsletter",
            "please add a new photo to the team page",
            "how do I add a blog post myself",
            "thanks for the work last month, all good",
            "we would like a quote for a new landing page",
        ],
    },
    "it": {
        "critical": [
            "il sito è giù, tutte le pagine danno errore 500",
            "il checkout del negozio non funziona, i clienti non riescono a pagare",
            "il sito è stato hackerato, escono pubblicità di casinò",
            "in ufficio non arriva più nessuna mail da stamattina",
            "il database è vuoto, sono spariti tutti gli ordini",
            "google dice che il sito è pericoloso e lo blocca",
            "qualcuno è entrato nel pannello e ha cambiato le password",
            "i pagamenti con nexi vengono rifiutati, perdiamo ordini",
        ],
        "routine": [
            "potresti cambiare il numero di telefono nella pagina contatti",
            "ho dimenticato la password, mi mandi il link per reimpostarla",
            "una domanda sulla vostra ultima fattura",
            "possiamo vederci la prossima settimana per la newsletter",
            "aggiungi per favore una nuova foto nella pagina del team",
            "come faccio ad aggiungere un articolo al blog da solo",
            "grazie per il lavoro del mese scorso, tutto bene",
            "vorremmo un preventivo per una nuova landing page",
        ],
    },
    "es": {
        "critical": [
            "la web está caída, todas las páginas dan error 500",
            "el pago de la tienda no funciona, los clientes no pueden pagar",
            "han hackeado la web, salen anuncios de casino",
            "nadie en la oficina recibe correos desde esta mañana",
            "la base de datos está vacía, han desaparecido todos los pedidos",
            "google dice que la web es peligrosa y la bloquea",
            "alguien entró en el panel y cambió las contraseñas",
            "redsys rechaza todos los pagos, estamos perdiendo pedidos",
        ],
        "routine": [
            "puedes cambiar el teléfono en la página de contacto",
            "olvidé mi contraseña, me mandas un enlace para cambiarla",
            "una pregunta sobre vuestra última factura",
            "podemos vernos la semana que viene para el boletín",
            "añade por favor una foto nueva en la página del equipo",
            "cómo puedo publicar una entrada en el blog yo mismo",
            "gracias por el trabajo del mes pasado, todo bien",
            "queremos un presupuesto para una nueva landing",
        ],
    },
    "ru": {
        "critical": [
            "сайт не работает, на всех страницах ошибка 500",
            "на сайте не работает оплата, клиенты не могут заплатить",
            "сайт взломали, показывает рекламу казино",
            "с утра никто в офисе не получает почту",
            "база данных пустая, пропали все заказы",
            "google пишет что сайт опасный и блокирует его",
            "кто-то зашел в админку и поменял пароли",
            "платежи через юkassa отклоняются, теряем заказы",
        ],
        "routine": [
            "поменяйте пожалуйста телефон на странице контактов",
            "я забыл пароль, пришлите ссылку для восстановления",
            "вопрос по вашему последнему счету",
            "давайте созвонимся на следующей неделе по рассылке",
            "добавьте пожалуйста новое фото на страницу команды",
            "как мне самому добавить запись в блог",
            "спасибо за работу в прошлом месяце, все отлично",
            "нужна смета на новую посадочную страницу",
        ],
    },
}

FRAME = {
    "en": (["Hi Marco,", "Hello,", "Dear support,", ""], ["Thanks", "Best regards, Ann", "Tom"],
           ["Site", "Help", "Question", "", "Re: website"]),
    "it": (["Ciao Luca,", "Buongiorno,", "Salve,", ""], ["Grazie", "Cordiali saluti, Anna", "Marco"],
           ["Sito", "Aiuto", "Domanda", "", "R: sito"]),
    "es": (["Hola Raúl,", "Buenos días,", "Hola,", ""], ["Gracias", "Un saludo, Ana", "Pedro"],
           ["Web", "Ayuda", "Consulta", "", "RE: web"]),
    "ru": (["Добрый день,", "Здравствуйте,", "Привет,", ""], ["Спасибо", "С уважением, Анна", "Иван"],
           ["Сайт", "Помогите", "Вопрос", "", "Отв: сайт"]),
}


def synthetic(n_per_label: int = 24, seed: int = 0, styles: int = 4) -> list[Example]:
    """n_per_label examples per label and language, spread over `styles` sources."""
    rng = random.Random(seed)
    out: list[Example] = []
    for lang, cores in CORES.items():
        greetings, closings, subjects = FRAME[lang]
        for label, phrases in cores.items():
            for i in range(n_per_label):
                core = phrases[i % len(phrases)]
                body = f"{rng.choice(greetings)}\n{core}.\n{rng.choice(closings)}".strip()
                style = i % styles
                out.append(Example(
                    id=f"{lang}-{label}-{seed}-{i}", lang=lang, subject=rng.choice(subjects),
                    body=body, label=label, source=f"synthetic/{lang}/style{style}",
                ))
    return out


def real_subset(n_per_lang: int = 250) -> list[Example] | None:
    """A deterministic slice of the real training split, or None if the corpus is not built."""
    path = ROOT / "training_data" / "train.jsonl"
    if not path.exists():
        return None
    by_lang: dict[str, list[Example]] = {}
    for e in load_examples(path):
        by_lang.setdefault(e.lang, []).append(e)
    out: list[Example] = []
    for lang in ("en", "it", "es", "ru"):
        rows = by_lang.get(lang, [])
        out += rows[:: max(1, len(rows) // n_per_lang)][:n_per_lang]
    return out or None


def held_out() -> list[Example]:
    """The real validation and test splits (styles the shipped model never trained on), or a
    synthetic stand-in when the corpus is not built."""
    out: list[Example] = []
    for name in ("valid", "test"):
        path = ROOT / "training_data" / f"{name}.jsonl"
        if path.exists():
            out += load_examples(path)
    return out or synthetic(60, seed=7)


def save_format1(pipeline: Any, threshold: float, path: Path, sklearn_version: str | None = None) -> Path:
    """Write `pipeline` as mailsort wrote models before FORMAT 2: the pickled scikit-learn Pipeline
    in the .joblib, a card with format 1 and the scikit-learn version (a user's retrained model
    from an earlier version looks like this)."""
    import joblib
    import sklearn

    joblib.dump({"format": 1, "pipeline": pipeline, "threshold": threshold}, path, compress=("zlib", 3))
    data = path.read_bytes()
    card = {"kind": "mailsort critical/routine classifier", "format": 1, "threshold": threshold,
            "versions": {"sklearn": sklearn_version or sklearn.__version__},
            "file": {"name": path.name, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}}
    path.with_suffix(".json").write_text(json.dumps(card))
    return path
