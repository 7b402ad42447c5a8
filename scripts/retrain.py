#!/usr/bin/env python3
"""Retrain the classifier from your corrections in every account — for cron.

The same as `mailsort train --from-imap A --from-imap B ...` with every account of the config (one
model learns from all of them; an account that cannot be read stops the run, so a model never
forgets corrections only because a server was down). Other options are passed on to `mailsort
train`: --data, --valid, --out, --weight, --force, --dry-run, --json.

Exit status: 0 the new model was installed, or there was nothing to learn; 1 the new model was
refused (the current one stays) or a server failed; 2 bad config or usage.

    # crontab: every night at 03:10
    10 3 * * *  python3 /path/to/mailsort/scripts/retrain.py >>~/.local/state/mailsort-retrain.log 2>&1
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a source checkout without install

from mailsort.cli import main  # noqa: E402
from mailsort.config import default_config_path, load_config  # noqa: E402
from mailsort.errors import MailsortError  # noqa: E402


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="Other options go to `mailsort train` unchanged.")
    parser.add_argument("--config", type=Path, help="config file (default: as for mailsort)")
    args, rest = parser.parse_known_args(argv)
    config_path = args.config or default_config_path()
    try:
        accounts = [a.name for a in load_config(config_path).accounts]
    except MailsortError as exc:
        print(f"retrain: error: {exc}", file=sys.stderr)
        return exc.exit_code
    if not accounts:
        print(f"retrain: error: {config_path}: no [[account]] to read corrections from", file=sys.stderr)
        return 2
    imap = [arg for name in accounts for arg in ("--from-imap", name)]
    return main(["--config", str(config_path), "train", *imap, *rest])


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
