"""Boards from an inventory file, and SSH connections to them that verify host keys.

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

No passwords: key authentication only. Host keys are checked against known_hosts with paramiko's
RejectPolicy (Fabric itself would add unknown hosts silently); an unknown or changed key is refused
unless the user passes `--trust-new-host` for a board never seen before (a changed key is always refused).
"""

from __future__ import annotations

import json
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


class BoardError(GrasptpuError):
    """A failure on one board, naming the board and the step."""

    def __init__(self, board: Board, step: str, problem: str) -> None:
        super().__init__(f"board {board.name} ({board.where}): {step}: {problem}")
        self.board, self.step = board, step


def connect(board: Board, trust_new_host: bool = False, timeout: float = 10.0):
    """An open Fabric Connection whose host key was verified (see the module docstring)."""
    import paramiko
    from fabric import Config, Connection

    config = Config()  # reads ~/.ssh/config (and /etc/ssh/ssh_config) when present
    kwargs = {"look_for_keys": board.key_file is None, "allow_agent": board.key_file is None}
    if board.key_file:
        kwargs["key_filename"] = os.path.expanduser(board.key_file)
    conn = Connection(board.host, user=board.user, port=board.port, config=config, connect_timeout=timeout,
                      connect_kwargs=kwargs)
    known = Path(os.path.expanduser(board.known_hosts))
    conn.client.set_missing_host_key_policy(_TrustOnce(known) if trust_new_host else paramiko.RejectPolicy())
    if known.is_file():
        conn.client.load_host_keys(str(known))
    try:
        conn.open()
    except paramiko.BadHostKeyException:
        raise BoardError(board, "connect", f"its host key CHANGED since it was recorded in {known}; refusing "
                                           "(a different machine, or a reinstalled board: check it, then remove the old "
                                           "line with `ssh-keygen -R`)") from None
    except paramiko.SSHException as exc:
        if "not found in known_hosts" in str(exc):
            raise BoardError(board, "connect", f"unknown host key (not in {known}); if this is a new board you trust, "
                                               "pass --trust-new-host once") from None
        raise BoardError(board, "connect", str(exc)) from None
    except OSError as exc:
        raise BoardError(board, "connect", f"unreachable ({exc.strerror or exc})") from None
    return conn


class _TrustOnce:
    """Accept and record the key of a host that known_hosts has never seen (never a changed one)."""

    def __init__(self, known: Path) -> None:
        self.known = known

    def missing_host_key(self, client, hostname, key) -> None:
        client.get_host_keys().add(hostname, key.get_name(), key)
        self.known.parent.mkdir(parents=True, exist_ok=True)
        with open(self.known, "a") as fh:
            fh.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")


def open_board(board: Board, trust_new_host: bool = False):
    """(connection, board with its root made absolute on the board).

    Remote commands `cd` into a release before running, so a relative or `~/` root must be
    resolved once, on the board, or it would name a different folder from inside the release."""
    import dataclasses
    import shlex

    conn = connect(board, trust_new_host)
    root = board.root
    expr = '"$HOME"/' + shlex.quote(root[2:]) if root.startswith("~/") else shlex.quote(root)
    try:
        absolute = run(conn, f"mkdir -p {expr} && cd {expr} && pwd -P", board, "root folder").strip()
    except BoardError:
        conn.close()
        raise
    return conn, dataclasses.replace(board, root=absolute)


def close(conn) -> None:
    """Close a connection that may already be dead (paramiko raises EOFError closing a cut one)."""
    try:
        conn.close()
    except Exception:  # nothing left to release; the step's own error is what the user needs
        pass


def run(conn, command: str, board: Board, step: str, timeout: float = 600.0) -> str:
    """Run a command on the board; its stdout, or a BoardError carrying its last stderr line."""
    try:
        result = conn.run(command, hide=True, warn=True, in_stream=False, timeout=timeout)
    except Exception as exc:  # invoke/paramiko raise several types for a dropped connection or a timeout
        raise BoardError(board, step, f"{type(exc).__name__}: {exc}") from None
    if result.exited == -1:  # no exit status: the channel closed under the command
        raise BoardError(board, step, "connection lost while the command ran")
    if result.exited != 0:
        lines = [ln for ln in (result.stderr or result.stdout).splitlines() if ln.strip()]
        raise BoardError(board, step, lines[-1] if lines else f"exit {result.exited}")
    return result.stdout


def run_json(conn, command: str, board: Board, step: str, timeout: float = 600.0) -> dict:
    """`run`, then the JSON object the board's commands (device.bench, device.stream,
    device.release) print as their last line."""
    lines = run(conn, command, board, step, timeout).strip().splitlines()
    try:
        result = json.loads(lines[-1])
    except (IndexError, ValueError):
        result = None
    if not isinstance(result, dict):
        raise BoardError(board, step, "the board's command printed no JSON report; its release may predate this "
                                      "grasptpu: run `grasptpu deploy` again")
    return result
