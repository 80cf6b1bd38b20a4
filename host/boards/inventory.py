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
    latency_note = "..."          # optional: why that threshold
    python_version = "3.7.3"      # optional, what the board is recorded to run; `bench --board`
    numpy_version = "1.16.2"      #   and `firmware-test` print it beside what the board reports
    runtime = "pycoral 2.0.0"     #   (as `python -m device.runtime` on the board names it: pycoral
                                  #   with an Edge TPU, else e.g. "tflite_runtime 2.5.0.post1")

No passwords: key authentication only (host keys: `host.boards.remote`).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from host.errors import GrasptpuError

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


def load_inventory(path: Path | None = None) -> dict[str, Board]:
    path = inventory_path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise GrasptpuError(f"{path}: no such inventory file") from None
    except tomllib.TOMLDecodeError as exc:
        raise GrasptpuError(f"{path}: not valid TOML ({exc})") from None
    boards = {}
    fields = set(Board.__dataclass_fields__) - {"name"}
    for name, entry in (data.get("boards") or {}).items():
        unknown = set(entry) - fields
        if unknown or "host" not in entry:
            raise GrasptpuError(f"{path}: board {name!r}: " + (f"unknown keys {sorted(unknown)}" if unknown else "no host")
                                + f"; allowed keys: {', '.join(sorted(fields))}")
        if "password" in entry:
            raise GrasptpuError(f"{path}: board {name!r}: passwords do not belong in files; use a key")
        threshold = entry.get("max_p99_ms", 2.0)
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not threshold > 0:
            raise GrasptpuError(f"{path}: board {name!r}: max_p99_ms must be a positive number of milliseconds, "
                                f"not {threshold!r}")
        boards[name] = Board(name=name, **entry)
    if not boards:
        raise GrasptpuError(f"{path}: no [boards.NAME] tables")
    return boards


def pick(boards: dict[str, Board], names: tuple[str, ...], all_boards: bool) -> list[Board]:
    if all_boards:
        return list(boards.values())
    if not names:
        raise GrasptpuError("name a board with --board NAME (or pass --all)")
    missing = [n for n in names if n not in boards]
    if missing:
        raise GrasptpuError(f"unknown board {missing[0]!r}; the inventory has: {', '.join(boards)}")
    return [boards[n] for n in dict.fromkeys(names)]  # each board once, in the order given
