"""Boards from an inventory file (what each board is and how to reach it; no connection made here).

Inventory (TOML; `--inventory`, else $GRASPTPU_BOARDS, else ./boards.toml, else .boards/boards.toml
which `make board-up` writes for the simulated boards). One table per board:

    [boards.coral-mini]
    host = "coral-mini.local"     # or an alias from ~/.ssh/config (HostName, Port, User, IdentityFile honoured)
    user = "mendel"
    port = 22
    key_file = "~/.ssh/id_ed25519"   # optional; ssh-agent and ~/.ssh/config otherwise
    known_hosts = "~/.ssh/known_hosts"  # optional; this is the default
    python = "python3"            # the board's interpreter (3.7 or newer, with numpy)
    root = "/home/mendel/grasptpu"  # releases live here
    max_p99_ms = 2.0              # optional: the board's latency threshold per window (default 2 ms)
    max_miss_rate = 0.0001        # optional: share of stream bins allowed past the 40 ms deadline
    latency_note = "..."          # optional: why that threshold
    python_version = "3.7.3"      # optional, what the board is recorded to run; `bench --board`
    numpy_version = "1.16.2"      #   and `firmware-test` print it beside what the board reports
    runtime = "pycoral 2.0.0"     #   (as `python -m device.runtime` on the board names it: pycoral
                                  #   with an Edge TPU, else e.g. "tflite_runtime 2.5.0.post1")

No passwords: key authentication only (host keys: `host.boards.remote`).
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from host.errors import GrasptpuError
from host.files import read_toml

DEFAULT_INVENTORIES = (Path("boards.toml"), Path(".boards/boards.toml"))


@dataclass
class Board:
    name: str
    host: str
    user: str | None = None
    port: int | None = None
    key_file: str | None = None
    known_hosts: str = "~/.ssh/known_hosts"
    python: str = "python3"
    root: str = "grasptpu"
    simulated: bool = False
    max_p99_ms: float = 2.0
    max_miss_rate: float = 1e-4
    latency_note: str | None = None
    python_version: str | None = None
    numpy_version: str | None = None
    runtime: str | None = None

    @property
    def where(self) -> str:
        return f"{self.user + '@' if self.user else ''}{self.host}{':' + str(self.port) if self.port else ''}"


def inventory_path(path: Path | None = None) -> Path:
    if path is not None:
        return Path(path)
    env = os.environ.get("GRASPTPU_BOARDS")
    if env:
        return Path(env)
    for candidate in DEFAULT_INVENTORIES:
        if candidate.is_file():
            return candidate
    raise GrasptpuError("no board inventory: write boards.toml (see `grasptpu deploy --help`), "
                        "or run `make board-up` for a simulated board")


# One check per inventory field (the inventory may come from a colleague): the value's kind and
# what it may hold. Text that reaches a remote shell or a path is limited to characters that need
# no quoting (host, user, python) or may hold no control characters (paths, notes).
_WORD = re.compile(r"[A-Za-z0-9_.:@+/%-]{1,255}\Z")
_PYTHON = re.compile(r"[A-Za-z0-9_./+-]{1,255}\Z")


# Unicode categories no inventory text may hold: controls (C0 and C1: U+009B is a terminal's CSI),
# format characters (bidi overrides reorder what a terminal shows) and the line and paragraph
# separators (str.splitlines breaks at U+2028/2029 and U+0085, so a "one-line" note would not be).
_UNPRINTABLE = {"Cc", "Cf", "Zl", "Zp", "Cs"}
MAX_INVENTORY_BYTES = 1 << 20


def _text(value, pattern=None) -> bool:
    if not isinstance(value, str) or not value or len(value) > 4096:
        return False
    if any(unicodedata.category(c) in _UNPRINTABLE for c in value):
        return False
    return pattern is None or bool(pattern.match(value))


def _host(value) -> bool:
    """A host name, an IPv4 address, an IPv6 literal or an ssh alias. Not Fabric's `user@host:port`
    shorthand: the inventory has user and port fields, and Fabric refuses a user or port given twice."""
    if not _text(value, _WORD) or value.startswith("-") or "@" in value:
        return False
    return value.count(":") != 1  # one colon is host:port; two or more is an IPv6 address


FIELDS: dict[str, tuple[Callable[[object], bool], str]] = {
    "host": (_host, "a host name or address (no spaces, not starting with -; no user@ or :port, "
                    "use the user and port fields)"),
    "user": (lambda v: _text(v, _WORD) and not v.startswith("-"), "a user name"),
    "port": (lambda v: type(v) is int and 0 < v < 65536, "an integer port, 1-65535"),
    "key_file": (_text, "a path to a private key"),
    "known_hosts": (_text, "a path to a known_hosts file"),
    "python": (lambda v: _text(v, _PYTHON), "the board's interpreter: one command or path (letters, digits, . _ + - /), "
                                            "e.g. python3 or /usr/bin/python3"),
    "root": (_text, "a folder on the board"),
    "simulated": (lambda v: type(v) is bool, "true or false"),
    "max_p99_ms": (lambda v: type(v) in (int, float) and 0 < v < 1e6, "a positive number of milliseconds"),
    "max_miss_rate": (lambda v: type(v) in (int, float) and 0 <= v <= 1, "a share of bins between 0 and 1"),
    "latency_note": (_text, "text"),
    "python_version": (_text, "text"), "numpy_version": (_text, "text"), "runtime": (_text, "text"),
}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}\Z")


def board_from(path: Path, name: object, entry: object) -> Board:
    """One [boards.NAME] table as a Board, or a one-line error naming the board, the field and
    what it should hold."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise GrasptpuError(f"{path}: board name {name!r} must be letters, digits, '.', '_', '+' or '-' "
                            "(it names files under reports/)")
    if not isinstance(entry, dict):
        raise GrasptpuError(f"{path}: boards.{name} must be a table of settings")
    if "password" in entry:
        raise GrasptpuError(f"{path}: board {name!r}: passwords do not belong in files; use a key")
    unknown = sorted(set(entry) - set(FIELDS))
    if unknown or "host" not in entry:
        raise GrasptpuError(f"{path}: board {name!r}: " + (f"unknown keys {unknown}" if unknown else "no host")
                            + f"; allowed keys: {', '.join(sorted(FIELDS))}")
    for key, value in entry.items():
        valid, meaning = FIELDS[key]
        if not valid(value):
            raise GrasptpuError(f"{path}: board {name!r}: {key} = {str(value)[:60]!r} is not {meaning}")
    return Board(name=name, **entry)


def load_inventory(path: Path | None = None) -> dict[str, Board]:
    path = inventory_path(path)
    data = read_toml(path, "inventory", "an", MAX_INVENTORY_BYTES)
    tables = data.get("boards")
    if not isinstance(tables, dict) or not tables:
        raise GrasptpuError(f"{path}: no [boards.NAME] tables")
    return {name: board_from(path, name, entry) for name, entry in tables.items()}


def pick(boards: dict[str, Board], names: tuple[str, ...], all_boards: bool) -> list[Board]:
    if all_boards:
        return list(boards.values())
    if not names:
        raise GrasptpuError("name a board with --board NAME (or pass --all)")
    missing = [n for n in names if n not in boards]
    if missing:
        raise GrasptpuError(f"unknown board {missing[0]!r}; the inventory has: {', '.join(boards)}")
    return [boards[n] for n in dict.fromkeys(names)]  # each board once, in the order given
