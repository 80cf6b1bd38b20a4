"""How the board's commands hand back their figures (a table for people, JSON for the host), and the
one way they write a file others read while they run."""

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
        write_atomically(json_arg, json.dumps(result, indent=1))


def write_atomically(path: str, text: str) -> None:
    """`text` into `path` under a temporary name, then renamed: a reader (the host, a stop command)
    sees the whole file or none, and a failed write leaves no temporary file behind."""
    tmp = path + ".tmp"
    try:
        with open(tmp, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
