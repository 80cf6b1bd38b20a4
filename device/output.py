"""How the board's commands hand back their figures: a table for people, JSON for the host."""

from __future__ import annotations

import json
import os


def emit(result: dict, json_arg, text: str) -> None:
    """`--json -`: one JSON line on stdout (what the host reads over SSH); else the table, and with
    `--json PATH` also the JSON, written to a temporary name and renamed (never half a file)."""
    if json_arg == "-":
        print(json.dumps(result))
        return
    print(text)
    if json_arg:
        tmp = json_arg + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(result, fh, indent=1)
        os.replace(tmp, json_arg)
